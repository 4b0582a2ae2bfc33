package eval

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/schemas"
)

// ScenarioOptions configures a run of the scenario suite.
type ScenarioOptions struct {
	// Seed makes the suite reproducible: the same seed, options and config give the same report.
	Seed uint64
	// AARuns is the number of A/A deploys (scenario "A/A no change"); at least 1000 for a
	// false-rollback rate worth quoting. The rate also sets the floor's alpha, whose log the
	// floors scale with: at a rate near 0.1 %, 1000 deploys see one or two false rollbacks and
	// the rate is only known within a factor of three; `scalpel eval scenarios` runs 5000.
	AARuns int
	// Runs is the number of deploys of every other scenario.
	Runs int
	// Workers runs deploys in parallel (default GOMAXPROCS). The report does not depend on it.
	Workers int
	// Config is the detector's configuration.
	Config detect.Config
	// Scenarios defaults to DefaultScenarios.
	Scenarios []Scenario
	// FloorAlpha is the false-alarm probability of the ideal SPRT behind the floor. Zero (the
	// default) uses the detector's own false-rollback rate on this run's A/A deploys, at least
	// 1/AARuns, so the floor is the ideal test at the same false-alarm rate (see FloorSeconds).
	FloorAlpha float64
	// FloorBeta is the ideal SPRT's miss probability (default 0.01).
	FloorBeta float64
	// Progress, when set, is called after every deploy with the number done and the total, one
	// call at a time.
	Progress func(done, total int)
}

// RuleOutcome is what a static rule (Argo Rollouts, Flagger) decided over a scenario's runs.
type RuleOutcome struct {
	Rollbacks int      `json:"rollbacks"`
	TTDP50    *float64 `json:"ttd_p50_s,omitempty"`
}

// ScenarioResult is one scenario's line of the report.
type ScenarioResult struct {
	Scenario Scenario `json:"scenario"`
	Runs     int      `json:"runs"`
	// Detected counts runs in which the detector raised an anomaly on the new version (for a
	// scenario without regression: any anomaly at all, i.e. a false rollback).
	Detected int `json:"detected"`
	// TTDP50 and TTDP95 are event seconds from the deploy to the first anomaly, over all runs
	// (a missed run counts as never: a p95 over more than 5 % missed runs is absent).
	TTDP50 *float64 `json:"ttd_p50_s,omitempty"`
	TTDP95 *float64 `json:"ttd_p95_s,omitempty"`
	// OutP95 is the p95 over all runs of the event seconds from the deploy to the event after
	// which the detector returned its first anomaly (it runs Advance after every event): when a
	// live pipeline has the anomaly. A test decided at a bucket's close is dated at the bucket's
	// end but returned only once the watermark passed it, AllowedLateness later; one that fired
	// within a bucket is returned on the request that carried it over.
	OutP95 *float64 `json:"out_p95_s,omitempty"`
	// FloorS is the expected detection time of the ideal SPRT (see FloorSeconds); absent when the
	// scenario has no closed-form floor (memory leak) or no regression.
	FloorS *float64 `json:"floor_s,omitempty"`
	// ConcurrentFloorS, for an error regression in a canary, is the expected detection time of
	// the ideal test that compares the canary with the concurrent baseline cohort instead of
	// knowing the baseline's rate (see ConcurrentFloorSeconds): what cancelling whatever moves
	// both cohorts costs, before any cost of the detector's own.
	ConcurrentFloorS *float64 `json:"concurrent_floor_s,omitempty"`
	// ExceedanceFloorS, for a latency regression, is the expected detection time of the ideal
	// test that sees only whether each request exceeded one of the detector's tested quantiles
	// (the most informative, ExceedanceQuantile) and knows that rate before and after (see
	// ExceedanceFloorSeconds): what is left to the floor once a latency is reduced to an
	// exceedance count, before any cost of the detector's own.
	ExceedanceFloorS   *float64 `json:"exceedance_floor_s,omitempty"`
	ExceedanceQuantile float64  `json:"exceedance_quantile,omitempty"`
	// TTDMean is the mean time to detect, present only when every run detected (a miss has no
	// time): it is the statistic the floor, an expected detection time, is comparable with.
	TTDMean *float64 `json:"ttd_mean_s,omitempty"`
	// TTDMeanAtLeast, when some but not all runs were missed, is the mean with every missed run
	// counted as detected at the end of its watch (Post): the true mean is at least this.
	TTDMeanAtLeast *float64 `json:"ttd_mean_at_least_s,omitempty"`
	// RatioMean is TTDMean / max(FloorS, one bucket): like against like, the figure the "within 2×
	// of the floor" target is read on. With misses it is TTDMeanAtLeast's ratio, a lower bound
	// (RatioAtLeast).
	RatioMean    *float64 `json:"ratio_mean_to_floor,omitempty"`
	RatioAtLeast bool     `json:"ratio_mean_at_least,omitempty"`
	// Ratio is TTDP95 / max(FloorS, one bucket). The ideal test's own p95 is several times its mean
	// at low counts, so this ratio overstates the gap; it is shown because p95 is what users feel.
	Ratio   *float64    `json:"ratio_to_floor,omitempty"`
	Argo0   RuleOutcome `json:"argo_failure_limit_0"`
	Argo3   RuleOutcome `json:"argo_failure_limit_3"`
	Flagger RuleOutcome `json:"flagger_threshold_5"`
	// FalseRollbacks, for a scenario without regression, is each deploy the detector rolled
	// back: which run, and the test that fired first.
	FalseRollbacks []FalseRollback `json:"false_rollbacks,omitempty"`
	// Missed, for a scenario with a regression, is each deploy (run) the detector did not find
	// within the watch: with the report's seed, the deploy to replay when asking why.
	Missed []int `json:"missed_runs,omitempty"`
}

