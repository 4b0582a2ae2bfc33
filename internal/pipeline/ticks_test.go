package pipeline_test

import (
	"cmp"
	"context"
	"fmt"
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
// found, and decide recommends rolling it back. Once a person approves and checkout stays
// silent, the verify period, which runs on event time too, ends and the incident climbs to the
// application. The ticks are in the stream, so a replay of it finds what serve found.
//
// The same holds for a group of processes that reads only part of the telemetry
// (ingest.filter_subject, with its own durable): its ticks go out on a subject of its own,
// which it reads with its part. It published none before, so a group whose services all fell
// silent, or the one that decides while its own services are quiet, stood still.
func TestClockTicksFindAServiceSilentAlone(t *testing.T) {
	for _, tt := range []struct{ name, durable, filter string }{
		{"the whole stream", "", ""},
		{"a group's part of it", "grp-checkout", "telemetry.checkout.>"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := config.Default()
			cfg.Ingest.Durable, cfg.Ingest.FilterSubject = cmp.Or(tt.durable, cfg.Ingest.Durable), tt.filter
			clockTicksFindAServiceSilentAlone(t, cfg)
		})
	}
}

func clockTicksFindAServiceSilentAlone(t *testing.T, cfg config.Config) {
	_, nc, js := natstest.Connect(t)
	cfg.Ingest.TickAfter = schemas.Duration(time.Second)
	cfg.Decide.VerifyPeriod = schemas.Duration(10 * time.Second)
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
	// A person approves; the rollback goes out, and checkout stays silent. The verify period runs
	// on event time, which only the ticks move on now: without them the incident would wait for
	// ever, with them it climbs the ladder.
	h.publishApproval(schemas.Approval{ID: schemas.DeriveID("approval", d.ID), DecisionID: d.ID, Service: "checkout", Approve: true,
		Actor: "alice@ops", TS: d.TS})
	var steps []string
	natstest.CheckFor(t, 40*time.Second, 50*time.Millisecond, func() error {
		steps = steps[:0]
		for _, x := range h.decisions() {
			if x.IncidentID == d.IncidentID {
				steps = append(steps, x.Action+"/"+x.Granularity)
			}
		}
		if len(steps) < 3 {
			return fmt.Errorf("incident %s: %v so far", d.IncidentID, steps)
		}
		return nil
	})
	if want := []string{"recommend/medium", "rollback/medium", "escalate/coarse"}; !slices.Equal(steps[:3], want) {
		t.Errorf("incident %s: %v, want %v", d.IncidentID, steps, want)
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
