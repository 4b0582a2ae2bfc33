package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/schemas"
)

func TestPublishFromStdinSkipsBadLines(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	if err := ingest.EnsureTopology(ctx, js, schemas.Subjects{}, ingest.DefaultTopologyConfig()); err != nil {
		t.Fatal(err)
	}
	in := strings.Join([]string{
		`{"service":"checkout","component":"tax-calc","version":"2.4.0","latency_ms":9}`,
		``,
		`{"service":"checkout","component":"tax-calc","version":"2.4.0","latency_ms":-1}`,
		`not json`,
		`{"id":"fixed-id","ts":"2026-11-26T10:00:00Z","service":"checkout","component":"cart","version":"1","error":"timeout"}`,
	}, "\n")
	var errw bytes.Buffer
	src := newStdinSource(strings.NewReader(in), &errw)
	st, err := runPublish(ctx, js, schemas.Subjects{}, src, 0, &errw)
	if err != nil {
		t.Fatal(err)
	}
	if st.Published != 2 || st.Invalid != 2 {
		t.Fatalf("stats %+v, want 2 published and 2 invalid", st)
	}
	for _, want := range []string{"line 3: latency_ms", "line 4: invalid character"} {
		if !strings.Contains(errw.String(), want) {
			t.Errorf("stderr %q lacks %q", errw.String(), want)
		}
	}
	s, err := js.Stream(ctx, schemas.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, "telemetry.checkout.cart")
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(jetstream.MsgIDHeader) != "fixed-id" {
		t.Errorf("Nats-Msg-Id = %q, want the event id", m.Header.Get(jetstream.MsgIDHeader))
	}
	// What publish sends, ingest accepts.
	if _, err := ingest.NewDecoder(ingest.DecoderConfig{}).Decode(m.Subject, m.Data, nil); err != nil {
		t.Errorf("ingest rejects published event: %v", err)
	}
	// Publishing the same ids again stores nothing new.
	src = newStdinSource(strings.NewReader(in), &errw)
	if _, err := runPublish(ctx, js, schemas.Subjects{}, src, 0, &errw); err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	if info.State.Msgs != 3 { // the line without id got a fresh one; the fixed id deduped
		t.Errorf("stream holds %d messages, want 3", info.State.Msgs)
	}
}

func TestPublishFromFlagsAndArray(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	subj := schemas.Subjects{Prefix: "acme"}
	if err := ingest.EnsureTopology(ctx, js, subj, ingest.DefaultTopologyConfig()); err != nil {
		t.Fatal(err)
	}
	lat := 12.5
	src := &flagSource{tmpl: schemas.TelemetryEvent{Service: "checkout", Component: "tax-calc", Version: "2", LatencyMS: &lat},
		failed: "timeout", errorRate: 0.5, count: 50}
	st, err := runPublish(ctx, js, subj, src, 0, &bytes.Buffer{})
	if err != nil || st.Published != 50 {
		t.Fatalf("stats %+v, err %v", st, err)
	}
	arr := `[{"service":"checkout","component":"tax-calc","version":"2"}, {"service":"x y","component":"c","version":"1"}]`
	var errw bytes.Buffer
	st, err = runPublish(ctx, js, subj, newStdinSource(strings.NewReader(arr), &errw), 0, &errw)
	if err != nil || st.Published != 1 || st.Invalid != 1 || !strings.Contains(errw.String(), "element 1: service") {
		t.Fatalf("array: stats %+v, err %v, stderr %q", st, err, errw.String())
	}
	s, _ := js.Stream(ctx, schemas.StreamTelemetry)
	info, _ := s.Info(ctx)
	if info.State.Msgs != 51 {
		t.Errorf("stream holds %d, want 51", info.State.Msgs)
	}
}

func TestPublishDurationAndRate(t *testing.T) {
	src := &flagSource{tmpl: schemas.TelemetryEvent{Service: "a"}, count: 1, duration: time.Second}
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	n := 0
	for ; n < 1000; n++ {
		if _, ok := src.next(now.Add(time.Duration(n) * 10 * time.Millisecond)); !ok {
			break
		}
	}
	if n != 100 {
		t.Errorf("--duration 1s without --count published %d events at 100/s, want 100", n)
	}
	tests := []struct {
		in   string
		want float64
		ok   bool
	}{{"", 0, true}, {"200/s", 200, true}, {"12.5", 12.5, true}, {"0", 0, false}, {"fast", 0, false}}
	for _, tt := range tests {
		got, err := parseRate(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("parseRate(%q) = %v, %v", tt.in, got, err)
		}
	}
}

// TestPublishWarnsOfTimestampsAhead: events stamped ahead of this machine's clock are published,
// since the server's clock decides, but publish says once that ingest will reject them.
func TestPublishWarnsOfTimestampsAhead(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	if err := ingest.EnsureTopology(ctx, js, schemas.Subjects{}, ingest.DefaultTopologyConfig()); err != nil {
		t.Fatal(err)
	}
	ahead := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	line := `{"ts":"` + ahead + `","service":"checkout","component":"cart","version":"1","latency_ms":3}`
	var errw bytes.Buffer
	st, err := runPublish(ctx, js, schemas.Subjects{}, newStdinSource(strings.NewReader(line+"\n"+line), &errw), 0, &errw)
	if err != nil {
		t.Fatal(err)
	}
	if st.Published != 2 {
		t.Fatalf("published %d of 2", st.Published)
	}
	if got := strings.Count(errw.String(), "ahead of this machine's clock"); got != 1 {
		t.Fatalf("%d warnings, want one:\n%s", got, errw.String())
	}
	if !strings.Contains(errw.String(), "line 1: warning: ts "+ahead) || !strings.Contains(errw.String(), "future_timestamp") {
		t.Errorf("the warning does not say which event and why:\n%s", errw.String())
	}
}
