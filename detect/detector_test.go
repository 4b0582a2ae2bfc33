package detect

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr error
	}{
		{name: "defaults", mutate: func(*Config) {}},
		{name: "alpha zero", mutate: func(c *Config) { c.Alpha = 0 }, wantErr: ErrInvalidConfig},
		{name: "alpha NaN", mutate: func(c *Config) { c.Alpha = math.NaN() }, wantErr: ErrInvalidConfig},
		{name: "alpha per series", mutate: func(c *Config) { c.AlphaScope = AlphaPerSeries }},
		{name: "alpha per something else", mutate: func(c *Config) { c.AlphaScope = "service" }, wantErr: ErrInvalidConfig},
		{name: "alpha scope unset", mutate: func(c *Config) { c.AlphaScope = "" }, wantErr: ErrInvalidConfig},
		{name: "bucket too small", mutate: func(c *Config) { c.BucketWidth = 0 }, wantErr: ErrInvalidConfig},
		{name: "gross below min effect", mutate: func(c *Config) { c.ErrorGrossFactor = 1.2 }, wantErr: ErrInvalidConfig},
		{name: "quantile out of range", mutate: func(c *Config) { c.LatencyQuantiles = []float64{0.5, 1} }, wantErr: ErrInvalidConfig},
		{name: "too many quantiles", mutate: func(c *Config) { c.LatencyQuantiles = []float64{.1, .2, .3, .4, .5} }, wantErr: ErrInvalidConfig},
		{name: "negative lateness", mutate: func(c *Config) { c.AllowedLateness = -1 }, wantErr: ErrInvalidConfig},
		{name: "negative own-profile warm-up", mutate: func(c *Config) { c.OwnProfileWarmup = -1 }, wantErr: ErrInvalidConfig},
		{name: "own-profile half-life too short", mutate: func(c *Config) { c.OwnProfileHalfLife = c.BucketWidth }, wantErr: ErrInvalidConfig},
		{name: "own profile off, half-life unused", mutate: func(c *Config) { c.OwnProfileWarmup, c.OwnProfileHalfLife = 0, 0 }},
		{name: "deploy watch of a second", mutate: func(c *Config) { c.DeployWatch = schemas.Duration(time.Second) }, wantErr: ErrInvalidConfig},
		{name: "deploy watch off", mutate: func(c *Config) { c.DeployWatch = 0 }},
		{name: "negative latency warm-up", mutate: func(c *Config) { c.LatencyWarmup = -1 }, wantErr: ErrInvalidConfig},
		{name: "latency warm-up of an hour", mutate: func(c *Config) { c.LatencyWarmup = schemas.Duration(time.Hour) }, wantErr: ErrInvalidConfig},
		{name: "latency not read at its load", mutate: func(c *Config) { c.LatencyLoadShare = 0 }},
		{name: "negative latency load share", mutate: func(c *Config) { c.LatencyLoadShare = -0.1 }, wantErr: ErrInvalidConfig},
		{name: "latency load share NaN", mutate: func(c *Config) { c.LatencyLoadShare = math.NaN() }, wantErr: ErrInvalidConfig},
		{name: "latency load share of 3", mutate: func(c *Config) { c.LatencyLoadShare = 3 }, wantErr: ErrInvalidConfig},
		{name: "no series limit", mutate: func(c *Config) { c.MaxSeries = 0 }},
		{name: "negative series limit", mutate: func(c *Config) { c.MaxSeries = -1 }, wantErr: ErrInvalidConfig},
		{name: "memory growth limit before the own profile starts", mutate: func(c *Config) { c.MemoryGrowthLimit = c.OwnProfileWarmup / 2 }, wantErr: ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			if err := c.Validate(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Validate() = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func ev(ts time.Time, version string, lat float64, errCat string) *schemas.TelemetryEvent {
	return &schemas.TelemetryEvent{TS: ts, Service: "svc", Component: "comp", Version: version, LatencyMS: &lat, Error: errCat}
}

func TestBadInputNeverPanics(t *testing.T) {
	d := New(DefaultConfig())
	nan := math.NaN()
	d.Observe(nil)
	d.Observe(&schemas.TelemetryEvent{})
	d.Observe(&schemas.TelemetryEvent{TS: t0, Service: "s", Component: "c"}) // no version
	d.Observe(&schemas.TelemetryEvent{TS: t0, Service: "s", Component: "c", Version: "1", LatencyMS: &nan, CPU: &nan,
		Count: 5, Errors: map[string]int64{"timeout": 99, "bogus": 3}, Latency: &schemas.LatencySummary{P50: -1, P99: math.Inf(1)}})
	if got := d.InvalidEvents(); got != 3 {
		t.Fatalf("InvalidEvents = %d, want 3", got)
	}
	if a := d.Advance(t0.Add(time.Minute)); len(a) != 0 {
		t.Fatalf("anomalies from garbage: %+v", a)
	}
}

func TestLateEventsAreCountedAndDropped(t *testing.T) {
	d := New(DefaultConfig())
	d.Observe(ev(t0.Add(10*time.Second), "1", 5, ""))
	if wm := d.Watermark(); !wm.Equal(t0.Add(8 * time.Second)) {
		t.Fatalf("Watermark = %s", wm)
	}
	d.Advance(d.Watermark())
	d.Observe(ev(t0.Add(7*time.Second), "1", 5, ""))         // bucket [7s,8s) is closed
	d.Observe(ev(t0.Add(8500*time.Millisecond), "1", 5, "")) // still open
	if got := d.LateEvents(); got != 1 {
		t.Fatalf("LateEvents = %d, want 1", got)
	}
}

// steady feeds rate req/s of one version from second from to second to, returning anomalies.
type feeder struct {
	d   *Detector
	rng *rand.Rand
	out []schemas.Anomaly
}

func (f *feeder) run(from, to int, rate int, mk func(ts time.Time, i int) *schemas.TelemetryEvent) {
	for s := from; s < to; s++ {
		for i := range rate {
			f.d.Observe(mk(t0.Add(time.Duration(s)*time.Second+time.Duration(i)*time.Second/time.Duration(rate)), i))
		}
		f.out = append(f.out, f.d.Advance(f.d.Watermark())...)
	}
}

func TestAggregateEventsAndStatus(t *testing.T) {
	f := &feeder{d: New(DefaultConfig())}
	agg := func(version string, errs int64) func(time.Time, int) *schemas.TelemetryEvent {
		return func(ts time.Time, _ int) *schemas.TelemetryEvent {
			return &schemas.TelemetryEvent{TS: ts, Service: "svc", Component: "comp", Block: "b1", Version: version,
				Count: 50, Errors: map[string]int64{schemas.ErrTimeout: errs},
				Latency: &schemas.LatencySummary{P50: 20, P90: 40, P99: 80, Max: 120}}
		}
	}
	f.run(0, 120, 1, agg("1", 1))   // 2 % timeouts
	f.run(120, 140, 1, agg("2", 5)) // 10 %
	var got *schemas.Anomaly
	for i := range f.out {
		if f.out[i].Metric == schemas.MetricErrorRate && f.out[i].Block == "b1" {
			got = &f.out[i]
			break
		}
	}
	if got == nil {
		t.Fatalf("no error-rate anomaly from aggregates: %+v", f.out)
	}
	if got.ErrorCategory != schemas.ErrTimeout || got.BaselineVersion != "1" || got.TSDetected.Sub(t0) > 126*time.Second {
		t.Fatalf("unexpected anomaly %+v", got)
	}
	key := SeriesKey{Service: "svc", Component: "comp", Block: "b1", Version: "2"}
	st := f.d.Status(key)
	if !st.Known || len(st.Firing) == 0 || st.BaselineVersion != "1" {
		t.Fatalf("Status = %+v", st)
	}
	if fs := f.d.Firing(); len(fs) == 0 {
		t.Fatalf("Firing() empty")
	}
	if st := f.d.Status(SeriesKey{Service: "nope"}); st.Known {
		t.Fatalf("unknown series reported known")
	}
}

// A canary is tested against its baseline cohort: by default against the cohort's history,
// checked by the paired test over the same buckets; with the check off, by the paired test alone.
func TestCanaryComparedWithBaselineCohort(t *testing.T) {
	for _, tc := range []struct {
		gate float64
		test string
	}{{0.01, "msprt-two-sample+conditional-binomial"}, {0, "msprt-conditional-binomial"}} {
		cfg := DefaultConfig()
		cfg.CanaryConcurrentAlpha = tc.gate
		f := &feeder{d: New(cfg)}
		rng := rand.New(rand.NewPCG(7, 7))
		mk := func(version, cohort string, p float64) func(time.Time, int) *schemas.TelemetryEvent {
			return func(ts time.Time, _ int) *schemas.TelemetryEvent {
				e := ev(ts, version, 10+rng.Float64(), "")
				e.Cohort = cohort
				if rng.Float64() < p {
					e.Error = schemas.ErrException
				}
				return e
			}
		}
		f.run(0, 60, 20, mk("1", schemas.CohortBaseline, 0.02))
		both := func(ts time.Time, i int) *schemas.TelemetryEvent {
			if i%2 == 0 {
				return mk("1", schemas.CohortBaseline, 0.02)(ts, i)
			}
			return mk("2", schemas.CohortCanary, 0.10)(ts, i)
		}
		f.run(60, 120, 40, both)
		i := slices.IndexFunc(f.out, func(a schemas.Anomaly) bool {
			return a.Cohort == schemas.CohortCanary && a.Metric == schemas.MetricErrorRate
		})
		if i < 0 {
			t.Fatalf("canary_concurrent_alpha %g: canary regression not found in %d anomalies", tc.gate, len(f.out))
		}
		if a := f.out[i]; a.Test != tc.test {
			t.Fatalf("canary_concurrent_alpha %g: canary tested with %s, want %s", tc.gate, a.Test, tc.test)
		}
	}
}

// TestSlowMemoryLeakIsCaught runs a series that leaks from its start, with no other version to
// compare with. Its memory never levels off, so its own level is taken once it has served
// memory_growth_limit (until then it might be growth that stops), and the leak climbs past it.
func TestSlowMemoryLeakIsCaught(t *testing.T) {
	f := &feeder{d: New(DefaultConfig())}
	f.run(0, 2700, 5, func(ts time.Time, i int) *schemas.TelemetryEvent {
		e := ev(ts, "1", 10, "")
		m := 200 + 0.05*ts.Sub(t0).Seconds() + float64(i%3) // +3 MB per minute
		e.MemMB = &m
		return e
	})
	for _, a := range f.out {
		if a.Metric == schemas.MetricMem {
			// No other version: the series' own level, and the anomaly says so.
			if a.Test != testOwnLevel || a.BaselineVersion != schemas.BaselineOwnProfile+" (frozen level)" ||
				!slices.ContainsFunc(a.Evidence.Notes, func(n string) bool { return strings.Contains(n, "own level") }) {
				t.Errorf("leak against the series' own level does not explain itself: test %s, baseline %q, notes %q",
					a.Test, a.BaselineVersion, a.Evidence.Notes)
			}
			return
		}
	}
	t.Fatalf("leak from 200 to 335 MB in 45 min not caught: %+v", f.out)
}

func TestThroughputDropAndSpike(t *testing.T) {
	run := func(after int) []schemas.Anomaly {
		f := &feeder{d: New(DefaultConfig())}
		f.run(0, 300, 40, func(ts time.Time, _ int) *schemas.TelemetryEvent { return ev(ts, "1", 10, "") })
		f.run(300, 360, after, func(ts time.Time, _ int) *schemas.TelemetryEvent { return ev(ts, "1", 10, "") })
		return f.out
	}
	if a := run(200); len(a) != 0 { // a spike is not a regression
		t.Fatalf("spike fired: %+v", a[0])
	}
	a := run(10)
	if len(a) == 0 || a[0].Metric != schemas.MetricThroughput {
		t.Fatalf("drop to a quarter not caught: %+v", a)
	}
}

// TestBurstyTrafficIsNoDrop: requests seldom arrive independently, and a second's rate varies
// by tens of percent as clients batch, retry and fan out. Half an hour of such traffic (each
// second's rate log-normal of σ 0.5 around 50 req/s, so counts vary four times as much as
// Poisson's) is no drop, and a drop to a fifth after it is still caught.
func TestBurstyTrafficIsNoDrop(t *testing.T) {
	fired := 0
	for seed := range uint64(5) {
		rng := rand.New(rand.NewPCG(seed, 77))
		f := &feeder{d: New(DefaultConfig())}
		mk := func(ts time.Time, _ int) *schemas.TelemetryEvent { return ev(ts, "1", 10, "") }
		for s := range 1800 {
			f.run(s, s+1, poisson(rng, 50*math.Exp(0.5*rng.NormFloat64()-0.125)), mk)
		}
		if slices.ContainsFunc(f.out, func(a schemas.Anomaly) bool { return a.Metric == schemas.MetricThroughput }) {
			fired++
		}
		f.out = nil
		for s := 1800; s < 1860; s++ {
			f.run(s, s+1, poisson(rng, 10*math.Exp(0.5*rng.NormFloat64()-0.125)), mk)
		}
		if len(f.out) == 0 || f.out[0].Metric != schemas.MetricThroughput {
			t.Errorf("seed %d: a drop from 50 to 10 req/s of bursty traffic not caught in a minute: %+v", seed, f.out)
		}
	}
	if fired > 0 {
		t.Errorf("bursty traffic fired as a drop in %d of 5 half hours", fired)
	}
}

// TestThroughputFollowsSteadyDecline lowers a line's rate steadily from 40 to 12 req/s over 50
// minutes, as the evening side of a daily cycle does: the expected rate must follow the slope,
// where an EWMA of the level alone lags it by several requests a second and calls the lag a
// drop. A sudden drop to a quarter after it is still caught.
func TestThroughputFollowsSteadyDecline(t *testing.T) {
	f := &feeder{d: New(DefaultConfig())}
	mk := func(ts time.Time, _ int) *schemas.TelemetryEvent { return ev(ts, "1", 10, "") }
	f.run(0, 600, 40, mk)
	for s := 600; s < 3600; s++ {
		f.run(s, s+1, 40-28*(s-600)/3000, mk)
	}
	for _, a := range f.out {
		if a.Metric == schemas.MetricThroughput {
			t.Fatalf("a steady decline fired as a drop: %+v", a)
		}
	}
	f.run(3600, 3660, 3, mk)
	if len(f.out) == 0 || f.out[0].Metric != schemas.MetricThroughput {
		t.Fatalf("drop from 12 to 3 req/s after the decline not caught: %+v", f.out)
	}
}

// TestAAFalseAlarms runs A/A deploys with fresh seeds: no change, so no anomaly may fire on the
// deployed version beyond the stated rate.
func TestAAFalseAlarms(t *testing.T) {
	runs := 40
	if raceEnabled {
		runs = 4
	}
	fired := 0
	for seed := range uint64(runs) {
		events := genScenario(1000+seed, healthy("1.0.0", 240, 20), healthy("1.1.0", 240, 20))
		if len(replay(DefaultConfig(), events, 256)) > 0 {
			fired++
		}
	}
	t.Logf("A/A: %d of %d deploys raised an anomaly", fired, runs)
	if fired > 1 {
		t.Fatalf("A/A false alarms: %d of %d", fired, runs)
	}
}

func TestMannWhitneyShift(t *testing.T) {
	sk, err := newSketches(0.02, 160)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	a, b := sk.new(), sk.new()
	for range 2000 {
		x := 20 * math.Exp(0.5*rng.NormFloat64())
		_ = b.Add(x)
		_ = a.Add(1.3 * 20 * math.Exp(0.5*rng.NormFloat64()))
	}
	mw, ok := sk.mannWhitney(a, b)
	if !ok || mw.P > 1e-6 || mw.Ratio < 1.2 || mw.Ratio > 1.4 || mw.RatioLo > 1.3 || mw.RatioHi < 1.3 {
		t.Fatalf("mann-whitney = %+v", mw)
	}
	same, _ := sk.mannWhitney(b, b)
	if same.P < 0.4 || math.Abs(same.Ratio-1) > 0.03 {
		t.Fatalf("identical samples: %+v", same)
	}
}
