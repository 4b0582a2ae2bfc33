package pipeline_test

import (
	"fmt"
	"testing"

	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// TestEndToEndMildRegressionsStayOnTheBlock runs regressions milder than the usual fixture's, and
// with no error site to name the block: only the block's own series (a share of the component's
// traffic, so less data than the component's) can tell which block it is. The component's
// aggregate sees the same change sooner or as soon; the rollback must still be the block alone.
func TestEndToEndMildRegressionsStayOnTheBlock(t *testing.T) {
	tests := []struct {
		name string
		bad  sim.Behaviour
	}{
		{"latency x1.35", sim.Behaviour{ErrorRate: 0.005, ErrorCategory: schemas.ErrException, LatencyMedianMS: 27, LatencySigma: 0.35}},
		{"exceptions 0.5% to 6% without a site", sim.Behaviour{ErrorRate: 0.06, ErrorCategory: schemas.ErrException, LatencyMedianMS: 20, LatencySigma: 0.35}},
	}
	for _, tt := range tests {
		for seed := uint64(1); seed <= 3; seed++ {
			t.Run(fmt.Sprintf("%s/seed %d", tt.name, seed), func(t *testing.T) {
				h := start(t)
				svc := sim.Checkout(seed)
				svc.Block("tax-calc", "rate-lookup").Versions["2.0"] = tt.bad
				h.deployVersion2(svc)
				checkOneBlockRollback(t, h.commands())
			})
		}
	}
}
