// Package bench measures scalpel's throughput the way DESIGN §6 asks: events through ingest+detect
// per second, next to the raw JetStream durable-consume rate measured in the same run, on the same
// embedded server, with the same message size, batch size and ack policy — and their ratio. The
// machines this runs on are shared and noisy, so the ratio is the figure to read; the absolute rates
// are printed for context.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/actuate/deployer"
	"github.com/scalpel-dev/scalpel/actuate/natsactuator"
	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/ingest/telemetry"
	"github.com/scalpel-dev/scalpel/internal/embedded"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/replay"
	"github.com/scalpel-dev/scalpel/schemas"
)

// Options configures Run.
type Options struct {
	// Events per measured run. Default 200 000.
	Events int
	// Series the telemetry is spread over (service × component × block). Default 1 000.
	Series int
	// Rounds of (raw, pipeline) measurements; the median of each is reported. Default 3.
	Rounds int
	// EventRate is how many events one second of event time holds (default 20 000, i.e. 20 requests
	// per series per second over 1 000 series). It sets how often buckets close and the tests run
	// relative to the per-event work.
	EventRate int
	// Progress receives a line per measurement; nil for none.
	Progress io.Writer
}

// Result holds the figures of a run.
type Result struct {
	MessageBytes  int     // size of each message, both sides
	RawRate       float64 // messages/s, bare durable pull consumer
	PipelineRate  float64 // events/s through ingest (decode, validate) + detect
	Ratio         float64 // PipelineRate / RawRate
	RawRates      []float64
	PipelineRates []float64
	Series        int
	Events        int
	EventRate     int

	// ReplayRate is events/s through `scalpel replay` (decode, detect, decide in dry run) reading
	// TELEMETRY with an ordered consumer; OrderedRate is a bare ordered consumer on the same stream.
	ReplayRate  float64
	OrderedRate float64
	ReplayRatio float64 // median of the rounds' replay/ordered ratios; target >= 0.7

	// AckP50/AckP99: rollback command issued (KV write + CloudEvent) → the deployer's ack received.
	AckP50, AckP99 time.Duration
	// SDK*: the telemetry SDK's net/http middleware cost per request, with per-second aggregation on
	// (Agg) and off (Raw).
	SDKNsAgg, SDKAllocsAgg, SDKNsRaw, SDKAllocsRaw float64

	// DetectNsPerEvent is the detector's cost per event (Observe plus its share of Advance, tests
	// included), in-process, no NATS.
	DetectNsPerEvent float64
	// DetectBytesPerSeries is the detector's steady-state heap per tracked series (target <= 8 KiB).
	DetectBytesPerSeries float64
	// CheckpointBytesPerSeries is the size of a detector checkpoint per series;
	// CheckpointSnapshotNs and CheckpointRestoreNs the time per series to take one (serve does
	// it under the detect stage's lock) and to restore one.
	CheckpointBytesPerSeries, CheckpointSnapshotNs, CheckpointRestoreNs float64
}

const bodySize = 256

