package detect

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// bucketDraw is one second of Bernoulli(p) requests at a Poisson rate.
func bucketDraw(rng *rand.Rand, rps, p float64) (x, n float64) {
	n = float64(poisson(rng, rps))
	for range int(n) {
		if rng.Float64() < p {
			x++
		}
	}
	return x, n
}

// TestBaselineTestLongWatch holds the two-sample test to what the upper-bound plug-in could not
// do: a baseline that came out 20 % low (80 errors where 100 were expected) does not fire a
// healthy version over three hours, because the new version's own data pulls H0's rate up,
// while an error x5 is still caught within seconds. The same with the deploy-long test next to
// the runs, as the error tests against a version baseline have it: its evidence against a
// baseline 20 % low tends to 80·(1.25·(1 - 1/1.5) - ln 1.5) = 0.9 nats.
func TestBaselineTestLongWatch(t *testing.T) {
	d := New(DefaultConfig())
	rp := d.errorParams(d.base, 80, 5000)
	for _, th := range []thresholds{d.th, d.errorThresholds(&reference{})} {
		t.Run(fmt.Sprintf("deploy-long %v", th.deployLong), func(t *testing.T) { baselineLongWatch(t, d, rp, th) })
	}
}

func baselineLongWatch(t *testing.T, d *Detector, rp rateParams, th thresholds) {
	if raceEnabled && th.deployLong {
		t.Skip("three hours of buckets, twice, are slow under the race detector")
	}
	tests := []struct {
		name    string
		p       float64
		buckets int
		fire    bool
		within  int
	}{
		{"healthy, 3 h", 0.02, 3 * 3600, false, 0},
		{"error x5", 0.10, 60, true, 15},
	}
	for _, tt := range tests {
		for seed := range uint64(10) {
			rng := rand.New(rand.NewPCG(seed, 7))
			var rt rateTest
			fired := -1
			for b := range tt.buckets {
				x, n := bucketDraw(rng, 20, tt.p)
				if rt.updateBaseline(&rp, x, n, int64(b), &th) == verdictFired {
					fired = b
					break
				}
			}
			switch {
			case !tt.fire && fired >= 0:
				t.Errorf("%s, seed %d: fired at bucket %d", tt.name, seed, fired)
			case tt.fire && (fired < 0 || fired >= tt.within):
				t.Errorf("%s, seed %d: fired at bucket %d, want within %d", tt.name, seed, fired, tt.within)
			}
		}
	}
}

// TestRunThresholdSpendsAlpha checks the threshold of later runs: log(1/alpha) + log(k(k-1)).
func TestRunThresholdSpendsAlpha(t *testing.T) {
	d := New(DefaultConfig())
	rp := d.errorParams(d.base, 0, 10000)
	var rt rateTest
	for b := range 200 {
		rt.updateBaseline(&rp, 0, 50, int64(b), &d.th) // error-free: every run accepts H0
	}
	if rt.runs < 3 {
		t.Fatalf("runs %g: error-free traffic should accept H0 repeatedly", rt.runs)
	}
	want := d.th.upper + math.Log(rt.runs*(rt.runs-1))
	if math.Abs(rt.bound-want) > 1e-9 {
		t.Errorf("run %g threshold %g, want %g", rt.runs, rt.bound, want)
	}
}

// TestFrontLoadedRunsKeepBudget checks that a test whose first run spends more of the budget
// (the error tests, see frontShare) still spends at most 2·Alpha over every run, and that its
// first run's threshold is below the even split's.
func TestFrontLoadedRunsKeepBudget(t *testing.T) {
	d := New(DefaultConfig())
	tests := []struct {
		name  string
		front bool
	}{
		{"even split", false},
		{"front-loaded", true},
	}
	for _, tt := range tests {
		th := d.th
		th.front = tt.front
		spent := 0.0
		for k := 1.0; k <= 1e6; k++ {
			spent += math.Exp(-th.runBound(k))
		}
		alpha := math.Exp(-d.th.upper)
		if spent > 2*alpha*(1+1e-9) {
			t.Errorf("%s: runs spend %g, want at most 2·alpha = %g", tt.name, spent, 2*alpha)
		}
		if spent < 1.99*alpha {
			t.Errorf("%s: runs spend %g, want about 2·alpha = %g (budget left unused)", tt.name, spent, 2*alpha)
		}
	}
	front := d.th
	front.front = true
	if got, even := front.runBound(1), d.th.runBound(1); got >= even {
		t.Errorf("front-loaded run 1 threshold %g, want below the even split's %g", got, even)
	}
}

