package detect

import (
	"errors"
	"math"

	enc "github.com/DataDog/sketches-go/ddsketch/encoding"
	"github.com/DataDog/sketches-go/ddsketch/pb/sketchpb"
	"github.com/DataDog/sketches-go/ddsketch/store"
)

// denseStore is the bin store of the detector's latency sketches. It behaves as sketches-go's
// CollapsingLowestDenseStore does, bin for bin and byte for byte when encoded
// (TestDenseStoreMatchesCollapsingLowest): contiguous float64 counts, the lowest bins collapsed
// into one when the latencies span more than maxBins. What differs is memory. The library's
// store allocates the bins its latencies span and 64 more, up to its bound, and its bound is
// what a series' sketches nearly always reach (128 bins, 1 KiB); this one allocates what they
// span and an eighth more (at least 8), and keeps its indices in 32 bits. A series holds two or
// three sketches in steady state, and their bins were the largest part of its memory.
type denseStore struct {
	bins      []float64
	count     float64
	offset    int32 // the index of bins[0]
	minIndex  int32 // valid while count > 0
	maxIndex  int32
	maxBins   int32
	collapsed bool
}

// Store indices are sketch bin indices of latencies, which the mapping keeps far inside 32 bits
// (about ±20 000 at the default accuracy); an index beyond is clamped to the extreme bin, as a
// bound store collapses.

func newDenseStore(maxBins int) *denseStore {
	return &denseStore{minIndex: math.MaxInt32, maxIndex: math.MinInt32, maxBins: int32(maxBins)}
}

func clampIndex(i int) int32 {
	return int32(max(math.MinInt32+1, min(i, math.MaxInt32-1)))
}

func (s *denseStore) Add(index int) { s.AddWithCount(index, 1) }

func (s *denseStore) AddBin(b store.Bin) {
	if b.Count() != 0 {
		s.AddWithCount(b.Index(), b.Count())
	}
}

func (s *denseStore) AddWithCount(index int, count float64) {
	if count == 0 {
		return
	}
	i := s.normalize(clampIndex(index))
	s.bins[i] += count
	s.count += count
}

// normalize makes room for index and returns its position in bins.
func (s *denseStore) normalize(index int32) int32 {
	if index < s.minIndex {
		if s.collapsed {
			return s.minIndex - s.offset // below the collapsed range: counted in its lowest bin
		}
		s.extendRange(index, index)
		if s.collapsed && index < s.minIndex {
			return s.minIndex - s.offset
		}
	} else if index > s.maxIndex {
		s.extendRange(index, index)
	}
	return index - s.offset
}

// newLength is how many bins a store spanning lo..hi allocates: the span and an eighth more (at
// least 8), up to maxBins.
func (s *denseStore) newLength(lo, hi int32) int {
	want := int(hi) - int(lo) + 1
	return min(want+max(8, want/8), int(s.maxBins))
}

func (s *denseStore) extendRange(lo, hi int32) {
	lo, hi = min(lo, s.minIndex), max(hi, s.maxIndex)
	if s.count == 0 {
		n := s.newLength(lo, hi)
		if cap(s.bins) >= n {
			s.bins = s.bins[:n]
			clear(s.bins)
		} else {
			s.bins = make([]float64, n)
		}
		s.offset, s.minIndex, s.maxIndex = lo, lo, hi
		s.adjust(lo, hi)
		return
	}
	if lo >= s.offset && int(hi) < int(s.offset)+len(s.bins) {
		s.minIndex, s.maxIndex = lo, hi
		return
	}
	if n := s.newLength(lo, hi); n > len(s.bins) {
		grown := make([]float64, n)
		copy(grown[s.minIndex-s.offset:], s.bins[s.minIndex-s.offset:s.maxIndex-s.offset+1])
		s.bins = grown
	}
	s.adjust(lo, hi)
}

// adjust places lo..hi in bins without resizing them, collapsing the lowest bins when the range
// is wider than bins.
func (s *denseStore) adjust(lo, hi int32) {
	if int(hi)-int(lo)+1 <= len(s.bins) {
		s.center(lo, hi)
		return
	}
	lo = hi - int32(len(s.bins)) + 1
	if lo >= s.maxIndex {
		// Only one bin keeps anything.
		clear(s.bins)
		s.offset, s.minIndex = lo, lo
		s.bins[0] = s.count
	} else {
		shift := s.offset - lo
		if shift < 0 {
			var n float64
			for i := s.minIndex; i < lo; i++ {
				n += s.bins[i-s.offset]
			}
			s.resetBins(s.minIndex, lo-1)
			s.bins[lo-s.offset] += n
			s.minIndex = lo
			s.shiftCounts(shift)
		} else {
			s.shiftCounts(shift)
			s.minIndex = lo
		}
	}
	s.maxIndex = hi
	s.collapsed = true
}

