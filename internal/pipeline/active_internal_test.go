package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/metricstest"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// TestRenewingKeepsLeasesThroughASlowTakeover: while a takeover restores the detector or rebuilds
// the decide engine, which can outlast the TTL, the leases it holds are renewed, so no other
// standby takes them meanwhile; once it stops renewing they lapse.
func TestRenewingKeepsLeasesThroughASlowTakeover(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketState})
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 300 * time.Millisecond
	held := decide.NewLease(kv, IngestLeaseKey("scalpel-ingest"), ttl)
	other := decide.NewLease(kv, IngestLeaseKey("scalpel-ingest"), ttl)
	notHeld := decide.NewLease(kv, decide.LeaseKey, ttl) // renewing leaves a lease it does not hold alone
	if err := held.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	first := held.ValidUntil()
	stop := renewing(ctx, held, notHeld)
	// Past the expiry the first Acquire wrote, and renewed since.
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !time.Now().After(first) || !held.ValidUntil().After(time.Now()) {
			return fmt.Errorf("not yet past the first expiry with a renewal (valid until %v)", held.ValidUntil())
		}
		return nil
	})
	if err := other.Acquire(ctx); !errors.Is(err, decide.ErrLeaseHeld) {
		stop()
		t.Fatalf("another process took the lease while it was being renewed: %v", err)
	}
	if other.Held() || notHeld.Held() {
		t.Fatal("a lease not taken reads as held")
	}
	stop()
	natstest.CheckFor(t, 10*ttl, 10*time.Millisecond, func() error { return other.Acquire(ctx) }) // it lapses
	if !other.Held() {
		t.Fatal("the lease taken over does not read as held")
	}
	if _, err := kv.Get(ctx, decide.LeaseKey); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("renewing took a lease this process did not hold: %v", err)
	}
}

