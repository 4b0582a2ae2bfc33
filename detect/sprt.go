package detect

import "math"

// alternatives is how many alternative hypotheses a rate test mixes: the minimum effect (so subtle
// regressions are caught) and a gross one (so large regressions are caught within a few buckets).
const alternatives = 2

// rateParams fixes the hypotheses of a rate test against a known baseline rate p0:
// H0: p = p0, H_k: p = p1[k]. Logs are precomputed so a bucket update is a few multiplications.
type rateParams struct {
	p0     float64
	p1     [alternatives]float64
	logHit [alternatives]float64 // log(p1/p0): evidence per hit (error, exceedance)
	logMis [alternatives]float64 // log((1-p1)/(1-p0)): evidence per miss
}

// newRateParams builds the hypotheses for a baseline rate p0 and alternatives p1. Both are clamped
// away from 0 and 1 so every log is finite; an alternative at or below p0 is lifted above it.
func newRateParams(p0 float64, p1 [alternatives]float64) rateParams {
	p0 = clamp(p0, 1e-6, 0.98)
	rp := rateParams{p0: p0}
	for k := range p1 {
		a := clamp(p1[k], p0+1e-6, 0.999)
		if k > 0 && a <= rp.p1[k-1] {
			a = math.Min(0.999, rp.p1[k-1]+1e-6)
		}
		rp.p1[k] = a
		rp.logHit[k] = math.Log(a / p0)
		rp.logMis[k] = math.Log((1 - a) / (1 - p0))
	}
	return rp
}

// rateTest is a repeated sequential probability ratio test on a rate (errors or latency
// exceedances per request), mixing the alternatives with equal weights.
//
// Why this keeps its false-alarm rate under continuous monitoring: within a run, the mixture
// likelihood ratio is a non-negative martingale with mean 1 under H0, so by Ville's inequality the
// probability that it ever reaches 1/Alpha is at most Alpha, however often it is looked at. A run
// ends when the evidence for every alternative falls to log(Beta) (the test accepts H0); the test
// then restarts, so a regression that starts late is not buried under old healthy evidence. The
// false-alarm rate is therefore Alpha per run, and runs under H0 last long (the drift towards
// log(Beta) is the Kullback-Leibler divergence per request, small for a minimum effect).
type rateTest struct {
	llr      [alternatives]float64
	runStart int64   // first bucket of the current run
	n, x     float64 // requests and hits in the current run
	nr, xr   float64 // the concurrent reference's requests and hits (paired runs only)
	firing   bool
	quiet    int // consecutive buckets of evidence against H1 while firing
	quietRun int // quiet when the episode ended (for the resolution's wording)
}

// rateVerdict is what one bucket update did to a rate test.
type rateVerdict uint8

const (
	verdictNone rateVerdict = iota
	verdictFired
	verdictRecovered
)

// score is the log of the mixture likelihood ratio.
func (t *rateTest) score() float64 {
	m := t.llr[0]
	for _, v := range t.llr[1:] {
		m = math.Max(m, v)
	}
	s := 0.0
	for _, v := range t.llr {
		s += math.Exp(v - m)
	}
	return m + math.Log(s/alternatives)
}

// updateFixed adds a bucket of n requests with x hits against a fixed baseline rate.
func (t *rateTest) updateFixed(rp *rateParams, x, n float64, b int64, th *thresholds) rateVerdict {
	if n <= 0 {
		return verdictNone // an empty bucket is inconclusive: no evidence either way
	}
	var inc [alternatives]float64
	for k := range inc {
		inc[k] = x*rp.logHit[k] + (n-x)*rp.logMis[k]
	}
	return t.step(inc, x, n, b, th)
}

// updatePaired adds a bucket in which the observed side had xo hits in no requests and the
// concurrent reference (the baseline cohort) had xr hits in nr requests. Conditioned on the total
// hits, the observed side's share is binomial with p = no/(no+nr) under H0 (equal rates) and
// p = ρ·no/(ρ·no+nr) when its rate is ρ times the reference's. Conditioning cancels whatever moves
// both sides together — daily cycles, traffic spikes, a shared dependency going slow.
func (t *rateTest) updatePaired(rho [alternatives]float64, xo, no, xr, nr float64, b int64, th *thresholds) rateVerdict {
	if no <= 0 || nr <= 0 {
		return verdictNone
	}
	t.nr += nr
	t.xr += xr
	var inc [alternatives]float64
	if xo+xr > 0 {
		pi0 := no / (no + nr)
		for k := range inc {
			pi1 := rho[k] * no / (rho[k]*no + nr)
			inc[k] = xo*math.Log(pi1/pi0) + xr*math.Log((1-pi1)/(1-pi0))
		}
	}
	return t.step(inc, xo, no, b, th)
}

// thresholds are the boundaries every rate test shares.
type thresholds struct {
	upper       float64 // log(1/Alpha)
	lower       float64 // log(Beta)
	minRequests float64
	recovery    int
}

func (t *rateTest) step(inc [alternatives]float64, x, n float64, b int64, th *thresholds) rateVerdict {
	if t.n == 0 {
		t.runStart = b
	}
	t.n += n
	t.x += x
	maxInc, maxLLR := math.Inf(-1), math.Inf(-1)
	for k := range t.llr {
		t.llr[k] += inc[k]
		if t.firing {
			// Capped while firing so recovery takes a bounded time however bad the episode was.
			t.llr[k] = math.Min(t.llr[k], th.upper)
		}
		maxInc = math.Max(maxInc, inc[k])
		maxLLR = math.Max(maxLLR, t.llr[k])
	}
	if !t.firing {
		if t.n >= th.minRequests && t.score() >= th.upper {
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
	if maxLLR <= th.lower || t.quiet >= th.recovery {
		q := t.quiet
		t.reset()
		t.quietRun = q
		return verdictRecovered
	}
	return verdictNone
}

func (t *rateTest) reset() {
	*t = rateTest{}
}

func clamp(v, lo, hi float64) float64 {
	return math.Max(lo, math.Min(hi, v))
}
