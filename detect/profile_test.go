package detect

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// TestOwnProfile: a series that has served one version for longer than the warm-up is compared
// with its own profile, so a regression without a deploy is seen, and nothing else fires.
func TestOwnProfile(t *testing.T) {
	const warm = 660 // seconds of healthy 1.0.0 before anything changes: past the 10m warm-up
	badErr := healthy("1.0.0", 60, 20)
	badErr.errRate = map[string]float64{"": 0.1}
	badLat := healthy("1.0.0", 60, 20)
	badLat.latMed *= 2
	longBad := healthy("1.0.0", 900, 20)
	longBad.errRate = map[string]float64{"": 0.1}
	tests := []struct {
		name     string
		cfg      func(*Config)
		phases   []phase
		metric   string // "" = no anomaly at all
		within   time.Duration
		resolved bool // the episode ends (after the regression does)
	}{
		{name: "error x5 without a deploy", phases: []phase{healthy("1.0.0", warm, 20), badErr},
			metric: schemas.MetricErrorRate, within: 30 * time.Second},
		{name: "latency x2 without a deploy", phases: []phase{healthy("1.0.0", warm, 20), badLat},
			metric: schemas.MetricLatency, within: 10 * time.Second},
		{name: "forty quiet minutes", phases: []phase{healthy("1.0.0", 2400, 20)}},
		{name: "before the warm-up nothing is compared", phases: []phase{healthy("1.0.0", 300, 20), badErr}},
		{name: "turned off", cfg: func(c *Config) { c.OwnProfileWarmup = 0 }, phases: []phase{healthy("1.0.0", warm, 20), badErr}},
		// Frozen while firing: fifteen minutes of the regression do not become the series'
		// normal, so the episode lasts until the errors go away, then resolves.
		{name: "a long regression does not teach itself", phases: []phase{healthy("1.0.0", warm, 20), longBad, healthy("1.0.0", 120, 20)},
			metric: schemas.MetricErrorRate, within: 30 * time.Second, resolved: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			events := genScenario(11, tt.phases...)
			got := replay(cfg, events, 64)
			if again := replay(cfg, events, 1000); !bytes.Equal(encodeJSONL(t, again), encodeJSONL(t, got)) {
				t.Fatal("output depends on batching")
			}
			if tt.metric == "" {
				if len(got) != 0 {
					t.Fatalf("want no anomaly, got %d: %s %s %v", len(got), got[0].Metric, got[0].BaselineVersion, got[0].Evidence.Notes)
				}
				return
			}
			change := t0.Add(warm * time.Second)
			var first *schemas.Anomaly
			for i := range got {
				a := &got[i]
				if a.BaselineVersion != "own profile (1h)" || !strings.HasPrefix(a.Evidence.Notes[0], "no deploy changed this series") {
					t.Errorf("anomaly without the own profile's label and note: %q %v", a.BaselineVersion, a.Evidence.Notes)
				}
				if a.TSDetected.Before(change) {
					t.Errorf("fired %s before the change", change.Sub(a.TSDetected))
				}
				if first == nil && !a.IsResolved() {
					first = a
				}
			}
			if first == nil || first.Metric != tt.metric {
				t.Fatalf("want a %s anomaly first, got %d anomalies", tt.metric, len(got))
			}
			if d := first.TSDetected.Sub(change); d > tt.within {
				t.Errorf("detected after %s, want within %s", d, tt.within)
			}
			if tt.metric == schemas.MetricLatency && first.Effect < cfg.LatencyMinEffect {
				t.Errorf("latency effect %.3f, want at least the minimum effect", first.Effect)
			}
			if tt.resolved {
				end := change.Add(900 * time.Second)
				var res []schemas.Anomaly
				for _, a := range got {
					if a.IsResolved() && a.Metric == tt.metric && a.Block == "" {
						res = append(res, a)
					}
				}
				i := slices.IndexFunc(res, func(a schemas.Anomaly) bool { return a.ID == first.ID })
				if i < 0 {
					t.Fatalf("the episode never resolved")
				}
				if at := *res[i].ResolvedAt; at.Before(end) {
					t.Errorf("resolved %s before the regression ended: the profile learned it", end.Sub(at))
				}
			}
		})
	}
}