// LogBuffer collects a logger's output for a test to read. Exported to the pipeline_test
// package's tests too (this file is compiled with them).
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestLeaseRegainedKeepsACurrentDetector: the active process loses the ingest lease (in a NATS
// outage, say: here another holder's record is written over it) and takes it back. When nobody
// acknowledged telemetry past what its detector holds, it resumes with that detector; checkpoints
// and the replay window are off, so a restore would have left it empty. When another consumer
// acknowledged more meanwhile, it restores instead.
func TestLeaseRegainedKeepsACurrentDetector(t *testing.T) {
	for _, moved := range []bool{false, true} {
		t.Run(fmt.Sprintf("others acknowledged more: %v", moved), func(t *testing.T) {
			_, _, js := natstest.Connect(t)
			ctx := context.Background()
			cfg := config.Default()
			cfg.DetectCheckpoint = schemas.Duration(time.Hour)
			cfg.DetectRestore = 0
			cfg.Decide.LeaseTTL = schemas.Duration(time.Second)
			logs := &LogBuffer{}
			p, err := New(Options{Config: cfg, JS: js, Registry: prometheus.NewRegistry(),
				Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Stop)
			var all []schemas.TelemetryEvent // as ingest decodes them, for a reference detector
			dec := ingest.NewDecoder(ingest.DecoderConfig{Subjects: cfg.Subjects()})
			publish := func(evs []schemas.TelemetryEvent) uint64 {
				var last uint64
				for i := range evs {
					b, _ := json.Marshal(&evs[i])
					subj := cfg.Subjects().Telemetry(evs[i].Service, evs[i].Component)
					if all, err = dec.Decode(subj, b, all); err != nil {
						t.Fatal(err)
					}
					ack, err := js.Publish(ctx, cfg.Subjects().Telemetry(evs[i].Service, evs[i].Component), b)
					if err != nil {
						t.Fatal(err)
					}
					last = ack.Sequence
				}
				return last
			}
			handled := func(seq uint64) {
				natstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
					p.detect.mu.Lock()
					defer p.detect.mu.Unlock()
					if p.detect.seq < seq {
						return fmt.Errorf("the detector holds telemetry through %d of %d", p.detect.seq, seq)
					}
					return nil
				})
			}
			active := func(want float64) {
				natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
					var m dto.Metric
					if err := p.m.active.WithLabelValues("ingest").Write(&m); err != nil {
						return err
					}
					if got := m.GetGauge().GetValue(); got != want {
						return fmt.Errorf("scalpel_stage_active{stage=ingest} = %v, want %v", got, want)
					}
					return nil
				})
			}
			svc := sim.Checkout(21)
			t0 := time.Now().UTC().Add(-10 * time.Minute).Truncate(time.Second)
			handled(publish(svc.Traffic(t0, 60*time.Second)))

			kv, err := js.KeyValue(ctx, schemas.BucketState)
			if err != nil {
				t.Fatal(err)
			}
			key := IngestLeaseKey(cfg.Ingest.Durable)
			foreign, _ := json.Marshal(map[string]any{"holder": "another-process", "expires": time.Now().Add(time.Hour)})
			if _, err := kv.Put(ctx, key, foreign); err != nil {
				t.Fatal(err)
			}
			active(0)
			if err := p.ingestFence(); !errors.Is(err, errLeaseLapsed) {
				t.Fatalf("standing by, the ingest fence lets batches through: %v", err)
			}
			last := publish(svc.Traffic(t0.Add(60*time.Second), 30*time.Second))
			if moved { // the other holder consumes what came meanwhile
				cons, err := js.Consumer(ctx, schemas.StreamTelemetry, cfg.Ingest.Durable)
				if err != nil {
					t.Fatal(err)
				}
				for acked := uint64(0); acked < last; {
					b, err := cons.Fetch(500, jetstream.FetchMaxWait(time.Second))
					if err != nil {
						t.Fatal(err)
					}
					for m := range b.Messages() {
						_ = m.DoubleAck(ctx)
						md, _ := m.Metadata()
						acked = max(acked, md.Sequence.Stream)
					}
				}
			}
			if err := kv.Delete(ctx, key); err != nil { // the other holder stops
				t.Fatal(err)
			}
			active(1)
			if err := p.ingestFence(); err != nil || p.detect.fence == nil {
				t.Fatalf("active again, the ingest fence is %v (set: %v)", err, p.detect.fence != nil)
			}
			resumed := strings.Contains(logs.String(), "detector current: resuming without a restore")
			restores := strings.Count(logs.String(), "restore detector: no checkpoint yet")
			if resumed == moved || restores != map[bool]int{false: 1, true: 2}[moved] {
				t.Fatalf("resumed without a restore: %v, restores %d; want %v and %d\n%s", resumed, restores, !moved,
					map[bool]int{false: 1, true: 2}[moved], logs)
			}
			if moved {
				return
			}
			handled(last)
			handled(publish(svc.Traffic(t0.Add(90*time.Second), 30*time.Second)))
			got, err := p.detect.det.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			ref := NewDetector(cfg, nil)
			for i := range all {
				ref.Observe(&all[i])
			}
			ref.Advance(ref.Watermark())
			want, err := ref.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("the resumed detector differs from one that saw every event (%d vs %d bytes)", len(got), len(want))
			}
		})
	}
}

