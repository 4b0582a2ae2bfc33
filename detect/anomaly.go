package detect

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"

	"github.com/scalpel-dev/scalpel/schemas"
)

// anomalyID derives the anomaly id from the series, the metric, the category and the first bucket
// of the episode, so the same episode found again in a replay or after a restart dedupes.
func anomalyID(k SeriesKey, metric, category string, episodeStart time.Time) string {
	return schemas.DeriveID("anomaly", k.Service, k.Component, k.Block, k.Version, k.Cohort, metric, category,
		episodeStart.UTC().Format(time.RFC3339Nano))
}

func (d *Detector) baseAnomaly(k SeriesKey, metric, category string, runStart, b int64) schemas.Anomaly {
	from := d.clock.start(runStart)
	var notes []string
	if n := d.tune(k.Service).note; n != "" {
		notes = []string{n}
	}
	return schemas.Anomaly{
		Evidence:   schemas.Evidence{Notes: notes},
		ID:         anomalyID(k, metric, category, from),
		TSDetected: d.clock.end(b),
		Window:     schemas.Window{From: from, To: d.clock.end(b)},
		Service:    k.Service,
		Component:  k.Component,
		Block:      k.Block,
		Version:    k.Version,
		Cohort:     k.Cohort,
		Metric:     metric,
	}
}

// anytimeP is the always-valid p-value of a sequential test: by Ville's inequality, the chance
// that the likelihood ratio ever reached exp(score) under H0 is at most exp(-score).
// The score passed in is net of the run's share of the budget (its threshold above log(1/Alpha)).
func anytimeP(score float64) *float64 {
	p := math.Min(1, math.Exp(-score))
	return &p
}

func ptr(v float64) *float64 { return &v }

// withNotes is ev with notes before its own: what baseAnomaly noted of the series.
func withNotes(ev schemas.Evidence, notes []string) schemas.Evidence {
	if len(notes) > 0 {
		ev.Notes = append(notes[:len(notes):len(notes)], ev.Notes...)
	}
	return ev
}

// evidence is what a firing test t says of itself: its score (the log of its likelihood ratio
// now), the always-valid p-value, and the note "sequential test: …".
//
// A test that fired stays firing, its evidence capped at its threshold, until it recovers, and
// its anomaly can be built later than the crossing: a latency test's waits for the quantile
// itself to move (latencyGate). Its evidence may then have fallen back below the threshold. The
// p-value is that of the crossing (an always-valid p-value is the least the test has reached),
// and the note says the evidence crossed and where it stands now rather than that it crossed
// from where it stands.
func (t *rateTest) evidence(th *thresholds) (score float64, p *float64, note string) {
	score = t.score()
	p = anytimeP(math.Max(score, t.bound) - (t.bound - th.upper))
	what := "sequential test: log likelihood ratio"
	if t.long {
		what = "deploy-long sequential test (never restarted): log likelihood ratio of every request since the version's first"
	}
	if score >= t.bound {
		return score, p, fmt.Sprintf("%s %.2f crossed %.2f (%s)", what, score, t.bound, t.boundNote(th))
	}
	return score, p, fmt.Sprintf("%s crossed %.2f (%s) and stands at %.2f now", what, t.bound, t.boundNote(th), score)
}

// relEffect is (observed - baseline) / baseline, with the baseline floored so that a zero
// baseline gives a large finite effect rather than an infinity JSON cannot carry.
func relEffect(observed, baseline, floor float64) float64 {
	return (observed - baseline) / math.Max(baseline, floor)
}

