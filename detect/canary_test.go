package detect

import (
	"slices"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// canaryErrorAt is when the canary's first error anomaly was detected, in seconds from the
// canary's start at, and false when there was none.
func canaryErrorAt(d *Detector, events []schemas.TelemetryEvent, at int) (float64, bool) {
	start := events[0].TS.Truncate(time.Second).Add(time.Duration(at) * time.Second)
	for i := range events {
		d.Observe(&events[i])
		for _, a := range d.Advance(d.Watermark()) {
			if !a.IsResolved() && a.Cohort == schemas.CohortCanary && a.Metric == schemas.MetricErrorRate {
				return a.TSDetected.Sub(start).Seconds(), true
			}
		}
	}
	return 0, false
}

// A canary at half the traffic failing three times as often as its baseline cohort: the test
// against the cohort's history, checked by the paired test at canary_concurrent_alpha, fires
// sooner than the paired test alone, which learns only from which cohort each error came.
func TestCanaryHistoryTestIsFaster(t *testing.T) {
	gated, paired := DefaultConfig(), DefaultConfig()
	paired.CanaryConcurrentAlpha = 0
	var sumG, sumP float64
	const seeds = 6
	for seed := range uint64(seeds) {
		bad := healthy("1.1.0", 300, 20)
		bad.errRate = map[string]float64{"": 0.06}
		evs := cohorts(40+2*seed, []phase{healthy("1.0.0", 600, 20)}, bad, 300)
		g, okG := canaryErrorAt(New(gated), evs, 300)
		p, okP := canaryErrorAt(New(paired), evs, 300)
		if !okG || !okP {
			t.Fatalf("seed %d: canary regression missed (gated %v, paired alone %v)", seed, okG, okP)
		}
		sumG += g
		sumP += p
	}
	t.Logf("mean time to detect: %.1f s against the cohort's history, %.1f s by the paired test alone", sumG/seeds, sumP/seeds)
	if sumG >= 0.8*sumP {
		t.Errorf("against the cohort's history the canary took %.1f s on average, the paired test alone %.1f s; want well under", sumG/seeds, sumP/seeds)
	}
}

// A shared dependency triples both cohorts' errors as the canary starts. The test against the
// cohort's history sees three times its rate in the canary, but the paired test, which the
// history test needs to agree, sees the same rate in both cohorts: no canary anomaly, though the
// history test's evidence is over its threshold (so it was the check that held it).
func TestCanarySharedFailureHeld(t *testing.T) {
	for seed := range uint64(4) {
		sick := healthy("1.0.0", 300, 20)
		sick.errRate = map[string]float64{"": 0.06}
		canary := healthy("1.1.0", 300, 20)
		canary.errRate = sick.errRate
		evs := cohorts(60+2*seed, []phase{healthy("1.0.0", 300, 20), sick}, canary, 300)
		d := New(DefaultConfig())
		if at, ok := canaryErrorAt(d, evs, 300); ok {
			t.Fatalf("seed %d: a shared failure rolled the canary back (error anomaly %.1f s in)", seed, at)
		}
		s := d.series[SeriesKey{Service: "checkout", Component: "tax-calc", Version: "1.1.0", Cohort: schemas.CohortCanary}]
		if s == nil || s.gate == nil {
			t.Fatalf("seed %d: no canary series with a concurrent check", seed)
		}
		c := categoryIndex(schemas.ErrException)
		if tt := &s.errT[c]; tt.score() < tt.bound {
			t.Errorf("seed %d: the history test's evidence %.2f stayed under its threshold %.2f: the check held nothing", seed, tt.score(), tt.bound)
		}
	}
}

// A baseline cohort that starts with the canary (a fresh baseline cluster, or cohort labels that
// only a rollout sets) has no history to compare with. The canary is compared with its version's
// history serving without a cohort, and checked against the cohort as it serves, which here sends
// its first request seconds after the canary's. With stable cohort "" the stable version is
// never labelled: its own line is then the concurrent one.
func TestCanaryWithFreshBaselineCohort(t *testing.T) {
	for _, tc := range []struct {
		name   string
		canary func(*phase)
		metric string
		stable string // the stable version's cohort during the rollout
	}{
		{"errors x5", func(p *phase) { p.errRate = map[string]float64{"": 0.1} }, schemas.MetricErrorRate, schemas.CohortBaseline},
		{"latencies x2", func(p *phase) { p.latMed *= 2 }, schemas.MetricLatency, schemas.CohortBaseline},
		{"errors x5 next to an unlabelled stable version", func(p *phase) { p.errRate = map[string]float64{"": 0.1} }, schemas.MetricErrorRate, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := withoutBlocks(genScenario(70, healthy("1.0.0", 300, 40)), "")
			cohort := withoutBlocks(genScenario(71, healthy("1.0.0", 300, 20)), tc.stable)
			bad := healthy("1.1.0", 300, 20)
			tc.canary(&bad)
			canary := withoutBlocks(genScenario(72, bad), schemas.CohortCanary)
			evs := before
			for _, part := range []struct {
				evs   []schemas.TelemetryEvent
				shift int
			}{{cohort, 303}, {canary, 300}} {
				for _, ev := range part.evs {
					ev.TS = ev.TS.Add(time.Duration(part.shift) * time.Second)
					evs = append(evs, ev)
				}
			}
			slices.SortStableFunc(evs, func(a, b schemas.TelemetryEvent) int { return a.TS.Compare(b.TS) })

			out := run(New(DefaultConfig()), evs, 0, 1)
			i := slices.IndexFunc(out, func(a schemas.Anomaly) bool { return !a.IsResolved() })
			if i < 0 {
				t.Fatal("the canary's regression was not detected")
			}
			a := out[i]
			if a.Cohort != schemas.CohortCanary || a.Metric != tc.metric {
				t.Fatalf("first anomaly: %s of %s (cohort %q), want %s of the canary", a.Metric, a.Version, a.Cohort, tc.metric)
			}
			if a.BaselineVersion != "1.0.0 (without a cohort)" {
				t.Errorf("baseline %q, want the version's history without a cohort", a.BaselineVersion)
			}
			if at := a.TSDetected.Sub(evs[0].TS.Truncate(time.Second)); at > 360*time.Second {
				t.Errorf("detected %s after the start, want within the canary's first minute", at)
			}
		})
	}
}

