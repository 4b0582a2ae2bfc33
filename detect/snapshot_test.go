package detect

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// snapshotStream is a stream that exercises every part of the state: a long-lived version with
// an own profile, a sparse series, a deploy that regresses on errors, latency, memory and cpu
// (at the process's load, process_rps), a rollback, then a cpu rise no deploy made (the own
// line pauses while it fires), a canary
// against its baseline cohort, and latencies spread widely enough to collapse sketch bins.
func snapshotStream() []schemas.TelemetryEvent {
	bad := healthy("1.1.0", 240, 20)
	bad.errRate = map[string]float64{"": 0.02, "rate-lookup": 0.3}
	bad.latMed *= 2
	bad.mem = 400
	bad.cpu = 0.6
	old := healthy("1.0.0", 14*60, 20)
	old.cpu = 0.3
	back := healthy("1.0.0", 180, 20)
	back.cpu = 0.3
	hot := healthy("1.0.0", 120, 20)
	hot.cpu = 0.45
	events := genScenario(11, old, bad, back, hot)
	for i := range events { // checkout's cpu samples say the process's load (process_rps)
		if events[i].CPU != nil {
			l := 25 + 5*math.Sin(float64(events[i].TS.Unix())/60)
			events[i].ProcessRPS = &l
		}
	}

	wide := healthy("1", 14*60+420, 8)
	wide.latSigma = 2.5 // e^±7.5 around the median: beyond 128 bins of 2.5 %
	canary := genScenario(12, wide)
	scraped := map[string]bool{} // cart reports cpu and memory every 15 s per cohort, as a scraper
	for i, ev := range canary {
		ev.Service, ev.Block, ev.Cohort = "cart", "", schemas.CohortBaseline
		ev.CPU, ev.MemMB = nil, nil
		if i%4 == 0 && ev.TS.After(t0.Add(12*time.Minute)) {
			ev.Version, ev.Cohort = "2", schemas.CohortCanary
			if i%3 == 0 {
				ev.Error = schemas.ErrTimeout
			}
		}
		sec := ev.TS.Unix()
		if k := fmt.Sprint(ev.Cohort, sec); sec%15 == map[string]int64{schemas.CohortBaseline: 3, schemas.CohortCanary: 2}[ev.Cohort] && !scraped[k] {
			scraped[k] = true
			cpu, mem := 0.3+0.02*math.Sin(float64(sec)), 300+5*math.Sin(0.7*float64(sec))
			if ev.Cohort == schemas.CohortCanary && ev.TS.After(t0.Add(17*time.Minute)) {
				cpu += 0.1 // the canary's cpu, against its cohort's latest sample
			}
			ev.CPU, ev.MemMB = &cpu, &mem
		}
		events = append(events, ev)
	}
	// A sparse series keeps older epochs (HistoryMinRequests).
	for _, ev := range genScenario(13, healthy("1", 14*60+420, 0.5)) {
		ev.Service, ev.Block = "search", ""
		events = append(events, ev)
	}
	sortByTime(events)
	return events
}

// sortByTime is stable: the generators' order within a timestamp is part of the fixture.
func sortByTime(evs []schemas.TelemetryEvent) {
	slices.SortStableFunc(evs, func(a, b schemas.TelemetryEvent) int { return a.TS.Compare(b.TS) })
}

// run feeds events to d in batches of batch (counted from the stream's start, so a run split in
// two advances at the same points as one run) and returns what it emits.
func run(d *Detector, events []schemas.TelemetryEvent, from, batch int) []schemas.Anomaly {
	var out []schemas.Anomaly
	for i := range events {
		d.Observe(&events[i])
		if (from+i+1)%batch == 0 {
			out = append(out, d.Advance(d.Watermark())...)
		}
	}
	return out
}

