package detect

import (
	"fmt"
	"math"
	"strconv"

	"github.com/DataDog/sketches-go/ddsketch"

	"github.com/scalpel-dev/scalpel/schemas"
)

// lineKey identifies a line: a series across its versions. Version changes are inferred on a line,
// since versions never appear in subjects.
type lineKey struct {
	Service, Component, Block, Cohort string
}

// line follows which version a (service, component, block, cohort) currently runs. The line of a
// unit without a cohort also tests the unit's throughput, which only makes sense across versions
// and cohorts: a rolling deploy moves traffic between versions, and a canary takes its share from
// the stable version's cohort, without any of it being lost.
type line struct {
	key     lineKey
	current *series // the version that appeared most recently; nil for a unit line no request without a cohort came to
	otherB  int64   // the last bucket a version other than current served in
	unit    *line   // the line whose throughput test counts this line's requests: the unit's without a cohort
	// liveB and liveN are, for a component's line (without a block or a cohort) and a
	// service's (without a component), its requests in the newest bucket any came in, as they
	// arrive, and prevN those in the bucket before it as it ended (0 when none came in it): its
	// load (bucketShift).
	liveB        int64
	liveN, prevN float32

	accB int64   // bucket being accumulated for the throughput test
	accN float64 // requests of the unit in bucket accB
	// runB is the first bucket of the unbroken run of buckets with requests that ends at accB:
	// a unit that served in every one of the last minute's buckets and then in none is silent
	// (watchesSilence), where one whose traffic comes and goes is not.
	runB  int64
	lastB int64 // last bucket the throughput test consumed
	tput  ewma
	tputC cusum
	// tputBL is the EWMA rate when the current excursion started, and tputD how much the
	// unit's counts vary beyond Poisson's below the rate (throughputStep): float32s, so a line
	// stays in its allocation class.
	tputBL float32
	tputD  float32
	tputA  *schemas.Anomaly // the open throughput episode's anomaly
	// exc follows, on a service's line (without a component), the excursions of its latencies
	// over all its components (serviceExcursion); nil on any other line, and until the service
	// has one.
	exc *serviceExcursions
}

// Kinds of reference a series can be compared with.
const (
	refPreviousVersion = "previous_version" // frozen recent history of the version before
	refBaselineCohort  = "baseline_cohort"  // canary analysis: the baseline cohort's history, and the cohort as it serves
	refOwnProfile      = "own_profile"      // the series' own decayed past (ownProfile), which no reference holds
)

// reference is a series' baseline, frozen when it is built so the comparison cannot drift with the
// thing it watches.
type reference struct {
	kind    string
	version string // the baseline's version
	label   string // what Anomaly.BaselineVersion says
	ok      bool   // enough requests to compare against; otherwise every test is inconclusive
	// cpuByProcess: cpuFit's loads are the process's (process_rps), as series.cpuByProcess.
	cpuByProcess bool
	// excursion is the longest excursion of the baseline's latencies the tests against it
	// respect (frozenExcursion; 0: none).
	excursion uint8
	// familyN is how many series the deploy's Alpha is shared among (see family); next to the
	// flags, where it fills what the alignment would leave empty.
	familyN int32
	from    int64 // first bucket of the baseline window
	to      int64 // last bucket of the baseline window

	n      float64
	errs   [numCategories]float64
	errP   [numCategories]rateParams
	blocks map[string]blockTally

	sk *ddsketch.DDSketch
	quantileTests
	// The composite H0 of a quantile above the body (see rateTest.updateComposite): latS[q]
	// holds H0 without tolerance and at half of it, bodyP[q] the share of requests at or below
	// quantile q's threshold that exceed the body's (the lowest tested quantile's), as the
	// baseline shows it, at half the tolerance and at the full tolerance. composite[q] says
	// the quantile is tested so.
	composite [maxQuantiles]bool
	bodyQ     int32
	latS      [maxQuantiles][2]rateParams
	bodyP     [maxQuantiles][3]float64
	// excess holds, per composite quantile from withinMinQuantile up, the hypotheses of how far
	// above its threshold its exceedances land (see excessParams); off where it is not tested.
	excess [maxQuantiles]excessParams
	cpuRef robustRef
	cpuFit loadFit // the version's cpu against its load, as it stood when frozen
	// errPhi is, per error category, how overdispersed the baseline's error counts were
	// (errorDispersion): the error tests against it temper their evidence by it.
	errPhi [numCategories]float32
	// latPhi is, per tested latency quantile, how overdispersed the baseline's exceedances of it
	// were (latencyDispersion): the latency tests against it temper their evidence by it.
	latPhi [maxQuantiles]float32
	// latDrift is, per tested latency quantile, how far the baseline's exceedances drifted
	// between epochs (driftDispersion): see refLatPhi.
	latDrift [maxQuantiles]float32
	memFit   memLevel // and its memory: its recent level
	// family is ln(1/share) when Alpha is shared among the familyN series of the deploy
	// (Config.AlphaScope, deployShare): what every rate test against the reference adds to its
	// threshold. 0 for a deploy of one series.
	family float64
	// usual is the requests per bucket of the series' component and of its service when the
	// reference was frozen (series.usualLoads): what a bucket's load is read against
	// (bucketShift).
	usual usualLoads
}

