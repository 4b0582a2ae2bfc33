package detect

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// windowed is secs seconds of one component at 50 req/s from start, of version v, whose latencies
// are mul times the usual and rise by 20 ms (doubling the median) for window out of every
// every seconds of event time, the first window starting at first: a batch job every version
// shares. None when window is 0.
func windowed(seed uint64, v string, start time.Time, secs int, mul float64, window, every, first time.Duration) []schemas.TelemetryEvent {
	return windowedService(seed, v, start, secs, mul, 20, window, every, first, 1, 50)
}

// windowedService is windowed for a service of comps components, each at rps req/s (evenly
// spaced, staggered), whose processes the batch job slows together by add ms; mul applies to
// the first component alone.
func windowedService(seed uint64, v string, start time.Time, secs int, mul, add float64, window, every, first time.Duration, comps, rps int) []schemas.TelemetryEvent {
	rng := rand.New(rand.NewPCG(seed, 11))
	var out []schemas.TelemetryEvent
	gap := time.Second / time.Duration(rps*comps)
	for i := range secs * rps * comps {
		ts := start.Add(time.Duration(i) * gap)
		c := i % comps
		lat := 20 * math.Exp(0.3*rng.NormFloat64())
		if c == 0 {
			lat *= mul
		}
		if since := ts.Sub(t0) - first; window > 0 && since >= 0 && since%every < window {
			lat += add
		}
		comp := "tax-calc"
		if c > 0 {
			comp = fmt.Sprintf("endpoint-%d", c)
		}
		out = append(out, schemas.TelemetryEvent{TS: ts, Service: "checkout", Component: comp, Version: v, LatencyMS: &lat})
	}
	return out
}

// TestExcursions: a batch job that doubles every latency for 10 s every 2 min makes excursions
// of about 10 buckets, which the series measures, from its first epoch on; independent latencies
// make none. The reference a next version is compared with carries the longest, and a restored
// detector has every part of it. Against it, the window is no regression and a lasting ×2 is,
// found once it outlasts the baseline's longest; without the batch job, found at once.
func TestExcursions(t *testing.T) {
	key := SeriesKey{Service: "checkout", Component: "tax-calc", Version: "1.0.0"}
	next := SeriesKey{Service: key.Service, Component: key.Component, Version: "1.1.0"}
	const every = 2 * time.Minute
	for _, tt := range []struct {
		name     string
		window   time.Duration
		secs     int
		min, max uint8 // the longest excursion the reference respects
	}{
		{"independent", 0, 620, 0, 0},
		// Windows at 30, 150, 270, 390 and 510 s; the detector restarts from a snapshot at 310 s,
		// after the first epoch completed and before the windows the reference is frozen with.
		{"batch job", 10 * time.Second, 620, 9, 12},
		{"batch job, no epoch completed yet", 10 * time.Second, 290, 9, 12},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			base := windowed(1, "1.0.0", t0, tt.secs, 1, tt.window, every, 30*time.Second)
			end := base[len(base)-1].TS
			// The next version starts after the baseline's last bucket closed, 20 s before a
			// window, which lasts 10 s.
			from := end.Add(6 * time.Second)
			first := from.Sub(t0) + 20*time.Second
			for _, change := range []struct {
				name string
				mul  float64
			}{{"no change", 1}, {"every latency x2", 2}} {
				d := New(cfg)
				cut := min(len(base), 310*50)
				run(d, base[:cut], 0, 500)
				d = roundTrip(t, cfg, d)
				run(d, base[cut:], 0, 500)
				d.Advance(end.Add(5 * time.Second))
				d = roundTrip(t, cfg, d)
				s := d.series[key]
				if got := d.frozenExcursion(s); got < tt.min || got > tt.max {
					t.Fatalf("the baseline's longest excursion %d buckets (%+v), want %d to %d", got, s.exc, tt.min, tt.max)
				}
				evs := windowed(2, "1.1.0", from, 60, change.mul, tt.window, every, first)
				var found []schemas.Anomaly
				for i := range evs {
					if i == 5*50 || i == 25*50 { // within the excursion of a ×2; within the window
						d = roundTrip(t, cfg, d)
						s = d.series[key]
					}
					d.Observe(&evs[i])
					found = append(found, d.Advance(d.Watermark())...)
				}
				ref := d.series[next].ref
				if ref == nil {
					t.Fatal("the next version has no reference")
				}
				if ref.excursion != d.frozenExcursion(s) {
					t.Fatalf("the next version's reference respects %d buckets, want %d", ref.excursion, d.frozenExcursion(s))
				}
				i := slices.IndexFunc(found, func(a schemas.Anomaly) bool { return a.Metric == schemas.MetricLatency && a.Version == "1.1.0" })
				if change.mul == 1 {
					if i >= 0 {
						t.Fatalf("%s: the batch job's window fired: %s", change.name, found[i].Evidence.Notes)
					}
					continue
				}
				if i < 0 {
					t.Fatalf("%s: not found", change.name)
				}
				ttd := found[i].TSDetected.Sub(from)
				t.Logf("%s: found after %s, the baseline's longest excursion %d buckets", change.name, ttd, ref.excursion)
				// Found once it outlasts the baseline's longest, as that bucket closes (its
				// service made excursions: its latency tests wait for the close).
				if lo, hi := time.Duration(ref.excursion)*time.Second, time.Duration(ref.excursion+3)*time.Second; ttd < lo || ttd > hi {
					t.Fatalf("%s: found after %s, want %s to %s", change.name, ttd, lo, hi)
				}
				if says := strings.Contains(strings.Join(found[i].Evidence.Notes, "\n"), "set aside"); says != (ref.excursion > 0) {
					t.Fatalf("%s: the anomaly says the baseline made excursions: %v, want %v: %v", change.name, says, ref.excursion > 0, found[i].Evidence.Notes)
				}
			}
		})
	}
}

