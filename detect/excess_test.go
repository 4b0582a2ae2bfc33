package detect

import (
	"cmp"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"

	"github.com/scalpel-dev/scalpel/schemas"
)

// TestExcessFit: the fit of a geometric truncated at the cap recovers the ρ of offsets drawn
// from one; H0's, with its phantom at the cap, comes out a little higher on twenty-five
// exceedances and all but the same on many; and a lump at the cap that the mean alone would
// spread thin lifts H0's ρ until the fit puts at least the lump's share there.
func TestExcessFit(t *testing.T) {
	d := New(DefaultConfig())
	c := d.excessCapBins()
	if c != 10 {
		t.Fatalf("cap %d bins at the default accuracy, want 10", c)
	}
	const idx = 100
	geometric := func(total, rho, lump float64) *ddsketch.DDSketch {
		sk := d.sk.new()
		for m := range 80 {
			v := d.sk.m.Value(idx + 1 + m)
			if d.sk.m.Index(v) != idx+1+m {
				t.Fatalf("value %g of bin %d maps to bin %d", v, idx+1+m, d.sk.m.Index(v))
			}
			if w := total * (1 - lump) * (1 - rho) * math.Pow(rho, float64(m)); w > 1e-9 {
				if err := sk.AddWithCount(v, w); err != nil {
					t.Fatal(err)
				}
			}
		}
		if lump > 0 {
			if err := sk.AddWithCount(d.sk.m.Value(idx+60), total*lump); err != nil {
				t.Fatal(err)
			}
		}
		// below the threshold: not counted
		if err := sk.AddWithCount(d.sk.m.Value(idx-5), 100*total); err != nil {
			t.Fatal(err)
		}
		return sk
	}
	for _, tt := range []struct {
		total, rho, lump float64
		fit, h0          [2]float64 // ranges
	}{
		{1e6, 0.7, 0, [2]float64{0.699, 0.701}, [2]float64{0.699, 0.702}},
		{1e6, 0.5, 0, [2]float64{0.499, 0.501}, [2]float64{0.499, 0.502}},
		// 25 exceedances (p99.9 of 25 000 requests): the phantom and the floor lift H0's ρ
		{25, 0.7, 0, [2]float64{0.699, 0.701}, [2]float64{0.73, 0.76}},
		// 3 % of the exceedances 60 bins up (a timeout): the mean alone lifts ρ to 0.72, and the
		// floor lifts H0's until ρ^10 is the share at the cap, the lump's and the geometric's own
		{1e6, 0.7, 0.03, [2]float64{0.715, 0.73}, [2]float64{0.745, 0.76}},
	} {
		sk := geometric(tt.total, tt.rho, tt.lump)
		fit, h0 := excessFit(sk, idx, c, false), excessFit(sk, idx, c, true)
		if fit < tt.fit[0] || fit > tt.fit[1] || h0 < tt.h0[0] || h0 > tt.h0[1] {
			t.Errorf("%+v: fit %.4f, H0's %.4f; want in %v and %v", tt, fit, h0, tt.fit, tt.h0)
		}
		if share := tt.lump + (1-tt.lump)*math.Pow(tt.rho, float64(c)); tt.lump > 0 && math.Pow(h0, float64(c)) < share*(1-1e-3) {
			t.Errorf("%+v: H0 puts %.4f at the cap, the baseline %.4f", tt, math.Pow(h0, float64(c)), share)
		}
	}
	if got := excessFit(d.sk.new(), idx, c, false); got != 0 {
		t.Errorf("fit of nothing: %g", got)
	}
}

// tailWorld is the scenario suite's latency model: a log-normal body (median 20 ms, σ 0.3) and a
// slow path of share slow (median 60 ms·tail, σ 0.3); retry of the requests take twice as long
// (a second attempt), and lump more of them 1 s (a timeout).
type tailWorld struct {
	slow, tail, lump, retry float64
}

func (w tailWorld) cdf(x float64) float64 {
	phi := func(z float64) float64 { return 0.5 * math.Erfc(-z/math.Sqrt2) }
	once := func(x float64) float64 {
		return (1-w.slow)*phi(math.Log(x/20)/0.3) + w.slow*phi(math.Log(x/(60*w.tail))/0.3)
	}
	f := (1-w.retry)*once(x) + w.retry*once(x/2)
	if x >= 1000 {
		f += w.lump
	}
	return f / (1 + w.lump)
}

func (w tailWorld) draw(rng *rand.Rand) float64 {
	if rng.Float64() < w.lump/(1+w.lump) {
		return 1000
	}
	v := 20 * math.Exp(0.3*rng.NormFloat64())
	if rng.Float64() < w.slow {
		v = 60 * w.tail * math.Exp(0.3*rng.NormFloat64())
	}
	if rng.Float64() < w.retry {
		v *= 2
	}
	return v
}

