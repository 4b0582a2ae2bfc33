package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// harness runs a pipeline on an embedded server.
type harness struct {
	t   *testing.T
	nc  *nats.Conn
	js  jetstream.JetStream
	p   *pipeline.Pipeline
	cfg config.Config
}

func start(t *testing.T) *harness {
	t.Helper()
	_, nc, js := natstest.Connect(t)
	cfg := config.Default()
	p := startPipeline(t, cfg, js)
	t.Cleanup(p.Stop)
	applyCheckout(t, p)
	return &harness{t: t, nc: nc, js: js, p: p, cfg: cfg}
}

// startPipeline starts every stage with cfg on js; the caller stops it.
func startPipeline(t *testing.T, cfg config.Config, js jetstream.JetStream) *pipeline.Pipeline {
	t.Helper()
	return startOpts(t, pipeline.Options{Config: cfg, JS: js, Registry: prometheus.NewRegistry(), Logger: testLogger(t)})
}

// startOpts builds a pipeline from o and starts it; the caller stops it.
func startOpts(t *testing.T, o pipeline.Options) *pipeline.Pipeline {
	t.Helper()
	p, err := pipeline.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return p
}

// applyCheckout puts the simulated checkout service's manifest in the catalog.
func applyCheckout(t *testing.T, p *pipeline.Pipeline) {
	t.Helper()
	m, err := schemas.ParseManifest([]byte(sim.CheckoutManifest))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Catalog().Apply(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) publishDeploy(ev schemas.DeployEvent) {
	h.t.Helper()
	want := h.p.DeploysRecorded() + 1
	b, _ := json.Marshal(ev)
	if _, err := h.js.Publish(context.Background(), h.cfg.Subjects().Deploy(ev.Service), b, jetstream.WithMsgID(ev.ID)); err != nil {
		h.t.Fatal(err)
	}
	natstest.CheckFor(h.t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := h.p.DeploysRecorded(); got < want {
			return fmt.Errorf("deploys recorded %d, want %d", got, want)
		}
		return nil
	})
}

// idle waits until every durable consumer of the pipeline has nothing pending.
func (h *harness) idle() {
	h.t.Helper()
	h.idleOn(60*time.Second,
		durable{schemas.StreamTelemetry, ingest.DefaultConfig().Durable},
		durable{schemas.StreamAnomalies, pipeline.DurableDecideAnomalies},
		durable{schemas.StreamDecisions, pipeline.DurableActuate})
}

// durable names a durable consumer on a stream.
type durable struct{ stream, name string }

// idleOn waits up to total until the durables have nothing pending or unacknowledged.
func (h *harness) idleOn(total time.Duration, ds ...durable) {
	h.t.Helper()
	ctx := context.Background()
	natstest.CheckFor(h.t, total, 20*time.Millisecond, func() error {
		for _, d := range ds {
			if err := natstest.Idle(ctx, h.js, d.stream, d.name); err != nil {
				return err
			}
		}
		return nil
	})
}

// deployVersion2 runs checkout's usual story: two minutes of 1.0 from t0, the deploy of 2.0 at
// t1, a minute of 2.0, then waits until the pipeline has handled it all.
func (h *harness) deployVersion2(svc *sim.Service) (t0, t1 time.Time) {
	h.t.Helper()
	t0, t1 = h.publishVersion2(svc, 60*time.Second, nil)
	h.idle()
	return t0, t1
}

// publishVersion2 publishes two minutes of 1.0 from t0, the deploy of 2.0 at t1 and post of
// 2.0's traffic, without the events drop says to leave out (nil: none).
func (h *harness) publishVersion2(svc *sim.Service, post time.Duration, drop func(ev schemas.TelemetryEvent, t1 time.Time) bool) (t0, t1 time.Time) {
	h.t.Helper()
	t0 = eventStart()
	h.publishDeploy(sim.CheckoutDeploy("d-1.0", t0, "1.0"))
	h.publishJS(svc.Traffic(t0, 120*time.Second))
	t1 = t0.Add(120 * time.Second)
	h.publishDeploy(sim.CheckoutDeploy("d-2.0", t1, "2.0"))
	svc.SetVersion("2.0")
	evs := svc.Traffic(t1, post)
	if drop != nil {
		evs = slices.DeleteFunc(evs, func(ev schemas.TelemetryEvent) bool { return drop(ev, t1) })
	}
	h.publishJS(evs)
	return t0, t1
}