// TestOwnExcursions: a series that no deploy touches, whose batch job doubles every latency for
// 10 s every 2 min, pages at none of its windows once it has seen one end, and a lasting ×2 still
// pages once it outlasts the windows.
func TestOwnExcursions(t *testing.T) {
	cfg := DefaultConfig()
	key := SeriesKey{Service: "checkout", Component: "tax-calc", Version: "1.0.0"}
	const every = 2 * time.Minute
	for _, mul := range []float64{1, 2} {
		d := New(cfg)
		quiet := windowed(1, "1.0.0", t0, 900, 1, 10*time.Second, every, 30*time.Second)
		var found []schemas.Anomaly
		for i := range quiet {
			d.Observe(&quiet[i])
			found = append(found, d.Advance(d.Watermark())...)
		}
		// The own profile starts after 10 min: every window after that.
		if i := slices.IndexFunc(found, func(a schemas.Anomaly) bool { return !a.IsResolved() }); i >= 0 {
			t.Fatalf("a window paged: %s %v", found[i].TSDetected, found[i].Evidence.Notes)
		}
		if d.series[key].own == nil {
			t.Fatal("no own profile after 15 min")
		}
		from := quiet[len(quiet)-1].TS.Add(time.Second)
		more := windowed(2, "1.0.0", from, 120, mul, 10*time.Second, every, 30*time.Second)
		found = found[:0]
		for i := range more {
			if i == 5*50 { // within the excursion of a ×2
				d = roundTrip(t, cfg, d)
			}
			d.Observe(&more[i])
			found = append(found, d.Advance(d.Watermark())...)
		}
		i := slices.IndexFunc(found, func(a schemas.Anomaly) bool { return !a.IsResolved() })
		switch {
		case mul == 1 && i >= 0:
			t.Fatalf("a window paged: %s %v", found[i].TSDetected, found[i].Evidence.Notes)
		case mul == 2 && i < 0:
			t.Fatal("every latency x2 did not page")
		case mul == 2:
			l := d.ownExcursion(d.series[key])
			ttd := found[i].TSDetected.Sub(from)
			t.Logf("every latency x2 paged after %s, the series' longest excursion %d buckets", ttd, l)
			if l == 0 || ttd < time.Duration(l)*time.Second || ttd > time.Duration(l+3)*time.Second { // its tests run as a bucket closes, AllowedLateness after its end
				t.Fatalf("every latency x2 paged after %s, the series' longest excursion %d buckets", ttd, l)
			}
		}
	}
}