// thresholdsFor is th for a test against r: Alpha shared among the series of the deploy. A
// latency test's default cap on one update's evidence (Config.LatencyBucketCap) rises with it,
// so one bucket may still fire a test's first run.
func (d *Detector) thresholdsFor(th thresholds, r *reference) thresholds {
	th.upper += r.family
	th.family, th.familyN = r.family, r.familyN
	if th.bucketCap > 0 && d.cfg.LatencyBucketCap == 0 {
		th.bucketCap += r.family
	}
	return th
}

// deployShare is src's share of Alpha among the series of its deploy, when src's history becomes
// a new version's baseline in bucket b. The deploy's series are those of src's service, version
// and cohort that served within HistoryMaxEpochs epochs before b's: every component and block the
// version serves, and so at least every one a new version can be compared with. Their shares add
// up to one (a union bound over them): half of Alpha is shared evenly among the K of them and
// half by the requests in their recent history, so a hot path, where a regression reaches most
// users, is held to less of the price, and no series to more than ln 2K. It counts what a replay
// that starts HistoryMaxEpochs+1 epochs earlier also sees, so a replay freezes the same shares.
// One pass over the series of src's deploy (Detector.deploys), once per new version of each
// series: a deploy of K series costs K², whatever else the detector tracks.
func (d *Detector) deployShare(src *series, b int64) (share float64, k int) {
	from := d.epochOf(b) - int64(d.cfg.HistoryMaxEpochs)*d.epochBuckets
	var all, own float64
	for s := d.deploys[src.key.deploy()]; s != nil; s = s.deployNext {
		if s.lastB < from {
			continue
		}
		k++
		n := s.recentRequests()
		all += n
		if s == src {
			own = n
		}
	}
	if k <= 1 || all <= 0 {
		return 1, k
	}
	return 0.5/float64(k) + 0.5*own/all, k
}

// recentRequests is how many requests s's recent history (every epoch it keeps) holds.
func (s *series) recentRequests() float64 {
	n := s.cur.n
	if s.prev != nil {
		n += s.prev.n
	}
	for _, h := range s.older {
		n += h.n
	}
	return n
}

// temper is what an error test of category c against r multiplies its evidence by (see
// temperBy): the baseline's dispersion.
func (r *reference) temper(c int) float64 {
	return temperBy(float64(r.errPhi[c]))
}

// refLatPhi is how many times as much as independent latencies' s's reference's exceedances
// of quantile q varied, as s's latency tests against it read it: the baseline's per-second
// dispersion, or its drift between epochs when that is larger (drift says so). A canary
// compared with its cohort as it serves (s.gate) leaves the drift out: its concurrent checks
// compare with requests of the same traffic mix, and the drift made its p99 ×2 wait minutes
// (39 of 40 found within 5.5 min, 275 s p95, instead of 40 of 40, 111 s).
func (d *Detector) refLatPhi(s *series, q int) (phi float64, drift bool) {
	phi = float64(s.ref.latPhi[q])
	if s.gate != nil {
		return phi, false
	}
	if dr := float64(s.ref.latDrift[q]); dr > 1 && dr >= phi {
		return dr, true
	}
	return phi, false
}

// temperBy is what an error test multiplies its evidence by when its reference's errors vary phi
// times as much as independent failures (errorDispersion): 1/phi, or 0 (none) when phi is 1.
func temperBy(phi float64) float64 {
	if phi > 1 {
		return 1 / phi
	}
	return 0
}

