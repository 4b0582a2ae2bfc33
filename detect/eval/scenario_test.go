package eval

import (
	"bytes"
	"cmp"
	"context"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/schemas"
)

// TestScenarioSuite runs the suite small (CI size) and holds the detector to the targets it can
// be held to with few runs: no false rollback on the quiet scenarios beyond the budget, gross
// regressions caught fast. SCALPEL_SCENARIO_AA / SCALPEL_SCENARIO_RUNS enlarge it.
func TestScenarioSuite(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("statistical suite: meaningless under the race detector")
	}
	aa, runs := envInt("SCALPEL_SCENARIO_AA", 200), envInt("SCALPEL_SCENARIO_RUNS", 10)
	rep, err := RunScenarios(context.Background(), ScenarioOptions{Seed: 1, AARuns: aa, Runs: runs, Config: detect.DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + buf.String())
	for _, want := range []string{
		"canary 50% of 100rps, error x2: the ideal test against the concurrent cohort needs",
		"p99 x2 tail-only @50rps: the ideal test on the exceedance rate of p99.9 alone needs",
		"cpu x1.5 @20rps: a new version's or canary's cpu is not compared in its first 30 s",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("the report does not say %q", want)
		}
	}
	if rep.FalseRollbackRate > 0.02 {
		t.Errorf("false rollbacks %.2f %% of quiet deploys, budget 1 %%", 100*rep.FalseRollbackRate)
	}
	for _, res := range rep.Results {
		switch res.Scenario.Name {
		case "error x5 @20rps", "latency all x2 @20rps":
			// The target for error x5 is 5 s; no test can reach it at 20 req/s (see
			// TestErrorX5At20rpsCannotReach5s: the best test at 5 s has 92 % power at a 1 %
			// false-alarm rate). The detector reaches ~9 s p95 over 100 runs; this guard holds
			// what is reached, with room for 10 runs.
			if res.TTDP95 == nil || *res.TTDP95 > 15 {
				t.Errorf("%s: TTD p95 %s, guard 15s", res.Scenario.Name, secs(res.TTDP95))
			}
		case "error x5 @50rps":
			// The target, met at 50 req/s: p95 5 s over 100 runs. The p95 of ten runs is
			// their slowest, so the guard leaves room.
			if res.TTDP95 == nil || *res.TTDP95 > 8 {
				t.Errorf("%s: TTD p95 %s, guard 8s (target 5s)", res.Scenario.Name, secs(res.TTDP95))
			}
		case "p99 +50% @50rps":
			// ~27 s mean, 65 s p95 over 100 runs since the tail is tested for a change of its own.
			allWithin(t, &res, 150)
		case "error x5 without a deploy @20rps":
			// The own profile's tests have run for minutes when the errors start: the run under
			// way carries its healthy evidence (floored a few nats below log(Beta)) and its share
			// of the false-alarm budget, so this is slower than right after a deploy (~21 s p95).
			allWithin(t, &res, 45)
		case "latency x2 without a deploy @20rps":
			allWithin(t, &res, 10)
		case "cpu x1.5 without a deploy @20rps":
			// No start-up to wait out: the series' own line has served 15 min.
			allWithin(t, &res, 30)
		case "cpu x1.5 @20rps", "cpu x1.25 @50rps", "canary 5% of 100rps, cpu x1.5", "cpu x1.5, processes shared with another component @20rps":
			// 30 s of start-up before cpu is compared, then ~10 s (~45 s p95 over 100 runs).
			allWithin(t, &res, 70)
		case "latency ramp all x2/60s @20rps":
			// Every latency 1 + t/60 times slower: +25 % at 15 s; ~24 s mean, 28 s p95 over 100
			// runs.
			allWithin(t, &res, 40)
		case "p99 ramp x2/120s tail-only @50rps":
			// ~70 s mean, 94 s p95 over 100 runs: within the tail-only target of 120 s though the
			// tail reaches x2 only at 120 s.
			allWithin(t, &res, 150)
		case "memory leak 1MB/min @20rps":
			// A rise of half resource_min_effect (5 % of 512 MB) takes 26 min, and the CUSUM
			// then fires within about 4 more (~29.5 min over 100 runs).
			allWithin(t, &res, 2100)
		case "heavy tail (5% of requests Pareto 1.2), no change @50rps":
			// Latencies that span far more than a compact sketch holds: collapsed, the sketches
			// read whole buckets as slow (24 of 100 false rollbacks).
			if res.Detected > 0 {
				t.Errorf("%s: %d/%d false rollbacks", res.Scenario.Name, res.Detected, res.Runs)
			}
		case "errors in clumps of 5, no change @50rps", "errors in clumps of 5 without a deploy, no change @50rps",
			"pauses of 200ms every 10s (+100ms), no change @50rps",
			"bursty traffic (each second's rate log-normal, σ 0.5), no change @50rps",
			"bursty traffic (σ 0.5) without a deploy, no change @50rps",
			"canary 5% of 100rps, bursty traffic (σ 0.5), no change",
			"rolling update over 5min, no change @50rps",
			"rolling update of 10 named instances over 5min, each a cold start, latency_warmup 30s, no change @50rps",
			"daily cycle (24h), latency following the load (±18%), watched 6h, no change",
			"cold start (every latency x3, easing off over 10s), latency_warmup 30s, no change @50rps":
			if res.Detected > 0 {
				t.Errorf("%s: %d/%d false rollbacks", res.Scenario.Name, res.Detected, res.Runs)
			}
		case "bursty traffic (σ 0.5), throughput drop to 30% @50rps":
			// ~10 s mean, 13 s p95 over 100 runs (a Poisson drop: 4 s).
			allWithin(t, &res, 30)
		case "cold start (x3 over 10s), latency_warmup 30s, latency all x2 @20rps":
			// The warm-up's 30 s, then about as fast as without one.
			allWithin(t, &res, 40)
		case "rolling update over 5min, error x5 @20rps":
			// The new version serves t/300 of the traffic t seconds in: ~54 s mean, 77 s p95 over
			// 100 runs.
			allWithin(t, &res, 120)
		case "rolling update of 10 named instances over 5min, each a cold start, latency_warmup 30s, latency all x2 @20rps":
			// Each instance's first 30 s count for nothing, the first's included: ~43 s mean, 48 s
			// p95 over 100 runs.
			allWithin(t, &res, 80)
		case "rolling update over 5min, latency all x2 @20rps":
			allWithin(t, &res, 40)
		case "errors in clumps of 5, error x5 @50rps":
			// ~12 s mean, 23 s p95 over 100 runs: a clump says about as much as one failure.
			allWithin(t, &res, 45)
		case "errors in clumps of 5, error x5 without a deploy @50rps":
			// ~28 s mean, 45 s p95 over 100 runs.
			allWithin(t, &res, 90)
		case "heavy tail (5% of requests Pareto 1.2), latency all x2 @50rps":
			allWithin(t, &res, 5)
		case "p99 x2 tail-only @50rps":
			// Target 120 s; the p99.9 exceedance test, tested for a change of the tail alone,
			// reaches ~25 s p95.
			if res.TTDP95 == nil || *res.TTDP95 > 60 {
				t.Errorf("%s: TTD p95 %s, guard 60s (target 120s)", res.Scenario.Name, secs(res.TTDP95))
			}
		}
	}
}

