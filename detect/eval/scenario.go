package eval

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Scenario is one kind of generated deploy: a version 1.0 serves for Pre seconds, then version
// 2.0 takes over (or, with CanaryShare > 0, serves that share of the traffic as the canary cohort
// next to the baseline cohort; with NoDeploy, 1.0 keeps serving and only its behaviour changes)
// for Post seconds, behaving as the fields say.
//
// The traffic model, shared by both versions: Poisson arrivals whose rate follows a load factor
// (a slow random walk of a few percent, plus the scenario's spike or daily cycle); latencies are a
// log-normal body (median 20 ms, σ 0.3) with a 2 % slow path (median 60 ms, σ 0.3) that makes the
// p99; the median rises a little with load, as a loaded service's does. Errors: a 2 % exception
// rate and a 1 % invalid_input rate (client noise). cpu follows load (an idle share plus a share
// in proportion to the rate, this component's and any other's the processes serve,
// NeighbourRPS), one sample a second of one instance (or one every ResourceEvery seconds): a
// canary's instances serve the load each of its cohort's do. Memory is flat with noise.
type Scenario struct {
	Name string `json:"name"`
	// Regression says the scenario should be detected; false ones count towards false rollbacks.
	Regression bool    `json:"regression"`
	RPS        float64 `json:"rps"`
	Pre        int     `json:"pre_s"`
	Post       int     `json:"post_s"`
	// CanaryShare > 0 runs the new version as a canary cohort with this share of the traffic.
	CanaryShare float64 `json:"canary_share,omitempty"`
	// Rollout > 0 replaces the old version's instances with the new one's over this many
	// seconds, as a rolling update does (Kubernetes' default): the new version's share of the
	// traffic rises linearly from nothing to all of it, and neither side has a cohort.
	Rollout int `json:"rollout_s,omitempty"`
	// FreshBaseline starts the baseline cohort with the canary, as Kayenta's fresh baseline
	// cluster does: before the deploy version 1.0 serves without a cohort.
	FreshBaseline bool `json:"fresh_baseline,omitempty"`

	ErrMul     float64 `json:"err_mul,omitempty"`     // exception rate ×, new version (0 = 1)
	InvalidMul float64 `json:"invalid_mul,omitempty"` // invalid_input rate ×, new version
	BodyMul    float64 `json:"body_mul,omitempty"`    // latency × of the body (every request but the slow path)
	TailMul    float64 `json:"tail_mul,omitempty"`    // latency × of the slow path (the p99)
	RateMul    float64 `json:"rate_mul,omitempty"`    // request rate × after the deploy (a throughput drop)
	// HangAt > 0 makes the changed component's new version serve not one request from this many
	// seconds after the deploy on, its cpu and memory still coming, once a second, as a
	// scraper's samples: a deadlock in the request path, after the old version's instances are
	// gone.
	HangAt int `json:"hang_at_s,omitempty"`
	// HangMute makes the hung version (HangAt) send nothing at all, no cpu or memory either:
	// crashed, or its exporter hung with it.
	HangMute bool `json:"hang_mute,omitempty"`
	// Ticks feeds the detector the clock ticks serve publishes once no telemetry has come in for
	// ingest.tick_after (10 s): one a second, tick_after behind the time since the newest event.
	// The suite's producers stamp their events as they send them.
	Ticks     bool    `json:"ticks,omitempty"`
	LeakMBMin float64 `json:"leak_mb_per_min,omitempty"`
	// Ramp > 0 makes the new version's exception and latency changes (ErrMul, BodyMul, TailMul)
	// rise linearly from none to their full size over this many seconds after the deploy, as a
	// pool that drains or a cache that goes cold does.
	Ramp int `json:"ramp_s,omitempty"`
	// MemGrowMB is how much every version's memory grows as it starts (caches filling, a heap
	// expanding), levelling off with a time constant of MemGrowTau seconds (0: memGrowTau) from
	// its first request.
	MemGrowMB  float64 `json:"mem_grow_mb,omitempty"`
	MemGrowTau int     `json:"mem_grow_tau_s,omitempty"`
	CPUMul     float64 `json:"cpu_mul,omitempty"`    // cpu × at the same load, new version
	SpikeAt    int     `json:"spike_at_s,omitempty"` // a traffic spike (×SpikeMul) starts this long after the deploy
	SpikeLen   int     `json:"spike_len_s,omitempty"`
	SpikeMul   float64 `json:"spike_mul,omitempty"`
	// NeighbourRPS > 0 has the same processes serve another component too, at this many req/s
	// (times the load), whose requests cost them cpu as this component's do; the resource
	// samples then carry process_rps, the processes' whole load. With NeighbourSpike the spike
	// (SpikeAt, SpikeLen, SpikeMul) is the other components' (the neighbour's, and every
	// component after the first, see Components), not this one's.
	NeighbourRPS   float64 `json:"neighbour_rps,omitempty"`
	NeighbourSpike bool    `json:"neighbour_spike,omitempty"`
	// SharedErrMul multiplies the exception rate of every version from the deploy on: a shared
	// dependency failing, which no version is to blame for. Only the new version's anomalies
	// count then (as false rollbacks when Regression is false): the old version's own profile
	// rightly reports the failure, and rolling back to it would not mend it.
	SharedErrMul float64 `json:"shared_err_mul,omitempty"`
	// SharedLatMul multiplies the latency of every version from the deploy on: a shared
	// dependency gone slow. Only the new version's anomalies count, as with SharedErrMul.
	SharedLatMul float64 `json:"shared_lat_mul,omitempty"`
	// SharedLen > 0 makes the shared failure or slowdown a burst: it lasts SharedLen seconds from
	// SharedAt seconds after the deploy, instead of from the deploy to the end.
	SharedAt  int `json:"shared_at_s,omitempty"`
	SharedLen int `json:"shared_len_s,omitempty"`
	// NoDeploy keeps version 1.0 serving throughout: the change after Pre seconds (errors,
	// latency) comes from outside the version, a dependency or a configuration flag, and only the
	// series' own profile can see it. Pre must exceed the detector's OwnProfileWarmup.
	NoDeploy bool `json:"no_deploy,omitempty"`
	// ResourceEvery > 1 reports cpu and memory every this many seconds per side instead of every
	// second, as a metrics scraper does (Prometheus' default is 15 s): cpu as the mean over the
	// interval (a rate of a cpu-seconds counter), memory as it is at the sample.
	ResourceEvery int `json:"resource_every_s,omitempty"`
	// HeavyTail > 0 makes 5 % of every version's requests slower by a Pareto factor of this
	// shape (1.2: one in a thousand of them 300 times slower or more): retries, lock waits and
	// timeouts, whose latencies span far more than the body's.
	HeavyTail float64 `json:"heavy_tail,omitempty"`
	// Timeouts > 0 makes this share of every version's requests take timeoutMS: a call
	// downstream that hung and was cut off by its client's timeout. They lie far above the rest
	// of the tail, a lump no smooth shape of it fits.
	Timeouts float64 `json:"timeouts,omitempty"`
	// Retries > 0 makes this share of every version's requests take twice their latency: a
	// first attempt that failed and was retried. Their latencies make a second mode inside the
	// tail, which a smooth shape of it does not fit either.
	Retries float64 `json:"retries,omitempty"`
	// ErrClump > 1 makes every version's exceptions come in clumps of this many consecutive
	// requests, at the same mean rate, as a dependency's blip or a retrying client makes them.
	ErrClump int `json:"err_clump,omitempty"`
	// PauseEvery > 0 stalls every version's process for PauseMS milliseconds every PauseEvery
	// seconds, adding PauseAddMS to every request in it, as a collector's pause does: slow
	// requests that come together, not independently. The stalls' phase is drawn per run, so
	// a deploy lands anywhere between two of them. Seconds long, every few minutes, the same
	// is a batch job or a cache refresh every version shares.
	PauseEvery int     `json:"pause_every_s,omitempty"`
	PauseMS    int     `json:"pause_ms,omitempty"`
	PauseAddMS float64 `json:"pause_add_ms,omitempty"`
	// Burst > 0 makes the traffic bursty: each second's rate is multiplied by a log-normal
	// factor of this σ (mean 1), independently, as clients that batch, retry or fan out make it.
	// Every version and cohort bursts together, and the requests' latency and cpu follow.
	Burst float64 `json:"burst,omitempty"`
	// ColdStart > 1 makes every version start slow: its latencies are this many times their
	// usual at its first request, easing off with a time constant of ColdTau seconds (0: 10), as
	// a JIT compiler, caches filling and connection pools opening make them.
	ColdStart float64 `json:"cold_start,omitempty"`
	ColdTau   int     `json:"cold_tau_s,omitempty"`
	// Instances > 0 names the instance that served each request (TelemetryEvent.Instance), one
	// of this many per version. During a Rollout the new version's instances start one after
	// another, Rollout/Instances seconds apart, and each has a cold start of its own (ColdStart).
	Instances int `json:"instances,omitempty"`
	// LatencyWarmup > 0 runs the scenario with detect.latency_warmup set to this many seconds, as
	// a user whose service starts slow would.
	LatencyWarmup int `json:"latency_warmup_s,omitempty"`
	// LoadLatency > 0 is how much the latencies rise with the load, as a share of its rise
	// (0: 0.05, a lightly loaded service's): 0.3 makes a ±60 % daily cycle of the rate a ±18 %
	// one of every latency, as a busier database or a fuller queue does. The load is the
	// processes': every component's requests, and the neighbour's (NeighbourRPS).
	LoadLatency float64 `json:"load_latency,omitempty"`
	// CyclePeriod > 0 adds a compressed daily cycle: the rate swings ±60 % over this period. A
	// day compressed to 6 h is harder than a real one: the rate changes 4× faster.
	CyclePeriod int `json:"cycle_period_s,omitempty"`
	// Components > 1 deploys a service of this many components at once, each serving RPS under
	// the same load, as the endpoints of one binary do: the scenario's change is the first
	// component's, and the others change version only. Every component's false rollback counts.
	Components int `json:"components,omitempty"`
	// OtherRPS > 0 has the components after the first serve this many req/s each instead of
	// RPS: a busy path among quieter ones.
	OtherRPS float64 `json:"other_rps,omitempty"`
	// MixWander > 0 makes the traffic mix wander: the share of requests that take the slow path
	// (2 % on average) is multiplied by a log-normal factor of this σ (mean 1) that drifts with a
	// time constant of MixTau seconds (0: 60), as the share of heavy customers, large carts or
	// uncached queries does over minutes. Every version and cohort shares it.
	MixWander float64 `json:"mix_wander,omitempty"`
	MixTau    int     `json:"mix_tau_s,omitempty"`
	// MixSlow > 0 has the wandering mix move the slow path's speed too: its latencies are
	// multiplied by exp(MixSlow·m) for the mix's unit Gaussian m, so when heavy requests are
	// more common they are slower as well, and where above a tail threshold the slow requests
	// land wanders with their share.
	MixSlow float64 `json:"mix_slow,omitempty"`
	// Settle > 0 counts no anomaly detected in the run's first Settle seconds: the run's start
	// stands for a history that in production began long before, and what a series learns
	// over its first hour (how far its traffic mix wanders) it would have known. Pre as Settle
	// counts what is found from the deploy (or the change) on.
	Settle int `json:"settle_s,omitempty"`
	// IncidentLen > 0 slows the slow path by IncidentTail for IncidentLen seconds, every
	// version's, from IncidentAt seconds into the run plus up to an epoch (drawn per run, so
	// it falls anywhere against the epochs): an incident the old version's history holds.
	IncidentAt   int     `json:"incident_at_s,omitempty"`
	IncidentLen  int     `json:"incident_len_s,omitempty"`
	IncidentTail float64 `json:"incident_tail,omitempty"`
}

