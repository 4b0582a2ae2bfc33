package detect

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("invalid detect config")

// Config holds every parameter of the detector. The zero value is not useful: start from
// DefaultConfig and override what you need. Durations read and write as Go duration strings.
type Config struct {
	// BucketWidth is the event-time bucket every series is folded into; tests run once per closed
	// bucket. Default 1s.
	BucketWidth schemas.Duration `json:"bucket_width" yaml:"bucket_width"`
	// AllowedLateness is how far behind the newest event time an event may arrive and still count:
	// the watermark is max event time minus this. Later events are dropped and counted
	// (LateEvents). Default 2s.
	AllowedLateness schemas.Duration `json:"allowed_lateness" yaml:"allowed_lateness"`
	// HistoryEpoch is the length of one epoch of a series' recent history. A busy series keeps two
	// epochs (the current and the previous one), so its recent history covers between one and two
	// epochs; that history becomes the baseline when a newer version appears, and is the window the
	// evidence of an anomaly covers. Epochs are aligned to event time (multiples of HistoryEpoch),
	// so a replay that starts two epochs before a deploy of a busy series (HistoryMaxEpochs+1 for
	// a sparse one) freezes the baseline the live detector froze. Default 5m.
	HistoryEpoch schemas.Duration `json:"history_epoch" yaml:"history_epoch"`
	// HistoryMinRequests is how many requests a series' completed epochs should hold before the
	// older ones are let go. A busy series holds them in its last epoch and keeps two epochs, as
	// above; a sparse one (0.5 req/s serves 150 requests in 5m) keeps older epochs, up to
	// HistoryMaxEpochs, so its baseline is not a few hundred requests with a handful of errors,
	// against which only a gross regression is visible, and so that a tail quantile can be
	// tested: p99.5 needs LatencyMinTailCount (10) baseline requests above it, 2 000 in all, which
	// the history of a series down to about 1.1 req/s holds at this default. Which epochs are
	// kept is a function of the last HistoryMaxEpochs epochs of events, so a replay that starts
	// HistoryMaxEpochs+1 epochs before a deploy freezes the baseline the live detector froze. An
	// epoch without any request still ends the history. Default 2000.
	HistoryMinRequests int64 `json:"history_min_requests" yaml:"history_min_requests"`
	// HistoryMaxEpochs bounds the completed epochs a sparse series keeps (see
	// HistoryMinRequests), and with them how old its baseline can be. 1 keeps only the previous
	// epoch, whatever the traffic. Default 6 (30m at the default epoch).
	HistoryMaxEpochs int `json:"history_max_epochs" yaml:"history_max_epochs"`
	// IdleTTL evicts a series that has seen no event for this long (event time). Default 30m.
	IdleTTL schemas.Duration `json:"idle_ttl" yaml:"idle_ttl"`
	// MaxSeries bounds the series the detector holds, component aggregates and block series
	// alike (about 8 KiB each). An event that would start a series beyond it is not detected on:
	// it is counted (scalpel_detect_dropped_events_total{reason="series_limit"}, a replay's
	// series_limit_events) and the first of each run of them is logged, until idle series are
	// evicted (IdleTTL): while the detector is full, also those that are their line's current
	// version, which are otherwise kept as the next version's baseline. A block's events still
	// count towards its component's aggregate when only the block's series is refused. Without
	// a bound, a producer that puts a request id or a timestamp into version, component or
	// block grows the detector's memory by 8 KiB an event, for good. 0: no limit. Default
	// 100000 (about 0.8 GiB).
	MaxSeries int `json:"max_series" yaml:"max_series"`

	// Alpha is the false-alarm probability each sequential test allows per run (a run ends when
	// the test accepts H0 and restarts). A deploy runs a few dozen tests (error categories and
	// latency quantiles, per block and for the component), so this is set below the 1 %
	// false-rollback target (the scenario suite measures the rate per deploy). Default 0.001.
	Alpha float64 `json:"alpha" yaml:"alpha"`
	// AlphaScope is what Alpha bounds. "deploy" (the default) shares it among the series a deploy
	// changes, the series (components and blocks) of the baseline's service, version and cohort
	// that served within HistoryMaxEpochs epochs before the new version's first request: half
	// evenly among the K of them, half by their recent requests, and every test of a new version
	// against the previous version or a baseline cohort has its threshold raised by ln(1/its
	// share). A deploy of a service of many components then falsely rolls back about as often as
	// a deploy of one, at the price of about ln K more evidence before any of them fires, less on
	// the busiest (2.8 nats for 16 alike: about 1.8 s for error ×5 at 20 req/s). "series" holds each
	// series to Alpha on its own: faster, and a deploy of K series fires falsely up to K times as
	// often. The own profile's tests, which watch no deploy, are per series either way.
	AlphaScope string `json:"alpha_scope" yaml:"alpha_scope"`
	// Beta is the missed-detection probability that sets the acceptance boundary: when the
	// evidence falls below log(Beta) the test accepts "no regression" and restarts, and a firing
	// episode ends. Default 0.01.
	Beta float64 `json:"beta" yaml:"beta"`
	// RecoveryBuckets ends a firing episode early when this many consecutive buckets with data
	// each carried evidence against a regression. Default 30, at most 32767.
	RecoveryBuckets int `json:"recovery_buckets" yaml:"recovery_buckets"`
	// TrafficMovedAfter resolves a firing series that has served no request for this long while
	// its line (same service, component, block and cohort) serves another version whose tests are
	// not firing: the traffic moved away (a rollback), so the episode is over. Default 10s.
	TrafficMovedAfter schemas.Duration `json:"traffic_moved_after" yaml:"traffic_moved_after"`
	// MinRequests is the minimum number of requests a test must have seen in its current run
	// before it may fire: less data is inconclusive, never an anomaly. The sequential tests hold
	// their false-alarm rate without it; it guards against a model that fits a handful of
	// requests badly. It was 20, and a rolling update's new version, serving a growing share,
	// then waited about 25 s to be compared at 20 req/s; at 10 it waits 18 s, and 5 000 A/A
	// deploys fire no more often. Default 10.
	MinRequests int64 `json:"min_requests" yaml:"min_requests"`
	// MinBaselineRequests is the minimum number of requests the baseline needs; with fewer, the
	// comparison is inconclusive (this is the detector's warm-up). Default 200.
	MinBaselineRequests int64 `json:"min_baseline_requests" yaml:"min_baseline_requests"`
	// BaselineConfidenceZ is no longer used: the error and latency tests treat the baseline's
	// sampling error themselves (a two-sample test that pools both sides under H0) instead of
	// widening the baseline rate to an upper bound. Kept so configuration files that set it still
	// load; it has no effect.
	BaselineConfidenceZ float64 `json:"baseline_confidence_z" yaml:"baseline_confidence_z"`

	// ErrorMinEffect is the minimum relative rise of an error rate that counts as a regression
	// (0.5 = ×1.5). Default 0.5.
	ErrorMinEffect float64 `json:"error_min_effect" yaml:"error_min_effect"`
	// ErrorMinAbsEffect is the minimum absolute rise of an error rate that counts (0.005 = half a
	// percentage point), so near-zero baselines do not fire on a single error. Default 0.005.
	ErrorMinAbsEffect float64 `json:"error_min_abs_effect" yaml:"error_min_abs_effect"`
	// ErrorGrossFactor is the second alternative of the error test: a rate this many times the
	// baseline. It makes gross regressions fire within a few buckets. Default 4.
	ErrorGrossFactor float64 `json:"error_gross_factor" yaml:"error_gross_factor"`
	// InvalidInputTriggers makes invalid_input errors testable. Client errors are not regressions
	// of the service, so by default they are counted but never tested. Default false.
	InvalidInputTriggers bool `json:"invalid_input_triggers" yaml:"invalid_input_triggers"`
	// FireWithinBucket lets the error tests and the tail latency tests (p99 and above) against a
	// baseline (the previous version's history, or a canary's baseline cohort) fire on the
	// request that carries them over their threshold, reading the open buckets as they fill,
	// instead of only when a bucket closes (its end plus AllowedLateness). The latency tests of the quantiles below p99 read the open buckets as
	// event time passes each bucket's end, and fire then. The false-alarm bound is the same: a
	// sequential test may stop at any request. Requests that arrive in a bucket after the test
	// fired count when it closes. A canary's concurrent checks (CanaryConcurrentAlpha) read the
	// cohort's open bucket of the same index as it stands. The own profile's tests wait for the close, and so does a
	// component aggregate whose requests name blocks or error sites (its block series are heard
	// first). Default true.
	FireWithinBucket bool `json:"fire_within_bucket" yaml:"fire_within_bucket"`
	// CanaryConcurrentAlpha sets how a canary is checked against the baseline cohort as it
	// serves. A canary's error and latency tests compare it with the cohort's history from
	// before the canary began, at Alpha. Above 0, each of them fires only while a second test
	// agrees: the paired test of the same errors, or of the same quantile's exceedances, against
	// the cohort's requests over the same buckets, at this level. The history knows the cohort's
	// error rate far better than its concurrent requests do (at a 50/50 split the paired error
	// test alone needs about 2.3 times as long), and the check keeps a failure or a slowdown that
	// moves both cohorts (a shared dependency) from rolling the canary back: it does so with
	// probability at most 2 × this value per test over a watch. 0 turns the checks off: the
	// error tests are then the paired test alone, at Alpha (slower, and as safe), and the latency
	// tests go unchecked, so a shared slowdown rolls the canary back. In [0, 0.5); default 0.01.
	CanaryConcurrentAlpha float64 `json:"canary_concurrent_alpha" yaml:"canary_concurrent_alpha"`

	// LatencyQuantiles are the baseline quantiles whose exceedance rate is tested (at most 4).
	// p99.5 and p99.9 are there for regressions of the tail alone: when the slow path gets twice
	// as slow, the share of requests above the baseline's p99 only doubles (1 % to 2 %), while
	// the share above its p99.9 rises about fifteenfold, which a sequential test sees several
	// times sooner. p99.5 rather than p99 finds a tail 25 % slower in a third of the time, and a
	// tail twice as slow at 5 req/s in most deploys instead of a fifth (docs/design-notes.md);
	// it needs a baseline of 2 000 requests where p99 needs 1 000 (LatencyMinTailCount).
	// Default [0.5, 0.9, 0.995, 0.999].
	LatencyQuantiles []float64 `json:"latency_quantiles" yaml:"latency_quantiles"`
	// LatencyMinTailCount is how many baseline requests a quantile needs above it before its
	// exceedance rate is tested: a high quantile of a small baseline is a guess (p99.9 of 2 000
	// requests rests on 2 of them). Default 10.
	LatencyMinTailCount int `json:"latency_min_tail_count" yaml:"latency_min_tail_count"`
	// LatencyMinEffect is the minimum relative latency increase that counts (0.25 = +25 %).
	// Default 0.25.
	LatencyMinEffect float64 `json:"latency_min_effect" yaml:"latency_min_effect"`
	// LatencyTolerance is the slowdown the null hypothesis of the latency tests against a
	// previous version still accepts (0.05 = +5 %, one bin of the sketch): latency moves with
	// load, and a regression is LatencyMinEffect or more. An anomaly also needs the tested
	// quantile to have risen halfway from this to LatencyMinEffect. Load slows the body of the
	// distribution with the tail, so a quantile above the lowest tested one is also tested for a
	// change of the tail alone, with the requests below it showing whether the body slowed: a
	// tail regression is then not held to this tolerance. At 0.1 (the default until the p50 and
	// p90 tests needed two buckets' evidence, LatencyBucketCap) a ramp to ×2 over a minute was
	// found in 23.6 s instead of 18.7 s on average, the median +25 % in 4.4 s instead of 3.3 s;
	// at 0.05 with one bucket's evidence enough, a 1 s pause covering a new version's first
	// second rolled back 5 of 1 000 healthy deploys (see docs/design-notes.md, "The tolerance
	// against a previous version at 5 %"). Must be below LatencyMinEffect. Default 0.05.
	LatencyTolerance float64 `json:"latency_tolerance" yaml:"latency_tolerance"`
	// LatencyProfileTolerance is LatencyTolerance for every other latency baseline: a series'
	// own profile (a change no deploy explains, against an hour of its own past that lags a
	// day's load) and a canary's baseline cohort (whose verdict rests on its concurrent checks,
	// at CanaryConcurrentAlpha, whose null hypothesis this tolerance sets). Kept apart, and at
	// 0.1: at 0.05 the own profile paged on 5 of 100 traffic spikes whose latency follows the
	// load, and a 50 % canary whose cohorts both slowed by 30 % rolled back 3 of 100 times.
	// Must be below LatencyMinEffect. Default 0.1.
	LatencyProfileTolerance float64 `json:"latency_profile_tolerance" yaml:"latency_profile_tolerance"`
	// LatencyLoadShare is how much of a rise in load the latency tests take for granted: a
	// bucket in which the series' component (all its versions, cohorts and blocks) served L
	// times its usual rate has its latencies read as if they were 1 + LatencyLoadShare·(L − 1)
	// times lower before they are counted against the baseline's thresholds. L is also read for
	// the series' service (every component: the endpoints of one binary share its processes,
	// and a spike on one slows the others), and the larger reading counts. Only a count
	// three Poisson standard deviations above the usual rate is read so, so a steady rate's
	// noise seldom moves anything, and a quiet bucket is read as it is. The usual rate is the
	// component's (and the service's) when a version baseline was frozen, and for the own
	// profile the rate its latencies were served at, decayed as they are. A service whose
	// latency follows its load was rolled back on every traffic spike: a spike ×3 that slowed
	// every latency by 30 % or 60 % fired in 40 of 40 deploys. A regression is still found
	// during a spike when it is more than the load explains (every latency ×2 during a spike
	// ×3 is ×1.25 after the 1.6 the load accounts for). A spike ×3 on a busier endpoint that
	// slowed a quieter one by 45 % rolled the quieter one back in 40 of 40 deploys before the
	// service's load was read. A canary's concurrent checks compare two sides at the same load
	// and do not read it. 0 turns it off. Default 0.3.
	LatencyLoadShare float64 `json:"latency_load_share" yaml:"latency_load_share"`
	// LatencyGrossFactor is the second alternative of the latency test: every latency multiplied
	// by this. Default 2.
	LatencyGrossFactor float64 `json:"latency_gross_factor" yaml:"latency_gross_factor"`
	// LatencyBucketCap is the most evidence, in nats, that one update of a latency test (a
	// bucket's close, or a read within it) may add to any alternative. Requests of the same
	// instant share their causes: a collector's pause, a lock, one slow call they all wait on
	// slows all of them at once, and counted as independent they are one instant's
	// coincidence read as dozens of requests' evidence. With 200 ms pauses of +100 ms every 10 s,
	// 13 of 200 A/A deploys fired without a cap and none with it. Capped, an update's likelihood
	// ratio still has a mean of at most 1 under H0, so the false-alarm bound holds. 0 (default)
	// is, for the tail quantiles' tests (read after each request above their thresholds),
	// log(1/alpha) + 0.1 (plus ln(1/share) where alpha is shared among a deploy's series,
	// AlphaScope): one update alone fires a test only in its first run, and only if every
	// alternative the test mixes carries about that much. For the p50 and p90 tests (read as
	// buckets end) it is half that, plus 0.05, so they need two buckets' evidence: half a
	// second's requests lie above the median, so a cause they share moves that count by dozens,
	// far more than the baseline's latency dispersion (an average over its seconds) tempers; a
	// 1 s pause covering a new version's first second, or a load read from a spike's first
	// second, rolled back 7 of 2 000 healthy deploys with one bucket enough at
	// latency_tolerance 0.05, and none with two. That costs a gross regression a bucket: every
	// latency ×2 at 20 req/s is found in 2.0 s on average instead of 1.5 s after a deploy, a
	// canary's in 2.0 s instead of 1.0 s. The own profile's tests, whose runs are never the
	// first, are not capped by default once the series' latency dispersion is measured (a
	// completed epoch and a minute more): that holds back a stall's requests, and the cap made
	// them wait for a second bucket (every latency ×2 without a deploy: 3.2 s on average capped,
	// 1.5 s not). Set, the cap applies to every latency test. A cap of log(1/alpha) + log 3,
	// which would let one bucket fire whenever one alternative carries it, left the pauses above
	// at 13 of 200.
	LatencyBucketCap float64 `json:"latency_bucket_cap" yaml:"latency_bucket_cap"`
	// DeployWatch is how long after a version's first request its error and latency tests
	// against the version before it run. After it, once none of them is firing, the version is
	// compared with its own profile only (its cpu and memory keep their comparisons: cpu is read
	// at the load it serves, and a slow leak needs the time). A regression a deploy brought shows
	// within minutes, and a frozen baseline compared for hours is compared at another time of
	// day: a service whose latency follows its load (18 % slower at a daily peak 60 % busier
	// than when it was deployed) was rolled back hours after a healthy deploy. 0 compares for as
	// long as the version serves. A canary is compared with its concurrent cohort, at the same
	// load, for as long as it is one. Default 1h.
	DeployWatch schemas.Duration `json:"deploy_watch" yaml:"deploy_watch"`
	// LatencyWarmup is how long after a version's first request its latency is not compared
	// with its baseline: after each instance's first request, when the events name their
	// instance (TelemetryEvent.Instance), so that the instances a rolling update starts one
	// after another each warm up. Set it to how long your service takes to warm up after it
	// starts (a JIT compiler, caches filling, connection pools opening), so that a cold start is
	// not a regression: its requests in that time count for nothing, and a regression is found
	// that much later. 0 compares from the first request, as finding every latency ×2 within seconds
	// of a deploy requires; a version that starts slower than its baseline served (three times
	// as slow, easing off over 10 s) is then rolled back in every deploy. Its cpu has
	// resource_warmup_buckets instead. At most 10m. Default 0.
	LatencyWarmup schemas.Duration `json:"latency_warmup" yaml:"latency_warmup"`
	// LatencyExcursionMax bounds how long an excursion of a baseline's latencies its latency
	// tests respect. A series, and a service over all its components, measures the longest
	// run of buckets its latencies stood well above their usual in the last six epochs (a
	// batch job, a cache refresh, a backup: a slowdown every version shares). When a baseline
	// made one of at least three buckets, a test against it sets aside each bucket of an
	// excursion no longer than that, as inconclusive, and a service that made one has its
	// latency tests read its buckets as they close. A batch job that doubled every latency for
	// 10 s every 5 min rolled back 10 of 40 healthy deploys and paged at every window of 40 of
	// 40 series no deploy touched, and rolls back or pages none now. The price falls on such a
	// service alone: a regression there is found that much later (every latency ×2 in 12 s
	// instead of 1.4 s, next to the 10 s window). This bounds it, so that a long incident of
	// the old version does not make its successor's regressions wait as long. 0 turns it off.
	// At most 255 buckets. Default 30s.
	LatencyExcursionMax schemas.Duration `json:"latency_excursion_max" yaml:"latency_excursion_max"`
	// LatencyDrift tempers the latency tests by how far a baseline's share of latencies above
	// each tested quantile moved between epochs beyond what sampling moves it: a traffic mix
	// that wanders (the share of heavy customers, large carts or uncached queries drifting over
	// minutes), which every version serves. A series measures it over its last ten completed
	// epochs, each against the two before it, from its sixth epoch on, and a new version starts
	// with its predecessor's. The tests divide their evidence by it, and count the baseline's
	// latencies as worth that much less. A mix whose slow share wandered by a log-normal factor
	// of σ 0.6 over a minute, a version having served an hour, rolled back 24 of 100 healthy
	// deploys within 5.5 min and paged in 10 of 100 series no deploy touched; 2 and 0 of 100
	// with it. The price falls on such a service alone: a tail regression must stand out
	// against the mix's own wander (p99 ×2 there in 17 s at the median, 3¾ min at p95, instead
	// of 6 s and 40 s). false turns it off. Default true.
	LatencyDrift bool `json:"latency_drift" yaml:"latency_drift"`
	// LatencyExcess tests, with the count of requests above each tail quantile from p99 up, how
	// far above its threshold they landed (in sketch bins, up to ×1.65 of it), against the
	// baseline's own excess bounded by a geometric distribution (excessParams in baseline.go):
	// a slow path that got slower lands its requests well above the baseline's p99.9, not just
	// above it. For a Pareto tail, whose excess looks the same at every scale, it adds
	// nothing. p99 ×2 at 50 req/s is found in 5.8 s on average instead of 6.8 s, +50 % in
	// 17.6 s instead of 20.2 s, +25 % in 85.9 s instead of 99.0 s, and ×2 at 5 req/s in 100 of
	// 100 deploys within the hour instead of 95, with false rollbacks unchanged (3 of 5 000 A/A
	// deploys). false turns it off. Default true.
	LatencyExcess bool `json:"latency_excess" yaml:"latency_excess"`
	// SketchRelativeAccuracy of the DDSketches that hold latencies. Default 0.025.
	SketchRelativeAccuracy float64 `json:"sketch_relative_accuracy" yaml:"sketch_relative_accuracy"`
	// SketchMaxBins bounds each latency sketch; beyond it the lowest bins collapse into one (the
	// tail stays exact), and every latency in them reads as that bin's, as slow as the fastest
	// one kept. A sketch holds 128 bins (a ratio of ~600 at the default accuracy, 0.5 ms to
	// 300 ms) until its latencies span further, and is then widened to this bound, so only
	// series whose latencies spread that far pay for the bins, 8 bytes each. 1024 spans a ratio
	// of ~10^22 at the default accuracy: no real latencies collapse. At most 4096. Default 1024.
	SketchMaxBins int `json:"sketch_max_bins" yaml:"sketch_max_bins"`

	// ResourceWarmupBuckets is how many buckets a series' cpu/mem samples must cover before its
	// own median/MAD reference is frozen (when no baseline version provides one; for memory,
	// counted once the series has served OwnProfileWarmup and its memory has levelled off, or
	// has served MemoryGrowthLimit), and before a new
	// version's cpu and memory are compared with its previous version's (a process uses more as
	// it starts); also how long a cpu comparison waits after a load beyond what its line had
	// seen. A sample covers the buckets since the series' previous one (up to ten minutes'), so
	// a resource scraped every 15 s has warmed up after 30 s as one sampled every second has;
	// a line or a reference also needs 5 samples before it is read. Default 30.
	ResourceWarmupBuckets int `json:"resource_warmup_buckets" yaml:"resource_warmup_buckets"`
	// ResourceMinEffect floors the scale a cpu or memory deviation is measured in, as a share of
	// the reference, so that a flat history does not make every wiggle large. The CUSUM adds up
	// deviations beyond CUSUMSlack scales: with the defaults, a rise of more than half of it
	// (5 %) fires in the end, one of all of it (10 %) within about CUSUMThreshold/CUSUMSlack = 20
	// buckets. Default 0.1.
	ResourceMinEffect float64 `json:"resource_min_effect" yaml:"resource_min_effect"`
	// ResourceHalfLife is the half-life of a series' recent resource history: the line it fits
	// to its cpu against its load (its requests per bucket), and its memory's mean and spread.
	// A new version's cpu is compared with the most its previous version used at the load the
	// new version serves, so neither a traffic spike nor a daily cycle reads as a regression; its
	// memory with the previous version's recent level, not the level it had as it started, and
	// only if that level had stopped rising, so memory that grows as caches fill does not either. The cpu of a series no deploy changed
	// (once it has served OwnProfileWarmup) is compared with the most its own line says it used
	// at that load; the line does not learn while the test fires. Shorter follows the version's
	// recent behaviour more closely; longer sees more loads and steadies the spread. Default 5m.
	ResourceHalfLife schemas.Duration `json:"resource_half_life" yaml:"resource_half_life"`
	// MemoryGrowthLimit is how long a process's memory may keep growing after it starts (caches
	// filling, a heap expanding) before the growth counts as a leak. A memory level is a
	// reference only once it has stopped rising; a series whose memory has not stopped by then
	// has its own level frozen anyway, and a leak from its start climbs past it. Longer suits
	// services that warm up slowly, at the price of finding such a leak later. Default 30m.
	MemoryGrowthLimit schemas.Duration `json:"memory_growth_limit" yaml:"memory_growth_limit"`
	// CUSUMSlack (k) is subtracted from each standardised deviation before it accumulates.
	// A cpu or memory sample that covers several buckets (a scraper's interval) adds its
	// deviation once per bucket it covers, measured against the spread of one bucket's, so a
	// lasting rise fires at about the same event time however often the resource is sampled (up
	// to the wait for the next sample).
	// Default 0.5.
	CUSUMSlack float64 `json:"cusum_slack" yaml:"cusum_slack"`
	// CUSUMThreshold (h) is where the CUSUM fires, in robust standard deviations. Default 10.
	CUSUMThreshold float64 `json:"cusum_threshold" yaml:"cusum_threshold"`
	// ThroughputHalfLife of the EWMA that tracks a line's normal request rate; slow enough that a
	// daily cycle is followed, fast regressions are not. Default 10m.
	ThroughputHalfLife schemas.Duration `json:"throughput_half_life" yaml:"throughput_half_life"`
	// ThroughputTrendHalfLife smooths the trend of a line's request rate (Holt's linear method),
	// so the expected rate follows a steady rise or fall, such as either side of a daily cycle,
	// instead of lagging it; 0 tracks the level alone. Default 15m.
	ThroughputTrendHalfLife schemas.Duration `json:"throughput_trend_half_life" yaml:"throughput_trend_half_life"`
	// ThroughputMinRate is the baseline rate (req/s) below which throughput is not tested: sparse
	// traffic is all noise (a Poisson count of a few per bucket drops to half by chance). Default 10.
	ThroughputMinRate float64 `json:"throughput_min_rate" yaml:"throughput_min_rate"`
	// ThroughputMinDrop is the minimum relative drop that counts (0.5 = to half). Default 0.5.
	ThroughputMinDrop float64 `json:"throughput_min_drop" yaml:"throughput_min_drop"`

	// OwnProfileWarmup is how long a series (one version of a component or block) must have
	// served before it is also compared with its own long-run profile, the baseline for
	// regressions no deploy explains: a dependency that broke, a configuration flag, a slow
	// database. The profile starts from the series' recent history at that point, so it needs
	// enough of it to be a reference (and MinBaselineRequests requests). Zero turns the
	// own-profile tests off. Default 10m.
	OwnProfileWarmup schemas.Duration `json:"own_profile_warmup" yaml:"own_profile_warmup"`
	// OwnProfileHalfLife is the half-life of the own profile's exponential decay: slow enough
	// that minutes of a regression stand out against it, fast enough to follow a daily cycle.
	// The profile is frozen while the series fires, so a regression does not become its normal.
	// Anomalies against it carry BaselineVersion "own profile (<half-life>)". Default 1h.
	OwnProfileHalfLife schemas.Duration `json:"own_profile_half_life" yaml:"own_profile_half_life"`

	// MaxSites bounds the error_site counts an anomaly carries (top N). Default 8.
	MaxSites int `json:"max_sites" yaml:"max_sites"`

	// Services sets, for the services it names, the parameters that describe a service rather
	// than the detector: how long its versions are watched, how long it warms up, how long
	// its batch jobs slow it, which effects are worth a rollback there. Every parameter a
	// service does not set is the one above. Default none.
	Services map[string]ServiceConfig `json:"services,omitempty" yaml:"services,omitempty"`
}