// freeze builds a reference from src's recent history (every epoch it keeps) for a series whose
// first request came in bucket b.
func (d *Detector) freeze(src *series, kind string, b int64) *reference {
	r := &reference{kind: kind, version: src.key.Version, from: src.firstB, to: src.lastB}
	r.label = src.key.Version
	switch {
	case kind == refBaselineCohort && src.key.Cohort != "":
		r.label = src.key.Version + " (cohort " + src.key.Cohort + ")"
	case kind == refBaselineCohort:
		r.label = src.key.Version + " (without a cohort)"
	}
	r.sk = d.sk.new()
	hs := src.epochs()
	r.from = max(r.from, hs[0].start)
	for _, h := range hs {
		r.n += h.n
		for c := range r.errs {
			r.errs[c] += h.errs[c]
		}
		if len(h.blocks) > 0 && r.blocks == nil {
			r.blocks = make(map[string]blockTally)
		}
		for b, t := range h.blocks {
			acc := r.blocks[b]
			acc.n += t.n
			for c := range acc.errs {
				acc.errs[c] += t.errs[c]
			}
			r.blocks[b] = acc
		}
		h.mergeSketchInto(d.sk, r.sk)
	}
	for c := range r.errPhi {
		r.errPhi[c] = float32(d.errorDispersion(src, c))
	}
	for q := range d.cfg.LatencyQuantiles {
		phi, _ := d.secondDispersion(src, q)
		r.latPhi[q] = float32(phi)
		r.latDrift[q] = float32(d.driftDispersion(src, q))
	}
	r.excursion = d.frozenExcursion(src)
	r.cpuRef = src.cpuRef
	r.cpuRef.vals = nil // frozen: a reference never adds, and must not share src's warm-up
	if src.cpuFit != nil {
		r.cpuFit, r.cpuByProcess = *src.cpuFit, src.cpuByProcess
	}
	if src.memFit != nil {
		r.memFit = *src.memFit
	}
	r.ok = r.n >= float64(d.cfg.MinBaselineRequests)
	if !r.ok {
		return r
	}
	r.usual = src.usualLoads()
	d.shareAlpha(r, src, b)
	tn := d.tune(src.key.Service)
	for c := range r.errs {
		r.errP[c] = d.errorParams(tn, r.errs[c], r.n)
	}
	if d.setQuantiles(tn, &r.quantileTests, r.sk, tn.latencyTolerance(r.kind)); r.latOK {
		d.compositeParams(tn, r)
		// A canary compared with its cohort as it serves leaves the drift to its concurrent
		// checks (refLatPhi).
		if !d.checkedConcurrently(kind) {
			d.driftBaseline(&r.quantileTests, &r.latS, src)
		}
	}
	return r
}

// quantileTests are the latency quantiles a baseline (a version's history, a series' own
// profile) supports and the hypotheses of their exceedance tests.
type quantileTests struct {
	latOK bool               // enough latencies to test any quantile
	latQ  [maxQuantiles]bool // which quantiles the baseline supports (LatencyMinTailCount)
	thr   [maxQuantiles]threshold
	qv    [maxQuantiles]float64 // the baseline's latency at each quantile
	latP  [maxQuantiles]rateParams
}

// setQuantiles reads the tested quantiles off the baseline sketch sk and sets their tests'
// hypotheses, H0 tolerating a slowdown of tol (tuning.latencyTolerance).
func (d *Detector) setQuantiles(tn *tuning, qt *quantileTests, sk *ddsketch.DDSketch, tol float64) {
	qt.latOK = sk.GetCount() >= float64(d.cfg.MinBaselineRequests)
	if !qt.latOK {
		return
	}
	for q, qq := range d.cfg.LatencyQuantiles {
		// A quantile is tested only when the baseline saw enough requests above it for its
		// exceedance rate to be an estimate rather than a guess (p99.9 needs 10 000 requests for
		// 10 of them); the other quantiles still cover the regression.
		qt.latQ[q] = sk.GetCount()*(1-qq) >= float64(d.cfg.LatencyMinTailCount)
		v, err := sk.GetValueAtQuantile(qq)
		if err != nil {
			qt.latOK = false
			return
		}
		qt.qv[q] = v
		qt.thr[q] = d.sk.thresholdAt(v)
		qt.latP[q] = d.latencyParamsAt(tn, sk, qt.thr[q], d.tolShift(tol))
	}
}

