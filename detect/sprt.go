package detect

import (
	"cmp"
	"fmt"
	"math"

	"github.com/DataDog/sketches-go/ddsketch"
)

// alternatives is how many alternative hypotheses a rate test mixes: the minimum effect (so subtle
// regressions are caught), a gross one (so large regressions are caught within a few buckets) and
// their geometric mean, so a regression between the two (×2 to ×3) is not left to whichever of
// them it happens to resemble more. Each alternative costs log(alternatives) nats of threshold.
const alternatives = 3

// rateParams fixes the hypotheses of a rate test against a baseline that saw xb hits (errors,
// latency exceedances) in nb requests. H0: the new rate is at most the baseline's; H_k: it is r[k]
// times the baseline's.
//
// The baseline's rate is not plugged in as a known constant (an estimate from a few dozen hits is
// off by 10-30 %, and a test against a rate that is too low fires on a healthy version eventually)
// nor as an upper confidence bound (which slows every test down by the bound's width). Both
// sides are treated as samples of one unknown rate under H0: before each bucket, H0's rate is
// predicted from the baseline's hits and the new version's hits so far, pooled (the posterior
// mean); H_k's is r[k] times that. The product of these predictive likelihood ratios is the
// Bayes factor of the two-sample comparison, the sequential form of the exact conditional test
// of two Poisson rates: given the total hits of both sides, the new side's share is binomial
// with p = r·n/(r·n + nb). It needs no bound, and it corrects itself: a baseline that
// underestimated its rate is outweighed by the new version's own healthy data over a long watch,
// instead of firing it eventually.
type rateParams struct {
	xb, nb float64
	r      [alternatives]float64
}

// newRateParams builds the hypotheses for a baseline of xb hits in nb requests and alternatives
// at rate ratios r, lifted above 1 and made increasing so every alternative is a regression.
func newRateParams(xb, nb float64, r [alternatives]float64) rateParams {
	rp := rateParams{xb: xb, nb: nb}
	lo := 1.0
	for k, v := range r {
		v = math.Max(v, lo*1.001)
		rp.r[k] = v
		lo = v
	}
	return rp
}

// rate is the baseline's own rate (for reports).
func (rp *rateParams) rate() float64 {
	if rp.nb <= 0 {
		return 0
	}
	return rp.xb / rp.nb
}

// h0Rate predicts H0's rate from the baseline and the new side's cx hits in cn requests so far:
// the posterior mean of the common rate (Jeffreys prior), but never below the baseline's own.
// Pooling is right at H0's boundary (equal rates), where it corrects a baseline that came out
// low; a new side that ran better than the baseline (a latency inside the tolerance, a quiet
// night of a daily cycle) must not pull H0's rate down, or the next busy hour, still inside H0,
// would look like a regression against it. Kept away from 0 and 1 so every log is finite.
func (rp *rateParams) h0Rate(cx, cn float64) float64 {
	base := (rp.xb + 0.5) / (rp.nb + 1)
	pooled := (rp.xb + cx + 0.5) / (rp.nb + cn + 1)
	return clamp(math.Max(base, pooled), 1e-6, 0.98)
}

// rateTest is a repeated sequential probability ratio test on a rate (errors or latency
// exceedances per request), mixing the alternatives with equal weights.
//
// Why this keeps its false-alarm rate under continuous monitoring: within a run, the mixture
// likelihood ratio is a non-negative martingale with mean 1 under H0, so by Ville's inequality the
// probability that it ever reaches 1/Alpha is at most Alpha, however often it is looked at. (For
// the paired test this is exact; against a frozen baseline it holds on average over the rates
// the baseline is compatible with, since H0's rate is a posterior mean; the scenario suite's A/A
// deploys and long quiet watches measure what it comes to.) A run
// ends when the evidence for every alternative falls to log(Beta) (the test accepts H0); the test
// then restarts, so a regression that starts late is not buried under old healthy evidence. Each
// run spends part of the false-alarm budget: run 1 gets Alpha, run k ≥ 2 gets Alpha/(k(k-1)),
// whose sum over every later run is Alpha again, so the whole watch, however long, fires a
// healthy version with probability at most 2·Alpha (a union bound over the runs, each held to
// its share by Ville's inequality). Without that, a test whose runs are short (a p50 exceedance
// test accepts H0 within a dozen requests) would get thousands of chances at Alpha over a long
// watch. The price is a threshold higher by log(k(k-1)) for a regression that starts in run k:
// logarithmic, a few seconds for a gross one hours into a watch. A test whose first run is the
// deploy's opening minutes splits the same 2·Alpha differently (see frontShare).
type rateTest struct {
	llr      [alternatives]float64
	bank     *secondBank // a composite test's second bank (see updateComposite); nil for any other
	runStart int64       // first bucket of the current run
	n, x     float64     // requests and hits in the current run
	steps    float64     // buckets with data in the current run
	nr, xr   float64     // the concurrent reference's requests and hits (paired runs only)
	cn, cx   float64     // requests and hits of the observed side since the test began, across runs
	runs     float64     // runs started since the test began
	bound    float64     // the current run's firing threshold (log of 1/its share of Alpha)
	firing   bool
	long     bool  // firing on the evidence of every request since the test began (deployLong)
	twoBanks bool  // the last update was composite: score mixes both banks
	quiet    int16 // consecutive buckets of evidence against H1 while firing (at most recovery)
	quietRun int16 // quiet when the episode ended (for the resolution's wording)
}