// ServiceConfig is one service's entry in Config.Services: each field set replaces the
// parameter of the same name for that service's series. The detector's own machinery (buckets,
// epochs, sketches, alpha, the tests' warm-ups) is one for all services; these are what one
// service knows of itself. A fleet has a service whose JIT warms up for a minute beside one
// that is warm at once, and one that runs a minute-long batch job beside one that runs none:
// one value for all would either miss the regressions of the first or roll back the second.
type ServiceConfig struct {
	DeployWatch             *schemas.Duration `json:"deploy_watch,omitempty" yaml:"deploy_watch,omitempty"`
	LatencyWarmup           *schemas.Duration `json:"latency_warmup,omitempty" yaml:"latency_warmup,omitempty"`
	LatencyExcursionMax     *schemas.Duration `json:"latency_excursion_max,omitempty" yaml:"latency_excursion_max,omitempty"`
	InvalidInputTriggers    *bool             `json:"invalid_input_triggers,omitempty" yaml:"invalid_input_triggers,omitempty"`
	ErrorMinEffect          *float64          `json:"error_min_effect,omitempty" yaml:"error_min_effect,omitempty"`
	ErrorMinAbsEffect       *float64          `json:"error_min_abs_effect,omitempty" yaml:"error_min_abs_effect,omitempty"`
	ErrorGrossFactor        *float64          `json:"error_gross_factor,omitempty" yaml:"error_gross_factor,omitempty"`
	LatencyMinEffect        *float64          `json:"latency_min_effect,omitempty" yaml:"latency_min_effect,omitempty"`
	LatencyTolerance        *float64          `json:"latency_tolerance,omitempty" yaml:"latency_tolerance,omitempty"`
	LatencyProfileTolerance *float64          `json:"latency_profile_tolerance,omitempty" yaml:"latency_profile_tolerance,omitempty"`
	LatencyGrossFactor      *float64          `json:"latency_gross_factor,omitempty" yaml:"latency_gross_factor,omitempty"`
	ThroughputMinDrop       *float64          `json:"throughput_min_drop,omitempty" yaml:"throughput_min_drop,omitempty"`
}

