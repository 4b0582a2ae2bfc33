package single

import (
	"errors"
	"math"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr error
	}{
		{"defaults", func(*Config) {}, nil},
		{"short warmup", func(c *Config) { c.Warmup = 5 }, ErrInvalidConfig},
		{"too few bins", func(c *Config) { c.Bins = 2 }, ErrInvalidConfig},
		{"memory below warmup", func(c *Config) { c.Memory = c.Warmup - 1 }, ErrInvalidConfig},
		{"NaN drift", func(c *Config) { c.CUSUMDrift = math.NaN() }, ErrInvalidConfig},
		{"alarm above 1", func(c *Config) { c.AlarmThreshold = 1.5 }, ErrInvalidConfig},
		{"negative rest", func(c *Config) { c.Rest = -1 }, ErrInvalidConfig},
		{"rest margin 1", func(c *Config) { c.RestMargin = 1 }, ErrInvalidConfig},
		{"rest margin off", func(c *Config) { c.RestMargin = 0 }, nil},
		{"negative rest quiet speed", func(c *Config) { c.RestQuietSpeed = -1 }, ErrInvalidConfig},
		{"rest quiet speed off", func(c *Config) { c.RestQuietSpeed = 0 }, nil},
		{"negative season", func(c *Config) { c.SeasonHours = -1 }, ErrInvalidConfig},
		{"NaN season", func(c *Config) { c.SeasonHours = math.NaN() }, ErrInvalidConfig},
		{"sub-second season", func(c *Config) { c.SeasonHours = 1e-6 }, ErrInvalidConfig},
		{"one season slot", func(c *Config) { c.SeasonSlots = 1 }, ErrInvalidConfig},
		{"season rate 0", func(c *Config) { c.SeasonRate = 0 }, ErrInvalidConfig},
		{"season gate 0", func(c *Config) { c.SeasonGate = 0 }, ErrInvalidConfig},
		{"season off ignores its other fields", func(c *Config) { c.SeasonHours, c.SeasonSlots, c.SeasonRate = 0, 0, 0 }, nil},
	}
	for _, tc := range tests {
		c := DefaultConfig()
		tc.mutate(&c)
		if err := c.Validate(); !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.wantErr)
		}
	}
}

// series is a noisy daily-ish pattern from a fixed generator, with a level shift at step shift.
func series(n, shift int) []float64 {
	out := make([]float64, n)
	x := uint64(42)
	for i := range out {
		x = x*6364136223846793005 + 1442695040888963407
		noise := float64(x>>40)/float64(1<<24) - 0.5
		out[i] = 10 + 3*math.Sin(float64(i)*2*math.Pi/96) + noise
		if shift > 0 && i >= shift {
			out[i] += 15
		}
	}
	return out
}

func run(d *Detector, vs []float64) (scores []float64, alarms []int) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, v := range vs {
		s, a := d.Step(t0.Add(time.Duration(i)*5*time.Minute), v)
		scores = append(scores, s)
		if a {
			alarms = append(alarms, i)
		}
	}
	return scores, alarms
}

func TestDetectsLevelShiftQuicklyAndOnce(t *testing.T) {
	_, alarms := run(New(DefaultConfig()), series(3000, 2000))
	first := -1
	for _, a := range alarms {
		if a >= 2000 {
			first = a
			break
		}
	}
	if first < 0 || first > 2005 {
		t.Fatalf("alarms %v: want one within 5 points of the shift at 2000", alarms)
	}
	for i := 1; i < len(alarms); i++ {
		if alarms[i]-alarms[i-1] <= DefaultConfig().Rest {
			t.Errorf("alarm at %d inside the rest period after %d", alarms[i], alarms[i-1])
		}
	}
}

func TestQuietOnStationarySeries(t *testing.T) {
	scores, alarms := run(New(DefaultConfig()), series(3000, 0))
	if len(alarms) > 3 {
		t.Errorf("%d alarms on a stationary series: %v", len(alarms), alarms)
	}
	for i := range DefaultConfig().Warmup - 1 {
		if scores[i] != 0 {
			t.Fatalf("score %v at %d during warm-up", scores[i], i)
		}
	}
}

