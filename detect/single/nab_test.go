package single

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/scalpel-dev/scalpel/detect/eval"
)

// nabDir finds the NAB corpus shipped next to the repository; the score test skips without it.
func nabDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("SCALPEL_NAB_DIR"); d != "" {
		return d
	}
	d := filepath.Join("..", "..", "..", "shared", "data", "nab")
	if _, err := os.Stat(filepath.Join(d, "labels", "combined_windows.json")); err != nil {
		t.Skip("NAB corpus not found; set SCALPEL_NAB_DIR")
	}
	return d
}

// TestNABScore runs the frozen default configuration over the NAB corpus and reports the scores;
// it fails only if the standard score falls below the floor recorded when the defaults were frozen,
// so a change that makes detection worse on real data is caught.
func TestNABScore(t *testing.T) {
	if testing.Short() {
		t.Skip("NAB run skipped in -short mode")
	}
	if raceEnabled {
		t.Skip("NAB run skipped under the race detector")
	}
	dir := nabDir(t)
	corpus, err := eval.LoadCorpus(filepath.Join(dir, "data"), filepath.Join(dir, "labels", "combined_windows.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	rep, err := eval.RunNAB(context.Background(), corpus, eval.NABOptions{
		Name:    "scalpel",
		New:     func() eval.Stepper { return New(cfg) },
		Results: filepath.Join(dir, "results"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		if err := rep.WriteTable(os.Stdout); err != nil {
			t.Fatal(err)
		}
	}
	if got := rep.Results[0].Total().By[eval.ProfileStandard].Normalized; got < nabFloor {
		t.Errorf("NAB standard score %.1f fell below the floor %.1f", got, nabFloor)
	}
}