// compositeParams sets up the composite H0 of the quantiles above the body (see
// rateTest.updateComposite). None when the tolerance is below one sketch bin: H0 is then
// simple.
func (d *Detector) compositeParams(tn *tuning, r *reference) {
	tol := d.tolShift(tn.latencyTolerance(r.kind))
	r.bodyQ = -1
	for q, qq := range d.cfg.LatencyQuantiles {
		if r.latQ[q] && (r.bodyQ < 0 || qq < d.cfg.LatencyQuantiles[r.bodyQ]) {
			r.bodyQ = int32(q)
		}
	}
	if tol <= 0 || r.bodyQ < 0 {
		return
	}
	tb := r.thr[r.bodyQ].index
	levels := [3]int{0, tol / 2, tol}
	for q := range d.cfg.LatencyQuantiles {
		if !r.latQ[q] || r.thr[q].index <= tb {
			continue
		}
		r.composite[q] = true
		r.latS[q] = [2]rateParams{d.latencyParamsAt(tn, r.sk, r.thr[q], levels[0]), d.latencyParamsAt(tn, r.sk, r.thr[q], levels[1])}
		for l, sh := range levels {
			above := fractionAbove(r.sk, r.thr[q].index-sh)
			body := fractionAbove(r.sk, tb-sh) - above
			r.bodyP[q][l] = clamp(body/math.Max(1-above, 1e-9), 1e-4, 1-1e-4)
		}
		if tn.cfg.LatencyExcess && d.cfg.LatencyQuantiles[q] >= withinMinQuantile {
			r.excess[q] = d.fitExcess(tn, r.sk, r.thr[q], levels)
		}
	}
}

// excessParams are the hypotheses of a tail quantile's test of the excess: how far above its
// threshold the requests that exceed it land, in sketch bins (the offset: 0 for the bin just
// above the threshold's), each offset counted at most capBins (excessCap). Under each level of
// the composite H0 the offsets follow the baseline's above the threshold lowered by the level's
// slowdown; under H_k, the baseline's above it lowered by the alternative's factor, the same
// scaling the exceedance rates of latencyParams assume. Each is modelled by a geometric
// distribution truncated at capBins, fitted by the mean (rho0 for H0's levels, rho for the
// alternatives), so an exceedance's likelihood ratio is ((1−ρk)/(1−ρ0))·(ρk/ρ0)^m below the
// cap and (ρk/ρ0)^capBins at it, and a bucket's depends only on its exceedances, their summed
// offsets and how many reached the cap (excessCounts). A pair whose ρk is not above the
// level's ρ0 adds nothing.
//
// Why: the exceedance count throws away where above the threshold a request landed. When the
// slow path gets twice as slow, the requests above the baseline's p99.9 mostly land several
// bins above it, where the baseline's seldom do: at the generated mix that carries a third as
// much evidence again as the count (docs/design-notes.md, "The excess above a tail
// threshold"). Neither a rank of each request among the baseline's few hundred above the
// threshold nor a top bin above the slowest of them got much of it (ibid.): their evidence is
// bounded by how few those are. A fitted shape is not.
//
// Why it keeps the false-alarm bound: a geometric has the largest spread among the
// distributions with its mean and a hazard that does not fall (a tail at least as light as its
// own, which a log-normal's is, and any single mode's beyond its peak): for those the
// likelihood ratio, rising in the offset, has a mean of at most 1 under H0. Each alternative
// is a fixed density, so the product with the count's ratio stays a supermartingale. What the
// fit cannot know is guarded:
//   - a fit from the twenty exceedances above a p99.9 is noise: H0's counts one phantom
//     exceedance at the cap, so it comes out high more often than low;
//   - a lump far above the rest (timeouts), which no geometric fits: H0's ρ0 is at least
//     ((atCap+1)/(count+2))^(1/capBins), so it puts no less weight at the cap than the
//     baseline did, and at the cap a request adds capBins·ln(ρk/ρ0) nats however far it
//     landed.
//
// TestExcessKeepsItsBound measures what is left: the mean likelihood ratio per exceedance under
// H0, on baselines of the suite's mix, is 0.89 to 0.97 on average and at most 1.09; with a
// lump of timeouts, 1.00 on average and up to 1.15, on a baseline that drew too few of them;
// with retries (a second mode inside the cap), 0.93 to 0.995 on average and up to 1.19.
//
// Why the drift does not temper it: a traffic mix that wanders moves the share of requests that
// take the slow path, and so how many exceed a tail threshold; the drift measures that, and the
// count's evidence is divided by it. Where above the threshold those requests land is the slow
// path's shape, which its share does not move, so the excess's evidence is divided by the
// per-second dispersion alone (thresholds.exTemper: a stall pushes every request in flight
// far out). Divided by the drift as well, a tail regression on a wandering mix waited on the
// count: p99 ×2 on the suite's wander at 50 req/s took 37.9 s on average and 156 s at p95, and
// now 15.8 s and 44 s (20 req/s: 75.8 → 41.6 s, p95 266 → 124 s), while the wander's healthy
// deploys rolled back went from 47 to 45 of 6 000. A mix whose slow requests also slow down as they
// grow common moves where they land too: the suite's rows "the slow path's speed too" (its
// latencies ×e^(0.1·m) with the share's factor e^(0.6·m)) rolled back 24 and 30 of 1 000
// healthy deploys at 50 and 20 req/s with the excess tempered by the drift, and 31 and 32
// without. Either way above 1 %: at a heavy, slow moment a deploy looks like a tail regression
// for minutes, and a comparison with the version before it tells the two apart only by the
// drift (docs/design-notes.md, "The drift tempers the count above a tail threshold").
type excessParams struct {
	on   bool
	rho0 [3]float64            // H0's at each level of the composite H0 (none, half, full tolerance)
	rho  [alternatives]float64 // H_k's
}

