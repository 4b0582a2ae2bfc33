package detect

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// withinCases are regressions a test finds within a bucket: gross errors in every block, a
// tail-only latency regression (the slow path twice as slow) at 50 req/s, and every latency twice
// as slow at 20 req/s, in a new version and in a canary cohort, and gross errors in a canary. fired says whether the
// event is one that can carry the test over its threshold.
//
// With blocks, the first anomaly within a bucket is a block series' (the aggregate keeps the
// bucket's timing), which may be dated after the aggregate's at a close it comes out before.
// Without, the one series' anomaly is never dated later than at the bucket's close (noLater).
var withinCases = []struct {
	name    string
	events  func() []schemas.TelemetryEvent
	metric  string
	fired   func(*schemas.TelemetryEvent, schemas.Anomaly) bool
	noLater bool
}{
	{
		name: "errors x10",
		events: func() []schemas.TelemetryEvent {
			bad := healthy("1.1.0", 60, 20)
			bad.errRate = map[string]float64{"": 0.2}
			return genScenario(21, healthy("1.0.0", 300, 20), bad)
		},
		metric: schemas.MetricErrorRate,
		fired:  func(ev *schemas.TelemetryEvent, _ schemas.Anomaly) bool { return ev.Error == schemas.ErrException },
	},
	{
		// Without blocks: a component aggregate whose requests name blocks keeps the bucket's
		// timing (the block series of a third of the traffic do not test p99.9).
		name: "tail latency x2 without blocks",
		events: func() []schemas.TelemetryEvent {
			bad := healthy("1.1.0", 120, 50)
			bad.tailMul *= 2
			return withoutBlocks(genScenario(22, healthy("1.0.0", 300, 50), bad), "")
		},
		metric:  schemas.MetricLatency,
		fired:   slowerThanTail,
		noLater: true,
	},
	{
		// Every latency ×2 at 20 req/s: p50 decides, read as event time passes a bucket's end.
		name: "all latencies x2 without blocks",
		events: func() []schemas.TelemetryEvent {
			bad := healthy("1.1.0", 60, 20)
			bad.latMed *= 2
			return withoutBlocks(genScenario(23, healthy("1.0.0", 300, 20), bad), "")
		},
		metric:  schemas.MetricLatency,
		fired:   firstAfterEnd,
		noLater: true,
	},
	{
		// A canary cohort with every latency ×2 next to the baseline cohort: its latency tests
		// compare it with the cohort's frozen history, and need not wait for the close.
		name: "canary latencies x2",
		events: func() []schemas.TelemetryEvent {
			bad := healthy("1.1.0", 60, 20)
			bad.latMed *= 2
			return withCanary(24, bad)
		},
		metric: schemas.MetricLatency,
		fired: func(ev *schemas.TelemetryEvent, a schemas.Anomaly) bool {
			return a.Cohort == schemas.CohortCanary && firstAfterEnd(ev, a)
		},
		noLater: true,
	},
	{
		// A canary cohort failing 20 % of its requests next to the baseline cohort's 2 %: the
		// test against the cohort's history, and its concurrent check, the paired test, which
		// reads the cohort's open bucket of the same index as it stands.
		name: "canary errors x10",
		events: func() []schemas.TelemetryEvent {
			bad := healthy("1.1.0", 60, 20)
			bad.errRate = map[string]float64{"": 0.2}
			return withCanary(26, bad)
		},
		metric: schemas.MetricErrorRate,
		fired: func(ev *schemas.TelemetryEvent, a schemas.Anomaly) bool {
			return a.Cohort == schemas.CohortCanary && a.Metric == schemas.MetricErrorRate &&
				ev.Cohort == schemas.CohortCanary && ev.Error == schemas.ErrException
		},
		noLater: true,
	},
}

// withoutBlocks strips the events' blocks and error sites and puts them in cohort.
func withoutBlocks(evs []schemas.TelemetryEvent, cohort string) []schemas.TelemetryEvent {
	for i := range evs {
		evs[i].Block, evs[i].ErrorSite, evs[i].Cohort = "", "", cohort
	}
	return evs
}