// errorAnomaly explains error test c of s, which just fired. A non-zero at says it fired within a
// bucket (Detector.testWithinBucket), detected at that time, and its evidence includes the open
// buckets; zero, at the close of s.closed.
//
// paired says a canary's test read the baseline cohort's buckets. With a gate (see
// Config.CanaryConcurrentAlpha) the test itself is against the cohort's history, and the
// anomaly also gives the gate's paired evidence.
func (d *Detector) errorAnomaly(s *series, c int, paired bool, at time.Time) schemas.Anomaly {
	t := &s.errT[c]
	r := s.ref
	gated := s.gate != nil
	paired = paired && !gated
	within := !at.IsZero()
	from, x, n := t.runStart, t.x, t.n
	if t.long { // the deploy-long test: every request since the version's first
		from, x, n = s.firstB, t.cx, t.cn
	}
	a := d.baseAnomaly(s.key, schemas.MetricErrorRate, categoryName(c), from, s.closed.idx)
	if within {
		a.TSDetected, a.Window.To = at, at
	}
	a.ErrorCategory = categoryName(c)
	a.BaselineVersion = r.label
	a.Observed = x / n
	th := d.thresholdsFor(d.th, r)
	score, p, seqNote := t.evidence(&th)
	a.Statistic = score
	a.Score = ptr(score)
	a.PValue = p
	if paired {
		a.Test = "msprt-conditional-binomial"
		a.Baseline = t.xr / math.Max(t.nr, 1)
		a.Samples = schemas.Samples{Observed: int64(t.n), Baseline: int64(t.nr)}
	} else {
		a.Test = "msprt-two-sample"
		if gated {
			a.Test = "msprt-two-sample+conditional-binomial"
		}
		a.Baseline = r.errs[c] / r.n
		a.Samples = schemas.Samples{Observed: int64(n), Baseline: int64(r.n)}
	}
	a.Effect = relEffect(a.Observed, a.Baseline, 1/math.Max(float64(a.Samples.Baseline), 1))
	a.Evidence = withNotes(d.errorEvidence(s, c, within), a.Evidence.Notes)
	if s.aggregate {
		if blk, ok := concentratedBlock(a.Evidence); ok {
			a.Block = blk
			a.Evidence.Notes = append(a.Evidence.Notes, fmt.Sprintf(
				"component-level test; the rise concentrates on block %s (most errors above its own baseline)", blk))
		}
	}
	h0 := fmt.Sprintf("rate at most the baseline's (%g errors in %g requests, pooled with the new version's under H0)", r.errP[c].xb, r.errP[c].nb)
	if t.long {
		h0 = fmt.Sprintf("rate the baseline's (%g errors in %g requests: its rate known only as well as they tell it)", r.errP[c].xb, r.errP[c].nb)
	}
	rho := r.errP[c].r
	if paired {
		h0 = fmt.Sprintf("the baseline cohort's rate over the same buckets (%g errors in %g requests; given both cohorts' errors, the canary's share is binomial)", t.xr, t.nr)
		rho = d.errorRatios(d.tune(s.key.Service))
	}
	a.Evidence.Notes = append(a.Evidence.Notes,
		fmt.Sprintf("%s; H0: %s, H1: ×%.3g, ×%.3g or ×%.3g", seqNote, h0, rho[0], rho[1], rho[2]),
		fmt.Sprintf("%g errors in %g requests since %s", x, n, a.Window.From.Format(time.RFC3339)))
	if phi := float64(r.errPhi[c]); phi > 1 {
		a.Evidence.Notes = append(a.Evidence.Notes, clumpNote("the baseline's", c, phi))
	}
	if gated {
		g := &s.gate.err[c]
		a.Evidence.Notes = append(a.Evidence.Notes, d.checkNote(g,
			fmt.Sprintf("%g errors in %g requests against the canary's %g in %g", g.xr, g.nr, g.x, g.n), "rise"))
	}
	return a
}

