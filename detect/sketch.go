package detect

import (
	"fmt"
	"math"
	"sort"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"

	"github.com/scalpel-dev/scalpel/schemas"
)

// sketches builds the latency DDSketches of one detector. All of them share one index mapping, so
// any two can be merged and compared bin by bin (Mann-Whitney works on the bins directly).
type sketches struct {
	m          mapping.IndexMapping
	maxBins    int
	logGamma   float64 // log of the ratio between consecutive bins' values
	minV, maxV float64 // the mapping's lowest and highest indexable values
}

func newSketches(relativeAccuracy float64, maxBins int) (*sketches, error) {
	m, err := mapping.NewLogarithmicMapping(relativeAccuracy)
	if err != nil {
		return nil, fmt.Errorf("latency sketch mapping: %w", err)
	}
	return &sketches{m: m, maxBins: maxBins, logGamma: math.Log(m.Value(1) / m.Value(0)),
		minV: m.MinIndexableValue(), maxV: m.MaxIndexableValue()}, nil
}

// compactBins is how many bins a sketch holds before it is widened (see widen): enough for the
// latencies of most series (a ratio of ~600 at the default accuracy, 0.5 ms to 300 ms), and
// what keeps a series' sketches small. A store allocates the bins it spans and an eighth more
// for growth, up to its bound (denseStore).
const compactBins = 128

// new returns an empty sketch, bounded at compactBins until latencies span further (see add).
func (s *sketches) new() *ddsketch.DDSketch {
	return s.bounded(min(compactBins, s.maxBins))
}

func (s *sketches) bounded(bins int) *ddsketch.DDSketch {
	return ddsketch.NewDDSketch(s.m, newDenseStore(bins), noNegatives{})
}

// A sketch's store collapses its lowest bins into one when its latencies span more bins than it
// holds, and every latency in them then reads as that bin's: as slow as the fastest one kept.
// One 30 s timeout among 20 ms requests did that to a compact sketch, and then all of its
// bucket's requests counted as above the baseline's p50, p90 and p99: with a heavy tail, a
// fifth of A/A deploys fired. So a sketch whose latencies are about to span more than compactBins is
// widened first, to maxBins (SketchMaxBins, enough for any real latencies), and only series
// whose latencies span that far pay for the bins.

// add adds latency v (valid: finite, not negative) with weight w (positive) to sk, as
// sk.AddWithCount does, widening it first if v would make it collapse. It indexes v once.
func (s *sketches) add(sk *ddsketch.DDSketch, v, w float64) {
	if !(v > s.minV) || v > s.maxV {
		_ = sk.AddWithCount(v, w) // the zero bin, or beyond the mapping (refused)
		return
	}
	i := s.m.Index(v)
	st := sk.GetPositiveValueStore()
	if first, err := st.MinIndex(); err == nil {
		if last, _ := st.MaxIndex(); i < first || i > last {
			s.fit(sk, i, i)
			st = sk.GetPositiveValueStore()
		}
	}
	st.AddWithCount(i, w)
}

// merge merges src into dst, widening dst first if src's latencies would make it collapse.
func (s *sketches) merge(dst, src *ddsketch.DDSketch) {
	st := src.GetPositiveValueStore()
	if lo, err := st.MinIndex(); err == nil {
		hi, _ := st.MaxIndex()
		s.fit(dst, lo, hi)
	}
	_ = dst.MergeWith(src) // one mapping for all sketches: cannot fail
}

// decodeMerge merges a sketch encoded by this detector into dst, as merge does.
func (s *sketches) decodeMerge(dst *ddsketch.DDSketch, b []byte) {
	tmp := s.bounded(s.maxBins)
	_ = tmp.DecodeAndMergeWith(b) // its own encoding, same mapping: cannot fail
	s.merge(dst, tmp)
}

// fit widens sk if bins lo to hi would take its store beyond compactBins. A store that spans
// more than that has been widened already (a compact one never does).
func (s *sketches) fit(sk *ddsketch.DDSketch, lo, hi int) {
	if s.maxBins <= compactBins {
		return // nothing to widen to
	}
	st := sk.GetPositiveValueStore()
	if first, err := st.MinIndex(); err == nil {
		last, _ := st.MaxIndex()
		if lo >= first && hi <= last || last-first >= compactBins {
			return
		}
		lo, hi = min(lo, first), max(hi, last)
	}
	if hi-lo >= compactBins {
		s.widen(sk)
	}
}

// widen rebuilds sk with a store of maxBins, holding what it held.
func (s *sketches) widen(sk *ddsketch.DDSketch) {
	wide := s.bounded(s.maxBins)
	_ = wide.MergeWith(sk) // one mapping for all sketches: cannot fail
	*sk = *wide
}

// threshold is a latency boundary expressed both as a bin index (for sketch arithmetic) and as the
// smallest value that falls above it (for the per-event comparison, which must stay a single
// float comparison).
type threshold struct {
	index int
	above float64 // values >= above exceed the threshold
}

func (s *sketches) thresholdAt(v float64) threshold {
	if v <= s.m.MinIndexableValue() {
		v = s.m.MinIndexableValue()
	}
	i := s.m.Index(v)
	return threshold{index: i, above: s.m.LowerBound(i + 1)}
}