// excessMean is, for each alternative, the mean per exceedance of exceedance-test q's excess
// likelihood ratio (exp) and of its log, when the new version's latencies follow w slowed by
// slow (1: not), against H0 at level l, threshold thr and hypotheses ep: exact over the sketch's
// bins, from w's distribution. ok is false when w puts nothing above thr.
func excessMean(d *Detector, w tailWorld, slow float64, ep *excessParams, l int, thr threshold) (lr, llr [alternatives]float64, ok bool) {
	c := d.excessCapBins()
	sf := func(x float64) float64 { return 1 - w.cdf(x/slow) }
	above := sf(d.sk.m.LowerBound(thr.index + 1))
	if above <= 0 {
		return lr, llr, false
	}
	for j := thr.index + 1; j < thr.index+2000; j++ {
		p := (sf(d.sk.m.LowerBound(j)) - sf(d.sk.m.LowerBound(j+1))) / above
		if p <= 0 {
			continue
		}
		ec := excessCount{m: float64(min(j-thr.index-1, c))}
		if j-thr.index-1 >= c {
			ec.far = 1
		}
		ev := ep.evidence(l, 1, ec)
		for k := range ev {
			lr[k] += p * math.Exp(ev[k])
			llr[k] += p * ev[k]
		}
	}
	return lr, llr, true
}

// TestExcessKeepsItsBound: against baselines of 22 500 requests (7.5 min at 50 req/s) of the
// suite's latency mix, the excess's likelihood ratio above p99.5 and p99.9 has a mean of at most
// 1 per exceedance under H0 (no slowdown, and the tolerance against its level: 5 %, one sketch
// bin, latency_tolerance's default, and 10 %, latency_profile_tolerance's), for every
// alternative, on average over the baselines (0.89 to 0.97): the tail is lighter than the
// geometric fitted to it. A baseline whose tail came out light by chance reads up to about 1.1.
// With 0.05 % or 0.2 % of requests timing out at 1 s (a lump far above the rest, which a
// geometric does not model) the cap and H0's floor at the cap hold it to about 1 on average and
// 1.15 at most, on a baseline that drew too few of the lump: what the floor's prior of one in
// two does not cover. With 0.5 % or 2 % of requests retried once, twice as slow (a second mode
// inside the tail and the cap), 0.93 to 0.995 on average and up to about 1.2 on the worst baseline.
// And a slow path twice as slow gives each exceedance above p99.5 and p99.9 a fifth of a nat or
// more under the gross alternative, on average.
func TestExcessKeepsItsBound(t *testing.T) {
	d := New(DefaultConfig())
	tn := d.tune("svc")
	rng := rand.New(rand.NewPCG(7, 8))
	const baselines = 40
	type key struct {
		lump, retry float64
		q, l, tol   int
	}
	sum, cnt, worst := map[key]float64{}, map[key]float64{}, map[key]float64{}
	var gross [2]float64
	for range baselines {
		for _, w := range []tailWorld{{slow: 0.02, tail: 1}, {slow: 0.02, tail: 1, lump: 0.0005}, {slow: 0.02, tail: 1, lump: 0.002},
			{slow: 0.02, tail: 1, retry: 0.005}, {slow: 0.02, tail: 1, retry: 0.02}} {
			sk := d.sk.new()
			for range 22500 {
				d.sk.add(sk, w.draw(rng), 1)
			}
			for q, qq := range []float64{0.995, 0.999} {
				v, err := sk.GetValueAtQuantile(qq)
				if err != nil {
					t.Fatal(err)
				}
				thr := d.sk.thresholdAt(v)
				for _, tol := range []int{d.tolShift(tn.cfg.LatencyTolerance), d.tolShift(tn.cfg.LatencyProfileTolerance)} {
					ep := d.fitExcess(tn, sk, thr, [3]int{0, tol / 2, tol})
					switch {
					case !ep.valid() || !ep.on && w.lump == 0 && w.retry == 0:
						t.Fatalf("p%g: %+v", 100*qq, ep)
					case !ep.on:
						continue // the lump is most of the excess: no alternative puts more far out
					}
					for l, slow := range map[int]float64{0: 1, 2: math.Exp(float64(tol) * d.sk.logGamma)} {
						lr, _, ok := excessMean(d, w, slow, &ep, l, thr)
						if !ok {
							continue // the lump is all of the tail above the threshold
						}
						k := key{w.lump, w.retry, q, l, tol}
						for _, v := range lr {
							sum[k] += v
							cnt[k]++
							worst[k] = math.Max(worst[k], v)
						}
					}
				}
				if w.lump == 0 && w.retry == 0 {
					tol := d.tolShift(tn.cfg.LatencyTolerance)
					ep := d.fitExcess(tn, sk, thr, [3]int{0, tol / 2, tol})
					_, llr, _ := excessMean(d, tailWorld{slow: 0.02, tail: 2}, 1, &ep, 0, thr)
					gross[q] += llr[alternatives-1] / baselines
				}
			}
		}
	}
	for k, n := range cnt {
		m := sum[k] / n
		t.Logf("%+v: mean likelihood ratio per exceedance under H0 %.4f on average, %.4f at most", k, m, worst[k])
		avg, most := 1.0, 1.12
		switch {
		case k.lump > 0:
			avg, most = 1.01, 1.2
		case k.retry > 0:
			most = 1.3
		}
		if m > avg || worst[k] > most {
			t.Errorf("%+v: mean likelihood ratio per exceedance under H0 %.4f on average, %.4f at most; want at most %g and %g", k, m, worst[k], avg, most)
		}
	}
	t.Logf("evidence per exceedance of a slow path x2 above p99.5 and p99.9: %.3f and %.3f nats on average", gross[0], gross[1])
	if gross[0] < 0.2 || gross[1] < 0.2 {
		t.Errorf("a slow path twice as slow: %.3f and %.3f nats per exceedance above p99.5 and p99.9, want 0.2 or more", gross[0], gross[1])
	}
}

