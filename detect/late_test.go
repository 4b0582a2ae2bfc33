package detect

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLateEventsAreReportedByProducer: a producer whose events arrive behind the watermark loses
// them to detection; the detector warns at the first and then at most once a minute of event
// time, with how many it dropped and which producer sent the latest, so an operator can find it.
func TestLateEventsAreReportedByProducer(t *testing.T) {
	var logs bytes.Buffer
	d := New(DefaultConfig(), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	behind := func(sec int) {
		e := ev(t0.Add(time.Duration(sec-30)*time.Second), "1", 10, "")
		e.Service, e.Component = "billing", "invoice"
		d.Observe(e)
	}
	for sec := range 200 {
		d.Observe(ev(t0.Add(time.Duration(sec)*time.Second), "1", 10, ""))
		if sec >= 40 {
			behind(sec) // 30 s behind: always late
		}
	}
	warnings := strings.Split(strings.TrimSpace(logs.String()), "\n")
	var late []string
	for _, w := range warnings {
		if strings.Contains(w, "dropping late telemetry") {
			late = append(late, w)
		}
	}
	// 160 late events from second 40 on: one warning at once, then at 100 s, 160 s.
	if len(late) != 3 {
		t.Fatalf("%d warnings about late events, want 3:\n%s", len(late), logs.String())
	}
	for i, want := range []string{"dropped=1 ", "dropped=60 ", "dropped=60 "} {
		if !strings.Contains(late[i], want) || !strings.Contains(late[i], "service=billing component=invoice") ||
			!strings.Contains(late[i], "behind_latest=30s") {
			t.Errorf("warning %d = %s; want %s from billing/invoice, 30s behind", i, late[i], want)
		}
	}
	if got := d.LateEvents(); got != 160 {
		t.Errorf("LateEvents = %d, want 160", got)
	}
}