// fractionAbove returns the fraction of the sketch's weight in bins above index.
func fractionAbove(sk *ddsketch.DDSketch, index int) float64 {
	total := sk.GetCount()
	if total == 0 {
		return 0
	}
	var above float64
	lo, counts := positiveBins(sk)
	for k, c := range counts {
		if c > 0 && lo+k > index {
			above += c
		}
	}
	return above / total
}

// positiveBins is the sketch's store of positive latencies as the counts of its bins from
// index lo on, empty ones included: a pass over them with no callback (the store's ForEach
// takes one through an interface, and what it captures goes to the heap). Every sketch of the
// detector holds a denseStore (sketches.bounded).
func positiveBins(sk *ddsketch.DDSketch) (lo int, counts []float64) {
	st := sk.GetPositiveValueStore().(*denseStore)
	return int(st.minIndex), st.span()
}

// bin is one non-empty sketch bin; zero latencies get index math.MinInt.
type bin struct {
	index int
	count float64
}

// bins lists a sketch's non-empty bins in ascending order.
func bins(sk *ddsketch.DDSketch) []bin {
	var out []bin
	if z := sk.GetZeroCount(); z > 0 {
		out = append(out, bin{index: math.MinInt, count: z})
	}
	sk.GetPositiveValueStore().ForEach(func(i int, c float64) bool {
		if c > 0 {
			out = append(out, bin{index: i, count: c})
		}
		return false
	})
	sort.Slice(out, func(a, b int) bool { return out[a].index < out[b].index })
	return out
}

// latencyPoint is a latency with the number of requests it stands for.
type latencyPoint struct {
	v, w float64
}

// summaryFractions are the cumulative fractions of requests at or below each summary quantile.
var summaryFractions = [4]float64{0.5, 0.9, 0.99, 1}

// latencyPoints turns an event's latency into weighted points, returning how many it filled.
//
// A single request is one point of weight 1. An aggregate with a summary is approximated by
// putting each quantile's share of the requests at that quantile: half at p50, 40 % at p90, 9 % at
// p99 and 1 % at max; a missing quantile's share goes to the next one present. This overstates
// latencies below each quantile, the same way on both sides of a comparison, and keeps the tail
// exact. An aggregate with only Sum or a mean LatencyMS puts all its requests at the mean.
func latencyPoints(ev *schemas.TelemetryEvent, out *[4]latencyPoint) int {
	n := float64(ev.Requests())
	if ls := ev.Latency; ls != nil && n > 1 {
		vals := [4]float64{ls.P50, ls.P90, ls.P99, ls.Max}
		k, prev := 0, 0.0
		for i, v := range vals {
			if !validLatency(v) || v == 0 {
				continue
			}
			out[k] = latencyPoint{v: v, w: n * (summaryFractions[i] - prev)}
			prev = summaryFractions[i]
			k++
		}
		if k > 0 {
			out[k-1].w += n * (1 - prev) // the share above the last quantile present
			return k
		}
		if validLatency(ls.Sum) && ls.Sum > 0 {
			out[0] = latencyPoint{v: ls.Sum / n, w: n}
			return 1
		}
	}
	if ev.LatencyMS != nil && validLatency(*ev.LatencyMS) {
		out[0] = latencyPoint{v: *ev.LatencyMS, w: n}
		return 1
	}
	return 0
}

func validLatency(v float64) bool {
	return v >= 0 && !math.IsInf(v, 0) && !math.IsNaN(v)
}

// aboveEach counts the sketch's weight above each of the first n thresholds, each raised by
// shift bins (a bucket's load, loadShift), in one pass over its bins: out[q] is exactly what
// fractionAbove(sk, thr[q].index+shift)·count gives (the same sums in the same order), as the
// bucket's close computes it.
func aboveEach(sk *ddsketch.DDSketch, thr *[maxQuantiles]threshold, n, shift int, out *[maxQuantiles]float64) {
	aboveEachExcess(sk, thr, n, shift, out, nil, 0)
}

// excessCounts is, per tested quantile, what a test of the excess reads of a bucket besides its
// count above the threshold (see excessCount).
type excessCounts [maxQuantiles]excessCount

// aboveEachExcess is aboveEach that also sums, into ex if not nil, each exceedance's offset
// above its threshold, capped at capBins (see excessCounts), in the same pass.
func aboveEachExcess(sk *ddsketch.DDSketch, thr *[maxQuantiles]threshold, n, shift int, out *[maxQuantiles]float64, ex *excessCounts, capBins int) {
	total := sk.GetCount()
	*out = [maxQuantiles]float64{}
	if ex != nil {
		*ex = excessCounts{}
	}
	if total == 0 {
		return
	}
	idx := [maxQuantiles]int{}
	for q := range n {
		idx[q] = thr[q].index + shift
	}
	lo, counts := positiveBins(sk)
	for k, c := range counts {
		if c == 0 {
			continue
		}
		i := lo + k
		for q := range n {
			if i <= idx[q] {
				continue
			}
			out[q] += c
			if ex != nil {
				off := i - idx[q] - 1
				if off >= capBins {
					off = capBins
					ex[q].far += c
				}
				ex[q].m += c * float64(off)
			}
		}
	}
	for q := range n {
		out[q] = out[q] / total * total // as fractionAbove(...)·count gives it
	}
}
