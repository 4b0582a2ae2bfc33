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
}
