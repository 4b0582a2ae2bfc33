package detect

import (
	"fmt"
	"math"
	"strings"
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
// The load is read twice, and the larger reading counts: the component's own requests, and its
// service's, every component's. A service's components are the endpoints of one binary and share
// its processes: a spike on one endpoint fills the queues, the cpu and the connection pools the
// others wait on too. A spike ×3 on a service's busier endpoint slowed a quiet one's latencies by
// 45 % and fired the quiet one's tests in 40 of 40 healthy deploys while the quiet one's own
// requests did not move.
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

// usualLoads are the usual requests per bucket a bucket's load is read against: its component's
// (comp) and its service's (svc). 0: not known yet, and that load is not read.
type usualLoads struct{ comp, svc float64 }

// readShift is b's shift against r at the load b has shown so far (see bucketShift), as its
// latency tests read it now. Once a test has counted part of b (bucket.useLatency) the shift
// only rises, so what it counted stays counted at a threshold no higher than the one b is read
// at now (bucket.unusedLatency). Until then the latest reading of b's count replaces an earlier
// one: a read within the bucket after a request in its first tenth reads the rate off a few
// requests, and the most of those readings was biased upwards (a canary with every latency ×2,
// which doubled its component's load, was found a bucket later within buckets than at their
// close). A bucket waiting out the allowed lateness, whose count its lines no longer hold, keeps
// what it was read at last.
func (d *Detector) readShift(s *series, b *bucket, r *reference, closed bool) int {
	cur, known := d.bucketShiftKnown(s, b.idx, r.usual, closed)
	shift := int32(cur)
	switch {
	case b.used != nil && (!known || b.used.counted()):
		b.used.latShift = max(b.used.latShift, shift)
		return int(b.used.latShift)
	case b.used != nil:
		b.used.latShift = shift
	case shift > 0:
		b.used = &bucketUse{latShift: shift}
	}
	return int(shift)
}

// bucketShift is how many sketch bins the latency thresholds of s's bucket idx rise at its load
// against u: the larger of its component's reading and its service's. Each is that line's
// requests across versions, cohorts and blocks (series.load, series.svc): a canary's baseline
// cohort serves half of what its version served before the canary took its share, and a rolling
// update moves requests between versions, neither of which is load. A closing bucket (closed)
// is read by the requests in it (the close counts them first, advanceTo). An open one is read
// by them too while it is the newest bucket the line has requests in (over the part of its width
// the newest event reached) or the one before (as it ended); an older one, waiting out the
// allowed lateness, reads 0 (readShift keeps what it was read at then).
func (d *Detector) bucketShift(s *series, idx int64, u usualLoads, closed bool) int {
	shift, _ := d.bucketShiftKnown(s, idx, u, closed)
	return shift
}

// bucketShiftKnown is bucketShift, and whether both lines still hold bucket idx's count.
func (d *Detector) bucketShiftKnown(s *series, idx int64, u usualLoads, closed bool) (int, bool) {
	nc, fc, kc := d.lineLoad(s.load, idx, closed)
	ns, fs, ks := d.lineLoad(s.svc, idx, closed)
	return max(d.loadShift(nc, u.comp, fc), d.loadShift(ns, u.svc, fs)), kc && ks
}

// lineLoad is ln's requests in bucket idx as bucketShift reads them, the share of the bucket's
// width they were served over, and whether ln still holds them (known).
func (d *Detector) lineLoad(ln *line, idx int64, closed bool) (n, frac float64, known bool) {
	frac, known = 1, true
	switch {
	case closed:
		n = ln.closedN(idx)
	case ln.liveB == idx:
		n = float64(ln.liveN)
		if d.seen && d.clock.index(d.maxTS) <= idx {
			w := float64(d.clock.width)
			frac = clamp(float64(d.maxTS.Sub(d.clock.start(idx)))/w, minLoadFrac, 1)
		}
	case ln.liveB-1 == idx:
		n = float64(ln.prevN)
	default:
		known = false
	}
	return n, frac, known
}

// usualLoads are the usual requests per bucket of s's component and of its service, as their
// lines have them (the rate's EWMA, whose bursts are winsorised), each 0 before it is ready. A
// version baseline keeps what they were when frozen (reference.usual), so a load that rose after
// the deploy and stayed is still read as load an hour later.
func (s *series) usualLoads() usualLoads {
	return usualLoads{comp: s.load.usualRate(), svc: s.svc.usualRate()}
}

// usualRate is ln's usual requests per bucket, or 0 before its rate is ready.
func (ln *line) usualRate() float64 {
	if ln.tput.ready {
		return ln.tput.forecast()
	}
	return 0
}

// count adds n requests in bucket b to ln's count of the bucket being closed (accN), and
// appends ln to lines when b starts that count.
func (ln *line) count(b int64, n float64, lines []*line) []*line {
	if ln.accB != b {
		if ln.accB != b-1 {
			ln.runB = b
		}
		ln.accB, ln.accN = b, 0
		lines = append(lines, ln)
	}
	ln.accN += n
	return lines
}

// closedN is the line's requests in bucket b, when b is the bucket its close counted last.
func (ln *line) closedN(b int64) float64 {
	if ln.accB == b {
		return ln.accN
	}
	return 0
}

// usualLoads are the loads the profile's latencies were served at: its component's and its
// service's requests per bucket, decayed as the profile is, so that a daily cycle's peak is read
// against the hour the profile remembers and not against the last few minutes.
func (o *ownProfile) usualLoads() usualLoads {
	if !(o.loadW > 0) {
		return usualLoads{}
	}
	return usualLoads{comp: o.loadN / o.loadW, svc: o.loadSvcN / o.loadW}
}

// live counts n requests of a component aggregate in bucket b towards the newest bucket of its
// component's or its service's line (bucketShift); a late request for an older bucket is left to
// that bucket's close.
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

// loadNote says how s's latency anomaly's buckets were read at their load against u, for its
// evidence: the usual rates, the share, and what the latest closed bucket's load divided its
// latencies by. None when the share is off or neither usual rate is known yet.
func (d *Detector) loadNote(u usualLoads, s *series) string {
	if d.cfg.LatencyLoadShare <= 0 || !(u.comp > 0) && !(u.svc > 0) {
		return ""
	}
	secs := time.Duration(d.cfg.BucketWidth).Seconds()
	// The service's reading is named only when other components serve too: a service of one
	// component has the same load twice.
	var whose []string
	if u.comp > 0 {
		whose = append(whose, fmt.Sprintf("whose component served more than %d Poisson standard deviations above its usual %.4g req/s", loadMargin, u.comp/secs))
	}
	if u.svc > u.comp {
		margin := "as clearly more than"
		if len(whose) == 0 {
			margin = fmt.Sprintf("more than %d Poisson standard deviations above", loadMargin)
		}
		whose = append(whose, fmt.Sprintf("whose service (every component: they share its processes) served %s its usual %.4g req/s", margin, u.svc/secs))
	}
	bucket, factor := whose[0], "(its rate over the usual − 1)"
	if len(whose) > 1 {
		bucket, factor = strings.Join(whose, ", or ")+",", "(that rate over its usual − 1), the larger if both,"
	}
	note := fmt.Sprintf("latencies read at their load (latency_load_share %.3g): a bucket %s has its latencies divided by 1 + %.3g·%s before they are counted",
		d.cfg.LatencyLoadShare, bucket, d.cfg.LatencyLoadShare, factor)
	idx := s.closed.idx
	comp, svc := d.loadShift(s.load.closedN(idx), u.comp, 1), d.loadShift(s.svc.closedN(idx), u.svc, 1)
	switch {
	case comp > 0 && comp >= svc:
		note += fmt.Sprintf("; the latest bucket's by %.3g, at its component's load", d.loadFactor(comp))
	case svc > 0:
		note += fmt.Sprintf("; the latest bucket's by %.3g, at its service's load", d.loadFactor(svc))
	}
	return note
}
