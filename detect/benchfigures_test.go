package detect

import "testing"

func TestBenchFigures(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("timing figures are meaningless under the race detector")
	}
	ns, mem := BenchFigures()
	t.Logf("%.0f ns/event, %.0f B/series", ns, mem)
	if ns <= 0 || mem <= 0 {
		t.Fatalf("implausible figures: %g ns/event, %g B/series", ns, mem)
	}
	// The target: a series in steady state (every epoch of history its traffic keeps, an own
	// profile) holds at most 8 KiB. Heap figures are deterministic enough for a bound: the same run measures within a
	// few bytes.
	if mem > 8192 {
		t.Errorf("memory per series %.0f B, target 8192 B", mem)
	}
}