// TestFencedBatchIsNeitherHandledNorAcknowledged: while the fence says the ingest lease has
// lapsed, a batch reaches neither the detector nor the server as acknowledged; it goes through,
// once, when the fence opens (the lease renewed). Handing it back on standing by is Stop's.
func TestFencedBatchIsNeitherHandledNorAcknowledged(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	cfg := config.Default()
	if err := ingest.EnsureTopology(ctx, js, cfg.Subjects(), cfg.Topology); err != nil {
		t.Fatal(err)
	}
	evs := sim.Checkout(5).Traffic(time.Now().UTC().Add(-10*time.Minute).Truncate(time.Second), 5*time.Second)
	for i := range evs {
		b, _ := json.Marshal(&evs[i])
		if _, err := js.Publish(ctx, cfg.Subjects().Telemetry(evs[i].Service, evs[i].Component), b); err != nil {
			t.Fatal(err)
		}
	}
	stage := NewDetectStage(NewDetector(cfg, nil), nil)
	var open atomic.Bool
	stage.fence = func() error {
		if !open.Load() {
			return errLeaseLapsed
		}
		return nil
	}
	icfg := cfg.Ingest
	icfg.RetryDelay = schemas.Duration(20 * time.Millisecond)
	icfg.MaxRetryDelay = schemas.Duration(50 * time.Millisecond)
	reg := prometheus.NewRegistry()
	c, err := ingest.NewConsumer(js, cfg.Subjects(), icfg, stage, ingest.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(); <-c.Done() })
	floor := func() uint64 {
		cons, err := js.Consumer(ctx, schemas.StreamTelemetry, icfg.Durable)
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.AckFloor.Stream
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { // retried, fenced each time
		if n, _ := metricstest.Value(t, reg, "scalpel_ingest_retries_total", nil); n < 3 {
			return fmt.Errorf("%v retries", n)
		}
		return nil
	})
	if n, f := stage.SeriesCount(), floor(); n != 0 || f != 0 {
		t.Fatalf("fenced: the detector holds %d series and the ack floor is %d; want neither to move", n, f)
	}
	open.Store(true)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if f := floor(); f != uint64(len(evs)) {
			return fmt.Errorf("ack floor %d of %d", f, len(evs))
		}
		return nil
	})
	if n := stage.SeriesCount(); n == 0 {
		t.Fatal("the batch went through without reaching the detector")
	}
	if got := stage.det.Watermark(); got.IsZero() {
		t.Fatal("the detector saw no event")
	}
}

// TestDecisionsAreFencedByTheDecideLease: a decider whose lease has lapsed by its own clock (here
// its lease is swapped for one it never took) publishes nothing, and says why, so the message that
// led to the decision goes back for the new holder; with the lease valid again, it publishes.
func TestDecisionsAreFencedByTheDecideLease(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	cfg := config.Default()
	p := startInternal(t, cfg, js)
	if _, deciding := p.Active(); !deciding {
		t.Fatal("the only process does not decide")
	}
	d := schemas.Decision{ID: "fence-1", TS: time.Now().UTC(), IncidentID: "inc-1", Action: schemas.ActionHold,
		Service: "checkout", Reason: "a test of the fence"}
	stored := func() uint64 { return decisionsStored(t, js) }
	held := p.decideLease.Load()
	kv, err := js.KeyValue(ctx, schemas.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	p.decideLease.Store(decide.NewLease(kv, decide.LeaseKey, time.Second)) // never taken: lapsed
	if err := p.publishDecisions(ctx, []schemas.Decision{d}); !errors.Is(err, errDecideLeaseLapsed) {
		t.Fatalf("published with the lease lapsed: %v", err)
	}
	if n := stored(); n != 0 {
		t.Fatalf("DECISIONS holds %d messages after a fenced publication", n)
	}
	p.decideLease.Store(held)
	if err := p.publishDecisions(ctx, []schemas.Decision{d}); err != nil {
		t.Fatal(err)
	}
	if n := stored(); n != 1 {
		t.Fatalf("DECISIONS holds %d messages, want the decision", n)
	}
}

// delivered is a message delivered n times, for redeliveryDelay.
type delivered struct {
	jetstream.Msg
	n uint64
}

func (d delivered) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: d.n}, nil
}

