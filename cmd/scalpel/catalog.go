package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/schemas"
)

func init() { register(newCatalogCmd) }

func newCatalogCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "catalog",
		Short: "Manage the catalog: each service's components, blocks, granularity and windows",
		Long: `The catalog tells scalpel what a service is made of: its components (functions and endpoints),
the blocks inside them with their source line ranges, the granularity a rollback starts at (fine = a
block, medium = the component, coarse = the application), dependencies, thresholds and the rollback
window. Manifests are stored in the scalpel_catalog KV bucket, one per service.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newCatalogApplyCmd(), newCatalogGetCmd(), newCatalogGraphCmd())
	return cmd
}

// openCatalog connects and opens the catalog bucket, explaining what to do when it is missing.
func openCatalog(ctx context.Context) (*decide.Catalog, func(), error) {
	nc, js, err := connect()
	if err != nil {
		return nil, nil, err
	}
	kv, err := js.KeyValue(ctx, schemas.BucketCatalog)
	if err != nil {
		nc.Close()
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, nil, fmt.Errorf("catalog bucket %s does not exist on %s: start `scalpel serve` once (it creates the topology), or point --server at scalpel's NATS", schemas.BucketCatalog, global.url)
		}
		return nil, nil, fmt.Errorf("open catalog bucket %s: %w", schemas.BucketCatalog, err)
	}
	return decide.NewCatalog(kv), nc.Close, nil
}

func newCatalogApplyCmd() *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Validate manifests (YAML or JSON, several documents allowed) and store them",
		Long: `apply reads one or more manifests from each file (a YAML stream separated by "---", a JSON object
or a JSON array), validates every one of them strictly (unknown fields are errors), and only then
stores them, so a typo never half-applies a file. Each service's manifest replaces the previous one;
the printed revision identifies the stored version. Use -f - to read standard input.`,
		Example: `  scalpel catalog apply -f deployments/catalog/checkout.yaml
  scalpel catalog apply -f checkout.yaml -f pricing.yaml
  cat catalog.json | scalpel catalog apply -f - -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			if len(files) == 0 {
				return errors.New("no manifest given: pass -f FILE (or -f - for standard input)")
			}
			var all []*schemas.Manifest
			seen := map[string]string{}
			for _, f := range files {
				ms, err := readManifests(cmd.InOrStdin(), f)
				if err != nil {
					return err
				}
				for _, m := range ms {
					if prev, dup := seen[m.Service]; dup {
						return fmt.Errorf("%s: service %q is also defined in %s; keep one manifest per service", f, m.Service, prev)
					}
					seen[m.Service] = f
				}
				all = append(all, ms...)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), global.timeout)
			defer cancel()
			cat, closeFn, err := openCatalog(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			type applied struct {
				Service    string `json:"service"`
				Revision   uint64 `json:"revision"`
				Components int    `json:"components"`
			}
			// The whole catalog is checked with the new manifests (unknown depends_on references,
			// cycles) before anything is stored.
			revs, err := cat.ApplyAll(ctx, all)
			if err != nil {
				return fmt.Errorf("apply: %w (nothing was stored)", err)
			}
			var out []applied
			for i, m := range all {
				out = append(out, applied{m.Service, revs[i], len(m.Components)})
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			for _, a := range out {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: applied (revision %d, %d components)\n", a.Service, a.Revision, a.Components)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "file", "f", nil, "manifest file, YAML or JSON (repeatable; - reads standard input)")
	return cmd
}

func readManifests(stdin io.Reader, name string) ([]*schemas.Manifest, error) {
	var (
		b   []byte
		err error
	)
	if name == "-" {
		b, err = io.ReadAll(io.LimitReader(stdin, schemas.MaxManifestSize+1))
	} else {
		b, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	ms, err := schemas.ParseManifests(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (fix the file and apply again; nothing was stored)", name, err)
	}
	return ms, nil
}

func newCatalogGetCmd() *cobra.Command {
	var asYAML bool
	cmd := &cobra.Command{
		Use:   "get [SERVICE]",
		Short: "List the services in the catalog, or show one service's components and blocks",
		Long: `get without a service lists every service in the catalog. With a service it prints a table of its
components (kind, granularity, blocks with their line ranges, dependencies); --yaml prints the
stored manifest as YAML, -o json as JSON, ready to edit and apply again.`,
		Example: `  scalpel catalog get
  scalpel catalog get checkout
  scalpel catalog get checkout --yaml > checkout.yaml
  scalpel catalog get checkout -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), global.timeout)
			defer cancel()
			cat, closeFn, err := openCatalog(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			w := cmd.OutOrStdout()
			if len(args) == 0 {
				names, err := cat.List(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					if names == nil {
						names = []string{}
					}
					return writeJSON(w, names)
				}
				if len(names) == 0 {
					fmt.Fprintln(w, "the catalog is empty: add a service with `scalpel catalog apply -f FILE`")
					return nil
				}
				return printServices(ctx, w, cat, names)
			}
			m, rev, err := cat.Get(ctx, args[0])
			if errors.Is(err, decide.ErrUnknownService) {
				return fmt.Errorf("no manifest for service %q: list services with `scalpel catalog get`, add one with `scalpel catalog apply -f FILE`", args[0])
			}
			if err != nil {
				return err
			}
			switch {
			case asJSON:
				return writeJSON(w, m)
			case asYAML:
				enc := yaml.NewEncoder(w)
				enc.SetIndent(2)
				if err := enc.Encode(m); err != nil {
					return err
				}
				return enc.Close()
			}
			return printManifest(w, m, rev)
		},
	}
	cmd.Flags().BoolVar(&asYAML, "yaml", false, "print the stored manifest as YAML")
	return cmd
}

func printServices(ctx context.Context, w io.Writer, cat *decide.Catalog, names []string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tCOMPONENTS\tROLLBACK WINDOW\tDRY RUN\tREVISION")
	for _, n := range names {
		m, rev, err := cat.Get(ctx, n)
		if err != nil {
			fmt.Fprintf(tw, "%s\t?\t?\t?\t(%v)\n", n, err)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%v\t%d\n", n, len(m.Components), windowText(m.RollbackWindow), m.DryRun, rev)
	}
	return tw.Flush()
}

func windowText(d schemas.Duration) string {
	if d <= 0 {
		return "default"
	}
	return time.Duration(d).String()
}

func printManifest(w io.Writer, m *schemas.Manifest, rev uint64) error {
	fmt.Fprintf(w, "service %s (revision %d), rollback window %s, dry run %v\n\n", m.Service, rev, windowText(m.RollbackWindow), m.DryRun)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tKIND\tGRANULARITY\tBLOCKS\tDEPENDS ON")
	for _, c := range m.Components {
		var blocks, deps []string
		for _, b := range c.Blocks {
			s := b.Block
			if b.File != "" {
				s += " (" + b.File
				if b.Lines != "" {
					s += ":" + b.Lines
				}
				s += ")"
			}
			blocks = append(blocks, s)
		}
		for _, d := range c.DependsOn {
			deps = append(deps, d.Service+"/"+d.Component+" ["+d.OnRollback+"]")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Component, dash(c.Kind), dash(c.Granularity), dash(strings.Join(blocks, ", ")), dash(strings.Join(deps, ", ")))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newCatalogGraphCmd() *cobra.Command {
	var dot bool
	cmd := &cobra.Command{
		Use:   "graph [SERVICE] [--dot]",
		Short: "Show what depends on what, and what a rollback does to each dependent",
		Long: `graph prints every component with the components it depends on and those that depend on it, with
each edge's on_rollback policy (cascade: the dependent goes back too; disable: it is switched off
while its dependency is rolled back; ignore: nothing). With SERVICE only that service and its
neighbours are shown. --dot prints Graphviz DOT (pipe it to "dot -Tsvg"). Unknown references and
cycles are flagged.`,
		Example: `  scalpel catalog graph
  scalpel catalog graph checkout --dot | dot -Tsvg > checkout.svg`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), global.timeout)
			defer cancel()
			cat, closeFn, err := openCatalog(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			g, _, err := decide.LoadGraph(ctx, cat)
			if err != nil {
				return err
			}
			svc := ""
			if len(args) == 1 {
				svc = args[0]
			}
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			switch {
			case asJSON:
				errText := ""
				if err := g.Validate(); err != nil {
					errText = err.Error()
				}
				return writeJSON(cmd.OutOrStdout(), map[string]any{"components": g.Refs(), "edges": g.Edges(), "unknown": g.Unknown, "problems": errText})
			case dot:
				return g.WriteDOT(cmd.OutOrStdout(), svc)
			}
			return g.WriteText(cmd.OutOrStdout(), svc)
		},
	}
	cmd.Flags().BoolVar(&dot, "dot", false, "print Graphviz DOT")
	return cmd
}
