package detect

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"

	"github.com/scalpel-dev/scalpel/schemas"
)

// SeriesKey identifies a series. Block "" is the component aggregate, which every event of the
// component also feeds, so a sparse block still shows up in the component's test.
type SeriesKey struct {
	Service   string `json:"service"`
	Component string `json:"component"`
	Block     string `json:"block,omitempty"`
	Version   string `json:"version"`
	Cohort    string `json:"cohort,omitempty"`
}

// String renders the key as service/component[/block]@version[#cohort].
func (k SeriesKey) String() string {
	var b strings.Builder
	b.WriteString(k.Service + "/" + k.Component)
	if k.Block != "" {
		b.WriteString("/" + k.Block)
	}
	b.WriteString("@" + k.Version)
	if k.Cohort != "" {
		b.WriteString("#" + k.Cohort)
	}
	return b.String()
}

func (k SeriesKey) line() lineKey {
	return lineKey{Service: k.Service, Component: k.Component, Block: k.Block, Cohort: k.Cohort}
}

// loadLine is the line whose requests are the series' load (readShift): its component's, without
// a block or a cohort, across versions.
func (k SeriesKey) loadLine() lineKey {
	return lineKey{Service: k.Service, Component: k.Component}
}

// serviceLine is the line whose requests are the load of the series' processes (readShift):
// every component's of its service. No component is named "" (Observe drops such an event), so
// no component's line has its key.
func (k SeriesKey) serviceLine() lineKey {
	return lineKey{Service: k.Service}
}

func compareKeys(a, b SeriesKey) int {
	return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Component, b.Component),
		cmp.Compare(a.Block, b.Block), cmp.Compare(a.Version, b.Version), cmp.Compare(a.Cohort, b.Cohort))
}

// SeriesStatus is what decide asks while it verifies a rollback: is the series still anomalous?
type SeriesStatus struct {
	// Known is false when the detector holds no such series (never seen, or evicted when idle).
	Known bool `json:"known"`
	// Firing lists the tests in an open episode, as "metric" or "metric/category"
	// (e.g. "error_rate/timeout", "latency/p99", "mem"). Empty means healthy or inconclusive.
	Firing []string `json:"firing,omitempty"`
	// BaselineVersion is what the series is compared with ("" = no baseline yet: inconclusive).
	BaselineVersion string `json:"baseline_version,omitempty"`
	// LastBucket is the event-time end of the last closed bucket that had data.
	LastBucket time.Time `json:"last_bucket"`
	// Requests counts the requests in the series' recent history.
	Requests int64 `json:"requests"`
}

// blockTally counts one block's requests and errors inside a component aggregate.
type blockTally struct {
	n    float64
	errs [numCategories]float64
}

// history is one epoch of a series' recent history: what becomes a newer version's baseline and
// what an anomaly's evidence covers.
type history struct {
	start int64 // first bucket of the epoch
	sk    *ddsketch.DDSketch
	// packed holds the sketch of a completed epoch (series.prev and older), encoded, and sk is
	// nil: a completed epoch is only read when a baseline, an own profile or an anomaly's
	// evidence is built from it, and encoded its latencies take a fraction of a dense store.
	packed []byte
	n      float64
	errs   [numCategories]float64
	blocks map[string]blockTally // component aggregates only
	sites  map[string]int64      // bounded to 4·MaxSites entries
}

func (h *history) reset(start int64) {
	h.start = start
	h.sk.Clear()
	h.n = 0
	h.errs = [numCategories]float64{}
	clear(h.blocks)
	clear(h.sites)
}