// deploysFired runs runs deploys of sc with cfg and seed, and counts those with an anomaly that
// counts for the scenario (a detection, or for a quiet one a false rollback).
func deploysFired(sc *Scenario, cfg detect.Config, seed uint64, runs int) int {
	fired := 0
	var buf []schemas.TelemetryEvent
	for run := range runs {
		var o runOutcome
		o, buf = runDeploy(sc, cfg, seed, run, buf)
		if o.detected {
			fired++
		}
	}
	return fired
}

// holdFired runs runs deploys of sc with cfg and seed, and holds how many fired (a detection, or
// for a quiet one a false rollback) to [lo, hi]; name says which case of the caller's it was.
func holdFired(t *testing.T, name string, sc *Scenario, cfg detect.Config, seed uint64, runs, lo, hi int) {
	t.Helper()
	fired := deploysFired(sc, cfg, seed, runs)
	t.Logf("%s: %d of %d deploys fired", name, fired, runs)
	if fired < lo || fired > hi {
		t.Errorf("%s: %d of %d deploys fired, want %d to %d", name, fired, runs, lo, hi)
	}
}

// allWithin holds a scenario to detecting every run with a p95 time to detect of at most guard
// seconds.
func allWithin(t *testing.T, res *ScenarioResult, guard float64) {
	t.Helper()
	if res.Detected != res.Runs || res.TTDP95 == nil || *res.TTDP95 > guard {
		t.Errorf("%s: detected %d/%d, TTD p95 %s, guard %gs", res.Scenario.Name, res.Detected, res.Runs, secs(res.TTDP95), guard)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestScenarioDeterministic(t *testing.T) {
	sc := DefaultScenarios()[3]
	a, _ := runDeploy(&sc, detect.DefaultConfig(), 7, 1, nil)
	b, _ := runDeploy(&sc, detect.DefaultConfig(), 7, 1, nil)
	if a != b {
		t.Fatalf("same seed, different outcomes: %+v vs %+v", a, b)
	}
}

func TestFloorSeconds(t *testing.T) {
	tests := []struct {
		sc     Scenario
		lo, hi float64
	}{
		{Scenario{RPS: 20, ErrMul: 5}, 2, 4},                // KL ≈ 0.09 nats/request, 4.5 nats needed
		{Scenario{RPS: 20, BodyMul: 2, TailMul: 2}, 0, 0.2}, // a doubled log-normal is obvious
		{Scenario{RPS: 50, RateMul: 0.3}, 0, 1},
		// cpu ×1.5: 0.15 above 0.3 with samples of σ 0.02, 28 nats a second; ×1.1 0.03 above,
		// 1.1 nats a second, 4.5 needed.
		{Scenario{RPS: 20, CPUMul: 1.5}, 0, 0.3},
		{Scenario{RPS: 20, CPUMul: 1.1}, 3, 5},
		// The ideal test knows the ramp: slower than the final rates' 2.7 s, far faster than
		// waiting for the ramp's end.
		{Scenario{RPS: 20, ErrMul: 5, Ramp: 60}, 20, 35},
		// Every latency ×(1 + t/60): a request at t carries about (t/60)²/(2·0.3²) nats, so
		// 20 req/s gather about 0.01·t³ by t, and 4.5 nats take 7.6 s; ln(1 + x) < x adds a
		// little. Most of it comes from below the detector's latency_tolerance.
		{Scenario{RPS: 20, BodyMul: 2, TailMul: 2, Ramp: 60}, 7.6, 9},
		// A rolling update over 5 min: the new version serves t/300 of the 20 req/s, so the ideal
		// test gathers 20·0.09·t²/600 nats by t, and 4.5 take √1500 ≈ 39 s.
		{Scenario{RPS: 20, ErrMul: 5, Rollout: 300}, 33, 45},
		// A change at an unknown time: CUSUM at 33 000 s between false alarms, slower than the
		// SPRT started at the change.
		{Scenario{RPS: 20, ErrMul: 5, NoDeploy: true}, 5, 10},
		// cpu ×1.1 at an unknown time: about ln(33 000·1.1)/1.1 s, against the SPRT's 4.
		{Scenario{RPS: 20, CPUMul: 1.1, NoDeploy: true}, 7, 11},
	}
	for _, tt := range tests {
		f, ok := FloorSeconds(&tt.sc, FloorParams{Alpha: 0.01, Beta: 0.01, ARL: 33000})
		if !ok || f < tt.lo || f > tt.hi {
			t.Errorf("%+v: floor %g (ok %v), want in [%g, %g]", tt.sc, f, ok, tt.lo, tt.hi)
		}
	}
}

func TestClopperPearson(t *testing.T) {
	for _, tt := range []struct {
		x, n   int
		lo, hi float64
	}{
		{0, 5000, 0, 0.000738},        // 1 - 0.025^(1/5000)
		{9, 5000, 0.000823, 0.003414}, // by bisection on the binomial tails
		{5, 1000, 0.001625, 0.011629},
		{3, 3, 0.292402, 1},
	} {
		got := clopperPearson(tt.x, tt.n)
		if math.Abs(got[0]-tt.lo) > 2e-6 || math.Abs(got[1]-tt.hi) > 2e-6 {
			t.Errorf("%d of %d: got [%.6f, %.6f], want [%.6f, %.6f]", tt.x, tt.n, got[0], got[1], tt.lo, tt.hi)
		}
	}
}

// TestSummariseCensoredMean: with missed runs the mean is reported as a lower bound, counting
// each miss as detected at the end of its watch, and so is its ratio to the floor.
func TestSummariseCensoredMean(t *testing.T) {
	sc := Scenario{Name: "x", Regression: true, RPS: 20, Pre: 240, Post: 300, ErrMul: 5}
	inf := math.Inf(1)
	os := []runOutcome{{detected: true, ttd: 10}, {detected: true, ttd: 20}, {ttd: inf}, {detected: true, ttd: 30}}
	for i := range os {
		os[i].argo0, os[i].argo3, os[i].flagger = inf, inf, inf
	}
	fp := FloorParams{Alpha: 0.001, Beta: 0.01}
	res := summarise(&sc, os, fp)
	if res.TTDMean != nil {
		t.Fatalf("mean %v with a missed run", *res.TTDMean)
	}
	if res.TTDMeanAtLeast == nil || *res.TTDMeanAtLeast != 90 { // (10+20+300+30)/4
		t.Fatalf("censored mean %v, want 90", res.TTDMeanAtLeast)
	}
	f, _ := FloorSeconds(&sc, fp)
	if !res.RatioAtLeast || res.RatioMean == nil || math.Abs(*res.RatioMean-90/math.Max(f, 1)) > 1e-9 {
		t.Fatalf("ratio %v (at least %v), want ≥ %g", res.RatioMean, res.RatioAtLeast, 90/math.Max(f, 1))
	}
	if got := meanCell(res); got != "≥90.0s" {
		t.Errorf("table cell %q", got)
	}
	os[2] = runOutcome{detected: true, ttd: 40, argo0: inf, argo3: inf, flagger: inf}
	if res := summarise(&sc, os, fp); res.TTDMean == nil || *res.TTDMean != 25 || res.TTDMeanAtLeast != nil || res.RatioAtLeast {
		t.Errorf("every run detected: mean %v, at least %v", res.TTDMean, res.TTDMeanAtLeast)
	}
}

// TestRunsAreNamed: a quiet scenario's report names each deploy it rolled back and the test that
// fired first, and the table groups them by test, most often first; a regression's detections
// are not false rollbacks, and its report names the deploys it missed.
func TestRunsAreNamed(t *testing.T) {
	inf := math.Inf(1)
	os := []runOutcome{{ttd: inf}, {detected: true, ttd: 66, metric: "error_rate", test: "msprt-two-sample"},
		{ttd: inf}, {detected: true, ttd: 1, metric: "latency", test: "msprt-exceedance-p50+mann-whitney"},
		{detected: true, ttd: 165, metric: "error_rate", test: "msprt-two-sample"}}
	for i := range os {
		os[i].argo0, os[i].argo3, os[i].flagger = inf, inf, inf
	}
	fp := FloorParams{Alpha: 0.001, Beta: 0.01}
	quiet := Scenario{Name: "pauses, no change", RPS: 50, Pre: 240, Post: 300}
	res := summarise(&quiet, os, fp)
	want := []FalseRollback{{1, "error_rate", "msprt-two-sample", 66}, {3, "latency", "msprt-exceedance-p50+mann-whitney", 1}, {4, "error_rate", "msprt-two-sample", 165}}
	if !slices.Equal(res.FalseRollbacks, want) {
		t.Fatalf("false rollbacks %+v, want %+v", res.FalseRollbacks, want)
	}
	var b strings.Builder
	rep := &ScenarioReport{Results: []ScenarioResult{res}, AARuns: 5}
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	line := "pauses, no change: rolled back by 2 error_rate msprt-two-sample (runs 1, 4), 1 latency msprt-exceedance-p50+mann-whitney (run 3)\n"
	if !strings.Contains(b.String(), line) {
		t.Errorf("the table does not say what fired:\n%s", b.String())
	}
	regressed := quiet
	regressed.Name, regressed.Regression, regressed.ErrMul = "error x5", true, 5
	res = summarise(&regressed, os, fp)
	if res.FalseRollbacks != nil {
		t.Errorf("a regression's detections listed as false rollbacks: %+v", res.FalseRollbacks)
	}
	if want := []int{0, 2}; !slices.Equal(res.Missed, want) {
		t.Errorf("missed runs %v, want %v", res.Missed, want)
	}
	b.Reset()
	rep = &ScenarioReport{Results: []ScenarioResult{res}, AARuns: 5}
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if line := "error x5: missed runs 0, 2 within the 300 s watch\n"; !strings.Contains(b.String(), line) {
		t.Errorf("the table does not say which deploys were missed:\n%s", b.String())
	}
	if res := summarise(&quiet, os, fp); res.Missed != nil {
		t.Errorf("a quiet scenario's deploys listed as missed: %v", res.Missed)
	}
	many := make([]FalseRollback, 7)
	for i := range many {
		many[i] = FalseRollback{Run: 10 * i, Metric: "latency", Test: "t"}
	}
	if got, want := firedBy(many), "7 latency t (runs 0, 10, 20, 30, 40, …)"; got != want {
		t.Errorf("firedBy: %q, want %q", got, want)
	}
}

func TestRunScenariosProgress(t *testing.T) {
	scs := []Scenario{
		{Name: "A/A", RPS: 0, Pre: 240, Post: 30},
		{Name: "error x10", Regression: true, RPS: 20, Pre: 240, Post: 30, ErrMul: 10},
	}
	var calls, last, total int
	rep, err := RunScenarios(context.Background(), ScenarioOptions{
		Seed: 1, AARuns: 3, Runs: 2, Workers: 2, Config: detect.DefaultConfig(), Scenarios: scs,
		Progress: func(done, n int) { calls, last, total = calls+1, done, n },
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 5 || last != 5 || total != 5 {
		t.Errorf("progress called %d times, last %d of %d; want 5, 5 of 5", calls, last, total)
	}
	if rep.AARuns != 3 || rep.AARateCI[1] <= 0 {
		t.Errorf("A/A runs %d, CI %v", rep.AARuns, rep.AARateCI)
	}
}

// bestPower is the power of the most powerful test (Neyman-Pearson, randomised at the boundary)
// that decides at a fixed time T, with false-alarm probability alpha, between the generator's
// model and its exception rate multiplied by m, at rps requests per second: the chance that any
// detector has fired by T. Exceptions and ok requests are independent Poisson counts (invalid_input
// is the same under both and carries no information).
func bestPower(rps, T, m, alpha float64) float64 {
	n := rps * T
	e0, e1 := baseErr*n, baseErr*m*n
	o0, o1 := (1-baseErr-baseInvalid)*n, (1-baseErr*m-baseInvalid)*n
	logPois := func(k int, l float64) float64 {
		lg, _ := math.Lgamma(float64(k) + 1)
		return -l + float64(k)*math.Log(l) - lg
	}
	type cell struct{ llr, p0, p1 float64 }
	var cells []cell
	sd := math.Sqrt(o0)
	for x := 0; x < int(4*e1)+30; x++ {
		for o := max(0, int(o0-10*sd)); o < int(o0+10*sd); o++ {
			l0, l1 := logPois(x, e0)+logPois(o, o0), logPois(x, e1)+logPois(o, o1)
			cells = append(cells, cell{l1 - l0, math.Exp(l0), math.Exp(l1)})
		}
	}
	slices.SortFunc(cells, func(a, b cell) int { return cmp.Compare(b.llr, a.llr) })
	a, power := 0.0, 0.0
	for _, c := range cells {
		if a+c.p0 > alpha {
			return power + (alpha-a)/c.p0*c.p1
		}
		a, power = a+c.p0, power+c.p1
	}
	return power
}

// TestErrorX5At20rpsCannotReach5s backs the claim in docs/design-notes.md that the target "error
// x5 from 2 %, p95 within 5 s at 20 req/s" is out of reach of every detector at a false-rollback
// rate of 1 % or less: a p95 within 5 s needs 95 % power at 5 s, and the most powerful test at
// exactly 5 s, spending the whole 1 % on it and knowing both rates, has about 92 %. It becomes
// reachable near 23 req/s, and at 50 req/s it is easy.
func TestErrorX5At20rpsCannotReach5s(t *testing.T) {
	for _, tt := range []struct {
		rps, alpha float64
		lo, hi     float64
	}{
		{20, 0.01, 0.90, 0.94},
		{20, 0.001, 0.76, 0.82},
		{24, 0.01, 0.95, 0.97},
		{50, 0.001, 0.99, 1},
	} {
		if p := bestPower(tt.rps, 5, 5, tt.alpha); p < tt.lo || p > tt.hi {
			t.Errorf("%g req/s, alpha %g: best power at 5 s %.4f, want in [%g, %g]", tt.rps, tt.alpha, p, tt.lo, tt.hi)
		} else {
			t.Logf("%g req/s, alpha %g: best power at 5 s %.4f", tt.rps, tt.alpha, p)
		}
	}
}

// TestConcurrentFloor: at a 50/50 split and error x2 the test against the concurrent cohort has
// 0.170 nats/s where the known-rate test has 0.397, so its floor is 2.33× the known-rate one; a
// 5 % canary is compared with a cohort nineteen times its size and loses little.
func TestConcurrentFloor(t *testing.T) {
	fp := FloorParams{Alpha: 0.001, Beta: 0.01}
	for _, tt := range []struct {
		sc     Scenario
		lo, hi float64 // concurrent floor / floor
	}{
		{Scenario{RPS: 100, CanaryShare: 0.5, ErrMul: 2, Regression: true}, 2.30, 2.37},
		{Scenario{RPS: 100, CanaryShare: 0.05, ErrMul: 5, Regression: true}, 1.0, 1.25},
	} {
		f, _ := FloorSeconds(&tt.sc, fp)
		c, ok := ConcurrentFloorSeconds(&tt.sc, fp)
		if !ok || c/f < tt.lo || c/f > tt.hi {
			t.Errorf("%+v: concurrent floor %.2f s, floor %.2f s, ratio %.3f, want in [%g, %g]", tt.sc, c, f, c/f, tt.lo, tt.hi)
		}
	}
	for _, sc := range []Scenario{
		{RPS: 100, CanaryShare: 0.5, BodyMul: 2, TailMul: 2, Regression: true},
		{RPS: 20, ErrMul: 5, Regression: true},
	} {
		if _, ok := ConcurrentFloorSeconds(&sc, fp); ok {
			t.Errorf("%+v: a concurrent floor for a scenario without an error regression in a canary", sc)
		}
	}
}

// TestExceedanceFloor: a tail-only regression reduced to the exceedance count of the best tested
// quantile carries 0.0266 nats a request for p99 x2 (p99.9), against 0.0477 for the whole
// distribution; for p99 +25 % the best is p99.5; a baseline too small for p99.9 leaves p99.5,
// which carries less (p99, tested in its place until p99.5 took it, far less: 10 to 15 times
// the floor).
func TestExceedanceFloor(t *testing.T) {
	fp := FloorParams{Alpha: 0.001, Beta: 0.01}
	cfg := detect.DefaultConfig()
	for _, tt := range []struct {
		sc     Scenario
		q      float64
		lo, hi float64 // exceedance floor / floor
	}{
		{Scenario{RPS: 50, Pre: 450, TailMul: 2, Regression: true}, 0.999, 1.75, 1.85},
		{Scenario{RPS: 50, Pre: 450, TailMul: 1.25, Regression: true}, 0.995, 1.6, 1.75},
		{Scenario{RPS: 50, Pre: 60, TailMul: 2, Regression: true}, 0.995, 3.9, 4.4},
		// An old version that served an hour at 2 req/s: its history holds three epochs and a
		// half, 2 100 requests (history_min_requests 2 000), enough for p99.5.
		{Scenario{RPS: 2, Pre: 3600, TailMul: 2, Regression: true}, 0.995, 3.9, 4.4},
		{Scenario{RPS: 5, Pre: 450, TailMul: 2, Regression: true}, 0.995, 3.9, 4.4},
	} {
		f, _ := FloorSeconds(&tt.sc, fp)
		e, q, ok := ExceedanceFloorSeconds(&tt.sc, fp, cfg)
		if !ok || q != tt.q || e/f < tt.lo || e/f > tt.hi {
			t.Errorf("%+v: exceedance floor %.2f s at p%g, floor %.2f s, ratio %.3f; want p%g, ratio in [%g, %g]",
				tt.sc, e, 100*q, f, e/f, 100*tt.q, tt.lo, tt.hi)
		}
	}
	// With history_min_requests at 1 000 that history held two epochs and a half, 1 500
	// requests, too few for p99.5, and p90 alone all but cannot see the tail.
	thin := cfg
	thin.HistoryMinRequests = 1000
	sc := Scenario{RPS: 2, Pre: 3600, TailMul: 2, Regression: true}
	f, _ := FloorSeconds(&sc, fp)
	if e, q, ok := ExceedanceFloorSeconds(&sc, fp, thin); !ok || q != 0.9 || e/f < 1e4 {
		t.Errorf("2 req/s, history_min_requests 1 000: exceedance floor %.2f s at p%g, floor %.2f s; want p90, at least 10⁴ times the floor", e, 100*q, f)
	}
	for _, sc := range []Scenario{
		{RPS: 20, Pre: 450, ErrMul: 5, Regression: true},
		{RPS: 20, Pre: 450, BodyMul: 2, TailMul: 2, NoDeploy: true, Regression: true},
		{RPS: 50, Pre: 450, TailMul: 2, Ramp: 120, Regression: true},
		{RPS: 50, Pre: 450, BodyMul: 2, TailMul: 2, HeavyTail: 1.2, Regression: true},
	} {
		if _, ok := FloorSeconds(&sc, fp); ok && sc.HeavyTail > 0 {
			t.Errorf("%+v: a floor for a scenario outside the floors' model", sc)
		}
		if _, _, ok := ExceedanceFloorSeconds(&sc, fp, cfg); ok {
			t.Errorf("%+v: an exceedance floor for a scenario that is not a latency regression at its full size after a deploy", sc)
		}
	}
}

// TestSharedErrorBurst holds what a burst of errors shared by every version does right after a
// deploy: five seconds at ten times the exception rate is, in its first seconds, what error ×10
// is, and the targets ask for that in a few seconds, so after a plain deploy it is taken for the
// new version's regression. A canary is compared with its baseline cohort over the same buckets
// too, and the burst, which both cohorts see, is not.
func TestSharedErrorBurst(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("statistical: meaningless under the race detector")
	}
	const runs = 20
	for _, tt := range []struct {
		sc     Scenario
		lo, hi int // runs with an anomaly on the new version
	}{
		{Scenario{Name: "deploy", RPS: 20, Pre: 450, Post: 330, SharedErrMul: 10, SharedAt: 60, SharedLen: 5}, 15, runs},
		{Scenario{Name: "canary", RPS: 100, Pre: 450, Post: 330, CanaryShare: 0.5, SharedErrMul: 10, SharedAt: 60, SharedLen: 5}, 0, 1},
		{Scenario{Name: "deploy, x3 for 10 s", RPS: 20, Pre: 450, Post: 330, SharedErrMul: 3, SharedAt: 60, SharedLen: 10}, 0, 1},
	} {
		holdFired(t, tt.sc.Name, &tt.sc, detect.DefaultConfig(), 1, runs, tt.lo, tt.hi)
	}
}

// TestPausesAreNotRegressions: a process that stalls 200 ms every 10 s slows every request in the
// stall at once. Counted as independent, a stall's ten requests read as dozens of requests'
// evidence. Two things hold it back: the cap on what one update may add (latency_bucket_cap),
// and the baseline's latency dispersion, measured once the old version has served a whole
// epoch (5 min) and a minute more. Against a baseline too young to have it, A/A deploys fire
// without the cap and not with it; against an older one, the dispersion alone holds them.
func TestPausesAreNotRegressions(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("statistical: meaningless under the race detector")
	}
	sc := Scenario{Name: "pauses", RPS: 50, Pre: 450, Post: 330, PauseEvery: 10, PauseMS: 200, PauseAddMS: 100}
	young := sc
	young.Pre = 290
	uncapped := detect.DefaultConfig()
	uncapped.LatencyBucketCap = 1e9
	for _, tt := range []struct {
		name   string
		sc     *Scenario
		cfg    detect.Config
		lo, hi int
	}{
		{"default cap", &sc, detect.DefaultConfig(), 0, 0},
		{"default cap, a young baseline", &young, detect.DefaultConfig(), 0, 1},
		{"no cap, a young baseline", &young, uncapped, 1, 100},
		{"no cap, the baseline's dispersion measured", &sc, uncapped, 0, 1},
	} {
		holdFired(t, tt.name, tt.sc, tt.cfg, 11, 100, tt.lo, tt.hi)
	}
}

// TestLongPausesAreNotRegressions: a process that stalls for a second every 30 s slows every
// request in the stall by half a second. The first stall after a deploy made a tenth of the new
// version's few requests slow together, and the latency tests fired in 9 of 40 healthy deploys;
// tempered by the baseline's latency dispersion they keep their false-alarm rate, and every
// latency ×2 between the same stalls is still found.
func TestLongPausesAreNotRegressions(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("statistical: meaningless under the race detector")
	}
	for _, tt := range []struct {
		sc     Scenario
		lo, hi int
	}{
		{Scenario{Name: "no change", RPS: 50, Pre: 450, Post: 330, PauseEvery: 30, PauseMS: 1000, PauseAddMS: 500}, 0, 1},
		{Scenario{Name: "latency x2", Regression: true, RPS: 50, Pre: 450, Post: 330, PauseEvery: 30, PauseMS: 1000, PauseAddMS: 500, BodyMul: 2, TailMul: 2}, 100, 100},
	} {
		holdFired(t, tt.sc.Name, &tt.sc, detect.DefaultConfig(), 12, 100, tt.lo, tt.hi)
	}
}

// TestBatchJobIsNoRegression: a batch job that slows every version's requests by 20 ms (the
// median ×2) for 10 s every 5 min is what every latency ×2 is in its first seconds. Without
// the excursions (latency_excursion_max 0), healthy deploys were rolled back on the first window
// after them and a series no deploy touched paged at its windows; with them neither, and a
// lasting ×2 is still found. So too where one component's seconds are too small to show an
// excursion (16 components at 20 req/s: 7 of 40 fired on the components' excursions alone; a
// rolling update's first minutes: 10 of 40), which the service's show, and at 10 req/s (11
// of 40), whose seconds' deviations are scaled to what they can show.
func TestBatchJobIsNoRegression(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("statistical: meaningless under the race detector")
	}
	batch := Scenario{RPS: 50, Pre: 450, Post: 330, PauseEvery: 300, PauseMS: 10000, PauseAddMS: 20}
	slower := batch
	slower.Regression, slower.BodyMul, slower.TailMul = true, 2, 2
	untouched := Scenario{RPS: 50, Pre: 900, Post: 600, NoDeploy: true, PauseEvery: 300, PauseMS: 10000, PauseAddMS: 20}
	// Buckets too small for one component's excursions to stand out: read over the service, and
	// at 10 req/s with their deviation scaled to what a bucket can show.
	sixteen := Scenario{RPS: 20, Pre: 450, Post: 330, Components: 16, PauseEvery: 300, PauseMS: 10000, PauseAddMS: 20}
	rollout := Scenario{RPS: 50, Pre: 450, Post: 600, Rollout: 300, PauseEvery: 300, PauseMS: 10000, PauseAddMS: 20}
	quiet := Scenario{RPS: 10, Pre: 450, Post: 330, PauseEvery: 300, PauseMS: 10000, PauseAddMS: 20}
	off := detect.DefaultConfig()
	off.LatencyExcursionMax = 0
	for _, tt := range []struct {
		name         string
		sc           *Scenario
		cfg          detect.Config
		lo, hi, runs int // runs: 40 when 0
	}{
		{"no change", &batch, detect.DefaultConfig(), 0, 1, 0},
		{"no change, excursions off", &batch, off, 4, 40, 0},
		{"latency x2", &slower, detect.DefaultConfig(), 40, 40, 0},
		{"no deploy, no change", &untouched, detect.DefaultConfig(), 0, 1, 0},
		{"no deploy, no change, excursions off", &untouched, off, 20, 40, 0},
		{"16 components at 20 req/s deployed together, no change", &sixteen, detect.DefaultConfig(), 0, 1, 20},
		{"a rolling update, no change", &rollout, detect.DefaultConfig(), 0, 1, 0},
		{"10 req/s, no change", &quiet, detect.DefaultConfig(), 0, 1, 0},
	} {
		holdFired(t, tt.name, tt.sc, tt.cfg, 13, cmp.Or(tt.runs, 40), tt.lo, tt.hi)
	}
}

