package detect

import (
	"math"

	"github.com/DataDog/sketches-go/ddsketch"
)

// shiftTest is a Mann-Whitney U test of "observed latencies are stochastically larger than the
// baseline's", with the Hodges-Lehmann estimate of the shift and its confidence interval, as
// Kayenta's canary judge does. Both sides come from DDSketches with the same mapping, so ranks are
// computed on bins: values within one bin are ties (a bin is SketchRelativeAccuracy wide), and the
// shift is estimated on the log scale and reported as a ratio (1.3 = +30 %), which is what a
// latency regression looks like.
type shiftTest struct {
	U, Z, P          float64 // U of the observed side, its z-score, one-sided p-value
	Ratio            float64 // Hodges-Lehmann estimate of observed/baseline
	RatioLo, RatioHi float64 // 95 % confidence interval of the ratio
	N, M             float64 // observed and baseline sample sizes
}

// z975 is the standard normal quantile of the two-sided 95 % interval.
const z975 = 1.959963984540054

// mannWhitney compares obs with base. It costs O(bins²) and runs only when an anomaly is raised,
// never per event.
func (s *sketches) mannWhitney(obs, base *ddsketch.DDSketch) (shiftTest, bool) {
	a, b := bins(obs), bins(base)
	if len(a) == 0 || len(b) == 0 {
		return shiftTest{}, false
	}
	var r shiftTest
	for _, x := range a {
		r.N += x.count
	}
	for _, x := range b {
		r.M += x.count
	}
	// U counts pairs where the observed value is larger, ties counting one half; the tie
	// correction of the variance sums t³-t over groups of equal bins.
	var below, tieSum float64
	j := 0
	for _, x := range a {
		for j < len(b) && b[j].index < x.index {
			below += b[j].count
			tieSum += cube(b[j].count)
			j++
		}
		same := 0.0
		if j < len(b) && b[j].index == x.index {
			same = b[j].count
		}
		r.U += x.count * (below + same/2)
		tieSum += cube(x.count + same)
		if same > 0 {
			j++
			below += same
		}
	}
	for ; j < len(b); j++ {
		tieSum += cube(b[j].count)
	}
	n, m := r.N, r.M
	total := n + m
	variance := 0.0
	if total > 1 {
		variance = n * m / 12 * ((total + 1) - tieSum/(total*(total-1)))
	}
	if total > 1 && variance > 0 {
		r.Z = (r.U - n*m/2) / math.Sqrt(variance)
	}
	r.P = 0.5 * math.Erfc(r.Z/math.Sqrt2)

	// Hodges-Lehmann: the weighted median of all pairwise differences of bin indices; the
	// confidence interval takes the differences at the ranks the U distribution gives.
	lowest := math.MaxInt
	for _, l := range [][]bin{a, b} {
		for _, x := range l {
			if x.index != math.MinInt && x.index < lowest {
				lowest = x.index
			}
		}
	}
	fix := func(i int) int {
		if i == math.MinInt {
			return lowest - 1 // zero latencies sit just below the lowest bin
		}
		return i
	}
	lo := fix(a[0].index) - fix(b[len(b)-1].index)
	hi := fix(a[len(a)-1].index) - fix(b[0].index)
	diff := make([]float64, hi-lo+1)
	for _, x := range a {
		for _, y := range b {
			diff[fix(x.index)-fix(y.index)-lo] += x.count * y.count
		}
	}
	pairs := n * m
	ca := pairs/2 - z975*math.Sqrt(pairs*(total+1)/12)
	at := func(rank float64) float64 {
		cum := 0.0
		for d, w := range diff {
			cum += w
			if cum >= rank {
				return math.Exp(float64(d+lo) * s.logGamma)
			}
		}
		return math.Exp(float64(hi) * s.logGamma)
	}
	r.Ratio = at(pairs / 2)
	r.RatioLo = at(math.Max(ca, 0))
	r.RatioHi = at(math.Min(pairs-ca, pairs))
	return r, true
}

func cube(t float64) float64 { return t*t*t - t }
