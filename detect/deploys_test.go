package detect

import (
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// TestDeploysIndex: the series of each deploy (Detector.deploys) are exactly the tracked series of
// its service, version and cohort, as series come, are swept when idle, are restored from a
// snapshot and are dropped with their service; and a deploy's share of Alpha counted over them is
// what a scan of every series gives.
func TestDeploysIndex(t *testing.T) {
	d := New(DefaultConfig())
	lat := 20.0
	feed := func(from, to time.Duration, version string, services ...string) {
		for ts := from; ts < to; ts += time.Second {
			for _, svc := range services {
				for _, comp := range []string{"c0", "c1"} {
					for _, cohort := range []string{"", schemas.CohortCanary} {
						e := schemas.TelemetryEvent{TS: t0.Add(ts), Service: svc, Component: comp, Block: "b",
							Version: version, Cohort: cohort, LatencyMS: &lat}
						if cohort != "" && version == "1" {
							continue
						}
						d.Observe(&e)
					}
				}
			}
		}
		d.Advance(d.Watermark())
	}
	check := func(when string) {
		t.Helper()
		seen := 0
		for k, head := range d.deploys {
			if head == nil || head.deployPrev != nil {
				t.Fatalf("%s: deploy %v starts with %v", when, k, head)
			}
			for s := head; s != nil; s = s.deployNext {
				if seen++; s.key.deploy() != k || d.series[s.key] != s {
					t.Fatalf("%s: deploy %v lists %s, which is not one of its tracked series", when, k, s.key)
				}
				if s.deployNext != nil && s.deployNext.deployPrev != s {
					t.Fatalf("%s: %s's next does not link back", when, s.key)
				}
			}
		}
		if seen != len(d.series) {
			t.Fatalf("%s: the deploys list %d series, the detector tracks %d", when, seen, len(d.series))
		}
		b := d.closed + 1
		for _, src := range d.series {
			share, k := d.deployShare(src, b)
			wantShare, wantK := scanShare(d, src, b)
			if share != wantShare || k != wantK {
				t.Fatalf("%s: %s's share %v over %d series, a scan of every series gives %v over %d", when, src.key, share, k, wantShare, wantK)
			}
		}
	}

	feed(0, 20*time.Minute, "1", "a", "b")
	check("version 1")
	if len(d.deploys) != 2 || len(d.series) != 8 {
		t.Fatalf("%d deploys of %d series, want 2 of 8", len(d.deploys), len(d.series))
	}
	feed(20*time.Minute, 25*time.Minute, "2", "a", "b")
	check("version 2 with a canary")
	feed(25*time.Minute, time.Hour, "2", "a") // b goes idle; version 1's series are swept
	check("after a sweep")
	if d.deploys[deployKey{Service: "a", Version: "1"}] != nil {
		t.Fatal("a's version 1 was not swept: the test does not exercise unlink")
	}
	snap, err := d.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if d, err = Restore(d.Config(), snap); err != nil {
		t.Fatal(err)
	}
	check("restored")
	d.KeepService("a")
	check("only service a")
	feed(time.Hour, time.Hour+time.Minute, "3", "a")
	check("version 3")
}

// scanShare is deployShare as a scan of every series tracked.
func scanShare(d *Detector, src *series, b int64) (float64, int) {
	from := d.epochOf(b) - int64(d.cfg.HistoryMaxEpochs)*d.epochBuckets
	var all, own float64
	k := 0
	for key, s := range d.series {
		if key.deploy() != src.key.deploy() || s.lastB < from {
			continue
		}
		k++
		all += s.recentRequests()
		if s == src {
			own = s.recentRequests()
		}
	}
	if k <= 1 || all <= 0 {
		return 1, k
	}
	return 0.5/float64(k) + 0.5*own/all, k
}
