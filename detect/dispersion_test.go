package detect

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// stalled is secs seconds of one component at 50 req/s from start, of version v, whose latencies
// are mul times the usual and whose process stalls for stall every 30 s (phase into the cycle at
// t0), adding half a second to every request in the stall; none when stall is 0.
func stalled(seed uint64, v string, start time.Time, secs int, mul float64, stall, phase time.Duration) []schemas.TelemetryEvent {
	return windowedService(seed, v, start, secs, mul, 500, stall, 30*time.Second, -phase, 1, 50)
}

// TestLatencyDispersion: a process that stalls for a second every 30 s makes its latency
// exceedances vary per bucket many times as much as independent requests would, and the series
// measures it: the reference a next version is compared with carries it, and a restored detector
// has it. Independent latencies measure 1. Measured only from a completed epoch on.
func TestLatencyDispersion(t *testing.T) {
	const q90 = 1 // DefaultConfig's p90
	key := SeriesKey{Service: "checkout", Component: "tax-calc", Version: "1.0.0"}
	for _, tt := range []struct {
		name     string
		stall    time.Duration
		secs     int
		min, max float64 // p90's dispersion
	}{
		{"independent", 0, 660, 1, 1},
		{"stalls", time.Second, 660, 5, math.Inf(1)},
		{"stalls, no epoch completed yet", time.Second, 290, 1, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			d := New(cfg)
			events := stalled(1, "1.0.0", t0, tt.secs, 1, tt.stall, 7*time.Second)
			run(d, events, 0, 500)
			d.Advance(events[len(events)-1].TS.Add(5 * time.Second))
			s := d.series[key]
			phi := d.latencyDispersion(s, q90)
			if phi < tt.min || phi > tt.max {
				t.Fatalf("p90 dispersion %.3g, want %g to %g", phi, tt.min, tt.max)
			}
			r := roundTrip(t, cfg, d)
			if got := r.latencyDispersion(r.series[key], q90); got != phi {
				t.Fatalf("restored p90 dispersion %.3g, the original %.3g", got, phi)
			}
			// Every latency ×2 from the next version, the stalls going on: still found, and the
			// anomaly says how its evidence was tempered.
			next := stalled(2, "1.1.0", events[len(events)-1].TS.Add(6*time.Second), 60, 2, tt.stall, 7*time.Second)
			var found []schemas.Anomaly
			for i := range next {
				d.Observe(&next[i])
				found = append(found, d.Advance(d.Watermark())...)
			}
			ref := d.series[SeriesKey{Service: key.Service, Component: key.Component, Version: "1.1.0"}].ref
			if ref == nil {
				t.Fatal("the next version has no reference")
			}
			if ref.latPhi[q90] != float32(phi) {
				t.Fatalf("the next version's reference carries %v, want p90's %.3g", ref.latPhi, phi)
			}
			if tt.secs < 300 {
				return // too young a baseline to test against for long
			}
			i := slices.IndexFunc(found, func(a schemas.Anomaly) bool { return a.Metric == schemas.MetricLatency && a.Version == "1.1.0" })
			if i < 0 {
				t.Fatal("every latency x2 not found")
			}
			if stalls := strings.Contains(strings.Join(found[i].Evidence.Notes, "\n"), "came together"); stalls != (tt.stall > 0) {
				t.Fatalf("the anomaly says the baseline stalled: %v, want %v: %v", stalls, tt.stall > 0, found[i].Evidence.Notes)
			}
		})
	}
}