// errorEvidence lists errors of category c by block over the series' recent history, and the
// baseline's, scaled to the same number of requests.
// With open, the open buckets count too: a test that fired within a bucket found most of its
// evidence there.
func (d *Detector) errorEvidence(s *series, c int, open bool) schemas.Evidence {
	var ev schemas.Evidence
	var n float64
	ev.Blocks = map[string]int64{}
	// add counts one epoch's or open bucket's requests and errors of category c.
	add := func(reqs float64, errs *[numCategories]float64, blocks map[string]blockTally) {
		n += reqs
		if !s.aggregate {
			ev.Blocks[s.key.Block] += int64(errs[c])
			return
		}
		for blk, t := range blocks {
			ev.Blocks[blk] += int64(t.errs[c])
		}
	}
	for _, h := range []*history{s.prev, s.cur} {
		if h != nil {
			add(h.n, &h.errs, h.blocks)
		}
	}
	var sites []map[string]int64
	if open {
		for i := range s.open {
			b := &s.open[i]
			add(b.n, &b.errs, b.blocks)
			sites = append(sites, b.sites)
		}
	}
	if r := s.ref; r != nil && r.n > 0 {
		scale := n / r.n
		ev.BaselineBlocks = map[string]float64{}
		if !s.aggregate {
			ev.BaselineBlocks[s.key.Block] = round3(r.errs[c] * scale)
		} else {
			for blk, t := range r.blocks {
				ev.BaselineBlocks[blk] = round3(t.errs[c] * scale)
			}
			for blk := range ev.Blocks {
				if _, ok := ev.BaselineBlocks[blk]; !ok {
					ev.BaselineBlocks[blk] = 0
				}
			}
		}
	}
	if s.aggregate {
		ev.Sites = topSites(d.cfg.MaxSites, sites, s.prev, s.cur)
	}
	if len(ev.Blocks) == 0 {
		ev.Blocks = nil
	}
	return ev
}

