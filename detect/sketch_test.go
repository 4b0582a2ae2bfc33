package detect

import (
	"math"
	"testing"
)

// TestSketchWidensInsteadOfCollapsing: latencies that span more than a compact sketch holds (one
// 30 s timeout among 20 ms requests) widen it, so the 20 ms requests keep their value instead
// of collapsing into the lowest bin kept; the same holds when such a sketch is merged into a
// compact one, and when it is decoded. With sketch_max_bins at the compact size there is
// nothing to widen to, and the body collapses: what the default avoids.
func TestSketchWidensInsteadOfCollapsing(t *testing.T) {
	body := func(sks *sketches) float64 {
		sk := sks.new()
		for range 99 {
			sks.add(sk, 20, 1)
		}
		sks.add(sk, 30000, 1)
		v, err := sk.GetValueAtQuantile(0.5)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	wide, err := newSketches(0.025, DefaultConfig().SketchMaxBins)
	if err != nil {
		t.Fatal(err)
	}
	if v := body(wide); math.Abs(v-20)/20 > 0.03 {
		t.Errorf("median of 20 ms requests beside one 30 s timeout: %.4g ms", v)
	}
	compact, err := newSketches(0.025, compactBins)
	if err != nil {
		t.Fatal(err)
	}
	if v := body(compact); v < 40 {
		t.Errorf("a compact sketch read the median as %.4g ms: the test no longer shows the collapse", v)
	}

	// Merged into a compact sketch, and decoded into one.
	src := wide.new()
	for range 99 {
		wide.add(src, 20, 1)
	}
	wide.add(src, 30000, 1)
	dst := wide.new()
	wide.add(dst, 25, 1)
	wide.merge(dst, src)
	if v, _ := dst.GetValueAtQuantile(0.5); math.Abs(v-20)/20 > 0.03 {
		t.Errorf("after a merge the median is %.4g ms", v)
	}
	var enc []byte
	src.Encode(&enc, false)
	dec := wide.new()
	if err := wide.decodeChecked(dec, enc); err != nil {
		t.Fatal(err)
	}
	if v, _ := dec.GetValueAtQuantile(0.5); math.Abs(v-20)/20 > 0.03 {
		t.Errorf("after decoding the median is %.4g ms", v)
	}
	dm := wide.new()
	wide.decodeMerge(dm, enc)
	if v, _ := dm.GetValueAtQuantile(0.5); math.Abs(v-20)/20 > 0.03 {
		t.Errorf("after decodeMerge the median is %.4g ms", v)
	}
}