// TestTheDriftTempersTheCountNotTheExcess: a composite test's update divides the count's
// evidence by temper (the larger of the per-second dispersion and the drift) and the excess's
// by exTemper (the per-second dispersion alone): a traffic mix that wanders moves how many
// requests exceed a tail threshold, not where above it they land (excessParams).
func TestTheDriftTempersTheCountNotTheExcess(t *testing.T) {
	rp := newRateParams(50, 10_000, [alternatives]float64{1.6, 3, 6})
	lower := [2]rateParams{rp, rp}
	var body [3]float64
	ep := excessParams{on: true, rho0: [3]float64{0.7, 0.7, 0.7}, rho: [alternatives]float64{0.8, 0.85, 0.9}}
	ec := excessCount{m: 40, far: 1}
	const x, n = 6, 300.0
	update := func(temper, exTemper float64) [alternatives]float64 {
		th := thresholds{upper: 20, lower: math.Log(0.01), minRequests: 10, temper: temper, exTemper: exTemper}
		var rt rateTest
		rt.updateComposite(&rp, &lower, &body, &ep, ec, x, n, 1, &th)
		return rt.llr
	}
	whole := update(0, 0)
	ex := ep.evidence(2, x, ec)
	for _, tt := range []struct{ temper, exTemper float64 }{{0.5, 0}, {0.5, 0.8}, {0.5, 0.5}, {0, 0.8}} {
		got := update(tt.temper, tt.exTemper)
		tc, te := cmp.Or(tt.temper, 1), cmp.Or(tt.exTemper, 1)
		for k := range got {
			if ex[k] <= 0 || whole[k]-ex[k] <= 0 {
				t.Fatalf("alternative %d: count %.3g and excess %.3g: want both positive, or the test cannot tell them apart", k, whole[k]-ex[k], ex[k])
			}
			if want := tc*(whole[k]-ex[k]) + te*ex[k]; math.Abs(got[k]-want) > 1e-9 {
				t.Errorf("temper %g, exTemper %g, alternative %d: log likelihood ratio %.6g, want %.6g (the count's %.4g times %g, the excess's %.4g times %g)",
					tt.temper, tt.exTemper, k, got[k], want, whole[k]-ex[k], tc, ex[k], te)
			}
		}
	}
}

// TestAWanderTempersTheCountOfATailRegression: on a mix whose slow requests' share wanders, a
// version whose slow path is twice as slow is found, and its anomaly says that the baseline's
// drift divided the evidence of its count and not that of where its requests landed.
func TestAWanderTempersTheCountOfATailRegression(t *testing.T) {
	d := New(DefaultConfig())
	old, mix := wandering(1, "1.0.0", t0, 3880, 50, 0.6, time.Minute, 1, 0.5)
	run(d, old, 0, 500)
	next, _ := wandering(2, "1.1.0", old[len(old)-1].TS.Add(time.Second), 300, 50, 0.6, time.Minute, 2, mix)
	for _, a := range run(d, next, 0, 50) {
		if a.Metric != schemas.MetricLatency || a.Version != "1.1.0" || a.IsResolved() {
			continue
		}
		for _, n := range a.Evidence.Notes {
			if strings.Contains(n, "evidence of the new version's count is divided by that") && strings.Contains(n, "not where they land") {
				t.Logf("found %.0f s after the deploy: %s", a.TSDetected.Sub(next[0].TS).Seconds(), n)
				return
			}
		}
		t.Fatalf("the anomaly %s does not say the drift divided its count's evidence alone: %q", a.Test, a.Evidence.Notes)
	}
	t.Fatal("p99 ×2 on a wandering mix not found within 300 s")
}