// excessCap is how far above its threshold, as a latency ratio's log, an exceedance's offset
// is still counted (see excessParams): ×1.65, 10 sketch bins at the default accuracy. The
// offsets a regression moves lie within it (a slow path twice as slow lands 3 to 10 bins above
// the baseline's p99.9), and it bounds what one request, or a lump of them far out, may add.
const excessCap = 0.5

// excessCapBins is excessCap in sketch bins, at least one.
func (d *Detector) excessCapBins() int {
	return max(1, int(math.Round(excessCap/d.sk.logGamma)))
}

// fitExcess fits the hypotheses of the test of the excess above threshold t on the baseline
// sketch sk; levels are the composite H0's slowdowns in sketch bins (see excessParams).
func (d *Detector) fitExcess(tn *tuning, sk *ddsketch.DDSketch, t threshold, levels [3]int) excessParams {
	c := d.excessCapBins()
	var ep excessParams
	for l, sh := range levels {
		ep.rho0[l] = excessFit(sk, t.index-sh, c, true)
	}
	least := min(ep.rho0[0], ep.rho0[1], ep.rho0[2])
	lo, gross := 1+tn.cfg.LatencyMinEffect, tn.cfg.LatencyGrossFactor
	for k, f := range [alternatives]float64{lo, math.Sqrt(lo * gross), gross} {
		shift := int(math.Round(math.Log(f) / d.sk.logGamma))
		ep.rho[k] = excessFit(sk, t.index-shift, c, false)
		ep.on = ep.on || ep.rho[k] > least
	}
	return ep
}

// note says what the test of the excess above quantile label's threshold assumes, for an
// anomaly's evidence, and what the new version showed: x latencies above the threshold whose
// offsets came to m; logGamma is the sketch's bin width, capBins the cap (excessCapBins).
func (ep *excessParams) note(label string, logGamma float64, capBins int, m, x float64) string {
	c := float64(capBins)
	mean := func(rho float64) float64 { return rho * (1 - math.Pow(rho, c)) / (1 - rho) } // E[min(G, c)]
	return fmt.Sprintf("%s: also how far above the threshold the exceedances landed, in sketch bins of %.1f %% counted up to %g (×%.3g): "+
		"%.2f bins on average over the new version's %g, against a geometric with a mean of %.2f under H0 (%.2f, %.2f or %.2f under H1)",
		label, 100*(math.Exp(logGamma)-1), c, math.Exp(c*logGamma), m/math.Max(x, 1), x,
		mean(ep.rho0[2]), mean(ep.rho[0]), mean(ep.rho[1]), mean(ep.rho[2]))
}