// Traffic model constants (see Scenario).
const (
	baseErr     = 0.02
	baseInvalid = 0.01
	bodyMedian  = 20.0
	bodySigma   = 0.3
	tailShare   = 0.02
	tailMedian  = 60.0
	tailSigma   = 0.3
	// timeoutMS is the latency of a request cut off by its client's timeout (Scenario.Timeouts).
	timeoutMS  = 1000.0
	heavyShare = 0.05 // the share of requests a HeavyTail slows
	// unnamedInstances is how many instances a rolling update starts when the scenario does not
	// name them (Instances 0): a cold start is still each one's.
	unnamedInstances = 10
	baseMemMB        = 512.0
	cpuIdle          = 0.05 // an instance's cpu share serving nothing
	cpuBusy          = 0.25 // its cpu share added serving the scenario's rate
	cpuNoise         = 0.02 // the standard deviation of a cpu sample
	memGrowTau       = 60.0 // seconds: the time constant of a version's memory growth as it starts (MemGrowMB)
	oldVersion       = "1.0"
	newVersion       = "2.0"
	scenarioSvc      = "shop"
	scenarioComp     = "checkout"
)

// scenarioT0 is the event time every generated deploy starts at.
var scenarioT0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func orOne(v float64) float64 {
	return orValue(v, 1)
}

// orValue is v, or def when v is 0.
func orValue(v, def float64) float64 {
	if v == 0 {
		return def
	}
	return v
}

