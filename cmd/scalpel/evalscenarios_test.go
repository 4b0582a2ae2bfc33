package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEvalScenariosConfig: the suite scores the detect section of a scalpel config file, and a
// file with a field the detector does not have is refused with the field's name.
func TestEvalScenariosConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole suite once")
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("detect:\n  alpha: 0.002\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := runCLI(t, "eval", "scenarios", "--aa", "3", "--runs", "1", "--config", good, "-o", "json")
	var rep struct {
		Config struct {
			Alpha float64 `json:"alpha"`
		} `json:"config"`
		AARuns  int       `json:"aa_runs"`
		AARate  []float64 `json:"aa_rate_ci95"`
		Results []struct {
			Scenario struct{ Name string } `json:"scenario"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rep.Config.Alpha != 0.002 || rep.AARuns != 3 || len(rep.AARate) != 2 || len(rep.Results) == 0 {
		t.Errorf("alpha %g, A/A runs %d, CI %v, %d results", rep.Config.Alpha, rep.AARuns, rep.AARate, len(rep.Results))
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("detect:\n  alpah: 0.002\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := newRootCmd()
	var buf bytes.Buffer
	root.SetOut(&buf)
	root.SetErr(&buf)
	root.SetArgs([]string{"eval", "scenarios", "--config", bad})
	err := root.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "alpah") {
		t.Fatalf("bad config: err %v, want one naming the field", err)
	}
}