// secondBank is a composite test's second bank of alternatives and its current segment. Only the
// latency quantiles above the body have one, so it is allocated on a test's first composite
// update rather than carried by every test: a series holds sixteen rate tests (its own and its
// own profile's), and the bank is most of a test's size.
type secondBank struct {
	llr [alternatives]float64
	seg segment
}

// boundNote says what the run's firing threshold is made of, for the anomaly's evidence: Alpha,
// then the run's share of the watch's budget and the evidence floor's price (see runBound and
// floorDepth), which together move it off log(1/Alpha).
func (t *rateTest) boundNote(th *thresholds) string {
	alpha := fmt.Sprintf("log(1/alpha) = %.2f", th.upper)
	if th.family > 0 {
		alpha = fmt.Sprintf("log(1/alpha) = %.2f, +%.2f for alpha shared among the deploy's %d series (this one's share %.3g)",
			th.upper-th.family, th.family, th.familyN, math.Exp(-th.family))
	}
	if t.long {
		return fmt.Sprintf("%s, %+.2f for its share of alpha, a tenth", alpha, t.bound-th.upper)
	}
	return fmt.Sprintf("%s, %+.2f for run %g's share of the watch's 2·alpha and the evidence floor",
		alpha, t.bound-th.upper, t.runs)
}

// rateVerdict is what one bucket update did to a rate test.
type rateVerdict uint8

const (
	verdictNone rateVerdict = iota
	verdictFired
	verdictRecovered
)

// score is the log of the mixture likelihood ratio, over both banks of alternatives when the
// test has two (see updateComposite).
func (t *rateTest) score() float64 {
	if !t.twoBanks {
		return mixScore(&t.llr)
	}
	a, b := mixScore(&t.llr), mixScore(&t.bank.llr)
	m := math.Max(a, b)
	return m + math.Log((math.Exp(a-m)+math.Exp(b-m))/2)
}

// mixScore is the log of the equal-weight mixture of the likelihood ratios exp(llr).
func mixScore(llr *[alternatives]float64) float64 {
	m := llr[0]
	for _, v := range llr[1:] {
		m = math.Max(m, v)
	}
	s := 0.0
	for _, v := range llr {
		s += math.Exp(v - m)
	}
	return m + math.Log(s/alternatives)
}

// increments is the log-likelihood ratio of x hits in n requests for each alternative, against
// H0's rate q predicted before the bucket.
func increments(rp *rateParams, q, x, n float64) [alternatives]float64 {
	var inc [alternatives]float64
	for k := range inc {
		p := math.Min(rp.r[k]*q, 0.999)
		if p <= q {
			continue // no room above H0's rate: this alternative cannot be told apart
		}
		inc[k] = x*math.Log(p/q) + (n-x)*math.Log((1-p)/(1-q))
	}
	return inc
}

// updateBaseline adds a bucket of n requests with x hits against a frozen baseline (rp). H0's
// rate is predicted from what came before the bucket, so the update is a likelihood ratio of
// data not yet seen, as a martingale needs; it is taken once per bucket (a bucket is small next
// to the baseline), so the result depends on the buckets, not on how events were batched.
func (t *rateTest) updateBaseline(rp *rateParams, x, n float64, b int64, th *thresholds) rateVerdict {
	if n <= 0 {
		return verdictNone // an empty bucket is inconclusive: no evidence either way
	}
	q := rp.h0Rate(t.cx, t.cn)
	t.cx += x
	t.cn += n
	v := t.step(increments(rp, q, x, n), nil, x, n, b, th)
	if th.deployLong {
		v = t.deployLong(rp, v, b, th)
	}
	return v
}

// deployLongShare is the part of Alpha the deploy-long test of an error rate spends (see
// deployLong), on top of the runs' 2·Alpha.
const deployLongShare = 0.1

