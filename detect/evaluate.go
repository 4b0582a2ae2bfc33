package detect

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// test runs every test of s on its just-closed bucket and appends the anomalies that opened an
// episode.
func (d *Detector) test(s *series, out []schemas.Anomaly) []schemas.Anomaly {
	b := &s.closed
	r := s.ref

	var cl *line // the line a canary is compared with as it serves
	if r != nil && r.kind == refBaselineCohort {
		cl = d.cohortLine(s)
	}
	if s.aggregate {
		out = d.testResources(s, cl, out)
	}

	// The own profile runs next to any version baseline: a regression no deploy explains (a
	// dependency, a flag) shows up there, whatever the series was deployed against.
	out = d.testOwn(s, out)
	if r == nil || !r.ok || !d.watching(s, b.idx) {
		return out // no baseline, or too small a one: inconclusive; or the deploy's watch is over
	}
	var pb *bucket // the concurrent cohort's bucket of the same index, for a canary
	if cl != nil {
		if c := &cl.current.closed; c.idx == b.idx && c.n > 0 {
			pb = c
		}
	}
	tn := d.tune(s.key.Service)
	rho := d.errorRatios(tn)
	eth := d.errorThresholds(r)
	checked := s.gate != nil && d.cohortServing(cl, b.idx)
	for c := range s.errT {
		if !tn.tested[c] {
			continue
		}
		t := &s.errT[c]
		long := t.long // an episode the deploy-long test opened ends on its own evidence
		var v rateVerdict
		x, n := b.unused(c)
		th := eth
		th.temper = r.temper(c)
		switch {
		case pb != nil && s.gate != nil:
			xr, nr := b.unusedRef(c, pb)
			v = d.updateGated(s, c, x, n, xr, nr, b.idx, t, &s.gate.err[c])
		case pb != nil:
			xr, nr := b.unusedRef(c, pb)
			v = t.updatePaired(1, rho, x, n, xr, nr, b.idx, &th)
		default:
			// A bucket the cohort served nothing in: against its history. A canary's gate
			// still decides whether the test may fire.
			th.hold = checked && !s.gate.err[c].firing
			v = t.updateBaseline(&r.errP[c], x, n, b.idx, &th)
		}
		switch v {
		case verdictFired:
			out = d.open(s, c, d.errorAnomaly(s, c, pb != nil, time.Time{}), out)
		case verdictRecovered:
			msg := fmt.Sprintf("%s error rate back within baseline for %s", categoryName(c), d.quietFor(int(t.quietRun)))
			if long {
				msg = fmt.Sprintf("%s error rate since the version's first request back within baseline: the deploy-long test's evidence fell log(1/beta) below its threshold", categoryName(c))
			}
			out = d.resolve(s, c, b.idx, msg, out)
		}
	}
	if r.latOK && b.latN > 0 {
		// A canary's latency checks read the cohort's bucket of the same index: its latencies
		// above the canary's thresholds, against the canary's own. Both sides serve at the same
		// load, so neither is read at it (readShift).
		var cx, gx [maxQuantiles]float64
		cn := 0.0
		if s.gate != nil && pb != nil && pb.sk != nil && pb.latN > 0 {
			cn = pb.latN
			aboveEach(pb.sk, &r.thr, len(d.cfg.LatencyQuantiles), 0, &cx)
			if gx = s.exceed; d.readShift(s, b, r, true) > 0 {
				aboveEach(b.sk, &r.thr, len(d.cfg.LatencyQuantiles), 0, &gx)
			}
		}
		gth := d.gateThresholds(d.th)
		var ex excessCounts
		if r.excessOn() {
			var above [maxQuantiles]float64
			aboveEachExcess(b.sk, &r.thr, len(d.cfg.LatencyQuantiles), d.readShift(s, b, r, true), &above, &ex, d.excessCapBins())
		}
		anyFiring := false
		// A bucket of an excursion no longer than the baseline's longest is inconclusive (see
		// excursion.go).
		aside := setAside(refExcursion(s), s.excRef) || refExcursions(s) && d.serviceAside(s)
		for q := range d.cfg.LatencyQuantiles {
			if !r.latQ[q] || aside {
				anyFiring = anyFiring || s.latT[q].firing
				continue
			}
			t := &s.latT[q]
			th := d.latencyThresholds(s, q)
			var g *rateTest
			if s.gate != nil {
				g = &s.gate.lat[q]
				if cn > 0 {
					rho0, rho := d.latencyGateRatios(r, q)
					gq := gth
					gq.temper = th.temper
					g.updatePaired(rho0, rho, gx[q], b.latN, cx[q], cn, b.idx, &gq)
				}
				th.hold = checked && !g.firing
			}
			var v rateVerdict
			if r.composite[q] {
				n, x, xb := b.unusedLatency(q, b.latN, s.exceed[q], s.exceed[r.bodyQ])
				body := bodyEvidence(r, q, n, x, xb)
				ec := b.unusedExcess(q, ex[q])
				v = t.updateComposite(&r.latP[q], &r.latS[q], &body, &r.excess[q], ec, x, n, b.idx, &th)
			} else {
				n, x, _ := b.unusedLatency(q, b.latN, s.exceed[q], 0)
				v = t.updateBaseline(&r.latP[q], x, n, b.idx, &th)
			}
			if (v == verdictFired || t.firing) && !s.latEp {
				// The exceedance test fires on a shifted distribution, however small the shift: a
				// tight distribution (a fixed amount of I/O) doubles its exceedances for a few per
				// cent of latency. The quantile itself must have moved by a clear share of the
				// minimum effect before it is called a regression; until then the test keeps
				// watching, and the episode opens when the shift grows.
				if a := d.latencyAnomaly(s, q, time.Time{}, g); a.Effect >= latencyGate(d.tune(s.key.Service), s.ref.kind) {
					s.latEp = true // one anomaly per latency episode, from the quantile that fired first
					out = d.open(s, epLatency, a, out)
				}
			}
			anyFiring = anyFiring || t.firing
		}
		if s.latEp && !anyFiring {
			s.latEp = false
			out = d.resolve(s, epLatency, b.idx, "latency back within baseline", out)
		}
	}
	return out
}