func TestBadInputIgnoredAndDeterministic(t *testing.T) {
	vs := series(1500, 1000)
	a, _ := run(New(DefaultConfig()), vs)
	d := New(DefaultConfig())
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	var b []float64
	for i, v := range vs {
		ts := t0.Add(time.Duration(i) * 5 * time.Minute)
		s, _ := d.Step(ts, v)
		b = append(b, s)
		if s, al := d.Step(ts, math.NaN()); s != 0 || al {
			t.Fatalf("NaN at %d scored %v", i, s)
		}
		if s, al := d.Step(ts.Add(-time.Hour), 1e9); i > 0 && (s != 0 || al) {
			t.Fatalf("out-of-order point at %d scored %v", i, s)
		}
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("row %d: %v with bad input interleaved, %v without", i, b[i], a[i])
		}
	}
}

func TestConstantSeries(t *testing.T) {
	vs := make([]float64, 1000)
	scores, _ := run(New(DefaultConfig()), vs)
	for i, s := range scores {
		if math.IsNaN(s) || s < 0 || s > 1 {
			t.Fatalf("score %v at %d", s, i)
		}
	}
}

func BenchmarkStep(b *testing.B) {
	vs := series(4096, 3000)
	d := New(DefaultConfig())
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d.Step(t0.Add(time.Duration(i)*time.Second), vs[i%len(vs)])
	}
}

// TestContextNoveltyFlagsFlatStretch checks the pattern awareness: a daily cycle that goes flat at
// its mid level for a while has no rare value, only a shape never seen, and must score well above what
// value rarity and CUSUM alone give it. (It does not reach the alarm threshold: most pairs stay seen.)
func TestContextNoveltyFlagsFlatStretch(t *testing.T) {
	vs := series(3000, 0)
	for i := 2000; i < 2100; i++ {
		vs[i] = 10
	}
	scores, _ := run(New(DefaultConfig()), vs)
	peak := 0.0
	for _, s := range scores[2000:2100] {
		peak = math.Max(peak, s)
	}
	cfg := DefaultConfig()
	cfg.ContextLags = 0
	scores, _ = run(New(cfg), vs)
	base := 0.0
	for _, s := range scores[2000:2100] {
		base = math.Max(base, s)
	}
	if peak < 0.6 || peak < base+0.2 {
		t.Errorf("flat stretch: peak %.3f with context novelty, %.3f without: want ≥ 0.6 and 0.2 above", peak, base)
	}
}

// TestRestLetsANewIncidentThrough: 100 points after a spike, with a rest that only counts time, the
// same spike again is the same incident (no alarm) but a far larger one is a new incident; with the
// rest shortened by the ordinary points in between (RestQuietSpeed), the same spike again is a new
// incident too.
func TestRestLetsANewIncidentThrough(t *testing.T) {
	tests := []struct {
		name       string
		gap        int
		second     float64
		speed      int
		wantAlarms int
	}{
		{"same spike, time-only rest", 100, 8, 0, 1},
		{"far larger spike, time-only rest", 100, 200, 0, 2},
		{"same spike after a calm stretch", 100, 8, 7, 2},
		{"far larger spike after a calm stretch", 100, 200, 7, 2},
	}
	for _, tc := range tests {
		vs := series(2400, 0)
		vs[2000] += 8
		vs[2000+tc.gap] += tc.second
		cfg := DefaultConfig()
		cfg.RestQuietSpeed = tc.speed
		_, alarms := run(New(cfg), vs)
		var in []int
		for _, a := range alarms {
			if a >= 2000 {
				in = append(in, a)
			}
		}
		if len(in) != tc.wantAlarms || in[0] != 2000 {
			t.Errorf("%s: alarms %v from 2000 on, want %d starting at 2000", tc.name, in, tc.wantAlarms)
		}
	}
}

// TestShiftRestsFullLength: a lasting level shift alarms once per Rest at most — its CUSUM echo does
// not come back through the shortened rest of the value score, even though the values of the new
// level soon become ordinary.
func TestShiftRestsFullLength(t *testing.T) {
	vs := series(2600, 2000)
	_, alarms := run(New(DefaultConfig()), vs)
	var in []int
	for _, a := range alarms {
		if a >= 2000 && a <= 2000+DefaultConfig().Rest {
			in = append(in, a)
		}
	}
	if len(in) != 1 {
		t.Errorf("alarms %v in the rest after the shift at 2000, want one", in)
	}
}