// Run starts an embedded server in a temporary directory and measures both rates, alternating them
// so that a noisy neighbour hurts both alike.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Events <= 0 {
		o.Events = 200_000
	}
	if o.Series <= 0 {
		o.Series = 1000
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.EventRate <= 0 {
		o.EventRate = 20_000
	}
	o.Series = max(10, o.Series/10*10) // subjects and bodies agree only for a multiple of 10
	dir, err := os.MkdirTemp("", "scalpel-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		return nil, err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()

	res := &Result{MessageBytes: bodySize, Series: o.Series, Events: o.Events, EventRate: o.EventRate}
	payloads := telemetryPayloads(o.Events, o.Series, o.EventRate)
	for r := 0; r < o.Rounds; r++ {
		raw, err := measureRaw(ctx, srv, o.Events)
		if err != nil {
			return nil, fmt.Errorf("raw consume: %w", err)
		}
		res.RawRates = append(res.RawRates, raw)
		progress(o.Progress, "round %d/%d: raw JetStream durable consume  %9.0f msg/s", r+1, o.Rounds, raw)
		pipe, err := measurePipeline(ctx, srv, payloads, r)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		res.PipelineRates = append(res.PipelineRates, pipe)
		progress(o.Progress, "round %d/%d: ingest+detect                  %9.0f events/s", r+1, o.Rounds, pipe)
	}
	progress(o.Progress, "replay against a bare ordered consumer on the same stream ...")
	if res.ReplayRate, res.OrderedRate, res.ReplayRatio, err = measureReplay(ctx, srv, payloads, o.Rounds); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	progress(o.Progress, "command → ack latency through a deployer ...")
	if res.AckP50, res.AckP99, err = measureCommandAck(ctx, srv, 200); err != nil {
		return nil, fmt.Errorf("command → ack: %w", err)
	}
	progress(o.Progress, "telemetry SDK overhead per request ...")
	res.SDKNsAgg, res.SDKAllocsAgg, res.SDKNsRaw, res.SDKAllocsRaw = telemetry.BenchTelemetryOverhead()
	progress(o.Progress, "detector cost and memory per series ...")
	res.DetectNsPerEvent, res.DetectBytesPerSeries = detect.BenchFigures()
	progress(o.Progress, "detector checkpoint ...")
	if res.CheckpointBytesPerSeries, res.CheckpointSnapshotNs, res.CheckpointRestoreNs, err = detect.CheckpointFigures(1000); err != nil {
		return nil, fmt.Errorf("bench: detector checkpoint: %w", err)
	}
	res.RawRate = median(res.RawRates)
	res.PipelineRate = median(res.PipelineRates)
	res.Ratio = res.PipelineRate / res.RawRate
	return res, nil
}

func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func connect(srv *server.Server) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// publish loads n messages into the server before a measurement starts, so consumption is measured
// alone.
func publish(ctx context.Context, js jetstream.JetStream, subject func(i int) string, body func(i int) []byte, n int) error {
	for i := 0; i < n; i++ {
		if _, err := js.PublishAsync(subject(i), body(i)); err != nil {
			return err
		}
		if js.PublishAsyncPending() >= 2000 {
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// measureRaw is the baseline: a bare nats.go durable pull consumer with ingest's read-ahead and ack
// policy (explicit, every message), doing nothing with the messages.
func measureRaw(ctx context.Context, srv *server.Server, n int) (float64, error) {
	nc, js, err := connect(srv)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	_ = js.DeleteStream(ctx, "BENCH")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.raw"}, Storage: jetstream.FileStorage}); err != nil {
		return 0, err
	}
	defer js.DeleteStream(context.Background(), "BENCH")
	body := make([]byte, bodySize)
	for i := range body {
		body[i] = 'x'
	}
	if err := publish(ctx, js, func(int) string { return "bench.raw" }, func(int) []byte { return body }, n); err != nil {
		return 0, err
	}
	icfg := ingest.DefaultConfig()
	cons, err := js.CreateOrUpdateConsumer(ctx, "BENCH", jetstream.ConsumerConfig{
		Durable: "bench-raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 8 * icfg.BatchSize,
	})
	if err != nil {
		return 0, err
	}
	done := make(chan struct{})
	got := 0
	start := time.Now()
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * icfg.BatchSize))
	if err != nil {
		return 0, err
	}
	defer it.Stop()
	go func() {
		defer close(done)
		for got < n {
			m, err := it.Next()
			if err != nil {
				return
			}
			got++
			_ = m.Ack() // explicit ack of every message, as ingest does
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("raw consumer got %d of %d messages in 5 minutes", got, n)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// measurePipeline runs the real ingest consumer (decode, validate, reject routing, batching, acks)
// with the real detector behind it.
func measurePipeline(ctx context.Context, srv *server.Server, payloads [][]byte, round int) (float64, error) {
	nc, js, err := connect(srv)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	subj := schemas.Subjects{Prefix: "bench" + strconv.Itoa(round)}
	topo := ingest.DefaultTopologyConfig()
	if err := ingest.EnsureTopology(ctx, js, subj, topo); err != nil {
		return 0, err
	}
	// Each round uses fresh streams under its own prefix; delete them after.
	defer func() {
		for _, s := range topo.Streams(subj) {
			_ = js.DeleteStream(context.Background(), s.Name)
		}
	}()
	n := len(payloads)
	if err := publish(ctx, js, func(i int) string { return subj.Telemetry("shop", compName(i)) }, func(i int) []byte { return payloads[i] }, n); err != nil {
		return 0, err
	}
	det := detect.New(detect.DefaultConfig(), detect.WithLogger(slog.New(slog.DiscardHandler)))
	stage := pipeline.NewDetectStage(det, nil)
	done := make(chan struct{})
	seen := 0
	h := ingest.HandlerFunc(func(ctx context.Context, evs []schemas.TelemetryEvent) error {
		err := stage.HandleTelemetry(ctx, evs)
		seen += len(evs)
		if seen >= n {
			select {
			case <-done:
			default:
				close(done)
			}
		}
		return err
	})
	icfg := ingest.DefaultConfig()
	icfg.Durable = "bench-ingest"
	c, err := ingest.NewConsumer(js, subj, icfg, h, ingest.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := c.Start(ctx); err != nil {
		return 0, err
	}
	defer c.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("pipeline handled %d of %d events in 5 minutes", seen, n)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func compName(i int) string { return "c" + strconv.Itoa(i%10) }

// telemetryPayloads builds n valid TelemetryEvent bodies of exactly bodySize bytes, spread over the
// given number of series, with event time advancing at rate events per second so buckets close and
// the statistical tests run as they would live.
func telemetryPayloads(n, series, rate int) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	out := make([][]byte, n)
	for i := range out {
		s := i % series
		ts := t0.Add(time.Duration(i) * time.Second / time.Duration(rate)).Format("2006-01-02T15:04:05.000Z07:00")
		errField := ""
		if r.Float64() < 0.01 {
			errField = `,"error":"exception"`
		}
		body := fmt.Appendf(nil, `,"ts":%q,"service":"shop","component":%q,"block":"b%d","version":"1.4.2","cohort":"baseline","latency_ms":%.2f%s,"cpu":0.31,"mem_mb":212}`,
			ts, compName(s), s/10, 5+r.ExpFloat64()*20, errField)
		// The event id pads the message to exactly bodySize bytes, as real ids (uuids, trace ids) do.
		idLen := bodySize - len(body) - len(`{"id":""`)
		id := fmt.Sprintf("%0*d", idLen, i)
		b := append([]byte(`{"id":"`+id+`"`), body...)
		out[i] = b
	}
	return out
}

// measureReplay loads the telemetry into a fresh TELEMETRY stream and runs replay's own benchmark:
// alternating rounds of a bare ordered consumer and a full replay over the same messages.
func measureReplay(ctx context.Context, srv *server.Server, payloads [][]byte, rounds int) (replayRate, orderedRate, ratio float64, err error) {
	nc, js, err := connect(srv)
	if err != nil {
		return 0, 0, 0, err
	}
	defer nc.Close()
	subj := schemas.Subjects{Prefix: "benchreplay"}
	topo := ingest.DefaultTopologyConfig()
	if err := ingest.EnsureTopology(ctx, js, subj, topo); err != nil {
		return 0, 0, 0, err
	}
	defer func() {
		for _, s := range topo.Streams(subj) {
			_ = js.DeleteStream(context.Background(), s.Name)
		}
	}()
	n := len(payloads)
	if err := publish(ctx, js, func(i int) string { return subj.Telemetry("shop", compName(i)) }, func(i int) []byte { return payloads[i] }, n); err != nil {
		return 0, 0, 0, err
	}
	return replay.BenchReplay(ctx, js, schemas.StreamTelemetry, n, rounds)
}

// measureCommandAck issues n block rollbacks through the nats actuator to a deployer embedded in
// this process and times each until its ack arrives.
func measureCommandAck(ctx context.Context, srv *server.Server, n int) (p50, p99 time.Duration, err error) {
	nc, js, err := connect(srv)
	if err != nil {
		return 0, 0, err
	}
	defer nc.Close()
	subj := schemas.Subjects{}
	if err := ingest.EnsureTopology(ctx, js, subj, ingest.DefaultTopologyConfig()); err != nil {
		return 0, 0, err
	}
	kv, err := js.KeyValue(ctx, schemas.BucketActive)
	if err != nil {
		return 0, 0, err
	}
	act, err := natsactuator.New(js, kv, subj)
	if err != nil {
		return 0, 0, err
	}
	return deployer.BenchCommandAck(ctx, js, act.Actuate, n)
}