// TestOwnLatencyUncapped: once a series' latency dispersion is measured, its own profile's
// latency tests are not capped per update (latency_bucket_cap): the dispersion holds back a
// stall's requests, and the cap made a test whose runs are never the first wait for a second
// bucket. Every latency ×2 without a deploy is found sooner on average than with the cap set
// explicitly to its old default, over the same ten runs.
func TestOwnLatencyUncapped(t *testing.T) {
	const warm = 660
	bad := healthy("1.0.0", 30, 20)
	bad.latMed *= 2
	capped := DefaultConfig()
	capped.LatencyBucketCap = math.Log(1/capped.Alpha) + 0.1
	mean := func(cfg Config) time.Duration {
		var sum time.Duration
		for seed := range uint64(10) {
			got := replay(cfg, genScenario(40+seed, healthy("1.0.0", warm, 20), bad), 64)
			i := slices.IndexFunc(got, func(a schemas.Anomaly) bool { return a.Metric == schemas.MetricLatency && !a.IsResolved() })
			if i < 0 {
				t.Fatalf("seed %d: every latency x2 not found", 40+seed)
			}
			sum += got[i].TSDetected.Sub(t0.Add(warm * time.Second))
		}
		return sum / 10
	}
	uncapped, withCap := mean(DefaultConfig()), mean(capped)
	if uncapped > withCap-200*time.Millisecond {
		t.Fatalf("found in %s on average, %s with the cap: want at least 0.2 s sooner", uncapped, withCap)
	}
	t.Logf("found in %s on average, %s with the cap", uncapped, withCap)
}

// TestOwnProfileStatus: decide's view of a series compared with its own profile.
func TestOwnProfileStatus(t *testing.T) {
	bad := healthy("1.0.0", 60, 20)
	bad.errRate = map[string]float64{"": 0.3}
	events := genScenario(12, healthy("1.0.0", 660, 20), bad)
	d := New(DefaultConfig())
	for i := range events {
		d.Observe(&events[i])
	}
	d.Advance(d.Watermark())
	st := d.Status(SeriesKey{Service: "checkout", Component: "tax-calc", Version: "1.0.0"})
	if st.BaselineVersion != "own profile (1h)" || !slices.Contains(st.Firing, "error_rate/exception") {
		t.Fatalf("status %+v, want firing error_rate/exception against the own profile", st)
	}
}

func TestShortDuration(t *testing.T) {
	for in, want := range map[time.Duration]string{time.Hour: "1h", 10 * time.Minute: "10m", 90 * time.Minute: "1h30m", 45 * time.Second: "45s"} {
		if got := shortDuration(in); got != want {
			t.Errorf("shortDuration(%s) = %q, want %q", in, got, want)
		}
	}
}

// TestClumpedOwnProfile: a series whose errors come in clumps of five, and that no deploy
// changes, is compared with its own profile as with a version baseline: tempered by how clumped
// its errors were, so the clumps alone raise nothing, while errors ten times as frequent in the
// same clumps are found and the anomaly says its evidence was tempered.
func TestClumpedOwnProfile(t *testing.T) {
	for _, tt := range []struct {
		name  string
		after int // one in how many requests starts a clump of five, from 15 min on (one in 250 before)
		want  bool
	}{
		{"the clumps alone", 250, false},
		{"ten times as many clumps", 25, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := healthy("1.0.0", 900, 50)
			p.errRate = map[string]float64{"": 0}
			next := healthy("1.0.0", 1800, 50)
			next.errRate = p.errRate
			events := genScenario(23, p, next)
			change := t0.Add(900 * time.Second)
			rng := rand.New(rand.NewPCG(23, 5))
			for i := 0; i < len(events); i++ {
				every := 250
				if !events[i].TS.Before(change) {
					every = tt.after
				}
				if rng.IntN(every) == 0 { // clumps that start at random, every 1/every requests on average
					for k := i; k < min(i+5, len(events)); k++ {
						events[k].Error = schemas.ErrException
					}
				}
			}
			var got *schemas.Anomaly
			for _, a := range run(New(DefaultConfig()), events, 0, 64) {
				if a.Metric == schemas.MetricErrorRate && a.Block == "" && a.BaselineVersion != "" && strings.HasPrefix(a.BaselineVersion, schemas.BaselineOwnProfile) {
					got = &a
					break
				}
			}
			switch {
			case got == nil && tt.want:
				t.Fatal("errors ten times as frequent in the same clumps raised no own-profile error anomaly")
			case got != nil && !tt.want:
				t.Fatalf("the clumps alone raised %s (%q)", got.ID, got.Evidence.Notes)
			case got != nil && !slices.ContainsFunc(got.Evidence.Notes, func(n string) bool { return strings.Contains(n, "came in clumps") }):
				t.Errorf("the anomaly does not say its evidence was tempered: %q", got.Evidence.Notes)
			}
		})
	}
}