// series is the state of one SeriesKey. Everything is fixed-size except the open buckets (a few,
// bounded by AllowedLateness), and the block and site maps of a component aggregate.
type series struct {
	key       SeriesKey
	aggregate bool
	queued    bool // in Detector.active
	inFiring  bool // in Detector.firing
	latEp     bool // a latency episode is open (one anomaly per episode, whichever quantile fires first)
	// cpuByProcess says cpuFit's loads are the whole process's (process_rps), not the series'
	// own requests: a line is read only at loads of its own kind.
	cpuByProcess bool

	line   *line
	load   *line    // its component's line, whose requests are its load (SeriesKey.loadLine)
	svc    *line    // its service's line, whose requests are its processes' load (SeriesKey.serviceLine)
	open   []bucket // open buckets, ascending
	closed bucket   // the last closed bucket (a canary reads its baseline cohort's)
	// exceed counts the closed bucket's latencies above each of the baseline's quantiles (set
	// when it closes; a series, not every open bucket, carries it).
	exceed    [maxQuantiles]float64
	firstB    int64
	lastB     int64 // last bucket the series served requests in (resource samples alone do not count)
	cur, prev *history
	// older are the completed epochs before prev that a sparse series keeps (oldest first; see
	// Config.HistoryMinRequests). Empty for a busy series.
	older []*history
	ref   *reference
	own   *ownProfile // nil until the series has served for OwnProfileWarmup

	errT [numCategories]rateTest
	// gate is a canary's concurrent check (Config.CanaryConcurrentAlpha). nil for any other
	// series, and when the check is off (errT is then the paired test, and latT goes unchecked).
	gate *canaryGate
	latT [maxQuantiles]rateTest
	// cpuPend counts the requests in the buckets since the last cpu sample (see testResources).
	cpuPend float32
	// cpuLast is the last cpu sample's mean: what a canary compares with (concurrentCPU).
	cpuLast float32
	cpuRef  robustRef
	memRef  robustRef
	// cpuFit and memFit are the series' recent cpu and memory against its load (nil until it
	// reports them): what a next version of the line is compared with.
	cpuFit *loadFit
	memFit *memLevel
	cpuC   cusum
	memC   cusum

	// eps holds the anomaly that opened each open episode (slots epError+category, epLatency,
	// epCPU, epMem, and the own profile's epOwnError+category, epOwnLatency), so its end is
	// announced with the same ID and fields; nil while none is open (most series, most of the
	// time: the slots are 96 bytes).
	eps *episodes
	// The line's other version's requests and errors since this series stopped serving.
	movedN    float64
	movedErrs [numCategories]float64
	// dispQ adds up, per error category, each served bucket's squared Pearson residual against
	// the series' recent rate, dispE the errors that rate expected, and dispB counts the
	// buckets: how much more its error counts vary than independent requests would (see
	// errorDispersion).
	dispQ [numCategories]float32
	dispE [numCategories]float32
	dispB float32
	// Latency dispersion (latencyDispersion): latThr are the tested quantiles' thresholds in
	// the series' last completed epoch (sketch indexes; bit q of latOn says quantile q's could
	// be placed). Over the current epoch, latN and latB add up the served buckets' latencies
	// and the buckets, latX each quantile's latencies above its threshold and latX2 their
	// squares over the bucket's latencies. When an epoch ends, its Pearson statistic against
	// its own share above each threshold moves to latLastChi, with latLastB buckets and
	// latLastE latencies above (bit q of latLastOn: measured).
	latThr               [maxQuantiles]int32
	latX, latX2          [maxQuantiles]float32
	latLastChi, latLastE [maxQuantiles]float32
	latN, latB, latLastB float32
	latOn, latLastOn     uint8
	// Excursions (see excursion.go): exc follows those of s's latencies above its thresholds
	// latThr, and excRef is how many buckets the one against its reference's thresholds has
	// lasted through its last closed bucket. Bit q of excOn says latThr[q] is set, for the
	// excursions (latOn, for the dispersion, waits for a completed epoch; see
	// provisionalThresholds).
	exc           excursions
	excRef, excOn uint8
	// drift follows how far the latency exceedances moved between epochs (drift.go).
	drift drift
	// deployPrev and deployNext link the series of its service, version and cohort
	// (Detector.deploys).
	deployPrev, deployNext *series
}

// deployKey identifies the series a deploy changes together: a service's version, in a cohort.
type deployKey struct {
	Service, Version, Cohort string
}

func (k SeriesKey) deploy() deployKey {
	return deployKey{Service: k.Service, Version: k.Version, Cohort: k.Cohort}
}

// link adds s to the series of its deploy (Detector.deploys), first.
func (d *Detector) link(s *series) {
	k := s.key.deploy()
	if head := d.deploys[k]; head != nil {
		head.deployPrev = s
		s.deployNext = head
	}
	d.deploys[k] = s
}

