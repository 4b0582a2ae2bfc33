package detect

import (
	"cmp"
	"log/slog"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Option configures a Detector beyond its Config.
type Option func(*Detector)

// WithLogger sets the logger; the default discards. Episode changes log at Info, late events
// and a full max_series at Warn (summed up: see logLate), other per-event problems at Debug.
func WithLogger(l *slog.Logger) Option {
	return func(d *Detector) {
		if l != nil {
			d.log = l.With("stage", "detect")
		}
	}
}

// WithBlockResolver maps an error_site to a block of the component (from the catalog's block line
// ranges) for failed requests that carry no block. The resolved block is used only as evidence of
// the component aggregate (which block the errors concentrate on): the request's successes carry
// no site, so a block series built from resolved errors would see only failures.
func WithBlockResolver(f func(service, component, site string) string) Option {
	return func(d *Detector) { d.resolveBlock = f }
}

// Detector turns telemetry into anomalies. It is not safe for concurrent use: one goroutine
// drives it with Observe and Advance.
type Detector struct {
	cfg          Config
	log          *slog.Logger
	resolveBlock func(service, component, site string) string
	sk           *sketches
	clock        bucketClock
	th           thresholds
	gateUpper    float64    // log(1/CanaryConcurrentAlpha), the canary gate's threshold (0: no gate)
	latTh        thresholds // d.th with the latency tests' bucket cap (Config.LatencyBucketCap)
	epochBuckets int64
	idleBuckets  int64
	tputAlpha    float64
	tputBeta     float64 // the throughput trend's smoothing (0: none)
	pool         pool
	// base is what every series is detected with, and tunings, by service, what the series of
	// the services Config.Services names are (tune); anyWarmup says whether any has a
	// LatencyWarmup.
	base      *tuning
	tunings   map[string]*tuning
	anyWarmup bool

	series map[SeriesKey]*series
	// deploys lists the series of each service, version and cohort (deployKey), linked through
	// series.deployNext: what a deploy's share of Alpha is counted over (deployShare), without a
	// scan of every series the detector tracks.
	deploys map[deployKey]*series
	lines   map[lineKey]*line
	active  []*series // series with open buckets
	firing  []*series // series with an open episode
	// quiet lists the units whose silence the throughput test reads (watchesSilence): those
	// that served in the last bucket closed, and those silent since, for up to silenceHorizon
	// buckets. quietNext is the list being built for the next bucket.
	quiet, quietNext []*line

	movedBuckets int64
	ownWarmup    int64 // buckets a series serves before its own profile starts (0: never)
	// instances holds, with LatencyWarmup, the first and last bucket each instance of a version
	// served in (TelemetryEvent.Instance): each instance warms up from its own start.
	instances     map[instanceKey]*instanceSeen
	instancesFull bool    // maxInstances was reached and said so
	seriesFull    bool    // MaxSeries was reached and said so, since a series was last started
	ownHalfLife   float64 // the own profile's half-life, in buckets
	resHalfLife   float64 // ResourceHalfLife, in buckets
	bucketSeconds float64 // BucketWidth, in seconds
	levelBuckets  float64 // levelHorizon, in buckets
	growthBuckets int64   // MemoryGrowthLimit, in buckets

	maxTS     time.Time
	seen      bool
	closed    int64 // every bucket <= closed is closed
	nextSweep int64
	late      uint64
	// lateLogged says a late event was logged, lateLogB in which closed bucket and lateLogN how
	// many late events had been counted then: late events are summed up in a warning at most
	// once per lateLogEvery of event time.
	lateLogged bool
	lateLogB   int64
	lateLogN   uint64
	invalid    uint64
	overLimit  uint64       // events not detected on: their series would exceed MaxSeries
	lastKey    [2]SeriesKey // Observe's cache: the last block series and component aggregate
	lastSeries [2]*series
	scratch    []byte // pack's encoding buffer
	// out holds what the tests found since Advance last returned, in the order they found it.
	out []schemas.Anomaly
	// trialBank is the second bank of a latency test's copy read within a bucket (tryLatency).
	trialBank secondBank
	// advanceTo's working lists, kept so a bucket's close allocates nothing: the bucket indexes
	// to close, the series closing one, the lines whose throughput it touched, the services
	// whose requests it counted.
	idxs     []int64
	closing  []*series
	touched  []*line
	services []*line
}

// New builds a detector. An invalid cfg falls back to DefaultConfig (the error is logged): a
// detector must run, and Validate is where a caller learns about a bad config.
func New(cfg Config, opts ...Option) *Detector {
	d := &Detector{log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(d)
	}
	if err := cfg.Validate(); err != nil {
		d.log.Error("falling back to the default detect config", "err", err)
		cfg = DefaultConfig()
	}
	cfg.LatencyQuantiles = slices.Clone(cfg.LatencyQuantiles)
	d.cfg = cfg
	sk, err := newSketches(cfg.SketchRelativeAccuracy, cfg.SketchMaxBins)
	if err != nil { // unreachable after Validate
		panic(err)
	}
	d.sk = sk
	d.pool.sk = sk
	width := time.Duration(cfg.BucketWidth)
	d.clock = bucketClock{width: int64(width)}
	d.th = thresholds{
		upper:       math.Log(1 / cfg.Alpha),
		lower:       math.Log(cfg.Beta),
		minRequests: float64(cfg.MinRequests),
		recovery:    cfg.RecoveryBuckets,
	}
	if cfg.CanaryConcurrentAlpha > 0 {
		d.gateUpper = math.Log(1 / cfg.CanaryConcurrentAlpha)
	}
	d.latTh = d.th
	if d.latTh.bucketCap = cfg.LatencyBucketCap; d.latTh.bucketCap == 0 {
		d.latTh.bucketCap = d.th.upper + 0.1
	}
	d.epochBuckets = int64(time.Duration(cfg.HistoryEpoch) / width)
	d.idleBuckets = int64(time.Duration(cfg.IdleTTL) / width)
	d.movedBuckets = int64(time.Duration(cfg.TrafficMovedAfter) / width)
	d.ownWarmup = int64(time.Duration(cfg.OwnProfileWarmup) / width)
	d.setTunings(cfg)
	d.ownHalfLife = float64(cfg.OwnProfileHalfLife) / float64(width)
	d.resHalfLife = float64(cfg.ResourceHalfLife) / float64(width)
	d.bucketSeconds = width.Seconds()
	d.levelBuckets = float64(levelHorizon) / float64(width)
	d.growthBuckets = int64(time.Duration(cfg.MemoryGrowthLimit) / width)
	d.tputAlpha = 1 - math.Exp(-math.Ln2*float64(width)/float64(cfg.ThroughputHalfLife))
	if cfg.ThroughputTrendHalfLife > 0 {
		d.tputBeta = 1 - math.Exp(-math.Ln2*float64(width)/float64(cfg.ThroughputTrendHalfLife))
	}
	d.series = make(map[SeriesKey]*series)
	d.deploys = make(map[deployKey]*series)
	d.lines = make(map[lineKey]*line)
	d.instances = make(map[instanceKey]*instanceSeen)
	d.closed = math.MinInt64
	return d
}

// Config returns the configuration in effect.
func (d *Detector) Config() Config { return d.cfg }

// SeriesCount is the number of series held (block series and component aggregates).
func (d *Detector) SeriesCount() int { return len(d.series) }

// LateEvents counts events dropped because their bucket was already closed. They are dropped,
// not folded in: a closed bucket has been tested, and letting late data change a past verdict
// would make the output depend on arrival timing, which replay could not reproduce.
func (d *Detector) LateEvents() uint64 { return d.late }

// InvalidEvents counts events dropped because they lack a service, component, version or time.
func (d *Detector) InvalidEvents() uint64 { return d.invalid }

// OverLimitEvents counts events not detected on because their series would have exceeded
// Config.MaxSeries (a block's event whose component aggregate took it is not counted).
func (d *Detector) OverLimitEvents() uint64 { return d.overLimit }

// Watermark is the newest event time seen minus AllowedLateness; zero before any event.
func (d *Detector) Watermark() time.Time {
	if !d.seen {
		return time.Time{}
	}
	return d.maxTS.Add(-time.Duration(d.cfg.AllowedLateness))
}

// moveTo takes the newest event time seen to ts, of bucket b, if ts is newer, and closes what the
// new watermark passes.
func (d *Detector) moveTo(ts time.Time, b int64) {
	if d.seen && !ts.After(d.maxTS) {
		return
	}
	ended := d.seen && b > d.clock.index(d.maxTS)
	d.maxTS, d.seen = ts, true
	// Close what the new watermark passes before the event is folded, as the event that moves it
	// arrives: the tests then see the same state before every event whatever the batching, which
	// an error test firing within a bucket depends on.
	if last := d.clock.index(d.Watermark()) - 1; last > d.closed {
		d.advanceTo(last)
	}
	if ended && d.cfg.FireWithinBucket {
		d.readEnded()
	}
}

// Observe folds one event into its series' open bucket. It does not retain ev. A clock tick
// (schemas.ClockTick) moves event time on and is folded into nothing.
func (d *Detector) Observe(ev *schemas.TelemetryEvent) {
	if ev == nil || ev.Service == "" || ev.Component == "" || ev.Version == "" || ev.TS.IsZero() {
		d.invalid++
		d.log.Debug("dropping invalid telemetry event")
		return
	}
	b := d.clock.index(ev.TS)
	if ev.IsClockTick() {
		// No request: it moves event time on, as an event of any producer would, and is never
		// late (a tick behind the watermark says nothing new).
		if b > d.closed {
			d.moveTo(ev.TS, b)
		}
		return
	}
	if b <= d.closed {
		d.late++
		d.logLate(ev)
		return
	}
	d.moveTo(ev.TS, b)
	var pts [4]latencyPoint
	np := latencyPoints(ev, &pts)
	started := int64(math.MaxInt64) // the bucket ev's instance started in, when it names one
	if d.anyWarmup && ev.Instance != "" && d.tune(ev.Service).latWarmup > 0 {
		started = d.instanceStarted(ev, b)
	}
	k := SeriesKey{Service: ev.Service, Component: ev.Component, Version: ev.Version, Cohort: ev.Cohort}
	agg := d.seriesFor(k, 1, b)
	if agg == nil {
		d.overLimit++
		return
	}
	aggPts := d.warmed(agg, b, started, pts[:np])
	ab := d.fold(agg, ev, b, aggPts)
	if n := ev.Requests(); n > 0 {
		agg.load.live(b, float64(n))
		agg.svc.live(b, float64(n))
	}
	var bs *series
	var bsPts []latencyPoint
	blockOf := ev.Block != "" && !ev.IsResourceSample() // a resource is the process's, not a block's
	if blockOf {
		k.Block = ev.Block
		if bs = d.seriesFor(k, 0, b); bs != nil {
			bsPts = d.warmed(bs, b, started, pts[:np])
			d.fold(bs, ev, b, bsPts)
		}
	}
	// The aggregate keeps per-block tallies and error sites as evidence; not of a block whose
	// series MaxSeries refused, which would grow the aggregate's tallies as it would have grown
	// the series.
	block := ev.Block
	if bs == nil {
		block = ""
	}
	n := float64(ev.Requests())
	if block == "" && !(blockOf && bs == nil) && ev.ErrorSite != "" && d.resolveBlock != nil {
		block = d.resolveBlock(ev.Service, ev.Component, ev.ErrorSite)
	}
	if block != "" {
		if ab.blocks == nil {
			ab.blocks = d.pool.blockMap()
		}
		t := ab.blocks[block]
		if ev.Block != "" { // a resolved block saw only this failure, not its requests
			t.n += n
		}
		addErrors(&t.errs, ev, n)
		ab.blocks[block] = t
	}
	if ev.ErrorSite != "" && d.cfg.MaxSites > 0 {
		if ab.sites == nil {
			ab.sites = d.pool.siteMap()
		}
		if _, ok := ab.sites[ev.ErrorSite]; ok || len(ab.sites) < 4*d.cfg.MaxSites {
			ab.sites[ev.ErrorSite] += ev.Requests() - countOK(ev)
		}
	}
	if d.cfg.FireWithinBucket {
		d.fireWithinBucket(ev, bs, agg, bsPts, aggPts)
	}
}

// warmed is pts, or none while the event's instance (started, the bucket it started in), or
// without one s's version, is within its LatencyWarmup: a cold start's latencies are left out of
// the series' sketches, and so of its tests, its history and the baseline the next version is
// compared with. A series none of whose buckets has closed yet is within it.
func (d *Detector) warmed(s *series, b, started int64, pts []latencyPoint) []latencyPoint {
	if !d.anyWarmup {
		return pts // no service warms up: no lookup on the per-event path
	}
	w := d.tune(s.key.Service).latWarmup
	if w == 0 {
		return pts
	}
	if started == math.MaxInt64 {
		started = s.firstB
	}
	if started == math.MaxInt64 || b-started < w {
		return pts[:0]
	}
	return pts
}

// instanceKey names one process of a version (TelemetryEvent.Instance).
type instanceKey struct{ Service, Version, Instance string }

// instanceSeen is the first and the last bucket an instance served in.
type instanceSeen struct{ first, last int64 }

// maxInstances bounds the instances a detector follows (about 100 bytes each): a producer that
// names each request, not its process, would otherwise grow the map for IdleTTL.
const maxInstances = 1 << 16

// instanceStarted is the bucket ev's instance started in: the first it served in, as far as the
// events have told, or math.MaxInt64 when maxInstances are followed already (the event then
// warms up with its version). An instance is forgotten after IdleTTL without events (sweep).
func (d *Detector) instanceStarted(ev *schemas.TelemetryEvent, b int64) int64 {
	k := instanceKey{ev.Service, ev.Version, ev.Instance}
	if in := d.instances[k]; in != nil {
		in.first, in.last = min(in.first, b), max(in.last, b)
		return in.first
	}
	if len(d.instances) >= maxInstances {
		if !d.instancesFull {
			d.instancesFull = true
			d.log.Warn("following the most instances latency_warmup follows: events of new ones warm up with their version; does instance name a process, not a request?",
				"instances", maxInstances, "service", ev.Service, "instance", ev.Instance)
		}
		return math.MaxInt64
	}
	d.instances[k] = &instanceSeen{first: b, last: b}
	return b
}

// fireWithinBucket runs the tests that may fire within a bucket after ev, on the block's series
// first: when both fire on this event, the anomaly that names the block comes first. bsPts and
// aggPts are the latencies each series took of ev (warmed).
func (d *Detector) fireWithinBucket(ev *schemas.TelemetryEvent, bs, agg *series, bsPts, aggPts []latencyPoint) {
	var errs [numCategories]float64
	failed := ev.Error != "" || len(ev.Errors) > 0 // only a failed request can carry an error test over
	if failed {
		addErrors(&errs, ev, float64(ev.Requests()))
	}
	for i, s := range [2]*series{bs, agg} {
		if s == nil {
			continue
		}
		if failed {
			d.testWithinBucket(s, &errs)
		}
		if pts := [2][]latencyPoint{bsPts, aggPts}[i]; len(pts) > 0 {
			d.testLatencyWithinBucket(s, pts)
		}
	}
}

// countOK is how many of the event's requests succeeded.
func countOK(ev *schemas.TelemetryEvent) int64 {
	var errs [numCategories]float64
	n := float64(ev.Requests())
	addErrors(&errs, ev, n)
	e := 0.0
	for _, v := range errs {
		e += v
	}
	return int64(n - e)
}

// addErrors counts an event's errors by category: the errors{} map of an aggregate, or the error
// of a single request (an aggregate with only `error` set counts all its requests as failed).
// Counts are clamped to the event's requests so a malformed aggregate cannot push a rate above 1.
func addErrors(dst *[numCategories]float64, ev *schemas.TelemetryEvent, n float64) {
	if len(ev.Errors) > 0 {
		left := n
		for _, c := range schemas.ErrorCategories { // fixed order: float sums must not depend on map order
			if v := float64(ev.Errors[c]); v > 0 {
				v = math.Min(v, left)
				dst[categoryIndex(c)] += v
				left -= v
			}
		}
		for c, v := range ev.Errors {
			if categoryIndex(c) == 3 && c != schemas.ErrOther && v > 0 {
				unknown := math.Min(float64(v), left)
				dst[3] += unknown
				left -= unknown
			}
		}
		return
	}
	if ev.Error != "" {
		dst[categoryIndex(ev.Error)] += n
	}
}

func (d *Detector) fold(s *series, ev *schemas.TelemetryEvent, b int64, pts []latencyPoint) *bucket {
	bk := s.bucketFor(b)
	if !s.queued {
		s.queued = true
		d.active = append(d.active, s)
	}
	n := float64(ev.Requests())
	bk.n += n
	addErrors(&bk.errs, ev, n)
	for _, p := range pts {
		if bk.sk == nil {
			bk.sk = d.pool.sketch()
		}
		d.sk.add(bk.sk, p.v, p.w)
		bk.latN += p.w
	}
	if ev.CPU != nil && !math.IsNaN(*ev.CPU) && !math.IsInf(*ev.CPU, 0) {
		bk.cpuSum += *ev.CPU
		bk.cpuN++
		if l := ev.ProcessRPS; l != nil && !math.IsNaN(*l) && !math.IsInf(*l, 0) {
			bk.loadSum += float32(*l)
			bk.loadN++
		}
	}
	if ev.MemMB != nil && !math.IsNaN(*ev.MemMB) && !math.IsInf(*ev.MemMB, 0) {
		bk.memSum += *ev.MemMB
		bk.memN++
	}
	return bk
}

// lateLogEvery is how much event time passes between two warnings about late events.
const lateLogEvery = time.Minute

// logLate warns of late events: the first, then at most once per lateLogEvery of event time,
// with how many were dropped since the last warning and which producer sent this one, so an
// operator finds a producer whose clock runs behind or that publishes late. Event time paces it,
// so a replay logs what live detection logged.
func (d *Detector) logLate(ev *schemas.TelemetryEvent) {
	every := int64(lateLogEvery / time.Duration(d.cfg.BucketWidth))
	if d.lateLogged && d.closed-d.lateLogB < max(every, 1) {
		return
	}
	d.log.Warn("dropping late telemetry: its time bucket had closed; is the producer's clock behind, or does it publish late?",
		"dropped", d.late-d.lateLogN, "service", ev.Service, "component", ev.Component, "version", ev.Version,
		"ts", ev.TS, "behind_latest", d.maxTS.Sub(ev.TS), "allowed_lateness", time.Duration(d.cfg.AllowedLateness))
	d.lateLogged, d.lateLogB, d.lateLogN = true, d.closed, d.late
}

// seriesFor returns the series of k, creating it (and inferring a version change) when new; b is
// the bucket of the event that asks.
func (d *Detector) seriesFor(k SeriesKey, slot int, b int64) *series {
	if s := d.lastSeries[slot]; s != nil && d.lastKey[slot] == k {
		return s
	}
	s := d.series[k]
	if s == nil {
		if d.cfg.MaxSeries > 0 && len(d.series) >= d.cfg.MaxSeries {
			if !d.seriesFull {
				d.seriesFull = true
				d.log.Warn("holding max_series series: events of new ones are not detected on until idle series are evicted (idle_ttl); raise max_series, or does a version, component or block name carry a request id or a time?",
					"max_series", d.cfg.MaxSeries, "service", k.Service, "component", k.Component, "block", k.Block, "version", k.Version)
			}
			return nil
		}
		d.seriesFull = false
		s = d.newSeries(k, b)
	}
	d.lastKey[slot], d.lastSeries[slot] = k, s
	return s
}

// newSeries creates the series of k, whose first event falls in bucket b, and starts it.
func (d *Detector) newSeries(k SeriesKey, b int64) *series {
	ln := d.lineOf(k.line())
	s := &series{key: k, aggregate: k.Block == "", line: ln, load: d.lineOf(k.loadLine()), svc: d.lineOf(k.serviceLine()), firstB: math.MaxInt64, lastB: math.MinInt64}
	s.cur = d.newHistory(s.aggregate, math.MinInt64)
	d.series[k] = s
	d.link(s)
	d.start(s, b)
	return s
}

// lineOf is the line of lk, created with the unit's line it counts its throughput on.
func (d *Detector) lineOf(lk lineKey) *line {
	ln := d.lines[lk]
	if ln == nil {
		ln = &line{key: lk, accB: math.MinInt64, runB: math.MinInt64, lastB: math.MinInt64, liveB: math.MinInt64}
		d.lines[lk] = ln
		ln.unit = ln
		if lk.Cohort != "" {
			uk := lk
			uk.Cohort = ""
			ln.unit = d.lineOf(uk)
		}
	}
	return ln
}

// newHistory is an empty epoch starting at bucket start; a component aggregate's also tallies
// blocks and error sites.
func (d *Detector) newHistory(aggregate bool, start int64) *history {
	h := &history{start: start, sk: d.pool.sketch()}
	if aggregate {
		h.blocks = make(map[string]blockTally)
		h.sites = make(map[string]int64)
	}
	return h
}

// Advance closes every bucket that ends at or before watermark, runs the tests on them, and
// returns what the detector found since the last call: the anomalies that opened a new episode
// and those that ended one (the same anomaly with Status resolved).
//
// The output is in the order the detector found it, and the same whatever the batching: Observe
// closes the buckets its own watermark passes as each event moves it, and an error test may fire
// on the request that crosses its threshold (Config.FireWithinBucket), so what a call returns is
// a run of the one sequence the events determine. Within one closed bucket index the anomalies
// are ordered by detection time, then series, metric and category.
func (d *Detector) Advance(watermark time.Time) []schemas.Anomaly {
	if !watermark.IsZero() {
		if last := d.clock.index(watermark) - 1; last > d.closed { // the bucket ending at or before watermark
			d.advanceTo(last)
		}
	}
	out := d.out
	d.out = nil
	return out
}

// advanceTo closes every open bucket up to last, in order, and appends what the tests found to
// d.out.
func (d *Detector) advanceTo(last int64) {
	// Every bucket with data up to last, in order: phase one closes it in every series, phase
	// two tests, so a canary reads its baseline cohort's bucket whatever the series order.
	idxs := d.idxs[:0]
	add := func(idx int64) {
		if i, found := slices.BinarySearch(idxs, idx); !found {
			idxs = slices.Insert(idxs, i, idx)
		}
	}
	for _, s := range d.active {
		for _, b := range s.open {
			if b.idx > last {
				break
			}
			add(b.idx)
		}
	}
	// A silent unit's buckets close too, though no series has them: the buckets after the
	// last closed up to silenceHorizon on, the furthest any unit in quiet is still read, and
	// only those the events' own watermark passed. Advance to a later time (the end of a
	// replay's range, a test's flush) says the range is over, not that its units fell silent.
	heard := int64(math.MinInt64)
	if d.seen {
		heard = d.clock.index(d.Watermark()) - 1
	}
	if len(d.quiet) > 0 {
		for b := d.closed + 1; b <= min(last, d.closed+silenceHorizon, heard); b++ {
			add(b)
		}
	}
	closing, touched, services := d.closing[:0], d.touched[:0], d.services[:0]
	for _, b := range idxs {
		closing, touched, services = closing[:0], touched[:0], services[:0]
		// Each unit's and each service's requests in b first: a bucket's close reads its
		// component's and its service's load (readShift).
		for _, s := range d.active {
			if len(s.open) > 0 && s.open[0].idx == b && s.aggregate && s.open[0].n > 0 {
				touched = s.line.unit.count(b, s.open[0].n, touched)
				services = s.svc.count(b, s.open[0].n, services)
			}
		}
		for _, s := range d.active {
			if len(s.open) > 0 && s.open[0].idx == b {
				s.closed = s.open[0]
				// Delete shifts in place and zeroes the vacated slot: the backing array is reused
				// instead of creeping forward, and holds no stale pointer to a pooled sketch.
				s.open = slices.Delete(s.open, 0, 1)
				d.closeBucket(s)
				closing = append(closing, s)
			}
		}
		// Every series of a service closed b: its excursion through b is known before any of
		// them is tested on it.
		for _, ln := range services {
			d.serviceExcursion(ln, b)
		}
		from := len(d.out)
		for _, s := range closing {
			d.out = d.test(s, d.out)
		}
		for _, s := range closing {
			d.pool.release(&s.closed)
		}
		for _, ln := range touched {
			d.out = d.testThroughput(ln, closing, d.out)
		}
		d.out = d.testSilence(b, b <= heard, touched, d.out)
		for _, ln := range services {
			d.absorbRate(ln, ln.accN)
		}
		if len(d.firing) > 0 && len(closing) > 0 {
			d.out = d.trafficMoved(b, d.out)
		}
		slices.SortFunc(d.out[from:], compareAnomalies)
	}
	clear(closing[:cap(closing)]) // no series or line kept alive by the working lists
	clear(touched[:cap(touched)])
	clear(services[:cap(services)])
	d.idxs, d.closing, d.touched, d.services = idxs, closing[:0], touched[:0], services[:0]
	d.closed = last
	kept := d.active[:0]
	for _, s := range d.active {
		if len(s.open) > 0 {
			kept = append(kept, s)
		} else {
			s.queued = false
		}
	}
	clear(d.active[len(kept):])
	d.active = kept
	if last >= d.nextSweep {
		d.sweep(last)
		d.nextSweep = last + d.epochBuckets
	}
}

// start gives a new series its baseline and makes it its line's current version. It runs on the
// series' first event, so the baseline is the previous version's history as of the buckets
// closed by then, the same whatever the batching (Observe closes buckets as the watermark moves),
// and the new version's tests can fire within its first buckets.
func (d *Detector) start(s *series, b int64) {
	s.cur.start = d.epochOf(b)
	d.resolveReference(s, b)
	if s.ref != nil {
		d.log.Info("new version: baseline frozen", "series", s.key.String(), "baseline", s.ref.label,
			"baseline_requests", s.ref.n, "conclusive", s.ref.ok)
	}
	s.line.newCurrent(s)
}

// newCurrent makes s the line's current version: the newest until an older one serves again (a
// rollback), and after that the one that served last. The one it replaces served last in otherB.
func (ln *line) newCurrent(s *series) {
	if cur := ln.current; cur != nil && cur != s {
		ln.otherB = max(ln.otherB, cur.lastB)
	}
	ln.current = s
}

// epochOf is the first bucket of the history epoch that holds bucket b. Epochs are aligned to
// event time (multiples of HistoryEpoch), not to the series' first event: a series' recent
// history, and with it a new version's baseline, is then a function of the last two epochs of
// events alone, so a replay or a restart that begins at least two epochs before a deploy freezes
// the same baseline as the detector that had watched the old version for days.
func (d *Detector) epochOf(b int64) int64 {
	r := b % d.epochBuckets
	if r < 0 {
		r += d.epochBuckets
	}
	return b - r
}

// closeBucket moves a closed bucket into the series' history, rotating epochs, and counts the
// bucket's latencies above the baseline's quantiles for the sequential latency test.
//
// The bucket keeps its sketch until the round's tests ran (advanceTo releases it): a canary's
// latency checks read its cohort's.
func (d *Detector) closeBucket(s *series) {
	b := &s.closed
	if e := d.epochOf(b.idx); e != s.cur.start {
		d.rotate(s, e)
	}
	d.ownClose(s, b)
	d.addLatencyDispersion(s, b)
	s.exceed = [maxQuantiles]float64{}
	if b.sk != nil {
		if r := s.ref; r != nil && r.latOK {
			aboveEach(b.sk, &r.thr, len(d.cfg.LatencyQuantiles), d.readShift(s, b, r, true), &s.exceed)
			if refExcursion(s) > 0 && b.latN > 0 {
				s.excRef = nextRun(s.excRef, d.excursionZ(s.excRef > 0, &s.exceed, b.latN, r.refQuantiles()))
			}
			if s.excOn == 0 && b.latN > 0 && refExcursions(s) && d.serviceMadeExcursions(s) {
				// A new version without thresholds of its own yet (provisionalThresholds) counts
				// towards its service's excursions against its baseline's: a batch job that
				// starts with a deploy is the service's, whatever version serves.
				d.addServiceExcursion(s, b, &s.exceed, r.refQuantiles())
			}
		}
		d.sk.merge(s.cur.sk, b.sk)
	}
	for blk, t := range b.blocks {
		acc := s.cur.blocks[blk]
		acc.n += t.n
		for c := range acc.errs {
			acc.errs[c] += t.errs[c]
		}
		s.cur.blocks[blk] = acc
	}
	for site, n := range b.sites {
		if _, ok := s.cur.sites[site]; ok || len(s.cur.sites) < 4*d.cfg.MaxSites {
			s.cur.sites[site] += n
		}
	}
	s.firstB = min(s.firstB, b.idx)
	if b.n == 0 {
		return // resource samples alone: the series did not serve in b
	}
	s.lastB = b.idx
	d.addDispersion(s, b)
	s.cur.n += b.n
	for c := range b.errs {
		s.cur.errs[c] += b.errs[c]
	}
	// The line's current version is the one that served most recently, so after a rollback the
	// restored version, not the bad one, becomes the next deploy's baseline.
	if cur := s.line.current; cur != s {
		if cur == nil || s.lastB > cur.lastB {
			s.line.newCurrent(s)
		} else {
			s.line.otherB = max(s.line.otherB, b.idx)
		}
	}
}

// rotate starts epoch e of s's history: the current epoch completes and becomes prev, and the
// completed epochs before it are kept while a sparse series needs them (HistoryMinRequests, at
// most HistoryMaxEpochs in all). The choice depends only on the completed epochs' own counts.
func (d *Detector) rotate(s *series, e int64) {
	// The excursions and the drift remember epochs of event time, served in or not, as a
	// replay that starts that far back does.
	elapsed := (e - s.cur.start) / d.epochBuckets
	for range min(elapsed, excursionMemory) {
		s.exc.rotate()
	}
	// Nothing served in the epoch before this one: what came earlier is not recent history, and
	// a replay that starts two epochs back would not have it.
	stale := e-s.cur.start > d.epochBuckets
	if stale {
		s.cur.reset(e - d.epochBuckets)
	}
	if s.prev != nil {
		s.older = append(s.older, s.prev)
	}
	var before *history // the epoch before the one completing, if s served it
	if p := s.prev; p != nil && !stale && p.start == s.cur.start-d.epochBuckets {
		before = p
	}
	d.rotateDispersion(s, s.cur.sk, elapsed, before)
	d.pack(s.cur) // complete: only read when a baseline, an own profile or evidence is built
	s.prev = s.cur
	// Let go of the oldest completed epochs while the newer ones still hold enough requests, or
	// while there are more than HistoryMaxEpochs.
	held := s.prev.n
	for _, h := range s.older {
		held += h.n
	}
	drop := 0
	for drop < len(s.older) && (stale || held-s.older[drop].n >= float64(d.cfg.HistoryMinRequests) ||
		len(s.older)-drop+1 > d.cfg.HistoryMaxEpochs) {
		held -= s.older[drop].n
		drop++
	}
	if drop == 0 {
		s.cur = d.newHistory(s.aggregate, e)
		return
	}
	next := s.older[0] // reused as the new current epoch; the others go
	s.older = slices.Delete(s.older, 0, drop)
	next.sk, next.packed = d.pool.sketch(), nil
	next.reset(e)
	s.cur = next
}

// pack encodes a completed epoch's sketch and returns the sketch to the pool (see history.packed).
func (d *Detector) pack(h *history) {
	d.scratch = d.scratch[:0]
	h.sk.Encode(&d.scratch, true)
	h.packed = slices.Clone(d.scratch) // exactly its size: it is kept for up to HistoryMaxEpochs
	d.pool.releaseSketch(h.sk)
	h.sk = nil
}

// sweep evicts idle series and instances. A line's current series stays, as the baseline of the
// next version, unless the detector holds MaxSeries series (relieve).
func (d *Detector) sweep(now int64) {
	maps.DeleteFunc(d.instances, func(_ instanceKey, in *instanceSeen) bool { return now-in.last >= d.idleBuckets })
	full := d.cfg.MaxSeries > 0 && len(d.series) >= d.cfg.MaxSeries
	var current []*series // idle, but their line's current version
	for k, s := range d.series {
		if seen := s.seenB(); s.queued || s.inFiring || seen == math.MinInt64 || now-seen < d.idleBuckets {
			continue
		}
		if s.line.current == s {
			if full {
				current = append(current, s)
			}
			continue
		}
		d.evict(k, s)
	}
	if full {
		d.relieve(current)
	}
}

// relieve makes room when the detector holds MaxSeries series: it evicts idle series that are
// their line's current version, longest idle first, down to nine tenths of MaxSeries or until
// none is left, and then the lines no series counts on. A producer that named a series per
// request would otherwise hold the limit for good (a line's current version is never evicted
// for being idle), and every series after it, a new deploy's among them, would go unwatched.
// The price is the baseline of a component that has been quiet for IdleTTL: its next version
// is compared with nothing before it, as a new component's is.
func (d *Detector) relieve(idle []*series) {
	slices.SortFunc(idle, func(a, b *series) int {
		return cmp.Or(cmp.Compare(a.seenB(), b.seenB()), compareKeys(a.key, b.key))
	})
	for _, s := range idle {
		if len(d.series) <= d.cfg.MaxSeries*9/10 {
			break
		}
		s.line.current = nil
		d.evict(s.key, s)
	}
	// A line stays while a series counts on it, or its throughput episode is open, and so does
	// its unit's line (a snapshot holds every line's unit).
	keep := make(map[*line]bool, len(d.lines))
	for _, s := range d.series {
		for _, ln := range [3]*line{s.line, s.load, s.svc} {
			keep[ln], keep[ln.unit] = true, true
		}
	}
	for _, ln := range d.lines {
		if ln.tputA != nil {
			keep[ln], keep[ln.unit] = true, true
		}
	}
	maps.DeleteFunc(d.lines, func(_ lineKey, ln *line) bool { return !keep[ln] })
	d.quiet = slices.DeleteFunc(d.quiet, func(ln *line) bool { return !keep[ln] })
}

// evict drops series s, of key k.
func (d *Detector) evict(k SeriesKey, s *series) {
	delete(d.series, k)
	d.unlink(s)
	for i := range d.lastSeries {
		if d.lastSeries[i] == s {
			d.lastSeries[i] = nil
		}
	}
}

// KeepService drops the state of every series and line of other services. A replay restricted to
// one service restores a checkpoint of them all; the series it does not feed would still close
// their open buckets, and report, as the watermark moves on.
func (d *Detector) KeepService(service string) {
	other := func(s *series) bool { return s.key.Service != service }
	maps.DeleteFunc(d.series, func(_ SeriesKey, s *series) bool { return other(s) })
	maps.DeleteFunc(d.deploys, func(k deployKey, _ *series) bool { return k.Service != service })
	maps.DeleteFunc(d.lines, func(k lineKey, _ *line) bool { return k.Service != service })
	d.quiet = slices.DeleteFunc(d.quiet, func(ln *line) bool { return ln.key.Service != service })
	maps.DeleteFunc(d.instances, func(k instanceKey, _ *instanceSeen) bool { return k.Service != service })
	d.active = slices.DeleteFunc(d.active, other)
	d.firing = slices.DeleteFunc(d.firing, other)
	d.lastKey, d.lastSeries = [2]SeriesKey{}, [2]*series{}
}

// Firing lists the series with an open episode, in key order.
func (d *Detector) Firing() []SeriesKey {
	var out []SeriesKey
	for k, s := range d.series {
		if len(s.firing(d.cfg.LatencyQuantiles)) > 0 {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, compareKeys)
	return out
}

// Status reports whether a series is still anomalous, for decide's verification after a rollback.
func (d *Detector) Status(key SeriesKey) SeriesStatus {
	s := d.series[key]
	if s == nil {
		return SeriesStatus{}
	}
	st := SeriesStatus{Known: true, Firing: s.firing(d.cfg.LatencyQuantiles)}
	if s.ref != nil {
		st.BaselineVersion = s.ref.label
	} else if s.own != nil {
		st.BaselineVersion = d.ownLabel()
	}
	if s.lastB != math.MinInt64 {
		st.LastBucket = d.clock.end(s.lastB)
	}
	n := 0.0
	for _, h := range s.epochs() {
		n += h.n
	}
	st.Requests = int64(n)
	return st
}
