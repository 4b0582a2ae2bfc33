package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/decide"
)

func init() { register(newIncidentsCmd) }

func newIncidentsCmd() *cobra.Command {
	var (
		service string
		since   time.Duration
		last    int
	)
	cmd := &cobra.Command{
		Use:   "incidents [--service S] [--since 24h] [--last N]",
		Short: "List recent incidents with their state, as the audit trail tells them",
		Long: `incidents reads the DECISIONS stream from --since ago up to now and lists every incident one of
those decisions belongs to, in the order they opened: its service, its state as the trail tells it
(open, held, awaiting approval, mitigating, mitigated, failed, resolved, closed, dry run), how many
steps it took, its last step, and what degraded. An incident that opened before --since is told
from its first decision since. scalpel decisions --incident ID tells one whole; -o json gives each
story in full. Reading is passive (ordered consumers): it never acknowledges or changes anything.`,
		Example: `  scalpel incidents
  scalpel incidents --service checkout --since 168h --last 0
  scalpel incidents -o json | jq '.[] | select(.state == "failed")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			if err := checkWindow(since, last); err != nil {
				return err
			}
			if service != "" {
				if err := checkService("--service", service); err != nil {
					return err
				}
			}
			nc, js, err := connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			stories, err := auditReader(js).Incidents(cmd.Context(), service, time.Now().Add(-since), last)
			if err != nil {
				return err
			}
			if asJSON {
				if stories == nil {
					stories = []decide.Story{}
				}
				return writeJSON(cmd.OutOrStdout(), stories)
			}
			if len(stories) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "no incidents in the last %s\n", since)
				return nil
			}
			return printIncidents(cmd.OutOrStdout(), stories)
		},
	}
	f := cmd.Flags()
	f.StringVar(&service, "service", "", "only this service's incidents")
	f.DurationVar(&since, "since", 24*time.Hour, "how far back to read decisions")
	f.IntVar(&last, "last", 20, "list at most the N most recently opened incidents (0 = all)")
	return cmd
}

// printIncidents lists stories, one line each.
func printIncidents(w io.Writer, stories []decide.Story) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OPENED\tSERVICE\tSTATE\tSTEPS\tLAST STEP\tINCIDENT\tWHAT")
	for _, s := range stories {
		if len(s.Steps) == 0 {
			continue
		}
		d := s.Steps[len(s.Steps)-1].Decision
		step := d.Action
		if d.Granularity != "" {
			step += "/" + d.Granularity
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.Opened.UTC().Format(time.RFC3339), s.Service, s.State,
			len(s.Steps), step, s.IncidentID, what(s.Steps[0].Decision.Reason))
	}
	return tw.Flush()
}

// what is the first clause of a decision's reason, which says what degraded against which
// baseline, cut to a table's width.
func what(reason string) string {
	r := oneLine(reason)
	if i := strings.IndexAny(r, ";"); i > 0 {
		r = r[:i]
	}
	if rs := []rune(r); len(rs) > 100 {
		r = string(rs[:99]) + "…"
	}
	return r
}
