package detect

import (
	"math"
	"slices"
)

// Excursions: runs of buckets in which a series' latencies, or a service's, stood well above
// their usual.
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
// longest excursion its latencies made within excursionMemory epochs, and a latency test
// against a baseline that made excursions (of at least minExcursion buckets) sets aside the
// buckets of an excursion of the new version no longer than the longest of the baseline's: they
// are inconclusive, as an empty bucket is. An excursion that lasts longer is a regression, and
// its test counts from the bucket after the baseline's longest, which is then that much later.
//
// A batch job slows every component of its processes at once, so each service measures its
// excursions too, over all its components' latencies (serviceExcursion), and a bucket of one of
// the service's no longer than its longest is set aside as well. One component at 20 req/s, a
// new version in the first minutes of a rolling update, or one of sixteen endpoints deployed
// together is too small to tell a slow second from a chance one; the service is not. A
// service's excursions are known once every series of it closed the bucket, so the latency
// tests of a service that made them read its buckets only as they close.
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
	// excursionReach and excursionMinScaled scale a few requests' deviation (excursionDev).
	excursionReach     = 0.9
	excursionMinScaled = 4.0
	// excursionMinTail is how many of a first epoch's latencies must lie above a quantile's
	// threshold before its excursions are measured against it (provisionalThresholds): the
	// threshold's share above is then known within about a tenth.
	excursionMinTail = 100
	// minExcursion is the shortest longest-excursion of a baseline whose length its tests
	// respect (buckets). Shorter ones are a stall's (latencyDispersion covers those) or chance.
	minExcursion = 3
)

// excursions follows the excursions of one stream of buckets: a series' latencies against its
// own thresholds, or a service's, over its components' series.
type excursions struct {
	run uint8 // buckets the excursion under way has lasted through the last closed bucket (0: none)
	// longest is, per epoch, the longest excursion that ended in it: the current epoch's first,
	// then the excursionMemory − 1 completed before it. Exactly those epochs, so a replay that
	// starts history_max_epochs + 1 epochs back (35 min by default) finds the same.
	longest [excursionMemory]uint8
}

// serviceExcursions are a service's excursions (serviceExcursion): exc, in epoch epoch, and,
// for the bucket being closed, per tested quantile, its components' latencies above their own
// thresholds less those expected (dev), and those expected (exp).
type serviceExcursions struct {
	exc      excursions
	epoch    int64
	dev, exp [maxQuantiles]float32
}

// excursionMemory is how many epochs an excursion is remembered for, the current one included
// (30 min at the default epoch): a batch job every 10 or 15 minutes leaves epochs without a
// window between two.
const excursionMemory = 6

// step moves e on by a bucket whose latencies stood z standard deviations above their expected
// count (the largest over the quantiles that count): the excursion goes on (z ≥ excursionGoZ),
// one starts (z ≥ excursionStartZ), or none is under way; one that ended counts towards the
// epoch's longest.
func (e *excursions) step(z float64) {
	run := nextRun(e.run, z)
	if run == 0 && e.run > 0 {
		e.longest[0] = max(e.longest[0], e.run)
	}
	e.run = run
}

// nextRun is how long an excursion that had lasted run buckets (0: none under way) has lasted
// after a bucket whose latencies stood z standard deviations above their expected count. A
// bucket too small to tell (z NaN, see excursionDev) leaves it as it was: at 10 req/s a second
// of eight requests neither ends a batch job's window nor starts one.
func nextRun(run uint8, z float64) uint8 {
	switch {
	case math.IsNaN(z):
		return run
	case run > 0 && z >= excursionGoZ:
		return min(run, math.MaxUint8-1) + 1
	case run == 0 && z >= excursionStartZ:
		return 1
	}
	return 0
}

// rotate ends an epoch: the oldest remembered is forgotten.
func (e *excursions) rotate() {
	copy(e.longest[1:], e.longest[:excursionMemory-1])
	e.longest[0] = 0
}