// testWithinBucket runs the error tests of s over its open buckets, as they stand after a failed
// request (errs marks the categories it failed in), and opens an episode for each test they carry
// over its threshold. The test then counts what it read of each bucket (bucketUse), and the
// bucket's close only the rest.
//
// Why: a bucket's tests run when it closes, at its end plus AllowedLateness; a gross regression
// has often crossed the threshold early in a bucket, and its anomaly waited up to a bucket and
// the lateness for nothing. The sequential test may stop at any request: its likelihood ratio is
// a martingale request by request (H0's rate is predicted before each bucket's requests), so
// reading it after every failure keeps the same bound by Ville's inequality. The tests see the
// same state before every event whatever the batching (Observe closes buckets as the watermark
// moves), so what fires, and when, depends only on the events.
//
// A canary's tests compare it with the baseline cohort's open bucket of the same index as it
// stands: given both sides' errors, which side each fell on is binomial with the shares of the
// requests that have arrived, whichever those are, so a read of part of a bucket is as exact as
// the close's. A bucket the cohort has no requests in yet is left to the close, which reads it
// against the cohort's history if the cohort served none.
//
// A component aggregate whose requests name blocks or error sites waits for the close: its
// anomaly must carry enough errors for decide to name the block, and the block's own series,
// which names it outright, is heard first this way (it fires within the bucket; the aggregate
// keeps the timing it always had).
func (d *Detector) testWithinBucket(s *series, errs *[numCategories]float64) {
	r := s.ref
	if r == nil || !r.ok || !d.withinBucket(s) {
		return
	}
	var cohort *series // the concurrent cohort's current version, for a canary
	if r.kind == refBaselineCohort {
		l := d.cohortLine(s)
		if l == nil {
			return
		}
		cohort = l.current
	}
	eth := d.errorThresholds(r)
	tn := d.tune(s.key.Service)
	rho := d.errorRatios(tn)
	for c := range s.errT {
		if errs[c] <= 0 || !tn.tested[c] || s.errT[c].firing {
			continue
		}
		trial := s.errT[c] // an error test has no second bank: a copy is independent
		var gate rateTest  // and the canary's gate, read over the same buckets
		if s.gate != nil {
			gate = s.gate.err[c]
		}
		var tr trialRun
		th := eth
		th.temper = r.temper(c)
		for i := range s.open {
			b := &s.open[i]
			x, n := b.unused(c)
			if cohort == nil {
				tr.after(b.idx, trial.updateBaseline(&r.errP[c], x, n, b.idx, &th))
			} else if pb := cohort.openBucket(b.idx); pb != nil {
				xr, nr := b.unusedRef(c, pb)
				if s.gate != nil {
					tr.after(b.idx, d.updateGated(s, c, x, n, xr, nr, b.idx, &trial, &gate))
				} else {
					tr.after(b.idx, trial.updatePaired(1, rho, x, n, xr, nr, b.idx, &th))
				}
			}
		}
		if !tr.fired {
			continue
		}
		s.errT[c] = trial
		if s.gate != nil {
			s.gate.err[c] = gate
		}
		for i := range s.open {
			b := &s.open[i]
			if cohort == nil {
				b.use(c)
			} else if pb := cohort.openBucket(b.idx); pb != nil { // the buckets read above
				b.use(c)
				b.useRef(c, pb)
			}
		}
		d.out = d.open(s, c, d.errorAnomaly(s, c, cohort != nil, d.firedAt(tr.at)), d.out)
	}
}

// updateGated adds a bucket to a canary's error test t of category c and to its gate g (see
// Config.CanaryConcurrentAlpha): the canary had x errors in n requests, the baseline cohort xr in
// nr over the same bucket. g, the paired test at CanaryConcurrentAlpha, goes first; t, against
// the cohort's history at Alpha, may fire only while g is firing.
//
// Why both: a canary at 50 % of the traffic is compared with a cohort as small as itself, and
// the paired test, which only learns from which cohort each error came, needs about 2.3 times as
// long as a test that knows the cohort's rate. The cohort's history from before the canary gives
// that rate. It does not move with the cohort, though: a shared dependency that fails both
// cohorts would carry the history test over its threshold, and then only the paired test tells
// the canary's fault from the shared one. With both, a healthy canary fires at most as often as
// either test alone allows: 2·Alpha over a watch while the cohort keeps its rate, and
// 2·CanaryConcurrentAlpha when something moves both.
func (d *Detector) updateGated(s *series, c int, x, n, xr, nr float64, b int64, t, g *rateTest) rateVerdict {
	gth := d.gateThresholds(d.errorThresholds(s.ref))
	gth.temper = s.ref.temper(c)
	g.updatePaired(1, d.errorRatios(d.tune(s.key.Service)), x, n, xr, nr, b, &gth)
	th := d.errorThresholds(s.ref)
	th.temper = gth.temper
	th.hold = !g.firing
	return t.updateBaseline(&s.ref.errP[c], x, n, b, &th)
}

// cohortServing reports whether l, the line a canary is compared with (nil: none), served within
// TrafficMovedAfter of bucket b. Its checks hold the canary's tests only then: a canary left
// serving alone (its weight at 100 %, the stable version scaled down) has nothing concurrent to
// be checked against, and its tests fire against the cohort's history alone, as a new
// version's do against the old one's.
func (d *Detector) cohortServing(l *line, b int64) bool {
	return l != nil && b-l.current.lastB < d.movedBuckets
}

// gateThresholds are th with a canary check's level, CanaryConcurrentAlpha.
func (d *Detector) gateThresholds(th thresholds) thresholds {
	th.upper, th.family, th.familyN = d.gateUpper, 0, 0
	return th
}

// latencyGateRatios are the hypotheses of a canary's check of latency quantile q. H0: the
// canary's exceedance rate is at most ρ0 times the cohort's, ρ0 being what the latency test's
// own H0 tolerates (LatencyProfileTolerance for a canary), read as its rate over the quantile's
// share, at least 1: two cohorts that differ by less than the tolerance are not a regression.
// H_k: r[k] times that, the test's own alternatives.
func (d *Detector) latencyGateRatios(r *reference, q int) (float64, [alternatives]float64) {
	return math.Max(1, r.latP[q].rate()/(1-d.cfg.LatencyQuantiles[q])), r.latP[q].r
}

// errorThresholds are the boundaries of the error tests against a version baseline: they watch
// the deploy from its first request, so their first run spends more of the watch's budget (see
// frontShare), and Alpha is shared among the series of the deploy (thresholdsFor).
func (d *Detector) errorThresholds(r *reference) thresholds {
	th := d.thresholdsFor(d.th, r)
	th.front, th.deployLong = true, true
	return th
}

// trialRun follows a trial over the open buckets: whether it fired, and in which bucket.
type trialRun struct {
	fired bool
	at    int64 // the bucket whose requests carried it over
}

// after records one more bucket's verdict v.
func (tr *trialRun) after(b int64, v rateVerdict) {
	switch {
	case v == verdictFired && !tr.fired:
		tr.fired, tr.at = true, b
	case v == verdictRecovered:
		tr.fired = false
	}
}

// firedAt dates a test that fired within the open buckets, in bucket b: at b's end when that is
// before the newest event time seen (the requests after b were not needed, and Advance would
// have dated it so had b closed first), else at the newest event time seen.
func (d *Detector) firedAt(b int64) time.Time {
	if end := d.clock.end(b); end.Before(d.maxTS) {
		return end
	}
	return d.maxTS
}

// watching reports whether s's error and latency tests against its baseline still run in
// bucket b: always against a baseline cohort, and against the version before it for
// DeployWatch after its first request, then for as long as one of them is firing.
func (d *Detector) watching(s *series, b int64) bool {
	w := d.tune(s.key.Service).watch
	return w == 0 || s.ref == nil || s.ref.kind != refPreviousVersion || s.firstB == math.MaxInt64 ||
		b-s.firstB < w || s.latEp || anyFiring(s.errT[:], s.latT[:])
}

// withinBucket reports whether s's tests against its baseline may fire within a bucket (see
// testWithinBucket).
func (d *Detector) withinBucket(s *series) bool {
	if s.ref == nil || !d.watching(s, d.closed+1) {
		return false
	}
	if s.aggregate {
		for i := range s.open {
			if len(s.open[i].blocks) > 0 || len(s.open[i].sites) > 0 {
				return false
			}
		}
	}
	return true
}

