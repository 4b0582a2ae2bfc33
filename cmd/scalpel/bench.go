package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/internal/bench"
)

func init() { register(newBenchCmd) }

func newBenchCmd() *cobra.Command {
	var (
		o          bench.Options
		cpuProfile string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure throughput, latency and cost on an embedded server (what make bench prints)",
		Long: `bench starts an embedded NATS server in a temporary directory and, in alternating rounds, measures
  - the raw JetStream durable-consume rate: a bare nats.go pull consumer, 256-byte messages, the
    same batch size and ack policy as ingest, doing nothing with the messages;
  - events per second through ingest (decode, validate, batch, ack) and detect, for 256-byte
    TelemetryEvents spread over many series;
and prints the medians and their ratio. Machines are shared and noisy: read the ratio, which both
sides of the same run share, rather than the absolute rates. DESIGN target: ratio >= 0.8.

It then measures, on the same server:
  - replay (decode, detect, decide in dry run) against a bare ordered consumer over the same
    TELEMETRY stream, and the median of the rounds' ratios (target >= 0.7);
  - rollback command → deployer ack latency, p50 and p99 (actuate/deployer embedded in-process);
  - the telemetry SDK's net/http middleware cost per request, aggregation on and off;
  - the detector's cost per event and heap per tracked series (target <= 8 KiB), in-process.`,
		Example: `  scalpel bench
  scalpel bench --events 500000 --rounds 5 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			o.Progress = os.Stderr
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			res, err := bench.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "\n%-44s %14s\n", "measure", "value")
			fmt.Fprintf(w, "%-44s %14.0f\n", "raw JetStream durable consume (msg/s)", res.RawRate)
			fmt.Fprintf(w, "%-44s %14.0f\n", "ingest+detect (events/s)", res.PipelineRate)
			fmt.Fprintf(w, "%-44s %14.2f   (target >= 0.80)\n", "ratio ingest+detect / raw", res.Ratio)
			fmt.Fprintf(w, "%-44s %14.0f\n", "bare ordered consumer (msg/s)", res.OrderedRate)
			fmt.Fprintf(w, "%-44s %14.0f\n", "replay: decode+detect+decide (events/s)", res.ReplayRate)
			fmt.Fprintf(w, "%-44s %14.2f   (target >= 0.70)\n", "ratio replay / ordered", res.ReplayRatio)
			fmt.Fprintf(w, "%-44s %14s\n", "command → ack latency p50", res.AckP50.Round(10*time.Microsecond))
			fmt.Fprintf(w, "%-44s %14s\n", "command → ack latency p99", res.AckP99.Round(10*time.Microsecond))
			fmt.Fprintf(w, "%-44s %8.0f ns %3.0f allocs\n", "telemetry SDK per request, aggregation on", res.SDKNsAgg, res.SDKAllocsAgg)
			fmt.Fprintf(w, "%-44s %8.0f ns %3.0f allocs\n", "telemetry SDK per request, aggregation off", res.SDKNsRaw, res.SDKAllocsRaw)
			fmt.Fprintf(w, "%-44s %14.0f\n", "detect cost (ns/event, in-process)", res.DetectNsPerEvent)
			fmt.Fprintf(w, "%-44s %14.0f   (target <= 8192)\n", "detect memory per series (bytes)", res.DetectBytesPerSeries)
			fmt.Fprintf(w, "%-44s %14.0f\n", "detector checkpoint per series (bytes)", res.CheckpointBytesPerSeries)
			fmt.Fprintf(w, "%-44s %11.1f µs\n", "checkpoint snapshot per series (under lock)", res.CheckpointSnapshotNs/1e3)
			fmt.Fprintf(w, "%-44s %11.1f µs\n", "checkpoint restore per series", res.CheckpointRestoreNs/1e3)
			fmt.Fprintf(w, "(%d-byte messages, %d events over %d series at %d events per event-second, median of %d rounds)\n",
				res.MessageBytes, res.Events, res.Series, res.EventRate, len(res.RawRates))
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Events, "events", 200_000, "events (and raw messages) per measurement")
	f.IntVar(&o.Series, "series", 1000, "series the telemetry is spread over (a multiple of 10)")
	f.IntVar(&o.Rounds, "rounds", 3, "alternating rounds; medians are reported")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	f.IntVar(&o.EventRate, "event-rate", 20_000, "events per second of event time (sets how often buckets close)")
	return cmd
}
