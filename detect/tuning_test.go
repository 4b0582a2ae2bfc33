package detect

import (
	"errors"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"

	"github.com/scalpel-dev/scalpel/schemas"
)

// twoServices is one scenario served by two services side by side, checkout and search, each
// its own draw: what a detector sees of a fleet whose services were deployed at the same time.
func twoServices(seed uint64, phases ...phase) []schemas.TelemetryEvent {
	events := genScenario(seed, phases...)
	other := genScenario(seed+100, phases...)
	for i := range other {
		other[i].Service = "search"
		other[i].ID += "-search"
	}
	events = append(events, other...)
	slices.SortStableFunc(events, func(a, b schemas.TelemetryEvent) int { return a.TS.Compare(b.TS) })
	return events
}

// firingServices is the services a latency or error anomaly of version fired on.
func firingServices(d *Detector, events []schemas.TelemetryEvent, metric, version string) map[string]bool {
	out := map[string]bool{}
	for _, a := range run(d, events, 0, 64) {
		if a.Metric == metric && a.Version == version && !a.IsResolved() {
			out[a.Service] = true
		}
	}
	return out
}

// TestServiceConfigWarmsUpOneService: two services start their new versions cold, three times as
// slow for 20 s. A warm-up set for checkout alone (detect.services) leaves its cold start out,
// and search's is still a regression; the other way round, a warm-up for all that search sets
// to 0 for itself.
func TestServiceConfigWarmsUpOneService(t *testing.T) {
	cold := healthy("1.1.0", 20, 50)
	cold.latMed *= 3
	events := twoServices(24, healthy("1.0.0", 600, 50), cold, healthy("1.1.0", 120, 50))
	warm, none := schemas.Duration(30*time.Second), schemas.Duration(0)
	for _, tt := range []struct {
		name     string
		all      schemas.Duration
		services map[string]ServiceConfig
		want     map[string]bool
	}{
		{"no warm-up", 0, nil, map[string]bool{"checkout": true, "search": true}},
		{"checkout warms up", 0, map[string]ServiceConfig{"checkout": {LatencyWarmup: &warm}}, map[string]bool{"search": true}},
		{"all but search warm up", warm, map[string]ServiceConfig{"search": {LatencyWarmup: &none}}, map[string]bool{"search": true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.LatencyWarmup, cfg.Services = tt.all, tt.services
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := firingServices(New(cfg), events, schemas.MetricLatency, "1.1.0"); !maps.Equal(got, tt.want) {
				t.Errorf("latency anomalies on %v, want %v", got, tt.want)
			}
		})
	}
}

// TestServiceConfigTestsClientErrors: invalid_input errors ten times as frequent after a deploy
// are no regression by default (client errors), and are one on the service whose entry says
// its invalid_input errors are its own (a validator the deploy made stricter).
func TestServiceConfigTestsClientErrors(t *testing.T) {
	events := twoServices(31, healthy("1.0.0", 600, 50), healthy("1.1.0", 300, 50))
	for i := range events {
		if e := &events[i]; e.Version == "1.1.0" && e.Error == "" && i%10 == 0 {
			e.Error = schemas.ErrInvalidInput
		}
	}
	on := true
	wantFiring(t, map[string]ServiceConfig{"search": {InvalidInputTriggers: &on}}, events, schemas.MetricErrorRate, "search")
}

// TestServiceConfigSetsTheMinimumEffect: every latency 40 % higher after a deploy is a
// regression at the default latency_min_effect (+25 %), and not on a service whose entry asks for
// +100 % at least: its tests' hypotheses and the rise an anomaly needs are its own.
func TestServiceConfigSetsTheMinimumEffect(t *testing.T) {
	slower := healthy("1.1.0", 300, 50)
	slower.latMed *= 1.4
	events := twoServices(32, healthy("1.0.0", 600, 50), slower)
	minEffect, gross := 1.0, 4.0
	wantFiring(t, map[string]ServiceConfig{"search": {LatencyMinEffect: &minEffect, LatencyGrossFactor: &gross}}, events, schemas.MetricLatency, "checkout")
}

