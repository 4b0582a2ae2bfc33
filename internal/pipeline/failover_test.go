package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/metricstest"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

const ledgerManifest = `service: ledger
rollback_window: 1m
components:
  - component: post
    granularity: medium
`

// TestDeciderFailover runs two processes on one server. The first holds the decide lease: it rolls
// back the bad block of checkout and, for ledger, turns a recommendation into a rollback when a
// person approves it. It stops mid-incident; the second takes over within the lease TTL, knows the
// approval was answered and the block rolled back, and carries the checkout incident to its end —
// without a second command and without losing a decision.
func TestDeciderFailover(t *testing.T) {
	const ttl = 2 * time.Second
	_, nc, js := natstest.Connect(t)
	cfg := config.Default()
	cfg.Decide.LeaseTTL = schemas.Duration(ttl)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	startP := func(name string) *pipeline.Pipeline {
		t.Helper()
		p, err := pipeline.New(pipeline.Options{Config: cfg, JS: js, Registry: prometheus.NewRegistry(), Logger: testLogger(t).With("process", name)})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Stop)
		return p
	}

	p1 := startP("first")
	if !p1.Leading() {
		t.Fatal("the first process does not hold the decide lease")
	}
	for _, y := range []string{sim.CheckoutManifest, ledgerManifest} {
		m, err := schemas.ParseManifest([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p1.Catalog().Apply(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	h := &harness{t: t, nc: nc, js: js, p: p1, cfg: cfg}

	// checkout: the bad block is rolled back by the first process.
	svc := sim.Checkout(7)
	t0, t1 := h.deployVersion2(svc)
	cmds := h.commands()
	checkOneBlockRollback(t, cmds)
	checkoutInc := cmds[0].IncidentID
	h.publishAck(schemas.RollbackAck{CommandID: cmds[0].ID, Service: "checkout", Instance: "checkout-1", Status: schemas.AckApplied, ActiveVersion: "1.0", TS: t1.Add(61 * time.Second)})
	svc.Block("tax-calc", "rate-lookup").Active = "1.0" // the deployer applied it

	// ledger: outside its 1m window the answer is a recommendation, which a person approves.
	h.publishDeploy(schemas.DeployEvent{ID: "l-1", TS: t0.Add(-30 * time.Minute), Service: "ledger", AppVersion: "1.0",
		Components: []schemas.DeployComponent{{Component: "post", Version: "1.0"}}})
	h.publishDeploy(schemas.DeployEvent{ID: "l-2", TS: t0, Service: "ledger", AppVersion: "2.0",
		Components: []schemas.DeployComponent{{Component: "post", Version: "2.0"}}})
	score := 14.0
	ledgerAnomaly := schemas.Anomaly{ID: schemas.DeriveID("anomaly", "ledger-test"), TSDetected: t0.Add(3 * time.Minute),
		Window: schemas.Window{From: t0.Add(150 * time.Second), To: t0.Add(3 * time.Minute)}, Service: "ledger", Component: "post",
		Version: "2.0", BaselineVersion: "1.0", Metric: schemas.MetricErrorRate, ErrorCategory: schemas.ErrException,
		Observed: 0.12, Baseline: 0.01, Effect: 0.11, Statistic: 14, Score: &score, Samples: schemas.Samples{Observed: 900, Baseline: 4000}}
	if err := ledgerAnomaly.Validate(); err != nil {
		t.Fatal(err)
	}
	h.publishAnomaly(ledgerAnomaly)
	rec := h.waitDecision(func(d schemas.Decision) bool { return d.Service == "ledger" && d.Action == schemas.ActionRecommend })
	h.publishApproval(schemas.Approval{ID: schemas.DeriveID("approval", rec.ID), DecisionID: rec.ID, Service: "ledger", Approve: true,
		Actor: "alice@ops", Reason: "the deploy broke posting", TS: rec.TS.Add(time.Minute)})
	h.waitDecision(func(d schemas.Decision) bool {
		return d.IncidentID == rec.IncidentID && d.Action == schemas.ActionRollback
	})
	h.idleDecider()

	// The second process stands by while the first holds the lease.
	p2 := startP("second")
	if p2.Leading() {
		t.Fatal("two processes lead at once")
	}

	// Stop the first mid-incident: the block rollback is being verified.
	stopped := time.Now()
	p1.Stop()
	natstest.CheckFor(t, ttl, 20*time.Millisecond, func() error {
		if !p2.Leading() {
			return fmt.Errorf("the second process has not taken over %s after the first stopped", time.Since(stopped).Round(time.Millisecond))
		}
		return nil
	})
	t.Logf("takeover %s after stop (lease TTL %s)", time.Since(stopped).Round(time.Millisecond), ttl)
	h.p = p2

	// The rebuilt engine knows what the first process decided and what people and deployers answered.
	incs := map[string]decide.Incident{}
	for _, inc := range p2.DecideIncidents() {
		incs[inc.ID] = inc
	}
	if inc := incs[rec.IncidentID]; inc.PendingApproval != "" || inc.State != decide.IncidentMitigating {
		t.Errorf("ledger incident after takeover: state %q, pending approval %q; want mitigating with the approval answered", inc.State, inc.PendingApproval)
	}
	if inc := incs[checkoutInc]; inc.State != decide.IncidentMitigating || inc.Granularity != schemas.GranularityFine {
		t.Errorf("checkout incident after takeover: state %q at %q; want mitigating at fine", inc.State, inc.Granularity)
	}

	// The incident continues on the second process: traffic after the rollback flows through its
	// stages, and detect's end-of-episode notice — as the detector that saw the episode publishes it
	// (the second process's detector starts without the first one's windows) — closes the step.
	t2 := t1.Add(60 * time.Second)
	h.publishJS(svc.Traffic(t2, 30*time.Second))
	var firing []schemas.Anomaly
	for _, a := range h.anomalies() {
		if a.Service == "checkout" && a.Component == "tax-calc" && !a.IsResolved() {
			firing = append(firing, a)
		}
	}
	if len(firing) == 0 {
		t.Fatal("no firing checkout/tax-calc anomaly in ANOMALIES")
	}
	for i, a := range firing {
		a.Status, a.Resolution = schemas.AnomalyResolved, "error rate back under baseline after traffic moved to rate-lookup 1.0"
		at := t2.Add(time.Duration(20+i) * time.Second)
		a.ResolvedAt = &at
		h.publishAnomaly(a)
	}
	h.waitDecision(func(d schemas.Decision) bool { return d.IncidentID == checkoutInc && d.Action == schemas.ActionNone })
	h.idle()
	h.idleDecider()

	// Exactly one command for the checkout incident, and each decision stored once.
	var n int
	for _, c := range h.commands() {
		if c.IncidentID == checkoutInc {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d commands for the checkout incident, want exactly 1", n)
	}
	seen := map[string]int{}
	var steps []string
	for _, d := range h.decisions() {
		seen[d.ID]++
		if d.IncidentID == checkoutInc || d.IncidentID == rec.IncidentID {
			steps = append(steps, d.Service+" "+d.Action)
		}
	}
	for id, c := range seen {
		if c > 1 {
			t.Errorf("decision %s stored %d times", id, c)
		}
	}
	want := []string{"checkout rollback", "ledger recommend", "ledger rollback", "checkout none"}
	if fmt.Sprint(steps) != fmt.Sprint(want) {
		t.Errorf("decisions of the two incidents = %v, want %v", steps, want)
	}
}

func (h *harness) publishAnomaly(a schemas.Anomaly) {
	h.t.Helper()
	b, _ := json.Marshal(&a)
	if _, err := h.js.Publish(context.Background(), h.cfg.Subjects().Anomaly(a.Service, a.Component), b, jetstream.WithMsgID(a.ID+"-"+a.Status)); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) publishApproval(ap schemas.Approval) {
	h.t.Helper()
	b, _ := json.Marshal(&ap)
	if _, err := h.js.Publish(context.Background(), h.cfg.Subjects().Approval(ap.Service), b, jetstream.WithMsgID(ap.ID)); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) publishAck(a schemas.RollbackAck) {
	h.t.Helper()
	b, _ := json.Marshal(&a)
	if _, err := h.js.Publish(context.Background(), h.cfg.Subjects().RollbackAck(a.Service), b); err != nil {
		h.t.Fatal(err)
	}
}

// readAll hands every message of stream matching filter to f.
func (h *harness) readAll(stream, filter string, f func(jetstream.Msg)) {
	h.t.Helper()
	cons, err := h.js.OrderedConsumer(context.Background(), stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		h.t.Fatal(err)
	}
	for {
		msgs, err := cons.FetchNoWait(100)
		if err != nil {
			h.t.Fatal(err)
		}
		n := 0
		for m := range msgs.Messages() {
			n++
			f(m)
		}
		if n == 0 {
			return
		}
	}
}

func (h *harness) decisions() []schemas.Decision {
	var out []schemas.Decision
	h.readAll(schemas.StreamDecisions, h.cfg.Subjects().DecisionAll(), func(m jetstream.Msg) {
		if d, err := schemas.DecodeDecision(m.Data()); err == nil {
			out = append(out, *d)
		}
	})
	return out
}

func (h *harness) anomalies() []schemas.Anomaly {
	var out []schemas.Anomaly
	h.readAll(schemas.StreamAnomalies, h.cfg.Subjects().AnomalyAll(), func(m jetstream.Msg) {
		if a, err := schemas.DecodeAnomaly(m.Data()); err == nil {
			out = append(out, *a)
		}
	})
	return out
}

// waitDecision waits until a decision matching ok is stored, and returns it.
func (h *harness) waitDecision(ok func(schemas.Decision) bool) schemas.Decision {
	h.t.Helper()
	var got schemas.Decision
	natstest.CheckFor(h.t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, d := range h.decisions() {
			if ok(d) {
				got = d
				return nil
			}
		}
		return fmt.Errorf("no such decision yet")
	})
	return got
}

// idleDecider waits until the decider's ack and approval durables have nothing pending.
func (h *harness) idleDecider() {
	h.t.Helper()
	h.idleOn(10*time.Second,
		durable{schemas.StreamAnomalies, pipeline.DurableDecideAnomalies},
		durable{schemas.StreamRollbacks, pipeline.DurableDecideAcks},
		durable{schemas.StreamDecisions, pipeline.DurableDecideApprovals})
}

// TestStandbyTakesOverIngest runs two processes on one server. Only the first consumes the
// telemetry: the detector is stateful, and a standby that took every other message, as two
// consumers of one durable do, would leave both detectors with half of every series. When the
// first stops, the second takes the ingest lease, restores the detector from the first one's
// checkpoint and consumes on; its detector then holds exactly the state of one detector that saw
// the whole stream.
func TestStandbyTakesOverIngest(t *testing.T) {
	cfg := checkpointConfig(time.Hour) // checkpoints only when a process stops
	cfg.Decide.LeaseTTL = schemas.Duration(2 * time.Second)
	_, nc, js := natstest.Connect(t)
	reg1, reg2 := prometheus.NewRegistry(), prometheus.NewRegistry()
	p1 := startOpts(t, pipeline.Options{Config: cfg, JS: js, Registry: reg1, Logger: testLogger(t).With("process", "first")})
	p2 := startOpts(t, pipeline.Options{Config: cfg, JS: js, Registry: reg2, Logger: testLogger(t).With("process", "second")})
	t.Cleanup(p1.Stop)
	t.Cleanup(p2.Stop)
	applyCheckout(t, p1)
	h := &harness{t: t, nc: nc, js: js, p: p1, cfg: cfg}
	active := func(reg *prometheus.Registry, stage string) float64 {
		v, _ := metricstest.Value(t, reg, "scalpel_stage_active", map[string]string{"stage": stage})
		return v
	}
	if active(reg1, "ingest") != 1 || active(reg1, "decide") != 1 || active(reg2, "ingest") != 0 || active(reg2, "decide") != 0 {
		t.Fatalf("scalpel_stage_active: first %v/%v, second %v/%v; want the first to ingest and decide",
			active(reg1, "ingest"), active(reg1, "decide"), active(reg2, "ingest"), active(reg2, "decide"))
	}

	svc := sim.Checkout(11)
	t0 := eventStart()
	deploy := sim.CheckoutDeploy("d-1.0", t0, "1.0")
	first := svc.Traffic(t0, 60*time.Second)
	h.publishDeploy(deploy)
	h.publishJS(first)
	h.idle()
	if n, _ := metricstest.Value(t, reg1, "scalpel_ingest_events_total", nil); n != float64(len(first)) {
		t.Fatalf("the active process handled %v of %d events", n, len(first))
	}
	if n, ok := metricstest.Value(t, reg2, "scalpel_ingest_events_total", nil); ok {
		t.Fatalf("the standby handled %v events", n)
	}

	p1.Stop()
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if active(reg2, "ingest") != 1 || active(reg2, "decide") != 1 {
			return fmt.Errorf("the second process has not taken over")
		}
		return nil
	})
	h.p = p2
	second := svc.Traffic(t0.Add(60*time.Second), 60*time.Second)
	h.publishJS(second)
	h.idle()
	if n, _ := metricstest.Value(t, reg2, "scalpel_ingest_events_total", nil); n != float64(len(second)) {
		t.Fatalf("the process that took over handled %v of %d events", n, len(second))
	}
	p2.Stop()
	got, _ := readCheckpoint(t, js)

	// One process that sees it all.
	_, nc3, js3 := natstest.Connect(t)
	p3 := startPipeline(t, cfg, js3)
	t.Cleanup(p3.Stop)
	applyCheckout(t, p3)
	h3 := &harness{t: t, nc: nc3, js: js3, p: p3, cfg: cfg}
	h3.publishDeploy(deploy)
	h3.publishJS(append(first, second...))
	h3.idle()
	p3.Stop()
	want, _ := readCheckpoint(t, js3)
	if !bytes.Equal(got, want) {
		t.Fatalf("the detector after the takeover differs from one that saw the whole stream (%d vs %d bytes)", len(got), len(want))
	}
}

// TestCrashedProcessesBatchIsNotLate: a process crashed holding telemetry it had fetched and
// never acknowledged. The server redelivers it only after ack_wait, behind newer telemetry, and
// the detector would drop every one of those events as late. The next process handles them first,
// in stream order, so none is dropped and each is handled once.
func TestCrashedProcessesBatchIsNotLate(t *testing.T) {
	cfg := config.Default()
	// Longer than the process takes to start, short enough for the redeliveries to come back
	// within the test.
	cfg.Ingest.AckWait = schemas.Duration(5 * time.Second)
	_, nc, js := natstest.Connect(t)
	ctx := context.Background()
	if err := ingest.EnsureTopology(ctx, js, cfg.Subjects(), cfg.Topology); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, nc: nc, js: js, cfg: cfg}
	evs := sim.Checkout(3).Traffic(eventStart(), 60*time.Second)
	h.publishJS(evs)
	crashed, err := js.CreateOrUpdateConsumer(ctx, schemas.StreamTelemetry, jetstream.ConsumerConfig{
		Durable: cfg.Ingest.Durable, FilterSubject: cfg.Subjects().TelemetryAll(), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: time.Duration(cfg.Ingest.AckWait)})
	if err != nil {
		t.Fatal(err)
	}
	fetched, err := crashed.Fetch(500)
	if err != nil {
		t.Fatal(err)
	}
	for range fetched.Messages() {
	}

	reg := prometheus.NewRegistry()
	h.p = startOpts(t, pipeline.Options{Config: cfg, JS: js, Registry: reg, Logger: testLogger(t)})
	t.Cleanup(h.p.Stop)
	h.idle()
	if n, _ := metricstest.Value(t, reg, "scalpel_ingest_events_total", nil); n != float64(len(evs)) {
		t.Errorf("handled %v events, want each of the %d once", n, len(evs))
	}
	if n, _ := metricstest.Value(t, reg, "scalpel_detect_dropped_events_total", map[string]string{"reason": "late"}); n != 0 {
		t.Errorf("the detector dropped %v events as late", n)
	}
	if n, _ := metricstest.Value(t, reg, "scalpel_ingest_skipped_total", nil); n != 500 {
		t.Errorf("skipped %v redeliveries, want the 500 the crashed process held", n)
	}
}