// deployLong runs the deploy-long test next to the runs of an error test against a frozen
// baseline, after the bucket b the runs' verdict v is of: the likelihood ratio of every request
// since the test began, never restarted. It fires at log(1/(deployLongShare·Alpha)), and an
// episode it opened ends when its evidence has fallen by log(1/Beta) below that, not with a run.
//
// Why: a run ends when its evidence falls to log(Beta), and the next run tests against H0's
// rate pooled with everything the new version served (h0Rate), which is right for a baseline
// that came out low but makes each later run all but blind to a regression the first run
// missed: H0's rate has moved to the new version's. An error rate ×1.5, the minimum effect, was
// found in 63 of 100 deploys within 330 s and in only 75 within the hour. The deploy-long test
// gives the baseline its full weight throughout: with λ's posterior from the baseline, Gamma(xb
// + ½, nb + 1), the new version's cx errors in cn requests have, under H_k (rate r_k·λ), the
// marginal likelihood ratio
//
//	r_k^cx · ((nb + 1 + cn) / (nb + 1 + r_k·cn))^(xb + ½ + cx)
//
// against H0 (rate λ), a ratio of two predictive distributions and so a martingale under H0's
// (on average over the rates the baseline is compatible with, as the runs' are; it treats
// requests as Poisson, which at error rates of a few per cent is close: at a bound of log(100),
// on simulated baselines of 9 000 requests at 2 % errors, it fired in 0.5 % of healthy hours).
// Its evidence is bounded by the baseline's: ×1.5 over a baseline with 180 errors can reach
// about 17 nats. The mixture over the alternatives needs no more threshold than one of them.
func (t *rateTest) deployLong(rp *rateParams, v rateVerdict, b int64, th *thresholds) rateVerdict {
	var llr [alternatives]float64
	a, beta := rp.xb+0.5, rp.nb+1
	l0 := math.Log(beta + t.cn)
	for k := range llr {
		r := rp.r[k]
		llr[k] = t.cx*math.Log(r) + (a+t.cx)*(l0-math.Log(beta+r*t.cn))
		if m := th.temper; m > 0 {
			llr[k] *= m
		}
	}
	score := mixScore(&llr)
	bound := th.upper - math.Log(deployLongShare)
	switch {
	case t.long:
		if score < bound+th.lower {
			t.reset()
			return verdictRecovered
		}
		return verdictNone
	case v == verdictNone && !t.firing && !th.hold && t.cn >= th.minRequests && score >= bound:
		// (not in the update a run's episode ended in: that one is reported first)
		if t.n == 0 { // the bucket ended the run: this episode starts with it
			t.runStart, t.runs = b, t.runs+1
		}
		// The run takes the deploy-long evidence, so the anomaly states it; the next update
		// caps it at the bound, as any firing run's.
		t.firing, t.long, t.bound, t.quiet, t.llr = true, true, bound, 0, llr
		return verdictFired
	}
	return v
}

