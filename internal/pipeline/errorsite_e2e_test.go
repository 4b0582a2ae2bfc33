package pipeline_test

import (
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// refactorDeploy announces version v of checkout with tax-calc's blocks placed at the given line
// ranges of tax/calc.go.
func refactorDeploy(id string, ts time.Time, v, rateLookup, rounding string) schemas.DeployEvent {
	ev := sim.CheckoutDeploy(id, ts, v)
	ev.Components[0].Blocks = []schemas.DeployBlock{
		{Block: "rate-lookup", Version: v, File: "tax/calc.go", Lines: rateLookup},
		{Block: "rounding", Version: v, File: "tax/calc.go", Lines: rounding},
	}
	return ev
}

// TestEndToEndBlockFromErrorSites: the telemetry names no block, so only error_site can point at
// one, and version 2.0 is a refactor that moved rate-lookup to lines 71-130 and rounding to 40-70.
// The failing line tax/calc.go:100 lies in rounding by the catalog's ranges (those of 1.0) and in
// rate-lookup by the ranges deploy d-2.0 gave. The pipeline must roll back rate-lookup alone,
// saying whose ranges it used.
func TestEndToEndBlockFromErrorSites(t *testing.T) {
	h := start(t)
	svc := sim.Checkout(5)
	svc.Block("tax-calc", "rate-lookup").Versions = map[string]sim.Behaviour{
		"2.0": {ErrorRate: 0.2, ErrorCategory: schemas.ErrException, ErrorSite: "/src/checkout/tax/calc.go:100", LatencyMedianMS: 20, LatencySigma: 0.35},
	}
	// rounding's ordinary failures carry sites too: in 1.0 at line 95, in 2.0 at line 45.
	healthyAt := func(site string) sim.Behaviour { b := sim.Healthy; b.ErrorSite = site; return b }
	svc.Block("tax-calc", "rounding").Versions = map[string]sim.Behaviour{
		"1.0": healthyAt("tax/calc.go:95"), "2.0": healthyAt("tax/calc.go:45"),
	}
	anonymous := func(evs []schemas.TelemetryEvent) []schemas.TelemetryEvent {
		for i := range evs {
			evs[i].Block = ""
		}
		return evs
	}

	t0 := eventStart()
	h.publishDeploy(refactorDeploy("d-1.0", t0, "1.0", "40-88", "90-120"))
	h.publishJS(anonymous(svc.Traffic(t0, 120*time.Second)))
	t1 := t0.Add(120 * time.Second)
	h.publishDeploy(refactorDeploy("d-2.0", t1, "2.0", "71-130", "40-70"))
	svc.SetVersion("2.0")
	h.publishJS(anonymous(svc.Traffic(t1, 60*time.Second)))
	h.idle()
	checkOneBlockRollback(t, h.commands())

	var acted []schemas.Decision
	for _, d := range h.decisions() {
		if d.Action == schemas.ActionRollback {
			acted = append(acted, d)
		}
	}
	if len(acted) != 1 {
		t.Fatalf("want one rollback decision, got %d", len(acted))
	}
	for _, s := range []string{"error sites mapped through the line ranges deploy d-2.0 gave for version 2.0", "so only block rate-lookup goes back 2.0 → 1.0"} {
		if !strings.Contains(acted[0].Reason, s) {
			t.Errorf("reason lacks %q:\n%s", s, acted[0].Reason)
		}
	}
	t.Logf("reason: %s", acted[0].Reason)
}