// concentratedBlock names the block whose errors rose most above its own baseline, when it holds
// at least half of all the excess errors.
func concentratedBlock(ev schemas.Evidence) (string, bool) {
	var best string
	var bestEx, total float64
	for _, blk := range slices.Sorted(mapsKeys(ev.Blocks)) {
		ex := float64(ev.Blocks[blk]) - ev.BaselineBlocks[blk]
		if ex <= 0 {
			continue
		}
		total += ex
		if ex > bestEx {
			best, bestEx = blk, ex
		}
	}
	return best, bestEx > 0 && bestEx >= total/2
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// topSites merges the histories' error sites and keeps the max most frequent (ties by name).
func topSites(maxN int, open []map[string]int64, hs ...*history) map[string]int64 {
	if maxN == 0 {
		return nil
	}
	all := map[string]int64{}
	for _, h := range hs {
		if h == nil {
			continue
		}
		for s, n := range h.sites {
			all[s] += n
		}
	}
	for _, m := range open {
		for s, n := range m {
			all[s] += n
		}
	}
	if len(all) == 0 {
		return nil
	}
	keys := slices.Sorted(mapsKeys(all))
	slices.SortStableFunc(keys, func(a, b string) int { return cmp.Compare(all[b], all[a]) })
	out := make(map[string]int64, min(maxN, len(keys)))
	for _, k := range keys[:min(maxN, len(keys))] {
		out[k] = all[k]
	}
	return out
}

// latencyAnomaly explains latency test q of s, which is firing. A non-zero at says it fired within
// a bucket (Detector.testLatencyWithinBucket), detected at that time, and the observed quantile
// includes the open buckets; zero, at the close of s.closed.
//
// g is a canary's check of q as it let the test fire, nil for any other series.
func (d *Detector) latencyAnomaly(s *series, q int, at time.Time, g *rateTest) schemas.Anomaly {
	t := &s.latT[q]
	r := s.ref
	within := !at.IsZero()
	label := quantileLabel(d.cfg.LatencyQuantiles[q])
	a := d.baseAnomaly(s.key, schemas.MetricLatency, label, t.runStart, s.closed.idx)
	if within {
		a.TSDetected, a.Window.To = at, at
	}
	a.BaselineVersion = r.label
	a.Test = "msprt-exceedance-" + label + "+mann-whitney"
	th := d.thresholdsFor(d.th, r)
	score, p, seqNote := t.evidence(&th)
	a.Statistic = score
	a.Score = ptr(score)
	a.PValue = p
	a.Baseline = round3(r.qv[q])
	obs := s.cur.sk
	if s.prev != nil || within {
		obs = s.cur.sk.Copy()
		if s.prev != nil {
			s.prev.mergeSketchInto(d.sk, obs)
		}
		if within {
			for i := range s.open {
				if sk := s.open[i].sk; sk != nil {
					d.sk.merge(obs, sk)
				}
			}
		}
	}
	if v, err := obs.GetValueAtQuantile(d.cfg.LatencyQuantiles[q]); err == nil {
		a.Observed = round3(v)
	}
	a.Effect = relEffect(a.Observed, a.Baseline, 1e-3)
	a.Samples = schemas.Samples{Observed: int64(t.n), Baseline: int64(r.sk.GetCount())}
	a.Evidence.Notes = append(a.Evidence.Notes,
		fmt.Sprintf("%s: %.4g of %g requests exceeded the baseline %s of %.4g ms (baseline rate within the tolerance %.4g, H1 ×%.3g, ×%.3g or ×%.3g)",
			label, t.x/t.n, t.n, label, r.qv[q], r.latP[q].rate(), r.latP[q].r[0], r.latP[q].r[1], r.latP[q].r[2]),
		seqNote)
	if r.composite[q] && t.bank != nil {
		a.Evidence.Notes = append(a.Evidence.Notes, fmt.Sprintf("H1 also as a change of the tail alone (the requests below %s as the baseline's), against any slowdown within the tolerance: log likelihood ratio %.2f of %.2f",
			label, mixScore(&t.bank.llr), score))
	}
	if ep := &r.excess[q]; ep.on && t.bank != nil {
		var above [maxQuantiles]float64
		var ex excessCounts
		c := d.excessCapBins()
		aboveEachExcess(obs, &r.thr, len(d.cfg.LatencyQuantiles), 0, &above, &ex, c)
		a.Evidence.Notes = append(a.Evidence.Notes, ep.note(label, d.sk.logGamma, c, ex[q].m, above[q]))
	}
	if phi, drift := d.refLatPhi(s, q); phi > 1 {
		exSecond := 0.0
		if r.excess[q].on && t.bank != nil {
			exSecond = max(1, float64(r.latPhi[q]))
		}
		a.Evidence.Notes = append(a.Evidence.Notes, latencyDispersionNote("the baseline's", label, phi, drift, exSecond))
	}
	if refExcursions(s) {
		a.Evidence.Notes = d.excursionNotes(s, "the baseline's", refExcursion(s), a.Evidence.Notes)
	}
	if g != nil {
		a.Evidence.Notes = append(a.Evidence.Notes, d.checkNote(g,
			fmt.Sprintf("%g of %g requests above the baseline %s, against the canary's %g of %g", g.xr, g.nr, label, g.x, g.n), "slowdown"))
	}
	if note := d.loadNote(r.usual, s); note != "" {
		a.Evidence.Notes = append(a.Evidence.Notes, note)
	}
	a.Evidence.Notes = append(a.Evidence.Notes, shiftNote(d.sk, obs, r.sk)...)
	return a
}

// checkNote says how a canary's concurrent check g let its test fire: the cohort's and the
// canary's counts over the same buckets, and the check's evidence. what names the change.
func (d *Detector) checkNote(g *rateTest, counts, what string) string {
	return fmt.Sprintf("concurrent check: against the baseline cohort over the same buckets (%s), "+
		"the paired test crossed its threshold %.2f (canary_concurrent_alpha %g) and has not recovered (log likelihood ratio now %.2f): "+
		"the %s is the canary's own, not one both cohorts share",
		counts, g.bound, d.cfg.CanaryConcurrentAlpha, g.score(), what)
}

// shiftNote explains the whole-distribution shift with Mann-Whitney and Hodges-Lehmann.
func shiftNote(sk *sketches, obs, base *ddsketch.DDSketch) []string {
	mw, ok := sk.mannWhitney(obs, base)
	if !ok {
		return nil
	}
	return []string{fmt.Sprintf("mann-whitney U=%.0f z=%.2f p=%.3g (n=%g, m=%g); hodges-lehmann shift ×%.3f, 95%% CI [×%.3f, ×%.3f]",
		mw.U, mw.Z, mw.P, mw.N, mw.M, mw.Ratio, mw.RatioLo, mw.RatioHi)}
}

func (d *Detector) cusumAnomaly(k SeriesKey, metric string, c *cusum, observed, baseline float64, b int64, test, baseLabel string) schemas.Anomaly {
	a := d.baseAnomaly(k, metric, "", c.start, b)
	a.Test = test
	a.BaselineVersion = baseLabel
	a.Observed = round3(observed)
	a.Baseline = round3(baseline)
	a.Effect = relEffect(observed, baseline, 1e-9)
	a.Statistic = c.s
	a.Score = ptr(c.s)
	a.Samples = schemas.Samples{Observed: b - c.start + 1}
	a.Evidence.Notes = append(a.Evidence.Notes, fmt.Sprintf("CUSUM %.2f reached h = %.2f over %d buckets",
		c.s, d.cfg.CUSUMThreshold, b-c.start+1))
	return a
}

func round3(v float64) float64 {
	r, err := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 6, 64), 64)
	if err != nil {
		return v
	}
	return r
}