// A canary taking half the traffic from the baseline cohort moves it without losing any: the
// unit's throughput is tested across cohorts, so the split is no drop. A drop of the unit's
// traffic, both cohorts at once, still is.
func TestCanarySplitIsNotAThroughputDrop(t *testing.T) {
	split := cohorts(80, []phase{healthy("1.0.0", 300, 40), healthy("1.0.0", 300, 20)}, healthy("1.1.0", 300, 20), 300)
	for _, a := range run(New(DefaultConfig()), split, 0, 1) {
		t.Errorf("a healthy canary split raised %s of %s (cohort %q): %s", a.Metric, a.Version, a.Cohort, a.Test)
	}

	drop := cohorts(80, []phase{healthy("1.0.0", 300, 40), healthy("1.0.0", 150, 20), healthy("1.0.0", 150, 4)},
		healthy("1.1.0", 150, 20), 300)
	for _, ev := range withoutBlocks(genScenario(82, healthy("1.1.0", 150, 4)), schemas.CohortCanary) {
		ev.TS = ev.TS.Add(450 * time.Second)
		drop = append(drop, ev)
	}
	slices.SortStableFunc(drop, func(a, b schemas.TelemetryEvent) int { return a.TS.Compare(b.TS) })
	out := run(New(DefaultConfig()), drop, 0, 1)
	i := slices.IndexFunc(out, func(a schemas.Anomaly) bool { return a.Metric == schemas.MetricThroughput && !a.IsResolved() })
	if i < 0 {
		t.Fatalf("the unit's traffic fell to a fifth across both cohorts, and no throughput anomaly: %d others", len(out))
	}
	if at := out[i].TSDetected.Sub(drop[0].TS.Truncate(time.Second)); at < 450*time.Second || at > 480*time.Second {
		t.Errorf("throughput drop detected %s after the start, want within 30 s of the drop at 450 s", at)
	}
}