// TestServiceExcursions: a service of eight endpoints at 5 req/s each, whose processes a batch
// job slows for 10 s every 2 min. No endpoint's second is large enough to tell a slow one from
// chance, the service's is: a deploy of every endpoint with a window 20 s after it, and the
// windows of the service untouched, flag nothing, and every latency ×2 in one endpoint is
// still found.
func TestServiceExcursions(t *testing.T) {
	cfg := DefaultConfig()
	const every = 2 * time.Minute
	svc := lineKey{Service: "checkout"}
	for _, tt := range excursionCases {
		t.Run(tt.name, func(t *testing.T) {
			d := New(cfg)
			base := windowedService(1, "1.0.0", t0, excursionBaseline(tt.deploy), 1, 20, 10*time.Second, every, 30*time.Second, 8, 5)
			cut := len(base) / 2
			run(d, base[:cut], 0, 500)
			d = roundTrip(t, cfg, d)
			d, found := observeAll(d, base[cut:], nil)
			if se := d.lines[svc].exc; se == nil || se.exc.ended() < 9 || se.exc.ended() > 12 {
				t.Fatalf("the service's excursions %+v, want a longest of 9 to 12 buckets", se)
			}
			if !tt.deploy {
				noPage(t, found)
				return
			}
			from := nextVersionAt(d, base)
			evs := windowedService(2, "1.1.0", from, 60, tt.mul, 20, 10*time.Second, every, from.Sub(t0)+20*time.Second, 8, 5)
			d, found = observeAll(d, evs, func(i int, d *Detector) *Detector {
				if i == 25*40 { // within the window
					return roundTrip(t, cfg, d)
				}
				return d
			})
			i := slices.IndexFunc(found, func(a schemas.Anomaly) bool { return !a.IsResolved() && a.Version == "1.1.0" })
			switch {
			case tt.mul == 1 && i >= 0:
				t.Fatalf("the window fired: %s %s %v", found[i].TSDetected.Sub(from), found[i].Component, found[i].Evidence.Notes)
			case tt.mul == 2 && i < 0:
				t.Fatal("every latency x2 in one endpoint not found")
			case tt.mul == 2 && found[i].Component != "tax-calc":
				t.Fatalf("found in %s, not the endpoint that regressed", found[i].Component)
			case tt.mul == 2 && !strings.Contains(strings.Join(found[i].Evidence.Notes, "\n"), "its service's (over all its components) latencies stood well above"):
				t.Fatalf("the anomaly does not say its service made excursions: %v", found[i].Evidence.Notes)
			}
		})
	}
}

// TestExcursionsAreForgotten: an excursion is remembered for six epochs of event time (30 min),
// the one it ended in included, and no longer: a series whose one batch window was 40 minutes
// ago is tested as one without excursions, as a replay that warms up 35 minutes would test it.
func TestExcursionsAreForgotten(t *testing.T) {
	cfg := DefaultConfig()
	key := SeriesKey{Service: "checkout", Component: "tax-calc", Version: "1.0.0"}
	d := New(cfg)
	// One window, at 30 s (the first epoch); the series serves on for 40 min.
	evs := windowed(1, "1.0.0", t0, 40*60, 1, 10*time.Second, 24*time.Hour, 30*time.Second)
	for i := range evs {
		d.Observe(&evs[i])
		d.Advance(d.Watermark())
		switch evs[i].TS.Sub(t0) {
		case 25 * time.Minute, 29 * time.Minute:
			if l := d.frozenExcursion(d.series[key]); l < 9 || l > 12 {
				t.Fatalf("at %s the series' longest excursion %d buckets, want 9 to 12", evs[i].TS.Sub(t0), l)
			}
		case 31 * time.Minute, 39 * time.Minute:
			if l := d.frozenExcursion(d.series[key]); l != 0 {
				t.Fatalf("at %s the series' longest excursion %d buckets, want it forgotten", evs[i].TS.Sub(t0), l)
			}
			if l := d.serviceExcursionLen(d.series[key]); l != 0 {
				t.Fatalf("at %s the service's longest excursion %d buckets, want it forgotten", evs[i].TS.Sub(t0), l)
			}
		}
	}
}