// latencyWithinBucket reports whether s's latency tests against its baseline may fire within a
// bucket: as its error tests may (withinBucket), unless its service made excursions its tests
// respect. Whether a bucket belongs to one of the service's is known once every series of the
// service closed it (serviceExcursion), and a batch job's first seconds, read before, would
// carry a component's test over where one component's buckets alone cannot tell them from
// chance.
func (d *Detector) latencyWithinBucket(s *series) bool {
	return d.withinBucket(s) && !(refExcursions(s) && d.serviceMadeExcursions(s))
}

// testLatencyWithinBucket is testWithinBucket for the latency exceedance tests, after a request
// whose latency pts exceeded the threshold of a tail quantile (from withinMinQuantile up, with a
// composite H0): only such a request can carry a tail test over its threshold. When one of them
// fires, every latency test of the series is read too (see readLatencyTests).
func (d *Detector) testLatencyWithinBucket(s *series, pts []latencyPoint) {
	r := s.ref
	if r == nil || !r.latOK || s.latEp || len(s.open) > maxOpen {
		return
	}
	tail := func(q int) bool { // the request exceeds its threshold first: that is seldom true
		return slices.ContainsFunc(pts, func(p latencyPoint) bool { return p.v >= r.thr[q].above }) &&
			d.perRequest(r, q) && r.latQ[q] && !s.latT[q].firing
	}
	if !anyQuantile(len(d.cfg.LatencyQuantiles), tail) || !d.latencyWithinBucket(s) {
		return
	}
	d.readLatencyTests(s, tail)
}

// readEnded reads the latency tests of every series with open buckets that are not read per
// request (the quantiles below p99), as event time passes a bucket's end (the newest event is in
// a later bucket). They then fire at the end of the bucket that carried them over
// instead of AllowedLateness later, when it closes. All latencies ×2 at 20 req/s is decided by
// p50 within a second or two, and its anomaly waited two more seconds for the close. It costs a
// pass over each open bucket's sketch per series and bucket, not per request.
func (d *Detector) readEnded() {
	from := len(d.out)
	defer func() { slices.SortFunc(d.out[from:], compareAnomalies) }() // as a bucket's close orders them
	for _, s := range d.active {
		r := s.ref
		if r == nil || !r.latOK || s.latEp || len(s.open) > maxOpen || !d.latencyWithinBucket(s) {
			continue
		}
		d.readLatencyTests(s, func(q int) bool { return r.latQ[q] && !s.latT[q].firing && !d.perRequest(r, q) })
	}
}

// perRequest reports whether latency test q against r is read after each request above its
// threshold (see testLatencyWithinBucket), rather than as a bucket ends (readEnded).
func (d *Detector) perRequest(r *reference, q int) bool {
	return d.cfg.LatencyQuantiles[q] >= withinMinQuantile && r.composite[q]
}

// readLatencyTests reads the latency tests of s for which first holds over its open buckets as
// they stand. When one of them fires, every other latency test of the series is read too, and
// the episode is opened by the one that crossed in the earliest bucket: a latency episode has one
// anomaly, and a body quantile that had crossed in an older bucket must not be dated later by the
// tail test that happened to be read first. The anomaly still needs the quantile itself to have
// moved (latencyGate), read over the closed history and the open buckets; a test that fired
// without it keeps watching, as at a bucket's close.
func (d *Detector) readLatencyTests(s *series, first func(q int) bool) {
	r := s.ref
	nq := len(d.cfg.LatencyQuantiles)
	var lt latencyCounts
	seen := false
	var cl *line
	var cohort *series
	if s.gate != nil {
		if cl = d.cohortLine(s); cl != nil {
			cohort = cl.current
		}
	}
	longest, exc, on := refExcursion(s), s.excRef, r.refQuantiles()
	for i := range s.open {
		if sk := s.open[i].sk; sk != nil {
			lt[i].n = s.open[i].latN
			lt[i].shift = d.readShift(s, &s.open[i], r, false)
			var ex *excessCounts
			if r.excessOn() {
				ex = &lt[i].ex
			}
			aboveEachExcess(sk, &r.thr, nq, lt[i].shift, &lt[i].x, ex, d.excessCapBins())
			seen = true
			if longest > 0 {
				// As the bucket's close will: a bucket of an excursion no longer than the
				// baseline's longest is inconclusive (see excursion.go).
				exc = nextRun(exc, d.excursionZ(exc > 0, &lt[i].x, lt[i].n, on))
				lt[i].aside = setAside(longest, exc)
			}
			lt[i].checked = d.cohortServing(cl, s.open[i].idx)
			if pb := cohort.openBucket(s.open[i].idx); pb != nil && pb.sk != nil && pb.latN > 0 {
				lt[i].rn = pb.latN
				aboveEach(pb.sk, &r.thr, nq, 0, &lt[i].rx)
				if lt[i].gx = lt[i].x; lt[i].shift > 0 {
					aboveEach(sk, &r.thr, nq, 0, &lt[i].gx)
				}
			}
		}
	}
	if !seen {
		return
	}
	// Read each test on a copy first; the tests that fired are then read again for real, which
	// gives the same result.
	var runs [maxQuantiles]trialRun
	for q := range nq {
		if first(q) {
			runs[q] = d.tryLatency(s, &lt, q)
		}
	}
	if !anyQuantile(nq, func(q int) bool { return runs[q].fired }) {
		return
	}
	for q := range nq {
		if r.latQ[q] && !s.latT[q].firing && !first(q) {
			runs[q] = d.tryLatency(s, &lt, q)
		}
	}
	fq := -1
	var gates [maxQuantiles]rateTest // each check as the read left it, for the anomaly
	for q := range nq {
		if !runs[q].fired {
			continue
		}
		if fq < 0 || runs[q].at < runs[fq].at {
			fq = q
		}
		d.readLatency(s, &lt, q, &s.latT[q], &gates[q])
		for i := range s.open {
			if s.open[i].sk != nil {
				s.open[i].useLatency(q, latencyUse{n: lt[i].n, x: lt[i].x[q], xb: lt[i].x[r.bodyQ],
					ex: lt[i].ex[q]})
			}
		}
	}
	var g *rateTest
	if s.gate != nil {
		g = &gates[fq]
	}
	if a := d.latencyAnomaly(s, fq, d.firedAt(runs[fq].at), g); a.Effect >= latencyGate(d.tune(s.key.Service), s.ref.kind) {
		s.latEp = true
		d.out = d.open(s, epLatency, a, d.out)
	}
}

// latencyCounts holds, per open bucket of a series, its requests with a latency and those above
// each threshold, as they stand when a within-bucket read begins.
type latencyCounts [maxOpen]struct {
	n     float64
	x     [maxQuantiles]float64
	ex    excessCounts // the offsets of the exceedances in x, where the excess is tested
	shift int          // the sketch bins its thresholds rose at its load (readShift)
	// A canary's: the cohort's open bucket of the same index, its requests with a latency and
	// those above each of the canary's thresholds (rn 0: none), the canary's own above them
	// (gx: x, not read at the load, as the checks compare two sides at the same load), and
	// whether the cohort served recently enough for the checks to hold the tests (see
	// cohortServing).
	rn      float64
	rx, gx  [maxQuantiles]float64
	checked bool
	// aside: the bucket belongs to an excursion no longer than the baseline's longest, and is
	// inconclusive (see excursion.go).
	aside bool
}

