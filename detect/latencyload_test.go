package detect

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// spikeOf is p at three times the rate for secs seconds, every latency mul times p's: a traffic
// spike that slows the service.
func spikeOf(p phase, secs int, mul float64) phase {
	p.secs, p.rate, p.latMed = secs, p.rate*3, p.latMed*mul
	return p
}

// slowedBy is p for secs seconds with every latency mul times p's, at p's rate: a component
// whose processes another component's spike keeps busy.
func slowedBy(p phase, secs int, mul float64) phase {
	p.secs, p.latMed = secs, p.latMed*mul
	return p
}

// withNeighbour merges into events those of another component of the same service
// ("shipping"), generated from phases with seed.
func withNeighbour(events []schemas.TelemetryEvent, seed uint64, phases ...phase) []schemas.TelemetryEvent {
	other := genScenario(seed, phases...)
	for i := range other {
		other[i].Component, other[i].Block, other[i].ErrorSite = "shipping", "", ""
		other[i].ID = schemas.DeriveID("event", other[i].TS.Format(time.RFC3339Nano), other[i].Version, "shipping", strconv.Itoa(i))
	}
	out := append(slices.Clone(events), other...)
	slices.SortStableFunc(out, func(a, b schemas.TelemetryEvent) int { return a.TS.Compare(b.TS) })
	return out
}

// TestLatencyReadAtLoad: a traffic spike ×3 that slows every latency by 60 % (a service whose
// latency rises by 30 % of its load's rise, latency_load_share's default) is not a regression,
// after a deploy or without one; read without the load (share 0) it fires both tests. Nor is a
// spike ×3 on another component of the service, which serves three times as much, slowing this
// one by 45 % (the service's load ×2.5) while its own requests do not move. A regression beyond
// what the load explains is still found during the spike, and the anomaly says how its buckets
// were read.
func TestLatencyReadAtLoad(t *testing.T) {
	const warm = 660 // past the own profile's 10 min warm-up
	off := func(c *Config) { c.LatencyLoadShare = 0 }
	busy := func(v string, secs int) phase { return healthy(v, secs, 150) }
	tests := []struct {
		name      string
		cfg       func(*Config)
		phases    []phase
		neighbour []phase // another component's, of the same service and versions
		baseline  string  // "" = no anomaly at all; else the one expected's baseline
		whose     string  // the load the anomaly's latest bucket was read at, when it was
	}{
		{name: "spike after a deploy",
			phases: []phase{healthy("1.0.0", 600, 50), healthy("1.1.0", 60, 50), spikeOf(healthy("1.1.0", 0, 50), 60, 1.6), healthy("1.1.0", 120, 50)}},
		{name: "spike after a deploy, read without the load", cfg: off,
			phases:   []phase{healthy("1.0.0", 600, 50), healthy("1.1.0", 60, 50), spikeOf(healthy("1.1.0", 0, 50), 60, 1.6), healthy("1.1.0", 120, 50)},
			baseline: "1.0.0"},
		{name: "spike without a deploy",
			phases: []phase{healthy("1.0.0", warm, 50), spikeOf(healthy("1.0.0", 0, 50), 60, 1.6), healthy("1.0.0", 120, 50)}},
		{name: "spike without a deploy, read without the load", cfg: off,
			phases:   []phase{healthy("1.0.0", warm, 50), spikeOf(healthy("1.0.0", 0, 50), 60, 1.6), healthy("1.0.0", 120, 50)},
			baseline: "own profile (1h)"},
		{name: "every latency x2 during the spike",
			phases:   []phase{healthy("1.0.0", 600, 50), healthy("1.1.0", 60, 50), spikeOf(healthy("1.1.0", 0, 50), 60, 1.6*2), healthy("1.1.0", 120, 50)},
			baseline: "1.0.0"},
		{name: "spike on another component after a deploy",
			phases:    []phase{healthy("1.0.0", 600, 50), healthy("1.1.0", 60, 50), slowedBy(healthy("1.1.0", 0, 50), 60, 1.45), healthy("1.1.0", 120, 50)},
			neighbour: []phase{busy("1.0.0", 600), busy("1.1.0", 60), spikeOf(busy("1.1.0", 0), 60, 1.45), busy("1.1.0", 120)}},
		{name: "spike on another component after a deploy, read without the load", cfg: off,
			phases:    []phase{healthy("1.0.0", 600, 50), healthy("1.1.0", 60, 50), slowedBy(healthy("1.1.0", 0, 50), 60, 1.45), healthy("1.1.0", 120, 50)},
			neighbour: []phase{busy("1.0.0", 600), busy("1.1.0", 60), spikeOf(busy("1.1.0", 0), 60, 1.45), busy("1.1.0", 120)},
			baseline:  "1.0.0"},
		{name: "spike on another component without a deploy",
			phases:    []phase{healthy("1.0.0", warm, 50), slowedBy(healthy("1.0.0", 0, 50), 60, 1.45), healthy("1.0.0", 120, 50)},
			neighbour: []phase{busy("1.0.0", warm), spikeOf(busy("1.0.0", 0), 60, 1.45), busy("1.0.0", 120)}},
		{name: "every latency x2 during another component's spike",
			phases:    []phase{healthy("1.0.0", 600, 50), healthy("1.1.0", 60, 50), slowedBy(healthy("1.1.0", 0, 50), 60, 1.45*2), healthy("1.1.0", 120, 50)},
			neighbour: []phase{busy("1.0.0", 600), busy("1.1.0", 60), spikeOf(busy("1.1.0", 0), 60, 1.45), busy("1.1.0", 120)},
			baseline:  "1.0.0", whose: "service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			events := genScenario(31, tt.phases...)
			if tt.neighbour != nil {
				events = withNeighbour(events, 41, tt.neighbour...)
			}
			got := replay(cfg, events, 64)
			if again := replay(cfg, events, 1000); !bytes.Equal(encodeJSONL(t, again), encodeJSONL(t, got)) {
				t.Fatal("output depends on batching")
			}
			var lat []schemas.Anomaly
			for _, a := range got {
				if a.IsResolved() {
					continue
				}
				switch {
				case a.Metric != schemas.MetricLatency:
					t.Fatalf("unexpected anomaly: %s %s/%s against %s", a.Metric, a.Component, a.Block, a.BaselineVersion)
				case a.Component == "tax-calc":
					lat = append(lat, a)
				case tt.baseline == "": // the spiking component, which fires too when read without its load
					t.Fatalf("unexpected anomaly: %s/%s against %s, %v", a.Component, a.Block, a.BaselineVersion, a.Evidence.Notes)
				}
			}
			if tt.baseline == "" {
				if len(lat) > 0 {
					t.Fatalf("want no anomaly, got %d: %s against %s, %v", len(lat), lat[0].Block, lat[0].BaselineVersion, lat[0].Evidence.Notes)
				}
				return
			}
			if len(lat) == 0 {
				t.Fatalf("want a latency anomaly against %s, got none", tt.baseline)
			}
			a := lat[0]
			if a.BaselineVersion != tt.baseline {
				t.Fatalf("first anomaly against %s, want %s", a.BaselineVersion, tt.baseline)
			}
			note := strings.Join(a.Evidence.Notes, "\n")
			if want := fmt.Sprintf("latency_load_share %.3g", cfg.LatencyLoadShare); (cfg.LatencyLoadShare > 0) != strings.Contains(note, want) {
				t.Fatalf("notes say %q about the load (share %g):\n%s", want, cfg.LatencyLoadShare, note)
			}
			if want := "or whose service"; (cfg.LatencyLoadShare > 0 && tt.neighbour != nil) != strings.Contains(note, want) {
				t.Fatalf("notes name the service's load (%q) only when another component serves (%v):\n%s", want, tt.neighbour != nil, note)
			}
			if want := "at its " + tt.whose + "'s load"; tt.whose != "" && !strings.Contains(note, want) {
				t.Fatalf("notes do not say the latest bucket was read %q:\n%s", want, note)
			}
		})
	}
}

