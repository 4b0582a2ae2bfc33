package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/replay"
	"github.com/scalpel-dev/scalpel/schemas"
)

func init() { register(newReplayCmd) }

func newReplayCmd() *cobra.Command {
	var (
		since, until, service, component, cfgPath, reportPath, exportPath, fromFile, timelinePath string
		warmup                                                                                    time.Duration
		diff, quiet, checkpoint, listCheckpoints                                                  bool
		partition                                                                                 int
	)
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Re-run detect and decide over recorded events, with the live config or another one",
		Long: `replay reads TELEMETRY and DEPLOYS (and the catalog, and the anomalies, decisions, acks, approvals
and actuation failures that were recorded) from the server with ordered consumers, runs detect and
decide over event time in dry-run — it never publishes or actuates — and prints a timeline.
Approvals (scalpel approve and reject), acks and actuation failures (rejected.actuate) are handed to
decide in event time, as live decide took them, so an incident a person or a failed actuator steered
replays the same way. With the config that was live it reproduces the recorded anomalies and
decisions exactly; with another one (--config) it shows what would have changed (--diff). --report
writes a self-contained HTML page; --export writes the raw events of the range as an NDJSON incident
bundle, and --from-file replays such a bundle without a server.

--since and --until are event times (RFC 3339, or a duration before now such as 2h). The detector
starts from the newest dated checkpoint serve kept before --since (detect_checkpoint_history,
objects detect@<watermark> in scalpel_state) that the replay's detect config can restore, and reads
the telemetry stored after it: its state when the range starts is then the live detector's, down to
each series' own long-run profile and each line's throughput average. Without a usable checkpoint
(none that old, another detect config, --checkpoint=false) telemetry from --warmup before --since is
replayed instead, so the detector has baselines when the range starts. The default warm-up, what the
detector remembers (13 history epochs, 1h5m at the defaults: the latency drift's ten, the two the
oldest of them is compared with and the current one; at least detect.history_max_epochs + 1),
freezes the baseline the live detector froze for every deploy in the range, a sparse series' and its
tempering too; what is older than the warm-up (own profiles, throughput averages) is rebuilt only
from the warm-up. Which start was taken goes to stderr and into the timeline. --export puts the
checkpoint in the bundle, so --from-file starts from it too; --list-checkpoints shows which are
kept, and so which ranges replay exactly. On a telemetry stream cut into partitions (read from
the stream, or ingest.partitions in --config), the replay runs a detector per partition, as serve
did, each from its partition's own checkpoint (one without starts from --warmup); --partition K
replays one partition alone. Progress goes to stderr; Ctrl-C stops and writes what was replayed so
far.`,
		Example: `  scalpel replay --since 2026-11-26T10:00:00Z --until 2026-11-26T10:30:00Z --report incident.html
  scalpel replay --since 1h --service checkout --config stricter.yaml --diff
  scalpel replay --since 1h --service checkout --export incident.ndjson
  scalpel replay --from-file incident.ndjson --report incident.html
  scalpel replay --list-checkpoints`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			now := time.Now().UTC()
			s, err := parseWhen(since, now)
			if err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			u, err := parseWhen(until, now)
			if err != nil {
				return fmt.Errorf("--until: %w", err)
			}
			if !s.IsZero() && !u.IsZero() && u.Before(s) {
				return errors.New("--until is before --since")
			}
			if listCheckpoints && (fromFile != "" || exportPath != "") {
				return errors.New("--list-checkpoints reads the server's checkpoints: it takes neither --from-file nor --export")
			}
			if exportPath != "" && fromFile != "" {
				return errors.New("--export and --from-file do not go together: the bundle already is an export")
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if global.prefix != "" {
				cfg.NATS.SubjectPrefix = global.prefix
			}
			if cmd.Flags().Changed("partition") && fromFile != "" {
				return errors.New("--partition reads one partition of the server's telemetry stream: an --from-file bundle has no partitions")
			}
			if !cmd.Flags().Changed("warmup") {
				warmup = cfg.Detect.ReplayWarmup()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()

			var js jetstream.JetStream
			if fromFile == "" {
				nc, jsc, err := connect()
				if err != nil {
					return err
				}
				defer nc.Close()
				js = jsc
				// A replay of a cut stream runs a detector per partition, as serve did, which
				// needs to know the cut: the stream says it when --config does not.
				if cfg.Ingest.Partitions == 0 {
					if n, err := telemetryPartitions(ctx, js); err != nil {
						return err
					} else if n > 0 {
						cfg.Ingest.Partitions = n
						if !quiet && !listCheckpoints && !cmd.Flags().Changed("partition") {
							fmt.Fprintf(cmd.ErrOrStderr(), "the telemetry stream is cut into %d partitions (ingest.partitions): a detector per partition, as serve ran\n", n)
						}
					}
				}
			}
			if cmd.Flags().Changed("partition") {
				cfg.Ingest.Partition = &partition
				if err := cfg.Ingest.Validate(); err != nil {
					return fmt.Errorf("--partition: %w", err)
				}
				if service != "" && ingest.Partition(service, cfg.Ingest.Partitions) != partition {
					return fmt.Errorf("--service %s is stored in partition %d, not %d", service, ingest.Partition(service, cfg.Ingest.Partitions), partition)
				}
			}

			if listCheckpoints {
				return listReplayCheckpoints(ctx, cmd.OutOrStdout(), js, cfg, asJSON)
			}
			var src replay.Source
			if fromFile != "" {
				f, err := os.Open(fromFile)
				if err != nil {
					return fmt.Errorf("--from-file: %w", err)
				}
				st, _ := f.Stat()
				var size int64
				if st != nil {
					size = st.Size()
				}
				src = replay.NewFileSource(f, size)
			} else {
				so := replay.ServerOptions{Subjects: cfg.Subjects(), Since: s, Until: u, Warmup: warmup, Service: service}
				if k := cfg.Ingest.Partition; k != nil {
					so.Partition, so.Partitions, so.TelemetryFilters = k, cfg.Ingest.Partitions, cfg.Ingest.Filters(cfg.Subjects())
				}
				if checkpoint {
					so.Checkpoints = &cfg
				}
				ss, err := replay.NewServerSource(ctx, js, so)
				if err != nil {
					return err
				}
				src = ss
				if !s.IsZero() && !quiet {
					if cps, why := ss.Checkpoints(); len(cps) > 0 {
						for _, cp := range cps {
							which := "detector"
							if cp.Partition != nil {
								which = fmt.Sprintf("partition %d's detector", *cp.Partition)
							}
							fmt.Fprintf(cmd.ErrOrStderr(), "%s starts from checkpoint %s/%s (watermark %s, telemetry after sequence %d)\n",
								which, schemas.ObjectState, cp.Object, cp.Watermark.UTC().Format(time.RFC3339), cp.Seq)
						}
						if why != "" {
							fmt.Fprintf(cmd.ErrOrStderr(), "the other partitions' detectors start empty, %s of telemetry before --since: %s\n", warmup, why)
						}
					} else {
						fmt.Fprintf(cmd.ErrOrStderr(), "detector starts empty, %s of telemetry before --since: %s\n", warmup, why)
					}
				}
			}
			defer src.Close()

			stderr := cmd.ErrOrStderr()
			if exportPath != "" {
				f, err := os.Create(exportPath)
				if err != nil {
					return fmt.Errorf("--export: %w", err)
				}
				n, err := replay.Export(ctx, src, f, func(records int, frac float64) {
					if !quiet {
						fmt.Fprintf(stderr, "\rexport: %d records, %s", records, pct(frac))
					}
				})
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if !quiet {
					fmt.Fprintln(stderr)
				}
				if err != nil {
					if ctx.Err() != nil {
						fmt.Fprintf(stderr, "interrupted: %s holds the first %d records\n", exportPath, n)
						return errSilent
					}
					return fmt.Errorf("--export: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %d records to %s\n", n, exportPath)
				return nil
			}

			opts := replay.Options{Config: cfg, Since: s, Until: u, Component: component, Charts: reportPath != "",
				Logger: slog.New(slog.DiscardHandler)}
			if !quiet {
				opts.Progress = func(p replay.Progress) {
					fmt.Fprintf(stderr, "\rreplay: %d events, %.0f events/s, %s of the range   ", p.Events, p.EventsPerSec, pct(p.Fraction))
					if p.Done {
						fmt.Fprintln(stderr)
					}
				}
			}
			tl, runErr := replay.Run(ctx, src, opts)
			if runErr != nil && !tl.Interrupted && !errors.Is(runErr, replay.ErrNoInput) {
				return runErr
			}
			if tl.Interrupted {
				fmt.Fprintln(stderr, "interrupted: writing what was replayed so far")
			}
			if errors.Is(runErr, replay.ErrNoInput) {
				fmt.Fprintln(stderr, "warning:", runErr)
			}
			if st := tl.Stats; st.Late+st.Invalid+st.OverLimit > 0 {
				fmt.Fprintf(stderr, "note: the detector did not detect on %d late event(s) (their bucket had closed), %d invalid and %d beyond detect.max_series\n",
					st.Late, st.Invalid, st.OverLimit)
			}
			if n := tl.Stats.ClockTicks; n > 0 {
				fmt.Fprintf(stderr, "note: %d of the events were clock ticks serve published while no telemetry came in (ingest.tick_after); they moved event time on as they did live\n", n)
			}
			if reportPath != "" {
				f, err := os.Create(reportPath)
				if err != nil {
					return fmt.Errorf("--report: %w", err)
				}
				note := cfgPath
				if note == "" {
					note = "defaults"
				}
				err = replay.WriteReport(f, tl, replay.ReportOptions{ConfigNote: note, Generated: time.Now()})
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(stderr, "report written to %s\n", reportPath)
			}
			if timelinePath != "" {
				f, err := os.Create(timelinePath)
				if err != nil {
					return fmt.Errorf("--timeline: %w", err)
				}
				err = writeJSON(f, tl)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			switch {
			case asJSON && diff:
				return writeJSON(out, tl.Diff)
			case asJSON:
				return writeJSON(out, tl)
			}
			for _, e := range tl.Events {
				kind := e.Kind
				if kind == "actuation_failure" {
					kind = "failed" // keeps the column narrow; the summary says what failed
				}
				fmt.Fprintf(out, "%s  %-8s  %s\n", e.TS.UTC().Format("2006-01-02 15:04:05.000"), kind, e.Summary)
			}
			if len(tl.Events) == 0 {
				fmt.Fprintln(out, "nothing happened in the range: no deploy, anomaly or decision")
			}
			if diff && tl.Diff != nil {
				fmt.Fprintln(out)
				if tl.Diff.Identical {
					fmt.Fprintf(out, "diff: identical to what was recorded (%d decisions, %d anomalies)\n", tl.Diff.Same, tl.Diff.Anomalies.Same)
				} else {
					fmt.Fprintf(out, "diff against %d recorded decision(s):\n  %s\n", len(tl.Recorded.Decisions), strings.Join(tl.Diff.Lines(), "\n  "))
				}
			}
			if tl.Interrupted {
				return errSilent
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "start of the range in event time: RFC 3339 or a duration before now (1h); default the start of the streams")
	f.StringVar(&until, "until", "", "end of the range in event time: RFC 3339 or a duration before now; default the end of the streams")
	f.DurationVar(&warmup, "warmup", 0, "telemetry replayed before --since so the detector has baselines (default: what the detector remembers, 13 history epochs, 1h5m at the defaults)")
	f.BoolVar(&checkpoint, "checkpoint", true, "start the detector from the newest dated checkpoint before --since when one fits (false: always --warmup)")
	f.BoolVar(&listCheckpoints, "list-checkpoints", false, "list the detector checkpoints a replay can start from, and what stops the others, then exit")
	f.StringVar(&service, "service", "", "replay only this service")
	f.IntVar(&partition, "partition", 0, "replay only this partition of the telemetry, as the serve process given --partition read it (needs ingest.partitions in --config)")
	f.StringVar(&component, "component", "", "report only this component (every series is still replayed)")
	f.StringVar(&cfgPath, "config", "", "config file to replay with (default: the built-in defaults)")
	f.BoolVar(&diff, "diff", false, "compare replayed decisions with those recorded in DECISIONS")
	f.StringVar(&reportPath, "report", "", "write a self-contained HTML incident report to this file")
	f.StringVar(&timelinePath, "timeline", "", "also write the JSON timeline to this file")
	f.StringVar(&exportPath, "export", "", "write the raw events of the range to this NDJSON bundle instead of replaying")
	f.StringVar(&fromFile, "from-file", "", "replay an NDJSON bundle written by --export (no server needed)")
	f.BoolVarP(&quiet, "quiet", "q", false, "no progress on stderr")
	return cmd
}

// listReplayCheckpoints prints the detector checkpoints of cfg's ingest consumer, newest first, and
// whether a replay under cfg can start from each.
func listReplayCheckpoints(ctx context.Context, w io.Writer, js jetstream.JetStream, cfg config.Config, asJSON bool) error {
	// A cut stream's partitions keep their own: those of every partition, or of the one named.
	cfgs := []config.Config{cfg}
	if n := cfg.Ingest.Partitions; n > 0 && cfg.Ingest.Partition == nil {
		cfgs = nil
		for k := range n {
			c := cfg
			c.Ingest.Partition = &k
			cfgs = append(cfgs, c)
		}
	}
	var list []pipeline.CheckpointInfo
	for _, c := range cfgs {
		l, err := pipeline.ListCheckpoints(ctx, js, c)
		if err != nil {
			return err
		}
		list = append(list, l...)
	}
	if asJSON {
		return writeJSON(w, map[string]any{"checkpoints": list})
	}
	if len(list) == 0 {
		fmt.Fprintf(w, "no detector checkpoints in %s: serve writes them every detect_checkpoint, and keeps dated copies every detect_checkpoint_history\n", schemas.ObjectState)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WATERMARK\tOBJECT\tTELEMETRY SEQ\tSERIES\tBYTES\tREPLAY FROM IT")
	var oldest time.Time
	for _, c := range list {
		use := "yes"
		if c.Problem != "" {
			use = "no: " + c.Problem
		} else {
			oldest = c.Watermark
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", c.Watermark.UTC().Format(time.RFC3339), c.Object, c.Seq, c.Series, c.Bytes, use)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	switch {
	case oldest.IsZero():
		fmt.Fprintln(w, "none of them fits this config: every replay starts from --warmup")
	case len(cfgs) > 1:
		fmt.Fprintln(w, "a replay of every partition starts from each partition's newest before --since when every partition has one, else from --warmup; --partition K or --service from that partition's")
	default:
		// A checkpoint serves a --since after the newest event it saw (FindCheckpoint).
		fmt.Fprintf(w, "a replay with --since after %s starts from the newest of these that saw no event after it; an earlier one from --warmup\n",
			oldest.Add(time.Duration(cfg.Detect.AllowedLateness)).UTC().Format(time.RFC3339))
	}
	return nil
}

// parseWhen reads an RFC 3339 time or a duration before now; "" is the zero time.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-11-26T10:00:00Z) nor a duration (90m)", s)
}

func pct(f float64) string {
	if f < 0 {
		return "?%"
	}
	return fmt.Sprintf("%.0f%%", 100*f)
}

// telemetryPartitions is how many partitions the TELEMETRY stream is cut into (0: not cut, or no
// stream yet).
func telemetryPartitions(ctx context.Context, js jetstream.JetStream) (int, error) {
	str, err := js.Stream(ctx, schemas.StreamTelemetry)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open stream %s: %w", schemas.StreamTelemetry, err)
	}
	return ingest.CutPartitions(str.CachedInfo().Config.SubjectTransform), nil
}