// For is the configuration service's series are detected with: c with the service's entry
// in Services applied, and no Services of its own.
func (c Config) For(service string) Config {
	o, ok := c.Services[service]
	c.Services = nil
	if !ok {
		return c
	}
	set := func(dst *schemas.Duration, v *schemas.Duration) {
		if v != nil {
			*dst = *v
		}
	}
	setF := func(dst *float64, v *float64) {
		if v != nil {
			*dst = *v
		}
	}
	set(&c.DeployWatch, o.DeployWatch)
	set(&c.LatencyWarmup, o.LatencyWarmup)
	set(&c.LatencyExcursionMax, o.LatencyExcursionMax)
	if o.InvalidInputTriggers != nil {
		c.InvalidInputTriggers = *o.InvalidInputTriggers
	}
	setF(&c.ErrorMinEffect, o.ErrorMinEffect)
	setF(&c.ErrorMinAbsEffect, o.ErrorMinAbsEffect)
	setF(&c.ErrorGrossFactor, o.ErrorGrossFactor)
	setF(&c.LatencyMinEffect, o.LatencyMinEffect)
	setF(&c.LatencyTolerance, o.LatencyTolerance)
	setF(&c.LatencyProfileTolerance, o.LatencyProfileTolerance)
	setF(&c.LatencyGrossFactor, o.LatencyGrossFactor)
	setF(&c.ThroughputMinDrop, o.ThroughputMinDrop)
	return c
}

