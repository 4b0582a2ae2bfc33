package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/schemas"
)

func init() { register(newVersionsCmd) }

func newVersionsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "versions TARGET",
		Short: "Show which version of an application, component or block was active when, and why",
		Long: `versions prints the history of TARGET — svc (the application), svc/comp or svc/comp/block — built
from the DEPLOYS stream (a version became active with a deploy) and the DECISIONS stream (a
rollback, escalation, disable, restore or enable made another one active), with the sha256 of each
version's source when scalpel_blocks holds it. Reading is passive: nothing is acknowledged or
changed.`,
		Example: `  scalpel versions checkout
  scalpel versions checkout/tax-calc
  scalpel versions checkout/tax-calc/rate-lookup -o json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			target, err := decide.ParseTarget(args[0])
			if err != nil {
				return err
			}
			nc, js, err := connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx := cmd.Context()
			subj := schemas.Subjects{Prefix: global.prefix}
			var deploys []schemas.DeployEvent
			if err := readStream(ctx, js, schemas.StreamDeploys, subj.Deploy(target.Service), func(m jetstream.Msg) {
				if ev, err := schemas.DecodeDeployEvent(m.Data()); err == nil {
					deploys = append(deploys, *ev)
				}
			}); err != nil {
				return err
			}
			decisions, err := readDecisions(ctx, js, subj.DecisionAll(), time.Unix(0, 0), 0, "")
			if err != nil {
				return err
			}
			spans := decide.VersionHistory(deploys, decisions, target)
			addDigests(ctx, js, target, spans)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"target": target.String(), "history": spans})
			}
			if len(spans) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "no versions of %s: no deploy announced it and no decision changed it\n", target)
				return nil
			}
			return printVersions(cmd.OutOrStdout(), spans)
		},
	}
	return cmd
}

// addDigests fills each span's sha256 from the scalpel_blocks object of its version, when one is
// stored. A missing store or object is not an error: most versions have no source uploaded.
func addDigests(ctx context.Context, js jetstream.JetStream, target decide.Target, spans []decide.VersionSpan) {
	if target.Component == "" {
		return
	}
	ictx, cancel := context.WithTimeout(ctx, global.timeout)
	defer cancel()
	store, err := js.ObjectStore(ictx, schemas.ObjectBlocks)
	if err != nil {
		return
	}
	for i := range spans {
		info, err := store.GetInfo(ictx, target.ObjectName(spans[i].Version))
		if err != nil {
			continue
		}
		spans[i].SHA256 = digestHex(info.Digest)
	}
}

// digestHex turns the object store's "SHA-256=<base64url>" into the "sha256:<hex>" deploys carry.
func digestHex(d string) string {
	v, ok := strings.CutPrefix(d, "SHA-256=")
	if !ok {
		return d
	}
	b, err := base64.URLEncoding.DecodeString(v)
	if err != nil {
		return d
	}
	return "sha256:" + hex.EncodeToString(b)
}

func printVersions(w io.Writer, spans []decide.VersionSpan) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	withHash := false
	for _, s := range spans {
		withHash = withHash || s.SHA256 != ""
	}
	head := "VERSION\tACTIVE FROM\tACTIVE UNTIL\tWHY"
	if withHash {
		head += "\tSHA256"
	}
	fmt.Fprintln(tw, head)
	for _, s := range spans {
		until := "now"
		if !s.Until.IsZero() {
			until = s.Until.UTC().Format(time.RFC3339)
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s", s.Version, s.From.UTC().Format(time.RFC3339), until, oneLine(s.Why))
		if withHash {
			line += "\t" + dash(s.SHA256)
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

// readStream hands every message of stream on filter to f, from the start until caught up, through
// an ordered consumer (passive: nothing is acknowledged).
func readStream(ctx context.Context, js jetstream.JetStream, stream, filter string, f func(jetstream.Msg)) error {
	ictx, cancel := context.WithTimeout(ctx, global.timeout)
	defer cancel()
	s, err := js.Stream(ictx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s does not exist: start `scalpel serve` once (it creates the topology), or point --server at scalpel's NATS", stream)
	}
	if err != nil {
		return fmt.Errorf("open stream %s: %w", stream, err)
	}
	cons, err := s.OrderedConsumer(ictx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return fmt.Errorf("read %s: %w", filter, err)
	}
	info, err := cons.Info(ictx)
	if err != nil {
		return fmt.Errorf("read %s: %w", filter, err)
	}
	for pending := info.NumPending; pending > 0; {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(global.timeout))
		if err != nil {
			return fmt.Errorf("read %s: %w", filter, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
			f(m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("read %s: %w", filter, err)
		}
		if got == 0 {
			break
		}
	}
	return nil
}