// withCanary is a baseline cohort of 1.0.0 serving six minutes at 20 req/s and, from its fifth
// minute, a canary cohort serving canary; seed seeds the baseline, seed+1 the canary. Neither
// names blocks.
func withCanary(seed uint64, canary phase) []schemas.TelemetryEvent {
	return cohorts(seed, []phase{healthy("1.0.0", 360, 20)}, canary, 300)
}

// cohorts is a baseline cohort serving baseline and, from its second at, a canary cohort serving
// canary; seed seeds the baseline, seed+1 the canary. Neither names blocks.
func cohorts(seed uint64, baseline []phase, canary phase, at int) []schemas.TelemetryEvent {
	evs := withoutBlocks(genScenario(seed, baseline...), schemas.CohortBaseline)
	c := withoutBlocks(genScenario(seed+1, canary), schemas.CohortCanary)
	for i := range c {
		c[i].TS = c[i].TS.Add(time.Duration(at) * time.Second)
	}
	evs = append(evs, c...)
	slices.SortStableFunc(evs, func(a, b schemas.TelemetryEvent) int { return a.TS.Compare(b.TS) })
	return evs
}

// firstAfterEnd says whether ev is past the end of the bucket a is dated at: the event that
// moves event time past a bucket's end, after which every latency test reads the open buckets.
func firstAfterEnd(ev *schemas.TelemetryEvent, a schemas.Anomaly) bool {
	return a.TSDetected.Truncate(time.Second).Equal(a.TSDetected) && !ev.TS.Before(a.TSDetected)
}

// slowerThanTail says whether ev is slower than the threshold of a tail quantile: the baseline's
// p99, read off the detector that fired.
func slowerThanTail(ev *schemas.TelemetryEvent, a schemas.Anomaly) bool {
	return ev.LatencyMS != nil && *ev.LatencyMS > a.Baseline
}

// firstFiring drives d one event at a time, advancing to its watermark after each, and returns
// the first firing anomaly and the index of the event after which Advance returned it.
func firstFiring(t *testing.T, d *Detector, events []schemas.TelemetryEvent) (schemas.Anomaly, int) {
	t.Helper()
	for i := range events {
		d.Observe(&events[i])
		for _, a := range d.Advance(d.Watermark()) {
			if !a.IsResolved() {
				return a, i
			}
		}
	}
	t.Fatal("the regression was not detected")
	return schemas.Anomaly{}, 0
}

func TestTestsFireWithinBucket(t *testing.T) {
	for _, tc := range withinCases {
		t.Run(tc.name, func(t *testing.T) {
			events := tc.events()
			cfg := DefaultConfig()
			off := cfg
			off.FireWithinBucket = false

			a, i := firstFiring(t, New(cfg), events)
			if a.Metric != tc.metric {
				t.Fatalf("first anomaly is %s (%s), want %s", a.Metric, a.Test, tc.metric)
			}
			// It fired on a request that can carry the test over, as it arrived, and is dated by
			// it, or by the end of an older open bucket whose requests already carried it over.
			if !tc.fired(&events[i], a) {
				t.Errorf("fired after event %d, which cannot carry the test over: %+v", i, events[i])
			}
			at := a.TSDetected
			if !at.Equal(events[i].TS) && (!at.Before(events[i].TS) || !at.Truncate(time.Second).Equal(at)) || !a.Window.To.Equal(at) {
				t.Errorf("detected at %s (window to %s), want the crossing request's time %s or an earlier bucket's end", at, a.Window.To, events[i].TS)
			}

			b, j := firstFiring(t, New(off), events)
			// Without it, the test fires when its bucket closes: dated at the bucket's end, and
			// out once the watermark (newest event time minus the allowed lateness) has passed it.
			if end := b.TSDetected; end.Truncate(time.Second) != end {
				t.Errorf("at bucket close: detected at %s, not a bucket end", end)
			}
			if wait := events[j].TS.Sub(b.TSDetected); wait < time.Duration(cfg.AllowedLateness) {
				t.Errorf("at bucket close: returned %s after its bucket ended, want at least the allowed lateness", wait)
			}
			if tc.noLater && a.TSDetected.After(b.TSDetected) {
				t.Errorf("within the bucket: dated %s, after the bucket close's %s", a.TSDetected, b.TSDetected)
			}
			// Within the bucket it is out sooner.
			if i >= j {
				t.Errorf("within the bucket: returned after event %d; at bucket close: after event %d; want sooner", i, j)
			}
			t.Logf("within the bucket: %s (%s), returned after event %d; at bucket close: %s (%s), returned after event %d",
				a.TSDetected.Format(time.RFC3339Nano), a.Test, i, b.TSDetected.Format(time.RFC3339Nano), b.Test, j)

			// What it found does not depend on the batching: one event at a time and in batches
			// of 1000 give the same bytes.
			one, many := encodeJSONL(t, replay(cfg, events, 1)), encodeJSONL(t, replay(cfg, events, 1000))
			if !bytes.Equal(one, many) {
				t.Errorf("output depends on batching:\n%s\nvs\n%s", one, many)
			}
			if !bytes.Contains(one, []byte(a.ID)) {
				t.Errorf("a batched run does not report anomaly %s", a.ID)
			}
		})
	}
}

