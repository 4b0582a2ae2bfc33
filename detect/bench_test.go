package detect

import (
	"testing"
	"time"
)

// raceEnabled is set by race_test.go: heavy statistical tests shrink under the race detector.
var raceEnabled bool

// BenchmarkObserve measures the per-event cost, bucket closing and testing included (Advance
// runs once per simulated second, as the pipeline's batches would make it), with the tests firing
// within a bucket and only at its close.
func BenchmarkObserve(b *testing.B) {
	for _, within := range []bool{true, false} {
		name := "within"
		if !within {
			name = "at_close"
		}
		b.Run(name, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.FireWithinBucket = within
			benchmarkObserve(b, cfg)
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
