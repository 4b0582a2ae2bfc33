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

// TestEvalScenariosScrape: --scrape samples cpu and memory at the interval given in every
// scenario, leaves out the rows that set their own, and refuses an interval the detector does
// not take a sample to stand for.
func TestEvalScenariosScrape(t *testing.T) {
	out := runCLI(t, "eval", "scenarios", "--aa", "2", "--runs", "1", "--scrape", "30s", "--only", "^cpu x1.5", "-o", "json")
	var rep struct {
		Results []struct {
			Scenario struct {
				Name          string `json:"name"`
				ResourceEvery int    `json:"resource_every_s"`
			} `json:"scenario"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var names []string
	for _, r := range rep.Results {
		names = append(names, r.Scenario.Name)
		if r.Scenario.ResourceEvery != 30 || strings.Contains(r.Scenario.Name, "scraped") {
			t.Errorf("%s: resources every %d s", r.Scenario.Name, r.Scenario.ResourceEvery)
		}
	}
	if len(names) != 4 { // A/A, cpu x1.5, beside another component, without a deploy
		t.Errorf("scenarios %q", names)
	}
	for _, bad := range []string{"90s", "1500ms"} {
		root := newRootCmd()
		var buf bytes.Buffer
		root.SetOut(&buf)
		root.SetErr(&buf)
		root.SetArgs([]string{"eval", "scenarios", "--scrape", bad})
		if err := root.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "--scrape") {
			t.Errorf("--scrape %s: err %v, want one naming the flag", bad, err)
		}
	}
}
