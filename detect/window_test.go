package detect

import (
	"bytes"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// TestReplayFromMidStreamMatchesLive: replaying a range with a warm-up (as `scalpel replay
// --since` does, and as serve's restore does after a restart) gives the anomalies the live
// detector gave, even when the live detector had seen the old version for much longer. A new
// version's baseline is the old version's recent history at the deploy, and that history must
// depend on event time alone, not on when the detector first saw the series.
func TestReplayFromMidStreamMatchesLive(t *testing.T) {
	bad := healthy("1.1.0", 120, 20)
	bad.errRate = map[string]float64{"": 0.02, "rate-lookup": 0.26}
	events := genScenario(5, healthy("1.0.0", 47*60+13, 20), bad) // the deploy at t0+47m13s
	deploy := t0.Add(47*time.Minute + 13*time.Second)
	cfg := DefaultConfig()
	live := replay(cfg, events, 97)
	if len(live) == 0 {
		t.Fatal("live detector found nothing: the fixture is wrong")
	}
	// What the history can span: its blocks serve about 7 req/s, under history_min_requests an
	// epoch, so they keep older epochs, up to HistoryMaxEpochs.
	warmup := time.Duration(cfg.HistoryMaxEpochs+1) * time.Duration(cfg.HistoryEpoch)
	for _, extra := range []time.Duration{0, 17 * time.Second, 2*time.Minute + 31*time.Second, 4 * time.Minute} {
		from := deploy.Add(-warmup - extra)
		var tail []schemas.TelemetryEvent
		for _, ev := range events {
			if !ev.TS.Before(from) {
				tail = append(tail, ev)
			}
		}
		var got []schemas.Anomaly
		for _, a := range replay(cfg, tail, 97) {
			if a.Version == "1.1.0" {
				got = append(got, a)
			}
		}
		var want []schemas.Anomaly
		for _, a := range live {
			if a.Version == "1.1.0" {
				want = append(want, a)
			}
		}
		if g, w := encodeJSONL(t, got), encodeJSONL(t, want); !bytes.Equal(g, w) {
			t.Errorf("replay from %s before the deploy differs from live:\nreplay: %s\nlive:   %s", warmup+extra, g, w)
		}
	}
}

// TestSparseSeriesKeepsOlderEpochs: a series too sparse to fill HistoryMinRequests in an epoch
// keeps older epochs, up to HistoryMaxEpochs, so a deploy is compared with more than a few
// hundred requests; a busy one keeps two epochs. A replay that starts HistoryMaxEpochs+1 epochs
// before the deploy still freezes the live baseline and gives the live anomalies.
func TestSparseSeriesKeepsOlderEpochs(t *testing.T) {
	cfg := DefaultConfig()
	epoch := time.Duration(cfg.HistoryEpoch)
	bad := healthy("1.1.0", 1200, 0.5)
	bad.errRate = map[string]float64{"": 0.12}
	events := genScenario(8, healthy("1.0.0", 47*60+13, 0.5), bad)
	deploy := t0.Add(47*time.Minute + 13*time.Second)
	key := SeriesKey{Service: "checkout", Component: "tax-calc", Version: "1.1.0"}

	baselineAt := func(evs []schemas.TelemetryEvent) (*reference, []schemas.Anomaly) {
		d := New(cfg)
		var out []schemas.Anomaly
		var ref *reference
		for i := range evs {
			d.Observe(&evs[i])
			if (i+1)%7 == 0 {
				out = append(out, d.Advance(d.Watermark())...)
			}
			if s := d.series[key]; s != nil && ref == nil {
				ref = s.ref
			}
		}
		out = append(out, d.Advance(evs[len(evs)-1].TS.Add(time.Hour))...)
		var mine []schemas.Anomaly
		for _, a := range out {
			if a.Version == "1.1.0" {
				mine = append(mine, a)
			}
		}
		return ref, mine
	}
	from := func(before time.Duration) []schemas.TelemetryEvent {
		var tail []schemas.TelemetryEvent
		for _, ev := range events {
			if !ev.TS.Before(deploy.Add(-before)) {
				tail = append(tail, ev)
			}
		}
		return tail
	}

	live, liveOut := baselineAt(events)
	if live == nil || !live.ok {
		t.Fatalf("no conclusive baseline frozen: %+v", live)
	}
	// 0.5 req/s fills 1000 requests in 33 minutes: the baseline holds all six completed epochs
	// and the current one, about 34 minutes.
	if span := time.Duration(live.to-live.from+1) * time.Second; span < time.Duration(cfg.HistoryMaxEpochs)*epoch {
		t.Errorf("sparse baseline spans %s, want at least %d epochs", span, cfg.HistoryMaxEpochs)
	}
	if len(liveOut) == 0 {
		t.Fatal("the sparse regression was not found: the fixture is wrong")
	}
	for _, extra := range []time.Duration{0, 41 * time.Second, 3 * time.Minute} {
		warmup := time.Duration(cfg.HistoryMaxEpochs+1)*epoch + extra
		ref, out := baselineAt(from(warmup))
		if ref == nil || ref.n != live.n || ref.from != live.from || ref.errs != live.errs {
			t.Errorf("replay from %s before the deploy froze another baseline: %+v, live %+v", warmup, ref, live)
		}
		if g, w := encodeJSONL(t, out), encodeJSONL(t, liveOut); !bytes.Equal(g, w) {
			t.Errorf("replay from %s before the deploy differs from live:\nreplay: %s\nlive:   %s", warmup, g, w)
		}
	}
	// Two epochs of warm-up are not enough for a sparse series: the test can tell.
	if ref, _ := baselineAt(from(2 * epoch)); ref != nil && ref.n == live.n {
		t.Error("a two-epoch replay froze the full sparse baseline: the test cannot fail")
	}

	// A busy series keeps two epochs.
	d := New(cfg)
	busy := genScenario(9, healthy("1.0.0", 47*60, 20))
	run(d, busy, 0, 50)
	s := d.series[SeriesKey{Service: "checkout", Component: "tax-calc", Version: "1.0.0"}]
	if len(s.older) != 0 {
		t.Errorf("a series at 20 req/s keeps %d older epochs, want none", len(s.older))
	}
}