// roundTrip is d snapshotted and restored under cfg.
func roundTrip(t *testing.T, cfg Config, d *Detector) *Detector {
	t.Helper()
	snap, err := d.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Restore(cfg, snap)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSnapshotRestoreContinuesExactly(t *testing.T) {
	events := snapshotStream()
	cfg := DefaultConfig()
	cfg.OwnProfileWarmup = schemas.Duration(3 * time.Minute)
	const batch = 64
	end := events[len(events)-1].TS.Add(time.Hour)

	live := New(cfg)
	want := run(live, events, 0, batch)
	want = append(want, live.Advance(end)...)
	seen := map[string]bool{}
	for _, a := range want {
		seen[a.Metric+"/"+a.Cohort] = true
		seen[a.Test] = true
		if (a.Metric == schemas.MetricCPU || a.Metric == schemas.MetricMem) && a.Block != "" {
			t.Errorf("a %s anomaly names block %s: cpu and memory are the process's", a.Metric, a.Block)
		}
	}
	for _, m := range []string{"error_rate/", "latency/", "mem/", "cpu/", "error_rate/canary", "cpu/canary", testLoadFit, testOwnLoadFit, testConcurrentCohort} {
		if !seen[m] {
			t.Fatalf("the stream produced no %s anomaly (got %v): it no longer covers the state", m, seen)
		}
	}

	// Cuts from the first minutes to the end, through the deploy, the episodes, the rollback
	// and the canary; each falls on a batch boundary so both runs advance at the same points.
	// One more falls between the deploy and its first cpu comparison, 30 s in: the new
	// version's reference must carry what its cpu line was fitted against.
	var cuts []int
	for k := range 9 {
		cuts = append(cuts, len(events)*(2*k+1)/18/batch*batch)
	}
	deployed := t0.Add(14*time.Minute + 20*time.Second)
	cuts = append(cuts, slices.IndexFunc(events, func(e schemas.TelemetryEvent) bool { return !e.TS.Before(deployed) })/batch*batch)
	excess := false // a cut holds a reference whose tail excess is tested
	for _, cut := range cuts {
		first := New(cfg)
		got := run(first, events[:cut], 0, batch)
		for _, s := range first.series {
			excess = excess || s.ref != nil && s.ref.excessOn()
		}
		snap, err := first.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		// The detector that wrote the snapshot goes on too: the restored one must match it
		// bit for bit, and both must emit what a detector that never snapshotted emits.
		cont := slices.Clone(got)
		cont = append(cont, run(first, events[cut:], cut, batch)...)
		cont = append(cont, first.Advance(end)...)
		contState, err := first.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		restored, err := Restore(cfg, snap)
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		again, err := restored.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, snap) {
			t.Fatalf("cut %d: a restored detector's snapshot differs from the one it came from", cut)
		}
		got = append(got, run(restored, events[cut:], cut, batch)...)
		got = append(got, restored.Advance(end)...)
		if g, w := encodeJSONL(t, got), encodeJSONL(t, want); !bytes.Equal(g, w) {
			t.Errorf("cut at event %d of %d: restored detector differs from the uninterrupted one:\nrestored: %s\nlive:     %s", cut, len(events), g, w)
		}
		final, err := restored.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(final, contState) {
			t.Errorf("cut at event %d: final state differs from the snapshotting detector's", cut)
		}
		if g, w := encodeJSONL(t, cont), encodeJSONL(t, want); !bytes.Equal(g, w) {
			t.Errorf("cut at event %d: taking a snapshot changed what the detector emits", cut)
		}
	}
	if !excess {
		t.Error("no cut holds a reference whose tail excess is tested: the stream no longer covers it")
	}
}

func TestRestoreRefusesOtherConfigAndBadBytes(t *testing.T) {
	d := New(DefaultConfig())
	events := genScenario(3, healthy("1.0.0", 60, 20))
	run(d, events, 0, 10)
	snap, err := d.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	other := DefaultConfig()
	other.Alpha = 0.01
	if _, err := Restore(other, snap); !errors.Is(err, ErrSnapshotConfig) {
		t.Errorf("other config: got %v, want ErrSnapshotConfig", err)
	}
	for name, b := range map[string][]byte{
		"empty":     nil,
		"truncated": snap[:len(snap)/2],
		"trailing":  append(bytes.Clone(snap), 0),
		"version":   append(append([]byte(snapshotMagic), 99), snap[len(snapshotMagic)+1:]...),
	} {
		if _, err := Restore(DefaultConfig(), b); !errors.Is(err, ErrSnapshotCorrupt) {
			t.Errorf("%s: got %v, want ErrSnapshotCorrupt", name, err)
		}
	}
}

// FuzzRestore: no bytes make Restore panic or hang, and what it accepts it writes back in a form
// that restores to itself (the input may encode a sketch another valid way).
func FuzzRestore(f *testing.F) {
	d := New(DefaultConfig())
	withCPU := healthy("1.0.0", 30, 5)
	withCPU.cpu = 0.3 // a series' cpu line
	run(d, genScenario(3, withCPU), 0, 10)
	d.instances[instanceKey{"svc", "1.0.0", "pod-1"}] = &instanceSeen{first: 3, last: 9} // as latency_warmup keeps them
	snap, err := d.Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(snap)
	f.Add(snap[:len(snap)-3])
	// A canary next to a baseline cohort: its reference, concurrent check and the unit's line.
	c := New(DefaultConfig())
	run(c, cohorts(5, []phase{healthy("1.0.0", 20, 5)}, healthy("1.1.0", 10, 5), 10), 0, 10)
	if snap, err = c.Snapshot(); err != nil {
		f.Fatal(err)
	}
	f.Add(snap)
	// A new version compared with the old: its reference tests the tail's excess.
	x := New(DefaultConfig())
	run(x, genScenario(3, healthy("1.0.0", 60, 50), healthy("1.1.0", 20, 50)), 0, 64)
	if snap, err = x.Snapshot(); err != nil {
		f.Fatal(err)
	}
	f.Add(snap)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Restore(DefaultConfig(), b)
		if err != nil {
			return
		}
		once, err := r.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		r2, err := Restore(DefaultConfig(), once)
		if err != nil {
			t.Fatalf("a snapshot of an accepted input is refused: %v", err)
		}
		twice, err := r2.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(once, twice) {
			t.Fatalf("a snapshot of an accepted input does not restore to itself (%d vs %d bytes)", len(once), len(twice))
		}
	})
}

