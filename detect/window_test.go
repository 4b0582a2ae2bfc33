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
	warmup := 2 * time.Duration(cfg.HistoryEpoch) // what the history can span
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