// tryLatency reads a copy of latency test q of s (see readLatency). The copy's second bank is the
// detector's scratch: a test's state leaks to the heap through its methods, and a bank copied per
// read would be allocated each time.
func (d *Detector) tryLatency(s *series, lt *latencyCounts, q int) trialRun {
	trial := s.latT[q]
	if trial.bank != nil {
		d.trialBank = *trial.bank
		trial.bank = &d.trialBank
	}
	return d.readLatency(s, lt, q, &trial, nil)
}

// readLatency runs t, latency test q of s or a copy of it, over s's open buckets as lt counts
// them, and says whether and where it fired. A canary's check of q runs on a copy over the same
// open buckets as they stand (it counts whole buckets when they close), and t may fire only
// while the copy is firing; gout, if not nil, receives the copy as the read left it.
func (d *Detector) readLatency(s *series, lt *latencyCounts, q int, t *rateTest, gout *rateTest) trialRun {
	r := s.ref
	var run trialRun
	var g rateTest
	var rho0 float64
	var rho [alternatives]float64
	lth := d.latencyThresholds(s, q)
	gth := d.gateThresholds(d.th)
	gth.temper = lth.temper
	if s.gate != nil {
		g = s.gate.lat[q]
		rho0, rho = d.latencyGateRatios(r, q)
	}
	for i := range s.open {
		b := &s.open[i]
		if b.sk == nil || lt[i].aside {
			continue
		}
		th := lth
		if s.gate != nil {
			if lt[i].rn > 0 {
				g.updatePaired(rho0, rho, lt[i].gx[q], lt[i].n, lt[i].rx[q], lt[i].rn, b.idx, &gth)
			}
			th.hold = lt[i].checked && !g.firing
		}
		n, x, xb := b.unusedLatency(q, lt[i].n, lt[i].x[q], lt[i].x[r.bodyQ])
		var v rateVerdict
		if r.composite[q] {
			body := bodyEvidence(r, q, n, x, xb)
			ec := b.unusedExcess(q, lt[i].ex[q])
			v = t.updateComposite(&r.latP[q], &r.latS[q], &body, &r.excess[q], ec, x, n, b.idx, &th)
		} else {
			v = t.updateBaseline(&r.latP[q], x, n, b.idx, &th)
		}
		run.after(b.idx, v)
	}
	if gout != nil {
		*gout = g
	}
	return run
}

// anyQuantile reports whether f holds for any of the first n quantiles.
func anyQuantile(n int, f func(q int) bool) bool {
	for q := range n {
		if f(q) {
			return true
		}
	}
	return false
}

// maxOpen bounds the open buckets a within-bucket latency test reads.
const maxOpen = 16

// withinMinQuantile is the lowest latency quantile whose test fires within a bucket. A request
// above a quantile's threshold costs a pass over the open buckets' sketch bins and a composite
// update: at p90 that is one request in ten, and BenchmarkObserve measured 750 ns an event
// against 450 at the bucket's close; from p99 on it is one in a hundred.
const withinMinQuantile = 0.99

// bodyEvidence is the log likelihood ratio, at each level of quantile q's composite H0, of the
// bucket's requests at or below q's threshold: their share above the body's threshold as the
// baseline has it, against as the level predicts it (see rateTest.updateComposite).
// latN requests, x of them above q's threshold and xBody above the body's.
func bodyEvidence(r *reference, q int, latN, x, xBody float64) [3]float64 {
	var ev [3]float64
	nb := latN - x
	if nb <= 0 {
		return ev
	}
	xb := clamp(xBody-x, 0, nb)
	p0 := r.bodyP[q][0]
	for l := 1; l < len(ev); l++ {
		pl := r.bodyP[q][l]
		ev[l] = xb*math.Log(p0/pl) + (nb-xb)*math.Log((1-p0)/(1-pl))
	}
	return ev
}

// concurrentCPU sets base to what canary s's cpu is compared with in its just-closed bucket: the
// cohort's cpu in the same bucket, with the spread the cohort's history had (at least the
// minimum effect of the cohort's cpu now), times √2 for the two sides' noise. A spike or a daily
// cycle moves both cohorts; the canary's own cpu rise does not. It leaves base empty,
// inconclusive, while s has not started up (startedUp) or the cohort reported no cpu in the
// bucket, or, when the canary's sample covers span buckets (a scraper every 15 s), in those:
// the canary is compared with the cohort's latest sample within them, as two scrapers seldom
// sample in the same bucket.
//
// The frozen cohort's cpu it replaces fired on every traffic spike during a canary.
//
// l is the line canary s is compared with as it serves (nil: none).
func (d *Detector) concurrentCPU(s *series, l *line, span float64, base *resourceBase) {
	if l == nil || !d.startedUp(s, s.cpuFit) {
		return
	}
	cs := l.current
	if cs.cpuFit == nil || cs.cpuFit.n == 0 || s.closed.idx-cs.cpuFit.last >= int64(span) {
		return
	}
	center := float64(cs.cpuLast)
	scale, spread := d.cfg.ResourceMinEffect*math.Abs(center), 0.0
	if h := &s.ref.cpuRef; h.ready {
		scale = math.Max(scale, h.scale)
		spread = float64(h.spread)
	}
	base.set(testConcurrentCohort, center, math.Sqrt2*spread, math.Max(math.Sqrt2*scale, 1e-9), nil, 0)
}

