package pipeline_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/metricstest"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/replay"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// TestClockTicksFindAServiceSilentAlone: checkout is the only service publishing, and 30 s after
// the deploy of 2.0 it serves not one request more. Detection runs on event time, which moved only
// with its events, so nothing was ever found. serve now publishes clock ticks once no telemetry
// has come in for ingest.tick_after, and they move event time on: each component's silence is
// found, and decide recommends rolling it back. The ticks are in the stream, so a replay of it
// finds what serve found.
func TestClockTicksFindAServiceSilentAlone(t *testing.T) {
	_, nc, js := natstest.Connect(t)
	cfg := config.Default()
	cfg.Ingest.TickAfter = schemas.Duration(time.Second)
	reg := prometheus.NewRegistry()
	p := startOpts(t, pipeline.Options{Config: cfg, JS: js, Registry: reg, Logger: testLogger(t)})
	t.Cleanup(p.Stop)
	applyCheckout(t, p)
	h := &harness{t: t, nc: nc, js: js, p: p, cfg: cfg}

	svc := sim.Checkout(43)
	svc.Block("tax-calc", "rate-lookup").Versions["2.0"] = sim.Healthy
	h.publishVersion2(svc, 30*time.Second, nil)

	d := h.waitDecision(func(d schemas.Decision) bool {
		return d.Action == schemas.ActionRecommend && len(d.Targets) == 1 && d.Targets[0].Component == "tax-calc"
	})
	if !slices.Contains(d.Policy.GuardsHit, "silence") {
		t.Errorf("decided %+v, want the silence guard hit", d)
	}
	if n, _ := metricstest.Value(t, reg, "scalpel_ingest_clock_ticks_total", nil); n < 1 {
		t.Errorf("scalpel_ingest_clock_ticks_total = %v", n)
	}
	p.Stop() // no more ticks: the stream holds what serve read

	var live []schemas.Anomaly
	for _, a := range h.anomalies() {
		if a.IsSilence() {
			live = append(live, a)
		}
	}
	ctx := context.Background()
	src, err := replay.NewServerSource(ctx, js, replay.ServerOptions{Subjects: cfg.Subjects()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tl, err := replay.Run(ctx, src, replay.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if tl.Stats.ClockTicks == 0 {
		t.Error("the replay read no clock ticks")
	}
	var replayed []schemas.Anomaly
	for _, a := range tl.Anomalies {
		if a.IsSilence() {
			replayed = append(replayed, a)
		}
	}
	if len(live) == 0 || len(replayed) < len(live) {
		t.Fatalf("serve found %d silences, the replay %d", len(live), len(replayed))
	}
	for i, a := range live {
		if b := replayed[i]; a.ID != b.ID || !a.TSDetected.Equal(b.TSDetected) {
			t.Errorf("silence %d: serve %s at %s, replay %s at %s", i, a.ID, a.TSDetected, b.ID, b.TSDetected)
		}
	}
}
