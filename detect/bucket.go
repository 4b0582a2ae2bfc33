package detect

import (
	"math"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"

	"github.com/scalpel-dev/scalpel/schemas"
)

// numCategories is the number of error categories (schemas.ErrorCategories).
const numCategories = 4

// categoryIndex maps an error category to its counter; unknown categories count as "other" so a
// producer's typo is still an error, just an unclassified one.
func categoryIndex(c string) int {
	switch c {
	case schemas.ErrTimeout:
		return 0
	case schemas.ErrException:
		return 1
	case schemas.ErrInvalidInput:
		return 2
	default:
		return 3
	}
}

// categoryInvalidInput is categoryIndex(schemas.ErrInvalidInput).
const categoryInvalidInput = 2

// bucket is what one series saw during one event-time bucket. Folding an event in is O(1). An
// open bucket holds its own latency sketch (and, for a component aggregate, block and site
// tallies), taken from the detector's pool and merged into the series' history when the bucket
// closes: everything a test or an anomaly reads is then a function of closed buckets only, so the
// output does not depend on when Advance happened to be called.
type bucket struct {
	idx    int64 // bucket number: event time / BucketWidth
	n      float64
	errs   [numCategories]float64
	latN   float64 // requests that carried a latency
	cpuSum float64
	memSum float64
	cpuN   uint32
	memN   uint32
	// loadSum and loadN add up the process_rps of the cpu samples that carried one: the load of
	// the whole process the cpu was measured at (see testResources).
	loadN   uint32
	loadSum float32

	sk     *ddsketch.DDSketch
	blocks map[string]blockTally
	sites  map[string]int64
	// used is what the tests that fired within the bucket have already counted of it (nil until
	// one does; see Detector.testWithinBucket and testLatencyWithinBucket).
	used *bucketUse
}

// bucketUse is what of a bucket the tests that fired within it have already counted: per error
// category its errors and requests, and for a canary's (paired) error test those of the baseline
// cohort's bucket of the same index; per latency quantile its requests with a latency and those
// above the quantile's and the body's thresholds; and how far its load raised those thresholds.
type bucketUse struct {
	errs, n       [numCategories]float64
	refErrs, refN [numCategories]float64
	lat           [maxQuantiles]latencyUse
	// latShift is how many sketch bins the bucket's latency thresholds rise at its load
	// (readShift): the latest reading of its count, and once a test has counted part of it the
	// most it was read at, so it then only rises while the bucket is open. Kept here, allocated
	// with the first shift, so a bucket at the usual load carries nothing.
	latShift int32
}

// latencyUse is a tail latency test's count of a bucket: n requests with a latency, x above the
// quantile's threshold, xb above the body's.
type latencyUse struct {
	n, x, xb float64
	ex       excessCount // the x exceedances' offsets
}

// counted reports whether a latency test has counted part of the bucket (useLatency).
func (u *bucketUse) counted() bool {
	for i := range u.lat {
		if u.lat[i].n > 0 {
			return true
		}
	}
	return false
}

// unusedLatency is what latency test q has not counted yet of a bucket that now holds n requests
// with a latency, x above q's threshold and xb above the body's.
func (b *bucket) unusedLatency(q int, n, x, xb float64) (float64, float64, float64) {
	if b.used == nil {
		return n, x, xb
	}
	u := b.used.lat[q]
	// Counts from a sketch's bins, divided and multiplied back: a bucket that gained nothing may
	// differ from what was counted in the last bits.
	return math.Max(n-u.n, 0), math.Max(x-u.x, 0), math.Max(xb-u.xb, 0)
}

// unusedExcess is what latency test q has not counted yet of the offsets of a bucket's
// exceedances, which now come to ec (see unusedLatency).
func (b *bucket) unusedExcess(q int, ec excessCount) excessCount {
	if b.used == nil {
		return ec
	}
	u := b.used.lat[q].ex
	return excessCount{m: math.Max(ec.m-u.m, 0), far: math.Max(ec.far-u.far, 0)}
}

// useLatency marks u as counted by latency test q.
func (b *bucket) useLatency(q int, u latencyUse) {
	if b.used == nil {
		b.used = new(bucketUse)
	}
	b.used.lat[q] = u
}

// unused is the errors of category c and the requests of the bucket that c's test has not
// counted yet.
func (b *bucket) unused(c int) (x, n float64) {
	if b.used == nil {
		return b.errs[c], b.n
	}
	return b.errs[c] - b.used.errs[c], b.n - b.used.n[c]
}

// use marks everything the bucket holds now as counted by c's test.
func (b *bucket) use(c int) {
	if b.used == nil {
		b.used = new(bucketUse)
	}
	b.used.errs[c], b.used.n[c] = b.errs[c], b.n
}

// unusedRef is the errors of category c and the requests of ref, the baseline cohort's bucket of
// the same index, that the canary's paired test of c has not counted yet. A cohort whose current
// version changed since the read counts from zero up.
func (b *bucket) unusedRef(c int, ref *bucket) (x, n float64) {
	if b.used == nil {
		return ref.errs[c], ref.n
	}
	return math.Max(ref.errs[c]-b.used.refErrs[c], 0), math.Max(ref.n-b.used.refN[c], 0)
}

// useRef marks everything ref, the baseline cohort's bucket of the same index, holds now as
// counted by the canary's paired test of c.
func (b *bucket) useRef(c int, ref *bucket) {
	if b.used == nil {
		b.used = new(bucketUse)
	}
	b.used.refErrs[c], b.used.refN[c] = ref.errs[c], ref.n
}

// bucketClock converts between event time and bucket numbers.
type bucketClock struct {
	width int64 // nanoseconds
}

// index returns the bucket holding t (floor division, so times before 1970 work too).
func (c bucketClock) index(t time.Time) int64 {
	ns := t.UnixNano()
	i := ns / c.width
	if ns%c.width < 0 {
		i--
	}
	return i
}

func (c bucketClock) start(i int64) time.Time { return time.Unix(0, i*c.width).UTC() }
func (c bucketClock) end(i int64) time.Time   { return time.Unix(0, (i+1)*c.width).UTC() }