// testResources tests the cpu and memory of component aggregate s in its just-closed bucket.
// They are the process's, not a block's: a sample lands on whichever block's request carried
// it, and an anomaly naming that block would have decide roll back a block that may not be the
// one to blame. cl is the line a canary is compared with as it serves.
//
// Memory: against the baseline version's recent level when there is one, else the series' own
// level once it has grown up. CPU follows load (spikes, daily cycles), so a level from another
// time says nothing: a canary's is compared with its cohort's in the same bucket, a new
// version's with the most its previous version used at the load it serves, and that of a
// series no deploy changed with the most it used itself at that load. The series' own cpu line
// learns each bucket, except while its cpu test fires.
func (d *Detector) testResources(s *series, cl *line, out []schemas.Anomaly) []schemas.Anomaly {
	b, r := &s.closed, s.ref
	var mem, cpu resourceBase
	if r != nil && b.memN > 0 {
		d.recentMem(s, &mem)
	}
	cpuSpan, cpuSum, cpuN := 1.0, b.cpuSum, float64(b.cpuN)
	// A bucket whose cpu samples carried process_rps gives the load of the whole process; one
	// where only some did (instances that send it next to instances that do not) gives no
	// load cpu can be read at, and its cpu is left out.
	byProcess := b.loadN > 0
	if byProcess && b.loadN < b.cpuN {
		cpuSum, cpuN = 0, 0
	}
	// Without process_rps, the load is the component's requests, across its versions and
	// cohorts: a canary takes its share of the requests with its share of the instances, and
	// the baseline cohort's own requests halved while each of its instances served as many.
	n := s.load.closedN(b.idx)
	if cpuN == 0 {
		if s.cpuFit != nil { // before its first sample nothing reads it
			s.cpuPend += float32(n)
		}
	} else {
		if f := s.cpuFit; f != nil && f.n > 0 && s.cpuByProcess != byProcess {
			// The samples started or stopped saying the process's load (a version whose
			// sampler sends it): a line of the other kind says nothing at this kind's loads.
			*f = loadFit{}
		}
		// The load a cpu sample is compared at: the process's, when the sample says it
		// (process_rps, the mean of the bucket's samples: each is one instance's, as its cpu
		// is); else the component's requests in the bucket, or, when cpu is sampled less often
		// (a scraper every 15 s), their mean per bucket since the previous sample. A scraped cpu
		// is a mean over its interval, and one bucket's count is a noisy measure of the load
		// over it.
		load, span := n, 1.0
		if f := s.cpuFit; f != nil {
			if span = sampleSpan(f, b.idx); span > 1 {
				load = (float64(s.cpuPend) + n) / span
			}
		}
		if byProcess {
			load = float64(b.loadSum) / float64(b.loadN) * d.bucketSeconds
		}
		s.cpuPend, cpuSpan = 0, span
		switch {
		case r == nil:
			d.ownCPU(s, load, span, &cpu)
		case r.kind == refBaselineCohort:
			d.concurrentCPU(s, cl, span, &cpu)
		default:
			d.loadCPU(s, load, span, byProcess, &cpu)
		}
		if s.cpuFit == nil { // allocated on a series' first sample: most series report none
			s.cpuFit = new(loadFit)
		}
		s.cpuByProcess = byProcess
		if s.cpuC.firing {
			s.cpuFit.pause(b.idx)
		} else {
			s.cpuFit.add(b.idx, load, cpuSum/cpuN, d.resHalfLife)
		}
		s.cpuLast = float32(cpuSum / cpuN)
	}
	memSpan := 1.0
	if b.memN > 0 {
		if s.memFit == nil {
			s.memFit = new(memLevel)
		}
		memSpan = sampleSpan(&s.memFit.loadFit, b.idx)
		s.memFit.add(b.idx, b.n, b.memSum/float64(b.memN), d.resHalfLife)
	}
	// The series' own memory level is learnt once it has served OwnProfileWarmup and its memory
	// has levelled off, or once it has served MemoryGrowthLimit whatever its memory does: growth
	// that has not stopped by then is a leak. Its cpu level only gives a canary's cohort its
	// spread.
	age := s.closed.idx - s.firstB
	learnMem := age >= d.ownWarmup && s.memFit != nil && (d.memLevelled(s.memFit) || age >= d.growthBuckets)
	out = d.testResource(s, out, &s.memRef, learnMem, true, &s.memC, b.memSum, float64(b.memN), memSpan, &mem, schemas.MetricMem)
	return d.testResource(s, out, &s.cpuRef, true, false, &s.cpuC, cpuSum, cpuN, cpuSpan, &cpu, schemas.MetricCPU)
}

// resourceBase is what a bucket's cpu or memory is compared with (ready: there is something),
// how (test, as the anomaly names it), and for its note the history it came from when that is a
// version's recent one (a cpu line fit, at the bucket's load; a memory level mem).
type resourceBase struct {
	robustRef
	test string
	fit  *loadFit
	load float64
	mem  *memLevel
}

// The resource comparisons, as an anomaly's test names them.
const (
	testOwnLevel         = "cusum-median-mad"        // memory against the series' own level, frozen once grown
	testRecentLevel      = "cusum-recent-level"      // memory against the baseline's recent level
	testLoadFit          = "cusum-load-fit"          // a new version's cpu at its load
	testOwnLoadFit       = "cusum-own-load-fit"      // cpu no deploy changed, against its own line at its load
	testConcurrentCohort = "cusum-concurrent-cohort" // a canary's cpu against its cohort's latest sample
)

// set fills b in: what it is compared with (center) and the spread of a value about it, which
// the scale is at least, and at least the minimum effect.
func (b *resourceBase) set(test string, center, spread, scale float64, fit *loadFit, load float64) {
	b.test, b.center, b.spread, b.scale, b.ready, b.fit, b.load = test, center, float32(spread), scale, true, fit, load
}

// startedUp says the sample of new version or canary s that its resource history f is about to
// take in may be compared with its baseline's: a process uses more cpu as it starts (caches,
// JIT, connection pools), and its memory grows. The sample stands for the buckets since f's
// previous one, and they must all come ResourceWarmupBuckets or more after s's first bucket.
//
// Time, not samples: a resource scraped every 15 s has started up after 30 s as one sampled
// every second has, and one scraped every minute is compared from its second sample on when
// that sample's minute began 30 s after the version's first request, not a minute later. Its
// own line is not read for this, so it needs no minimum of samples; its first sample covers an
// unknown stretch and never counts.
func (d *Detector) startedUp(s *series, f *loadFit) bool {
	return f != nil && f.n > 0 && f.last+1-s.firstB >= int64(d.cfg.ResourceWarmupBuckets)
}

// recentMem sets base to what s's memory is compared with in its just-closed bucket: its
// baseline's recent level (the mean of its bucket means, half-life ResourceHalfLife), with its
// spread (at least the minimum effect of the level). A version's memory as it started would
// make every deploy of a service whose memory grows as its caches fill a regression; the level
// it had grown to does not, and a leak still climbs past it. Nothing (the series' own level
// then) while the baseline reported memory in fewer than ResourceWarmupBuckets buckets, or s
// has not started up.
func (d *Detector) recentMem(s *series, base *resourceBase) {
	f := &s.ref.memFit
	if !f.warm(d.cfg.ResourceWarmupBuckets) || !d.startedUp(s, s.memFit.line()) || !d.memLevelled(f) {
		return
	}
	level := max(f.my, float64(f.blocks.m[0])) // levelled: its newest block has seen all of the growth
	spread := math.Sqrt(f.syy / f.w)
	base.set(testRecentLevel, level, spread, math.Max(spread, math.Max(d.cfg.ResourceMinEffect*math.Abs(level), 1e-9)), nil, 0)
	base.mem = f
}

// levelHorizon is how far ahead memLevelled looks.
const levelHorizon = 10 * time.Minute

// memLevelled says the memory f follows has levelled off: it would rise by no more than a
// quarter of ResourceMinEffect over the next levelHorizon at the rate it rises now. A level
// taken while memory still grows is below where it settles, and a version compared with it
// would be a regression once it had grown further.
func (d *Detector) memLevelled(m *memLevel) bool {
	return m.blocks.levelled(d.levelBuckets, d.cfg.ResourceMinEffect/4)
}

// loadCPU sets base to what new version s's cpu is compared with in its just-closed bucket, at
// load x: the most its previous version's cpu would have been there (loadFit.bound), with the
// spread of a bucket's cpu about that version's line (at least the minimum effect of the most).
// It leaves base empty, inconclusive, while
//   - the previous version's line has seen fewer than ResourceWarmupBuckets buckets;
//   - s has not started up (startedUp);
//   - the previous version still serves (within TrafficMovedAfter): a rolling deploy is under
//     way, and s's requests are not the load of the instances that report its cpu;
//   - x is beyond the line's reach (a spike the previous version never served), and for
//     ResourceWarmupBuckets after (loadFit.at);
//   - x is of another kind than the line's loads (byProcess: the process's, process_rps, or
//     the series' own requests), as when the new version is the first to send process_rps.
func (d *Detector) loadCPU(s *series, x, span float64, byProcess bool, base *resourceBase) {
	r := s.ref
	if r.cpuByProcess != byProcess {
		return
	}
	k := s.key
	k.Version = r.version
	if prev := d.series[k]; prev != nil && s.closed.idx-prev.lastB < d.movedBuckets {
		return
	}
	most, se, ok := r.cpuFit.at(s.closed.idx, x, span, d.cfg.ResourceWarmupBuckets)
	if !ok || !d.startedUp(s, s.cpuFit) {
		return
	}
	base.set(testLoadFit, most, se, math.Max(se, math.Max(d.cfg.ResourceMinEffect*most, 1e-9)), &r.cpuFit, x)
}