// TestLatencyWarmup: a version that starts three times as slow as its baseline served, easing
// off within 20 s, is a latency regression by default, and none with latency_warmup 30s; a
// version that stays twice as slow is still found, after its warm-up.
func TestLatencyWarmup(t *testing.T) {
	for _, tt := range []struct {
		name   string
		warmup time.Duration
		stays  float64 // the new version's latency × after its cold start
		want   bool
	}{
		{"cold start, no warm-up", 0, 1, true},
		{"cold start, warm-up 30s", 30 * time.Second, 1, false},
		{"cold start, then twice as slow, warm-up 30s", 30 * time.Second, 2, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cold := healthy("1.1.0", 20, 50)
			cold.latMed *= 3
			after := healthy("1.1.0", 120, 50)
			after.latMed *= tt.stays
			events := genScenario(24, healthy("1.0.0", 600, 50), cold, after)
			cfg := DefaultConfig()
			cfg.LatencyWarmup = schemas.Duration(tt.warmup)
			var got *schemas.Anomaly
			for _, a := range run(New(cfg), events, 0, 64) {
				if a.Metric == schemas.MetricLatency && a.Version == "1.1.0" && !a.IsResolved() {
					got = &a
					break
				}
			}
			deploy := t0.Add(600 * time.Second)
			switch {
			case got == nil && tt.want:
				t.Fatal("no latency anomaly")
			case got != nil && !tt.want:
				t.Fatalf("the cold start raised %s at %s: %q", got.ID, got.TSDetected.Sub(deploy), got.Evidence.Notes)
			case got != nil && got.TSDetected.Sub(deploy) < tt.warmup:
				t.Errorf("found %s after the deploy, within the warm-up of %s", got.TSDetected.Sub(deploy), tt.warmup)
			}
		})
	}
}

// TestLatencyWarmupPerInstance: in a rolling update the new version's second instance starts a
// minute after its first, cold too. A warm-up counted from the version's first request does not
// cover it; counted from each instance's, when the events name it, it does.
func TestLatencyWarmupPerInstance(t *testing.T) {
	events := genScenario(25, healthy("1.0.0", 600, 50), healthy("1.1.0", 180, 50))
	deploy := t0.Add(600 * time.Second)
	for i := range events {
		e := &events[i]
		if e.Version != "1.1.0" || e.LatencyMS == nil {
			continue
		}
		age := e.TS.Sub(deploy)
		e.Instance = "a"
		if age >= time.Minute && i%2 == 1 {
			e.Instance, age = "b", age-time.Minute
		}
		if age < 20*time.Second {
			slow := *e.LatencyMS * 3
			e.LatencyMS = &slow
		}
	}
	cfg := DefaultConfig()
	cfg.LatencyWarmup = schemas.Duration(30 * time.Second)
	fired := func(events []schemas.TelemetryEvent) *schemas.Anomaly {
		for _, a := range run(New(cfg), events, 0, 64) {
			if a.Metric == schemas.MetricLatency && a.Version == "1.1.0" && !a.IsResolved() {
				return &a
			}
		}
		return nil
	}
	if a := fired(events); a != nil {
		t.Errorf("each instance's cold start, named: %s at %s", a.ID, a.TSDetected.Sub(deploy))
	}
	unnamed := slices.Clone(events)
	for i := range unnamed {
		unnamed[i].Instance = ""
	}
	if a := fired(unnamed); a == nil {
		t.Error("the second instance's cold start, unnamed, raised nothing: the test no longer shows what naming the instance does")
	}
}

// TestDeployWatchEnds: an hour after a deploy (deploy_watch) the new version is no longer
// compared with the version before it, only with its own profile: latency 30 % higher two hours
// later (the daily peak of a service whose latency follows its load) is not the deploy's to
// roll back. With deploy_watch 0 the frozen baseline still judges it.
func TestDeployWatchEnds(t *testing.T) {
	later := healthy("1.1.0", 300, 20)
	later.latMed *= 1.3
	events := genScenario(27, healthy("1.0.0", 600, 20), healthy("1.1.0", 3900, 20), later)
	for _, tt := range []struct {
		watch time.Duration
		want  bool
	}{{time.Hour, false}, {0, true}} {
		cfg := DefaultConfig()
		cfg.DeployWatch = schemas.Duration(tt.watch)
		got := false
		for _, a := range run(New(cfg), events, 0, 64) {
			if a.Version == "1.1.0" && a.BaselineVersion == "1.0.0" && !a.IsResolved() {
				got = true
				if !tt.want {
					t.Errorf("deploy_watch %s: compared with 1.0.0 %s after the deploy: %s", tt.watch, a.TSDetected.Sub(t0.Add(600*time.Second)), a.ID)
				}
			}
		}
		if tt.want && !got {
			t.Errorf("deploy_watch %s: latency 30 %% higher raised nothing against 1.0.0: the test no longer shows what the watch does", tt.watch)
		}
	}
}

// TestInstancesAreBounded: a producer that names each request as its instance cannot grow the
// detector without bound; past the bound its events warm up with their version.
func TestInstancesAreBounded(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LatencyWarmup = schemas.Duration(30 * time.Second)
	d := New(cfg)
	lat := 20.0
	for i := range maxInstances + 1000 {
		d.Observe(&schemas.TelemetryEvent{TS: t0.Add(time.Duration(i) * time.Millisecond), Service: "svc", Component: "comp",
			Version: "1", Instance: fmt.Sprintf("req-%d", i), LatencyMS: &lat})
	}
	if n := len(d.instances); n != maxInstances {
		t.Fatalf("%d instances followed, bound %d", n, maxInstances)
	}
}
