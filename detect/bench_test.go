package detect

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// raceEnabled is set by race_test.go: heavy statistical tests shrink under the race detector.
var raceEnabled bool

// BenchmarkObserve measures the per-event cost, bucket closing and testing included (Advance
// runs once per simulated second, as the pipeline's batches would make it), with the tests firing
// within a bucket and only at its close.
func BenchmarkObserve(b *testing.B) {
	eachFiring(b, benchmarkObserve)
}

// eachFiring runs bench with the tests firing within a bucket and only at its close.
func eachFiring(b *testing.B, bench func(*testing.B, Config)) {
	for _, within := range []bool{true, false} {
		name := "within"
		if !within {
			name = "at_close"
		}
		b.Run(name, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.FireWithinBucket = within
			bench(b, cfg)
		})
	}
}

func benchmarkObserve(b *testing.B, cfg Config) {
	events := genScenario(9, healthy("1.0.0", 120, 200), healthy("1.1.0", 120, 200))
	d := New(cfg)
	b.ReportAllocs()
	b.ResetTimer()
	off := time.Duration(0)
	span := events[len(events)-1].TS.Sub(events[0].TS) + time.Second
	for i := 0; i < b.N; i++ {
		k := i % len(events)
		if k == 0 && i > 0 {
			off += span
		}
		e := events[k]
		e.TS = e.TS.Add(off)
		d.Observe(&e)
		if k%200 == 0 {
			d.Advance(d.Watermark())
		}
	}
}

// BenchmarkObserveSparse measures the per-event cost where series are many and sparse: 500
// components of three blocks, 2 requests a second each, a new version after five minutes. Work
// done per series and bucket (closing it, reading p50 and p90 as it ends) weighs most here.
func BenchmarkObserveSparse(b *testing.B) {
	eachFiring(b, benchmarkObserveSparse)
}

func benchmarkObserveSparse(b *testing.B, cfg Config) {
	const comps = 500
	rng := rand.New(rand.NewPCG(5, 6))
	blocks := [...]string{"a", "b", "c"}
	names := make([]string, comps)
	for i := range names {
		names[i] = fmt.Sprintf("comp-%d", i)
	}
	d := New(cfg)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	step := time.Second / (2 * comps) // 2 req/s per component, evenly spread
	lat := 0.0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lat = 20 * math.Exp(0.3*rng.NormFloat64())
		ev := schemas.TelemetryEvent{
			TS: t0.Add(time.Duration(i) * step), Service: "svc", Component: names[i%comps],
			Block: blocks[(i/comps)%3], Version: "1", LatencyMS: &lat,
		}
		if time.Duration(i)*step > 5*time.Minute {
			ev.Version = "2"
		}
		if rng.Float64() < 0.02 {
			ev.Error = schemas.ErrException
		}
		d.Observe(&ev)
		if i%1000 == 0 {
			d.Advance(d.Watermark())
		}
	}
}

// BenchmarkFreeze measures freezing a new version's baseline (reference.freeze, once per series a
// deploy changes) while the detector tracks other services' series: the deploy's share of Alpha
// is counted over its own version's series only, so the cost must not grow with the others.
func BenchmarkFreeze(b *testing.B) {
	for _, others := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("others=%d", others), func(b *testing.B) {
			d, src := freezeWorkload(others)
			bk := src.lastB + 1
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if r := d.freeze(src, refPreviousVersion, bk); !r.ok || r.familyN != 20 {
					b.Fatalf("reference ok %v over %d series, want a conclusive one over 20", r.ok, r.familyN)
				}
			}
		})
	}
}

// freezeWorkload is a detector that tracks a service of 20 components, 300 requests each, and
// others services of one request each; it returns the first component's series.
func freezeWorkload(others int) (*Detector, *series) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := New(DefaultConfig())
	lat := 20.0
	for i := range 300 {
		for c := range 20 {
			e := schemas.TelemetryEvent{TS: t0.Add(time.Duration(i) * 100 * time.Millisecond), Service: "svc",
				Component: "c" + strconv.Itoa(c), Version: "1", LatencyMS: &lat}
			d.Observe(&e)
		}
	}
	for o := range others {
		e := schemas.TelemetryEvent{TS: t0.Add(30 * time.Second), Service: "other-" + strconv.Itoa(o),
			Component: "c", Version: "1", LatencyMS: &lat}
		d.Observe(&e)
	}
	d.Advance(t0.Add(31 * time.Second))
	return d, d.series[SeriesKey{Service: "svc", Component: "c0", Version: "1"}]
}
