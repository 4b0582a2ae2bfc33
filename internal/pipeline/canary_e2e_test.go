package pipeline_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// TestEndToEndCanaryRollback runs checkout 2.0 as a canary on half the traffic. Its
// tax-calc/rate-lookup block fails. The stable version served unlabelled before the rollout and
// is labelled `baseline` from then on, so the cohort starts with the canary and has no history.
// The canary's block goes back 2.0 → 1.0, fine. The rollout then takes the canary's weight to 0,
// its traffic moves to the baseline cohort, and the incident ends mitigated without escalating.
func TestEndToEndCanaryRollback(t *testing.T) {
	h := start(t)
	stable, canary := sim.Checkout(21), sim.Checkout(22)
	canary.Cohort = schemas.CohortCanary

	t0 := eventStart()
	h.publishDeploy(sim.CheckoutDeploy("d-1.0", t0, "1.0"))
	h.publishJS(stable.Traffic(t0, 120*time.Second))

	t1 := t0.Add(120 * time.Second)
	h.publishDeploy(sim.CheckoutDeploy("d-2.0", t1, "2.0"))
	stable.Cohort = schemas.CohortBaseline
	canary.SetVersion("2.0")
	setRPS(stable, 0.5)
	setRPS(canary, 0.5)
	h.publishJS(merge(stable.Traffic(t1, 60*time.Second), canary.Traffic(t1, 60*time.Second)))
	h.idle()
	checkOneBlockRollback(t, h.commands())

	// The rollout aborts: the baseline cohort serves everything.
	setRPS(stable, 2)
	h.publishJS(stable.Traffic(t1.Add(60*time.Second), 60*time.Second))
	h.idle()
	ds := h.decisions()
	if i := slices.IndexFunc(ds, func(d schemas.Decision) bool { return d.Action == schemas.ActionEscalate }); i >= 0 {
		t.Fatalf("escalated after the canary was rolled back: %s", ds[i].Reason)
	}
	if !slices.ContainsFunc(ds, func(d schemas.Decision) bool {
		return d.Action == schemas.ActionNone && strings.Contains(d.Reason, "Mitigated")
	}) {
		var rs []string
		for _, d := range ds {
			rs = append(rs, string(d.Action)+": "+d.Reason)
		}
		t.Fatalf("the incident did not end mitigated once the canary's traffic moved to the cohort; decisions:\n%s", strings.Join(rs, "\n"))
	}
	if cmds := h.commands(); len(cmds) != 1 {
		t.Fatalf("%d commands, want the one rollback", len(cmds))
	}
}

// setRPS scales every component's request rate of svc by f.
func setRPS(svc *sim.Service, f float64) {
	for _, c := range svc.Components {
		c.RPS *= f
	}
}

// merge is two services' traffic in time order, the second's event IDs made distinct (both are
// "checkout", and their generators number events alike).
func merge(a, b []schemas.TelemetryEvent) []schemas.TelemetryEvent {
	out := slices.Clone(a)
	for _, ev := range b {
		ev.ID += "-b"
		out = append(out, ev)
	}
	slices.SortStableFunc(out, func(x, y schemas.TelemetryEvent) int { return x.TS.Compare(y.TS) })
	return out
}