func (s *denseStore) center(lo, hi int32) {
	mid := lo + (hi-lo+1)/2
	s.shiftCounts(s.offset + int32(len(s.bins)/2) - mid)
	s.minIndex, s.maxIndex = lo, hi
}

func (s *denseStore) shiftCounts(shift int32) {
	if shift == 0 {
		return
	}
	from, to := s.minIndex-s.offset, s.maxIndex-s.offset
	copy(s.bins[from+shift:], s.bins[from:to+1])
	if shift > 0 {
		s.resetBins(s.minIndex, s.minIndex+shift-1)
	} else {
		s.resetBins(s.maxIndex+shift+1, s.maxIndex)
	}
	s.offset -= shift
}

func (s *denseStore) resetBins(from, to int32) {
	if from > to {
		return
	}
	clear(s.bins[from-s.offset : to-s.offset+1])
}

func (s *denseStore) IsEmpty() bool { return s.count == 0 }

func (s *denseStore) TotalCount() float64 { return s.count }

func (s *denseStore) MinIndex() (int, error) {
	if s.count == 0 {
		return 0, errEmptyStore
	}
	return int(s.minIndex), nil
}

func (s *denseStore) MaxIndex() (int, error) {
	if s.count == 0 {
		return 0, errEmptyStore
	}
	return int(s.maxIndex), nil
}

var errEmptyStore = errors.New("empty store has no min or max index")

// KeyAtRank is the index of the bin that holds the request of the given rank (0 the lowest).
func (s *denseStore) KeyAtRank(rank float64) int {
	if s.count == 0 {
		return int(s.maxIndex)
	}
	rank = max(rank, 0)
	var n float64
	for i, c := range s.span() {
		if n += c; n > rank {
			return int(s.minIndex) + i
		}
	}
	return int(s.maxIndex)
}

// span is the bins from minIndex to maxIndex (nil when empty).
func (s *denseStore) span() []float64 {
	if s.count == 0 {
		return nil
	}
	return s.bins[s.minIndex-s.offset : s.maxIndex-s.offset+1]
}

func (s *denseStore) MergeWith(other store.Store) {
	if other.IsEmpty() {
		return
	}
	o, ok := other.(*denseStore)
	if !ok {
		other.ForEach(func(index int, count float64) bool {
			s.AddWithCount(index, count)
			return false
		})
		return
	}
	if o.minIndex < s.minIndex || o.maxIndex > s.maxIndex {
		s.extendRange(o.minIndex, o.maxIndex)
	}
	idx := o.minIndex
	for ; idx < s.minIndex && idx <= o.maxIndex; idx++ {
		s.bins[s.minIndex-s.offset] += o.bins[idx-o.offset] // collapsed into the lowest bin
	}
	for ; idx <= o.maxIndex; idx++ {
		s.bins[idx-s.offset] += o.bins[idx-o.offset]
	}
	s.count += o.count
}

func (s *denseStore) Bins() <-chan store.Bin {
	ch := make(chan store.Bin)
	go func() {
		defer close(ch)
		s.ForEach(func(index int, count float64) bool {
			b, _ := store.NewBin(index, count) // counts in a store are positive
			ch <- *b
			return false
		})
	}()
	return ch
}

func (s *denseStore) ForEach(f func(index int, count float64) (stop bool)) {
	for i, c := range s.span() {
		if c > 0 && f(int(s.minIndex)+i, c) {
			return
		}
	}
}

// Copy holds exactly the bins the store spans.
func (s *denseStore) Copy() store.Store {
	c := *s
	c.bins = nil
	if sp := s.span(); sp != nil {
		c.bins = append([]float64(nil), sp...)
		c.offset = s.minIndex
	}
	return &c
}

// Clear empties the store and keeps its bins for reuse (a pooled bucket sketch).
func (s *denseStore) Clear() {
	s.bins = s.bins[:0]
	s.count = 0
	s.minIndex, s.maxIndex = math.MaxInt32, math.MinInt32
	s.collapsed = false
}

