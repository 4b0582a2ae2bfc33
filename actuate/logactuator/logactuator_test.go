package logactuator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/scalpel-dev/scalpel/actuate/actuatortest"
	"github.com/scalpel-dev/scalpel/actuate/logactuator"
)

// buffer is a concurrency-safe log sink the tests read back as JSON lines.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.b.String()), "\n") {
		if line == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

func newLogger(buf *buffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestConformance(t *testing.T) {
	actuatortest.Run(t, func(t *testing.T) actuatortest.Harness {
		buf := &buffer{}
		return actuatortest.Harness{
			Actuator: logactuator.New(newLogger(buf)),
			// The visible effect of the log actuator is a record at Info.
			Effects: func(context.Context) ([]string, error) {
				var ids []string
				for _, r := range buf.records(t) {
					if r["level"] == "INFO" && r["msg"] == logactuator.Message {
						ids = append(ids, r["command_id"].(string))
					}
				}
				return ids, nil
			},
		}
	})
}

func TestLogsAllFields(t *testing.T) {
	buf := &buffer{}
	a := logactuator.New(newLogger(buf))
	cmd := actuatortest.Command(t, 7)
	if err := a.Actuate(context.Background(), cmd); err != nil {
		t.Fatal(err)
	}
	if err := a.Actuate(context.Background(), cmd); err != nil {
		t.Fatal(err)
	}
	recs := buf.records(t)
	if len(recs) != 2 {
		t.Fatalf("got %d records, want 2", len(recs))
	}
	want := map[string]any{
		"level": "INFO", "msg": logactuator.Message, "command_id": cmd.ID, "decision_id": cmd.DecisionID,
		"incident_id": cmd.IncidentID, "action": "rollback", "granularity": "fine",
		"target": "checkout/tax-calc/block-7", "service": "checkout", "component": "tax-calc",
		"block": "block-7", "from_version": "2.4.0", "to_version": "2.3.9", "reason": cmd.Reason,
		"issued_at": "2026-11-26T10:00:00Z",
	}
	for k, v := range want {
		if recs[0][k] != v {
			t.Errorf("record[%s] = %v, want %v", k, recs[0][k], v)
		}
	}
	if recs[1]["level"] != "DEBUG" || recs[1]["repeat"] != true {
		t.Errorf("repeat record = %v, want a Debug record marked repeat", recs[1])
	}
}

func TestRememberIsBounded(t *testing.T) {
	buf := &buffer{}
	a := logactuator.New(newLogger(buf), logactuator.WithRemember(1))
	c1, c2 := actuatortest.Command(t, 1), actuatortest.Command(t, 2)
	for _, c := range []string{"1", "2", "1"} {
		cmd := c1
		if c == "2" {
			cmd = c2
		}
		if err := a.Actuate(context.Background(), cmd); err != nil {
			t.Fatal(err)
		}
	}
	info := 0
	for _, r := range buf.records(t) {
		if r["level"] == "INFO" {
			info++
		}
	}
	if info != 3 {
		t.Errorf("with room for one id, %d Info records, want 3 (the first id was forgotten)", info)
	}
}