// wantFiring holds a detector with services' entries to firing on metric of version 1.1.0 in
// the one service want names, and not in the other.
func wantFiring(t *testing.T, services map[string]ServiceConfig, events []schemas.TelemetryEvent, metric, want string) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Services = services
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := firingServices(New(cfg), events, metric, "1.1.0"); !maps.Equal(got, map[string]bool{want: true}) {
		t.Errorf("%s anomalies on %v, want on %s alone", metric, got, want)
	}
}

// TestServiceConfigIsNamedInTheEvidence: an anomaly of a service with its own parameters says
// which, first among its notes; one of another service says nothing of them.
func TestServiceConfigIsNamedInTheEvidence(t *testing.T) {
	bad := healthy("1.1.0", 120, 50)
	bad.errRate = map[string]float64{"": 0.2}
	events := twoServices(33, healthy("1.0.0", 600, 50), bad)
	warm, drop := schemas.Duration(45*time.Second), 0.8
	cfg := DefaultConfig()
	cfg.Services = map[string]ServiceConfig{"search": {LatencyWarmup: &warm, ThroughputMinDrop: &drop}}
	const want = "detected with the service's own parameters (detect.services.search): latency_warmup 45s, throughput_min_drop 0.8"
	seen := map[string]bool{}
	for _, a := range run(New(cfg), events, 0, 64) {
		if a.IsResolved() {
			continue
		}
		seen[a.Service] = true
		named := len(a.Evidence.Notes) > 0 && a.Evidence.Notes[0] == want
		if named != (a.Service == "search") {
			t.Errorf("%s %s anomaly's notes: %q", a.Service, a.Metric, a.Evidence.Notes)
		}
	}
	if !seen["search"] || !seen["checkout"] {
		t.Fatalf("anomalies on %v: the scenario no longer shows both services", seen)
	}
}

// TestServiceConfigKeepsTheDefaults: a detector whose services entries set nothing, or name
// services that send nothing, finds exactly what one without them finds.
func TestServiceConfigKeepsTheDefaults(t *testing.T) {
	bad := healthy("1.1.0", 120, 20)
	bad.errRate = map[string]float64{"": 0.02, "rate-lookup": 0.26}
	events := genScenario(2, healthy("1.0.0", 300, 20), bad)
	plain := run(New(DefaultConfig()), slices.Clone(events), 0, 64)
	if len(plain) == 0 {
		t.Fatal("no anomaly: the scenario no longer shows anything")
	}
	warm := schemas.Duration(time.Minute)
	cfg := DefaultConfig()
	cfg.Services = map[string]ServiceConfig{"checkout": {}, "search": {LatencyWarmup: &warm}}
	tuned := run(New(cfg), slices.Clone(events), 0, 64)
	if !slices.EqualFunc(plain, tuned, func(a, b schemas.Anomaly) bool { return a.ID == b.ID && a.TSDetected.Equal(b.TSDetected) }) {
		t.Errorf("%d anomalies without services entries, %d with entries that change nothing", len(plain), len(tuned))
	}
}

func TestServiceConfigValidate(t *testing.T) {
	tol, big := 0.3, 0.2
	zero := 0.0
	watch := schemas.Duration(time.Second)
	for _, tt := range []struct {
		name     string
		services map[string]ServiceConfig
		want     string // in the error; "" for none
	}{
		{"none", nil, ""},
		{"an empty entry", map[string]ServiceConfig{"checkout": {}}, ""},
		{"not a service name", map[string]ServiceConfig{"check out": {}}, `services: "check out" is not a service name`},
		{"tolerance above the service's own minimum effect", map[string]ServiceConfig{"checkout": {LatencyTolerance: &tol, LatencyMinEffect: &big}}, "services.checkout: latency_tolerance must be in [0, latency_min_effect)"},
		{"tolerance above the default minimum effect", map[string]ServiceConfig{"search": {LatencyTolerance: &tol}}, "services.search: latency_tolerance"},
		{"profile tolerance above the minimum effect", map[string]ServiceConfig{"search": {LatencyProfileTolerance: &tol}}, "services.search: latency_profile_tolerance must be in [0, latency_min_effect)"},
		{"no minimum effect", map[string]ServiceConfig{"search": {ErrorMinEffect: &zero}}, "services.search: error_min_effect must be positive"},
		{"a watch of a second", map[string]ServiceConfig{"search": {DeployWatch: &watch}}, "services.search: deploy_watch"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Services = tt.services
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidConfig)):
				t.Fatalf("Validate() = %v, want an ErrInvalidConfig saying %q", err, tt.want)
			}
		})
	}
}