// TestComponentExcursions: a component's own cache refresh (+8 ms on a 20 ms median for 10 s
// every 2 min, at 50 req/s) in a service whose other endpoint serves 500 req/s, untouched.
// Over the service the windows stand out too little to start an excursion, over the component
// they do: its own excursions are respected, within its buckets and at their close, by a
// deploy's tests and by its own profile's.
func TestComponentExcursions(t *testing.T) {
	cfg := DefaultConfig()
	const every = 2 * time.Minute
	gen := func(seed uint64, v string, start time.Time, secs int, mul float64, first time.Duration) []schemas.TelemetryEvent {
		rng := rand.New(rand.NewPCG(seed, 13))
		var out []schemas.TelemetryEvent
		for i := range secs * 550 {
			ts := start.Add(time.Duration(i) * time.Second / 550)
			lat := 20 * math.Exp(0.3*rng.NormFloat64())
			comp := "search"
			if i%11 == 0 {
				comp = "tax-calc"
				lat *= mul
				if since := ts.Sub(t0) - first; since >= 0 && since%every < 10*time.Second {
					lat += 8
				}
			}
			out = append(out, schemas.TelemetryEvent{TS: ts, Service: "checkout", Component: comp, Version: v, LatencyMS: &lat})
		}
		return out
	}
	key := SeriesKey{Service: "checkout", Component: "tax-calc", Version: "1.0.0"}
	for _, tt := range excursionCases {
		t.Run(tt.name, func(t *testing.T) {
			base := gen(1, "1.0.0", t0, excursionBaseline(tt.deploy), 1, 30*time.Second)
			d, found := observeAll(New(cfg), base, nil)
			if l := d.ownExcursion(d.series[key]); l < 9 || l > 12 {
				t.Fatalf("the component's longest excursion %d buckets, want 9 to 12", l)
			}
			if l := d.serviceExcursionLen(d.series[key]); l != 0 {
				t.Fatalf("the service's longest excursion %d buckets, want none: the busy endpoint hides the windows", l)
			}
			if !tt.deploy {
				noPage(t, found)
				return
			}
			from := nextVersionAt(d, base)
			_, found = observeAll(d, gen(2, "1.1.0", from, 60, tt.mul, from.Sub(t0)+20*time.Second), nil)
			i := slices.IndexFunc(found, func(a schemas.Anomaly) bool { return !a.IsResolved() && a.Component == "tax-calc" })
			switch {
			case tt.mul == 1 && i >= 0:
				t.Fatalf("the window fired: %s %v", found[i].TSDetected.Sub(from), found[i].Evidence.Notes)
			case tt.mul == 2 && i < 0:
				t.Fatal("every latency x2 not found")
			case tt.mul == 2 && found[i].TSDetected.Sub(from) < 10*time.Second:
				t.Fatalf("every latency x2 found after %s, within the component's longest excursion", found[i].TSDetected.Sub(from))
			}
		})
	}
}

// excursionCases are the cases of the excursion tests of a service: a deploy of a version
// whose latencies are mul times the old one's, or none (the series' own profile).
var excursionCases = []struct {
	name   string
	deploy bool
	mul    float64
}{
	{"a deploy, no change", true, 1},
	{"a deploy, latency x2", true, 2},
	{"no deploy, no change", false, 1},
}

// excursionBaseline is how long the old version serves in an excursion test: long enough for
// its own profile (10 min) when no deploy follows.
func excursionBaseline(deploy bool) int {
	if deploy {
		return 620
	}
	return 900 // the own profile starts after 10 min
}

// observeAll feeds evs to d one at a time, advancing to the watermark after each, and returns
// d and what it found; restart, if not nil, may replace d (a restore) before event i.
func observeAll(d *Detector, evs []schemas.TelemetryEvent, restart func(i int, d *Detector) *Detector) (*Detector, []schemas.Anomaly) {
	var found []schemas.Anomaly
	for i := range evs {
		if restart != nil {
			d = restart(i, d)
		}
		d.Observe(&evs[i])
		found = append(found, d.Advance(d.Watermark())...)
	}
	return d, found
}

// noPage fails t if any anomaly was raised.
func noPage(t *testing.T, found []schemas.Anomaly) {
	t.Helper()
	if i := slices.IndexFunc(found, func(a schemas.Anomaly) bool { return !a.IsResolved() }); i >= 0 {
		t.Fatalf("a window paged: %s %s %v", found[i].TSDetected, found[i].Component, found[i].Evidence.Notes)
	}
}

// nextVersionAt closes the last buckets of base and returns when the next version may start.
func nextVersionAt(d *Detector, base []schemas.TelemetryEvent) time.Time {
	end := base[len(base)-1].TS
	d.Advance(end.Add(5 * time.Second))
	return end.Add(6 * time.Second)
}