// TestWanderingMixIsNoRegression: a traffic mix whose slow requests' share wanders by a
// log-normal factor of σ 0.6 over a minute moves the p99's share by as much as p99 ×2 does, for
// minutes. Without the drift (latency_drift false), healthy deploys were rolled back and a
// series no deploy touched paged; with it they are not, and a tail-only regression is still
// found. The old version serves 50 minutes first: a series learns its drift over its first
// hour.
func TestWanderingMixIsNoRegression(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("statistical: meaningless under the race detector")
	}
	const pre = 3000
	mix := Scenario{RPS: 50, Pre: pre, Post: 330, MixWander: 0.6, Settle: pre}
	untouched := mix
	untouched.NoDeploy = true
	tail := mix
	tail.Regression, tail.TailMul = true, 2
	off := detect.DefaultConfig()
	off.LatencyDrift = false
	for _, tt := range []struct {
		name         string
		sc           *Scenario
		cfg          detect.Config
		lo, hi, runs int
	}{
		{"no change", &mix, detect.DefaultConfig(), 0, 2, 40},
		{"no change, drift off", &mix, off, 5, 40, 40},
		{"no deploy, no change", &untouched, detect.DefaultConfig(), 0, 1, 40},
		{"p99 x2 tail-only", &tail, detect.DefaultConfig(), 20, 20, 20},
	} {
		holdFired(t, tt.name, tt.sc, tt.cfg, 1, tt.runs, tt.lo, tt.hi)
	}
}

