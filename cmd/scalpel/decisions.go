package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/internal/audit"
	"github.com/scalpel-dev/scalpel/schemas"
)

func init() { register(newDecisionsCmd) }

func newDecisionsCmd() *cobra.Command {
	var (
		service  string
		since    time.Duration
		last     int
		incident string
	)
	cmd := &cobra.Command{
		Use:   "decisions [--service S] [--since 1h] [--last N] | --incident ID",
		Short: "Show recent decisions with their reasons (the audit trail on decision.<svc>)",
		Long: `decisions reads the DECISIONS stream — every decision scalpel made, including holds and
recommendations — from --since ago up to now, and prints the most recent ones with the reason a
person needs: what degraded against which baseline, what changed, why this granularity, what is
targeted. With --incident it tells that incident's whole story instead, whatever its age: what
degraded against which baseline, each step in order with its time, action, granularity, full reason,
plan, the guards that held it and whether it was a dry run, the commands each step sent with the
deployers' acks (ROLLBACKS), and the approvals people gave (approval.<svc>). Reading is passive (an
ordered consumer): it never acknowledges or changes anything.`,
		Example: `  scalpel decisions
  scalpel decisions --service checkout --since 24h
  scalpel decisions --incident 6f0e5d1c-... -o json
  scalpel decisions --last 0 --since 168h   # everything of the last week`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			if err := checkWindow(since, last); err != nil {
				return err
			}
			subj := schemas.Subjects{Prefix: global.prefix}
			filter := subj.DecisionAll()
			if service != "" {
				if err := checkService("--service", service); err != nil {
					return err
				}
				filter = subj.Decision(service)
			}
			nc, js, err := connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			if incident != "" {
				return printStory(cmd.Context(), cmd.OutOrStdout(), js, service, filter, incident, asJSON)
			}
			ds, err := auditReader(js).Decisions(cmd.Context(), service, time.Now().Add(-since), last, incident)
			if err != nil {
				return err
			}
			if asJSON {
				if ds == nil {
					ds = []schemas.Decision{}
				}
				return writeJSON(cmd.OutOrStdout(), ds)
			}
			if len(ds) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "no decisions on %s in the last %s\n", filter, since)
				return nil
			}
			return printDecisions(cmd.OutOrStdout(), ds)
		},
	}
	f := cmd.Flags()
	f.StringVar(&service, "service", "", "only this service's decisions")
	f.DurationVar(&since, "since", time.Hour, "how far back to read")
	f.IntVar(&last, "last", 20, "print at most the N most recent decisions (0 = all)")
	f.StringVar(&incident, "incident", "", "tell the whole story of this incident id (steps, plans, commands, acks, approvals)")
	return cmd
}

// checkWindow checks --since and --last, which decisions and incidents take.
func checkWindow(since time.Duration, last int) error {
	if since <= 0 {
		return fmt.Errorf("--since %s: give a positive duration such as 1h or 30m", since)
	}
	if last < 0 {
		return fmt.Errorf("--last %d: give a count, or 0 for all", last)
	}
	return nil
}

// checkService checks a service name given with flag (or as the argument, flag "service") before
// it goes into a subject.
func checkService(flag, service string) error {
	if !schemas.IsName(service) {
		return fmt.Errorf("%s %q: a service name is 1-%d characters of [A-Za-z0-9_-], as in the catalog", flag, service, schemas.MaxNameLen)
	}
	return nil
}

// auditReader reads the streams of the installation the global flags point at.
func auditReader(js jetstream.JetStream) audit.Reader {
	return audit.Reader{JS: js, Subjects: schemas.Subjects{Prefix: global.prefix}, Timeout: global.timeout}
}

func printDecisions(w io.Writer, ds []schemas.Decision) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tSERVICE\tACTION\tGRANULARITY\tTARGETS\tREASON")
	for _, d := range ds {
		action := d.Action
		if d.DryRun {
			action += " (dry run)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.TS.UTC().Format(time.RFC3339), d.Service, action,
			dash(d.Granularity), dash(targetsText(d.Targets)), oneLine(d.Reason))
	}
	return tw.Flush()
}

// targetsText renders targets as "tax-calc/rate-lookup r2→r1", the application as "app 1.1→1.0".
func targetsText(ts []schemas.DecisionTarget) string {
	parts := make([]string, 0, len(ts))
	for _, t := range ts {
		name := "app"
		if t.Component != "" {
			name = t.Component
			if t.Block != "" {
				name += "/" + t.Block
			}
		}
		parts = append(parts, fmt.Sprintf("%s %s→%s", name, t.FromVersion, t.ToVersion))
	}
	return strings.Join(parts, ", ")
}

// oneLine keeps a table row on one line whatever the reason holds.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// printStory reads everything the streams hold about incident and tells it (decide.Story), or
// prints it as one JSON object.
func printStory(ctx context.Context, w io.Writer, js jetstream.JetStream, service, filter, incident string, asJSON bool) error {
	story, err := auditReader(js).Story(ctx, service, incident)
	if errors.Is(err, audit.ErrNotFound) {
		return fmt.Errorf("no decisions of incident %s on %s: list recent ones with `scalpel decisions`", incident, filter)
	}
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(w, story)
	}
	_, err = io.WriteString(w, story.String())
	return err
}