// A detector restored for one service keeps only that service's series and lines: the others'
// open buckets do not close into anomalies nobody fed.
func TestKeepService(t *testing.T) {
	d := New(DefaultConfig())
	for s := range 30 {
		for _, svc := range []string{"a", "b"} {
			lat := 20.0
			d.Observe(&schemas.TelemetryEvent{TS: t0.Add(time.Duration(s) * time.Second), Service: svc, Component: "c", Version: "1", LatencyMS: &lat})
		}
	}
	d.Advance(d.Watermark())
	before := d.SeriesCount()
	d.KeepService("a")
	if got := d.SeriesCount(); got != before/2 || got == 0 {
		t.Fatalf("SeriesCount after KeepService = %d, want half of %d", got, before)
	}
	if d.Status(SeriesKey{Service: "b", Component: "c", Version: "1"}).Known {
		t.Fatal("service b still known")
	}
	if !d.Status(SeriesKey{Service: "a", Component: "c", Version: "1"}).Known {
		t.Fatal("service a forgotten")
	}
	for _, a := range d.Advance(t0.Add(time.Hour)) {
		if a.Service != "a" {
			t.Fatalf("anomaly of a dropped service: %+v", a)
		}
	}
}

// TestSnapshotKeepsErrorDispersion: a series whose errors come in clumps measures a dispersion
// above 1, a new version's reference is frozen with it, and a restored detector has both.
func TestSnapshotKeepsErrorDispersion(t *testing.T) {
	p := healthy("1.0.0", 600, 50)
	p.errRate = map[string]float64{"": 0}
	next := healthy("1.1.0", 60, 50) // a deploy: its reference is frozen with the dispersion
	next.errRate = p.errRate
	events := genScenario(21, p, next)
	for i := 0; i < len(events); i += 250 { // a clump of five failures every 250 requests
		for k := i; k < min(i+5, len(events)); k++ {
			events[k].Error = schemas.ErrException
		}
	}
	d := New(DefaultConfig())
	run(d, events, 0, 64)
	d.Advance(events[len(events)-1].TS.Add(5 * time.Second))
	r := roundTrip(t, DefaultConfig(), d)
	exc := categoryIndex(schemas.ErrException)
	for k, s := range d.series {
		want := d.errorDispersion(s, exc)
		if s.aggregate && k.Version == "1.0.0" && want < 2 {
			t.Errorf("%v: errors in clumps of five measure a dispersion of %.2f", k, want)
		}
		if got := r.errorDispersion(r.series[k], exc); got != want {
			t.Errorf("%v: restored dispersion %.3f, want %.3f", k, got, want)
		}
		if s.ref != nil && s.aggregate {
			if s.ref.errPhi[exc] < 2 || r.series[k].ref.errPhi != s.ref.errPhi {
				t.Errorf("%v: reference frozen with dispersion %v, restored %v", k, s.ref.errPhi, r.series[k].ref.errPhi)
			}
		}
	}
}

// TestSnapshotKeepsTrafficDispersion: bursty traffic widens a unit line's throughput test
// (throughputStep), and a restored detector has the same width.
func TestSnapshotKeepsTrafficDispersion(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 77))
	f := &feeder{d: New(DefaultConfig())}
	mk := func(ts time.Time, _ int) *schemas.TelemetryEvent { return ev(ts, "1", 10, "") }
	for s := range 300 {
		f.run(s, s+1, poisson(rng, 50*math.Exp(0.5*rng.NormFloat64()-0.125)), mk)
	}
	r := roundTrip(t, DefaultConfig(), f.d)
	units := 0
	for k, ln := range f.d.lines {
		if ln.unit != ln {
			continue
		}
		units++
		if ln.tput.n < 2*throughputWarmup || ln.tputD < 0.1 {
			t.Errorf("%v: counts four times as variable as Poisson's measure %g over %d buckets", k, ln.tputD, ln.tput.n-throughputWarmup)
		}
		if got := r.lines[k].tputD; got != ln.tputD {
			t.Errorf("%v: restored %g, want %g", k, got, ln.tputD)
		}
	}
	if units == 0 {
		t.Fatal("no unit line")
	}
}