// ended is the longest excursion that ended within memory.
func (e *excursions) ended() uint8 { return slices.Max(e.longest[:]) }

func (e *excursions) xfer(c *codec) {
	c.u8(&e.run)
	for i := range e.longest {
		c.u8(&e.longest[i])
	}
}

// excursionZ is how many standard deviations above their expected count a bucket's n latencies
// above each threshold of the quantiles on says (a bit per quantile) stood: the largest over
// those it can tell (excursionDev), NaN when it can tell none; going says an excursion is
// under way. Each quantile's expected share above its threshold is 1 − its level, as both a
// series' own thresholds (latThr) and a reference's are set at the quantile.
func (d *Detector) excursionZ(going bool, x *[maxQuantiles]float64, n float64, on uint8) float64 {
	z := math.NaN()
	for q, qq := range d.cfg.LatencyQuantiles {
		if on&(1<<q) != 0 {
			z = maxKnown(z, excursionDev(going, x[q]-n*(1-qq), n*(1-qq), qq))
		}
	}
	return z
}

// maxKnown is the larger of a and b, either of which may be NaN (unknown).
func maxKnown(a, b float64) float64 {
	if math.IsNaN(a) || b > a {
		return b
	}
	return a
}

// excursionDev is dev, latencies above a threshold less the e expected, in standard deviations
// (binomial, the share above being 1 − qq), or NaN when e is below excursionMinExpected: one
// or two slow requests would make a z of 4.
//
// A bucket of few requests cannot stand excursionStartZ out: at 10 req/s every latency above
// the median is 3.2 standard deviations. Where the most a bucket can stand out (all its
// latencies above) falls short of excursionStartZ/excursionReach, the deviation is scaled up so
// that a start needs excursionReach of that most, and a going on as much less as it does
// elsewhere; such a bucket starts nothing below excursionMinScaled expected (NaN unless going).
// At 10 req/s an excursion at p50 starts with every latency of a second of at least eight
// above the median (one such second in 256 to 1 024 of independent ones) and goes on with
// eight of ten (one in 18): a baseline of 600 buckets shows one of three about once in 250.
func excursionDev(going bool, dev, e, qq float64) float64 {
	if e < excursionMinExpected {
		return math.NaN()
	}
	z := dev / math.Sqrt(e*qq)
	if most := math.Sqrt(e*qq) / (1 - qq); most*excursionReach < excursionStartZ {
		if e < excursionMinScaled && !going {
			return math.NaN()
		}
		z *= excursionStartZ / (most * excursionReach)
	}
	return z
}

// addExcursion moves s's own excursion (against its thresholds latThr) on by a closed bucket b
// whose latencies stood x above them, and adds them to its service's bucket when s is a
// component's aggregate (a block's requests are its component's too). It runs while s fires
// too: a series whose own profile fired on its first slow window must still learn that the
// window is usual.
func (d *Detector) addExcursion(s *series, b *bucket, x *[maxQuantiles]float64) {
	s.exc.step(d.excursionZ(s.exc.run > 0, x, b.latN, s.excOn))
	d.addServiceExcursion(s, b, x, s.excOn)
}

// addServiceExcursion adds closed bucket b of s, whose latencies stood x above the thresholds
// of the quantiles on says, to its service's bucket (serviceExcursion), when s is a component's
// aggregate (a block's requests are its component's too).
func (d *Detector) addServiceExcursion(s *series, b *bucket, x *[maxQuantiles]float64, on uint8) {
	svc := s.svc
	if !s.aggregate || svc == nil || svc.accB != b.idx {
		return
	}
	se := svc.exc
	if se == nil {
		se = &serviceExcursions{epoch: d.epochOf(b.idx)}
		svc.exc = se
	}
	for q, qq := range d.cfg.LatencyQuantiles {
		if on&(1<<q) != 0 {
			e := b.latN * (1 - qq)
			se.dev[q] += float32(x[q] - e)
			se.exp[q] += float32(e)
		}
	}
}

