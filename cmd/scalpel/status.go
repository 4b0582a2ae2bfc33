package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/schemas"
)

func init() { register(newStatusCmd) }

func newStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show who consumes, detects and decides among the serve processes, and how far behind",
		Long: `status reads what the serve processes sharing the server say of themselves: how the TELEMETRY
stream is cut (ingest.partitions), which process holds the decide lease, and for each durable
consumer of the telemetry (one per partition, or per group) which process consumes it, how many
messages wait for it, and how far its detector's event time has come and when it last said so.
It ends with what needs a person: a partition no process was given, messages waiting for a
consumer nobody runs, a process that holds its lease and has not moved for a minute, no process
deciding. Reading is passive: it takes no lease and acknowledges nothing. serve answers the same
at /api/v1/cluster.`,
		Example: `  scalpel status
  scalpel status --server nats://nats.internal:4222 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			nc, js, err := connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			st, err := pipeline.ReadClusterStatus(cmd.Context(), js, schemas.Subjects{Prefix: global.prefix})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			return printStatus(cmd.OutOrStdout(), st)
		},
	}
}

// printStatus prints st for a person.
func printStatus(w io.Writer, st *pipeline.ClusterStatus) error {
	now := st.At
	cut := "not cut into partitions"
	if n := st.Telemetry.Partitions; n > 0 {
		cut = fmt.Sprintf("cut into %d partitions", n)
	}
	fmt.Fprintf(w, "telemetry  %s: %d messages, %s, %s\n", schemas.StreamTelemetry, st.Telemetry.Messages, bytesText(st.Telemetry.Bytes), cut)
	if st.Decide.HeldAt(now) {
		fmt.Fprintf(w, "decide     %s (lease valid %s more)\n", st.Decide.Holder, st.Decide.Expires.Sub(now).Round(time.Second))
	} else {
		fmt.Fprintln(w, "decide     no process")
	}
	if st.Sharing > 0 {
		fmt.Fprintf(w, "sharing    %d processes share the partitions out (--partition auto)\n", st.Sharing)
	}
	if len(st.Consumers) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CONSUMER\tREADS\tCONSUMED BY\tPENDING\tUNACKED\tEVENT TIME\tSHARED")
		for _, c := range st.Consumers {
			by := "-"
			if c.Lease.HeldAt(now) {
				by = c.Lease.Holder
			}
			wm, shared := "-", "-"
			if !c.Watermark.IsZero() {
				wm = c.Watermark.UTC().Format(time.RFC3339)
				shared = now.Sub(c.WatermarkShared).Round(time.Second).String() + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", c.Name, dash(strings.Join(c.Filters, ",")), by, c.Pending, c.Unacked, wm, shared)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(st.Warnings) > 0 {
		fmt.Fprintln(w)
		for _, m := range st.Warnings {
			fmt.Fprintf(w, "warning: %s\n", m)
		}
	}
	return nil
}

// bytesText is n bytes in the largest unit that keeps it above 1.
func bytesText(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