// TestClumpedErrorsAreNotRegressions: a 2 % exception rate whose failures come five at a time
// (a dependency's blip fails every request in flight) varies five times as much per bucket as
// independent failures. The error tests counted them as independent and fired in 166 of 200
// A/A deploys; tempered by the baseline's dispersion they keep their false-alarm rate, and a
// rise to ×5 in the same clumps is still found.
func TestClumpedErrorsAreNotRegressions(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("statistical: meaningless under the race detector")
	}
	for _, tt := range []struct {
		sc     Scenario
		lo, hi int
	}{
		{Scenario{Name: "no change", RPS: 50, Pre: 450, Post: 330, ErrClump: 5}, 0, 2},
		{Scenario{Name: "error x5", Regression: true, RPS: 50, Pre: 450, Post: 330, ErrClump: 5, ErrMul: 5}, 100, 100},
	} {
		holdFired(t, tt.sc.Name, &tt.sc, detect.DefaultConfig(), 5, 100, tt.lo, tt.hi)
	}
}

// TestColdStartNeedsLatencyWarmup: a version that starts three times as slow as usual, easing off
// over 10 s (a JIT compiler, cold caches), is a latency regression to a detector that compares
// from the first request, in every deploy: the default, which the time-to-detect targets need.
// latency_warmup, set to the service's warm-up, leaves it out. A rolling update starts the new
// version's instances one after another, and each starts cold: a warm-up counted from the
// version's first request does not cover the later ones, one counted from each instance's does,
// when the events name their instance.
func TestColdStartNeedsLatencyWarmup(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("statistical: meaningless under the race detector")
	}
	for _, tt := range []struct {
		sc     Scenario
		lo, hi int
	}{
		{Scenario{Name: "no warm-up", RPS: 50, Pre: 450, Post: 330, ColdStart: 3}, 48, 50},
		{Scenario{Name: "latency_warmup 30s", RPS: 50, Pre: 450, Post: 330, ColdStart: 3, LatencyWarmup: 30}, 0, 1},
		{Scenario{Name: "latency_warmup 30s, rolling update over 5 min", RPS: 50, Pre: 450, Post: 600, ColdStart: 3, LatencyWarmup: 30, Rollout: 300}, 48, 50},
		{Scenario{Name: "latency_warmup 30s, rolling update of 10 named instances over 5 min", RPS: 50, Pre: 450, Post: 600, ColdStart: 3, LatencyWarmup: 30, Rollout: 300, Instances: 10}, 0, 1},
	} {
		holdFired(t, tt.sc.Name, &tt.sc, detect.DefaultConfig(), 5, 50, tt.lo, tt.hi)
	}
}