// FalseRollback is one healthy deploy the detector rolled back: run (with the report's seed, the
// deploy's random draws), and the first anomaly's metric and test, event seconds after the
// deploy.
type FalseRollback struct {
	Run    int     `json:"run"`
	Metric string  `json:"metric"`
	Test   string  `json:"test"`
	AtS    float64 `json:"at_s"`
}

// ScenarioReport is the suite's result.
type ScenarioReport struct {
	Seed    uint64           `json:"seed"`
	Results []ScenarioResult `json:"results"`
	// Floor holds the error probabilities and the false-alarm spacing the floors were computed at.
	Floor FloorParams `json:"floor"`
	// FalseRollbackRate is the share of all no-regression deploys (A/A and the other quiet
	// scenarios) in which the detector raised any anomaly.
	FalseRollbackRate float64 `json:"false_rollback_rate"`
	AAFalseRollbacks  int     `json:"aa_false_rollbacks"`
	AARuns            int     `json:"aa_runs"`
	// AARateCI is the exact (Clopper-Pearson) 95 % interval of the A/A false-rollback rate.
	AARateCI [2]float64 `json:"aa_rate_ci95"`
	Elapsed  string     `json:"elapsed"`
	// CPUWarmupS is how long a new version serves before its cpu is compared (resource_warmup_buckets).
	CPUWarmupS float64 `json:"cpu_warmup_s"`
}

// runOutcome is one deploy's result.
type runOutcome struct {
	detected              bool
	ttd                   float64
	out                   float64 // event seconds from the deploy to the event after which the anomaly was returned
	argo0, argo3, flagger float64 // seconds to the rule's rollback, +Inf when none
	metric, test          string  // the first counted anomaly's
}

// RunScenarios runs the suite. It stops early (with ctx's error) when ctx is done.
func RunScenarios(ctx context.Context, opt ScenarioOptions) (*ScenarioReport, error) {
	start := time.Now()
	if opt.Scenarios == nil {
		opt.Scenarios = DefaultScenarios()
	}
	if opt.Workers <= 0 {
		opt.Workers = runtime.GOMAXPROCS(0)
	}
	if opt.FloorBeta == 0 {
		opt.FloorBeta = 0.01
	}
	if err := opt.Config.Validate(); err != nil {
		return nil, err
	}
	if opt.AARuns < 1 || opt.Runs < 1 {
		return nil, fmt.Errorf("scenario suite: %d A/A deploys and %d of every other scenario asked for; both must be at least 1 (scalpel eval scenarios --aa, --runs)", opt.AARuns, opt.Runs)
	}
	type task struct{ sc, run int }
	outcomes := make([][]runOutcome, len(opt.Scenarios))
	var tasks []task
	for i := range opt.Scenarios {
		n := opt.Runs
		if !opt.Scenarios[i].Regression && opt.Scenarios[i].RPS == 0 {
			n = opt.AARuns
		}
		outcomes[i] = make([]runOutcome, n)
		for r := range n {
			tasks = append(tasks, task{i, r})
		}
	}
	ch := make(chan task)
	var wg sync.WaitGroup
	var progressMu sync.Mutex
	done := 0
	for range opt.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []schemas.TelemetryEvent
			for t := range ch {
				var o runOutcome
				o, buf = runDeploy(&opt.Scenarios[t.sc], opt.Config, opt.Seed, t.run, buf)
				outcomes[t.sc][t.run] = o
				if opt.Progress != nil {
					progressMu.Lock()
					done++
					opt.Progress(done, len(tasks))
					progressMu.Unlock()
				}
			}
		}()
	}
	var err error
feed:
	for _, t := range tasks {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		case ch <- t:
		}
	}
	close(ch)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	rep := &ScenarioReport{Seed: opt.Seed, Floor: floorParams(opt, outcomes),
		CPUWarmupS: float64(opt.Config.ResourceWarmupBuckets) * time.Duration(opt.Config.BucketWidth).Seconds()}
	quiet, falses := 0, 0
	for i := range opt.Scenarios {
		sc := &opt.Scenarios[i]
		res := summarise(sc, outcomes[i], rep.Floor)
		if res.FloorS != nil {
			if e, q, ok := ExceedanceFloorSeconds(sc, rep.Floor, opt.Config); ok {
				res.ExceedanceFloorS, res.ExceedanceQuantile = &e, q
			}
		}
		if !sc.Regression {
			quiet += res.Runs
			falses += res.Detected
			if sc.RPS == 0 {
				rep.AARuns, rep.AAFalseRollbacks = res.Runs, res.Detected
				rep.AARateCI = clopperPearson(res.Detected, res.Runs)
			}
		}
		rep.Results = append(rep.Results, res)
	}
	if quiet > 0 {
		rep.FalseRollbackRate = float64(falses) / float64(quiet)
	}
	rep.Elapsed = time.Since(start).Round(time.Millisecond).String()
	return rep, nil
}