// serviceExcursion moves the excursion of service line ln on by bucket b, once every series of
// the service closed it (addExcursion): its latencies above their series' own thresholds, over
// all its components, less those expected, in standard deviations. A batch job slows every
// component of the processes at once, and read over all of them it stands out where one
// component at 20 req/s, or a new version in the first minutes of a rolling update, is too
// small to tell a slow second from a chance one.
func (d *Detector) serviceExcursion(ln *line, b int64) {
	se := ln.exc
	if se == nil {
		return // none of its series has thresholds yet
	}
	if e := d.epochOf(b); e > se.epoch {
		for range min((e-se.epoch)/d.epochBuckets, excursionMemory) {
			se.exc.rotate()
		}
		se.epoch = e
	}
	z := math.NaN()
	for q, qq := range d.cfg.LatencyQuantiles {
		z = maxKnown(z, excursionDev(se.exc.run > 0, float64(se.dev[q]), float64(se.exp[q]), qq))
	}
	se.exc.step(z)
	se.dev, se.exp = [maxQuantiles]float32{}, [maxQuantiles]float32{}
}

// ownExcursion is the longest excursion s's latencies made and ended within memory, at most
// LatencyExcursionMax: what its own profile's latency tests respect (0: none to).
func (d *Detector) ownExcursion(s *series) uint8 {
	return d.excursionCap(s, s.exc.ended())
}

// frozenExcursion is what a reference frozen from src respects: the longest excursion within
// memory, including one still under way.
func (d *Detector) frozenExcursion(src *series) uint8 {
	return d.excursionCap(src, max(src.exc.ended(), src.exc.run))
}

// serviceAside reports whether s's bucket that closed last belongs to an excursion of its
// service no longer than the service's longest that ended within memory.
func (d *Detector) serviceAside(s *series) bool {
	return s.svc != nil && s.svc.exc != nil && setAside(d.serviceExcursionLen(s), s.svc.exc.exc.run)
}

// serviceExcursionLen is the longest excursion s's service made and ended within memory, at
// most LatencyExcursionMax (0: none its tests respect).
func (d *Detector) serviceExcursionLen(s *series) uint8 {
	if s.svc == nil || s.svc.exc == nil {
		return 0
	}
	return d.excursionCap(s, s.svc.exc.exc.ended())
}

// serviceMadeExcursions reports whether s's service made excursions its tests respect: its
// latency tests then run only as its buckets close, when the service's excursion through the
// bucket is known (serviceExcursion).
func (d *Detector) serviceMadeExcursions(s *series) bool {
	return d.serviceExcursionLen(s) > 0
}

// excursionNotes are what an anomaly of s says of the excursions its test respected: l, its
// baseline's longest (0: none), and its service's when longer.
func (d *Detector) excursionNotes(s *series, whose string, l uint8, notes []string) []string {
	if l > 0 {
		notes = append(notes, d.excursionNote(whose, l))
	}
	if ls := d.serviceExcursionLen(s); ls > l {
		notes = append(notes, d.excursionNote("its service's (over all its components)", ls))
	}
	return notes
}

// excursionCap is l, at most s's service's LatencyExcursionMax, and 0 when it is shorter than
// minExcursion.
func (d *Detector) excursionCap(s *series, l uint8) uint8 {
	if l < minExcursion {
		return 0
	}
	return min(l, d.tune(s.key.Service).maxExcursion)
}

// refExcursion is the longest excursion of s's baseline its latency tests respect (0: none, or
// not respected; see refExcursions).
func refExcursion(s *series) uint8 {
	if refExcursions(s) {
		return s.ref.excursion
	}
	return 0
}

// refExcursions reports whether s's latency tests against its reference respect excursions:
// against a previous version's history, not a canary's against its cohort as it serves, whose
// concurrent checks already tell what both cohorts do from what the canary does.
func refExcursions(s *series) bool {
	r := s.ref
	return r != nil && r.kind == refPreviousVersion && s.gate == nil
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