// updateComposite is updateBaseline for a latency quantile above the body, whose H0 is
// composite: "every latency is the baseline's × s", for s from 1 to 1+the tolerance, and s
// may change as load comes and goes. rp is H0 at the full tolerance, lower H0 without tolerance
// and at half of it; body[l] is the bucket's log likelihood ratio, at level l (0 none, 1 half,
// 2 full tolerance), of the requests at or below this quantile's threshold: their share above
// the body's threshold as the baseline shows it against as level l predicts it (0 at level 0).
// The test's second bank carries the current segment (see below) from one bucket to the next.
//
// Why: the tolerance keeps H0 true when load slows every request a little, but in the far tail
// it is expensive. Slowing a log-normal tail by 10 % nearly doubles its share above the
// baseline's p99.9, so a regression of the tail alone was tested against a rate twice the
// baseline's and took about twice as long. Load moves the body of the distribution too; a
// tail regression does not. So each alternative comes in two banks:
//   - as before, the tail's rate against H0 at the full tolerance, which, that rate being the
//     largest, is a supermartingale under every s up to it;
//   - the same tail rate with the body as the baseline's, against each level of H0 with the
//     body as that level predicts it, crediting in each segment of the run (segmentRequests)
//     the smallest of the three likelihood ratios. Within a segment at a constant s, the
//     smallest is at most the ratio against the level nearest s, whose mean is (about) 1, so
//     the product over segments is a supermartingale: a segment at s = 1 is not credited with
//     the body's evidence against a slowdown, nor a slowed one with the tail's evidence against
//     s = 1. Only a segment in which load changes mixes the two, and it is one segment. Taking
//     the minimum per bucket instead would be safe against any change but loses too much: at a
//     few dozen requests per bucket the body's ratio is noise, and the minimum keeps its worst.
//
// A tail regression with an unchanged body is then tested at about the speed of the test
// without tolerance; every other regression pays log 2 of threshold (twice the alternatives).
//
// ex, when on, adds to each alternative and level the likelihood ratio of how far above the
// threshold the x exceedances landed (see excessParams): ec holds their summed offsets and how
// many reached the cap.
func (t *rateTest) updateComposite(rp *rateParams, lower *[2]rateParams, body *[3]float64, ex *excessParams, ec excessCount, x, n float64, b int64, th *thresholds) rateVerdict {
	if n <= 0 {
		return verdictNone
	}
	if t.bank == nil {
		t.bank = new(secondBank)
	}
	seg := &t.bank.seg
	if t.n == 0 {
		*seg = segment{} // a new run starts a new segment
	}
	q := rp.h0Rate(t.cx, t.cn)
	ql := [2]float64{lower[0].h0Rate(t.cx, t.cn), lower[1].h0Rate(t.cx, t.cn)}
	inc := increments(rp, q, x, n)
	var exc [3][alternatives]float64 // the excess's evidence at each level of H0
	if ex.on && x > 0 {
		// step multiplies every increment by temper; the excess's is to come out multiplied
		// by exTemper.
		f := cmp.Or(th.exTemper, 1) / cmp.Or(th.temper, 1)
		for l := range exc {
			exc[l] = ex.evidence(l, x, ec)
			for k := range exc[l] {
				exc[l][k] *= f
			}
		}
		for k := range inc {
			inc[k] += exc[2][k]
		}
	}
	t.cx += x
	t.cn += n
	var incB [alternatives]float64
	for k := range incB {
		p := math.Min(rp.r[k]*q, 0.999)
		old := seg.min(k)
		seg.llr[2][k] += x*math.Log(p/q) + (n-x)*math.Log((1-p)/(1-q)) + body[2] + exc[2][k]
		for l, h := range ql {
			seg.llr[l][k] += x*math.Log(p/h) + (n-x)*math.Log((1-p)/(1-h)) + body[l] + exc[l][k]
		}
		incB[k] = seg.min(k) - old
	}
	if seg.n += n; seg.n >= segmentRequests {
		*seg = segment{}
	}
	return t.step(inc, &incB, x, n, b, th)
}

// excessCount is what a test of the excess reads of a bucket besides its x exceedances (see
// excessParams): m, the sum over them of how many sketch bins above the threshold's bin they
// landed, less one (0 for the bin just above it), each counted at most the cap; far, how many
// of them reached the cap.
type excessCount struct {
	m, far float64
}

// evidence is, for each alternative, the log likelihood ratio of x exceedances whose offsets are
// ec against H0 at level l (see excessParams).
func (ep *excessParams) evidence(l int, x float64, ec excessCount) [alternatives]float64 {
	var ev [alternatives]float64
	r0 := ep.rho0[l]
	if r0 <= 0 {
		return ev
	}
	below := math.Max(x-ec.far, 0)
	for k, rk := range ep.rho {
		if rk > r0 {
			ev[k] = below*math.Log((1-rk)/(1-r0)) + ec.m*math.Log(rk/r0)
		}
	}
	return ev
}

// segmentRequests is how many requests a segment of a composite test holds: enough that the
// body's evidence is more than noise (at the default tolerance, 0.03 nats a request with an
// unchanged body against a 10 % slowdown), few enough that load seldom changes within one.
const segmentRequests = 500

// segment is the running log likelihood ratio of each alternative of a composite test's second
// bank against each level of H0, since the segment began.
type segment struct {
	llr [3][alternatives]float64
	n   float64
}

func (s *segment) min(k int) float64 {
	return math.Min(s.llr[0][k], math.Min(s.llr[1][k], s.llr[2][k]))
}

// updatePaired adds a bucket in which the observed side had xo hits in no requests and the
// concurrent reference (the baseline cohort) had xr hits in nr requests. Conditioned on the total
// hits, the observed side's share is binomial with p = ρ0·no/(ρ0·no+nr) under H0 (its rate ρ0
// times the reference's: 1, or a latency test's tolerance) and p = ρ·ρ0·no/(ρ·ρ0·no+nr) when its
// rate is ρ times that. Conditioning cancels whatever moves both sides together — daily cycles,
// traffic spikes, a shared dependency going slow.
func (t *rateTest) updatePaired(rho0 float64, rho [alternatives]float64, xo, no, xr, nr float64, b int64, th *thresholds) rateVerdict {
	if no <= 0 || nr <= 0 {
		return verdictNone
	}
	t.nr += nr
	t.xr += xr
	var inc [alternatives]float64
	if xo+xr > 0 {
		pi0 := rho0 * no / (rho0*no + nr)
		for k := range inc {
			pi1 := rho[k] * rho0 * no / (rho[k]*rho0*no + nr)
			inc[k] = xo*math.Log(pi1/pi0) + xr*math.Log((1-pi1)/(1-pi0))
		}
	}
	return t.step(inc, nil, xo, no, b, th)
}

