package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/schemas"
)

func init() { register(newDeployCmd) }

func newDeployCmd() *cobra.Command {
	var (
		ev         schemas.DeployEvent
		components []string
		blocks     []string
		sources    []string
	)
	cmd := &cobra.Command{
		Use:   "deploy --service S --app-version V [--component C=V ...] [--block C/B=V ...]",
		Short: "Announce a deploy: record versions and open the rollback window",
		Long: `deploy publishes a DeployEvent on deploy.<service>, as a CI/CD pipeline would after rolling out a
version. scalpel records the versions it names and opens the service's rollback window: an anomaly
of a component this deploy changed, detected inside the window, is rolled back automatically.

List the components the deploy changed with --component; components left out are unchanged (their
own anomalies are then held, not rolled back). With no --component at all, the whole application is
replaced and every component counts as changed. --block gives block versions inside a component,
which lets a fine-grained rollback move one block back. --block C/B=V@FILE:START-END also says where
the block lives in this version: error sites of this version then map to blocks through these line
ranges instead of the catalog's, so a refactor that moves code does not blame the wrong block
(@FILE alone places the block in a file without ranges).

The event id (--id, a fresh UUID by default) is also the Nats-Msg-Id, so re-running the same command
with the same --id within the stream's duplicate window records the deploy once.`,
		Example: `  scalpel deploy --service checkout --app-version 1.8.0
  scalpel deploy --service checkout --app-version 1.8.0 \
      --component tax-calc=2.5.0 --component cart=3.1
  scalpel deploy --service checkout --app-version 1.8.0 --component tax-calc=2.5.0 \
      --block tax-calc/rate-lookup=9f2c1e --id "$CI_PIPELINE_ID" --actor "ci: $CI_COMMIT_SHA"
  scalpel deploy --service checkout --app-version 2.0 --component tax-calc=2.0 \
      --block tax-calc/rate-lookup=2.0@tax/calc.go:71-130 \
      --block tax-calc/rounding=2.0@tax/calc.go:40-70`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			if ev.ID == "" {
				ev.ID = uuid.NewString()
			}
			ev.TS = time.Now().UTC()
			if ev.Components, err = parseDeployComponents(components, blocks); err != nil {
				return err
			}
			if err := ev.Validate(); err != nil {
				return fmt.Errorf("invalid deploy: %w", err)
			}
			nc, js, err := connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), global.timeout)
			defer cancel()
			if err := uploadSources(ctx, js, &ev, sources); err != nil {
				return err
			}
			b, err := json.Marshal(&ev)
			if err != nil {
				return err
			}
			subj := schemas.Subjects{Prefix: global.prefix}.Deploy(ev.Service)
			ack, err := js.Publish(ctx, subj, b, jetstream.WithMsgID(ev.ID))
			if errors.Is(err, jetstream.ErrNoStreamResponse) {
				return fmt.Errorf("publish on %s: no stream stores it: start `scalpel serve` once (it creates the DEPLOYS stream) or check --subject-prefix", subj)
			}
			if err != nil {
				return fmt.Errorf("publish on %s: %w", subj, err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]any{
					"deploy": ev, "subject": subj, "stream": ack.Stream, "seq": ack.Sequence, "duplicate": ack.Duplicate,
				})
			}
			note := ""
			if ack.Duplicate {
				note = " (duplicate id: already recorded, nothing changed)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deploy %s of %s %s published on %s (stream %s, seq %d)%s\n",
				ev.ID, ev.Service, ev.AppVersion, subj, ack.Stream, ack.Sequence, note)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ev.Service, "service", "", "service that was deployed (required)")
	f.StringVar(&ev.AppVersion, "app-version", "", "application version now running (required)")
	f.StringArrayVar(&components, "component", nil, "component the deploy changed, as NAME=VERSION (repeatable)")
	f.StringArrayVar(&blocks, "block", nil, "block version inside a component, as COMPONENT/BLOCK=VERSION or COMPONENT/BLOCK=VERSION@FILE:START-END to give its line range in this version (repeatable)")
	f.StringArrayVar(&sources, "source", nil, "upload a block's source to the block store, as COMPONENT/BLOCK=PATH (repeatable; the block must be in --block)")
	f.StringVar(&ev.ID, "id", "", "deploy id, also the Nats-Msg-Id (default: a new UUID)")
	f.StringVar(&ev.Actor, "actor", "", "who or what deployed, for the audit trail")
	_ = cmd.MarkFlagRequired("service")
	_ = cmd.MarkFlagRequired("app-version")
	return cmd
}

