package detect

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// TestResourcesScrapedEvery15s runs the cpu and memory cases of the other resource tests with
// each version's cpu and memory reported every 15 s, as a metrics scraper reports them, instead
// of every second. A healthy rolling deploy through a spike, and memory that grows as caches
// fill, are no regression; cpu half again the previous version's, or its own without a deploy,
// and a leak with or without a deploy, are caught about as soon as at one sample a second.
// Before samples stood for the buckets they cover, cpu scraped every 15 s was never compared
// within a deploy's first minutes: its warm-up counted samples, thirty of them.
func TestResourcesScrapedEvery15s(t *testing.T) {
	const every = 15
	t.Run("cpu", func(t *testing.T) {
		w := newCPUWorld(7)
		w.every = every
		w.cycling(900, constant(0), constant(1))
		w.serve(120, 6, func(s int) float64 { return math.Min(1, float64(s-900+1)/60) }, constant(1))
		w.serve(60, 18, constant(1), constant(1))
		w.serve(120, 6, constant(1), constant(1))
		if a := w.cpuAnomalies(); len(a) > 0 {
			t.Fatalf("the same cpu per request raised %s on %s at %s: %q", a[0].Test, a[0].Version, a[0].TSDetected.Sub(t0), a[0].Evidence.Notes)
		}

		w = newCPUWorld(8)
		w.every = every
		w.cycling(900, constant(0), constant(1))
		w.serve(180, 4.5, constant(1), constant(1.5))
		hot := w.cpuAnomalies()
		if len(hot) == 0 {
			t.Fatal("cpu half again the previous version's, scraped every 15 s, raised no anomaly")
		}
		if took := hot[0].TSDetected.Sub(t0.Add(900 * time.Second)); took > 90*time.Second || hot[0].Test != testLoadFit {
			t.Errorf("cpu ×1.5 scraped every 15 s: %s after %s, want %s within 90 s", hot[0].Test, took, testLoadFit)
		}
		if !slices.ContainsFunc(hot[0].Evidence.Notes, func(n string) bool { return strings.Contains(n, "sampled every 15 buckets") }) {
			t.Errorf("the anomaly does not say how its samples were weighed: %q", hot[0].Evidence.Notes)
		}

		// Every minute: the new version's first sample comes 53 s after the deploy and covers an
		// unknown stretch; its second one's minute began 54 s after it, past the start-up, and is
		// compared. Counting only the minutes its samples covered, it waited for the third.
		w = newCPUWorld(8)
		w.every = 60
		w.cycling(900, constant(0), constant(1))
		w.serve(240, 4.5, constant(1), constant(1.5))
		hot = w.cpuAnomalies()
		if len(hot) == 0 {
			t.Fatal("cpu half again the previous version's, scraped every minute, raised no anomaly")
		}
		if took := hot[0].TSDetected.Sub(t0.Add(900 * time.Second)); took > 2*time.Minute {
			t.Errorf("cpu ×1.5 scraped every minute took %s, want within 2 min", took)
		}

		w = newCPUWorld(9)
		w.every = every
		w.cycling(1500, constant(0), constant(1))
		if a := w.cpuAnomalies(); len(a) > 0 {
			t.Fatalf("a version's own moving load raised %s at %s: %q", a[0].Test, a[0].TSDetected.Sub(t0), a[0].Evidence.Notes)
		}
		w.oldMul = 1.5
		w.cycling(180, constant(0), constant(1))
		hot = w.cpuAnomalies()
		if len(hot) == 0 || hot[0].Test != testOwnLoadFit {
			t.Fatalf("cpu ×1.5 without a deploy, scraped every 15 s: %d anomalies", len(hot))
		}
		if took := hot[0].TSDetected.Sub(t0.Add(1500 * time.Second)); took > 90*time.Second {
			t.Errorf("cpu ×1.5 without a deploy, scraped every 15 s, took %s, want within 90 s", took)
		}
	})

	t.Run("memory", func(t *testing.T) {
		// run serves version v from start to end at 20 req/s with memory m(age) every 15 s.
		run := func(f *feeder, v string, start, end int, m func(age float64) float64) {
			f.run(start, end, 20, func(ts time.Time, i int) *schemas.TelemetryEvent {
				e := ev(ts, v, 10, "")
				if s := int(ts.Sub(t0).Seconds()); i == 0 && s%every == 4 {
					mb := m(float64(s-start)) + 3*math.Sin(float64(s))
					e.MemMB = &mb
				}
				return e
			})
		}
		grow := func(leak float64) func(float64) float64 {
			return func(age float64) float64 { return 200 + 100*(1-math.Exp(-age/60)) + leak*age/60 }
		}
		memAnomalies := func(f *feeder) []schemas.Anomaly {
			var out []schemas.Anomaly
			for _, a := range f.out {
				if a.Metric == schemas.MetricMem && !a.IsResolved() {
					out = append(out, a)
				}
			}
			return out
		}
		for _, tt := range []struct {
			name  string
			leak  float64
			catch bool
		}{{"grows as caches fill", 0, false}, {"leaks 5 MB/min on top", 5, true}} {
			f := &feeder{d: New(DefaultConfig())}
			run(f, "1", 0, 900, grow(0))
			run(f, "2", 900, 2100, grow(tt.leak))
			a := memAnomalies(f)
			switch {
			case !tt.catch && len(a) > 0:
				t.Errorf("memory that %s raised %s on %s at %s: %q", tt.name, a[0].Test, a[0].Version, a[0].TSDetected.Sub(t0), a[0].Evidence.Notes)
			case tt.catch && len(a) == 0:
				t.Errorf("memory that %s, scraped every 15 s, raised no anomaly", tt.name)
			case tt.catch:
				took := a[0].TSDetected.Sub(t0.Add(900 * time.Second))
				if a[0].Test != testRecentLevel || took > 10*time.Minute {
					t.Errorf("memory that %s: %s after %s, want %s within 10 min", tt.name, a[0].Test, took, testRecentLevel)
				}
				t.Logf("memory that %s, scraped every 15 s: caught %s after the deploy", tt.name, took)
			}
		}

		// No deploy: flat for 15 min, then a leak of 5 MB/min, against the series' own level.
		f := &feeder{d: New(DefaultConfig())}
		run(f, "1", 0, 2100, func(age float64) float64 { return 300 + 5*max(0, age-900)/60 })
		a := memAnomalies(f)
		if len(a) == 0 || a[0].Test != testOwnLevel {
			t.Fatalf("a leak without a deploy, scraped every 15 s: %d anomalies", len(a))
		}
		took := a[0].TSDetected.Sub(t0.Add(900 * time.Second))
		if took > 10*time.Minute {
			t.Errorf("a leak without a deploy, scraped every 15 s, took %s, want within 10 min", took)
		}
		t.Logf("a leak without a deploy, scraped every 15 s: caught %s after it began", took)
	})
}