// A canary rolled back by taking its weight to 0 (an aborted rollout) serves nothing more, and
// its line serves no other version: its traffic moved to the baseline cohort, which is healthy,
// and that ends its episode, as a rollback on the same line would. Decide reads the end as the
// rollback having worked; an episode left open would have it escalate.
func TestCanaryEpisodeEndsWhenTrafficMovesToCohort(t *testing.T) {
	bad := healthy("1.1.0", 60, 20)
	bad.errRate = map[string]float64{"": 0.2}
	evs := cohorts(90, []phase{healthy("1.0.0", 420, 20)}, bad, 300)
	out := run(New(DefaultConfig()), evs, 0, 1)
	var opened, resolved *schemas.Anomaly
	for i := range out {
		a := &out[i]
		if a.Cohort != schemas.CohortCanary || a.Metric != schemas.MetricErrorRate {
			continue
		}
		if !a.IsResolved() && opened == nil {
			opened = a
		} else if a.IsResolved() && opened != nil && a.ID == opened.ID {
			resolved = a
		}
	}
	if opened == nil {
		t.Fatal("the canary's regression was not detected")
	}
	if resolved == nil {
		t.Fatalf("the canary stopped serving at 360 s and its episode never ended (%d anomalies)", len(out))
	}
	if want := "traffic moved to version 1.0.0 (cohort baseline), which is healthy"; resolved.Resolution != want {
		t.Errorf("resolution %q, want %q", resolved.Resolution, want)
	}
	end := evs[0].TS.Truncate(time.Second).Add(360 * time.Second)
	if at := resolved.ResolvedAt.Sub(end); at < 0 || at > 30*time.Second {
		t.Errorf("resolved %s after the canary stopped, want within 30 s", at)
	}
}

// A shared dependency slows both cohorts by half as the canary starts. Against the cohort's
// history the canary is slower, but the latency checks, paired tests against the cohort's
// requests over the same buckets, see both equally slow: no canary anomaly, though some latency
// test's evidence is over its threshold (so it was a check that held it). The canary takes half
// the traffic: the component's load, which latencies are read at (latency_load_share), stays.
func TestCanarySharedSlowdownHeld(t *testing.T) {
	for seed := range uint64(3) {
		slow := healthy("1.0.0", 300, 10)
		slow.latMed *= 1.5
		canary := healthy("1.1.0", 300, 10)
		canary.latMed = slow.latMed
		evs := cohorts(100+2*seed, []phase{healthy("1.0.0", 300, 20), slow}, canary, 300)
		d := New(DefaultConfig())
		for i := range evs {
			d.Observe(&evs[i])
			for _, a := range d.Advance(d.Watermark()) {
				if !a.IsResolved() && a.Cohort == schemas.CohortCanary {
					t.Fatalf("seed %d: a shared slowdown rolled the canary back: %s %s at %s", seed, a.Metric, a.Test, a.TSDetected.Format(time.RFC3339))
				}
			}
		}
		s := d.series[SeriesKey{Service: "checkout", Component: "tax-calc", Version: "1.1.0", Cohort: schemas.CohortCanary}]
		if s == nil || s.gate == nil {
			t.Fatalf("seed %d: no canary series with a concurrent check", seed)
		}
		over := false
		for q := range d.cfg.LatencyQuantiles {
			over = over || s.latT[q].score() >= s.latT[q].bound && s.latT[q].n > 0
		}
		if !over {
			t.Errorf("seed %d: no latency test's evidence is over its threshold: the checks held nothing", seed)
		}
	}
}