// floorParams sets the ideal test's error probabilities from the options and the A/A deploys:
// alpha is the share of A/A deploys the detector fired on (at least one in AARuns, so a run
// without a false alarm does not ask the ideal test for alpha = 0), unless the options fix it;
// ARL spreads that rate over the time an A/A deploy is watched after its deploy. Without an A/A
// scenario, alpha defaults to 0.01 (the false-rollback budget) and the watch to 330 s.
func floorParams(opt ScenarioOptions, outcomes [][]runOutcome) FloorParams {
	p := FloorParams{Alpha: opt.FloorAlpha, Beta: opt.FloorBeta, Measured: opt.FloorAlpha == 0}
	watch, aaRuns, aaFalse := 330.0, 0, 0
	for i := range opt.Scenarios {
		if sc := &opt.Scenarios[i]; !sc.Regression && sc.RPS == 0 {
			watch, aaRuns = float64(sc.Post), len(outcomes[i])
			for _, o := range outcomes[i] {
				if o.detected {
					aaFalse++
				}
			}
		}
	}
	if p.Alpha == 0 {
		if aaRuns > 0 {
			p.Alpha = math.Min(math.Max(float64(aaFalse), 1)/float64(aaRuns), 0.5) // a handful of A/A runs says little
		} else {
			p.Alpha, p.Measured = 0.01, false
		}
	}
	p.ARL = watch / p.Alpha
	return p
}

func summarise(sc *Scenario, os []runOutcome, fp FloorParams) ScenarioResult {
	res := ScenarioResult{Scenario: *sc, Runs: len(os)}
	ttd := make([]float64, len(os))
	out := make([]float64, len(os))
	var a0, a3, fl []float64
	for i, o := range os {
		ttd[i], out[i] = math.Inf(1), math.Inf(1)
		switch {
		case o.detected:
			res.Detected++
			ttd[i], out[i] = o.ttd, o.out
			if !sc.Regression {
				res.FalseRollbacks = append(res.FalseRollbacks, FalseRollback{Run: i, Metric: o.metric, Test: o.test, AtS: o.ttd})
			}
		case sc.Regression:
			res.Missed = append(res.Missed, i)
		}
		for _, r := range []struct {
			v   float64
			out *RuleOutcome
			all *[]float64
		}{{o.argo0, &res.Argo0, &a0}, {o.argo3, &res.Argo3, &a3}, {o.flagger, &res.Flagger, &fl}} {
			*r.all = append(*r.all, r.v)
			if !math.IsInf(r.v, 1) {
				r.out.Rollbacks++
			}
		}
	}
	if sc.Regression {
		res.TTDP50, res.TTDP95 = quantileFinite(ttd, 0.5), quantileFinite(ttd, 0.95)
		res.OutP95 = quantileFinite(out, 0.95)
		res.TTDMean = meanFinite(ttd)
		if res.TTDMean == nil && res.Detected > 0 {
			// Censored at the end of the watch: a lower bound on the mean.
			cens := slices.Clone(ttd)
			for i, v := range cens {
				if math.IsInf(v, 1) {
					cens[i] = float64(sc.Post)
				}
			}
			res.TTDMeanAtLeast = meanFinite(cens)
		}
		res.Argo0.TTDP50, res.Argo3.TTDP50, res.Flagger.TTDP50 = quantileFinite(a0, 0.5), quantileFinite(a3, 0.5), quantileFinite(fl, 0.5)
		if f, ok := FloorSeconds(sc, fp); ok {
			res.FloorS = &f
			if c, ok := ConcurrentFloorSeconds(sc, fp); ok {
				res.ConcurrentFloorS = &c
			}
			if res.TTDP95 != nil {
				r := *res.TTDP95 / math.Max(f, 1)
				res.Ratio = &r
			}
			if m := cmp.Or(res.TTDMean, res.TTDMeanAtLeast); m != nil {
				r := *m / math.Max(f, 1)
				res.RatioMean, res.RatioAtLeast = &r, res.TTDMean == nil
			}
		}
	}
	return res
}

// clopperPearson is the exact 95 % confidence interval of a binomial rate, x successes in n.
func clopperPearson(x, n int) [2]float64 {
	if n <= 0 {
		return [2]float64{0, 1}
	}
	ci := [2]float64{0, 1}
	if x > 0 {
		ci[0] = distuv.Beta{Alpha: float64(x), Beta: float64(n - x + 1)}.Quantile(0.025)
	}
	if x < n {
		ci[1] = distuv.Beta{Alpha: float64(x + 1), Beta: float64(n - x)}.Quantile(0.975)
	}
	return ci
}

// meanFinite is the mean of vs, nil when vs is empty or any value is infinite (a missed run).
func meanFinite(vs []float64) *float64 {
	if len(vs) == 0 {
		return nil
	}
	sum := 0.0
	for _, v := range vs {
		if math.IsInf(v, 0) {
			return nil
		}
		sum += v
	}
	m := sum / float64(len(vs))
	return &m
}