// ownCPU sets base to what the cpu of s, which no deploy changed, is compared with in its
// just-closed bucket, at load x: the most it used itself at that load, by its own line (s.cpuFit,
// as loadCPU reads its previous version's). The line pauses while the test fires (see
// testResources), so a regression does not become its normal, and it follows a daily cycle's
// slow change. It leaves base empty, inconclusive,
//   - until s has served OwnProfileWarmup (zero: never);
//   - while another version serves on s's line, and for TrafficMovedAfter after: a rolling
//     deploy takes instances away with their requests, and the load of each remaining instance
//     does not fall with the series' requests;
//   - at a load beyond the line's reach, and for ResourceWarmupBuckets after (loadFit.at).
func (d *Detector) ownCPU(s *series, x, span float64, base *resourceBase) {
	f := s.cpuFit
	if f == nil || d.ownWarmup == 0 || s.closed.idx-s.firstB < d.ownWarmup ||
		s.line.current != s || s.closed.idx-s.line.otherB < d.movedBuckets {
		return
	}
	most, se, ok := f.at(s.closed.idx, x, span, d.cfg.ResourceWarmupBuckets)
	if !ok {
		return
	}
	base.set(testOwnLoadFit, most, se, math.Max(se, math.Max(d.cfg.ResourceMinEffect*most, 1e-9)), f, x)
}

// testResource runs the CUSUM of a cpu or memory series. The reference is base when it has one,
// otherwise (only when useOwn) the series' own median/MAD, frozen from the first buckets in
// which learnOwn held: memory grows as a process starts, and its first minutes are not its
// normal.
func (d *Detector) testResource(s *series, out []schemas.Anomaly, own *robustRef, learnOwn, useOwn bool, c *cusum, sum, cnt, span float64, base *resourceBase, metric string) []schemas.Anomaly {
	if cnt == 0 {
		return out
	}
	x := sum / cnt
	if learnOwn {
		// As many samples as cover ResourceWarmupBuckets, and at least minResourceSamples: a
		// level learnt from 30 samples scraped every 15 s would take 7.5 min to freeze, and
		// take in a leak that began meanwhile.
		need := max(minResourceSamples, int(math.Ceil(float64(d.cfg.ResourceWarmupBuckets)/span)))
		own.add(x, need, d.cfg.ResourceMinEffect)
	}
	ref := own
	if base.ready {
		ref = &base.robustRef
	} else if !useOwn {
		return out
	}
	if !ref.ready {
		return out
	}
	slot := epCPU
	if metric == schemas.MetricMem {
		slot = epMem
	}
	// A value that stands for span buckets (a resource sampled less often than every bucket)
	// weighs span buckets, and its spread is that of one bucket's: a mean over span buckets
	// varies √span times less than they do, so their sum of deviations is √span times its own.
	// The CUSUM then fires on a lasting rise at about the same event time (up to the wait for the
	// next sample) whether the resource is sampled every bucket or every 15 s, and as seldom on
	// noise.
	scale := math.Max(ref.scale, float64(ref.spread)*math.Sqrt(span))
	z := (x - ref.center) / scale
	switch c.update(z, d.cfg.CUSUMSlack, span, d.cfg.CUSUMThreshold, s.closed.idx) {
	case verdictFired:
		a := d.resourceAnomaly(s, metric, c, x, ref, base)
		if span > 1 {
			a.Evidence.Notes = append(a.Evidence.Notes, fmt.Sprintf(
				"%s is sampled every %g buckets here: a sample counts as that many buckets' deviations, on a scale of %.3g (at least √%g times the samples' spread %.3g)",
				metric, span, scale, span, ref.spread))
		}
		return d.open(s, slot, a, out)
	case verdictRecovered:
		return d.resolve(s, slot, s.closed.idx, metric+" back within baseline", out)
	}
	return out
}

// resourceAnomaly is the anomaly of resource CUSUM c firing at value x against ref; base says
// what ref came from (not ready: the series' own level).
func (d *Detector) resourceAnomaly(s *series, metric string, c *cusum, x float64, ref *robustRef, base *resourceBase) schemas.Anomaly {
	test := testOwnLevel
	if base.ready {
		test = base.test
	}
	f, half, center := base.fit, shortDuration(time.Duration(d.cfg.ResourceHalfLife)), ref.center
	label := refLabel(s)
	switch test {
	case testOwnLoadFit:
		label = schemas.BaselineOwnProfile + " (" + half + ")"
	case testOwnLevel:
		label = schemas.BaselineOwnProfile + " (frozen level)"
	}
	a := d.cusumAnomaly(s.key, metric, c, x, center, s.closed.idx, test, label)
	var note string
	switch test {
	case testLoadFit:
		note = fmt.Sprintf("cpu at %.4g %s; %s used at most %.4g there: %.4g at its mean load of %.4g %s, in proportion above it (its line %.4g + %.4g per request, over %s, half-life %s)",
			base.load, loadUnit(s.cpuByProcess), refLabel(s), center, f.my, f.mx, loadUnit(s.cpuByProcess), f.my-f.slope()*f.mx, f.slope(), f.over(), half)
	case testOwnLoadFit:
		note = fmt.Sprintf("cpu at %.4g %s; no deploy changed this series, and by its own recent history it used at most %.4g there: %.4g at its mean load of %.4g %s, in proportion above it (its line %.4g + %.4g per request, half-life %s, paused while the test fires); a rise here comes from outside the version (a dependency, configuration, data or the mix of requests)",
			base.load, loadUnit(s.cpuByProcess), center, f.my, f.mx, loadUnit(s.cpuByProcess), f.my-f.slope()*f.mx, f.slope(), half)
	case testRecentLevel:
		note = fmt.Sprintf("%s's recent memory, which had levelled off: %.4g MB, the larger of its mean (half-life %s) %.4g MB and its last full minute's %.4g MB; standard deviation %.3g MB, over %s",
			refLabel(s), center, half, base.mem.my, base.mem.blocks.m[0], math.Sqrt(base.mem.syy/base.mem.w), base.mem.over())
	case testConcurrentCohort:
		note = fmt.Sprintf("cpu against the cohort it is compared with, its latest sample: %.4g (spread %.3g, its history's and two sides' noise)",
			center, base.scale)
	case testOwnLevel:
		note = fmt.Sprintf("%s against the series' own level, frozen so that a slow leak climbs past it: the median of its first %d samples of %s (covering at least %d buckets) once it had served %s and its %s had levelled off (or had served %s), %.4g, scale (1.4826·MAD, at least %g of it) %.3g",
			metric, ref.k, metric, d.cfg.ResourceWarmupBuckets, shortDuration(time.Duration(d.cfg.OwnProfileWarmup)), metric,
			shortDuration(time.Duration(d.cfg.MemoryGrowthLimit)), center, d.cfg.ResourceMinEffect, ref.scale)
	}
	if note != "" {
		a.Evidence.Notes = append(a.Evidence.Notes, note)
	}
	return a
}