// maxLatencyWarmup bounds Config.LatencyWarmup: a service slow for longer than this after it
// starts is not warming up.
const maxLatencyWarmup = 10 * time.Minute

// Values of Config.AlphaScope.
const (
	AlphaPerDeploy = "deploy"
	AlphaPerSeries = "series"
)

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		BucketWidth:             schemas.Duration(time.Second),
		AllowedLateness:         schemas.Duration(2 * time.Second),
		HistoryEpoch:            schemas.Duration(5 * time.Minute),
		HistoryMinRequests:      2000,
		HistoryMaxEpochs:        6,
		IdleTTL:                 schemas.Duration(30 * time.Minute),
		MaxSeries:               100000,
		Alpha:                   0.001,
		AlphaScope:              AlphaPerDeploy,
		Beta:                    0.01,
		RecoveryBuckets:         30,
		TrafficMovedAfter:       schemas.Duration(10 * time.Second),
		MinRequests:             10,
		DeployWatch:             schemas.Duration(time.Hour),
		MinBaselineRequests:     200,
		BaselineConfidenceZ:     2,
		ErrorMinEffect:          0.5,
		ErrorMinAbsEffect:       0.005,
		ErrorGrossFactor:        4,
		InvalidInputTriggers:    false,
		FireWithinBucket:        true,
		CanaryConcurrentAlpha:   0.01,
		LatencyQuantiles:        []float64{0.5, 0.9, 0.995, 0.999},
		LatencyMinTailCount:     10,
		LatencyMinEffect:        0.25,
		LatencyTolerance:        0.05,
		LatencyProfileTolerance: 0.1,
		LatencyLoadShare:        0.3,
		LatencyGrossFactor:      2,
		LatencyExcursionMax:     schemas.Duration(30 * time.Second),
		LatencyDrift:            true,
		LatencyExcess:           true,
		SketchRelativeAccuracy:  0.025,
		SketchMaxBins:           1024,
		ResourceWarmupBuckets:   30,
		ResourceMinEffect:       0.1,
		ResourceHalfLife:        schemas.Duration(5 * time.Minute),
		MemoryGrowthLimit:       schemas.Duration(30 * time.Minute),
		CUSUMSlack:              0.5,
		CUSUMThreshold:          10,
		ThroughputHalfLife:      schemas.Duration(10 * time.Minute),
		ThroughputTrendHalfLife: schemas.Duration(15 * time.Minute),
		ThroughputMinRate:       10,
		ThroughputMinDrop:       0.5,
		OwnProfileWarmup:        schemas.Duration(10 * time.Minute),
		OwnProfileHalfLife:      schemas.Duration(time.Hour),
		MaxSites:                8,
	}
}