// commands reads every rollback command in the ROLLBACKS stream.
func (h *harness) commands() []schemas.RollbackCommand {
	h.t.Helper()
	ctx := context.Background()
	cons, err := h.js.OrderedConsumer(ctx, schemas.StreamRollbacks, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{h.cfg.Subjects().RollbackCmd("*")},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []schemas.RollbackCommand
	for {
		msgs, err := cons.FetchNoWait(100)
		if err != nil {
			h.t.Fatal(err)
		}
		n := 0
		for m := range msgs.Messages() {
			n++
			cmd, err := schemas.DecodeCommandEvent(m.Headers(), m.Data())
			if err != nil {
				h.t.Fatalf("command on %s does not decode: %v", m.Subject(), err)
			}
			out = append(out, *cmd)
		}
		if n == 0 {
			return out
		}
	}
}

func (h *harness) publishJS(evs []schemas.TelemetryEvent) {
	h.t.Helper()
	for i := range evs {
		b, _ := json.Marshal(&evs[i])
		if _, err := h.js.PublishAsync(h.cfg.Subjects().Telemetry(evs[i].Service, evs[i].Component), b, jetstream.WithMsgID(evs[i].ID)); err != nil {
			h.t.Fatal(err)
		}
		if h.js.PublishAsyncPending() >= 1000 { // stay under the client's outstanding-publish limit
			select {
			case <-h.js.PublishAsyncComplete():
			case <-time.After(30 * time.Second):
				h.t.Fatal("telemetry publish did not complete")
			}
		}
	}
	select {
	case <-h.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		h.t.Fatal("telemetry publish did not complete")
	}
}

func checkOneBlockRollback(t *testing.T, cmds []schemas.RollbackCommand) {
	t.Helper()
	if len(cmds) != 1 {
		var s []string
		for _, c := range cmds {
			s = append(s, fmt.Sprintf("%s %s %s→%s", c.Action, c.Target(), c.FromVersion, c.ToVersion))
		}
		t.Fatalf("want exactly one command, got %d: %v", len(cmds), s)
	}
	c := cmds[0]
	if c.Action != schemas.ActionRollback || c.Service != "checkout" || c.Component != "tax-calc" || c.Block != "rate-lookup" {
		t.Fatalf("command targets %s (%s), want rollback of checkout/tax-calc/rate-lookup", c.Target(), c.Action)
	}
	if c.FromVersion != "2.0" || c.ToVersion != "1.0" {
		t.Fatalf("command goes %s → %s, want 2.0 → 1.0", c.FromVersion, c.ToVersion)
	}
	if c.Granularity != schemas.GranularityFine {
		t.Fatalf("granularity %q, want fine", c.Granularity)
	}
}

func TestEndToEndBlockRollback(t *testing.T) {
	h := start(t)
	svc := sim.Checkout(1)
	h.deployVersion2(svc)
	checkOneBlockRollback(t, h.commands())

	// The desired state is in scalpel_active for deployers that start later.
	kv, err := h.js.KeyValue(context.Background(), schemas.BucketActive)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), schemas.ActiveKey("checkout", "tax-calc", "rate-lookup"))
	if err != nil {
		t.Fatalf("scalpel_active has no entry for the rolled-back block: %v", err)
	}
	if !strings.Contains(string(e.Value()), `"1.0"`) {
		t.Fatalf("scalpel_active entry %s does not name version 1.0", e.Value())
	}
}