// TestSnapshotKeepsLoad: a snapshot in the middle of a spike keeps what the load is read against
// and by: each reference's usual rate and each component's requests in its newest bucket, so a
// restored detector reads the open bucket at the load the original does.
func TestSnapshotKeepsLoad(t *testing.T) {
	events := genScenario(32, healthy("1.0.0", 600, 50), healthy("1.1.0", 60, 50), spikeOf(healthy("1.1.0", 0, 50), 60, 1.6))
	cut := len(events) - len(events)/8 // a third of the way into the spike, within a bucket
	cfg := DefaultConfig()
	d := New(cfg)
	run(d, events[:cut], 0, 64)
	r := roundTrip(t, cfg, d)
	k := lineKey{Service: "checkout", Component: "tax-calc"}
	if got, want := r.lines[k].liveN, d.lines[k].liveN; got != want || want == 0 || r.lines[k].liveB != d.lines[k].liveB {
		t.Fatalf("restored component line counts %g requests in bucket %d, the original %g in %d",
			got, r.lines[k].liveB, want, d.lines[k].liveB)
	}
	shifted := false
	for key, s := range d.series {
		rs := r.series[key]
		if s.ref == nil {
			continue
		}
		if rs.ref.usual != s.ref.usual || s.ref.usual.comp == 0 || s.ref.usual.svc == 0 {
			t.Fatalf("%s: restored usual rates %+v, the original %+v", key, rs.ref.usual, s.ref.usual)
		}
		if rs.load != r.lines[k] || rs.svc != r.lines[lineKey{Service: "checkout"}] {
			t.Fatalf("%s: restored series reads its load off another line", key)
		}
		for i := range s.open {
			got, want := r.readShift(rs, &rs.open[i], rs.ref, false), d.readShift(s, &s.open[i], s.ref, false)
			if got != want {
				t.Fatalf("%s: restored detector reads bucket %d %d bins up, the original %d", key, s.open[i].idx, got, want)
			}
			shifted = shifted || want > 0
		}
	}
	if !shifted {
		t.Fatal("no open bucket is read at a load: the cut is not in the spike")
	}
}