// quantileFinite is the q quantile (nearest rank) of vs, nil when it is infinite or vs is empty.
func quantileFinite(vs []float64, q float64) *float64 {
	if len(vs) == 0 {
		return nil
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	v := s[max(0, min(i, len(s)-1))]
	if math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// runDeploy generates one deploy, drives a detector over it the way the pipeline does (Observe,
// then Advance to the watermark) and applies the static rules.
func runDeploy(sc *Scenario, cfg detect.Config, seed uint64, run int, buf []schemas.TelemetryEvent) (runOutcome, []schemas.TelemetryEvent) {
	evs := sc.generate(seed, run, buf)
	o := runOutcome{ttd: math.Inf(1), out: math.Inf(1)}
	deploy := sc.deployAt()
	if sc.LatencyWarmup > 0 {
		cfg.LatencyWarmup = schemas.Duration(time.Duration(sc.LatencyWarmup) * time.Second)
	}
	d := detect.New(cfg)
	settled := scenarioT0.Add(time.Duration(sc.Settle) * time.Second)
	consider := func(as []schemas.Anomaly, at time.Time) {
		for i := range as {
			a := &as[i]
			if o.detected || a.IsResolved() || a.TSDetected.Before(settled) {
				continue
			}
			if sc.onlyChangedCounts() && (a.Version != sc.changedVersion() || a.Component != scenarioComp) {
				continue
			}
			o.detected = true
			o.ttd = a.TSDetected.Sub(deploy).Seconds()
			o.out = at.Sub(deploy).Seconds()
			o.metric, o.test = a.Metric, a.Test
		}
	}
	// Advance after every event, as a pipeline whose batches held one event would: what the
	// detector finds does not depend on the batching, and when it returns it is measured to the
	// event (out).
	var heard time.Time // the newest event time (Ticks)
	ticks := func(until time.Time) {
		// The ticks serve publishes before until, when the events are stamped as they are sent:
		// from tick_after after the newest event, one a second, each tick_after behind then.
		for at := heard.Add(ingest.DefaultTickAfter); sc.Ticks && !heard.IsZero() && at.Before(until); at = at.Add(time.Second) {
			tick := schemas.ClockTick(at.Add(-ingest.DefaultTickAfter))
			d.Observe(&tick)
			consider(d.Advance(d.Watermark()), at)
		}
	}
	for i := range evs {
		ticks(evs[i].TS)
		d.Observe(&evs[i])
		consider(d.Advance(d.Watermark()), evs[i].TS)
		if evs[i].TS.After(heard) {
			heard = evs[i].TS
		}
	}
	end := scenarioT0.Add(time.Duration(sc.Pre+sc.Post+1) * time.Second)
	ticks(end)
	consider(d.Advance(end), end)
	o.argo0, o.argo3, o.flagger = staticRules(sc, evs)
	return o, evs
}

// window is one minute of a version's traffic, as a metrics query would see it.
type window struct {
	n, errs float64
	p99     float64
}

// measure computes error rate and p99 latency of (version, cohort) over [from, to) seconds.
func measure(evs []schemas.TelemetryEvent, secIdx []int, from, to int, version, cohort string, lats []float64) (window, []float64) {
	var w window
	lats = lats[:0]
	for _, ev := range evs[secIdx[from]:secIdx[to]] {
		if ev.Version != version || ev.Cohort != cohort || ev.Component != scenarioComp {
			continue
		}
		w.n++
		if ev.Error != "" && ev.Error != schemas.ErrInvalidInput {
			w.errs++
		}
		if ev.LatencyMS != nil {
			lats = append(lats, *ev.LatencyMS)
		}
	}
	if len(lats) > 0 {
		slices.Sort(lats)
		w.p99 = lats[max(0, int(math.Ceil(0.99*float64(len(lats))))-1)]
	}
	return w, lats
}

// staticRules applies the peers' documented analyses to the same events: every minute after
// the deploy, the last minute's error rate and p99 latency of the new version (the canary) are
// compared with static thresholds set at the 99th percentile of the same one-minute metrics over
// the baseline period (sliding windows every 10 s). Argo Rollouts (interval 1m) rolls back when
// failures exceed failureLimit (0: the first failure; 3: the fourth); Flagger (interval 1m,
// threshold 5) when failed checks reach 5. A minute without requests is no failure. Without a
// deploy (NoDeploy) there is no rollout to analyse, so the rules never act. Of a service of
// several components (Components) the rules read the first, the one the scenario changes: an
// analysis template queries one metric.
func staticRules(sc *Scenario, evs []schemas.TelemetryEvent) (argo0, argo3, flagger float64) {
	total := sc.Pre + sc.Post
	secIdx := make([]int, total+2)
	j := 0
	for s := 0; s <= total+1; s++ {
		bound := scenarioT0.Add(time.Duration(s) * time.Second)
		for j < len(evs) && evs[j].TS.Before(bound) {
			j++
		}
		secIdx[s] = j
	}
	// secIdx[s] is the first event at or after second s; shift so [from, to) reads naturally.
	oldCohort, newCohort := "", ""
	if sc.CanaryShare > 0 {
		oldCohort, newCohort = schemas.CohortBaseline, schemas.CohortCanary
		if sc.FreshBaseline {
			oldCohort = "" // the baseline period served without a cohort
		}
	}
	var lats []float64
	var errRates, p99s []float64
	for end := 60; end <= sc.Pre; end += 10 {
		var w window
		w, lats = measure(evs, secIdx, end-60, end, oldVersion, oldCohort, lats)
		if w.n > 0 {
			errRates = append(errRates, w.errs/w.n)
			p99s = append(p99s, w.p99)
		}
	}
	thrErr, thrLat := math.Inf(1), math.Inf(1)
	if q := quantileFinite(errRates, 0.99); q != nil {
		thrErr = *q
	}
	if q := quantileFinite(p99s, 0.99); q != nil {
		thrLat = *q
	}
	argo0, argo3, flagger = math.Inf(1), math.Inf(1), math.Inf(1)
	fails := 0
	for k := 1; sc.Pre+60*k <= total; k++ {
		end := sc.Pre + 60*k
		var w window
		w, lats = measure(evs, secIdx, end-60, end, newVersion, newCohort, lats)
		if w.n == 0 || (w.errs/w.n <= thrErr && w.p99 <= thrLat) {
			continue
		}
		fails++
		t := float64(60 * k)
		if fails == 1 {
			argo0 = t
		}
		if fails == 4 {
			argo3 = t
		}
		if fails == 5 {
			flagger = t
		}
	}
	return argo0, argo3, flagger
}

// FloorParams are what the ideal test behind a floor is held to.
type FloorParams struct {
	// Alpha is the ideal SPRT's false-alarm probability; Beta its miss probability.
	Alpha float64 `json:"alpha"`
	Beta  float64 `json:"beta"`
	// Measured says Alpha is the detector's own A/A false-rollback rate (at least 1/AARuns).
	Measured bool `json:"alpha_measured"`
	// ARL is the mean time between false alarms, in seconds, that the floor of a change at an
	// unknown time (NoDeploy) is held to: the A/A watch after the deploy divided by Alpha.
	ARL float64 `json:"arl_s"`
}

// FloorSeconds is the expected detection time, in seconds, of the ideal test for the scenario:
// a test that knows the distribution before and after the change, at the detector's own
// false-alarm rate. ok is false when the scenario has no such floor (a memory leak, no change).
//
// After a deploy the change time is known, and the ideal test is Wald's SPRT with false-alarm
// probability p.Alpha and miss probability p.Beta, which no test with those error probabilities
// beats in expected sample number (Wald-Wolfowitz). Its expected log-likelihood ratio at the
// stop is, neglecting the overshoot, W = (1-β)·ln((1-β)/α) + β·ln(β/(1-α)). Per request the
// ratio grows by the Kullback-Leibler divergence KL between the new and the old distribution
// of (error category, latency), computed from the generator's model (numerically for the
// latency mixture), so E[N] = W / KL requests, divided by the new version's request rate for
// seconds. A throughput drop uses the Poisson count per second instead of requests; a cpu
// regression the one cpu sample a second, normal with the generator's noise about a level the
// ideal test knows.
//
// Alpha: "the same false-alarm rate" is the detector's measured share of A/A deploys it fired on
// (see floorParams), not the budget, so the floor is not made low by asking the ideal test for
// a rate the detector does not run at. Beta stays 0.01.
//
// A ramp: the ideal test knows the rate at every instant, so its expected log-likelihood ratio
// after t seconds is G(t) = ∫₀ᵗ rate·KL(s) ds, and the floor is the t where G(t) = W (Wald's
// identity with a time-varying drift, again without the overshoot). Since the drift grows, G is
// convex and, by Jensen's inequality, E[N] ≤ G⁻¹(W): the figure can exceed the ideal test's mean
// by the spread of its stopping time around the ramp. A simulation of that ideal test on the
// generator's model (error x5 over 60 s at 20 req/s) stops on average 2 % before this figure; at
// constant rates the neglected overshoot goes the other way (an exception moves the ratio by
// ln 5), and the simulated mean is 10-15 % above W/KL: the floors are lower bounds there.
//
// Without a deploy (NoDeploy) no detector knows when the change started, so an SPRT started at
// the change is not the bound: the optimal procedure is Page's CUSUM (Lorden 1971, Moustakides
// 1986), held to a mean time between false alarms, p.ARL, instead of a probability. Its delay
// uses the Brownian-motion approximations of the CUSUM's run lengths (Siegmund 1985,
// "Sequential Analysis"), without the overshoot correction: with threshold h on the log
// likelihood ratio, ARL₀ ≈ (eʰ - h - 1)/KL and the delay E₁ ≈ (h + e⁻ʰ - 1)/KL, both in
// requests; h solves the first for ARL₀ = p.ARL·rate. Asymptotically this is Lorden's
// ln(ARL₀·KL)/KL. The A/A watch is the time after the deploy (Post), where the A/A false
// rollbacks are counted.
func FloorSeconds(sc *Scenario, p FloorParams) (secs float64, ok bool) {
	alpha, beta := p.Alpha, p.Beta
	wald := waldBoundary(alpha, beta)
	if !sc.modelled() {
		return 0, false
	}
	rate := sc.runRPS(0)
	if sc.CanaryShare > 0 {
		rate *= sc.CanaryShare
	}
	if sc.CPUMul != 0 { // one sample a second
		d := (sc.CPUMul - 1) * (cpuIdle + cpuBusy) // at the mean load
		kl := d * d / (2 * cpuNoise * cpuNoise)
		if sc.NoDeploy {
			return cusumDelay(p.ARL, kl), p.ARL > 0
		}
		return wald / kl, true
	}
	if sc.RateMul != 0 {
		l0, l1 := rate, rate*sc.RateMul
		kl := l1*math.Log(l1/l0) + l0 - l1 // per second
		return wald / kl, true
	}
	latKL := latencyKL(orOne(sc.BodyMul), orOne(sc.TailMul))
	kl := errorKL(orOne(sc.ErrMul)) + latKL
	if kl <= 0 || rate <= 0 {
		return 0, false
	}
	if sc.NoDeploy {
		if p.ARL <= 0 {
			return 0, false
		}
		return cusumDelay(p.ARL*rate, kl) / rate, true
	}
	if sc.Ramp > 0 || sc.Rollout > 0 {
		// G(t) by the midpoint rule in steps of 1/1000 of the ramp or rollout (1/200 when the
		// latency ramps, whose divergence is itself an integral); after both the drift is
		// constant and the rest is closed-form.
		ramp := float64(max(sc.Ramp, sc.Rollout))
		latRamps := latKL > 0 && sc.Ramp > 0
		steps := 1000.0
		if latRamps {
			steps = 200
		}
		dt := ramp / steps
		g := 0.0
		for t := 0.0; t < ramp; t += dt {
			mid := t + dt/2
			lat := latKL
			if latRamps {
				lat = latencyKL(sc.at(sc.BodyMul, mid), sc.at(sc.TailMul, mid))
			}
			inc := rate * sc.share(mid) * (errorKL(sc.at(sc.ErrMul, mid)) + lat) * dt
			if g+inc >= wald {
				return t + dt*(wald-g)/inc, true
			}
			g += inc
		}
		return ramp + (wald-g)/(rate*kl), true
	}
	return wald / kl / rate, true
}

// modelled reports whether the floors' model describes sc: log-normal latencies that do not
// change with a version's age, and requests that arrive, fail and slow independently. A Pareto
// tail, timeouts, retries, pauses, clumped errors, bursty traffic, a wandering mix, a cold start and latencies that
// follow a changing load are outside it, and such a scenario has no floor.
func (sc *Scenario) modelled() bool {
	return sc.HeavyTail == 0 && sc.Timeouts == 0 && sc.Retries == 0 && sc.PauseEvery == 0 && sc.ErrClump <= 1 && sc.Burst == 0 && sc.MixWander == 0 && sc.ColdStart <= 1 &&
		(sc.LoadLatency == 0 || sc.SpikeLen == 0 && sc.CyclePeriod == 0)
}

// ConcurrentFloorSeconds is the expected detection time of the ideal test for an exception-rate
// regression in a canary that, instead of knowing the baseline's rate, compares with the
// concurrent baseline cohort: conditioned on each error's arrival, the chance that it came from
// the canary is π₀ = c (the canary's traffic share) when both cohorts fail at the same rate and
// π₁ = c·p₁/(c·p₁ + (1−c)·p₀) under the regression. That conditioning cancels any change both
// cohorts share; its price is that only the errors inform it. Wald's boundary over KL(π₁‖π₀) per
// error, times the errors per second under the regression, gives seconds. ok is false for
// anything but an error regression in a canary.
func ConcurrentFloorSeconds(sc *Scenario, p FloorParams) (secs float64, ok bool) {
	c, m := sc.CanaryShare, orOne(sc.ErrMul)
	if c <= 0 || c >= 1 || m == 1 || sc.Ramp > 0 || sc.Rollout > 0 || orOne(sc.BodyMul) != 1 || orOne(sc.TailMul) != 1 || !sc.modelled() {
		return 0, false
	}
	p0, p1 := baseErr, baseErr*m
	pi0, pi1 := c, c*p1/(c*p1+(1-c)*p0)
	kl := pi1*math.Log(pi1/pi0) + (1-pi1)*math.Log((1-pi1)/(1-pi0))
	errorsPerSec := sc.runRPS(0) * (c*p1 + (1-c)*p0)
	return waldBoundary(p.Alpha, p.Beta) / (kl * errorsPerSec), true
}

// ExceedanceFloorSeconds is the expected detection time of the ideal test for a latency
// regression that sees, of each request, only whether its latency exceeded one of the quantiles
// cfg tests (as the baseline has them), knowing that exceedance rate before (1-q) and after the
// change: Wald's boundary over the binary divergence, with the quantile that gives the largest.
// A quantile counts only if the baseline holds cfg.LatencyMinTailCount requests above it, as the
// detector's must, and the baseline is what the detector's history holds of the old version
// (heldBaseline), not all it served. The floor knows the whole latency distribution; the gap between
// the two is the information an exceedance count cannot carry: of a log-normal slow path that
// got slower, where in the tail each slow request landed. ok is false for anything but a
// latency-only regression at its full size from the deploy on (no Ramp).
func ExceedanceFloorSeconds(sc *Scenario, p FloorParams, cfg detect.Config) (secs, quantile float64, ok bool) {
	bm, tm := orOne(sc.BodyMul), orOne(sc.TailMul)
	if (bm == 1 && tm == 1) || orOne(sc.ErrMul) != 1 || sc.RateMul != 0 || sc.NoDeploy || sc.Ramp > 0 || sc.Rollout > 0 || !sc.modelled() {
		return 0, 0, false
	}
	rate := sc.runRPS(0)
	if sc.CanaryShare > 0 {
		rate *= sc.CanaryShare
	}
	baseline := heldBaseline(sc.runRPS(0), float64(sc.Pre), cfg)
	best := 0.0
	for _, q := range cfg.LatencyQuantiles {
		if baseline*(1-q) < float64(cfg.LatencyMinTailCount) {
			continue
		}
		x := latencyQuantile(q)
		p0, p1 := 1-q, latencyAbove(x, bm, tm)
		if kl := p1*math.Log(p1/p0) + (1-p1)*math.Log((1-p1)/(1-p0)); kl > best {
			best, quantile = kl, q
		}
	}
	if best <= 0 || rate <= 0 {
		return 0, 0, false
	}
	return waldBoundary(p.Alpha, p.Beta) / best / rate, quantile, true
}

// heldBaseline is about how many of the requests an old version served at rate over pre seconds
// its series' history holds at the deploy: the completed epochs it keeps (the last one, or, for
// a sparse series, as many as hold cfg.HistoryMinRequests, at most cfg.HistoryMaxEpochs) and,
// on average, half an epoch in progress.
func heldBaseline(rate, pre float64, cfg detect.Config) float64 {
	epoch := time.Duration(cfg.HistoryEpoch).Seconds()
	perEpoch := rate * epoch
	if epoch <= 0 || perEpoch <= 0 {
		return rate * pre
	}
	kept := 1
	if perEpoch < float64(cfg.HistoryMinRequests) {
		kept = min(int(math.Ceil(float64(cfg.HistoryMinRequests)/perEpoch)), max(cfg.HistoryMaxEpochs, 1))
	}
	return rate * min(pre, (float64(kept)+0.5)*epoch)
}

// latencyAbove is the share of latencies above log-latency x when the body is scaled by bm and
// the slow path by tm.
func latencyAbove(x, bm, tm float64) float64 {
	upper := func(mu, sigma float64) float64 { return math.Erfc((x-mu)/(sigma*math.Sqrt2)) / 2 }
	return (1-tailShare)*upper(math.Log(bodyMedian*bm), bodySigma) + tailShare*upper(math.Log(tailMedian*tm), tailSigma)
}

// latencyQuantile is the unchanged latency distribution's quantile q, as a log-latency.
func latencyQuantile(q float64) float64 {
	lo, hi := -2.0, 10.0
	for range 100 {
		mid := (lo + hi) / 2
		if latencyAbove(mid, 1, 1) > 1-q {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// waldBoundary is the SPRT's expected log likelihood ratio at its stop under H1, neglecting the
// overshoot: W = (1-β)·ln((1-β)/α) + β·ln(β/(1-α)).
func waldBoundary(alpha, beta float64) float64 {
	return (1-beta)*math.Log((1-beta)/alpha) + beta*math.Log(beta/(1-alpha))
}

// cusumDelay is the CUSUM's expected delay, in samples, for a divergence kl per sample when it
// is held to arl0 samples between false alarms (Siegmund's approximations; see FloorSeconds).
func cusumDelay(arl0, kl float64) float64 {
	target := arl0 * kl
	h := math.Log(math.Max(target, 1) + 1)
	for range 50 { // Newton on eʰ - h - 1 = target, increasing and convex for h > 0
		f := math.Exp(h) - h - 1 - target
		h -= f / (math.Exp(h) - 1)
		h = math.Max(h, 1e-9)
	}
	return (h + math.Exp(-h) - 1) / kl
}

// errorKL is the divergence per request of the (exception, invalid_input, ok) outcome when the
// exception rate is multiplied by m.
func errorKL(m float64) float64 {
	p0, p1 := baseErr, baseErr*m
	ok0, ok1 := 1-p0-baseInvalid, 1-p1-baseInvalid
	if m == 1 {
		return 0
	}
	return p1*math.Log(p1/p0) + ok1*math.Log(ok1/ok0)
}

// latencyKL integrates the divergence between the latency mixtures (body × bm, slow path × tm)
// and the unchanged one over log latency.
func latencyKL(bm, tm float64) float64 {
	if bm == 1 && tm == 1 {
		return 0
	}
	dens := func(x, b, t float64) float64 {
		return (1-tailShare)*normPDF(x, math.Log(bodyMedian*b), bodySigma) + tailShare*normPDF(x, math.Log(tailMedian*t), tailSigma)
	}
	const lo, hi, step = -2.0, 10.0, 0.0005
	kl := 0.0
	for x := lo; x < hi; x += step {
		f1, f0 := dens(x, bm, tm), dens(x, 1, 1)
		if f1 > 1e-300 && f0 > 1e-300 {
			kl += f1 * math.Log(f1/f0) * step
		}
	}
	return kl
}

func normPDF(x, mu, sigma float64) float64 {
	z := (x - mu) / sigma
	return math.Exp(-z*z/2) / (sigma * math.Sqrt(2*math.Pi))
}

// meanAgainst compares the detector's mean time to detect with an ideal test's, e seconds: "" when
// the mean is unknown.
func meanAgainst(res ScenarioResult, e float64) string {
	m := cmp.Or(res.TTDMean, res.TTDMeanAtLeast)
	if m == nil {
		return ""
	}
	at := ""
	if res.TTDMean == nil {
		at = "≥ "
	}
	return fmt.Sprintf("; the detector's mean is %s%.2f× that", at, *m/math.Max(e, 1))
}

// WriteTable prints the report as a table.
func (r *ScenarioReport) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tdetected\tTTD p50\tTTD p95\tout p95\tTTD mean\tSPRT floor\tmean/floor\tp95/floor\tArgo fl=0\tArgo fl=3\tFlagger t=5\t")
	for _, res := range r.Results {
		det := fmt.Sprintf("%d/%d", res.Detected, res.Runs)
		if !res.Scenario.Regression {
			det = fmt.Sprintf("%d/%d false", res.Detected, res.Runs)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", res.Scenario.Name, det,
			secs(res.TTDP50), secs(res.TTDP95), secs(res.OutP95), meanCell(res), secs(res.FloorS), ratioMeanCell(res), ratio(res.Ratio),
			rule(res.Argo0, res), rule(res.Argo3, res), rule(res.Flagger, res))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	for _, res := range r.Results {
		if res.ConcurrentFloorS != nil && res.FloorS != nil {
			if _, err := fmt.Fprintf(w, "%s: the ideal test against the concurrent cohort needs %s on average, %.2f× the floor%s\n",
				res.Scenario.Name, secs(res.ConcurrentFloorS), *res.ConcurrentFloorS/math.Max(*res.FloorS, 1), meanAgainst(res, *res.ConcurrentFloorS)); err != nil {
				return err
			}
		}
		if m := res.TTDMean; m != nil && res.Scenario.CPUMul != 0 && !res.Scenario.NoDeploy {
			if _, err := fmt.Fprintf(w, "%s: a new version's or canary's cpu is not compared in its first %.0f s (resource_warmup_buckets: a process uses more as it starts); the mean is %.1f s after that\n",
				res.Scenario.Name, r.CPUWarmupS, *m-r.CPUWarmupS); err != nil {
				return err
			}
		}
		// Only where the floor is above one bucket: below it the ratios are not read.
		if e := res.ExceedanceFloorS; e != nil && res.FloorS != nil && *res.FloorS > 1 {
			line := fmt.Sprintf("%s: the ideal test on the exceedance rate of %s alone needs %s on average, %.2f× the floor",
				res.Scenario.Name, quantileName(res.ExceedanceQuantile), secs(e), *e/math.Max(*res.FloorS, 1))
			if *e > float64(res.Scenario.Post) {
				line += fmt.Sprintf(", more than the %d s watch", res.Scenario.Post)
			} else {
				line += meanAgainst(res, *e)
			}
			if _, err := fmt.Fprintln(w, line); err != nil {
				return err
			}
		}
	}
	// The deploys each scenario got wrong: a quiet one's rollbacks, a regression's misses.
	for _, res := range r.Results {
		var what string
		switch {
		case len(res.FalseRollbacks) > 0:
			what = "rolled back by " + firedBy(res.FalseRollbacks)
		case len(res.Missed) > 0:
			what = fmt.Sprintf("missed %s within the %d s watch", runList(res.Missed), res.Scenario.Post)
		default:
			continue
		}
		if _, err := fmt.Fprintf(w, "%s: %s\n", res.Scenario.Name, what); err != nil {
			return err
		}
	}
	src := "fixed"
	if r.Floor.Measured {
		src = "the A/A false-rollback rate measured here, at least 1/A/A deploys"
	}
	if _, err := fmt.Fprintf(w, "floor: ideal SPRT at alpha %.4g (%s), beta %.2g; without a deploy, CUSUM at %.0f s between false alarms\n",
		r.Floor.Alpha, src, r.Floor.Beta, r.Floor.ARL); err != nil {
		return err
	}
	if hi := r.AARateCI[1]; r.Floor.Measured && hi > r.Floor.Alpha && hi < 1 {
		// Floors after a deploy scale with Wald's boundary, so the rate's uncertainty is a factor.
		if _, err := fmt.Fprintf(w, "       at the upper end of the A/A rate's 95 %% interval (%.4g) the floors after a deploy are %.0f %% lower\n",
			hi, 100*(1-waldBoundary(hi, r.Floor.Beta)/waldBoundary(r.Floor.Alpha, r.Floor.Beta))); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(w, "false rollbacks: %d/%d A/A deploys (%.2f %%, 95 %% CI %.2f-%.2f %%); %.2f %% over all deploys without regression\n"+
		"≥: some runs missed; the mean counts them as detected at the end of the watch, so the true mean and ratio are higher\nseed %d, %s\n",
		r.AAFalseRollbacks, r.AARuns, 100*float64(r.AAFalseRollbacks)/math.Max(1, float64(r.AARuns)),
		100*r.AARateCI[0], 100*r.AARateCI[1], 100*r.FalseRollbackRate, r.Seed, r.Elapsed)
	return err
}

// firedBy says which tests rolled back healthy deploys, most often first: "2 error_rate
// msprt-two-sample (runs 432, 977), 1 latency msprt-exceedance-p50+mann-whitney (run 73)".
func firedBy(fs []FalseRollback) string {
	type group struct {
		what string
		runs []int
	}
	var gs []group
	for _, f := range fs {
		what := f.Metric + " " + f.Test
		i := slices.IndexFunc(gs, func(g group) bool { return g.what == what })
		if i < 0 {
			i = len(gs)
			gs = append(gs, group{what: what})
		}
		gs[i].runs = append(gs[i].runs, f.Run)
	}
	slices.SortStableFunc(gs, func(a, b group) int { return len(b.runs) - len(a.runs) })
	parts := make([]string, len(gs))
	for i, g := range gs {
		parts[i] = fmt.Sprintf("%d %s (%s)", len(g.runs), g.what, runList(g.runs))
	}
	return strings.Join(parts, ", ")
}

// runList names runs, the first five of them: "run 3", "runs 0, 10, 20, 30, 40, …".
func runList(runs []int) string {
	names := make([]string, 0, 6)
	for k, r := range runs {
		if k == 5 {
			names = append(names, "…")
			break
		}
		names = append(names, strconv.Itoa(r))
	}
	word := "runs"
	if len(runs) == 1 {
		word = "run"
	}
	return word + " " + strings.Join(names, ", ")
}

// quantileName renders 0.999 as p99.9.
func quantileName(q float64) string {
	return "p" + strconv.FormatFloat(q*100, 'f', -1, 64)
}

// meanCell is the mean TTD, or with missed runs its lower bound marked "≥".
func meanCell(res ScenarioResult) string {
	if res.TTDMean == nil && res.TTDMeanAtLeast != nil {
		return "≥" + secs(res.TTDMeanAtLeast)
	}
	return secs(res.TTDMean)
}

func ratioMeanCell(res ScenarioResult) string {
	if res.RatioAtLeast {
		return "≥" + ratio(res.RatioMean)
	}
	return ratio(res.RatioMean)
}

func secs(v *float64) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf("%.1fs", *v)
}

func ratio(v *float64) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf("%.1f×", *v)
}

func rule(o RuleOutcome, res ScenarioResult) string {
	s := fmt.Sprintf("%d/%d", o.Rollbacks, res.Runs)
	if res.Scenario.Regression && o.TTDP50 != nil {
		s += " " + secs(o.TTDP50)
	}
	return s
}