// TestEndToEndPlainJSONOverCoreNATS publishes hand-written JSON with a core connection, as a
// service in another language would, with malformed messages mixed in: they land in
// rejected.ingest with a reason and the loop still rolls back the bad block.
func TestEndToEndPlainJSONOverCoreNATS(t *testing.T) {
	h := start(t)
	svc := sim.Checkout(2)
	t0 := eventStart()

	// Count what reaches rejected.ingest.
	var mu sync.Mutex
	rejected := map[string]string{}
	sub, err := h.nc.Subscribe(h.cfg.Subjects().Rejected("ingest"), func(m *nats.Msg) {
		mu.Lock()
		rejected[string(m.Data)] = m.Header.Get(schemas.HeaderRejectReason)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	bad := []struct{ subject, body string }{
		{"telemetry.checkout.cart", `{"ts": "2026-11-26T10:00:01Z", "service": "checkout"`},
		{"telemetry.checkout.cart", `{"ts":"2026-11-26T10:00:01Z","service":"checkout","component":"cart","version":"1.0","latency_ms":"fast"}`},
		{"telemetry.checkout.cart", `{"ts":"2026-11-26T10:00:01Z","service":"checkout","component":"cart","version":"1.0","latency_ms":-4}`},
		{"telemetry.checkout.cart", `{"ts":"2026-11-26T10:00:01Z","service":"checkout","component":"cart","version":"1.0","error":"gremlins"}`},
		{"telemetry.checkout.cart", `{"ts":"2026-11-26T10:00:01Z","service":"checkout","component":"payment","version":"1.0"}`},
		{"telemetry.checkout.cart", `{"ts":"2026-11-26T10:00:01Z","service":"checkout","component":"cart","version":"1.0","attrs":{"pad":"` + strings.Repeat("x", 2<<20) + `"}}`},
	}
	publish := func(evs []schemas.TelemetryEvent, withBad bool) {
		for i := range evs {
			e := &evs[i]
			body := fmt.Sprintf(`{"ts":%q,"service":%q,"component":%q,"version":%q,"latency_ms":%g`,
				e.TS.Format(time.RFC3339Nano), e.Service, e.Component, e.Version, *e.LatencyMS)
			if e.Block != "" {
				body += fmt.Sprintf(`,"block":%q`, e.Block)
			}
			if e.Error != "" {
				body += fmt.Sprintf(`,"error":%q,"error_site":%q`, e.Error, e.ErrorSite)
			}
			body += "}"
			if err := h.nc.Publish("telemetry."+e.Service+"."+e.Component, []byte(body)); err != nil {
				t.Fatal(err)
			}
			if withBad && i%500 == 0 && i/500 < len(bad) {
				b := bad[i/500]
				if err := h.nc.Publish(b.subject, []byte(b.body)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := h.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	h.publishDeploy(sim.CheckoutDeploy("d-1.0", t0, "1.0"))
	publish(svc.Traffic(t0, 120*time.Second), true)
	t1 := t0.Add(120 * time.Second)
	h.publishDeploy(sim.CheckoutDeploy("d-2.0", t1, "2.0"))
	svc.SetVersion("2.0")
	publish(svc.Traffic(t1, 60*time.Second), false)
	h.idle()
	checkOneBlockRollback(t, h.commands())

	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(rejected) != len(bad) {
			return fmt.Errorf("%d messages in rejected.ingest, want %d", len(rejected), len(bad))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for _, b := range bad {
		reason, ok := rejected[b.body]
		if !ok {
			t.Errorf("not rejected: %.80s", b.body)
			continue
		}
		if reason == "" {
			t.Errorf("rejected without a reason: %.80s", b.body)
		}
		t.Logf("rejected (%s): %.60s", reason, b.body)
	}
}

// TestHealthyComponentsAreLeftAlone: a deploy in which nothing misbehaves yields no command.
func TestEndToEndNoChangeNoRollback(t *testing.T) {
	h := start(t)
	svc := sim.Checkout(3)
	svc.Block("tax-calc", "rate-lookup").Versions = nil // 2.0 is healthy too
	h.deployVersion2(svc)
	if cmds := h.commands(); len(cmds) != 0 {
		t.Fatalf("a healthy deploy produced %d command(s): first %s", len(cmds), cmds[0].Target())
	}
}

// testLogger sends the pipeline's logs to the test log, shown on failure or with -v.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// eventStart places the simulated history so that it ends near the wall clock: commands carry an
// expiry in event time, and actuators refuse expired ones.
func eventStart() time.Time { return time.Now().UTC().Add(-4 * time.Minute).Truncate(time.Second) }
