package detect

import (
	"fmt"
	"math"
	"time"
)

// Latency read at its load (Config.LatencyLoadShare).
//
// Load slows requests: a fuller queue, a busier database, a hotter cache lock. A traffic spike
// ×3 that slowed every latency by 30 % fired the latency tests in 40 of 40 healthy deploys, and
// one that slowed them by 60 % the own profile's in 40 of 40 series no deploy touched: the
// spike's buckets are far above any tolerance a test can afford on a steady rate. The tests now
// read each bucket's latencies at its load: a bucket in which the component served L times its
// usual rate has its thresholds raised by 1 + LatencyLoadShare·(L − 1) before its requests are
// counted against them, which is the same as lowering its latencies by that factor. L is read
// only when the bucket's count is loadMargin Poisson standard deviations above the usual rate,
// so a steady rate's noise seldom moves anything, and a quiet bucket (L < 1) is read as it is:
// a test that found a regression in a quiet bucket because its latencies were read higher
// would be firing on the model, not the data.
//
// Why not learn the share: the baseline is the last 5 to 10 minutes of the previous version,
// and its load seldom moves enough in them to fit a slope (cpu's load line has the same
// problem, and reads cpu at the load only within the loads the version served). A share
// given in config is a statement about the service the user can check against its dashboards;
// 0.3 covers a service whose latency rises by 18 % at a daily peak 60 % busier.

// loadMargin is how many Poisson standard deviations above the usual rate a bucket's count must
// be before its load is read (loadShift).
const loadMargin = 3

// minLoadFrac is the least share of a bucket's width its load is read over while it is open: the
// first requests of a bucket say little about its rate, and the margin takes care of the rest.
const minLoadFrac = 0.1

// maxLoadShift bounds a bucket's shift, in sketch bins: ×11 at the default accuracy, beyond any
// load the share is meant for (a restored snapshot is held to it too).
const maxLoadShift = 48

// loadShift is how many sketch bins a bucket's latency thresholds rise at its load: n requests
// over frac of the bucket's width, against usual requests per bucket. 0 when the load is not
// clearly above the usual rate, or the share is off.
func (d *Detector) loadShift(n, usual, frac float64) int {
	e := d.cfg.LatencyLoadShare
	if e <= 0 || !(usual > 0) || n <= 0 {
		return 0
	}
	m := usual * frac
	if n <= m+loadMargin*math.Sqrt(m) {
		return 0
	}
	return min(int(math.Log(1+e*(n/m-1))/d.sk.logGamma), maxLoadShift)
}

// loadFactor is what a shift of k bins divides latencies by.
func (d *Detector) loadFactor(k int) float64 {
	return math.Exp(float64(k) * d.sk.logGamma)
}

// readShift raises b's shift against r to the load b has shown so far, and returns it. The load
// is that of s's component, across its versions, cohorts and blocks (series.load): a canary's
// baseline cohort serves half of what its version served before the canary took its share, and
// a rolling update moves requests between versions, neither of which is load. A closing bucket
// (closed) is read by its component's requests in it (the close counts them first, advanceTo).
// An open one is read by them too while it is the newest bucket the component has requests in
// (over the part of its width the newest event reached) or the one before (as it ended); an
// older one, waiting out the allowed lateness, keeps what it was read at then. The shift only
// rises within a bucket, so what a test read of it earlier stays counted at a threshold no
// higher than the one it is read at now (bucket.unusedLatency).
func (d *Detector) readShift(s *series, b *bucket, r *reference, closed bool) int {
	ld := s.load
	n, frac := 0.0, 1.0
	switch {
	case closed:
		n = ld.closedN(b.idx)
	case ld.liveB == b.idx:
		n = float64(ld.liveN)
		if d.seen && d.clock.index(d.maxTS) <= b.idx {
			w := float64(d.clock.width)
			frac = clamp(float64(d.maxTS.Sub(d.clock.start(b.idx)))/w, minLoadFrac, 1)
		}
	case ld.liveB-1 == b.idx:
		n = float64(ld.prevN)
	}
	shift := int32(d.loadShift(n, r.usual, frac))
	switch {
	case b.used != nil:
		b.used.latShift = max(b.used.latShift, shift)
		return int(b.used.latShift)
	case shift > 0:
		b.used = &bucketUse{latShift: shift}
	}
	return int(shift)
}

// usualLoad is the usual requests per bucket of s's component, as its throughput test has it
// (the rate's EWMA, whose bursts are winsorised), or 0 before that is ready. A version baseline
// keeps what it was when frozen (reference.usual), so a load that rose after the deploy and
// stayed is still read as load an hour later.
func (s *series) usualLoad() float64 {
	if t := &s.load.tput; t.ready {
		return t.forecast()
	}
	return 0
}

// closedN is the line's requests in bucket b, when b is the bucket its close counted last.
func (ln *line) closedN(b int64) float64 {
	if ln.accB == b {
		return ln.accN
	}
	return 0
}

// usualLoad is the load the profile's latencies were served at: its component's requests per
// bucket, decayed as the profile is, so that a daily cycle's peak is read against the hour the
// profile remembers and not against the last few minutes.
func (o *ownProfile) usualLoad() float64 {
	if !(o.loadW > 0) {
		return 0
	}
	return o.loadN / o.loadW
}

// live counts n requests of a component aggregate in bucket b towards the newest bucket of its
// load line (readShift); a late request for an older bucket is left to that bucket's close.
func (ln *line) live(b int64, n float64) {
	switch {
	case b == ln.liveB:
		ln.liveN += float32(n)
	case b == ln.liveB+1:
		ln.liveB, ln.prevN, ln.liveN = b, ln.liveN, float32(n)
	case b > ln.liveB:
		ln.liveB, ln.prevN, ln.liveN = b, 0, float32(n)
	}
}

// loadNote says how a latency anomaly's buckets were read at their load, for its evidence: the
// usual rate, the share, and what the latest closed bucket's load (its component's n requests)
// divided its latencies by. None when the share is off or the usual rate is not known yet.
func (d *Detector) loadNote(usual, n float64) string {
	if d.cfg.LatencyLoadShare <= 0 || !(usual > 0) {
		return ""
	}
	secs := time.Duration(d.cfg.BucketWidth).Seconds()
	note := fmt.Sprintf("latencies read at their load (latency_load_share %.3g): a bucket whose component served more than %d Poisson standard deviations above its usual %.4g req/s has its latencies divided by 1 + %.3g·(its rate over the usual − 1) before they are counted",
		d.cfg.LatencyLoadShare, loadMargin, usual/secs, d.cfg.LatencyLoadShare)
	if last := d.loadShift(n, usual, 1); last > 0 {
		note += fmt.Sprintf("; the latest bucket's by %.3g", d.loadFactor(last))
	}
	return note
}
