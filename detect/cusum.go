package detect

import (
	"fmt"
	"math"
	"slices"
)

// warmupCap bounds how many bucket values a robust reference collects before it freezes; it is
// a fixed array so a series' memory does not grow, allocated on the first value and released
// once the reference is frozen: most series never report cpu or memory, and a frozen reference
// needs only its center and scale.
const warmupCap = 32

// robustRef is a median/MAD reference frozen after a warm-up. Frozen on purpose: a reference that
// kept adapting would follow a slow memory leak and never see it.
type robustRef struct {
	vals          *[warmupCap]float32 // nil before the first value and once ready
	k             uint8
	ready         bool
	spread        float32 // the spread before the floor: scale is the larger of it and the floor
	center, scale float64
}

// add feeds one bucket value until need values are in, then freezes the reference. The scale is
// 1.4826·MAD (the normal-consistent MAD), floored at minRel·|center| so a perfectly flat warm-up
// does not make every later wiggle enormous.
func (r *robustRef) add(v float64, need int, minRel float64) {
	if r.ready {
		return
	}
	if r.vals == nil {
		r.vals = new([warmupCap]float32)
	}
	r.vals[r.k] = float32(v)
	r.k++
	if int(r.k) < need {
		return
	}
	vals := make([]float64, r.k)
	for i := range vals {
		vals[i] = float64(r.vals[i])
	}
	r.center = median(vals)
	for i := range vals {
		vals[i] = math.Abs(vals[i] - r.center)
	}
	r.spread = float32(1.4826 * median(vals))
	r.scale = math.Max(float64(r.spread), math.Max(minRel*math.Abs(r.center), 1e-9))
	r.ready, r.vals = true, nil
}