// TestResourceSamplesOnTheirOwn feeds cpu and memory as a scraper sends them, in events of their
// own every 15 s, next to request events that carry none. A sample stands for no request: the
// series count the same requests as without the samples, no bucket of samples alone is a
// throughput drop, and the previous version's instance, still scraped for a minute after its
// last request, does not hold the new version's cpu comparison as if it still served. CPU half
// again the previous version's is caught at the new version's first sample after its start-up,
// 41 s after the deploy; held while the old instance is scraped, it took 71 s.
func TestResourceSamplesOnTheirOwn(t *testing.T) {
	k1, k2 := SeriesKey{Service: "svc", Component: "comp", Version: "1"}, SeriesKey{Service: "svc", Component: "comp", Version: "2"}
	feed := func(samples bool) (*feeder, [2]int64) {
		f := &feeder{d: New(DefaultConfig())}
		var requests [2]int64 // version 1's as it is replaced, version 2's at the end
		for s := range 1200 {
			if s == 900 {
				requests[0] = f.d.Status(k1).Requests
			}
			ts := t0.Add(time.Duration(s) * time.Second)
			v := "1"
			if s >= 900 {
				v = "2"
			}
			load := 20 + 3*math.Sin(float64(s)/120)
			for i := range int(load) {
				f.d.Observe(ev(ts.Add(time.Duration(i)*time.Second/time.Duration(int(load))), v, 10, ""))
			}
			if samples {
				for _, inst := range []struct {
					version string
					phase   int
					cpu     float64
				}{{"1", 4, 0.05 + 0.01*load}, {"2", 11, 1.5 * (0.05 + 0.01*load)}} {
					if s%15 != inst.phase || (inst.version == "1" && s >= 960) || (inst.version == "2" && s < 900) {
						continue
					}
					if inst.version == "1" && s >= 900 {
						inst.cpu = 0.05 // drained: idle, still scraped
					}
					mem := 300 + math.Sin(float64(s))
					f.d.Observe(&schemas.TelemetryEvent{TS: ts.Add(500 * time.Millisecond), Service: "svc", Component: "comp",
						Version: inst.version, CPU: &inst.cpu, MemMB: &mem})
				}
			}
			f.out = append(f.out, f.d.Advance(f.d.Watermark())...)
		}
		requests[1] = f.d.Status(k2).Requests
		return f, requests
	}
	with, a := feed(true)
	without, b := feed(false)
	if a != b || a[0] == 0 || a[1] == 0 {
		t.Errorf("versions 1 and 2 count %d requests with the resource samples, %d without", a, b)
	}
	if len(without.out) > 0 {
		t.Fatalf("the stream without cpu raised %s on %s", without.out[0].Metric, without.out[0].Version)
	}
	var cpu []schemas.Anomaly
	for _, a := range with.out {
		switch {
		case a.IsResolved():
		case a.Metric == schemas.MetricCPU && a.Version == "2":
			cpu = append(cpu, a)
		default:
			t.Errorf("%s anomaly on version %s at %s (%s): %q", a.Metric, a.Version, a.TSDetected.Sub(t0), a.Test, a.Evidence.Notes)
		}
	}
	if len(cpu) == 0 {
		t.Fatal("cpu ×1.5 in samples of their own raised no anomaly")
	}
	if took := cpu[0].TSDetected.Sub(t0.Add(900 * time.Second)); took > time.Minute || cpu[0].Test != testLoadFit {
		t.Errorf("cpu ×1.5 in samples of their own: %s after %s, want %s within a minute", cpu[0].Test, took, testLoadFit)
	}
}
