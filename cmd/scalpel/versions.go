package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/decide"
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
			spans, err := auditReader(js).Versions(cmd.Context(), target)
			if err != nil {
				return err
			}
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
