package detect

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// silenceRun feeds svc at 40 req/s and another service at 40 req/s (which keeps the watermark
// moving) through the given phases: svc serves version v of each phase, or nothing where v is
// "". A restore at second restoreAt (0: none) continues from a snapshot instead of the detector.
func silenceRun(t *testing.T, restoreAt int, phases ...struct {
	to int
	v  string
}) []schemas.Anomaly {
	t.Helper()
	f := &feeder{d: New(DefaultConfig())}
	from := 0
	for _, p := range phases {
		for s := from; s < p.to; s++ {
			if s == restoreAt {
				snap, err := f.d.Snapshot()
				if err != nil {
					t.Fatal(err)
				}
				if f.d, err = Restore(DefaultConfig(), snap); err != nil {
					t.Fatal(err)
				}
			}
			f.run(s, s+1, 80, func(ts time.Time, i int) *schemas.TelemetryEvent {
				if i%2 == 1 {
					e := ev(ts, "1", 10, "")
					e.Service = "other"
					return e
				}
				if p.v == "" {
					return nil
				}
				return ev(ts, p.v, 10, "")
			})
		}
		from = p.to
	}
	return append(f.out, f.d.Advance(t0.Add(time.Duration(from)*time.Second+time.Hour))...)
}

type phase2 = struct {
	to int
	v  string
}

// TestSilentUnitAfterDeployIsReported: a new version that hangs or crashes once the old one's
// instances are gone leaves its unit without a single request. The throughput test read only
// buckets with requests, so a drop to one request a second fired within seconds and a drop to
// none was never reported. A busy unit's silence after a deploy now fires as a throughput drop
// to 0 on the new version, says it is a silence, and resolves when requests come back.
func TestSilentUnitAfterDeployIsReported(t *testing.T) {
	got := silenceRun(t, 0, phase2{600, "1"}, phase2{630, "2"}, phase2{700, ""}, phase2{760, "2"})
	if len(got) != 2 {
		t.Fatalf("want the silence fired and resolved, got %d anomalies: %+v", len(got), got)
	}
	a, r := got[0], got[1]
	silent := t0.Add(630 * time.Second)
	if a.Metric != schemas.MetricThroughput || a.Version != "2" || a.Observed != 0 || a.Status != schemas.AnomalyFiring {
		t.Fatalf("fired %+v", a)
	}
	if lag := a.TSDetected.Sub(silent); lag <= 0 || lag > 5*time.Second {
		t.Errorf("silence from %s reported at %s, want within 5s", silent, a.TSDetected)
	}
	if !slices.ContainsFunc(a.Evidence.Notes, func(n string) bool { return strings.HasPrefix(n, "silent: not one request since 2026-11-26T10:10:30Z") }) {
		t.Errorf("the anomaly does not say the unit fell silent: %q", a.Evidence.Notes)
	}
	if r.ID != a.ID || r.Status != schemas.AnomalyResolved || r.ResolvedAt == nil || r.ResolvedAt.Before(t0.Add(700*time.Second)) {
		t.Errorf("want the episode resolved after requests came back at 700s, got %+v", r)
	}

	// A restore in the middle of the silence continues it as the detector would have.
	if again := silenceRun(t, 632, phase2{600, "1"}, phase2{630, "2"}, phase2{700, ""}, phase2{760, "2"}); !bytes.Equal(encodeJSONL(t, again), encodeJSONL(t, got)) {
		t.Errorf("restored mid-silence:\n%s\nwant\n%s", encodeJSONL(t, again), encodeJSONL(t, got))
	}
}

// TestSilenceIsOnlyReadWhereItMeansSomething: the silence of a unit nobody changed is a
// process supervisor's to see, traffic that comes and goes is not a unit falling silent, and
// the end of the events (a replay's range, a flush) is not a silence either.
func TestSilenceIsOnlyReadWhereItMeansSomething(t *testing.T) {
	var burst []phase2 // 30 s of requests, 30 s of none, a deploy at 600 s
	for s := 0; s < 780; s += 60 {
		v := "1"
		if s >= 600 {
			v = "2"
		}
		burst = append(burst, phase2{s + 30, v}, phase2{s + 60, ""})
	}
	for name, phases := range map[string][]phase2{
		"no deploy":              {{600, "1"}, {700, ""}, {760, "1"}},
		"traffic comes and goes": burst,
		"the events end":         {{600, "1"}, {660, "2"}},
	} {
		if got := silenceRun(t, 0, phases...); len(got) != 0 {
			t.Errorf("%s: %d anomalies, first %+v", name, len(got), got[0])
		}
	}
}

// TestClockTicksMoveEventTime: with no other producer, a service that falls silent leaves event
// time where its last event put it, and nothing can be found silent. Clock ticks move event time
// on without a request: the silence is found, a tick makes no series, and a tick behind the
// watermark is neither late nor anything else.
func TestClockTicksMoveEventTime(t *testing.T) {
	run := func(ticks bool) (*Detector, []schemas.Anomaly) {
		f := &feeder{d: New(DefaultConfig())}
		f.run(0, 600, 40, func(ts time.Time, _ int) *schemas.TelemetryEvent { return ev(ts, "1", 10, "") })
		f.run(600, 630, 40, func(ts time.Time, _ int) *schemas.TelemetryEvent { return ev(ts, "2", 10, "") })
		for s := 630; s < 660 && ticks; s++ {
			tick := schemas.ClockTick(t0.Add(time.Duration(s) * time.Second))
			f.d.Observe(&tick)
			f.out = append(f.out, f.d.Advance(f.d.Watermark())...)
		}
		return f.d, f.out
	}
	if _, got := run(false); len(got) != 0 {
		t.Fatalf("without ticks: %+v", got)
	}
	d, got := run(true)
	if len(got) != 1 || !got[0].IsSilence() || got[0].Version != "2" {
		t.Fatalf("with ticks, want the silence of version 2, got %+v", got)
	}
	if lag := got[0].TSDetected.Sub(t0.Add(630 * time.Second)); lag > 5*time.Second {
		t.Errorf("silence found %s after it began", lag)
	}
	if n := d.SeriesCount(); n != 2 {
		t.Errorf("%d series, want the service's two versions: a tick made one", n)
	}
	old := schemas.ClockTick(t0)
	d.Observe(&old)
	if d.LateEvents() != 0 || d.InvalidEvents() != 0 {
		t.Errorf("a tick behind the watermark counted as late (%d) or invalid (%d)", d.LateEvents(), d.InvalidEvents())
	}
}