// thresholds are the boundaries every rate test shares.
type thresholds struct {
	upper float64 // log(1/Alpha), plus family
	// family is what a test against a version or cohort baseline adds to upper: ln(1/its share
	// of Alpha) among the familyN series the deploy changes (Config.AlphaScope; reference.family).
	family      float64
	familyN     int32
	lower       float64 // log(Beta)
	minRequests float64
	recovery    int
	// front gives run 1 frontShare·Alpha of the watch's 2·Alpha (see frontShare).
	front bool
	// bucketCap is the most evidence an update may add to an alternative (0: no cap); see
	// Config.LatencyBucketCap.
	bucketCap float64
	// temper multiplies every update's evidence (0: none): an error test's is divided by its
	// baseline's dispersion (errorDispersion).
	temper float64
	// exTemper is what the evidence of a tail quantile's excess is multiplied by instead (0:
	// none): the per-second dispersion's share of temper, without the drift (see excessParams).
	exTemper float64
	// deployLong runs the deploy-long test next to the runs (an error test against a frozen
	// baseline; see rateTest.deployLong).
	deployLong bool
	// hold keeps the test from firing in this update (a canary's concurrent check disagrees);
	// its evidence still accumulates, so it fires on the update the hold is lifted, if still
	// over its threshold then.
	hold bool
}

// frontShare is the part of a test's whole-watch budget of 2·Alpha that its first run spends
// when the test watches a deploy from its first request (the error tests against the version
// baseline): 1.5·Alpha, leaving 0.5·Alpha to the restarts, run k ≥ 2 getting
// Alpha/(2k(k-1)). The sum over every run is still 2·Alpha, so the guarantee of the whole
// watch is unchanged (a union bound over runs, each held to its share by Ville's inequality).
//
// Why: a deploy's regression begins at the deploy, inside run 1, and an error test's run 1
// lasts the first minutes of the watch (at a 2 % baseline and 20 req/s, the minimum effect's
// evidence needs a minute or two of healthy traffic to fall to log(Beta)). Run 1 fires
// log(1.5) = 0.41 nats sooner (error x5 at 20 req/s: 6.1 s to 5.6 s on average); a regression
// that starts after run 1 ended pays log 2 = 0.69 nats more than with an even split, and a
// regression no deploy explains is the own profile's test, whose runs keep the even split. A
// latency exceedance test accepts H0 within seconds (p50: a dozen requests), so its run 1 covers
// almost none of the watch and it keeps the even split too.
const frontShare = 1.5

// runBound is the firing threshold of run k (1-based) before the floor's price: log of 1/its
// share of Alpha.
func (th *thresholds) runBound(k float64) float64 {
	switch {
	case th.front && k <= 1:
		return th.upper - math.Log(frontShare)
	case th.front:
		return th.upper + math.Log(k*(k-1)/(2-frontShare))
	case k <= 1:
		return th.upper
	default:
		return th.upper + math.Log(k*(k-1))
	}
}

