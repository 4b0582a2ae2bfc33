package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/replay"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// recording is a live incident: the pipeline ran over it and its streams hold what it did.
type recording struct {
	js        jetstream.JetStream
	cfg       config.Config
	anomalies [][]byte // as stored in ANOMALIES
	decisions [][]byte // as stored in DECISIONS
}

// live is a running pipeline on an embedded server, and the means to feed it.
type live struct {
	t    *testing.T
	ctx  context.Context
	js   jetstream.JetStream
	cfg  config.Config
	p    *pipeline.Pipeline
	subj schemas.Subjects
}

// startLive starts the whole pipeline with cfg and applies the manifests.
func startLive(t *testing.T, cfg config.Config, manifests ...string) *live {
	t.Helper()
	_, _, js := natstest.Connect(t)
	p, err := pipeline.New(pipeline.Options{Config: cfg, JS: js, Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	for _, y := range manifests {
		m, err := schemas.ParseManifest([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Catalog().Apply(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	return &live{t: t, ctx: ctx, js: js, cfg: cfg, p: p, subj: cfg.Subjects()}
}

func (l *live) publishDeploy(ev schemas.DeployEvent) {
	l.t.Helper()
	want := l.p.DeploysRecorded() + 1
	b, _ := json.Marshal(ev)
	if _, err := l.js.Publish(l.ctx, l.subj.Deploy(ev.Service), b, jetstream.WithMsgID(ev.ID)); err != nil {
		l.t.Fatal(err)
	}
	natstest.CheckFor(l.t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := l.p.DeploysRecorded(); got < want {
			return fmt.Errorf("deploys recorded %d, want %d", got, want)
		}
		return nil
	})
}

func (l *live) publish(evs []schemas.TelemetryEvent) {
	l.t.Helper()
	for i := range evs {
		if l.js.PublishAsyncPending() > 1000 { // bound in-flight publishes: slow runs (-race) stall otherwise
			<-l.js.PublishAsyncComplete()
		}
		b, _ := json.Marshal(&evs[i])
		if _, err := l.js.PublishAsync(l.subj.Telemetry(evs[i].Service, evs[i].Component), b, jetstream.WithMsgID(evs[i].ID)); err != nil {
			l.t.Fatal(err)
		}
	}
	select {
	case <-l.js.PublishAsyncComplete():
	case <-l.ctx.Done():
		l.t.Fatal("telemetry publish did not complete")
	}
}

// idle waits until every listed durable has handled everything stored so far.
func (l *live) idle(durables ...[2]string) {
	l.t.Helper()
	natstest.CheckFor(l.t, 60*time.Second, 50*time.Millisecond, func() error {
		for _, c := range durables {
			if err := natstest.Idle(l.ctx, l.js, c[0], c[1]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Durables of the stages that turn telemetry into decisions.
var (
	durIngest = [2]string{schemas.StreamTelemetry, ingest.DefaultConfig().Durable}
	durDecide = [2]string{schemas.StreamAnomalies, pipeline.DurableDecideAnomalies}
)

// recording reads what the live pipeline stored.
func (l *live) recording() *recording {
	l.t.Helper()
	rec := &recording{js: l.js, cfg: l.cfg}
	rec.anomalies = readStream(l.t, l.js, schemas.StreamAnomalies, l.subj.AnomalyAll())
	rec.decisions = readStream(l.t, l.js, schemas.StreamDecisions, l.subj.Decision("*"))
	if len(rec.decisions) == 0 || len(rec.anomalies) == 0 {
		l.t.Fatalf("the live incident recorded %d anomalies and %d decisions; want some of each", len(rec.anomalies), len(rec.decisions))
	}
	return rec
}

// record runs a live pipeline through a bad block deploy and waits until it has decided.
func record(t *testing.T) *recording {
	t.Helper()
	l := startLive(t, config.Default(), sim.CheckoutManifest)
	svc := sim.Checkout(7)
	t0 := time.Now().UTC().Add(-4 * time.Minute).Truncate(time.Second)
	l.publishDeploy(sim.CheckoutDeploy("d-1.0", t0, "1.0"))
	l.publish(svc.Traffic(t0, 120*time.Second))
	t1 := t0.Add(120 * time.Second)
	l.publishDeploy(sim.CheckoutDeploy("d-2.0", t1, "2.0"))
	svc.SetVersion("2.0")
	// A producer whose clock runs an hour ahead, mid-incident: live ingest rejects its event (or
	// it would have blinded the detector), and so must the replay, by the time the server stored
	// it.
	ahead := `{"ts":"` + time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `","service":"checkout","component":"cart","version":"1.0","latency_ms":5}`
	if _, err := l.js.Publish(l.ctx, l.subj.Telemetry("checkout", "cart"), []byte(ahead)); err != nil {
		t.Fatal(err)
	}
	l.publish(svc.Traffic(t1, 60*time.Second))
	// A malformed message: live ingest rejects it, and so must the replay.
	if _, err := l.js.Publish(l.ctx, l.subj.Telemetry("checkout", "cart"), []byte(`{"ts": "nope"`)); err != nil {
		t.Fatal(err)
	}
	l.idle(durIngest, durDecide)
	return l.recording()
}

func readStream(t *testing.T, js jetstream.JetStream, stream, subject string) [][]byte {
	t.Helper()
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		msgs, err := cons.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range msgs.Messages() {
			n++
			out = append(out, append([]byte(nil), m.Data()...))
		}
		if n == 0 {
			return out
		}
	}
}

// exportBundle exports what src holds as an incident bundle and parses it back, record by
// record: the bundle's bytes and its records, in order.
func exportBundle(t *testing.T, ctx context.Context, src replay.Source) ([]byte, []replay.Record) {
	t.Helper()
	var bundle bytes.Buffer
	if _, err := replay.Export(ctx, src, &bundle, nil); err != nil {
		t.Fatal(err)
	}
	var recs []replay.Record
	for _, line := range bytes.Split(bytes.TrimSpace(bundle.Bytes()), []byte("\n")) {
		r, err := replay.ParseRecord(line)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return bundle.Bytes(), recs
}

func marshalAll[T any](t *testing.T, xs []T) [][]byte {
	t.Helper()
	out := make([][]byte, len(xs))
	for i := range xs {
		b, err := json.Marshal(&xs[i])
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

func sameBytes(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: replay made %d, live recorded %d", what, len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s %d differs:\nreplay: %s\nlive:   %s", what, i, got[i], want[i])
		}
	}
}

func TestReplayReproducesLiveIncident(t *testing.T) {
	rec := record(t)
	ctx := context.Background()
	open := func() replay.Source {
		src, err := replay.NewServerSource(ctx, rec.js, replay.ServerOptions{Subjects: rec.cfg.Subjects()})
		if err != nil {
			t.Fatal(err)
		}
		return src
	}

	src := open()
	var progressed int
	tl, err := replay.Run(ctx, src, replay.Options{Config: rec.cfg, Charts: true, Progress: func(replay.Progress) { progressed++ }})
	_ = src.Close()
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "anomaly", marshalAll(t, tl.Anomalies), rec.anomalies)
	sameBytes(t, "decision", marshalAll(t, tl.Decisions), rec.decisions)
	if !tl.Diff.Identical {
		t.Fatalf("diff against the recording is not empty: %v", tl.Diff.Lines())
	}
	if n := sum(tl.Stats.Rejected); n != 2 || tl.Stats.Rejected[ingest.ClassFuture] != 1 {
		t.Errorf("rejected %v, want the malformed message and the one from a clock ahead", tl.Stats.Rejected)
	}
	if progressed == 0 {
		t.Error("no progress reported")
	}

	t.Run("bundle", func(t *testing.T) {
		bundle, recs := exportBundle(t, ctx, open())
		if out := os.Getenv("SCALPEL_REPLAY_BUNDLE"); out != "" { // to try `scalpel replay --from-file`
			if err := os.WriteFile(out, bundle, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		kinds := map[string]int{}
		for _, r := range recs {
			kinds[r.Kind]++
		}
		for _, k := range []string{replay.KindManifest, replay.KindDeploy, replay.KindTelemetry, replay.KindAnomaly, replay.KindDecision} {
			if kinds[k] == 0 {
				t.Errorf("bundle of %d records has no %s record: %v", len(recs), k, kinds)
			}
		}
		ftl, err := replay.Run(ctx, replay.NewFileSource(bytes.NewReader(bundle), int64(len(bundle))), replay.Options{Config: rec.cfg})
		if err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "anomaly from file", marshalAll(t, ftl.Anomalies), rec.anomalies)
		sameBytes(t, "decision from file", marshalAll(t, ftl.Decisions), rec.decisions)
		if !ftl.Diff.Identical {
			t.Fatalf("diff of the bundle replay is not empty: %v", ftl.Diff.Lines())
		}
	})

	t.Run("what-if", func(t *testing.T) {
		cfg := rec.cfg
		cfg.Detect.MinBaselineRequests = 1_000_000 // no baseline is ever good enough: nothing fires
		wtl, err := replay.Run(ctx, open(), replay.Options{Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		d := wtl.Diff
		if d.Identical || len(d.Removed) != len(rec.decisions) || len(d.Added) != 0 {
			t.Fatalf("diff: %d removed (want %d), %d added, identical %v", len(d.Removed), len(rec.decisions), len(d.Added), d.Identical)
		}
		if lines := d.Lines(); len(lines) == 0 || !strings.HasPrefix(lines[0], "- ") {
			t.Fatalf("diff lines %q: want removals first", lines)
		}
	})

	t.Run("series limit", func(t *testing.T) {
		cfg := rec.cfg
		cfg.Detect.MaxSeries = 1 // the first series the range starts; the others' events are counted
		ltl, err := replay.Run(ctx, open(), replay.Options{Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		if ltl.Stats.OverLimit == 0 || ltl.Stats.OverLimit >= uint64(ltl.Stats.Events) {
			t.Fatalf("series_limit_events = %d of %d events, want some but not all", ltl.Stats.OverLimit, ltl.Stats.Events)
		}
		var b bytes.Buffer
		if err := replay.WriteReport(&b, ltl, replay.ReportOptions{ConfigNote: "max_series 1"}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "would have exceeded max_series") {
			t.Error("the report does not say events went undetected for max_series")
		}
	})

	t.Run("report", func(t *testing.T) {
		var b bytes.Buffer
		if err := replay.WriteReport(&b, tl, replay.ReportOptions{ConfigNote: "defaults"}); err != nil {
			t.Fatal(err)
		}
		page := b.String()
		for _, want := range []string{"<svg", "tax-calc", "rollback", "baseline band", "reproduces"} {
			if !strings.Contains(page, want) {
				t.Errorf("report lacks %q", want)
			}
		}
		for _, banned := range []string{"<script", "http://", "https://"} {
			if strings.Contains(strings.ReplaceAll(page, "http://www.w3.org/2000/svg", ""), banned) {
				t.Errorf("report is not self-contained: it contains %q", banned)
			}
		}
		if out := os.Getenv("SCALPEL_REPLAY_REPORT"); out != "" { // to look at it in a browser
			if err := os.WriteFile(out, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func sum(m map[string]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

// TestPartitionCheckpointsNeedTheCut: a bundle whose detectors start from their partitions'
// checkpoints, replayed with a config that does not cut the stream, has one detector for all of
// them, which cannot start from one partition's state: it starts empty, and the timeline says why.
func TestPartitionCheckpointsNeedTheCut(t *testing.T) {
	k := 1
	cp, _ := json.Marshal(replay.CheckpointRecord{Object: "detect.scalpel-ingest-p1", Seq: 3, Partition: &k})
	lat := 12.0
	ev, _ := json.Marshal(schemas.TelemetryEvent{TS: time.Now().UTC().Add(-time.Minute), Service: "checkout", Component: "cart", Version: "1.0", LatencyMS: &lat})
	recs := []replay.Record{
		{Kind: replay.KindCheckpoint, Subject: "scalpel_state/detect.scalpel-ingest-p1", Seq: 3, Data: cp},
		{Kind: replay.KindTelemetry, Subject: "telemetry.checkout.cart.1", Seq: 4, Data: ev},
	}
	tl, err := replay.Run(context.Background(), replay.NewSliceSource(recs), replay.Options{Config: config.Default()})
	if err != nil {
		t.Fatal(err)
	}
	if tl.Checkpoint != nil || len(tl.Warnings) != 1 || !strings.Contains(tl.Warnings[0], "replay with the config's ingest.partitions") {
		t.Fatalf("checkpoint %v, warnings %q", tl.Checkpoint, tl.Warnings)
	}
	if tl.Stats.Events != 1 {
		t.Errorf("%d events replayed, want the one after the checkpoint", tl.Stats.Events)
	}
}
