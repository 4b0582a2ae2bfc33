package detect

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

var update = flag.Bool("update", false, "rewrite detect/testdata golden fixtures")

// replay drives a detector the way the pipeline does: Observe a batch, then Advance to the
// watermark; at the end the watermark moves past every event.
func replay(cfg Config, events []schemas.TelemetryEvent, batch int) []schemas.Anomaly {
	d := New(cfg)
	var out []schemas.Anomaly
	for i := range events {
		d.Observe(&events[i])
		if (i+1)%batch == 0 {
			out = append(out, d.Advance(d.Watermark())...)
		}
	}
	if len(events) > 0 {
		out = append(out, d.Advance(events[len(events)-1].TS.Add(time.Hour))...)
	}
	return out
}

func readEvents(t *testing.T, path string) []schemas.TelemetryEvent {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []schemas.TelemetryEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev schemas.TelemetryEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, ev)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func writeJSONL[T any](t *testing.T, path string, items []T) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for i := range items {
		if err := enc.Encode(items[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func encodeJSONL(t *testing.T, items []schemas.Anomaly) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for i := range items {
		if err := enc.Encode(items[i]); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// TestGolden runs every fixture: events in, anomalies out, byte for byte.
func TestGolden(t *testing.T) {
	for _, name := range slices.Sorted(mapsKeys(goldenCases)) {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("testdata", name)
			evPath := filepath.Join(dir, "events.jsonl")
			if *update {
				writeJSONL(t, evPath, goldenCases[name]())
			}
			events := readEvents(t, evPath)
			got := encodeJSONL(t, replay(DefaultConfig(), events, 64))
			goldPath := filepath.Join(dir, "anomalies.golden.jsonl")
			if *update {
				if err := os.WriteFile(goldPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(goldPath)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("anomalies differ from %s (run with -update to accept):\n got: %s\nwant: %s", goldPath, got, want)
			}
			// Replay determinism: a different batching gives the same bytes.
			if again := encodeJSONL(t, replay(DefaultConfig(), events, 7)); !bytes.Equal(again, got) {
				t.Errorf("output depends on batching:\n%s\nvs\n%s", again, got)
			}
		})
	}
}

// TestGoldenExpectations states what each fixture must show, so -update cannot bless a wrong
// answer silently.
func TestGoldenExpectations(t *testing.T) {
	tests := []struct {
		name   string
		metric string // "" = no anomaly at all
		block  string
		within time.Duration // from the new version's first event to detection
	}{
		{name: "aa_no_change"},
		{name: "sparse_traffic"},
		{name: "empty_window"},
		{name: "warm_up"},
		{name: "error_x5", metric: schemas.MetricErrorRate, block: "rate-lookup", within: 10 * time.Second},
		{name: "latency_x2", metric: schemas.MetricLatency, within: 10 * time.Second},
		{name: "canary_error_x5", metric: schemas.MetricErrorRate, within: 20 * time.Second},
		{name: "canary_shared_failure"},
		{name: "cpu_scraped_x1_5", metric: schemas.MetricCPU, within: time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events := readEvents(t, filepath.Join("testdata", tt.name, "events.jsonl"))
			got := replay(DefaultConfig(), events, 64)
			if tt.metric == "" {
				if len(got) != 0 {
					t.Fatalf("want no anomaly, got %d: %+v", len(got), got[0])
				}
				return
			}
			var first time.Time
			for _, ev := range events {
				if ev.Version == "1.1.0" {
					first = ev.TS
					break
				}
			}
			var hit *schemas.Anomaly
			for i := range got {
				a := &got[i]
				if a.Metric != tt.metric || a.Version != "1.1.0" {
					t.Errorf("unexpected anomaly %s %s@%s block=%q", a.Metric, a.Component, a.Version, a.Block)
					continue
				}
				if hit == nil {
					hit = a
				}
			}
			if hit == nil {
				t.Fatalf("no %s anomaly among %d", tt.metric, len(got))
			}
			if d := hit.TSDetected.Sub(first); d > tt.within {
				t.Errorf("detected after %s, want within %s", d, tt.within)
			}
			if tt.block != "" {
				named := false
				for _, a := range got {
					named = named || a.Block == tt.block
				}
				if !named {
					t.Errorf("no anomaly names block %s", tt.block)
				}
				if hit.Evidence.Blocks == nil {
					t.Errorf("anomaly carries no per-block evidence")
				}
			}
		})
	}
}