// maxSketchBins bounds SketchMaxBins: a sketch that spans it holds 32 KiB.
const maxSketchBins = 4096

// maxQuantiles bounds LatencyQuantiles so a bucket's exceedance counters are a fixed array.
const maxQuantiles = 4

// ReplayWarmup is how much event time a detector that starts empty must read to rebuild what
// this config's detector remembers: every baseline it would freeze (HistoryMaxEpochs epochs
// before the current one, a sparse series' whole history), and the latency drift of each
// series (driftMemory completed epochs, and the two before them that the oldest is compared
// with). A replay that starts that long before a deploy freezes the baseline the live detector
// froze, with its tempering. 65m at the defaults.
func (c Config) ReplayWarmup() time.Duration {
	return time.Duration(max(c.HistoryMaxEpochs+1, driftMemory+3)) * time.Duration(c.HistoryEpoch)
}

// Validate reports the first parameter that is out of range.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case time.Duration(c.BucketWidth) < time.Millisecond:
		return bad("bucket_width must be at least 1ms, got %s", time.Duration(c.BucketWidth))
	case c.AllowedLateness < 0:
		return bad("allowed_lateness must not be negative, got %s", time.Duration(c.AllowedLateness))
	case time.Duration(c.HistoryEpoch) < 10*time.Duration(c.BucketWidth):
		return bad("history_epoch must be at least 10 buckets, got %s", time.Duration(c.HistoryEpoch))
	case c.HistoryMinRequests < 0:
		return bad("history_min_requests must be at least 0, got %d", c.HistoryMinRequests)
	case c.HistoryMaxEpochs < 1:
		return bad("history_max_epochs must be at least 1, got %d", c.HistoryMaxEpochs)
	case c.IdleTTL < c.HistoryEpoch:
		return bad("idle_ttl (%s) must be at least history_epoch (%s)", time.Duration(c.IdleTTL), time.Duration(c.HistoryEpoch))
	case c.MaxSeries < 0:
		return bad("max_series must be 0 (no limit) or positive, got %d", c.MaxSeries)
	case !(c.Alpha > 0 && c.Alpha < 0.5):
		return bad("alpha must be in (0, 0.5), got %g", c.Alpha)
	case c.AlphaScope != AlphaPerDeploy && c.AlphaScope != AlphaPerSeries:
		return bad("alpha_scope must be %q or %q, got %q", AlphaPerDeploy, AlphaPerSeries, c.AlphaScope)
	case !(c.Beta > 0 && c.Beta < 0.5):
		return bad("beta must be in (0, 0.5), got %g", c.Beta)
	case c.RecoveryBuckets < 1 || c.RecoveryBuckets > math.MaxInt16:
		return bad("recovery_buckets must be in [1, %d], got %d", math.MaxInt16, c.RecoveryBuckets)
	case c.TrafficMovedAfter < c.BucketWidth:
		return bad("traffic_moved_after must be at least one bucket, got %s", time.Duration(c.TrafficMovedAfter))
	case c.MinRequests < 1:
		return bad("min_requests must be at least 1, got %d", c.MinRequests)
	case c.MinBaselineRequests < 1:
		return bad("min_baseline_requests must be at least 1, got %d", c.MinBaselineRequests)
	case !(c.BaselineConfidenceZ >= 0):
		return bad("baseline_confidence_z must not be negative, got %g", c.BaselineConfidenceZ)
	case !(c.ErrorMinEffect > 0):
		return bad("error_min_effect must be positive, got %g", c.ErrorMinEffect)
	case !(c.ErrorMinAbsEffect >= 0 && c.ErrorMinAbsEffect < 1):
		return bad("error_min_abs_effect must be in [0, 1), got %g", c.ErrorMinAbsEffect)
	case !(c.CanaryConcurrentAlpha >= 0 && c.CanaryConcurrentAlpha < 0.5):
		return bad("canary_concurrent_alpha must be in [0, 0.5) (0 turns the concurrent checks off), got %g", c.CanaryConcurrentAlpha)
	case !(c.ErrorGrossFactor > 1+c.ErrorMinEffect):
		return bad("error_gross_factor must exceed 1+error_min_effect, got %g", c.ErrorGrossFactor)
	case len(c.LatencyQuantiles) == 0 || len(c.LatencyQuantiles) > maxQuantiles:
		return bad("latency_quantiles needs 1 to %d entries, got %d", maxQuantiles, len(c.LatencyQuantiles))
	case c.LatencyMinTailCount < 1:
		return bad("latency_min_tail_count must be at least 1, got %d", c.LatencyMinTailCount)
	case !(c.LatencyMinEffect > 0):
		return bad("latency_min_effect must be positive, got %g", c.LatencyMinEffect)
	case !(c.LatencyTolerance >= 0 && c.LatencyTolerance < c.LatencyMinEffect):
		return bad("latency_tolerance must be in [0, latency_min_effect), got %g", c.LatencyTolerance)
	case !(c.LatencyProfileTolerance >= 0 && c.LatencyProfileTolerance < c.LatencyMinEffect):
		return bad("latency_profile_tolerance must be in [0, latency_min_effect), got %g", c.LatencyProfileTolerance)
	case !(c.LatencyLoadShare >= 0 && c.LatencyLoadShare <= 2):
		return bad("latency_load_share must be in [0, 2] (0.3: latency rises by 30 %% of a load's rise), got %g", c.LatencyLoadShare)
	case !(c.LatencyGrossFactor > 1+c.LatencyMinEffect):
		return bad("latency_gross_factor must exceed 1+latency_min_effect, got %g", c.LatencyGrossFactor)
	case !(c.LatencyBucketCap >= 0) || math.IsInf(c.LatencyBucketCap, 0):
		return bad("latency_bucket_cap must be 0 (log(1/alpha) + 0.1) or a positive number of nats, got %g", c.LatencyBucketCap)
	case c.DeployWatch < 0 || c.DeployWatch > 0 && c.DeployWatch < schemas.Duration(time.Minute):
		return bad("deploy_watch must be 0 (for as long as the version serves) or at least 1m, got %s", time.Duration(c.DeployWatch))
	case c.LatencyWarmup < 0 || c.LatencyWarmup > schemas.Duration(maxLatencyWarmup):
		return bad("latency_warmup must be in [0, %s], got %s", maxLatencyWarmup, time.Duration(c.LatencyWarmup))
	case c.LatencyExcursionMax < 0 || c.LatencyExcursionMax > c.BucketWidth*math.MaxUint8:
		return bad("latency_excursion_max must be in [0, 255 buckets (%s)], got %s", time.Duration(c.BucketWidth*math.MaxUint8), time.Duration(c.LatencyExcursionMax))
	case !(c.SketchRelativeAccuracy > 0 && c.SketchRelativeAccuracy < 0.5):
		return bad("sketch_relative_accuracy must be in (0, 0.5), got %g", c.SketchRelativeAccuracy)
	case c.SketchMaxBins < 16 || c.SketchMaxBins > maxSketchBins:
		return bad("sketch_max_bins must be in [16, %d], got %d", maxSketchBins, c.SketchMaxBins)
	case c.ResourceWarmupBuckets < 3 || c.ResourceWarmupBuckets > warmupCap:
		return bad("resource_warmup_buckets must be in [3, %d], got %d", warmupCap, c.ResourceWarmupBuckets)
	case !(c.ResourceMinEffect > 0):
		return bad("resource_min_effect must be positive, got %g", c.ResourceMinEffect)
	case c.ResourceHalfLife < 10*c.BucketWidth:
		return bad("resource_half_life must be at least 10 buckets, got %s", time.Duration(c.ResourceHalfLife))
	case c.MemoryGrowthLimit < c.OwnProfileWarmup:
		return bad("memory_growth_limit (%s) must be at least own_profile_warmup (%s): a series' own memory level is not frozen before that",
			time.Duration(c.MemoryGrowthLimit), time.Duration(c.OwnProfileWarmup))
	case !(c.CUSUMSlack >= 0):
		return bad("cusum_slack must not be negative, got %g", c.CUSUMSlack)
	case !(c.CUSUMThreshold > 0):
		return bad("cusum_threshold must be positive, got %g", c.CUSUMThreshold)
	case c.ThroughputHalfLife < c.BucketWidth:
		return bad("throughput_half_life must be at least one bucket, got %s", time.Duration(c.ThroughputHalfLife))
	case c.ThroughputTrendHalfLife != 0 && c.ThroughputTrendHalfLife < c.BucketWidth:
		return bad("throughput_trend_half_life must be 0 (no trend) or at least one bucket, got %s", time.Duration(c.ThroughputTrendHalfLife))
	case !(c.ThroughputMinRate > 0):
		return bad("throughput_min_rate must be positive, got %g", c.ThroughputMinRate)
	case !(c.ThroughputMinDrop > 0 && c.ThroughputMinDrop < 1):
		return bad("throughput_min_drop must be in (0, 1), got %g", c.ThroughputMinDrop)
	case c.OwnProfileWarmup < 0:
		return bad("own_profile_warmup must not be negative, got %s", time.Duration(c.OwnProfileWarmup))
	case c.OwnProfileWarmup > 0 && c.OwnProfileHalfLife < 10*c.BucketWidth:
		return bad("own_profile_half_life must be at least 10 buckets, got %s", time.Duration(c.OwnProfileHalfLife))
	case c.MaxSites < 0:
		return bad("max_sites must not be negative, got %d", c.MaxSites)
	}
	for i, q := range c.LatencyQuantiles {
		if !(q > 0 && q < 1) {
			return bad("latency_quantiles[%d] must be in (0, 1), got %g", i, q)
		}
	}
	for _, svc := range slices.Sorted(maps.Keys(c.Services)) {
		if !schemas.IsName(svc) {
			return bad("services: %q is not a service name (letters, digits, '_' and '-', 1 to 64 of them)", svc)
		}
		if err := c.For(svc).Validate(); err != nil {
			return fmt.Errorf("%w: services.%s: %s", ErrInvalidConfig, svc, strings.TrimPrefix(err.Error(), ErrInvalidConfig.Error()+": "))
		}
	}
	return nil
}
