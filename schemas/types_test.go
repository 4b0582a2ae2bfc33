package schemas

import (
	"encoding/json"
	"testing"
)

func TestRequestsOfAResourceSample(t *testing.T) {
	v, lat := 0.3, 12.0
	for _, tt := range []struct {
		name string
		ev   TelemetryEvent
		want int64
	}{
		{"a request", TelemetryEvent{LatencyMS: &lat}, 1},
		{"a request with cpu", TelemetryEvent{LatencyMS: &lat, CPU: &v}, 1},
		{"a failed request with memory", TelemetryEvent{Error: ErrTimeout, MemMB: &v}, 1},
		{"an error site with cpu", TelemetryEvent{ErrorSite: "a.go:1", CPU: &v}, 1},
		{"an aggregate", TelemetryEvent{Count: 40, CPU: &v}, 40},
		{"an event with nothing", TelemetryEvent{}, 1},
		{"cpu alone", TelemetryEvent{CPU: &v}, 0},
		{"memory alone", TelemetryEvent{MemMB: &v}, 0},
		{"both alone", TelemetryEvent{CPU: &v, MemMB: &v}, 0},
	} {
		if got := tt.ev.Requests(); got != tt.want {
			t.Errorf("%s: Requests() = %d, want %d", tt.name, got, tt.want)
		}
		if got := tt.ev.IsResourceSample(); got != (tt.want == 0) {
			t.Errorf("%s: IsResourceSample() = %v", tt.name, got)
		}
	}
}

// A resource sample as README shows it is a valid event.
func TestResourceSampleIsValid(t *testing.T) {
	var ev TelemetryEvent
	raw := `{"ts":"2026-11-26T10:00:15Z","service":"checkout","component":"tax-calc","version":"2.4.0","cpu":0.31,"mem_mb":212}`
	if err := json.Unmarshal([]byte(raw), &ev); err != nil {
		t.Fatal(err)
	}
	if err := ev.Validate(); err != nil || !ev.IsResourceSample() || ev.Requests() != 0 {
		t.Fatalf("validate: %v, resource sample %v, requests %d", err, ev.IsResourceSample(), ev.Requests())
	}
}