func median(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// cusum is a one-sided CUSUM of standardised deviations: s = max(0, s + w·(z - k)), firing at h,
// where a value that stands for w buckets (a resource sampled every w buckets) weighs w. While
// firing, s is capped at h so that recovery (s back to 0) takes a bounded time.
type cusum struct {
	s      float64
	firing bool
	start  int64 // first bucket of the current excursion (s left 0)
}

func (c *cusum) update(z, k, w, h float64, b int64) rateVerdict {
	if c.s == 0 {
		c.start = b - int64(w) + 1 // the first bucket the value stands for
	}
	c.s = math.Max(0, c.s+w*(z-k))
	switch {
	case !c.firing && c.s >= h:
		c.firing = true
		c.s = h
		return verdictFired
	case c.firing && c.s == 0:
		c.firing = false
		return verdictRecovered
	case c.firing:
		c.s = math.Min(c.s, h)
	}
	return verdictNone
}

// ewma tracks a slowly moving mean (a line's request rate), following daily cycles while a
// sudden drop stands out against it. With a trend (Holt's linear method) it follows a slope too:
// a plain EWMA lags a rate that falls steadily, the evening side of a daily cycle, by its slope
// times its time constant, and the lag reads as a drop.
type ewma struct {
	mean  float64 // the level, after the last value
	trend float64 // per value; 0 without a trend
	n     int32   // values folded in, saturating: only its first few matter (add)
	ready bool
}

// forecast is the expected next value: the level moved on by the trend.
func (e *ewma) forecast() float64 {
	return e.mean + e.trend
}

// add folds v in. Until 1/alpha values are in, the weight is 1/n (a plain running mean), so the
// first bucket does not dominate the estimate for a whole half-life. beta smooths the trend (0:
// none); it is learnt once the level is ready, from the level's moves.
func (e *ewma) add(v, alpha, beta float64, warmup int) {
	if e.n < math.MaxInt32 {
		e.n++
	}
	prev := e.mean
	if e.ready {
		e.mean = e.forecast()
	}
	e.mean += max(alpha, 1/float64(e.n)) * (v - e.mean)
	if e.ready {
		e.trend += beta * (e.mean - prev - e.trend)
	}
	if int(e.n) >= warmup {
		e.ready = true
	}
}

// loadFit is an exponentially weighted least-squares line of a series' resource against its
// load: per bucket, the mean cpu (or memory) sample against the series' requests. CPU follows
// load, so a level frozen at one time says nothing at another. A new version's cpu is compared
// with the most its previous version's would have used at the load the new version serves (see
// bound); its memory with the previous version's recent level, the fit's mean and spread of y
// (memLevel).
//
// The load is the series' requests, not requests per cpu sample: cpu may be sampled on requests
// (as in the event schema's example), and then requests per sample stay flat while the load
// moves.
//
// The sums are a weighted Welford's: w is the weight of the buckets folded in, mx and my their
// means, sxx, sxy and syy the centred co-moments. A bucket's weight halves every half-life of
// buckets after it (Config.ResourceHalfLife), so the line is the version's recent history, as the
// other baselines are.
type loadFit struct {
	w, mx, my, sxx, sxy, syy float64
	last                     int64  // the last bucket folded in (or paused at)
	hold                     int64  // the last bucket in which a test against the line is inconclusive after a load beyond its reach
	n                        uint32 // samples folded in (one per bucket that had any)
	cov                      uint32 // buckets the samples cover (see add)
}

// coverCap bounds how many buckets one sample covers (loadFit.cov): the buckets since the
// sample before it, as a scraper's interval, up to this many; a longer gap is a silence, not an
// interval.
const coverCap = 600

// spanCap bounds the buckets one sample stands for in a test (sampleSpan): a scraper's interval
// is seldom above a minute, and a sample after a longer silence says how the resource is now,
// not how it was all along.
const spanCap = 60

// sampleSpan is how many buckets a sample in bucket b stands for: those since f's previous
// sample, up to spanCap; 1 for the first, and after a longer silence.
func sampleSpan(f *loadFit, b int64) float64 {
	if f.n == 0 || b-f.last <= 1 || b-f.last > spanCap {
		return 1
	}
	return float64(b - f.last)
}

// minResourceSamples is how many samples a line needs, on top of covering a warm-up's buckets,
// before it is read (warm): a spread from fewer says little. At one sample a bucket the warm-up
// is the stricter of the two; a resource scraped every 15 s covers 30 buckets in 3 samples.
const minResourceSamples = 5

// over says what f was fitted over, for an anomaly's note: its buckets, or its samples and the
// buckets they cover when they came less often than every bucket.
func (f *loadFit) over() string {
	if f.cov == f.n {
		return fmt.Sprintf("%d buckets", f.n)
	}
	return fmt.Sprintf("%d samples covering %d buckets", f.n, f.cov)
}

// loadUnit names the load a cpu line is fitted against, for an anomaly's note: the process's
// (byProcess, process_rps) or the series' own requests.
func loadUnit(byProcess bool) string {
	if byProcess {
		return "requests a bucket of the whole process (process_rps)"
	}
	return "requests a bucket"
}

// warm says f's samples cover need buckets and number at least minResourceSamples.
func (f *loadFit) warm(need int) bool {
	return int(f.cov) >= need && f.n >= minResourceSamples
}

// memLevel is a series' memory: the weighted mean and spread of its bucket means (loadFit's
// sums, read for y alone) and the means of its last blocks, which say whether it has levelled
// off.
type memLevel struct {
	loadFit
	blocks levelBlocks
}

// add folds in bucket b: load x, memory y.
func (m *memLevel) add(b int64, x, y, halfLife float64) {
	m.loadFit.add(b, x, y, halfLife)
	m.blocks.add(b, y)
}

// line is m's sums, nil when m is.
func (m *memLevel) line() *loadFit {
	if m == nil {
		return nil
	}
	return &m.loadFit
}

// levelBlocks are the means of a resource over blocks of levelBlock buckets: the one being
// filled (sum, count, index) and the last ones filled (m, newest first, in blocks i; filled
// counts them), whose trend says whether the level still moves (see levelled). back is how many
// blocks before the newest its rise is read from, set by how many samples the newest held.
type levelBlocks struct {
	sum    float64
	idx    int64
	m      [levelKeep]float32
	i      [levelKeep]int32
	n      uint32
	filled uint8
	back   uint8
}

// levelKeep is how many filled blocks a levelBlocks keeps: the rise is read over at most
// levelKeep-1 blocks.
const levelKeep = 6

// levelBlock is the length, in buckets, of the blocks whose means say whether a level still
// rises. Means of hard blocks forget a start-up's growth a few blocks on; an exponentially
// weighted mean keeps a share of it for many half-lives, and a line fitted over the history
// still slopes with it. The rise is read from the newest filled block and the one two before
// it: with a minute of one sample a second in each, memory whose samples wander by 3 MB is
// known to rise by less than 2.5 % of 512 MB over ten minutes with 4.7 standard deviations
// to spare, while growth that would have added more is seen.
//
// Memory scraped every 15 s leaves four samples in a block, whose mean wanders four times as
// much: read two blocks back, one flat series in nine would look as if it still rose. The rise
// is then read further back (levelBack), as far as keeps the margin near that of one sample a
// second: five blocks back at 15 s (3 standard deviations), where a start-up's growth also
// stays in view longer.
const levelBlock = 60

// levelBack is how many blocks before the newest its rise is read from, for a newest block of
// n samples: two at one sample a bucket, more as samples thin out, so the rise's standard
// error, which falls with the blocks between and with √n, stays near the same.
func levelBack(n uint32) uint8 {
	k := math.Ceil(2 * math.Sqrt(levelBlock/math.Max(float64(n), 1)))
	return uint8(min(max(k, 2), levelKeep-1))
}

// add folds y of bucket b into its block's mean.
func (l *levelBlocks) add(b int64, y float64) {
	i := b / levelBlock
	if l.n > 0 && i != l.idx {
		copy(l.m[1:], l.m[:levelKeep-1])
		copy(l.i[1:], l.i[:levelKeep-1])
		l.m[0], l.i[0] = float32(l.sum/float64(l.n)), int32(l.idx)
		l.filled = min(l.filled+1, levelKeep)
		l.back = levelBack(l.n)
		l.sum, l.n = 0, 0
	}
	l.idx = i
	l.sum += y
	l.n++
}

// levelled says the resource has stopped rising: at the rate between the newest filled block
// and the one back blocks before it (two at one sample a bucket), it would rise by no more than
// share of its level over the next horizon buckets. Not before those blocks are filled. A
// process's memory grows for a while after a start (caches fill, a heap expands) and then
// levels off; a level taken while it still grows is below where it settles.
func (l *levelBlocks) levelled(horizon, share float64) bool {
	k := max(l.back, 2)
	if l.filled <= k {
		return false
	}
	rate := float64(l.m[0]-l.m[k]) / float64((int64(l.i[0])-int64(l.i[k]))*levelBlock)
	return rate*horizon <= share*math.Abs(float64(l.m[0]))
}

// add folds in bucket b: load x, resource y. halfLife is in buckets.
func (f *loadFit) add(b int64, x, y, halfLife float64) {
	lambda, gap := 1.0, int64(1)
	if f.n > 0 {
		lambda = math.Exp2(-float64(b-f.last) / halfLife)
		gap = min(max(b-f.last, 1), coverCap)
	}
	f.n++
	f.cov = uint32(min(int64(f.cov)+gap, math.MaxUint32))
	f.last = b
	f.w = lambda*f.w + 1
	dx, dy := x-f.mx, y-f.my
	f.mx += dx / f.w
	f.my += dy / f.w
	f.sxx = lambda*f.sxx + dx*(x-f.mx)
	f.sxy = lambda*f.sxy + dx*(y-f.my)
	f.syy = lambda*f.syy + dy*(y-f.my)
}

// pause keeps the line as it is through bucket b: it neither learns b nor decays over it. A
// series' own line pauses while its cpu test fires, so a regression does not become its normal.
func (f *loadFit) pause(b int64) {
	f.last = b
}

// loadReach is how far above the loads a line has seen it is trusted, as a share of their mean,
// on top of three of their standard deviations. A bucket further out is inconclusive: cpu can
// grow faster than load far from where it was measured (contention), and a traffic spike is not
// a regression.
const loadReach = 0.25

// bound gives the most cpu the line's version would have used at load x, and the standard
// error of a bucket's cpu about its line. The most is the version's mean cpu, in proportion to x
// where x is above the mean load: cpu does not fall as load rises, nor grow faster than load
// (its idle share is not negative). The fitted slope is not used for it. The requests of a bucket
// are a noisy measure of the load that drives cpu, and a slope fitted to them is too shallow
// (regression dilution): extrapolated upwards, it would call a busier version a regression.
//
// The standard error adds to the spread of cpu about the line what the most's own noise
// contributes: x counts requests that arrive at random (Poisson, variance x) about the load that
// drives cpu, and the most moves with x at up to the version's mean cpu per request. At 10
// req/s that is a third of the cpu; without it a daily cycle, whose load moves while x jitters
// about it, read as a cpu regression in half the deploys of the scenario suite.
//
// x may be a mean over span buckets (a resource sampled less often than every bucket is compared
// at the series' mean load since its previous sample, see testResources); its Poisson variance
// is then x/span.
//
// ok is false until the line is warm (need buckets), and when x is beyond its reach.
func (f *loadFit) bound(x, span float64, need int) (most, se float64, ok bool) {
	if !f.warm(need) || f.w <= 2 || f.mx <= 0 {
		return 0, 0, false
	}
	if x-f.mx > 3*math.Sqrt(f.sxx/f.w)+loadReach*f.mx {
		return 0, 0, false
	}
	b := f.slope()
	rss := math.Max(0, f.syy-2*b*f.sxy+b*b*f.sxx)
	perReq := f.my / f.mx
	return f.my * max(1, x/f.mx), math.Sqrt(rss/(f.w-2)*(1+1/f.w) + perReq*perReq*x/max(span, 1)), true
}

// at is bound in bucket b, and is inconclusive (ok false) for need buckets after one whose load
// was beyond the line's reach as well: a utilisation measured over a window still carries the
// spike after the load has fallen back.
func (f *loadFit) at(b int64, x, span float64, need int) (most, se float64, ok bool) {
	if !f.warm(need) {
		return 0, 0, false
	}
	if most, se, ok = f.bound(x, span, need); !ok {
		f.hold = b + int64(need)
		return 0, 0, false
	}
	return most, se, b > f.hold
}

// slope is the line's cpu per request, at least 0. It only takes the load's share out of the
// spread of cpu about the line.
func (f *loadFit) slope() float64 {
	if f.sxx <= 0 {
		return 0
	}
	return math.Max(0, f.sxy/f.sxx)
}
