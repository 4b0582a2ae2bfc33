package detect

import (
	"math"
	"strings"
	"testing"

	"github.com/scalpel-dev/scalpel/schemas"
)

// TestAlphaSharedAmongDeploy: a deploy's series share Alpha (Config.AlphaScope). Two
// components of checkout (each an aggregate and three blocks) move from 1.0.0 to 1.1.0 together,
// so their 8 new series share it: half evenly, half by their requests, so each component's
// aggregate, which serves as many requests as its three blocks together, gets more than a block,
// and the shares add up to one. Another service on the same version strings, and a third
// checkout component on versions of its own, are other deploys of 4 series each. With
// alpha_scope "series" nothing is shared.
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
		want := map[string]int32{"checkout/tax-calc": 8, "checkout/ship": 8, "cart/tax-calc": 4, "checkout/solo": 4}
		sum := map[int32]float64{} // by deploy size: 8 for checkout's, 4 for cart's and solo's (two deploys)
		seen := 0
		for k, s := range d.series {
			if k.Version != "1.1.0" && k.Version != "s1.1.0" {
				continue
			}
			seen++
			if s.ref == nil || !s.ref.ok {
				t.Fatalf("%s: no conclusive baseline", k)
			}
			share, n := math.Exp(-s.ref.family), s.ref.familyN
			if scope == AlphaPerSeries {
				if s.ref.family != 0 || n != 0 {
					t.Errorf("alpha_scope series: %s shares alpha among %d series (%g)", k, n, share)
				}
				continue
			}
			wantN := want[k.Service+"/"+k.Component]
			even := 0.5 / float64(wantN)
			if n != wantN || share < even || share > even+0.5 {
				t.Errorf("%s: share %.3g among %d series, want among %d, at least %.3g", k, share, n, wantN, even)
			}
			// An aggregate holds a quarter of the deploy's requests (each counts in its component
			// and in its block): ½/8 + ½·¼, three times an even share; a block ½/8 + ½/12.
			if k.Block == "" && share < 2*even {
				t.Errorf("%s: the aggregate's share %.3g, little more than an even one (%.3g)", k, share, even)
			}
			sum[wantN] += share
		}
		if seen != 16 {
			t.Fatalf("%d new series, want 16", seen)
		}
		if scope == AlphaPerDeploy && (math.Abs(sum[8]-1) > 0.01 || math.Abs(sum[4]-2) > 0.02) {
			t.Errorf("the shares of each deploy add up to %.4f (8 series) and %.4f (two deploys of 4), want 1 each", sum[8], sum[4])
		}
		found := false
		for _, a := range out {
			if a.Component != "tax-calc" || a.Service != "checkout" || a.Metric != schemas.MetricErrorRate {
				continue
			}
			found = true
			note := strings.Join(a.Evidence.Notes, "; ")
			if says := strings.Contains(note, "alpha shared among the deploy's 8 series (this one's share"); says != (scope == AlphaPerDeploy) {
				t.Errorf("alpha_scope %s: the anomaly's note says %q", scope, note)
			}
		}
		if !found {
			t.Fatalf("alpha_scope %s: the error regression of checkout/tax-calc was not found", scope)
		}
	}
}
