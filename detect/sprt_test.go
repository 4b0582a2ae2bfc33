package detect

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
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
// while an error x5 is still caught within seconds.
func TestBaselineTestLongWatch(t *testing.T) {
	d := New(DefaultConfig())
	rp := d.errorParams(80, 5000)
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
				if rt.updateBaseline(&rp, x, n, int64(b), &d.th) == verdictFired {
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
	rp := d.errorParams(0, 10000)
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
	rp := d.errorParams(20, 1000) // 2 %
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
