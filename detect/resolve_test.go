package detect

import (
	"testing"
	"time"
)

// TestResolvedAfterRollback: a bad 1.1.0 fires; traffic moves back to 1.0.0 (a rollback that
// helped) and the episode is announced resolved, with the same ID, within TrafficMovedAfter plus a
// bucket or two. A rollback that did not help (1.0.0 is bad too) must not resolve it.
func TestResolvedAfterRollback(t *testing.T) {
	bad := healthy("1.1.0", 60, 40)
	bad.errRate = map[string]float64{"": 0.3}
	tests := []struct {
		name     string
		after    phase
		resolved bool
	}{
		{"rollback helped", healthy("1.0.0", 60, 40), true},
		{"rollback did not help", func() phase { p := healthy("1.0.0", 60, 40); p.errRate = map[string]float64{"": 0.3}; return p }(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events := genScenario(3, healthy("1.0.0", 300, 40), bad, tt.after)
			rollback := t0.Add(360 * time.Second)
			for _, batch := range []int{1, 97, 1000} {
				out := replay(DefaultConfig(), events, batch)
				fired := map[string]bool{}
				var resolvedAt []time.Time
				for _, a := range out {
					if a.Version != "1.1.0" {
						continue
					}
					if !a.IsResolved() {
						fired[a.ID] = true
						continue
					}
					if !fired[a.ID] {
						t.Fatalf("batch %d: resolved %s without a firing notice", batch, a.ID)
					}
					if a.ResolvedAt == nil || a.Resolution == "" {
						t.Fatalf("batch %d: resolved notice without time or reason: %+v", batch, a)
					}
					resolvedAt = append(resolvedAt, *a.ResolvedAt)
				}
				if len(fired) == 0 {
					t.Fatalf("batch %d: the bad version never fired", batch)
				}
				if !tt.resolved {
					if len(resolvedAt) > 0 {
						t.Fatalf("batch %d: resolved although the restored version is bad too", batch)
					}
					continue
				}
				if len(resolvedAt) != len(fired) {
					t.Fatalf("batch %d: %d episodes fired, %d resolved", batch, len(fired), len(resolvedAt))
				}
				for _, at := range resolvedAt {
					if lag := at.Sub(rollback); lag < 0 || lag > 20*time.Second {
						t.Errorf("batch %d: resolved %s after the rollback, want within 20s", batch, lag)
					}
				}
			}
		})
	}
}