// step adds a bucket's increments: inc for the alternatives, incB for the second bank of a
// composite test (nil for any other).
func (t *rateTest) step(inc [alternatives]float64, incB *[alternatives]float64, x, n float64, b int64, th *thresholds) rateVerdict {
	if t.n == 0 {
		t.runStart = b
		t.runs++
		t.bound = th.runBound(t.runs)
	}
	t.n += n
	t.x += x
	t.steps++
	maxInc, maxLLR := math.Inf(-1), math.Inf(-1)
	// Capped while firing so recovery takes a bounded time however bad the episode was; floored
	// otherwise (see floorDepth).
	lo, hi := th.lower-floorDepth, math.Inf(1)
	if t.firing {
		lo, hi = math.Inf(-1), t.bound
	}
	if m := th.temper; m > 0 {
		for k := range inc {
			inc[k] *= m
			if incB != nil {
				incB[k] *= m
			}
		}
	}
	if c := th.bucketCap; c > 0 {
		for k := range inc {
			inc[k] = math.Min(inc[k], c)
			if incB != nil {
				incB[k] = math.Min(incB[k], c)
			}
		}
	}
	for k := range t.llr {
		t.llr[k] = clamp(t.llr[k]+inc[k], lo, hi)
		maxInc = math.Max(maxInc, inc[k])
		maxLLR = math.Max(maxLLR, t.llr[k])
	}
	if t.twoBanks = incB != nil; t.twoBanks {
		llrB := &t.bank.llr
		for k := range llrB {
			llrB[k] = clamp(llrB[k]+incB[k], lo, hi)
			maxInc = math.Max(maxInc, incB[k])
			maxLLR = math.Max(maxLLR, llrB[k])
		}
	}
	if !t.firing {
		// The floor's price (see floorDepth): the bound rises with the run's length.
		fire := t.bound + math.Log1p(math.Exp(th.lower-floorDepth)*t.steps)
		if t.n >= th.minRequests && !th.hold && t.score() >= fire {
			t.bound = fire
			t.firing = true
			t.quiet = 0
			return verdictFired
		}
		if maxLLR <= th.lower {
			t.reset()
		}
		return verdictNone
	}
	if maxInc <= 0 {
		t.quiet++
	} else {
		t.quiet = 0
	}
	if !t.long && (maxLLR <= th.lower || int(t.quiet) >= th.recovery) {
		q := t.quiet
		t.reset()
		t.quietRun = q
		return verdictRecovered
	}
	return verdictNone
}

// floorDepth is how far below log(Beta) an alternative's evidence may sink within a run (nats).
//
// Why: a run ends only when every alternative's evidence is down to log(Beta). Over a long
// healthy run the minimum effect's lingers above that for minutes while the gross
// alternative's sinks without bound (at 2 % errors, 0.6 nats a second at 20 req/s), so a
// regression that starts then (one no deploy explains, a ramp's slow start) must first climb
// back tens of nats. Flooring each alternative at f = log(Beta) - floorDepth costs almost
// nothing: with per-bucket likelihood ratios λ, the floored ratio C obeys C' = max(C·λ, e^f) ≤
// C·λ + e^f, so it stays below Λ(0,t) + e^f·Σ_i Λ(i,t), a sum of martingales that start at 1
// and at e^f in each bucket, whose mean after T buckets is 1 + e^f·T. By Doob's inequality it
// reaches 1/Alpha within T buckets with probability at most Alpha·(1 + e^f·T), so the test
// fires at its bound plus log(1 + e^f·T), T the run's buckets with data. At the defaults e^f is
// 5e-4: 0.06 nats after two minutes (a healthy run seldom lasts longer), 1 nat after an hour.
// A deeper floor costs less and helps less: at 7 nats below log(Beta), error x5 starting
// minutes into a watch is seen in 13.7 s on average, at 3 in 12.1 s, without one in 16.6 s.
const floorDepth = 3.0

// reset ends the run. What the observed side served so far is kept: it still tells H0's rate.
func (t *rateTest) reset() {
	bank := t.bank
	*t = rateTest{cn: t.cn, cx: t.cx, runs: t.runs}
	if bank != nil { // zeroed, not dropped: latency tests restart every few seconds
		*bank = secondBank{}
		t.bank = bank
	}
}

func clamp(v, lo, hi float64) float64 {
	return math.Max(lo, math.Min(hi, v))
}

// minDispersionBuckets is how many served buckets a series' error dispersion needs before it is
// read (errorDispersion).
const minDispersionBuckets = 60

// addDispersion adds bucket b's errors to s's dispersion sums: per category, the squared Pearson
// residual (x − n·p)² / (n·p·(1 − p)) against the rate p of s's recent history before b, whose
// mean is 1 when requests fail independently. Nothing until that history holds
// MinBaselineRequests, a rate worth measuring against.
func (d *Detector) addDispersion(s *series, b *bucket) {
	if s.frozen() {
		return // a firing series' residuals measure its regression, not its noise
	}
	n, errs := s.cur.n, s.cur.errs
	if s.prev != nil {
		n += s.prev.n
		for c := range errs {
			errs[c] += s.prev.errs[c]
		}
	}
	if n < float64(d.cfg.MinBaselineRequests) {
		return
	}
	for c := range errs {
		p := (errs[c] + 0.5) / (n + 1)
		e := b.n * p
		dv := b.errs[c] - e
		s.dispQ[c] += float32(dv * dv / (e * (1 - p)))
		s.dispE[c] += float32(e)
	}
	s.dispB++
}