// A canary left serving alone (its weight taken to 100 %, the stable version scaled down) has no
// cohort to be checked against: a regression then is found against the cohort's history alone.
func TestCanaryAloneIsTestedAgainstHistory(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bad    func(*phase)
		metric string
	}{
		{"errors x5", func(p *phase) { p.errRate = map[string]float64{"": 0.1} }, schemas.MetricErrorRate},
		{"latencies x2", func(p *phase) { p.latMed *= 2 }, schemas.MetricLatency},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := healthy("1.1.0", 120, 40)
			tc.bad(&bad)
			// The cohort serves until 360 s; the canary takes half from 300 s, all from 360 s, and
			// regresses at 420 s.
			evs := cohorts(110, []phase{healthy("1.0.0", 300, 40), healthy("1.0.0", 60, 20)},
				healthy("1.1.0", 60, 20), 300)
			for _, ev := range withoutBlocks(genScenario(112, healthy("1.1.0", 60, 40), bad), schemas.CohortCanary) {
				ev.TS = ev.TS.Add(360 * time.Second)
				evs = append(evs, ev)
			}
			slices.SortStableFunc(evs, func(a, b schemas.TelemetryEvent) int { return a.TS.Compare(b.TS) })
			out := run(New(DefaultConfig()), evs, 0, 1)
			i := slices.IndexFunc(out, func(a schemas.Anomaly) bool { return !a.IsResolved() && a.Cohort == schemas.CohortCanary })
			if i < 0 {
				t.Fatalf("the regression of a canary serving alone was not detected (%d anomalies)", len(out))
			}
			a := out[i]
			if a.Metric != tc.metric {
				t.Errorf("first canary anomaly: %s, want %s", a.Metric, tc.metric)
			}
			if at := a.TSDetected.Sub(evs[0].TS.Truncate(time.Second)); at < 420*time.Second || at > 450*time.Second {
				t.Errorf("detected %s after the start, want within 30 s of the regression at 420 s", at)
			}
		})
	}
}

// A traffic spike during a canary raises both cohorts' cpu: the canary's is compared with the
// cohort's in the same bucket, so that is no anomaly. The canary's own cpu rise is.
func TestCanaryCPUComparedWithCohortAsItServes(t *testing.T) {
	withCPU := func(p phase, cpu float64) phase { p.cpu = cpu; return p }
	// canaryFirings adds a canary's phases from second at to evs and returns what fires on it.
	canaryFirings := func(evs []schemas.TelemetryEvent, seed uint64, at int, canary ...phase) []schemas.Anomaly {
		for _, ev := range withoutBlocks(genScenario(seed, canary...), schemas.CohortCanary) {
			ev.TS = ev.TS.Add(time.Duration(at) * time.Second)
			evs = append(evs, ev)
		}
		slices.SortStableFunc(evs, func(a, b schemas.TelemetryEvent) int { return a.TS.Compare(b.TS) })
		var out []schemas.Anomaly
		for _, a := range run(New(DefaultConfig()), evs, 0, 1) {
			if !a.IsResolved() && a.Cohort == schemas.CohortCanary {
				out = append(out, a)
			}
		}
		return out
	}
	spiked := cohorts(120, []phase{withCPU(healthy("1.0.0", 330, 20), 0.3), withCPU(healthy("1.0.0", 60, 20), 0.9)},
		withCPU(healthy("1.1.0", 90, 20), 0.3), 300)
	for _, a := range canaryFirings(spiked, 123, 330, withCPU(healthy("1.1.0", 60, 20), 0.9)) {
		t.Errorf("a spike both cohorts served raised %s on the canary (%s)", a.Metric, a.Test)
	}

	// A canary's process starts up on twice the cpu for 10 s: not a regression.
	cohort := withoutBlocks(genScenario(121, withCPU(healthy("1.0.0", 390, 20), 0.3)), schemas.CohortBaseline)
	for _, a := range canaryFirings(cohort, 122, 300, withCPU(healthy("1.1.0", 10, 20), 0.6), withCPU(healthy("1.1.0", 80, 20), 0.3)) {
		t.Errorf("a canary starting up raised %s (%s)", a.Metric, a.Test)
	}

	hot := cohorts(120, []phase{withCPU(healthy("1.0.0", 390, 20), 0.3)}, withCPU(healthy("1.1.0", 90, 20), 0.6), 300)
	out := run(New(DefaultConfig()), hot, 0, 1)
	i := slices.IndexFunc(out, func(a schemas.Anomaly) bool {
		return !a.IsResolved() && a.Cohort == schemas.CohortCanary && a.Metric == schemas.MetricCPU
	})
	if i < 0 {
		t.Fatalf("a canary using twice its cohort's cpu raised no cpu anomaly (%d others)", len(out))
	}
	if a := out[i]; a.Test != "cusum-concurrent-cohort" || len(a.Evidence.Notes) < 2 {
		t.Errorf("the canary's cpu anomaly does not say what it was compared with: test %s, notes %q", a.Test, a.Evidence.Notes)
	}
}