// weekly is a half-hourly series with a weekly pattern: weekdays busy by day, weekends quiet, plus a
// little noise. Every value of it is ordinary; only the time of a value can be wrong.
func weekly(weeks int) (ts []time.Time, vs []float64) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC) // a Monday
	x := uint64(7)
	for i := range weeks * 7 * 48 {
		x = x*6364136223846793005 + 1442695040888963407
		noise := float64(x>>40)/float64(1<<24) - 0.5
		day, half := i/48%7, i%48
		v := 10.0
		if half >= 16 && half < 40 { // 8:00 to 20:00
			v = 14
			if day < 5 {
				v = 30
			}
		}
		ts = append(ts, t0.Add(time.Duration(i)*30*time.Minute))
		vs = append(vs, v+noise)
	}
	return ts, vs
}

// TestSeasonFlagsBrokenWeek: in the sixth week the Wednesday is as quiet as a Sunday (a holiday).
// Its values are all ordinary, so without the seasonal baseline nothing alarms; with it the day
// alarms, and the weeks before it stay quiet.
func TestSeasonFlagsBrokenWeek(t *testing.T) {
	ts, vs := weekly(7)
	wed := 5*7*48 + 2*48
	for i := wed + 16; i < wed+40; i++ {
		vs[i] -= 16
	}
	for _, tc := range []struct {
		name   string
		hours  float64
		expect bool
	}{{"weekly season", 168, true}, {"no season", 0, false}} {
		cfg := DefaultConfig()
		cfg.SeasonHours = tc.hours
		d := New(cfg)
		var alarms []int
		for i := range vs {
			if _, a := d.Step(ts[i], vs[i]); a {
				alarms = append(alarms, i)
			}
		}
		hit := false
		for _, a := range alarms {
			if a < wed {
				t.Errorf("%s: false alarm at %d before the holiday at %d", tc.name, a, wed)
			}
			hit = hit || a >= wed+16 && a < wed+48
		}
		if hit != tc.expect {
			t.Errorf("%s: alarms %v, want an alarm on the holiday (%d..%d): %v", tc.name, alarms, wed+16, wed+48, tc.expect)
		}
	}
}

// TestSeasonGatedOffWithoutSeason: on a series with no weekly pattern the residual against the
// seasonal baseline is as wide as the series, the gate stays shut and the scores are exactly those
// of the detector without a season.
func TestSeasonGatedOffWithoutSeason(t *testing.T) {
	vs := make([]float64, 6000) // white noise with a few spikes, at 5-minute points
	x := uint64(3)
	for i := range vs {
		x = x*6364136223846793005 + 1442695040888963407
		vs[i] = 10 + float64(x>>40)/float64(1<<24)
		if i%997 == 500 {
			vs[i] += 5
		}
	}
	d := New(DefaultConfig())
	a, _ := run(d, vs)
	if d.sCount < d.cfg.Warmup || d.sScale < d.cfg.SeasonGate*d.scale {
		t.Fatalf("gate open: residual scale %v, plain scale %v after %d residuals", d.sScale, d.scale, d.sCount)
	}
	cfg := DefaultConfig()
	cfg.SeasonHours = 0
	b, _ := run(New(cfg), vs)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("row %d: %v with a season, %v without", i, a[i], b[i])
		}
	}
}

// TestOddTimestamps: a zero or a repeated timestamp, or a series sampled more coarsely than the
// period, must neither crash nor produce a score outside [0, 1].
func TestOddTimestamps(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   func(i int) time.Time
	}{
		{"zero time", func(int) time.Time { return time.Time{} }},
		{"before 1678", func(i int) time.Time { return time.Date(1000, 1, 1, 0, 0, i, 0, time.UTC) }},
		{"after 2262", func(i int) time.Time { return time.Date(3000, 1, 1, i, 0, 0, 0, time.UTC) }},
		{"fortnightly", func(i int) time.Time { return time.Unix(int64(i)*14*86400, 0) }},
	} {
		d := New(DefaultConfig())
		for i, v := range series(1500, 1000) {
			if s, _ := d.Step(tc.at(i), v); math.IsNaN(s) || s < 0 || s > 1 {
				t.Fatalf("%s: score %v at %d", tc.name, s, i)
			}
		}
	}
}