// TestEvidenceOfATestThatFellBack: a test that fired keeps firing, its evidence capped at its
// threshold, and its anomaly may be built after the evidence fell back (a latency test waits for
// the quantile to move). The note then says the evidence crossed the threshold and where it
// stands, not that it crossed from below, and the p-value is the crossing's.
func TestEvidenceOfATestThatFellBack(t *testing.T) {
	d := New(DefaultConfig())
	rp := d.errorParams(d.base, 20, 1000) // 2 %
	var rt rateTest
	b := int64(0)
	for ; !rt.firing; b++ {
		if b > 100 {
			t.Fatal("20 % errors against a 2 % baseline never fired")
		}
		rt.updateBaseline(&rp, 4, 20, b, &d.th)
	}
	score, p, note := rt.evidence(&d.th)
	if score < rt.bound || !strings.Contains(note, fmt.Sprintf("log likelihood ratio %.2f crossed %.2f", score, rt.bound)) {
		t.Errorf("at the crossing: score %.2f, bound %.2f, note %q", score, rt.bound, note)
	}
	want := math.Exp(-(score - (rt.bound - d.th.upper)))
	if math.Abs(*p-want) > 1e-12 {
		t.Errorf("at the crossing: p %g, want %g", *p, want)
	}
	rt.updateBaseline(&rp, 0, 20, b, &d.th) // healthy: the evidence falls, the test still fires
	if !rt.firing {
		t.Fatal("one healthy bucket recovered the test")
	}
	score, p, note = rt.evidence(&d.th)
	if score >= rt.bound {
		t.Fatalf("score %.2f after a healthy bucket, bound %.2f: want it below", score, rt.bound)
	}
	if strings.Contains(note, fmt.Sprintf("%.2f crossed", score)) ||
		!strings.Contains(note, fmt.Sprintf("crossed %.2f", rt.bound)) || !strings.Contains(note, fmt.Sprintf("stands at %.2f now", score)) {
		t.Errorf("after falling back: note %q", note)
	}
	if want := math.Exp(-d.th.upper); math.Abs(*p-want) > 1e-12 {
		t.Errorf("after falling back: p %g, want the crossing's %g", *p, want)
	}
}

// TestDeployLongFindsWhatRunsMiss: an error rate ×1.5 (the minimum effect) over a baseline of
// 9 000 requests at 2 % is found within the hour by most deploys with the deploy-long test, and
// by far fewer without it, whose later runs test against H0's rate pooled with the regressed
// version's own. The test fires only on its own evidence: its episode stays open while that
// evidence holds, however the runs' evidence moves.
func TestDeployLongFindsWhatRunsMiss(t *testing.T) {
	d := New(DefaultConfig())
	deploys := 40
	if raceEnabled {
		deploys = 8
	}
	found := map[bool]int{}
	for _, long := range []bool{false, true} {
		th := d.errorThresholds(&reference{})
		th.deployLong = long
		for seed := range uint64(deploys) {
			rng := rand.New(rand.NewPCG(seed, 11))
			xb, nb := bucketDraw(rng, 9000, 0.02)
			rp := d.errorParams(d.base, xb, nb)
			var rt rateTest
			fired, longFrom := false, -1
			for b := range 3600 {
				x, n := bucketDraw(rng, 20, 0.03)
				v := rt.updateBaseline(&rp, x, n, int64(b), &th)
				if v == verdictFired {
					fired = true
				}
				if v == verdictFired && rt.long {
					longFrom = b
				}
				if longFrom >= 0 && !rt.long {
					t.Fatalf("seed %d: the deploy-long episode that opened at bucket %d ended at %d while the regression went on", seed, longFrom, b)
				}
			}
			if fired {
				found[long]++
			}
		}
	}
	t.Logf("error ×1.5 found within the hour: %d of %d deploys without the deploy-long test, %d with it", found[false], deploys, found[true])
	if found[true] < deploys*8/10 || found[true] <= found[false] {
		t.Fatalf("error ×1.5 found within the hour in %d of %d deploys with the deploy-long test, %d without", found[true], deploys, found[false])
	}
}

