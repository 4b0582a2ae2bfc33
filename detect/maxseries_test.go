package detect

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// TestMaxSeries: a producer that names a new series per event (here a component) stops growing
// the detector at MaxSeries. The events it refuses are counted, the first of a run is logged,
// the series it holds go on being detected on, a block's event still counts towards its
// component when only the block's series is refused, and an idle series' eviction makes room.
func TestMaxSeries(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxSeries = 3
	var logs bytes.Buffer
	d := New(cfg, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	at := func(sec int, comp, block string) *schemas.TelemetryEvent {
		e := ev(t0.Add(time.Duration(sec)*time.Second), "1", 10, "")
		e.Component, e.Block = comp, block
		return e
	}
	d.Observe(at(0, "a", ""))
	d.Observe(at(0, "b", ""))
	d.Observe(at(0, "a", "loop")) // a's block: the third series
	if got := d.SeriesCount(); got != 3 {
		t.Fatalf("SeriesCount = %d, want 3", got)
	}
	for i := range 5 {
		d.Observe(at(1, "c"+strings.Repeat("x", i), "")) // five new components, all refused
	}
	d.Observe(at(1, "b", "branch")) // b takes it; its block's series is refused, uncounted
	if got := d.SeriesCount(); got != 3 {
		t.Fatalf("SeriesCount = %d after the limit, want 3", got)
	}
	if got := d.OverLimitEvents(); got != 5 {
		t.Fatalf("OverLimitEvents = %d, want 5 (the block's event counted towards b)", got)
	}
	if n := strings.Count(logs.String(), "holding max_series"); n != 1 {
		t.Fatalf("logged the limit %d times, want once for the run:\n%s", n, logs.String())
	}
	if s := d.series[SeriesKey{Service: "svc", Component: "b", Version: "1"}]; s == nil {
		t.Fatal("b's aggregate is gone")
	} else {
		n := s.cur.n
		for _, b := range s.open {
			n += b.n
		}
		if n != 2 {
			t.Fatalf("b's aggregate holds %v requests, want 2 (its own and its block's)", n)
		}
	}

	// Snapshot and restore keep the count, as they keep the late and invalid ones.
	if got := roundTrip(t, cfg, d).OverLimitEvents(); got != 5 {
		t.Fatalf("restored OverLimitEvents = %d, want 5", got)
	}

	// a goes on serving; b and a's block fall idle. Each is its line's current version, which
	// idleness alone never evicts (the next version's baseline), but the detector is full: the
	// sweep evicts the longest idle, a's block (last seen at 0 s; b at 1 s), down to nine tenths
	// of the limit, and drops its line. That makes room for c.
	idle := int(time.Duration(cfg.IdleTTL)/time.Second) + 2*int(time.Duration(cfg.HistoryEpoch)/time.Second)
	for sec := 2; sec <= idle; sec++ {
		d.Observe(at(sec, "a", ""))
	}
	d.Advance(d.Watermark())
	block := SeriesKey{Service: "svc", Component: "a", Block: "loop", Version: "1"}
	if got := d.SeriesCount(); got != 2 || d.series[block] != nil {
		t.Fatalf("SeriesCount = %d after idle_ttl, want 2 with a's block evicted (%v)", got, d.series[block] == nil)
	}
	if d.lines[block.line()] != nil {
		t.Fatal("the evicted block's line is still held")
	}
	d.Observe(at(idle+1, "c", ""))
	if got := d.SeriesCount(); got != 3 || d.OverLimitEvents() != 5 {
		t.Fatalf("SeriesCount = %d, OverLimitEvents = %d after eviction, want c taken (3, 5)", got, d.OverLimitEvents())
	}
	// The state after the eviction snapshots and restores (no series points at a dropped line),
	// and the restored detector goes on as the original does.
	r := roundTrip(t, cfg, d)
	for _, det := range []*Detector{d, r} {
		det.Observe(at(idle+2, "e", ""))
		if got := det.SeriesCount(); got != 3 || det.OverLimitEvents() != 6 {
			t.Fatalf("SeriesCount = %d, OverLimitEvents = %d, want e refused (3, 6)", got, det.OverLimitEvents())
		}
	}
}