// DefaultScenarios is the suite: aaRuns A/A deploys (spread over 20, 50 and 100 req/s) and runs
// deploys of every other scenario.
//
// The old version serves 7.5 min before a deploy: the detector keeps one to two 5 min epochs of
// a version's history, so a version that served longer than that (the usual case) gives a
// baseline of 5 to 10 min, and 7.5 is the middle. The low-traffic scenarios serve 20 min, which
// at 0.5 req/s still leaves only 200-400 requests in the baseline.
func DefaultScenarios() []Scenario {
	const pre, post = 450, 330
	// watch is detect.deploy_watch: the rows some of whose deploys a shorter watch misses are
	// watched for as long as the detector compares a new version with the old, so their mean
	// time to detect is a mean, or at least a lower bound of the whole watch.
	const watch = 3600
	s := []Scenario{
		{Name: "A/A no change", RPS: 0, Pre: pre, Post: post}, // RPS 0: rotates 20/50/100
		{Name: "error x1.5 @20rps, watched 1h", Regression: true, RPS: 20, Pre: pre, Post: watch, ErrMul: 1.5},
		{Name: "error x2 @20rps", Regression: true, RPS: 20, Pre: pre, Post: post, ErrMul: 2},
		{Name: "error x5 @20rps", Regression: true, RPS: 20, Pre: pre, Post: post, ErrMul: 5},
		{Name: "error x5 @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, ErrMul: 5},
		{Name: "error x10 @20rps", Regression: true, RPS: 20, Pre: pre, Post: post, ErrMul: 10},
		{Name: "error ramp x5/60s @20rps", Regression: true, RPS: 20, Pre: pre, Post: post, ErrMul: 5, Ramp: 60},
		{Name: "latency ramp all x2/60s @20rps", Regression: true, RPS: 20, Pre: pre, Post: post, BodyMul: 2, TailMul: 2, Ramp: 60},
		{Name: "p99 ramp x2/120s tail-only @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, TailMul: 2, Ramp: 120},
		{Name: "rolling update over 5min, no change @50rps", RPS: 50, Pre: pre, Post: 600, Rollout: 300},
		{Name: "rolling update over 5min, error x5 @20rps", Regression: true, RPS: 20, Pre: pre, Post: 600, Rollout: 300, ErrMul: 5},
		{Name: "rolling update over 5min, latency all x2 @20rps", Regression: true, RPS: 20, Pre: pre, Post: 600, Rollout: 300, BodyMul: 2, TailMul: 2},
		{Name: "16 components deployed together, no change @20rps each", RPS: 20, Pre: pre, Post: post, Components: 16},
		{Name: "16 components deployed together, error x5 in one @20rps each", Regression: true, RPS: 20, Pre: pre, Post: post, Components: 16, ErrMul: 5},
		{Name: "16 components deployed together, one busy @20rps and 15 @2rps, no change", RPS: 20, Pre: pre, Post: post, Components: 16, OtherRPS: 2},
		{Name: "16 components deployed together, error x5 in the busy one @20rps, 15 others @2rps", Regression: true, RPS: 20, Pre: pre, Post: post, Components: 16, OtherRPS: 2, ErrMul: 5},
		{Name: "invalid_input x10 @20rps", RPS: 20, Pre: pre, Post: post, InvalidMul: 10},
		{Name: "latency all x2 @20rps", Regression: true, RPS: 20, Pre: pre, Post: post, BodyMul: 2, TailMul: 2},
		{Name: "median +25% @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, BodyMul: 1.25},
		{Name: "p99 +10% @50rps, watched 1h", Regression: true, RPS: 50, Pre: pre, Post: watch, TailMul: 1.1},
		{Name: "p99 +25% @50rps, watched 1h", Regression: true, RPS: 50, Pre: pre, Post: watch, TailMul: 1.25},
		{Name: "p99 +50% @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, TailMul: 1.5},
		{Name: "p99 x2 tail-only @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, TailMul: 2},
		{Name: "heavy tail (5% of requests Pareto 1.2), no change @50rps", RPS: 50, Pre: pre, Post: post, HeavyTail: 1.2},
		{Name: "heavy tail (5% of requests Pareto 1.2), latency all x2 @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, HeavyTail: 1.2, BodyMul: 2, TailMul: 2},
		{Name: "timeouts (0.05% of requests cut off at 1s), no change @50rps", RPS: 50, Pre: pre, Post: post, Timeouts: 0.0005},
		{Name: "timeouts (0.2% of requests cut off at 1s), no change @50rps", RPS: 50, Pre: pre, Post: post, Timeouts: 0.002},
		{Name: "timeouts (0.05% of requests cut off at 1s), p99 x2 tail-only @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, Timeouts: 0.0005, TailMul: 2},
		{Name: "retries (2% of requests retried once, twice as slow), no change @50rps", RPS: 50, Pre: pre, Post: post, Retries: 0.02},
		{Name: "retries (0.5% of requests retried once, twice as slow), no change @50rps", RPS: 50, Pre: pre, Post: post, Retries: 0.005},
		{Name: "pauses of 200ms every 10s (+100ms), no change @50rps", RPS: 50, Pre: pre, Post: post, PauseEvery: 10, PauseMS: 200, PauseAddMS: 100},
		// A collector's long pauses: every request in a second's stall is half a second slower.
		{Name: "pauses of 1s every 30s (+500ms), no change @50rps", RPS: 50, Pre: pre, Post: post, PauseEvery: 30, PauseMS: 1000, PauseAddMS: 500},
		{Name: "pauses of 1s every 30s (+500ms), latency all x2 @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, PauseEvery: 30, PauseMS: 1000, PauseAddMS: 500, BodyMul: 2, TailMul: 2},
		// A batch job (a cache refresh, a backup) that slows every version's requests by 20 ms,
		// doubling the median, for 10 s every 5 min: a run of slow buckets that every baseline
		// has had too (detect.latency_excursion_max).
		{Name: "batch job every 5min (+20ms, the median x2, for 10s), no change @50rps", RPS: 50, Pre: pre, Post: post, PauseEvery: 300, PauseMS: 10000, PauseAddMS: 20},
		{Name: "batch job every 5min (+20ms for 10s), latency all x2 @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, PauseEvery: 300, PauseMS: 10000, PauseAddMS: 20, BodyMul: 2, TailMul: 2},
		// A traffic mix that wanders: the slow path's share (2 % on average) times a log-normal
		// factor of σ 0.6 drifting over a minute (or five), which every version serves. A series
		// learns how far its mix wanders over its first hour (detect.latency_drift), so the old
		// version serves an hour before the deploy, and what counts is found from the deploy on.
		{Name: "traffic mix wanders (slow share x log-normal σ0.6 over 1min), no change @50rps", RPS: 50, Pre: watch, Post: post, MixWander: 0.6, Settle: watch},
		{Name: "traffic mix wanders (σ0.6 over 1min), no change @20rps", RPS: 20, Pre: watch, Post: post, MixWander: 0.6, Settle: watch},
		// The same wander where an epoch holds fewer slow requests, too few below about 13 req/s
		// for p99.5 to measure its drift (detect's driftMinExpected); and a tail twice as slow
		// where the baseline supports p99.5 (5 req/s; 2 req/s after an old version that served an
		// hour, whose history holds detect.history_min_requests) or no tail quantile (2 req/s
		// after 7.5 minutes, fewer than 2 000 requests: detect.latency_min_tail_count).
		{Name: "traffic mix wanders (σ0.6 over 1min), no change @15rps", RPS: 15, Pre: watch, Post: post, MixWander: 0.6, Settle: watch},
		{Name: "traffic mix wanders (σ0.6 over 1min), no change @10rps", RPS: 10, Pre: watch, Post: post, MixWander: 0.6, Settle: watch},
		{Name: "traffic mix wanders (σ0.6 over 1min), no change @5rps", RPS: 5, Pre: watch, Post: post, MixWander: 0.6, Settle: watch},
		{Name: "p99 x2 tail-only @5rps, watched 1h", Regression: true, RPS: 5, Pre: pre, Post: watch, TailMul: 2},
		{Name: "p99 x2 tail-only @2rps, watched 1h", Regression: true, RPS: 2, Pre: pre, Post: watch, TailMul: 2},
		{Name: "p99 x2 tail-only @2rps, the old version 1h, watched 1h", Regression: true, RPS: 2, Pre: watch, Post: watch, TailMul: 2},
		{Name: "traffic mix wanders (σ0.6 over 5min), no change @50rps", RPS: 50, Pre: watch, Post: post, MixWander: 0.6, MixTau: 300, Settle: watch},
		// A wander that moves the slow path's speed with its share (±10 % a standard deviation):
		// where above a tail threshold its requests land wanders too, which the excess's test,
		// unlike the count's, is not tempered for (excessParams).
		{Name: "traffic mix wanders, the slow path's speed too (σ0.1), no change @50rps", RPS: 50, Pre: watch, Post: post, MixWander: 0.6, MixSlow: 0.1, Settle: watch},
		{Name: "traffic mix wanders, the slow path's speed too (σ0.1), no change @20rps", RPS: 20, Pre: watch, Post: post, MixWander: 0.6, MixSlow: 0.1, Settle: watch},
		{Name: "traffic mix wanders (σ0.6 over 1min), p99 x2 tail-only @50rps", Regression: true, RPS: 50, Pre: watch, Post: post, MixWander: 0.6, Settle: watch, TailMul: 2},
		// The same where p99.5's drift is measured at a substitute threshold (detect.latency_drift):
		// what a wander's better-read drift costs a tail regression at a rate where it was read low.
		{Name: "traffic mix wanders (σ0.6 over 1min), p99 x2 tail-only @20rps, watched 1h", Regression: true, RPS: 20, Pre: watch, Post: watch, MixWander: 0.6, Settle: watch, TailMul: 2},
		{Name: "traffic mix wanders (σ0.6 over 1min), latency all x2 @50rps", Regression: true, RPS: 50, Pre: watch, Post: post, MixWander: 0.6, Settle: watch, BodyMul: 2, TailMul: 2},
		{Name: "a tail incident 25-30 min before the deploy (the slow path x3 for 4 min), no change @50rps", RPS: 50, Pre: watch, Post: post, Settle: watch, IncidentAt: watch / 2, IncidentLen: 240, IncidentTail: 3},
		{Name: "a tail incident 25-30 min before the deploy (the slow path x3 for 4 min), p99 x2 tail-only @50rps", Regression: true, RPS: 50, Pre: watch, Post: post, Settle: watch, IncidentAt: watch / 2, IncidentLen: 240, IncidentTail: 3, TailMul: 2},
		{Name: "cold start (every latency x3, easing off over 10s), latency_warmup 30s, no change @50rps", RPS: 50, Pre: pre, Post: post, ColdStart: 3, LatencyWarmup: 30},
		{Name: "cold start (x3 over 10s), latency_warmup 30s, latency all x2 @20rps", Regression: true, RPS: 20, Pre: pre, Post: post, ColdStart: 3, LatencyWarmup: 30, BodyMul: 2, TailMul: 2},
		{Name: "rolling update of 10 named instances over 5min, each a cold start, latency_warmup 30s, no change @50rps", RPS: 50, Pre: pre, Post: 600, Rollout: 300, Instances: 10, ColdStart: 3, LatencyWarmup: 30},
		{Name: "rolling update of 10 named instances over 5min, each a cold start, latency_warmup 30s, latency all x2 @20rps", Regression: true, RPS: 20, Pre: pre, Post: 600, Rollout: 300, Instances: 10, ColdStart: 3, LatencyWarmup: 30, BodyMul: 2, TailMul: 2},
		{Name: "errors in clumps of 5, no change @50rps", RPS: 50, Pre: pre, Post: post, ErrClump: 5},
		{Name: "errors in clumps of 5, error x5 @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, ErrClump: 5, ErrMul: 5},
		{Name: "throughput drop to 30% @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, RateMul: 0.3},
		{Name: "the new version hangs 30s after the deploy (not one request more), a second component @20rps", Regression: true, RPS: 20, Pre: pre, Post: post, Components: 2, HangAt: 30},
		{Name: "the new version hangs 30s after the deploy, alone, its cpu and memory still sent @20rps", Regression: true, RPS: 20, Pre: pre, Post: post, HangAt: 30},
		{Name: "the new version sends nothing more 30s after the deploy, alone (serve's clock ticks after 10s of quiet) @20rps", Regression: true, RPS: 20, Pre: pre, Post: post, HangAt: 30, HangMute: true, Ticks: true},
		{Name: "bursty traffic (each second's rate log-normal, σ 0.5), no change @50rps", RPS: 50, Pre: pre, Post: post, Burst: 0.5},
		{Name: "bursty traffic (σ 0.5), throughput drop to 30% @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, Burst: 0.5, RateMul: 0.3},
		{Name: "memory leak 5MB/min @20rps", Regression: true, RPS: 20, Pre: pre, Post: 1200, LeakMBMin: 5},
		{Name: "memory leak 1MB/min @20rps", Regression: true, RPS: 20, Pre: pre, Post: 2400, LeakMBMin: 1},
		{Name: "memory grows 150MB as caches fill, no regression @20rps", RPS: 20, Pre: pre, Post: 1200, MemGrowMB: 150},
		{Name: "memory grows 150MB over 10 min, deploys 10 min apart, no regression @20rps", RPS: 20, Pre: 600, Post: 1800, MemGrowMB: 150, MemGrowTau: 600},
		{Name: "memory grows 150MB as caches fill, leak 5MB/min @20rps", Regression: true, RPS: 20, Pre: pre, Post: 1200, MemGrowMB: 150, LeakMBMin: 5},
		{Name: "cpu x1.5 @20rps", Regression: true, RPS: 20, Pre: pre, Post: post, CPUMul: 1.5},
		{Name: "cpu x1.25 @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, CPUMul: 1.25},
		{Name: "traffic spike x3, no regression", RPS: 50, Pre: pre, Post: post, SpikeAt: 60, SpikeLen: 60, SpikeMul: 3},
		{Name: "traffic spike x3 on another component of the same processes, no regression @50rps", RPS: 50, Pre: pre, Post: post, NeighbourRPS: 50, NeighbourSpike: true, SpikeAt: 60, SpikeLen: 60, SpikeMul: 3},
		// A service whose latency follows its load (LoadLatency 0.3: a spike ×3 slows every
		// latency by 60 %), read at its load (detect.latency_load_share).
		{Name: "traffic spike x3, latency following the load (+60%), no regression @50rps", RPS: 50, Pre: pre, Post: post, SpikeAt: 60, SpikeLen: 60, SpikeMul: 3, LoadLatency: 0.3},
		{Name: "deploy during a traffic spike x3, latency following the load (+60%), no regression @50rps", RPS: 50, Pre: pre, Post: post, SpikeLen: 60, SpikeMul: 3, LoadLatency: 0.3},
		{Name: "deploy during a traffic spike x3, latency following the load (+60%), latency all x2 @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, SpikeLen: 60, SpikeMul: 3, LoadLatency: 0.3, BodyMul: 2, TailMul: 2},
		// The same on another, busier component of the service (three times this one's rate):
		// its spike ×3 makes the processes' load ×2.5 and slows this component by 45 %, whose own
		// requests do not move (read at its service's load).
		{Name: "traffic spike x3 on a busier component of the same service, latency following the processes' load (+45%), no regression @50rps", RPS: 50, Pre: pre, Post: post, Components: 2, OtherRPS: 150, NeighbourSpike: true, SpikeAt: 60, SpikeLen: 60, SpikeMul: 3, LoadLatency: 0.3},
		{Name: "deploy during a traffic spike x3 on a busier component of the same service, latency following the processes' load (+45%), latency all x2 @50rps", Regression: true, RPS: 50, Pre: pre, Post: post, Components: 2, OtherRPS: 150, NeighbourSpike: true, SpikeLen: 60, SpikeMul: 3, LoadLatency: 0.3, BodyMul: 2, TailMul: 2},
		{Name: "cpu x1.5, processes shared with another component @20rps", Regression: true, RPS: 20, Pre: pre, Post: post, CPUMul: 1.5, NeighbourRPS: 20},
		{Name: "low traffic 0.5rps, no change, watched 1h", RPS: 0.5, Pre: 1200, Post: watch},
		{Name: "low traffic 0.5rps, error x5, watched 1h", Regression: true, RPS: 0.5, Pre: 1200, Post: watch, ErrMul: 5},
		{Name: "daily cycle (6h), no change", RPS: 10, Pre: 600, Post: 10800, CyclePeriod: 21600},
		{Name: "daily cycle (24h), latency following the load (±18%), watched 6h, no change", RPS: 10, Pre: 600, Post: 21600, CyclePeriod: 86400, LoadLatency: 0.3},
		{Name: "daily cycle (6h) without a deploy, no change", RPS: 10, Pre: 900, Post: 10800, NoDeploy: true, CyclePeriod: 21600},
		{Name: "error x5 without a deploy @20rps", Regression: true, RPS: 20, Pre: 900, Post: post, NoDeploy: true, ErrMul: 5},
		{Name: "latency x2 without a deploy @20rps", Regression: true, RPS: 20, Pre: 900, Post: post, NoDeploy: true, BodyMul: 2, TailMul: 2},
		{Name: "cpu x1.5 without a deploy @20rps", Regression: true, RPS: 20, Pre: 900, Post: post, NoDeploy: true, CPUMul: 1.5},
		{Name: "memory leak 5MB/min without a deploy @20rps", Regression: true, RPS: 20, Pre: 900, Post: 1200, NoDeploy: true, LeakMBMin: 5},
		{Name: "errors in clumps of 5 without a deploy, no change @50rps", RPS: 50, Pre: 900, Post: post, NoDeploy: true, ErrClump: 5},
		{Name: "errors in clumps of 5, error x5 without a deploy @50rps", Regression: true, RPS: 50, Pre: 900, Post: post, NoDeploy: true, ErrClump: 5, ErrMul: 5},
		{Name: "bursty traffic (σ 0.5) without a deploy, no change @50rps", RPS: 50, Pre: 900, Post: post, NoDeploy: true, Burst: 0.5},
		{Name: "batch job every 5min (+20ms for 10s) without a deploy, no change @50rps", RPS: 50, Pre: 900, Post: 600, NoDeploy: true, PauseEvery: 300, PauseMS: 10000, PauseAddMS: 20},
		{Name: "batch job every 5min (+20ms for 10s), latency x2 without a deploy @50rps", Regression: true, RPS: 50, Pre: 900, Post: post, NoDeploy: true, PauseEvery: 300, PauseMS: 10000, PauseAddMS: 20, BodyMul: 2, TailMul: 2},
		{Name: "traffic mix wanders (σ0.6 over 1min) without a deploy, no change @50rps", RPS: 50, Pre: watch, Post: post, NoDeploy: true, MixWander: 0.6, Settle: watch},
		{Name: "traffic spike x3 without a deploy @50rps", RPS: 50, Pre: 900, Post: post, NoDeploy: true, SpikeAt: 60, SpikeLen: 60, SpikeMul: 3},
		{Name: "traffic spike x3 without a deploy, latency following the load (+60%) @50rps", RPS: 50, Pre: 900, Post: post, NoDeploy: true, SpikeAt: 60, SpikeLen: 60, SpikeMul: 3, LoadLatency: 0.3},
		{Name: "traffic spike x3 on a busier component of the same service without a deploy, latency following the processes' load (+45%) @50rps", RPS: 50, Pre: 900, Post: post, NoDeploy: true, Components: 2, OtherRPS: 150, NeighbourSpike: true, SpikeAt: 60, SpikeLen: 60, SpikeMul: 3, LoadLatency: 0.3},
		{Name: "canary 5% of 100rps, no change", RPS: 100, Pre: pre, Post: post, CanaryShare: 0.05},
		{Name: "canary 5% of 100rps, error x5", Regression: true, RPS: 100, Pre: pre, Post: post, CanaryShare: 0.05, ErrMul: 5},
		{Name: "canary 5% of 100rps, bursty traffic (σ 0.5), no change", RPS: 100, Pre: pre, Post: post, CanaryShare: 0.05, Burst: 0.5},
		{Name: "canary 50% of 100rps, no change", RPS: 100, Pre: pre, Post: post, CanaryShare: 0.5},
		// The mix whose slow path's speed wanders with its share, which against the version before
		// it rolls back about 3 % of healthy deploys: both cohorts serve it at the same moment.
		{Name: "canary 50% of 100rps, traffic mix wanders, the slow path's speed too (σ0.1), no change", RPS: 100, Pre: watch, Post: post, CanaryShare: 0.5, MixWander: 0.6, MixSlow: 0.1, Settle: watch},
		{Name: "canary 50% of 100rps, traffic spike x3, no regression", RPS: 100, Pre: pre, Post: post, CanaryShare: 0.5, SpikeAt: 60, SpikeLen: 60, SpikeMul: 3},
		{Name: "canary 50% of 100rps, traffic spike x3, the stable version served 11 min before it (its own profile warm), no regression", RPS: 100, Pre: 660, Post: post, CanaryShare: 0.5, SpikeAt: 60, SpikeLen: 60, SpikeMul: 3},
		{Name: "canary 50% of 100rps, traffic spike x3, latency following the load (+60%), no regression", RPS: 100, Pre: pre, Post: post, CanaryShare: 0.5, SpikeAt: 60, SpikeLen: 60, SpikeMul: 3, LoadLatency: 0.3},
		{Name: "canary 50% of 100rps, shared failure x3, no regression", RPS: 100, Pre: pre, Post: post, CanaryShare: 0.5, SharedErrMul: 3},
		{Name: "canary 50% of 100rps, shared slowdown x1.3, no regression", RPS: 100, Pre: pre, Post: post, CanaryShare: 0.5, SharedLatMul: 1.3},
		{Name: "canary 50% of 100rps, error x2", Regression: true, RPS: 100, Pre: pre, Post: post, CanaryShare: 0.5, ErrMul: 2},
		{Name: "canary 50% of 100rps, fresh baseline cohort, no change", RPS: 100, Pre: pre, Post: post, CanaryShare: 0.5, FreshBaseline: true},
		{Name: "canary 50% of 100rps, fresh baseline cohort, error x2", Regression: true, RPS: 100, Pre: pre, Post: post, CanaryShare: 0.5, FreshBaseline: true, ErrMul: 2},
		{Name: "canary 50% of 100rps, fresh baseline cohort, latency x2", Regression: true, RPS: 100, Pre: pre, Post: post, CanaryShare: 0.5, FreshBaseline: true, BodyMul: 2, TailMul: 2},
		{Name: "canary 50% of 100rps, latency x2", Regression: true, RPS: 100, Pre: pre, Post: post, CanaryShare: 0.5, BodyMul: 2, TailMul: 2},
		{Name: "canary 5% of 100rps, cpu x1.5", Regression: true, RPS: 100, Pre: pre, Post: post, CanaryShare: 0.05, CPUMul: 1.5},
		// cpu and memory as a metrics scraper reports them (Prometheus' default interval)
		{Name: "cpu x1.5, scraped every 15s @20rps", Regression: true, RPS: 20, Pre: pre, Post: post, CPUMul: 1.5, ResourceEvery: 15},
		{Name: "cpu x1.5 without a deploy, scraped every 15s @20rps", Regression: true, RPS: 20, Pre: 900, Post: post, NoDeploy: true, CPUMul: 1.5, ResourceEvery: 15},
		{Name: "canary 5% of 100rps, cpu x1.5, scraped every 15s", Regression: true, RPS: 100, Pre: pre, Post: post, CanaryShare: 0.05, CPUMul: 1.5, ResourceEvery: 15},
		{Name: "traffic spike x3, scraped every 15s, no regression", RPS: 50, Pre: pre, Post: post, SpikeAt: 60, SpikeLen: 60, SpikeMul: 3, ResourceEvery: 15},
		{Name: "memory leak 5MB/min, scraped every 15s @20rps", Regression: true, RPS: 20, Pre: pre, Post: 1200, LeakMBMin: 5, ResourceEvery: 15},
		{Name: "memory grows 150MB as caches fill, scraped every 15s, no regression @20rps", RPS: 20, Pre: pre, Post: 1200, MemGrowMB: 150, ResourceEvery: 15},
		{Name: "memory leak 5MB/min without a deploy, scraped every 15s @20rps", Regression: true, RPS: 20, Pre: 900, Post: 1200, NoDeploy: true, LeakMBMin: 5, ResourceEvery: 15},
	}
	return s
}

// aaRates are the request rates A/A deploys rotate through.
var aaRates = [...]float64{20, 50, 100}

// runRPS is the request rate of one run of a scenario.
func (sc *Scenario) runRPS(run int) float64 {
	if sc.RPS == 0 {
		return aaRates[run%len(aaRates)]
	}
	return sc.RPS
}

// deployAt is the event time the new version starts serving (with NoDeploy: the change starts).
func (sc *Scenario) deployAt() time.Time {
	return scenarioT0.Add(time.Duration(sc.Pre) * time.Second)
}

// changedVersion is the version whose behaviour the scenario changes.
func (sc *Scenario) changedVersion() string {
	if sc.NoDeploy {
		return oldVersion
	}
	return newVersion
}

// onlyChangedCounts says only the changed version's anomalies count: a regression's, and a
// shared failure's or slowdown's, which the old version's own profile rightly reports.
func (sc *Scenario) onlyChangedCounts() bool {
	return sc.Regression || sc.SharedErrMul > 0 || sc.SharedLatMul > 0
}

// at is the new version's multiplier m (0 = 1) t seconds after the deploy: m itself, or on the
// way to it during a Ramp.
func (sc *Scenario) at(m, t float64) float64 {
	m = orOne(m)
	if sc.Ramp > 0 && t < float64(sc.Ramp) {
		return 1 + (m-1)*t/float64(sc.Ramp)
	}
	return m
}

// share is the new version's share of the traffic t seconds after the deploy during a Rollout
// (1 without one).
func (sc *Scenario) share(t float64) float64 {
	if sc.Rollout > 0 && t < float64(sc.Rollout) {
		return t / float64(sc.Rollout)
	}
	return 1
}

// cold is how many times slower than usual a version or instance of this age (seconds) serves
// (ColdStart).
func (sc *Scenario) cold(age float64) float64 {
	if sc.ColdStart <= 1 {
		return 1
	}
	tau := 10.0
	if sc.ColdTau > 0 {
		tau = float64(sc.ColdTau)
	}
	return 1 + (sc.ColdStart-1)*math.Exp(-age/tau)
}

// generate produces one run's events in time order into buf (reused) and returns it.
func (sc *Scenario) generate(seed uint64, run int, buf []schemas.TelemetryEvent) []schemas.TelemetryEvent {
	rng := rand.New(rand.NewPCG(seed, uint64(run)*0x9e3779b97f4a7c15+0x5ca1))
	rps := sc.runRPS(run)
	out := buf[:0]
	walk := 0.0
	phase := rng.Float64() * 2 * math.Pi
	total := sc.Pre + sc.Post
	every, resPhase := 1, 0
	var instNames map[string][]string // by version: its instances' names (Instances)
	if sc.Instances > 0 {
		instNames = map[string][]string{}
		for _, v := range []string{oldVersion, newVersion} {
			for k := range sc.Instances {
				instNames[v] = append(instNames[v], fmt.Sprintf("%s-%s-%d", scenarioComp, v, k))
			}
		}
	}
	var pausePhase time.Duration
	if sc.PauseEvery > 0 {
		pausePhase = time.Duration(rng.Int64N(int64(time.Duration(sc.PauseEvery) * time.Second))).Truncate(time.Millisecond)
	}
	// mix is the wandering traffic mix's state (MixWander): a unit Gaussian that an
	// Ornstein-Uhlenbeck step moves each second, so it keeps its spread while it drifts.
	var mix, mixKeep float64
	slowShare := tailShare
	if sc.MixWander > 0 {
		mix, mixKeep = rng.NormFloat64(), math.Exp(-1/orValue(float64(sc.MixTau), 60))
	}
	incidentAt := 0
	if sc.IncidentLen > 0 {
		incidentAt = sc.IncidentAt + rng.IntN(300)
	}
	incident := func(sec int) bool { return sc.IncidentLen > 0 && sec >= incidentAt && sec < incidentAt+sc.IncidentLen }
	clumpLeft := map[string]int{} // by version and cohort: the exceptions left of a clump (ErrClump)
	type cpuAcc struct{ sum, load, n float64 }
	var cpuAccs map[string]*cpuAcc // by version and cohort: the cpu since the side's last sample
	if sc.ResourceEvery > 1 {
		every, resPhase = sc.ResourceEvery, rng.IntN(sc.ResourceEvery)
		cpuAccs = map[string]*cpuAcc{}
	}
	for sec := range total {
		walk = 0.98*walk + 0.004*rng.NormFloat64() // a slow random walk of the load, a few percent
		load := math.Exp(walk)
		after := sec >= sc.Pre
		t := float64(sec - sc.Pre)
		if sc.CyclePeriod > 0 {
			load *= 1 + 0.6*math.Sin(2*math.Pi*float64(sec)/float64(sc.CyclePeriod)+phase)
		}
		if sc.Burst > 0 {
			load *= math.Exp(sc.Burst*rng.NormFloat64() - sc.Burst*sc.Burst/2)
		}
		if sc.MixWander > 0 {
			mix = mixKeep*mix + math.Sqrt(1-mixKeep*mixKeep)*rng.NormFloat64()
			slowShare = tailShare * math.Exp(sc.MixWander*mix-sc.MixWander*sc.MixWander/2)
		}
		nb := sc.NeighbourRPS * load // the other component's req/s, per instance
		others := 1.0                // what the spike multiplies the other components' rates by
		if after && sc.SpikeLen > 0 && t >= float64(sc.SpikeAt) && t < float64(sc.SpikeAt+sc.SpikeLen) {
			if sc.NeighbourSpike {
				nb *= sc.SpikeMul
				others = sc.SpikeMul
			} else {
				load *= sc.SpikeMul
			}
		}
		elastic := 0.05
		if sc.LoadLatency > 0 {
			elastic = sc.LoadLatency
		}
		// Latency follows the processes' load: every component's requests, and the neighbour's.
		otherRPS := float64(max(1, sc.Components)-1) * orValue(sc.OtherRPS, rps)
		procLoad := (rps*load + otherRPS*load*others + nb) / math.Max(rps+otherRPS+sc.NeighbourRPS, 1e-9)
		latLoad := 1 + elastic*(procLoad-1)
		segStart := len(out)
		base := scenarioT0.Add(time.Duration(sec) * time.Second)
		type side struct {
			version, cohort string
			rate            float64
			changed         bool
			instances       float64 // the side's share of the instances: its cpu is one instance's
		}
		var sides [2]side
		ns := 1
		switch {
		case !after && sc.CanaryShare > 0 && !sc.FreshBaseline:
			sides[0] = side{oldVersion, schemas.CohortBaseline, rps * load, false, 1}
		case !after:
			sides[0] = side{oldVersion, "", rps * load, false, 1}
		case sc.NoDeploy:
			sides[0] = side{oldVersion, "", rps * load * orOne(sc.RateMul), true, 1}
		case sc.Rollout > 0 && t < float64(sc.Rollout) && sc.CanaryShare == 0:
			share := sc.share(t + 0.5) // the second's mean share
			sides[0] = side{oldVersion, "", rps * load * (1 - share), false, 1 - share}
			sides[1] = side{newVersion, "", rps * load * share * orOne(sc.RateMul), true, share}
			ns = 2
		case sc.CanaryShare > 0:
			sides[0] = side{oldVersion, schemas.CohortBaseline, rps * load * (1 - sc.CanaryShare), false, 1 - sc.CanaryShare}
			sides[1] = side{newVersion, schemas.CohortCanary, rps * load * sc.CanaryShare * orOne(sc.RateMul), true, sc.CanaryShare}
			ns = 2
		default:
			sides[0] = side{newVersion, "", rps * load * orOne(sc.RateMul), true, 1}
		}
		for comp := range max(1, sc.Components) {
			for _, sd := range sides[:ns] {
				sd.changed = sd.changed && comp == 0
				if comp > 0 && sc.OtherRPS > 0 {
					sd.rate *= sc.OtherRPS / rps
				}
				if comp > 0 {
					sd.rate *= others
				}
				if sd.changed && sc.HangAt > 0 && t >= float64(sc.HangAt) {
					sd.rate = 0
				}
				n := poissonN(rng, sd.rate)
				errP, invP, bodyM, tailM := baseErr, baseInvalid, latLoad, latLoad
				if after && (sc.SharedLen == 0 || t >= float64(sc.SharedAt) && t < float64(sc.SharedAt+sc.SharedLen)) {
					errP *= orOne(sc.SharedErrMul)
					bodyM *= orOne(sc.SharedLatMul)
					tailM *= orOne(sc.SharedLatMul)
				}
				if incident(sec) {
					tailM *= sc.IncidentTail
				}
				if sc.MixSlow > 0 {
					tailM *= math.Exp(sc.MixSlow * mix)
				}
				age := float64(sec) // the old version started with the scenario, the new one with the deploy
				if sd.version == newVersion {
					age = t
				}
				// A rolling update starts the new version's instances one after another: a request
				// then lands on one of those started so far, and with a cold start (ColdStart) is as
				// slow as that instance's age makes it.
				rolling := sd.version == newVersion && sc.Rollout > 0 && sc.CanaryShare == 0 && !sc.NoDeploy
				perInstanceAge := sc.ColdStart > 1 && rolling
				if sc.ColdStart > 1 && !perInstanceAge {
					f := sc.cold(age)
					bodyM *= f
					tailM *= f
				}
				mem := baseMemMB + 3*rng.NormFloat64()
				if sc.MemGrowMB > 0 {
					tau := memGrowTau
					if sc.MemGrowTau > 0 {
						tau = float64(sc.MemGrowTau)
					}
					mem += sc.MemGrowMB * (1 - math.Exp(-age/tau))
				}
				cpuM := 1.0
				if sd.changed {
					cpuM = orOne(sc.CPUMul)
					errP *= sc.at(sc.ErrMul, t)
					invP *= orOne(sc.InvalidMul)
					bodyM *= sc.at(sc.BodyMul, t)
					tailM *= sc.at(sc.TailMul, t)
					mem += sc.LeakMBMin * t / 60
				}
				perInstance := sd.rate / sd.instances / math.Max(rps, 1e-9)
				cpu := math.Max(0, cpuM*(cpuIdle+cpuBusy*perInstance)+cpuBusy*nb/math.Max(rps, 1e-9)+cpuNoise*rng.NormFloat64())
				procRPS := sd.rate/sd.instances + nb
				sample := true
				if hung := sd.changed && sc.HangAt > 0 && t >= float64(sc.HangAt); hung && comp == 0 && !sc.HangMute {
					// No request to carry them, but the process is alive: its cpu and memory come
					// as a scraper's samples, once a second.
					c, m := cpu, mem
					out = append(out, schemas.TelemetryEvent{TS: base, Service: scenarioSvc, Component: scenarioComp,
						Version: sd.version, Cohort: sd.cohort, CPU: &c, MemMB: &m})
				}
				if every > 1 {
					acc := cpuAccs[sd.version+"/"+sd.cohort]
					if acc == nil {
						acc = new(cpuAcc)
						cpuAccs[sd.version+"/"+sd.cohort] = acc
					}
					acc.sum, acc.load, acc.n = acc.sum+cpu, acc.load+procRPS, acc.n+1
					if sample = (sec+resPhase)%every == 0 && n > 0; sample {
						cpu, procRPS = acc.sum/acc.n, acc.load/acc.n
						*acc = cpuAcc{}
					}
				}
				for i := range n {
					ts := base.Add(time.Duration(rng.Int64N(int64(time.Second)))).Truncate(time.Millisecond)
					var lat float64
					if rng.Float64() < slowShare {
						lat = tailMedian * tailM * math.Exp(tailSigma*rng.NormFloat64())
					} else {
						lat = bodyMedian * bodyM * math.Exp(bodySigma*rng.NormFloat64())
					}
					if sc.PauseEvery > 0 && (ts.Sub(scenarioT0)+pausePhase)%(time.Duration(sc.PauseEvery)*time.Second) < time.Duration(sc.PauseMS)*time.Millisecond {
						lat += sc.PauseAddMS
					}
					if sc.Retries > 0 && rng.Float64() < sc.Retries {
						lat *= 2
					}
					if sc.Timeouts > 0 && rng.Float64() < sc.Timeouts {
						lat = timeoutMS
					}
					if sc.HeavyTail > 0 && rng.Float64() < heavyShare {
						lat *= math.Pow(1-rng.Float64(), -1/sc.HeavyTail) // Pareto: a few take 100 or 1000 times as long
					}
					inst := ""
					if sc.Instances > 0 || perInstanceAge {
						pods := sc.Instances
						if pods == 0 {
							pods = unnamedInstances
						}
						up, apart := pods, float64(sc.Rollout)/float64(pods)
						if rolling && t < float64(sc.Rollout) {
							up = min(pods, int(t/apart)+1)
						}
						k := rng.IntN(up)
						if sc.Instances > 0 {
							inst = instNames[sd.version][k]
						}
						if perInstanceAge {
							lat *= sc.cold(t - float64(k)*apart)
						}
					}
					lat = math.Round(lat*100) / 100
					ev := schemas.TelemetryEvent{TS: ts, Service: scenarioSvc, Component: componentName(comp),
						Version: sd.version, Cohort: sd.cohort, Instance: inst, LatencyMS: &lat}
					switch u := rng.Float64(); {
					case sc.ErrClump > 1 && clumpLeft[sd.version+"/"+sd.cohort] > 0:
						ev.Error = schemas.ErrException
						clumpLeft[sd.version+"/"+sd.cohort]--
					case sc.ErrClump > 1 && u < errP/float64(sc.ErrClump):
						ev.Error = schemas.ErrException
						clumpLeft[sd.version+"/"+sd.cohort] = sc.ErrClump - 1
					case sc.ErrClump > 1 && u < errP:
						// the rest of errP's draws: not an exception, as a clump's share of them
					case u < errP:
						ev.Error = schemas.ErrException
					case u < errP+invP:
						ev.Error = schemas.ErrInvalidInput
					}
					if i == 0 && sample && comp == 0 { // one resource sample per second (or ResourceEvery) and instance
						c, m := cpu, mem
						ev.CPU, ev.MemMB = &c, &m
						if sc.NeighbourRPS > 0 {
							l := procRPS
							ev.ProcessRPS = &l
						}
					}
					out = append(out, ev)
				}
			}
		}
		sortEvents(out[segStart:])
	}
	return out
}

// componentName is the name of a scenario's component k (Components): the first is the one the
// scenario changes.
func componentName(k int) string {
	if k == 0 {
		return scenarioComp
	}
	return fmt.Sprintf("%s-%d", scenarioComp, k)
}

// sortEvents orders one second's events by time (stable, so equal stamps keep generation order).
func sortEvents(evs []schemas.TelemetryEvent) {
	slices.SortStableFunc(evs, func(a, b schemas.TelemetryEvent) int { return a.TS.Compare(b.TS) })
}

// poissonN draws a Poisson count (normal approximation above 30).
func poissonN(rng *rand.Rand, lambda float64) int {
	if lambda <= 0 {
		return 0
	}
	if lambda > 30 {
		return max(0, int(math.Round(lambda+math.Sqrt(lambda)*rng.NormFloat64())))
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}