// excessFit fits a geometric distribution truncated at capBins to the offsets (see
// excessCounts) of sk's weight above bin index, by its mean: ρ with E[min(G, capBins)] =
// ρ(1−ρ^capBins)/(1−ρ) the offsets' mean. For H0 (h0) the mean counts one phantom offset at the
// cap, and ρ is at least ((atCap+1)/(count+2))^(1/capBins) (see excessParams). 0 when nothing
// lies above index.
func excessFit(sk *ddsketch.DDSketch, index, capBins int, h0 bool) float64 {
	var sum, n, atCap float64
	first, counts := positiveBins(sk)
	for k, c := range counts {
		if i := first + k; c > 0 && i > index {
			off := i - index - 1
			if off >= capBins {
				off = capBins
				atCap += c
			}
			sum += c * float64(off)
			n += c
		}
	}
	cb := float64(capBins)
	floor := 0.0
	if h0 {
		sum, n = sum+cb, n+1
		floor = math.Pow((atCap+1)/(n+1), 1/cb) // n counts the phantom: (atCap+1)/(count+2)
	}
	if n <= 0 {
		return 0
	}
	mean := sum / n
	lo, hi := 0.0, 1.0
	for range 50 { // ρ(1−ρ^c)/(1−ρ) rises from 0 to c on [0, 1)
		rho := (lo + hi) / 2
		if rho*(1-math.Pow(rho, cb))/(1-rho) < mean {
			lo = rho
		} else {
			hi = rho
		}
	}
	return clamp(math.Max(lo, floor), 0, 0.999)
}

// valid says whether ep's hypotheses can be tested: every rho in [0, 1), and, when on, H0's
// above 0.
func (ep *excessParams) valid() bool {
	ok := func(v float64) bool { return v >= 0 && v < 1 }
	for _, v := range ep.rho0 {
		if !ok(v) || ep.on && v <= 0 {
			return false
		}
	}
	for _, v := range ep.rho {
		if !ok(v) {
			return false
		}
	}
	return true
}

// excessOn says whether any quantile's excess is tested against r.
func (r *reference) excessOn() bool {
	for q := range r.excess {
		if r.excess[q].on {
			return true
		}
	}
	return false
}

// tolShift is a latency tolerance (0.1 = +10 %) in whole sketch bins.
func (d *Detector) tolShift(tol float64) int {
	return int(math.Round(math.Log(1+tol) / d.sk.logGamma))
}

// errorParams sets the hypotheses of an error-rate test against a baseline of x errors in n
// requests (the test treats the baseline's sampling error itself, see rateParams). The smallest
// alternative is the larger of the relative and the absolute minimum effect, so a near-zero
// baseline does not fire on a single error; the others keep their spacing above it.
func (d *Detector) errorParams(tn *tuning, x, n float64) rateParams {
	p := (x + 0.5) / (n + 1)
	r := d.errorRatios(tn)
	lift := math.Max(1, (1+tn.cfg.ErrorMinAbsEffect/p)/r[0])
	for k := range r {
		r[k] *= lift
	}
	return newRateParams(x, n, r)
}

// errorRatios are the alternatives of the error tests as rate ratios: the minimum effect, the
// gross factor and their geometric mean.
func (d *Detector) errorRatios(tn *tuning) [alternatives]float64 {
	lo, hi := 1+tn.cfg.ErrorMinEffect, tn.cfg.ErrorGrossFactor
	return [alternatives]float64{lo, math.Sqrt(lo * hi), hi}
}

// latencyParamsAt sets the hypotheses of an exceedance test at threshold t: under H0 a request
// exceeds t at most as often as a baseline request exceeded it tol sketch bins lower (H0 is "at
// most the tolerance slower", not "exactly as fast": a test of exact equality would call a few
// per cent a regression once it had enough requests); under H_k every latency is the
// baseline's scaled by the alternative's factor, so the exceedance rate is the baseline's
// fraction above t/factor, read off the baseline sketch. This is a minimum effect stated in
// latency, not in rates.
func (d *Detector) latencyParamsAt(tn *tuning, sk *ddsketch.DDSketch, t threshold, tol int) rateParams {
	n := sk.GetCount()
	above := fractionAbove(sk, t.index)
	if tol > 0 {
		above = math.Max(above, fractionAbove(sk, t.index-tol))
	}
	xb := above * n
	p0 := (xb + 0.5) / (n + 1)
	lo, hi := 1+tn.cfg.LatencyMinEffect, tn.cfg.LatencyGrossFactor
	var r [alternatives]float64
	for k, f := range [alternatives]float64{lo, math.Sqrt(lo * hi), hi} {
		shift := int(math.Round(math.Log(f) / d.sk.logGamma))
		// At least half again the baseline's odds: a distribution so narrow that scaling moves
		// nothing across the threshold still needs an alternative above H0. Odds, not rate: at
		// p50 half again the rate (60 % to 90 %) would be a far larger step than any scaling.
		r[k] = math.Max(fractionAbove(sk, t.index-shift), 1.5*p0/(1+0.5*p0)) / p0
	}
	return newRateParams(xb, n, r)
}