// compareAnomalies orders the anomalies found at one closed bucket index. Within a bucket of one component and
// version, those that name a block come first, and error rates before latency before resources:
// decide settles an incident's granularity on its first anomaly, and the most specific evidence
// of the burst should be the one it sees first.
func compareAnomalies(a, b schemas.Anomaly) int {
	return cmp.Or(a.TSDetected.Compare(b.TSDetected),
		cmp.Compare(a.Service, b.Service), cmp.Compare(a.Component, b.Component),
		cmp.Compare(a.Version, b.Version), cmp.Compare(a.Cohort, b.Cohort),
		cmp.Compare(blockRank(a), blockRank(b)), cmp.Compare(metricRank(a.Metric), metricRank(b.Metric)),
		cmp.Compare(a.Block, b.Block), cmp.Compare(a.Metric, b.Metric),
		cmp.Compare(a.ErrorCategory, b.ErrorCategory), cmp.Compare(a.Status, b.Status), cmp.Compare(a.ID, b.ID))
}

func blockRank(a schemas.Anomaly) int {
	if a.Block != "" {
		return 0
	}
	return 1
}

func metricRank(m string) int {
	switch m {
	case schemas.MetricErrorRate:
		return 0
	case schemas.MetricLatency:
		return 1
	case schemas.MetricThroughput:
		return 2
	}
	return 3
}

// latencyDispersionNote says how whose latencies above quantile label varied, phi times as much
// as independent requests' (latencyDispersion): per bucket, as a process's stalls make them,
// or, drift, between epochs, as a wandering traffic mix makes them (driftDispersion); and that
// the test's evidence was divided by that. A drift does not divide the evidence of the excess
// (excessParams): exSecond, for a test that read the excess, is the per-second dispersion that
// does (at least 1); 0 for any other test.
func latencyDispersionNote(whose, label string, phi float64, drift bool, exSecond float64) string {
	if !drift {
		return fmt.Sprintf("%s latencies above its %s came together, as a process's stalls slow every request in flight: their counts per bucket varied %.3g times as much as independent requests' would, and the test's evidence is divided by that",
			whose, label, phi)
	}
	s := fmt.Sprintf("%s share of latencies above its %s moved between epochs as a traffic mix that wanders moves it (heavy requests' share drifting over minutes): its counts per epoch varied %.3g times as much as independent requests' would, and ",
		whose, label, phi)
	if exSecond == 0 {
		return s + "the test's evidence is divided by that, so a change must stand out against the mix's own wander"
	}
	s += "the evidence of the new version's count is divided by that, so a change must stand out against the mix's own wander; the evidence of how far above the threshold its requests landed is not, since a wander moves how many requests exceed the threshold, not where they land"
	if exSecond > 1 {
		s += fmt.Sprintf(" (that is divided by %.3g, how much the counts varied per bucket)", exSecond)
	}
	return s
}

// excursionNote says that whose latencies made excursions of up to l buckets, and that a test
// sets aside the buckets of one no longer (see excursion.go).
func (d *Detector) excursionNote(whose string, l uint8) string {
	return fmt.Sprintf("%s latencies stood well above their usual for up to %s at a time (a batch job, a cache refresh: what every version does): the buckets of an excursion no longer than that were set aside as inconclusive, so this one outlasted it",
		whose, shortDuration(time.Duration(int64(l)*d.clock.width)))
}

// clumpNote says that whose errors of category c came in clumps, varying phi times as much per
// bucket as independent failures (errorDispersion), and that the test's evidence was divided by
// that.
func clumpNote(whose string, c int, phi float64) string {
	return fmt.Sprintf("%s %s errors came in clumps: their counts per bucket varied %.3g times as much as independent failures would, and the test's evidence is divided by that",
		whose, categoryName(c), phi)
}
