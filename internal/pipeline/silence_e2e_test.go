package pipeline_test

import (
	"slices"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// TestEndToEndSilentComponentIsRecommended deploys checkout 2.0, whose tax-calc serves for 30 s
// and then not one request more (a deadlock in its request path), while cart and payment go on.
// Nothing in tax-calc's telemetry failed or slowed down, and before, nothing was decided. Now
// detect reports its throughput at 0 req/s and decide recommends rolling tax-calc back, saying
// why it does not do so by itself; no command is published.
func TestEndToEndSilentComponentIsRecommended(t *testing.T) {
	h := start(t)
	svc := sim.Checkout(41)
	svc.Block("tax-calc", "rate-lookup").Versions["2.0"] = sim.Healthy

	_, t1 := h.publishVersion2(svc, 90*time.Second, func(ev schemas.TelemetryEvent, t1 time.Time) bool {
		return ev.Component == "tax-calc" && !ev.TS.Before(t1.Add(30*time.Second)) // it hangs
	})
	hung := t1.Add(30 * time.Second)
	h.idle()

	d := h.waitDecision(func(d schemas.Decision) bool { return d.Action == schemas.ActionRecommend })
	if len(d.Targets) != 1 || d.Targets[0].Component != "tax-calc" || d.Targets[0].FromVersion != "2.0" || d.Targets[0].ToVersion != "1.0" ||
		!slices.Contains(d.Policy.GuardsHit, "silence") || !d.Policy.WindowOpen {
		t.Fatalf("decided %+v, want a recommendation of tax-calc 2.0 → 1.0 behind the silence guard", d)
	}
	var silent []schemas.Anomaly
	for _, a := range h.anomalies() {
		if a.IsSilence() {
			silent = append(silent, a)
		}
	}
	if len(silent) != 1 || silent[0].Component != "tax-calc" || silent[0].Version != "2.0" {
		t.Fatalf("want one silence anomaly of tax-calc 2.0, got %+v", silent)
	}
	if lag := silent[0].TSDetected.Sub(hung); lag <= 0 || lag > 10*time.Second {
		t.Errorf("silence from %s detected at %s", hung, silent[0].TSDetected)
	}
	if cmds := h.commands(); len(cmds) != 0 {
		t.Errorf("a silence published %d commands, want none until a person approves: %+v", len(cmds), cmds)
	}
}
