package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
)

// errSilent is returned by commands that already told the user what went wrong.
var errSilent = errors.New("silent")

// subcommands registers constructors of top-level commands; each command's file adds itself in init,
// so commands live in their own files and never edit a shared list.
var subcommands []func() *cobra.Command

func register(f func() *cobra.Command) { subcommands = append(subcommands, f) }

// clientFlags are the flags of every command that talks to a running NATS server.
type clientFlags struct {
	url     string
	creds   string
	timeout time.Duration
	output  string // table | json
	prefix  string
}

var global clientFlags

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "scalpel",
		Short: "Surgical rollbacks: watch every block, function and endpoint, roll back only what broke",
		Long: `scalpel watches the telemetry of running services on NATS JetStream, learns what normal looks
like for every function, endpoint and code block, and when one of them goes bad right after a
deploy it rolls back only that piece — a block, a function, or the whole application version —
then verifies the rollback worked and escalates if it did not.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&global.url, "server", envOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL for client commands (env NATS_URL)")
	pf.StringVar(&global.creds, "creds", os.Getenv("NATS_CREDS"), "NATS credentials file (env NATS_CREDS)")
	pf.DurationVar(&global.timeout, "timeout", 5*time.Second, "timeout for each request to the server")
	pf.StringVarP(&global.output, "output", "o", "table", "output format: table or json")
	pf.StringVar(&global.prefix, "subject-prefix", os.Getenv("SCALPEL_SUBJECT_PREFIX"), "subject prefix scalpel was configured with (env SCALPEL_SUBJECT_PREFIX)")
	for _, f := range subcommands {
		root.AddCommand(f())
	}
	// cobra prints each flag's usage on one line, however long; wrapped, --help reads in a
	// terminal of helpColumns like the rest of it.
	tmpl := root.UsageTemplate()
	for _, set := range []string{".LocalFlags", ".InheritedFlags"} {
		tmpl = strings.Replace(tmpl, set+".FlagUsages ", fmt.Sprintf("%s.FlagUsagesWrapped %d ", set, helpColumns), 1)
	}
	root.SetUsageTemplate(tmpl)
	return root
}

// helpColumns is the width every command's --help is written to (TestHelpFitsColumns).
const helpColumns = 100

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// connect opens a client connection to the server named by --server.
func connect() (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{nats.Name("scalpel-cli"), nats.Timeout(global.timeout)}
	if global.creds != "" {
		opts = append(opts, nats.UserCredentials(global.creds))
	}
	nc, err := nats.Connect(global.url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w (is `scalpel serve` running? set --server or NATS_URL)", global.url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// jsonOutput reports whether -o json was asked for, and rejects unknown formats.
func jsonOutput() (bool, error) {
	switch global.output {
	case "json":
		return true, nil
	case "table", "":
		return false, nil
	}
	return false, fmt.Errorf("unknown output format %q: use -o table or -o json", global.output)
}

// writeJSON writes v as one indented JSON document.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// exactArgs is cobra.ExactArgs with an error that names what is missing and where to look.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		return fmt.Errorf("usage: %s (got %d argument(s), want %d; see %s --help)", cmd.UseLine(), len(args), n, cmd.CommandPath())
	}
}