// testThroughput tests a line's request rate in the bucket it just accumulated against its EWMA:
// a one-sided CUSUM of how far the count falls below (1 - ThroughputMinDrop/2) of the usual rate,
// in standard deviations of the count (Poisson's, widened by how bursty the traffic has been:
// see throughputStep). Spikes push the CUSUM down, never up; the EWMA follows daily cycles, and
// is frozen during an excursion so a real drop is not absorbed.
// closing are the series whose bucket closed with it, one of which a drop is reported on.
func (d *Detector) testThroughput(ln *line, closing []*series, out []schemas.Anomaly) []schemas.Anomaly {
	// Only buckets with data are tested here: an empty window is inconclusive, never a drop,
	// except where testSilence reads it. The CUSUM restarts after a gap, so traffic that turns
	// sparse (buckets with a request here and there) never accumulates into a "drop": it is too
	// little data to conclude.
	b := ln.accB
	if ln.lastB != b-1 && !ln.tputC.firing {
		ln.tputC.s = 0
	}
	ln.lastB = b
	return d.throughputStep(ln, ln.accN, b, closing, out)
}

// silenceHorizon is how many buckets of a busy unit's silence its throughput test reads
// (testSilence): at the lowest rate the test runs at, ThroughputMinRate, and traffic as bursty
// as the suite's, a silence fires in about ten.
const silenceHorizon = throughputWarmup

// testSilence reads bucket b as a count of zero for each unit in quiet that served in none of
// it, when heard (the events' watermark passed b), and rebuilds quiet for the next bucket from
// what is left of it and from touched, the units that served in b.
//
// Why: a deploy that hangs or crashes the new version, after the old one's instances are gone,
// leaves its unit without a single request, and a test that reads only buckets with requests
// never sees that, the worst regression there is. Its drop to one request a second fired in
// seconds; its drop to none went unreported for as long as it lasted. An empty bucket is
// still inconclusive for every other test (there is nothing in it to compare), and it is only
// read as a count here when the unit is busy enough for a missing second to mean something:
// it served in each of the last throughputWarmup buckets (traffic that comes and goes, as a
// batch job's does, never is), its newest version replaced another within DeployWatch (the
// change scalpel watches for; a unit that falls silent with no change is a liveness problem
// for a process supervisor), and for silenceHorizon buckets at most. Decide does not roll back
// on a silence by default: no telemetry is also what a broken exporter looks like.
func (d *Detector) testSilence(b int64, heard bool, touched []*line, out []schemas.Anomaly) []schemas.Anomaly {
	next := d.quietNext[:0]
	for _, ln := range d.quiet {
		if !heard || ln.accB >= b || b-ln.accB > silenceHorizon || ln.current == nil {
			// It served in b (and is among touched), has been silent long enough, or was
			// evicted; or no event moved the watermark past b (see advanceTo).
			continue
		}
		ln.lastB = b
		out = d.throughputStep(ln, 0, b, nil, out)
		if b+1-ln.accB <= silenceHorizon {
			next = append(next, ln)
		}
	}
	for _, ln := range touched {
		if d.watchesSilence(ln) {
			next = append(next, ln)
		}
	}
	clear(d.quiet[:cap(d.quiet)]) // the old list holds no line alive
	d.quiet, d.quietNext = next, d.quiet[:0]
	return out
}

// watchesSilence reports whether unit line ln, which served in bucket ln.accB, is busy enough
// and changed recently enough for its silence after that bucket to be read (testSilence).
func (d *Detector) watchesSilence(ln *line) bool {
	cur := ln.current
	w := d.tune(ln.key.Service).watch
	return ln.accB-ln.runB+1 >= throughputWarmup && cur != nil && cur.ref != nil &&
		cur.ref.kind == refPreviousVersion && (w == 0 || ln.accB-cur.firstB < w)
}

// dropSeries is the series a drop of unit line ln in bucket b is reported on: the line's newest
// version when it served in the bucket (a drop right after a deploy is the new version's to
// explain), else, of the unit's series whose bucket b closed with it, whichever served most.
func dropSeries(ln *line, b int64, closing []*series) *series {
	if cur := ln.current; cur != nil && cur.lastB >= b {
		return cur
	}
	var top *series
	for _, s := range closing {
		if s.aggregate && s.line.unit == ln && (top == nil || s.closed.n > top.closed.n) {
			top = s
		}
	}
	if top == nil {
		return ln.current // no series served in b: the unit is silent (testSilence)
	}
	return top
}

// throughputWarmup is how many buckets the rate EWMA needs before it is trusted.
const throughputWarmup = 60

// throughputStep runs the throughput CUSUM of unit line ln on x, its requests in bucket b.
//
// The count's variance is m + c·m² for a usual count m: Poisson's, plus c, what traffic that
// comes in bursts adds (a negative binomial's, as when every second's rate is drawn afresh).
// c is an EWMA of (2·min(0, x − m)² − m)/m², the count's squared shortfall below the rate beyond
// Poisson's: about 0 for Poisson arrivals, and only the side a drop is on, so a spike does not
// widen it and a tail of bursts above the rate, which the level's winsorising leaves out, does
// not either. The test waits for throughputWarmup values of it too.
//
// Why: requests seldom arrive as Poisson's independent arrivals. Clients batch, retry and fan
// out, and each second's rate varies by tens of percent. With each second's rate log-normal of
// σ 0.5 (mean unchanged), a count of 50 a second has a standard deviation of about 27 where
// Poisson's is 7, and the CUSUM in Poisson's units fired in 29 of 50 A/A deploys, most of them
// before the deploy.
func (d *Detector) throughputStep(ln *line, x float64, b int64, closing []*series, out []schemas.Anomaly) []schemas.Anomaly {
	perBucket := d.cfg.ThroughputMinRate * time.Duration(d.cfg.BucketWidth).Seconds()
	minDrop := d.tune(ln.key.Service).cfg.ThroughputMinDrop
	m := ln.tput.forecast()
	if ln.tput.n >= 2*throughputWarmup && m >= perBucket {
		c := max(0, float64(ln.tputD))
		sd := math.Sqrt(m + c*m*m)
		z := (m*(1-minDrop/2) - x) / sd
		if ln.tputC.s == 0 {
			ln.tputBL = float32(m)
		}
		switch ln.tputC.update(z, 0, 1, d.cfg.CUSUMThreshold, b) {
		case verdictFired:
			secs := time.Duration(d.cfg.BucketWidth).Seconds()
			k := dropSeries(ln, b, closing).key
			a := d.cusumAnomaly(k, schemas.MetricThroughput, &ln.tputC, x/secs, float64(ln.tputBL)/secs, b, "cusum-ewma-counts", "")
			a.Evidence.Notes = append(a.Evidence.Notes, "throughput of the unit across versions and cohorts, in requests per second",
				fmt.Sprintf("the CUSUM adds up how far each bucket's count fell below %.3g of the usual rate, in standard deviations of %.4g requests at %.4g: Poisson's %.4g widened by the traffic's own bursts (variance m + %.3g·m²)",
					1-minDrop/2, sd, m, math.Sqrt(m), c))
			if x == 0 && ln.accB < b {
				a.Evidence.Notes = append(a.Evidence.Notes, fmt.Sprintf("silent: not one request since %s, after requests in each of the %d buckets before; a hung or crashed version and lost telemetry look alike from here",
					d.clock.end(ln.accB).Format(time.RFC3339Nano), ln.accB-ln.runB+1))
			}
			a.Status = schemas.AnomalyFiring
			keep := a
			ln.tputA = &keep
			out = append(out, a)
		case verdictRecovered:
			if a := ln.tputA; a != nil {
				ln.tputA = nil
				r := *a
				at := d.clock.end(b)
				r.Status, r.ResolvedAt, r.Resolution = schemas.AnomalyResolved, &at, "throughput back to its usual rate"
				out = append(out, r)
			}
		}
	}
	if !ln.tputC.firing {
		// Updated during an excursion too, so a slow decline (the evening side of a daily cycle)
		// is followed rather than accumulated; a real drop fires within seconds, long before a
		// 10-minute half-life absorbs it.
		d.absorbRate(ln, x)
	}
	return out
}

