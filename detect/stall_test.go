package detect

import (
	"testing"

	"github.com/scalpel-dev/scalpel/schemas"
)

// TestOneSlowSecondIsNotARegression: every request of a new version's first second slowed
// together (a process's pause, a load the thresholds were read at wrongly) is one cause, not fifty
// requests' evidence. By default the p50 and p90 tests need two buckets' evidence, so that
// second alone rolls nothing back; two such seconds do. Without a cap on one bucket's evidence,
// the same second opens an episode.
func TestOneSlowSecondIsNotARegression(t *testing.T) {
	stall := func(secs int) []schemas.TelemetryEvent {
		slow := healthy("1.1.0", secs, 50)
		slow.latMed *= 3
		slow.tailP = 0
		return genScenario(21, healthy("1.0.0", 660, 50), slow, healthy("1.1.0", 60, 50))
	}
	uncapped := DefaultConfig()
	uncapped.LatencyBucketCap = 1e9
	for _, tc := range []struct {
		name string
		cfg  Config
		secs int
		want bool
	}{
		{"one slow second", DefaultConfig(), 1, false},
		{"two slow seconds", DefaultConfig(), 2, true},
		{"one slow second, uncapped", uncapped, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := New(tc.cfg)
			var got []schemas.Anomaly
			for _, a := range run(d, stall(tc.secs), 0, 50) {
				if a.Metric == schemas.MetricLatency && a.Version == "1.1.0" {
					got = append(got, a)
				}
			}
			if fired := len(got) > 0; fired != tc.want {
				t.Fatalf("latency anomalies of the new version: %d, want any: %v (%+v)", len(got), tc.want, got)
			}
		})
	}
}