// rotateDispersion ends the epoch of s's latency dispersion: the current epoch's Pearson
// statistics become the last epoch's, and the next epoch is measured against the thresholds of
// sk, the epoch just completed (each tested quantile's, when it held at least
// LatencyMinTailCount latencies above it), as are its excursions; before is the epoch before sk
// (nil: s did not serve it), which the drift compares with too.
func (d *Detector) rotateDispersion(s *series, sk *ddsketch.DDSketch, elapsed int64, before *history) {
	d.endDrift(s, elapsed)
	s.latLastOn, s.latLastB = 0, s.latB
	for q := range d.cfg.LatencyQuantiles {
		if chi, ok := s.epochChi(q); ok {
			s.latLastOn |= 1 << q
			s.latLastChi[q], s.latLastE[q] = float32(chi), s.latX[q]
		}
	}
	s.latX, s.latX2 = [maxQuantiles]float32{}, [maxQuantiles]float32{}
	s.latN, s.latB = 0, 0
	s.latOn = d.setThresholds(s, sk, d.tailed(sk, float64(d.cfg.LatencyMinTailCount)))
	s.excOn = s.latOn
	d.startDrift(s, sk, s.latOn, before)
}

// aboveThresholds counts sk's latencies above each of s's thresholds latThr, shift bins up,
// into x.
func (d *Detector) aboveThresholds(s *series, sk *ddsketch.DDSketch, shift int, x *[maxQuantiles]float64) {
	nq := len(d.cfg.LatencyQuantiles)
	var thr [maxQuantiles]threshold
	for q := range nq {
		thr[q].index = int(s.latThr[q])
	}
	aboveEach(sk, &thr, nq, shift, x)
}

// tailed is the bit set of the quantiles of which sk holds at least atLeast latencies above.
func (d *Detector) tailed(sk *ddsketch.DDSketch, atLeast float64) uint8 {
	n := sk.GetCount()
	var on uint8
	for q, qq := range d.cfg.LatencyQuantiles {
		if n*(1-qq) >= atLeast {
			on |= 1 << q
		}
	}
	return on
}

// setThresholds sets s's thresholds latThr of the quantiles on says at sk's, and returns the
// bit set of those it could read.
func (d *Detector) setThresholds(s *series, sk *ddsketch.DDSketch, on uint8) uint8 {
	var set uint8
	for q, qq := range d.cfg.LatencyQuantiles {
		if on&(1<<q) == 0 {
			continue
		}
		if v, err := sk.GetValueAtQuantile(qq); err == nil {
			s.latThr[q] = int32(d.sk.thresholdAt(v).index)
			set |= 1 << q
		}
	}
	return set
}

// provisionalThresholds sets the thresholds s's excursions are measured against in its first
// epoch, before one has completed (rotateDispersion), from its current epoch so far: each
// quantile's once excursionMinTail latencies of the epoch lie above it, and again as more
// quantiles reach it. A version that served a few minutes before the next deploy would
// otherwise give a baseline blind to its excursions (its latency dispersion waits for a whole
// epoch: the dispersion compares epochs' thresholds, the excursions only a bucket's counts).
func (d *Detector) provisionalThresholds(s *series) {
	if on := d.tailed(s.cur.sk, excursionMinTail); on != s.excOn {
		s.excOn = d.setThresholds(s, s.cur.sk, on)
	}
}

// epochChi is the Pearson statistic of quantile q's exceedances over the current epoch's
// buckets against the epoch's own share above the threshold: sum over buckets of
// (x − n·p)²/(n·p·(1 − p)), which is (Σx²/n − p·Σx)/(p·(1 − p)) with p = Σx/Σn. Measuring the
// share in the same buckets, rather than taking it from the epoch before, keeps a share that
// moved between epochs (or was placed on few latencies) out of the dispersion.
func (s *series) epochChi(q int) (float64, bool) {
	if s.latOn&(1<<q) == 0 || s.latB < 2 || s.latN <= 0 {
		return 0, false
	}
	p := float64(s.latX[q]) / float64(s.latN)
	if p <= 0 || p >= 1 {
		return 0, false
	}
	return math.Max(0, (float64(s.latX2[q])-p*float64(s.latX[q]))/(p*(1-p))), true
}