// TestSnapshotWithinBucket cuts the stream right after a test fired within a bucket, while the
// bucket is open and part of it is counted: the restored detector goes on as if never cut.
func TestSnapshotWithinBucket(t *testing.T) {
	for _, tc := range withinCases {
		t.Run(tc.name, func(t *testing.T) {
			events := tc.events()
			cfg := DefaultConfig()
			want := replay(cfg, events, 1)

			first := New(cfg)
			_, i := firstFiring(t, first, events)
			used := false
			for _, s := range first.series {
				for _, b := range s.open {
					used = used || b.used != nil
				}
			}
			if !used {
				t.Fatal("no open bucket holds what a test counted within it: the cut misses the state under test")
			}
			restored := roundTrip(t, cfg, first)
			// Up to the cut, what the uninterrupted run returned; after it, the restored
			// detector's.
			cut := New(cfg)
			var got []schemas.Anomaly
			for k := range events[:i+1] {
				cut.Observe(&events[k])
				got = append(got, cut.Advance(cut.Watermark())...)
			}
			for k := range events[i+1:] {
				restored.Observe(&events[i+1+k])
				got = append(got, restored.Advance(restored.Watermark())...)
			}
			got = append(got, restored.Advance(events[len(events)-1].TS.Add(time.Hour))...)
			if g, w := encodeJSONL(t, got), encodeJSONL(t, want); !bytes.Equal(g, w) {
				t.Errorf("restored within a bucket differs from the uninterrupted run:\nrestored: %s\nlive:     %s", g, w)
			}
		})
	}
}

// TestDisorderedStreamIndependentOfBatching feeds a stream whose events arrive up to about three
// seconds out of order, so some are late and dropped: what counts, what is dropped and what is
// found must not depend on where the batches end. Buckets used to close only when Advance ran, so
// an event older than the watermark counted when it came in the same batch as the newer one that
// moved the watermark.
func TestDisorderedStreamIndependentOfBatching(t *testing.T) {
	events := withinCases[0].events()
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range events {
		j := min(len(events)-1, i+rng.IntN(60)) // 60 events: three seconds at 20 req/s
		events[i], events[j] = events[j], events[i]
	}
	cfg := DefaultConfig()
	var want []byte
	var wantLate uint64
	for _, batch := range []int{1, 7, 64, 1000} {
		d := New(cfg)
		out := run(d, events, 0, batch)
		out = append(out, d.Advance(events[len(events)-1].TS.Add(time.Hour))...)
		got := encodeJSONL(t, out)
		if batch == 1 {
			want, wantLate = got, d.LateEvents()
			if wantLate == 0 || len(out) == 0 {
				t.Fatalf("the stream has %d late events and %d anomalies: it tests nothing", wantLate, len(out))
			}
			continue
		}
		if d.LateEvents() != wantLate {
			t.Errorf("batches of %d: %d late events, one at a time: %d", batch, d.LateEvents(), wantLate)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("batches of %d differ from one event at a time:\n%s\nvs\n%s", batch, got, want)
		}
	}
}
