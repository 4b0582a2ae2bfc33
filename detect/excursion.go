package detect

import "math"

// Excursions: runs of buckets in which a series' latencies stood well above their usual.
//
// Why: a batch job or a cache refresh that doubles every latency for 10 s every 5 min is
// something the service always does, and every version does it. In its first seconds it is what
// a regression of every latency ×2 is, and the targets ask for that in 5 s, so no test of the
// new version's requests alone tells them apart: 10 of 40 healthy deploys were rolled back on
// the first slow window after them, and the own profile paged at every window of 40 of 40
// series no deploy touched. The latency dispersion (latencyDispersion) does not cover it: it
// measures how a second's requests vary together, and ten slow seconds are ten seconds'
// evidence. What does tell them apart is the window's length: the baseline's own latencies
// rose that far for up to 10 s at a time, and a regression lasts. So each series measures the
// longest excursion its latencies made in its last two epochs, and a latency test against a
// baseline that made excursions (of at least minExcursion buckets) sets aside the buckets of an
// excursion of the new version no longer than the longest of the baseline's: they are
// inconclusive, as an empty bucket is. An excursion that lasts longer is a regression, and its
// test counts from the bucket after the baseline's longest, which is then that much later.
//
// An excursion starts with a bucket whose latencies above some tested quantile's threshold
// stand excursionStartZ standard deviations above their expected count, and goes on while
// each bucket stands excursionGoZ above it. Only quantiles that expect at least
// excursionMinExpected latencies above them in the bucket count: at fewer, one or two slow
// requests make a z of 4, and a quiet series' excursions would be its noise. Independent
// latencies start an excursion in about one bucket in 30 000 at p50 and p90 together, and
// carry one on in one in 20, so a baseline of two epochs (600 buckets) shows an excursion
// of three buckets about once in a million: the tests of a series without excursions are as
// they were.
const (
	excursionStartZ      = 4.0
	excursionGoZ         = 2.0
	excursionMinExpected = 2.0
	// excursionMinTail is how many of a first epoch's latencies must lie above a quantile's
	// threshold before its excursions are measured against it (provisionalThresholds): the
	// threshold's share above is then known within about a tenth.
	excursionMinTail = 100
	// minExcursion is the shortest longest-excursion of a baseline whose length its tests
	// respect (buckets). Shorter ones are a stall's (latencyDispersion covers those) or chance.
	minExcursion = 3
)

// excursionStep is how long the excursion through a bucket is, given run, the length of the
// one through the bucket before it (0: none), and x, the bucket's n latencies above each
// threshold of the quantiles on says (a bit per quantile): run+1 if it goes on, 1 if one starts,
// 0 if none. Each quantile's expected share above its threshold is 1 − its level, as both a
// series' own thresholds (latThr) and a reference's are set at the quantile.
func (d *Detector) excursionStep(run uint8, x *[maxQuantiles]float64, n float64, on uint8) uint8 {
	z := math.Inf(-1)
	for q, qq := range d.cfg.LatencyQuantiles {
		e := n * (1 - qq)
		if on&(1<<q) == 0 || e < excursionMinExpected {
			continue
		}
		z = math.Max(z, (x[q]-e)/math.Sqrt(e*qq))
	}
	switch {
	case run > 0 && z >= excursionGoZ:
		return min(run, math.MaxUint8-1) + 1
	case run == 0 && z >= excursionStartZ:
		return 1
	}
	return 0
}

// addExcursion moves s's own excursion (against its last completed epoch's thresholds) on by a
// closed bucket whose n latencies stood x above them; an excursion that ended counts towards
// the longest of the epoch. It runs while s fires too: a series whose own profile fired on its
// first slow window must still learn that the window is usual.
func (d *Detector) addExcursion(s *series, x *[maxQuantiles]float64, n float64) {
	run := d.excursionStep(s.excRun, x, n, s.excOn)
	if run == 0 && s.excRun > 0 {
		s.excMax[0] = max(s.excMax[0], s.excRun)
	}
	s.excRun = run
}

// ownExcursion is the longest excursion s's latencies made and ended in its last two epochs,
// at most LatencyExcursionMax: what its own profile's latency tests respect (0: none to).
func (d *Detector) ownExcursion(s *series) uint8 {
	return d.excursionCap(max(s.excMax[0], s.excMax[1]))
}

// frozenExcursion is what a reference frozen from src respects: the longest excursion of its
// last two epochs, including one still under way.
func (d *Detector) frozenExcursion(src *series) uint8 {
	return d.excursionCap(max(src.excMax[0], src.excMax[1], src.excRun))
}

// excursionCap is l, at most LatencyExcursionMax, and 0 when it is shorter than minExcursion.
func (d *Detector) excursionCap(l uint8) uint8 {
	if l < minExcursion {
		return 0
	}
	return min(l, d.maxExcursion)
}

// refExcursion is the longest excursion of s's baseline its latency tests respect: none for a
// canary compared with its cohort as it serves, whose concurrent checks already tell what both
// cohorts do from what the canary does.
func refExcursion(s *series) uint8 {
	if r := s.ref; r != nil && r.kind == refPreviousVersion && s.gate == nil {
		return r.excursion
	}
	return 0
}

// setAside reports whether a bucket whose excursion has lasted run buckets is inconclusive to a
// latency test whose baseline's longest excursion was longest: it is no longer than that.
func setAside(longest, run uint8) bool {
	return longest > 0 && run > 0 && run <= longest
}

// refQuantiles is the bit set of the quantiles r tests.
func (r *reference) refQuantiles() uint8 {
	var on uint8
	for q, ok := range r.latQ {
		if ok {
			on |= 1 << q
		}
	}
	return on
}