// addLatencyDispersion adds the just-closed bucket b of s to its latency dispersion: per tested
// quantile, its latencies above the threshold, read at the bucket's load as the tests read it
// (bucketShift). Not while s fires, as addDispersion; its excursions (addExcursion) and its
// drift are followed then too.
func (d *Detector) addLatencyDispersion(s *series, b *bucket) {
	if b.sk == nil || b.latN <= 0 {
		return
	}
	if s.latOn == 0 {
		d.provisionalThresholds(s)
	}
	if s.excOn == 0 {
		return
	}
	var x [maxQuantiles]float64
	shift := d.bucketShift(s, b.idx, s.usualLoads(), true)
	d.aboveThresholds(s, b.sk, shift, &x)
	d.addExcursion(s, b, &x)
	// The drift counts firing or not (see drift.go), and at its substitute threshold in the slot
	// of the quantile that has one (placeSubstitute).
	xd := x
	if q, idx, ok := s.substitute(); ok {
		xd[q] = fractionAbove(b.sk, idx+shift) * b.sk.GetCount()
	}
	s.drift.add(&xd, b.latN, s.latOn)
	if s.frozen() || s.latOn == 0 {
		return
	}
	for q := range d.cfg.LatencyQuantiles {
		if s.latOn&(1<<q) != 0 {
			s.latX[q] += float32(x[q])
			s.latX2[q] += float32(x[q] * x[q] / b.latN)
		}
	}
	s.latN += float32(b.latN)
	s.latB++
}

// latencyDispersion is how many times the variance of s's latency exceedances of quantile q per
// bucket exceeds what independent requests give, as errorDispersion measures errors': the
// Pearson statistic of the last completed epoch and the current one over their degrees of
// freedom, less three of its standard errors, and at least 1.
//
// Why: the exceedance tests count requests as slow independently, and a process that stalls
// slows every request in flight at once. A collector's pause of 1 s every 30 s (+500 ms to each
// request in it) rolled back 9 of 40 healthy deploys, 500 ms every 10 s 5 of 40: the first
// stall after a deploy made a tenth of the new version's few requests slow together, more than
// a bucket's cap on the evidence could hold back. Requests that stall together vary as one per
// bucket; the evidence divided by the factor is the quasi-likelihood's.
func (d *Detector) latencyDispersion(s *series, q int) float64 {
	phi, _ := d.latencyDispersionMeasured(s, q)
	return phi
}

// latencyDispersionMeasured is latencyDispersion, and whether it was measured (over at least
// minDispersionBuckets buckets) rather than taken as 1 for want of buckets.
func (d *Detector) latencyDispersionMeasured(s *series, q int) (float64, bool) {
	phi, measured := d.secondDispersion(s, q)
	return max(phi, d.driftDispersion(s, q)), measured
}

// secondDispersion is the per-second part of latencyDispersionMeasured, without the drift.
func (d *Detector) secondDispersion(s *series, q int) (float64, bool) {
	var chi, dof, above, buckets float64
	if s.latLastOn&(1<<q) != 0 {
		chi, dof, above, buckets = float64(s.latLastChi[q]), float64(s.latLastB)-1, float64(s.latLastE[q]), float64(s.latLastB)
	}
	if c, ok := s.epochChi(q); ok {
		chi, dof, above, buckets = chi+c, dof+float64(s.latB)-1, above+float64(s.latX[q]), buckets+float64(s.latB)
	}
	if buckets < minDispersionBuckets || above <= 0 || dof <= 0 {
		return 1, false
	}
	return overdispersion(chi/dof, above/buckets, buckets), true
}

// errorDispersion is how many times the variance of s's error counts per bucket, in category c,
// exceeds what independent requests give (binomial): the mean squared Pearson residual, less
// three of its standard errors (about √((2 + 1/μ)/buckets) for μ expected errors a bucket), and
// at least 1.
//
// Why: the error tests count requests as failing independently, and in production they seldom
// do. A dependency's blip fails every request in flight, a client retries, one bad instance
// fails its share: errors come in clumps. With a 2 % rate delivered in clumps of five, the
// tests fired in 166 of 200 A/A deploys. Errors in clumps of k vary k times as much per bucket
// as independent ones, and a clump says about as much as one failure: the evidence, divided by
// that factor, is the quasi-likelihood's, and the tests keep their false-alarm rate. Requests
// that do fail independently measure about 1, and the margin keeps their tests as they were.
func (d *Detector) errorDispersion(s *series, c int) float64 {
	b := float64(s.dispB)
	if b < minDispersionBuckets || s.dispE[c] <= 0 {
		return 1
	}
	return overdispersion(float64(s.dispQ[c])/b, float64(s.dispE[c])/b, b)
}

// overdispersion is the factor a dispersion's tests are tempered by: meanChi, the mean squared
// Pearson residual over units buckets expecting mu counts each, less three of its standard
// errors (about √((2 + 1/μ)/units)), and at least 1, so counts that vary as independent ones do
// leave their tests as they were.
func overdispersion(meanChi, mu, units float64) float64 {
	return math.Max(1, meanChi-3*math.Sqrt((2+1/mu)/units))
}
