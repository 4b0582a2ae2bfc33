package detect

import (
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// BenchFigures runs a short deterministic workload (about a second) and returns the per-event
// cost of the detector (Observe plus its share of Advance, tests included) and the steady-state
// heap per tracked series. It is what `scalpel bench` prints; the Go benchmark BenchmarkObserve
// measures the same cost more precisely.
func BenchFigures() (nsPerEvent, bytesPerSeries float64) {
	return measureCost(200_000), MeasureMemoryPerSeries(1000)
}

// measureCost times n events of one component (three blocks, two versions, 200 req/s), with the
// own-profile warm-up shortened to 30 s so its tests are part of the cost.
func measureCost(n int) float64 {
	rng := rand.New(rand.NewPCG(1, 2))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	blocks := [...]string{"a", "b", "c"}
	evs := make([]schemas.TelemetryEvent, 4096)
	lats := make([]float64, len(evs))
	for i := range evs {
		lats[i] = 20 * math.Exp(0.3*rng.NormFloat64())
		evs[i] = schemas.TelemetryEvent{Service: "svc", Component: "comp", Block: blocks[i%3], Version: "1", LatencyMS: &lats[i]}
		if rng.Float64() < 0.02 {
			evs[i].Error = schemas.ErrException
		}
	}
	cfg := DefaultConfig()
	cfg.OwnProfileWarmup = schemas.Duration(30 * time.Second)
	d := New(cfg)
	start := time.Now() // benchmark timing only: detection itself never reads the clock
	for i := range n {
		e := evs[i%len(evs)]
		e.TS = t0.Add(time.Duration(i) * 5 * time.Millisecond)
		if i >= n/2 {
			e.Version = "2"
		}
		d.Observe(&e)
		if i%200 == 0 {
			d.Advance(d.Watermark())
		}
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

// MeasureMemoryPerSeries feeds n components (three blocks each, so 4n series) for
// HistoryMaxEpochs+1 epochs and a minute of event time (36 minutes by default) and returns the
// heap they hold, per series: a series in steady state, holding every completed epoch of history
// its traffic keeps besides the current one (at 1 req/s a block keeps older epochs until they
// hold Config.HistoryMinRequests, up to HistoryMaxEpochs, and only after that many epochs is
// it in steady state; eleven minutes, as this measured before, left two of them out). The
// own-profile warm-up is shortened to 30 s so the figure includes
// every series' own profile, as a long-running series holds one. The detector's free lists are
// bounded whatever the series count; at 4n series they add a few hundred bytes to the figure.
func MeasureMemoryPerSeries(n int) float64 {
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	d, names := memoryWorkload(n)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	per := (float64(after.HeapAlloc) - float64(before.HeapAlloc) - float64(n)*16) / float64(d.SeriesCount())
	runtime.KeepAlive(d)
	runtime.KeepAlive(names)
	return per
}

// memoryWorkload builds the detector MeasureMemoryPerSeries measures.
func memoryWorkload(n int) (*Detector, []string) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	blocks := [...]string{"a", "b", "c"}
	names := make([]string, n)
	for c := range names {
		names[c] = "c" + strconv.Itoa(c)
	}
	cfg := DefaultConfig()
	cfg.OwnProfileWarmup = schemas.Duration(30 * time.Second)
	d := New(cfg)
	secs := (cfg.HistoryMaxEpochs+1)*int(time.Duration(cfg.HistoryEpoch)/time.Second) + 60
	for s := range secs {
		for c := range n {
			for i, blk := range blocks {
				lat := float64(5 + (s*7+c+i*13)%200)
				e := schemas.TelemetryEvent{TS: t0.Add(time.Duration(s) * time.Second), Service: "svc",
					Component: names[c], Block: blk, Version: "1", LatencyMS: &lat}
				d.Observe(&e)
			}
		}
		d.Advance(d.Watermark())
	}
	d.Advance(t0.Add(time.Duration(secs+10) * time.Second)) // close the open buckets, not the epoch
	return d, names
}

// CheckpointFigures measures a checkpoint of the detector MeasureMemoryPerSeries builds from n
// components: the snapshot's size per series, and the time per series to take it (which serve
// does under the detect stage's lock, once per detect_checkpoint) and to restore it (on start).
func CheckpointFigures(n int) (bytesPerSeries, snapshotNsPerSeries, restoreNsPerSeries float64, err error) {
	d, _ := memoryWorkload(n)
	series := float64(d.SeriesCount())
	start := time.Now() // benchmark timing only
	snap, err := d.Snapshot()
	if err != nil {
		return 0, 0, 0, err
	}
	took := time.Since(start)
	start = time.Now()
	if _, err := Restore(d.Config(), snap); err != nil {
		return 0, 0, 0, err
	}
	restored := time.Since(start)
	return float64(len(snap)) / series, float64(took.Nanoseconds()) / series, float64(restored.Nanoseconds()) / series, nil
}
