package detect

import (
	"math"
	"strings"
	"testing"

	"github.com/scalpel-dev/scalpel/schemas"
)

// TestAlphaSharedAmongDeploy: a deploy's series share Alpha (Config.AlphaScope). Two
// components of checkout (each an aggregate and three blocks) move from 1.0.0 to 1.1.0 together,
// so each of their new series' tests has its threshold raised by log 8. Another service on the
// same version strings, and a third checkout component on versions of its own, are other
// deploys: 4 series each. With alpha_scope "series" nothing is shared.
func TestAlphaSharedAmongDeploy(t *testing.T) {
	bad := healthy("1.1.0", 120, 20)
	bad.errRate = map[string]float64{"": 0.02, "rate-lookup": 0.3}
	var events []schemas.TelemetryEvent
	for i, svcComp := range [][2]string{{"checkout", "tax-calc"}, {"checkout", "ship"}, {"cart", "tax-calc"}, {"checkout", "solo"}} {
		phases := []phase{healthy("1.0.0", 480, 20), healthy("1.1.0", 120, 20)}
		if i == 0 {
			phases[1] = bad
		}
		for _, ev := range genScenario(uint64(20+i), phases...) {
			ev.Service, ev.Component = svcComp[0], svcComp[1]
			if svcComp[1] == "solo" {
				ev.Version = "s" + ev.Version
			}
			events = append(events, ev)
		}
	}
	sortByTime(events)

	for _, scope := range []string{AlphaPerDeploy, AlphaPerSeries} {
		cfg := DefaultConfig()
		cfg.AlphaScope = scope
		d := New(cfg)
		var out []schemas.Anomaly
		for i := range events {
			d.Observe(&events[i])
			out = append(out, d.Advance(d.Watermark())...)
		}
		want := map[string]int{"checkout/tax-calc": 8, "checkout/ship": 8, "cart/tax-calc": 4, "checkout/solo": 4}
		seen := 0
		for k, s := range d.series {
			if k.Version != "1.1.0" && k.Version != "s1.1.0" {
				continue
			}
			seen++
			if s.ref == nil || !s.ref.ok {
				t.Fatalf("%s: no conclusive baseline", k)
			}
			k8 := want[k.Service+"/"+k.Component]
			wantF := math.Log(float64(k8))
			if scope == AlphaPerSeries {
				wantF = 0
			}
			if math.Abs(s.ref.family-wantF) > 1e-12 {
				t.Errorf("alpha_scope %s: %s shares alpha as log %.3g, want log %.3g", scope, k, math.Exp(s.ref.family), math.Exp(wantF))
			}
		}
		if seen != 16 {
			t.Fatalf("%d new series, want 16", seen)
		}
		found := false
		for _, a := range out {
			if a.Component != "tax-calc" || a.Service != "checkout" || a.Metric != schemas.MetricErrorRate {
				continue
			}
			found = true
			note := strings.Join(a.Evidence.Notes, "; ")
			if says := strings.Contains(note, "alpha shared among the deploy's 8 series"); says != (scope == AlphaPerDeploy) {
				t.Errorf("alpha_scope %s: the anomaly's note says %q", scope, note)
			}
		}
		if !found {
			t.Fatalf("alpha_scope %s: the error regression of checkout/tax-calc was not found", scope)
		}
	}
}