// TestDecideNeverDropsAMessageItFailedOn: decide's consumers redeliver without limit (a message
// dropped after a few failures would be an anomaly never decided), later and later; so does
// actuate's (a decision dropped unsettled would be a rollback neither carried out nor failed).
func TestDecideNeverDropsAMessageItFailedOn(t *testing.T) {
	for n, want := range map[uint64]time.Duration{1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second, 6: 30 * time.Second, 1000: 30 * time.Second} {
		if got, _ := redeliveryDelay(delivered{n: n}); got != want {
			t.Errorf("delivery %d: wait %v, want %v", n, got, want)
		}
	}
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	startInternal(t, config.Default(), js)
	for _, c := range []struct{ stream, durable string }{
		{schemas.StreamAnomalies, DurableDecideAnomalies},
		{schemas.StreamRollbacks, DurableDecideAcks},
		{schemas.StreamDecisions, DurableDecideApprovals},
		{schemas.StreamRejected, DurableDecideRejected},
		{schemas.StreamDecisions, DurableActuate},
	} {
		cons, err := js.Consumer(ctx, c.stream, c.durable)
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.MaxDeliver != -1 {
			t.Errorf("%s: max deliver %d, want unlimited", c.durable, info.Config.MaxDeliver)
		}
	}
}

// TestAdvanceRetriesDecisionsItCouldNotPublish: the decisions event time makes (here an anomaly
// no deploy came for, decided when deploy_skew has passed) come from AdvanceDecide, which no
// message offers again. When they cannot be published (the context here is cancelled), the next
// call publishes them.
func TestAdvanceRetriesDecisionsItCouldNotPublish(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	cfg := config.Default()
	p := startInternal(t, cfg, js)
	m, err := schemas.ParseManifest([]byte("service: ledger\nrollback_window: 1m\ncomponents:\n  - component: post\n    granularity: medium\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Catalog().Apply(ctx, m); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Add(-10 * time.Minute).Truncate(time.Second)
	score := 0.999
	a := schemas.Anomaly{ID: schemas.DeriveID("anomaly", "advance-test"), TSDetected: t0,
		Window: schemas.Window{From: t0.Add(-30 * time.Second), To: t0}, Service: "ledger", Component: "post",
		Version: "2.0", BaselineVersion: "1.0", Metric: schemas.MetricErrorRate, ErrorCategory: schemas.ErrException,
		Observed: 0.12, Baseline: 0.01, Effect: 0.11, Statistic: 14, Score: &score, Samples: schemas.Samples{Observed: 900, Baseline: 4000}}
	b, _ := json.Marshal(&a)
	if _, err := js.Publish(ctx, cfg.Subjects().Anomaly(a.Service, a.Component), b); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { // decide has taken it in
		cons, err := js.Consumer(ctx, schemas.StreamAnomalies, DurableDecideAnomalies)
		if err != nil {
			return err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.AckFloor.Stream != 1 {
			return fmt.Errorf("the anomaly is not decided on yet")
		}
		return nil
	})
	stored := func() uint64 { return decisionsStored(t, js) }
	if n := stored(); n != 0 {
		t.Fatalf("%d decisions before deploy_skew passed: the anomaly was not parked", n)
	}
	past := t0.Add(time.Duration(cfg.Decide.DeploySkew) + time.Second)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	p.AdvanceDecide(cancelled, past) // decides, and cannot publish
	if n := stored(); n != 0 {
		t.Fatalf("%d decisions published with a cancelled context", n)
	}
	p.AdvanceDecide(ctx, past) // the same watermark: nothing new, but what was not published
	if n := stored(); n == 0 {
		t.Fatal("the decisions Advance made and could not publish are lost")
	}
}

// startInternal starts a pipeline on js, stopped when the test ends.
func startInternal(t *testing.T, cfg config.Config, js jetstream.JetStream) *Pipeline {
	t.Helper()
	p, err := New(Options{Config: cfg, JS: js, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// decisionsStored counts the messages of the DECISIONS stream.
func decisionsStored(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx := context.Background()
	str, err := js.Stream(ctx, schemas.StreamDecisions)
	if err != nil {
		t.Fatal(err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
