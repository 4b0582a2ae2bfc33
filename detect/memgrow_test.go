package detect

import (
	"math"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// TestMemoryThatGrowsAsCachesFillIsNoRegression deploys versions whose memory grows from 200 MB
// by 100 MB over their first minutes (caches filling, a heap expanding), as most services'
// does, and levels off. Compared with how much the previous version used as it started, every
// such version would be a regression; compared with the level the previous version had grown
// to, none is. A version that settles half again higher, or leaks on top of the growth, still
// is. Nor is a version whose memory grows over ten minutes, deployed ten minutes after its
// predecessor: that one had not levelled off, and its level is below where it would have
// settled.
func TestMemoryThatGrowsAsCachesFillIsNoRegression(t *testing.T) {
	// mem is a version's memory at age secs: growth of g MB that levels off with time constant
	// tau s, plus leak MB/min.
	mem := func(g, tau, leak float64) func(age float64) float64 {
		return func(age float64) float64 { return 200 + g*(1-math.Exp(-age/tau)) + leak*age/60 }
	}
	// deploy runs prev for life s, then next for 30 min.
	deploy := func(prev func(float64) float64, life int, next func(float64) float64) []schemas.Anomaly {
		f := &feeder{d: New(DefaultConfig())}
		for v, m := range []func(float64) float64{prev, next} {
			version, start, end := []string{"1", "2"}[v], life*v, life+1800*v
			f.run(start, end, 20, func(ts time.Time, i int) *schemas.TelemetryEvent {
				e := ev(ts, version, 10, "")
				if i == 0 {
					mb := m(ts.Sub(t0).Seconds()-float64(start)) + float64(ts.Second()%3)
					e.MemMB = &mb
				}
				return e
			})
		}
		var out []schemas.Anomaly
		for _, a := range f.out {
			if a.Metric == schemas.MetricMem && !a.IsResolved() {
				out = append(out, a)
			}
		}
		return out
	}
	if a := deploy(mem(100, 300, 0), 1800, mem(100, 300, 0)); len(a) > 0 {
		t.Fatalf("memory that grows as the previous version's did raised %s on version %s at %s against %g: %q",
			a[0].Test, a[0].Version, a[0].TSDetected.Sub(t0), a[0].Baseline, a[0].Evidence.Notes)
	}
	if a := deploy(mem(100, 600, 0), 600, mem(100, 600, 0)); len(a) > 0 {
		t.Fatalf("memory that grows over 10 min, deployed 10 min after its predecessor, raised %s on version %s at %s against %g: %q",
			a[0].Test, a[0].Version, a[0].TSDetected.Sub(t0), a[0].Baseline, a[0].Evidence.Notes)
	}
	for _, tt := range []struct {
		name string
		m    func(float64) float64
	}{
		{"settles half again higher", mem(250, 300, 0)},
		{"leaks 3 MB/min on top", mem(100, 300, 3)},
	} {
		a := deploy(mem(100, 300, 0), 1800, tt.m)
		if len(a) == 0 {
			t.Errorf("a version whose memory %s raised no anomaly", tt.name)
			continue
		}
		if a[0].Version != "2" || a[0].BaselineVersion != "1" || a[0].Test != "cusum-recent-level" || len(a[0].Evidence.Notes) < 2 {
			t.Errorf("%s: anomaly on version %s against %q by %s, notes %q", tt.name, a[0].Version, a[0].BaselineVersion, a[0].Test, a[0].Evidence.Notes)
		}
		t.Logf("%s: %s after the deploy, %g against %g", tt.name, a[0].TSDetected.Sub(t0.Add(1800*time.Second)), a[0].Observed, a[0].Baseline)
	}
}