// TestLoadIsNotARegression: a traffic spike ×3 that slows a service whose latency follows its
// load by 60 % is no regression, after a deploy or without one, when latency is read at its load
// (latency_load_share); read as it comes, it rolls back or pages nearly every time. A 50 % canary
// whose baseline cohort served long enough before it for an own profile (10 min) does not page on
// its cpu in such a spike either: cpu is read at the component's requests, which the canary's
// share does not move.
func TestLoadIsNotARegression(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("statistical: meaningless under the race detector")
	}
	const runs = 20
	off := detect.DefaultConfig()
	off.LatencyLoadShare = 0
	deploy := Scenario{Name: "spike after a deploy", RPS: 50, Pre: 450, Post: 330, SpikeAt: 60, SpikeLen: 60, SpikeMul: 3, LoadLatency: 0.3}
	alone := Scenario{Name: "spike without a deploy", RPS: 50, Pre: 900, Post: 330, NoDeploy: true, SpikeAt: 60, SpikeLen: 60, SpikeMul: 3, LoadLatency: 0.3}
	canary := Scenario{Name: "spike in a 50 % canary, the cohort's own profile warm", RPS: 100, Pre: 660, Post: 330, CanaryShare: 0.5, SpikeAt: 60, SpikeLen: 60, SpikeMul: 3}
	for _, tt := range []struct {
		name   string
		sc     *Scenario
		cfg    detect.Config
		lo, hi int
	}{
		{deploy.Name, &deploy, detect.DefaultConfig(), 0, 0},
		{deploy.Name + ", latency read as it comes", &deploy, off, runs - 2, runs},
		{alone.Name, &alone, detect.DefaultConfig(), 0, 0},
		{alone.Name + ", latency read as it comes", &alone, off, runs - 2, runs},
		{canary.Name, &canary, detect.DefaultConfig(), 0, 0},
	} {
		holdFired(t, tt.name, tt.sc, tt.cfg, 13, runs, tt.lo, tt.hi)
	}
}