// parseDeployComponents turns --component NAME=VERSION and --block COMP/BLOCK=VERSION into the
// deploy's component list, in the order given. A block's component must be listed too: a block
// version without its component's version would leave the component's history guessing.
func parseDeployComponents(components, blocks []string) ([]schemas.DeployComponent, error) {
	var out []schemas.DeployComponent
	for _, s := range components {
		name, version, ok := strings.Cut(s, "=")
		if !ok || name == "" || version == "" {
			return nil, fmt.Errorf("--component %q: want NAME=VERSION, e.g. --component tax-calc=2.5.0", s)
		}
		if slices.ContainsFunc(out, func(c schemas.DeployComponent) bool { return c.Component == name }) {
			return nil, fmt.Errorf("--component %s given twice", name)
		}
		out = append(out, schemas.DeployComponent{Component: name, Version: version})
	}
	for _, s := range blocks {
		path, version, ok := strings.Cut(s, "=")
		comp, block, ok2 := strings.Cut(path, "/")
		version, where, placed := strings.Cut(version, "@")
		if !ok || !ok2 || comp == "" || block == "" || version == "" {
			return nil, fmt.Errorf("--block %q: want COMPONENT/BLOCK=VERSION[@FILE:START-END], e.g. --block tax-calc/rate-lookup=9f2c1e@tax/calc.go:40-88", s)
		}
		db := schemas.DeployBlock{Block: block, Version: version}
		if placed {
			var err error
			if db.File, db.Lines, err = parseBlockPlace(where); err != nil {
				return nil, fmt.Errorf("--block %q: %w", s, err)
			}
		}
		i := slices.IndexFunc(out, func(c schemas.DeployComponent) bool { return c.Component == comp })
		if i < 0 {
			return nil, fmt.Errorf("--block %s: component %s is not in the deploy; add --component %s=VERSION", s, comp, comp)
		}
		if slices.ContainsFunc(out[i].Blocks, func(b schemas.DeployBlock) bool { return b.Block == block }) {
			return nil, fmt.Errorf("--block %s/%s given twice", comp, block)
		}
		out[i].Blocks = append(out[i].Blocks, db)
	}
	return out, nil
}

// parseBlockPlace reads the FILE:START-END (or FILE) after a --block's "@". The range is the part
// after the last ':' when it looks like one, so a Windows drive letter stays in the file name;
// DeployEvent.Validate checks the numbers.
func parseBlockPlace(s string) (file, lines string, err error) {
	if i := strings.LastIndexByte(s, ':'); i >= 0 && strings.Contains(s[i+1:], "-") {
		file, lines = s[:i], s[i+1:]
	} else {
		file = s
	}
	if file == "" {
		return "", "", fmt.Errorf("want @FILE:START-END after the version, e.g. @tax/calc.go:40-88")
	}
	return file, lines, nil
}

// uploadSources stores each --source COMPONENT/BLOCK=PATH in scalpel_blocks under the block's
// version and records the object name and sha256 in the deploy, so the audit trail says exactly
// what code each version was.
func uploadSources(ctx context.Context, js jetstream.JetStream, ev *schemas.DeployEvent, sources []string) error {
	if len(sources) == 0 {
		return nil
	}
	obj, err := js.ObjectStore(ctx, schemas.ObjectBlocks)
	if err != nil {
		return fmt.Errorf("open object store %s: %w (start `scalpel serve` once to create it)", schemas.ObjectBlocks, err)
	}
	store := decide.NewBlockStore(obj)
	for _, s := range sources {
		path, file, ok := strings.Cut(s, "=")
		comp, block, ok2 := strings.Cut(path, "/")
		if !ok || !ok2 || file == "" {
			return fmt.Errorf("--source %q: want COMPONENT/BLOCK=PATH", s)
		}
		ci := slices.IndexFunc(ev.Components, func(c schemas.DeployComponent) bool { return c.Component == comp })
		if ci < 0 {
			return fmt.Errorf("--source %s: component %s is not in the deploy", s, comp)
		}
		c := &ev.Components[ci]
		bi := slices.IndexFunc(c.Blocks, func(b schemas.DeployBlock) bool { return b.Block == block })
		if bi < 0 {
			return fmt.Errorf("--source %s: block %s/%s is not in the deploy; add --block %s/%s=VERSION", s, comp, block, comp, block)
		}
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("--source %s: %w", s, err)
		}
		ref, hash, err := store.Put(ctx, ev.Service, comp, block, c.Blocks[bi].Version, f)
		_ = f.Close()
		if err != nil {
			return err
		}
		c.Blocks[bi].SourceRef, c.Blocks[bi].Hash = ref, hash
	}
	return nil
}