func (s *denseStore) ToProto() *sketchpb.Store {
	if s.count == 0 {
		return &sketchpb.Store{}
	}
	return &sketchpb.Store{
		ContiguousBinCounts:      append([]float64(nil), s.span()...),
		ContiguousBinIndexOffset: s.minIndex,
	}
}

func (s *denseStore) EncodeProto(b *sketchpb.StoreBuilder) {
	if s.count == 0 {
		return
	}
	for _, c := range s.span() {
		b.AddContiguousBinCounts(c)
	}
	b.SetContiguousBinIndexOffset(s.minIndex)
}

func (s *denseStore) Reweight(w float64) error {
	if w <= 0 {
		return errors.New("can't reweight by a negative factor")
	}
	if w == 1 || s.count == 0 {
		return nil
	}
	s.count *= w
	sp := s.span()
	for i := range sp {
		sp[i] *= w
	}
	return nil
}

// Encode writes the bins as the library's dense stores do: contiguous counts, or index deltas
// and counts when that is shorter.
func (s *denseStore) Encode(b *[]byte, t enc.FlagType) {
	if s.count == 0 {
		return
	}
	sp := s.span()
	numBins := uint64(len(sp))
	dense := enc.Uvarint64Size(numBins) + enc.Varint64Size(int64(s.minIndex)) + enc.Varint64Size(1)
	sparse, nonEmpty, prev := 0, uint64(0), int(s.minIndex)
	for i, c := range sp {
		size := enc.Varfloat64Size(c)
		dense += size
		if c != 0 {
			nonEmpty++
			sparse += enc.Varint64Size(int64(int(s.minIndex)+i-prev)) + size
			prev = int(s.minIndex) + i
		}
	}
	sparse += enc.Uvarint64Size(nonEmpty)
	if dense <= sparse {
		enc.EncodeFlag(b, enc.NewFlag(t, enc.BinEncodingContiguousCounts))
		enc.EncodeUvarint64(b, numBins)
		enc.EncodeVarint64(b, int64(s.minIndex))
		enc.EncodeVarint64(b, 1)
		for _, c := range sp {
			enc.EncodeVarfloat64(b, c)
		}
		return
	}
	enc.EncodeFlag(b, enc.NewFlag(t, enc.BinEncodingIndexDeltasAndCounts))
	enc.EncodeUvarint64(b, nonEmpty)
	prev = 0
	for i, c := range sp {
		if c != 0 {
			enc.EncodeVarint64(b, int64(int(s.minIndex)+i-prev))
			enc.EncodeVarfloat64(b, c)
			prev = int(s.minIndex) + i
		}
	}
}

func (s *denseStore) DecodeAndMergeWith(b *[]byte, mode enc.SubFlag) error {
	return store.DecodeAndMergeWith(s, b, mode)
}

var _ store.Store = (*denseStore)(nil)

// noNegatives is the negative-value store of every latency sketch: latencies are validated not
// negative before they reach a sketch (validLatency), and a snapshot that holds negative ones is
// refused (decodeChecked), so it never holds anything, and one value serves every sketch without
// an allocation. A negative latency that got past both would be dropped, not counted.
type noNegatives struct{}

func (noNegatives) Add(int)                            {}
func (noNegatives) AddBin(store.Bin)                   {}
func (noNegatives) AddWithCount(int, float64)          {}
func (noNegatives) ForEach(func(int, float64) bool)    {}
func (n noNegatives) Copy() store.Store                { return n }
func (noNegatives) Clear()                             {}
func (noNegatives) IsEmpty() bool                      { return true }
func (noNegatives) MaxIndex() (int, error)             { return 0, errEmptyStore }
func (noNegatives) MinIndex() (int, error)             { return 0, errEmptyStore }
func (noNegatives) TotalCount() float64                { return 0 }
func (noNegatives) KeyAtRank(float64) int              { return 0 }
func (noNegatives) MergeWith(store.Store)              {}
func (noNegatives) ToProto() *sketchpb.Store           { return &sketchpb.Store{} }
func (noNegatives) EncodeProto(*sketchpb.StoreBuilder) {}
func (noNegatives) Reweight(float64) error             { return nil }
func (noNegatives) Encode(*[]byte, enc.FlagType)       {}
func (noNegatives) DecodeAndMergeWith(b *[]byte, mode enc.SubFlag) error {
	return store.DecodeAndMergeWith(noNegatives{}, b, mode) // read past the bins, keep none
}

func (noNegatives) Bins() <-chan store.Bin {
	ch := make(chan store.Bin)
	close(ch)
	return ch
}

var _ store.Store = noNegatives{}