// resolveReference gives a newly seen series its baseline: for a canary, the history of the
// version it is compared with (see canaryReference), otherwise the previous version on the same
// line.
func (d *Detector) resolveReference(s *series, b int64) {
	if s.key.Cohort == schemas.CohortCanary {
		if s.ref = d.canaryReference(s, b); s.ref != nil {
			if d.checkedConcurrently(s.ref.kind) {
				s.gate = new(canaryGate)
			}
			return
		}
	}
	if cur := s.line.current; cur != nil && cur != s && cur.key.Version != s.key.Version {
		s.ref = d.freeze(cur, refPreviousVersion, b)
		d.inheritDrift(s, cur)
	}
}

// checkedConcurrently says whether a series compared with a reference of this kind is also
// checked against it as both serve (Config.CanaryConcurrentAlpha): a canary against its baseline
// cohort. Such a series has a gate, and its reference leaves the drift out (refLatPhi).
func (d *Detector) checkedConcurrently(kind string) bool {
	return kind == refBaselineCohort && d.cfg.CanaryConcurrentAlpha > 0
}

// shareAlpha sets r.family, src's history being r, for a series whose first request came in
// bucket b, when Alpha is per deploy: the series of src's version share it.
func (d *Detector) shareAlpha(r *reference, src *series, b int64) {
	if d.cfg.AlphaScope != AlphaPerDeploy {
		return
	}
	if share, k := d.deployShare(src, b); k > 1 {
		r.family, r.familyN = -math.Log(share), int32(k)
	}
}

// canaryReference is the history a canary is compared with: the baseline cohort's; or, when that
// is too short to conclude anything or there is no cohort yet, the same version's serving without
// a cohort. The second is the usual case where the cohort starts with the canary: a fresh
// baseline cluster (as Kayenta deploys one), or telemetry that labels the stable version's
// requests only while a rollout runs. Before either, the version served unlabelled, and that is
// its history. nil when neither line serves another version.
func (d *Detector) canaryReference(s *series, b int64) *reference {
	k := s.key.line()
	k.Cohort = schemas.CohortBaseline
	var ref *reference
	version := "" // the baseline cohort's version: the unlabelled history must be of the same
	if l := d.lines[k]; l != nil && l.current != nil && l.current.key.Version != s.key.Version {
		if ref = d.freeze(l.current, refBaselineCohort, b); ref.ok {
			return ref
		}
		version = l.current.key.Version
	}
	k.Cohort = ""
	if l := d.lines[k]; l != nil && l.current != nil && l.current.key.Version != s.key.Version &&
		(version == "" || l.current.key.Version == version) {
		if r := d.freeze(l.current, refBaselineCohort, b); r.ok || ref == nil {
			return r
		}
	}
	return ref
}

// cohortLine is the line a canary is compared with as it serves: the baseline cohort's, or
// while no baseline cohort serves another version, the same unit's line without a cohort (the
// stable version serving unlabelled next to the canary). It is looked up as the canary's tests
// run, not when its reference is frozen: a cohort that starts with the canary may send its
// first request after the canary's. nil when neither serves another version.
func (d *Detector) cohortLine(s *series) *line {
	k := s.key.line()
	for _, cohort := range [2]string{schemas.CohortBaseline, ""} {
		k.Cohort = cohort
		if l := d.lines[k]; l != nil && l.current != nil && l.current.key.Version != s.key.Version {
			return l
		}
	}
	return nil
}

func categoryName(c int) string { return schemas.ErrorCategories[c] }

// quantileLabel names a quantile the way people say it: 0.99 → "p99", 0.999 → "p99.9".
func quantileLabel(q float64) string {
	return "p" + strconv.FormatFloat(q*100, 'f', -1, 64)
}
