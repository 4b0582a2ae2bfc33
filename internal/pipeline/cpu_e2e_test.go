package pipeline_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// withCPU puts each component's cpu on the first request of every second it serves: an idle
// share plus a cost per request, times mul for the components and versions it names, with
// noise. A cpu sample lands on whichever block's request carries it.
func withCPU(evs []schemas.TelemetryEvent, rng *rand.Rand, rps map[string]float64, mul map[string]float64) []schemas.TelemetryEvent {
	seen := map[string]bool{}
	for i := range evs {
		ev := &evs[i]
		k := ev.Component + "@" + ev.Version + "/" + ev.TS.Truncate(time.Second).String()
		if seen[k] {
			continue
		}
		seen[k] = true
		c := cpuOf(ev, rps, mul) + 0.005*rng.NormFloat64()
		ev.CPU = &c
	}
	return evs
}

// cpuOf is the cpu of ev's component and version before noise: an idle share plus a cost per
// request, times mul for the components and versions it names.
func cpuOf(ev *schemas.TelemetryEvent, rps map[string]float64, mul map[string]float64) float64 {
	m, ok := mul[ev.Component+"@"+ev.Version]
	if !ok {
		m = 1
	}
	return m * (0.05 + 0.005*rps[ev.Component])
}

// TestEndToEndCPURegressionRollsBackTheComponent deploys checkout 2.0, in which nothing fails
// and nothing is slower, but tax-calc uses 60 % more cpu at the same load. The cpu samples land
// on rate-lookup's and rounding's requests alike: the rollback is the component's, 2.0 → 1.0,
// and nothing else moves.
func TestEndToEndCPURegressionRollsBackTheComponent(t *testing.T) {
	cpuRegressionRollsBackTheComponent(t, withCPU)
}

// cpuRegressionRollsBackTheComponent runs the deploy of TestEndToEndCPURegressionRollsBackTheComponent
// with the cpu added to the traffic by addCPU, and checks its one command.
func cpuRegressionRollsBackTheComponent(t *testing.T, addCPU func([]schemas.TelemetryEvent, *rand.Rand, map[string]float64, map[string]float64) []schemas.TelemetryEvent) {
	h := start(t)
	svc := sim.Checkout(31)
	svc.Block("tax-calc", "rate-lookup").Versions["2.0"] = sim.Healthy
	rps := map[string]float64{}
	for _, c := range svc.Components {
		rps[c.Name] = c.RPS
	}
	rng := rand.New(rand.NewPCG(31, 31))
	hot := map[string]float64{"tax-calc@2.0": 1.6}

	t0 := eventStart()
	h.publishDeploy(sim.CheckoutDeploy("d-1.0", t0, "1.0"))
	h.publishJS(addCPU(svc.Traffic(t0, 120*time.Second), rng, rps, hot))
	t1 := t0.Add(120 * time.Second)
	h.publishDeploy(sim.CheckoutDeploy("d-2.0", t1, "2.0"))
	svc.SetVersion("2.0")
	h.publishJS(addCPU(svc.Traffic(t1, 90*time.Second), rng, rps, hot))
	h.idle()

	cmds := h.commands()
	var got []string
	for _, c := range cmds {
		got = append(got, fmt.Sprintf("%s %s %s→%s (%s)", c.Action, c.Target(), c.FromVersion, c.ToVersion, c.Granularity))
	}
	if len(cmds) != 1 {
		t.Fatalf("want one command, got %d: %v", len(cmds), got)
	}
	c := cmds[0]
	if c.Action != schemas.ActionRollback || c.Component != "tax-calc" || c.Block != "" || c.FromVersion != "2.0" || c.ToVersion != "1.0" {
		t.Fatalf("got %v, want the rollback of checkout/tax-calc 2.0 → 1.0", got)
	}
}

// scraped adds each component's cpu and memory as a scraper sends them: resource samples of
// their own, every 15 s per component and version that served, cpu as withCPU's mean.
func scraped(evs []schemas.TelemetryEvent, rng *rand.Rand, rps map[string]float64, mul map[string]float64) []schemas.TelemetryEvent {
	type key struct {
		comp, version string
		at            time.Time
	}
	seen := map[key]bool{}
	out := slices.Clone(evs)
	for _, ev := range evs {
		k := key{ev.Component, ev.Version, ev.TS.Truncate(15 * time.Second)}
		if seen[k] {
			continue
		}
		seen[k] = true
		c := cpuOf(&ev, rps, mul) + 0.002*rng.NormFloat64()
		mem := 250 + rng.NormFloat64()
		out = append(out, schemas.TelemetryEvent{TS: k.at.Add(15 * time.Second), Service: ev.Service,
			Component: ev.Component, Version: ev.Version, CPU: &c, MemMB: &mem})
	}
	slices.SortStableFunc(out, func(a, b schemas.TelemetryEvent) int { return a.TS.Compare(b.TS) })
	return out
}

// TestEndToEndScrapedCPURegressionRollsBackTheComponent is the test above with cpu and memory
// sent as a scraper sends them, every 15 s in events of their own: they pass ingest, count no
// request, and the same single rollback follows.
func TestEndToEndScrapedCPURegressionRollsBackTheComponent(t *testing.T) {
	cpuRegressionRollsBackTheComponent(t, scraped)
}
