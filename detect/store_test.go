package detect

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/DataDog/sketches-go/ddsketch"

	enc "github.com/DataDog/sketches-go/ddsketch/encoding"
	"github.com/DataDog/sketches-go/ddsketch/store"
)

// TestDenseStoreMatchesCollapsingLowest: random adds, merges, copies, clears and reweights give
// denseStore and sketches-go's CollapsingLowestDenseStore the same bins, counts, ranks and
// encodings, collapsing included (bounds small enough that the random ranges outgrow them).
func TestDenseStoreMatchesCollapsingLowest(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 7))
		bound := []int{4, 16, 128, 1024}[seed%4]
		spread := []int{3, 20, 200, 3000}[rng.IntN(4)]
		center := rng.IntN(400) - 200
		idx := func() int { return center + rng.IntN(2*spread+1) - spread }
		type pair struct {
			lib  store.Store
			ours store.Store
		}
		fresh := func() pair {
			return pair{store.NewCollapsingLowestDenseStore(bound), newDenseStore(bound)}
		}
		stores := []pair{fresh(), fresh()}
		for step := range 400 {
			p := &stores[rng.IntN(len(stores))]
			switch op := rng.IntN(20); {
			case op < 12:
				i, c := idx(), float64(1+rng.IntN(3))
				if rng.IntN(4) == 0 {
					c = rng.Float64() * 5
				}
				p.lib.AddWithCount(i, c)
				p.ours.AddWithCount(i, c)
			case op < 14:
				o := &stores[rng.IntN(len(stores))]
				p.lib.MergeWith(o.lib.Copy())
				p.ours.MergeWith(o.ours.Copy())
			case op < 16:
				stores = append(stores, pair{p.lib.Copy(), p.ours.Copy()})
			case op < 17:
				p.lib.Clear()
				p.ours.Clear()
			case op < 18:
				w := 0.5 + rng.Float64()
				_ = p.lib.Reweight(w)
				_ = p.ours.Reweight(w)
			default:
				var b1, b2 []byte
				p.lib.Encode(&b1, enc.FlagTypePositiveStore)
				p.ours.Encode(&b2, enc.FlagTypePositiveStore)
				if !bytes.Equal(b1, b2) {
					t.Fatalf("seed %d step %d: encodings differ", seed, step)
				}
				q := fresh()
				for _, s := range []store.Store{q.lib, q.ours} {
					if len(b1) == 0 {
						break // an empty store writes nothing
					}
					b := slices.Clone(b1)
					flag, err := enc.DecodeFlag(&b)
					if err != nil {
						t.Fatal(err)
					}
					if err := s.DecodeAndMergeWith(&b, flag.SubFlag()); err != nil {
						t.Fatal(err)
					}
				}
				stores = append(stores, q)
			}
			for k := range stores {
				sameStore(t, seed, step, stores[k].lib, stores[k].ours)
			}
		}
	}
}

func sameStore(t *testing.T, seed uint64, step int, lib, ours store.Store) {
	t.Helper()
	type bin struct {
		i int
		c float64
	}
	var a, b []bin
	lib.ForEach(func(i int, c float64) bool { a = append(a, bin{i, c}); return false })
	ours.ForEach(func(i int, c float64) bool { b = append(b, bin{i, c}); return false })
	if !slices.Equal(a, b) || lib.TotalCount() != ours.TotalCount() || lib.IsEmpty() != ours.IsEmpty() {
		t.Fatalf("seed %d step %d: bins %v (count %g), want %v (count %g)", seed, step, b, ours.TotalCount(), a, lib.TotalCount())
	}
	if lib.IsEmpty() {
		return
	}
	lo1, _ := lib.MinIndex()
	lo2, _ := ours.MinIndex()
	hi1, _ := lib.MaxIndex()
	hi2, _ := ours.MaxIndex()
	if lo1 != lo2 || hi1 != hi2 {
		t.Fatalf("seed %d step %d: range %d..%d, want %d..%d", seed, step, lo2, hi2, lo1, hi1)
	}
	for _, r := range []float64{-1, 0, 0.5, lib.TotalCount() / 3, lib.TotalCount() - 1, lib.TotalCount() + 1} {
		if k1, k2 := lib.KeyAtRank(r), ours.KeyAtRank(r); k1 != k2 {
			t.Fatalf("seed %d step %d: key at rank %g is %d, want %d", seed, step, r, k2, k1)
		}
	}
}

// TestDenseStoreHoldsWhatItSpans: a store allocates the bins its latencies span and an eighth
// more, where the library's allocates 64 more up to its bound; a copy holds exactly its span.
func TestDenseStoreHoldsWhatItSpans(t *testing.T) {
	s := newDenseStore(compactBins)
	for i := 100; i < 180; i++ {
		s.Add(i)
	}
	if got := cap(s.bins); got > 80+80/8+8 {
		t.Errorf("80 bins spanned, %d allocated", got)
	}
	if c := s.Copy().(*denseStore); cap(c.bins) != 80 {
		t.Errorf("a copy of 80 bins holds %d", cap(c.bins))
	}
	s.Clear()
	s.Add(5)
	if cap(s.bins) < 80 {
		t.Errorf("a cleared store gave up its bins (%d left)", cap(s.bins))
	}
}

// TestDecodeRefusesNegativeLatencies: a snapshot's sketch that holds negative latencies is
// refused rather than read into a sketch whose negative store keeps nothing.
func TestDecodeRefusesNegativeLatencies(t *testing.T) {
	sks, err := newSketches(DefaultConfig().SketchRelativeAccuracy, DefaultConfig().SketchMaxBins)
	if err != nil {
		t.Fatal(err)
	}
	lib := ddsketch.NewDDSketch(sks.m, store.NewDenseStore(), store.NewDenseStore())
	for _, v := range []float64{12, 30, -4} {
		if err := lib.Add(v); err != nil {
			t.Fatal(err)
		}
	}
	var b []byte
	lib.Encode(&b, true)
	if err := sks.decodeChecked(sks.new(), b); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Fatalf("a sketch with a negative latency decoded (err %v)", err)
	}
	good := ddsketch.NewDDSketch(sks.m, store.NewDenseStore(), store.NewDenseStore())
	_ = good.Add(12)
	b = b[:0]
	good.Encode(&b, true)
	if err := sks.decodeChecked(sks.new(), b); err != nil {
		t.Fatal(err)
	}
}