// absorbRate folds x, line ln's requests in a bucket with data, into its usual rate (tput) and
// the spread of its counts below it (tputD). Winsorised: a spike moves the usual rate by at most
// a few standard deviations per bucket, so a burst of traffic does not make the normal rate
// afterwards look like a drop, nor the spike's buckets look usual (readShift).
func (d *Detector) absorbRate(ln *line, x float64) {
	if m := ln.tput.forecast(); ln.tput.ready && m > 0 {
		// The level is ready after throughputWarmup values, and every value after that is
		// one of these too.
		short := math.Min(0, x-m)
		w := max(d.tputAlpha, 1/float64(ln.tput.n-throughputWarmup+1))
		ln.tputD += float32(w * ((2*short*short-m)/(m*m) - float64(ln.tputD)))
		x = math.Min(x, m+3*math.Sqrt(m)+0.05*m)
	}
	ln.tput.add(x, d.tputAlpha, d.tputBeta, throughputWarmup)
}

func refLabel(s *series) string {
	if s.ref != nil {
		return s.ref.label
	}
	return ""
}

// open records the anomaly that opened an episode of s (slot) and emits it.
func (d *Detector) open(s *series, slot int, a schemas.Anomaly, out []schemas.Anomaly) []schemas.Anomaly {
	a.Status = schemas.AnomalyFiring
	keep := a
	if s.eps == nil {
		s.eps = new(episodes)
	}
	s.eps[slot] = &keep
	if !s.inFiring {
		s.inFiring = true
		d.firing = append(d.firing, s)
	}
	return append(out, a)
}

// resolve announces the end of the episode in slot: the same anomaly, status resolved.
func (d *Detector) resolve(s *series, slot int, b int64, why string, out []schemas.Anomaly) []schemas.Anomaly {
	a := s.episode(slot)
	if a == nil {
		return out
	}
	if s.eps[slot] = nil; *s.eps == (episodes{}) {
		s.eps = nil
	}
	r := *a
	at := d.clock.end(b)
	r.Status, r.ResolvedAt, r.Resolution = schemas.AnomalyResolved, &at, why
	d.log.Info("episode resolved", "series", s.key.String(), "metric", r.Metric, "category", r.ErrorCategory, "why", why)
	return append(out, r)
}

// quietFor renders how long a test saw no evidence of a regression, in event time.
func (d *Detector) quietFor(buckets int) string {
	return (time.Duration(buckets) * time.Duration(d.cfg.BucketWidth)).String()
}

// trafficMoved resolves every open episode of a series that has stopped serving while its line
// serves another version that is not firing (a rollback, or a roll forward, moved the traffic).
// A canary whose line serves nothing else moved its traffic to the cohort it is compared with
// (an aborted rollout sets the canary's weight to 0): that cohort's version stands in for the
// line's. It runs once per bucket index b, after that bucket's tests, so it is independent of
// batching.
func (d *Detector) trafficMoved(b int64, out []schemas.Anomaly) []schemas.Anomaly {
	kept := d.firing[:0]
	for _, s := range d.firing {
		cur := s.line.current
		if (cur == nil || cur == s) && s.ref != nil && s.ref.kind == refBaselineCohort {
			if l := d.cohortLine(s); l != nil {
				cur = l.current
			}
		}
		if cur == nil || cur == s || cur.lastB != b {
			s.movedN, s.movedErrs = 0, [numCategories]float64{}
		} else {
			// What the version now serving does, against the firing series' own baseline: a
			// restored version that is as bad (it may have no baseline of its own to fire
			// against) must not end the episode.
			s.movedN += cur.closed.n
			for c := range s.movedErrs {
				s.movedErrs[c] += cur.closed.errs[c]
			}
		}
		if cur != nil && cur != s && cur.lastB == b && b-s.lastB >= d.movedBuckets &&
			len(cur.firing(d.cfg.LatencyQuantiles)) == 0 && d.movedHealthy(s) {
			why := "traffic moved to version " + cur.key.Version + ", which is healthy"
			if cur.key.Cohort != s.key.Cohort && cur.key.Cohort != "" {
				why = "traffic moved to version " + cur.key.Version + " (cohort " + cur.key.Cohort + "), which is healthy"
			}
			for slot := range numEpisodes {
				out = d.resolve(s, slot, b, why, out)
			}
			for c := range s.errT {
				s.errT[c].reset()
			}
			if s.gate != nil {
				*s.gate = canaryGate{}
			}
			for q := range s.latT {
				s.latT[q].reset()
			}
			s.latEp = false
			s.resetOwn()
			s.cpuC, s.memC = cusum{}, cusum{}
		}
		if s.eps != nil { // an episode is open
			kept = append(kept, s)
		} else {
			s.inFiring = false
		}
	}
	clear(d.firing[len(kept):])
	d.firing = kept
	return out
}

// movedHealthy reports whether the traffic that moved away from s is served without the error
// rates s fired on: each firing category's rate stays below the test's minimum-effect alternative.
func (d *Detector) movedHealthy(s *series) bool {
	for c := range numCategories {
		if s.episode(c) == nil || s.ref == nil {
			continue
		}
		if s.movedN < d.th.minRequests || s.movedErrs[c]/s.movedN > s.ref.errP[c].rate()*s.ref.errP[c].r[0] {
			return false
		}
	}
	return true
}

// latencyGate is the relative rise of the tested quantile a latency anomaly against a baseline of
// this kind needs: halfway between what the null hypothesis tolerates and the minimum effect, so
// load noise stays quiet and a regression of the minimum effect is reported.
func latencyGate(tn *tuning, kind string) float64 {
	return (tn.latencyTolerance(kind) + tn.cfg.LatencyMinEffect) / 2
}

// latencyThresholds are the thresholds of s's latency test q against its reference: the latency
// tests' with the reference's share of Alpha (thresholdsFor); evidence tempered by the
// reference's latency dispersion (refLatPhi), the excess's by its per-second part alone
// (excessParams); and by default, for a quantile whose test is read as its buckets end (p50 and
// p90: perRequest), a cap on one update's evidence of half the first run's bound plus 0.1 nats,
// so that such a test needs two buckets' evidence to fire, and two suffice (see
// Config.LatencyBucketCap).
func (d *Detector) latencyThresholds(s *series, q int) thresholds {
	r := s.ref
	th := d.thresholdsFor(d.latTh, r)
	phi, _ := d.refLatPhi(s, q)
	th.temper, th.exTemper = temperBy(phi), temperBy(float64(r.latPhi[q]))
	if d.cfg.LatencyBucketCap == 0 && !d.perRequest(r, q) {
		th.bucketCap = th.bucketCap/2 + 0.05
	}
	return th
}