// TestExcessFindsATailSooner: testing how far above the tail thresholds the exceedances land
// (detect.latency_excess) finds a slow path twice as slow sooner than their count alone, on the
// same deploys; and quiet services whose tail is not a smooth shape (timeouts far above the
// rest, retries that make a second mode inside it, a heavy Pareto tail, stalls) fire no more
// with it than without.
func TestExcessFindsATailSooner(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("statistical: meaningless under the race detector")
	}
	on, off := detect.DefaultConfig(), detect.DefaultConfig()
	off.LatencyExcess = false
	meanTTD := func(sc *Scenario, cfg detect.Config, runs int) float64 {
		var buf []schemas.TelemetryEvent
		sum := 0.0
		for run := range runs {
			var o runOutcome
			o, buf = runDeploy(sc, cfg, 1, run, buf)
			if !o.detected {
				t.Fatalf("%+v: run %d not detected", sc, run)
			}
			sum += o.ttd
		}
		return sum / float64(runs)
	}
	tail := Scenario{Regression: true, RPS: 50, Pre: 450, Post: 330, TailMul: 2}
	withOff, withOn := meanTTD(&tail, off, 40), meanTTD(&tail, on, 40)
	t.Logf("p99 x2 tail-only @50rps: %.2f s on average with the excess, %.2f s with the count alone", withOn, withOff)
	// 5.6 s against 6.2 over these 40 deploys (5.8 s against 6.8 over the suite's 100)
	if withOn > 0.95*withOff {
		t.Errorf("p99 x2 tail-only: %.2f s with the excess, %.2f s without; want at least 5 %% sooner", withOn, withOff)
	}
	for _, sc := range []Scenario{
		{Name: "timeouts 0.2 %", RPS: 50, Pre: 450, Post: 330, Timeouts: 0.002},
		{Name: "retries 2 %", RPS: 50, Pre: 450, Post: 330, Retries: 0.02},
		{Name: "heavy tail", RPS: 50, Pre: 450, Post: 330, HeavyTail: 1.2},
		{Name: "pauses", RPS: 50, Pre: 450, Post: 330, PauseEvery: 10, PauseMS: 200, PauseAddMS: 100},
	} {
		holdFired(t, sc.Name, &sc, on, 1, 40, 0, deploysFired(&sc, off, 1, 40))
	}
}