func TestConfigFor(t *testing.T) {
	warm, drop := schemas.Duration(time.Minute), 0.8
	on := true
	cfg := DefaultConfig()
	cfg.Services = map[string]ServiceConfig{"checkout": {LatencyWarmup: &warm, ThroughputMinDrop: &drop, InvalidInputTriggers: &on}}
	got := cfg.For("checkout")
	if got.LatencyWarmup != warm || got.ThroughputMinDrop != drop || !got.InvalidInputTriggers || got.Services != nil {
		t.Errorf("For(checkout) = warm-up %s, min drop %g, invalid input %v, services %v", time.Duration(got.LatencyWarmup), got.ThroughputMinDrop, got.InvalidInputTriggers, got.Services)
	}
	if got.ErrorMinEffect != cfg.ErrorMinEffect || got.Alpha != cfg.Alpha {
		t.Errorf("For(checkout) changed what the entry does not set")
	}
	other := cfg.For("search")
	other.Services = cfg.Services
	if other.LatencyWarmup != cfg.LatencyWarmup || other.ThroughputMinDrop != cfg.ThroughputMinDrop {
		t.Errorf("For(search), which has no entry, is not the config")
	}
}

// TestToleranceByBaseline: the latency tests against a previous version hold H0 to
// latency_tolerance (5 %, one sketch bin, by default), those of a series' own profile and a
// canary's cohort to latency_profile_tolerance (10 %, two bins), each overridable per service;
// the latency gate sits halfway between each tolerance and the minimum effect.
func TestToleranceByBaseline(t *testing.T) {
	v, o := 0.1, 0.0
	for _, tc := range []struct {
		name          string
		svc           ServiceConfig
		version, prof float64
	}{
		{"defaults", ServiceConfig{}, 0.05, 0.1},
		{"per service", ServiceConfig{LatencyTolerance: &v, LatencyProfileTolerance: &o}, 0.1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Services = map[string]ServiceConfig{"checkout": tc.svc}
			d := New(cfg)
			run(d, genScenario(5, healthy("1.0.0", 660, 20), healthy("1.1.0", 60, 20)), 0, 200)
			d.Advance(d.Watermark())
			key := SeriesKey{Service: "checkout", Component: "tax-calc", Version: "1.0.0"}
			old := d.series[key]
			key.Version = "1.1.0"
			ns := d.series[key]
			if old == nil || old.own == nil || !old.own.latOK || ns == nil || ns.ref == nil || !ns.ref.latOK {
				t.Fatalf("want the old version's own profile and the new version's reference, both with latency tests")
			}
			tn := d.tune("checkout")
			if got := tn.latencyTolerance(refBaselineCohort); got != tc.prof {
				t.Errorf("a canary's baseline cohort: tolerance %g, want latency_profile_tolerance's %g", got, tc.prof)
			}
			for _, c := range []struct {
				what string
				qt   *quantileTests
				sk   *ddsketch.DDSketch
				kind string
				tol  float64
			}{
				{"the reference of a previous version", &ns.ref.quantileTests, ns.ref.sk, refPreviousVersion, tc.version},
				{"the own profile", &old.own.quantileTests, old.own.sk, refOwnProfile, tc.prof},
			} {
				if got := tn.latencyTolerance(c.kind); got != c.tol {
					t.Errorf("%s: tolerance %g, want %g", c.what, got, c.tol)
				}
				if got, want := latencyGate(tn, c.kind), (c.tol+cfg.LatencyMinEffect)/2; math.Abs(got-want) > 1e-12 {
					t.Errorf("%s: gate %g, want %g", c.what, got, want)
				}
				// H0's rate at p50 is the share of the baseline above the threshold lowered by the
				// tolerance, in whole bins (the drift scales both counts, not their ratio; the own
				// profile has decayed a little since its thresholds were set). A bin moves it by
				// about 0.04 here.
				thr := c.qt.thr[0]
				want := fractionAbove(c.sk, thr.index-d.tolShift(c.tol))
				if got := c.qt.latP[0].rate(); math.Abs(got-want) > 0.01 {
					t.Errorf("%s: H0's p50 rate %.4f, want %.4f (the share above the threshold %d bins lower)", c.what, got, want, d.tolShift(c.tol))
				}
			}
		})
	}
}