// TestSnapshotKeepsInstances: with latency_warmup, the instances a detector has seen start
// where they started after a restore, so none warms up twice and a restored detector leaves out
// exactly what the one that wrote the snapshot would have.
func TestSnapshotKeepsInstances(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LatencyWarmup = schemas.Duration(30 * time.Second)
	events := genScenario(26, healthy("1.0.0", 120, 20), healthy("1.1.0", 120, 20))
	for i := range events {
		events[i].Instance = fmt.Sprintf("pod-%d", i%3)
	}
	cut := len(events) / 2 / 64 * 64
	d := New(cfg)
	want := run(d, events, 0, 64)
	first := New(cfg)
	got := run(first, events[:cut], 0, 64)
	r := roundTrip(t, cfg, first)
	if len(first.instances) < 4 || !maps.EqualFunc(first.instances, r.instances, func(a, b *instanceSeen) bool { return *a == *b }) {
		t.Fatalf("restored instances differ: %d written, %d read", len(first.instances), len(r.instances))
	}
	got = append(got, run(r, events[cut:], cut, 64)...)
	if g, w := encodeJSONL(t, got), encodeJSONL(t, want); !bytes.Equal(g, w) {
		t.Errorf("restored detector differs:\nrestored: %s\nlive:     %s", g, w)
	}
	final, _ := r.Snapshot()
	live, _ := d.Snapshot()
	if !bytes.Equal(final, live) {
		t.Error("final state differs from the uninterrupted detector's")
	}
}

// TestClumpedBaselineSaysSo: errors ten times as frequent, in the same clumps of five, are
// still found against a clumped baseline, and the anomaly says its evidence was tempered.
func TestClumpedBaselineSaysSo(t *testing.T) {
	p := healthy("1.0.0", 600, 50)
	p.errRate = map[string]float64{"": 0}
	next := healthy("1.1.0", 120, 50)
	next.errRate = p.errRate
	events := genScenario(22, p, next)
	deploy := t0.Add(600 * time.Second)
	for i := 0; i < len(events); {
		every := 250
		if !events[i].TS.Before(deploy) {
			every = 25
		}
		for k := i; k < min(i+5, len(events)); k++ {
			events[k].Error = schemas.ErrException
		}
		i += every
	}
	d := New(DefaultConfig())
	out := run(d, events, 0, 64)
	for _, a := range out {
		if a.Metric == schemas.MetricErrorRate && a.Version == "1.1.0" && a.Block == "" {
			if !slices.ContainsFunc(a.Evidence.Notes, func(n string) bool { return strings.Contains(n, "came in clumps") }) {
				t.Errorf("the anomaly does not say its evidence was tempered: %q", a.Evidence.Notes)
			}
			return
		}
	}
	t.Fatal("errors ten times as frequent in the same clumps raised no component error anomaly")
}

// TestSnapshotKeepsDeployLong: an episode the deploy-long test opened (rateTest.long) goes on
// after a restore as it would have: it ends on its own evidence, not on a run's.
func TestSnapshotKeepsDeployLong(t *testing.T) {
	bad := healthy("1.1.0", 3600, 20)
	bad.errRate = map[string]float64{"": 0.03}
	events := genScenario(300, healthy("1.0.0", 450, 20), bad) // fires deploy-long (TestDeployLongAnomalySaysSo)
	cfg := DefaultConfig()
	d := New(cfg)
	want := run(d, events, 0, 64)
	var at time.Time
	for _, a := range want {
		if strings.Contains(strings.Join(a.Evidence.Notes, ";"), "deploy-long") {
			at = a.TSDetected
			break
		}
	}
	if at.IsZero() {
		t.Fatal("the stream no longer fires the deploy-long test")
	}
	cut := 0
	for cut < len(events) && events[cut].TS.Before(at.Add(time.Minute)) {
		cut++
	}
	cut = cut / 64 * 64
	first := New(cfg)
	got := run(first, events[:cut], 0, 64)
	long := 0
	for _, s := range first.series {
		for c := range s.errT {
			if s.errT[c].long {
				long++
			}
		}
	}
	if long == 0 {
		t.Fatal("no test fires on its deploy-long evidence at the cut")
	}
	r := roundTrip(t, cfg, first)
	got = append(got, run(r, events[cut:], cut, 64)...)
	if g, w := encodeJSONL(t, got), encodeJSONL(t, want); !bytes.Equal(g, w) {
		t.Errorf("restored detector differs:\nrestored: %s\nlive:     %s", g, w)
	}
}