// TestDeployLongFalseAlarms holds the deploy-long test alone to its share of alpha on healthy
// versions over an hour, each against a baseline drawn at the same rate: at alpha 0.1 its bound
// is log(1/0.01), and it fired about half as often as that allows in simulation.
func TestDeployLongFalseAlarms(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Alpha = 0.1
	d := New(cfg)
	deploys := 400
	if raceEnabled {
		deploys = 40
	}
	fired := 0
	for seed := range uint64(deploys) {
		rng := rand.New(rand.NewPCG(seed, 13))
		xb, nb := bucketDraw(rng, 9000, 0.02)
		rp := d.errorParams(d.base, xb, nb)
		th := d.errorThresholds(&reference{})
		var rt rateTest
		for b := range 3600 {
			x, n := bucketDraw(rng, 20, 0.02)
			rt.cx, rt.cn = rt.cx+x, rt.cn+n
			if rt.deployLong(&rp, verdictNone, int64(b), &th) == verdictFired {
				fired++
				break
			}
		}
	}
	t.Logf("deploy-long test at alpha 0.01: %d of %d healthy deploys fired within the hour", fired, deploys)
	if fired > deploys*3/100 {
		t.Fatalf("deploy-long test at alpha 0.01 fired in %d of %d healthy deploys", fired, deploys)
	}
}

// TestDeployLongAnomalySaysSo: an anomaly the deploy-long test opened says so, and its window and
// counts are every request since the new version's first.
func TestDeployLongAnomalySaysSo(t *testing.T) {
	if raceEnabled {
		t.Skip("an hour of traffic per seed is slow under the race detector")
	}
	for seed := range uint64(20) {
		bad := healthy("1.1.0", 3600, 20)
		bad.errRate = map[string]float64{"": 0.03} // ×1.5: the minimum effect
		events := genScenario(300+seed, healthy("1.0.0", 450, 20), bad)
		for _, a := range replay(DefaultConfig(), events, 256) {
			note := strings.Join(a.Evidence.Notes, "; ")
			if a.Metric != "error_rate" || !strings.Contains(note, "deploy-long") {
				continue
			}
			if !a.Window.From.Equal(t0.Add(450*time.Second)) && a.Window.From.After(t0.Add(451*time.Second)) {
				t.Errorf("seed %d: the window starts %s, not at the new version's first request", seed, a.Window.From)
			}
			if a.Samples.Observed < 20*60 || !strings.Contains(note, "for its share of alpha, a tenth") {
				t.Errorf("seed %d: %d requests observed; note %q", seed, a.Samples.Observed, note)
			}
			t.Logf("seed %d: %s", seed, note)
			return
		}
	}
	t.Fatal("no deploy-long anomaly in 20 deploys of error ×1.5")
}

// TestDeployLongEpisodeEnds: an episode the deploy-long test opened ends once the version's
// errors since its first request no longer stand out from the baseline: here it stops failing
// altogether, and the episode ends on the deploy-long evidence, within minutes.
func TestDeployLongEpisodeEnds(t *testing.T) {
	d := New(DefaultConfig())
	th := d.errorThresholds(&reference{})
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 11))
		xb, nb := bucketDraw(rng, 9000, 0.02)
		rp := d.errorParams(d.base, xb, nb)
		var rt rateTest
		b := 0
		for ; b < 3600 && !rt.long; b++ {
			x, n := bucketDraw(rng, 20, 0.03)
			rt.updateBaseline(&rp, x, n, int64(b), &th)
		}
		if !rt.long {
			continue // the runs found it, or nothing did: another seed
		}
		for end := b + 600; b < end; b++ {
			x, n := bucketDraw(rng, 20, 0)
			if rt.updateBaseline(&rp, x, n, int64(b), &th) == verdictRecovered {
				if rt.long || rt.firing {
					t.Fatalf("seed %d: recovered, yet still firing (deploy-long %v)", seed, rt.long)
				}
				return
			}
		}
		t.Fatalf("seed %d: the deploy-long episode did not end within 10 min of no errors", seed)
	}
	t.Fatal("no seed fired the deploy-long test")
}