// unlink takes s out of the series of its deploy.
func (d *Detector) unlink(s *series) {
	switch {
	case s.deployPrev != nil:
		s.deployPrev.deployNext = s.deployNext
	case s.deployNext != nil:
		d.deploys[s.key.deploy()] = s.deployNext
	default:
		delete(d.deploys, s.key.deploy())
	}
	if s.deployNext != nil {
		s.deployNext.deployPrev = s.deployPrev
	}
	s.deployPrev, s.deployNext = nil, nil
}

// seenB is the last bucket s had data in: requests (lastB) or a resource sample.
func (s *series) seenB() int64 {
	b := s.lastB
	if s.cpuFit != nil && s.cpuFit.n > 0 {
		b = max(b, s.cpuFit.last)
	}
	if s.memFit != nil && s.memFit.n > 0 {
		b = max(b, s.memFit.last)
	}
	return b
}

// canaryGate holds a canary's concurrent checks: per error category and per latency quantile,
// the paired test against the cohort it is compared with, over the same buckets, at
// CanaryConcurrentAlpha. errT and latT test the canary against the cohort's history, and each
// fires only while its check is firing. The latency checks are updated when a bucket closes;
// a read within a bucket runs them on a copy over the open buckets as they stand.
type canaryGate struct {
	err [numCategories]rateTest
	lat [maxQuantiles]rateTest
}

// episodes are a series' open episodes, by slot (series.eps).
type episodes [numEpisodes]*schemas.Anomaly

// episode is the anomaly that opened s's episode in slot, or nil when none is open.
func (s *series) episode(slot int) *schemas.Anomaly {
	if s.eps == nil {
		return nil
	}
	return s.eps[slot]
}

// Episode slots of series.eps.
const (
	epLatency   = numCategories
	epCPU       = numCategories + 1
	epMem       = numCategories + 2
	numEpisodes = epOwnLatency + 1
)

// mergeSketchInto merges the epoch's latencies into sk, from its sketch or its packed form.
func (h *history) mergeSketchInto(sks *sketches, sk *ddsketch.DDSketch) {
	if h.sk == nil {
		sks.decodeMerge(sk, h.packed)
		return
	}
	sks.merge(sk, h.sk)
}

// epochs lists the history s keeps, oldest first: older, prev and cur.
func (s *series) epochs() []*history {
	hs := make([]*history, 0, len(s.older)+2)
	hs = append(hs, s.older...)
	if s.prev != nil {
		hs = append(hs, s.prev)
	}
	return append(hs, s.cur)
}

// bucketFor returns the open bucket for idx, opening it if needed.
func (s *series) bucketFor(idx int64) *bucket {
	for i := len(s.open) - 1; i >= 0; i-- {
		if s.open[i].idx == idx {
			return &s.open[i]
		}
		if s.open[i].idx < idx {
			s.open = slices.Insert(s.open, i+1, bucket{idx: idx})
			return &s.open[i+1]
		}
	}
	s.open = slices.Insert(s.open, 0, bucket{idx: idx})
	return &s.open[0]
}

// openBucket is the open bucket of index idx, or nil (also when s is nil).
func (s *series) openBucket(idx int64) *bucket {
	if s == nil {
		return nil
	}
	for i := range s.open {
		if s.open[i].idx == idx {
			return &s.open[i]
		}
	}
	return nil
}

// firing lists the open episodes of the series.
func (s *series) firing(quantiles []float64) []string {
	var out []string
	for c := range s.errT {
		if s.errT[c].firing {
			out = append(out, "error_rate/"+categoryName(c))
		}
	}
	if o := s.own; o != nil {
		for c := range o.errT {
			if o.errT[c].firing && !s.errT[c].firing {
				out = append(out, "error_rate/"+categoryName(c))
			}
		}
	}
	for q := range s.latT {
		if s.latT[q].firing || (s.own != nil && s.own.latT[q].firing) {
			out = append(out, "latency/"+quantileLabel(quantiles[q]))
		}
	}
	if s.cpuC.firing {
		out = append(out, "cpu")
	}
	if s.memC.firing {
		out = append(out, "mem")
	}
	if a := s.line.unit.tputA; a != nil && a.Version == s.key.Version && a.Cohort == s.key.Cohort {
		out = append(out, "throughput")
	}
	return out
}
