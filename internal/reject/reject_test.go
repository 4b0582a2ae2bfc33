package reject

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/schemas"
)

func setup(t *testing.T) (jetstream.JetStream, *Publisher, *prometheus.Registry, jetstream.Stream) {
	t.Helper()
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	for _, sc := range []jetstream.StreamConfig{
		{Name: "SRC", Subjects: []string{"in.>"}},
		{Name: schemas.StreamRejected, Subjects: []string{"rejected.>"}},
	} {
		if _, err := js.CreateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	p, err := NewPublisher(js, schemas.Subjects{}, reg)
	if err != nil {
		t.Fatal(err)
	}
	rej, err := js.Stream(ctx, schemas.StreamRejected)
	if err != nil {
		t.Fatal(err)
	}
	return js, p, reg, rej
}

func TestRejectKeepsOriginalAndDedupesRedelivery(t *testing.T) {
	js, p, reg, rej := setup(t)
	ctx := context.Background()
	in := nats.NewMsg("in.x")
	in.Data = []byte(`{"latency_ms":-3}`)
	in.Header.Set("Trace", "abc")
	if _, err := js.PublishMsg(ctx, in, jetstream.WithMsgID("orig-1")); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateConsumer(ctx, "SRC", jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next()
	if err != nil {
		t.Fatal(err)
	}
	m := FromJetStream(msg)
	if m.Origin != "SRC:1" {
		t.Fatalf("origin = %q", m.Origin)
	}
	// Rejecting the same delivery twice (as after a redelivery) stores and counts it once.
	for range 2 {
		if err := p.Reject(ctx, "ingest", m, "invalid_value", "latency_ms: must be >= 0,\ngot -3"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := rej.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != "rejected.ingest" || string(got.Data) != string(in.Data) {
		t.Errorf("stored %s %q", got.Subject, got.Data)
	}
	for k, want := range map[string]string{
		schemas.HeaderRejectReason:     "latency_ms: must be >= 0, got -3",
		schemas.HeaderRejectSubject:    "in.x",
		HeaderClass:                    "invalid_value",
		HeaderStage:                    "ingest",
		HeaderOrigin:                   "SRC:1",
		"Trace":                        "abc",
		"Scalpel-Original-Nats-Msg-Id": "orig-1",
	} {
		if v := got.Header.Get(k); v != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	info, _ := rej.Info(ctx)
	if info.State.Msgs != 1 {
		t.Errorf("REJECTED holds %d messages, want 1", info.State.Msgs)
	}
	if v := counterValue(p.counter.WithLabelValues("ingest", "invalid_value")); v != 1 {
		t.Errorf("counter = %v, want 1", v)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "scalpel_rejected_total" || len(mfs[0].GetMetric()) != 1 {
		t.Errorf("registry holds %v (err %v), want one scalpel_rejected_total series", mfs, err)
	}
}

func TestRejectWithoutOriginAndSharedRegistry(t *testing.T) {
	js, p, reg, rej := setup(t)
	p2, err := NewPublisher(js, schemas.Subjects{}, reg)
	if err != nil {
		t.Fatalf("second publisher on the same registry: %v", err)
	}
	ctx := context.Background()
	p2.maxBody = 1000 // as if the server's max payload were small
	big := []byte(strings.Repeat("x", 5000))
	if err := p2.Reject(ctx, "ingest", Message{Subject: "telemetry.a.b", Data: big}, "oversize", "too big"); err != nil {
		t.Fatal(err)
	}
	got, err := rej.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Header.Get(HeaderTruncated) == "" || len(got.Data) >= len(big) {
		t.Errorf("oversize body not truncated: %d bytes", len(got.Data))
	}
	if v := counterValue(p.counter.WithLabelValues("ingest", "oversize")); v != 1 {
		t.Errorf("shared counter = %v, want 1", v)
	}
}

func TestHeaderValue(t *testing.T) {
	long := strings.Repeat("é", 400)
	if v := headerValue(long); len(v) > maxReasonLen+3 || !strings.HasSuffix(v, "...") {
		t.Errorf("len %d", len(v))
	}
	if v := headerValue("a\r\nb\nc"); v != "a b c" {
		t.Errorf("%q", v)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
