package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/internal/metricstest"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/reject"
	"github.com/scalpel-dev/scalpel/schemas"
)

// recorder is a Handler that keeps every event it is given.
type recorder struct {
	mu     sync.Mutex
	events []schemas.TelemetryEvent
	fail   int // fail this many calls first
	calls  int
	seqs   []uint64 // BatchLastSeq of every successful call
}

func (r *recorder) HandleTelemetry(ctx context.Context, evs []schemas.TelemetryEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.fail > 0 {
		r.fail--
		return errors.New("downstream not ready")
	}
	r.events = append(r.events, evs...)
	if seq, ok := BatchLastSeq(ctx); ok {
		r.seqs = append(r.seqs, seq)
	}
	return nil
}

func (r *recorder) versions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.events))
	for i, e := range r.events {
		out[i] = e.Version
	}
	return out
}

func (r *recorder) waitFor(t *testing.T, n int) {
	t.Helper()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := len(r.versions()); got < n {
			return fmt.Errorf("handled %d events, want %d", got, n)
		}
		return nil
	})
}

func ev(version string) string {
	return `{"ts":"2026-11-26T10:00:00Z","service":"checkout","component":"tax-calc","version":"` + version + `","latency_ms":5}`
}

func startConsumer(t *testing.T, js jetstream.JetStream, h Handler, reg *prometheus.Registry, cfg Config) *Consumer {
	t.Helper()
	c, err := NewConsumer(js, schemas.Subjects{}, cfg, h, WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		<-c.Done()
	})
	return c
}

// connectWithTopology starts an embedded server and creates scalpel's streams on it.
func connectWithTopology(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	_, _, js := natstest.Connect(tb)
	if err := EnsureTopology(context.Background(), js, schemas.Subjects{}, DefaultTopologyConfig()); err != nil {
		tb.Fatal(err)
	}
	return js
}

// waitAllAcked waits until cons has acknowledged everything through stream sequence floor, with
// nothing unacknowledged or pending.
func waitAllAcked(t *testing.T, cons jetstream.Consumer, floor uint64) {
	t.Helper()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		ci, err := cons.Info(context.Background())
		if err != nil {
			return err
		}
		if ci.AckFloor.Stream != floor || ci.NumAckPending != 0 || ci.NumPending != 0 {
			return fmt.Errorf("ack floor %d, %d unacked, %d pending; want %d, 0, 0", ci.AckFloor.Stream, ci.NumAckPending, ci.NumPending, floor)
		}
		return nil
	})
}

func publish(t *testing.T, js jetstream.JetStream, subject string, body string) {
	t.Helper()
	if _, err := js.Publish(context.Background(), subject, []byte(body)); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := metricstest.Value(t, reg, name, labels)
	return v
}

func TestConsumerRoutesGoodAndBad(t *testing.T) {
	js := connectWithTopology(t)
	ctx := context.Background()
	rec := &recorder{}
	reg := prometheus.NewRegistry()
	startConsumer(t, js, rec, reg, Config{MaxMessageBytes: 4096})

	const subj = "telemetry.checkout.tax-calc"
	bad := []struct {
		name, subject, body, class, reason string
	}{
		{"malformed JSON", subj, `{"ts":`, ClassMalformed, "malformed JSON at offset 6"},
		{"wrong type", subj, strings.Replace(ev("x"), `"latency_ms":5`, `"latency_ms":"5"`, 1), ClassWrongType, "latency_ms: want number, got string"},
		{"negative latency", subj, strings.Replace(ev("x"), `"latency_ms":5`, `"latency_ms":-3`, 1), ClassInvalid, "latency_ms: must be a finite number >= 0, got -3"},
		{"unknown error category", subj, strings.Replace(ev("x"), `"latency_ms":5`, `"error":"boom"`, 1), ClassInvalid, `error: "boom"`},
		{"subject mismatch", "telemetry.payments.tax-calc", ev("x"), ClassSubject, `does not match body service "checkout"`},
		{"unknown field", subj, strings.Replace(ev("x"), `"latency_ms":5`, `"latency_msec":5`, 1), ClassUnknownField, `unknown field "latency_msec"`},
		{"oversize", subj, `{"pad":"` + strings.Repeat("x", 5000) + `"}`, ClassOversize, "exceeds max 4096"},
	}
	publish(t, js, subj, ev("v0"))
	for i, b := range bad {
		publish(t, js, b.subject, b.body)
		publish(t, js, subj, ev(fmt.Sprintf("v%d", i+1)))
	}
	// A batch in one message, as NDJSON.
	publish(t, js, subj, ev("v8")+"\n"+ev("v9")+"\n")

	rec.waitFor(t, 10)
	want := []string{"v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9"}
	if got := rec.versions(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events = %v, want %v in order", got, want)
	}

	rejected, err := js.Stream(ctx, schemas.StreamRejected)
	if err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		info, err := rejected.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != uint64(len(bad)) {
			return fmt.Errorf("REJECTED holds %d, want %d", info.State.Msgs, len(bad))
		}
		return nil
	})
	for i, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			m, err := rejected.GetMsg(ctx, uint64(i+1))
			if err != nil {
				t.Fatal(err)
			}
			if m.Subject != "rejected.ingest" {
				t.Errorf("subject %s", m.Subject)
			}
			if got := m.Header.Get(schemas.HeaderRejectReason); !strings.Contains(got, b.reason) {
				t.Errorf("reason %q, want it to contain %q", got, b.reason)
			}
			if got := m.Header.Get(schemas.HeaderRejectSubject); got != b.subject {
				t.Errorf("reject subject %q, want %q", got, b.subject)
			}
			if got := m.Header.Get(reject.HeaderClass); got != b.class {
				t.Errorf("class %q, want %q", got, b.class)
			}
			if string(m.Data) != b.body {
				t.Errorf("body not kept verbatim")
			}
			if v := metricValue(t, reg, "scalpel_rejected_total", map[string]string{"stage": "ingest", "reason_class": b.class}); v < 1 {
				t.Errorf("scalpel_rejected_total{reason_class=%q} = %v", b.class, v)
			}
		})
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if v := metricValue(t, reg, "scalpel_ingest_messages_total", nil); v != 16 {
			return fmt.Errorf("messages_total = %v, want 16", v)
		}
		if v := metricValue(t, reg, "scalpel_ingest_events_total", nil); v != 10 {
			return fmt.Errorf("events_total = %v, want 10", v)
		}
		return nil
	})
}

func TestConsumerRestartContinuesWithoutLossOrRedelivery(t *testing.T) {
	js := connectWithTopology(t)
	ctx := context.Background()
	const subj = "telemetry.checkout.tax-calc"
	for i := range 50 {
		publish(t, js, subj, ev(fmt.Sprintf("a%d", i)))
	}
	first := &recorder{}
	// A short AckWait: a delivery that went to the stopped instance's last pull request comes back fast.
	cfg := Config{BatchSize: 7, AckWait: schemas.Duration(time.Second)}
	c1, err := NewConsumer(js, schemas.Subjects{}, cfg, first)
	if err != nil {
		t.Fatal(err)
	}
	if err := c1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	first.waitFor(t, 50)
	c1.Drain()
	<-c1.Done()

	for i := range 30 {
		publish(t, js, subj, ev(fmt.Sprintf("b%d", i)))
	}
	second := &recorder{}
	startConsumer(t, js, second, prometheus.NewRegistry(), cfg)
	second.waitFor(t, 30)
	seen := map[string]int{}
	for _, v := range second.versions() {
		seen[v]++
	}
	for i := range 30 {
		if v := fmt.Sprintf("b%d", i); seen[v] != 1 {
			t.Errorf("%s handled %d times after restart, want once", v, seen[v])
		}
	}
	if len(seen) != 30 {
		t.Errorf("after restart handled %v, want exactly b0..b29 (no acknowledged work again)", second.versions())
	}
	for i := range 50 {
		if first.versions()[i] != fmt.Sprintf("a%d", i) {
			t.Fatalf("first run out of order at %d: %v", i, first.versions())
		}
	}
}

func TestConsumerRetriesFailedBatchInOrder(t *testing.T) {
	js := connectWithTopology(t)
	rec := &recorder{fail: 2}
	reg := prometheus.NewRegistry()
	startConsumer(t, js, rec, reg, Config{RetryDelay: schemas.Duration(10 * time.Millisecond)})
	for i := range 20 {
		publish(t, js, "telemetry.checkout.tax-calc", ev(fmt.Sprintf("v%d", i)))
	}
	rec.waitFor(t, 20)
	got := rec.versions()
	for i := range 20 {
		if got[i] != fmt.Sprintf("v%d", i) {
			t.Fatalf("events %v not each once in order", got)
		}
	}
	if len(got) != 20 {
		t.Fatalf("got %d events, want 20", len(got))
	}
	if v := metricValue(t, reg, "scalpel_ingest_retries_total", nil); v != 2 {
		t.Errorf("retries_total = %v, want 2", v)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero is defaults", Config{}, true},
		{"defaults", DefaultConfig(), true},
		{"dotted durable", Config{Durable: "a.b"}, false},
		{"durable with a space", Config{Durable: "a b"}, false},
		{"durable with a slash", Config{Durable: "a/b"}, false},
		{"durable of letters, digits, - and _", Config{Durable: "scalpel_ingest-2"}, true},
		{"negative batch", Config{BatchSize: -1}, false},
		{"ack wait too short", Config{AckWait: schemas.Duration(time.Millisecond)}, false},
		{"max ack pending below batch", Config{BatchSize: 100, MaxAckPending: 10}, false},
		{"max deliver -2", Config{MaxDeliver: -2}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("%v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestNumPending(t *testing.T) {
	tests := []struct {
		reply string
		want  uint64
		ok    bool
	}{
		{"$JS.ACK.TELEMETRY.scalpel-ingest.1.42.42.1764151200000000000.17", 17, true},
		{"$JS.ACK.hub.ACCHASH.TELEMETRY.scalpel-ingest.1.42.42.1764151200000000000.0.rnd", 0, true},
		{"$JS.ACK.short", 0, false},
		{"_INBOX.x", 0, false},
	}
	for _, tt := range tests {
		got, ok := numPending(tt.reply)
		if got != tt.want || ok != tt.ok {
			t.Errorf("numPending(%q) = %d, %v; want %d, %v", tt.reply, got, ok, tt.want, tt.ok)
		}
	}
}

func TestStreamSeq(t *testing.T) {
	tests := []struct {
		reply string
		want  uint64
		ok    bool
	}{
		{"$JS.ACK.TELEMETRY.scalpel-ingest.1.42.40.1764151200000000000.17", 42, true},
		{"$JS.ACK.hub.ACCHASH.TELEMETRY.scalpel-ingest.2.7.9.1764151200000000000.0.rnd", 7, true},
		{"$JS.ACK.TELEMETRY.scalpel-ingest.1.x.40.1764151200000000000.17", 0, false},
		{"$JS.ACK.short", 0, false},
		{"_INBOX.x", 0, false},
	}
	for _, tt := range tests {
		got, ok := streamSeq(tt.reply)
		if got != tt.want || ok != tt.ok {
			t.Errorf("streamSeq(%q) = %d, %v; want %d, %v", tt.reply, got, ok, tt.want, tt.ok)
		}
		// Both forms carry when the server stored the message (the third, whatever its sequence).
		wantStored := strings.Count(tt.reply, ".") >= 8
		if _, stored := ackMeta(tt.reply); wantStored != !stored.IsZero() || wantStored && !stored.Equal(time.Unix(0, 1764151200000000000)) {
			t.Errorf("ackMeta(%q) stored at %v", tt.reply, stored)
		}
	}
}

// TestConsumerBatchLastSeq: the handler learns how far in the stream each batch reaches, and the
// last batch reaches the last message published.
func TestConsumerBatchLastSeq(t *testing.T) {
	js := connectWithTopology(t)
	ctx := context.Background()
	if _, ok := BatchLastSeq(ctx); ok {
		t.Fatal("BatchLastSeq outside a handler call reports a sequence")
	}
	// Another subject in the stream first, so stream and consumer sequences differ.
	publish(t, js, "telemetry.ledger.post", ev("other"))
	var last uint64
	for i := range 30 {
		ack, err := js.Publish(ctx, "telemetry.checkout.tax-calc", []byte(ev(fmt.Sprintf("v%d", i))))
		if err != nil {
			t.Fatal(err)
		}
		last = ack.Sequence
	}
	rec := &recorder{}
	startConsumer(t, js, rec, prometheus.NewRegistry(), Config{BatchSize: 7, FilterSubject: "telemetry.checkout.>"})
	rec.waitFor(t, 30)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.seqs) < 5 || rec.seqs[len(rec.seqs)-1] != last {
		t.Fatalf("batch sequences %v: want at least 5 batches of at most 7, the last ending at %d", rec.seqs, last)
	}
	for i := 1; i < len(rec.seqs); i++ {
		if rec.seqs[i] <= rec.seqs[i-1] {
			t.Fatalf("batch sequences %v do not increase", rec.seqs)
		}
	}
}

// TestConsumerSkipThrough: messages up to the skip sequence are acknowledged without reaching the
// handler — first deliveries and, as after a crash, redeliveries of messages a stopped instance
// had fetched but not acknowledged.
func TestConsumerSkipThrough(t *testing.T) {
	tests := []struct {
		name string
		skip uint64
		want []string
	}{
		{"no skip", 0, []string{"a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1", "b2"}},
		{"part of the redelivered", 4, []string{"a4", "a5", "b0", "b1", "b2"}},
		{"all redelivered", 6, []string{"b0", "b1", "b2"}},
		{"into the new", 7, []string{"b1", "b2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js := connectWithTopology(t)
			ctx := context.Background()
			const subj = "telemetry.checkout.tax-calc"
			for i := range 6 {
				publish(t, js, subj, ev(fmt.Sprintf("a%d", i)))
			}
			// The first instance fetches a0..a5 and never acknowledges them.
			failing := &recorder{fail: 1 << 30}
			c1, err := NewConsumer(js, schemas.Subjects{}, Config{RetryDelay: schemas.Duration(5 * time.Millisecond)}, failing)
			if err != nil {
				t.Fatal(err)
			}
			if err := c1.Start(ctx); err != nil {
				t.Fatal(err)
			}
			natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
				failing.mu.Lock()
				defer failing.mu.Unlock()
				if failing.calls < 1 {
					return errors.New("no handler call yet")
				}
				return nil
			})
			c1.Stop()
			<-c1.Done()
			for i := range 3 {
				publish(t, js, subj, ev(fmt.Sprintf("b%d", i)))
			}

			rec := &recorder{}
			reg := prometheus.NewRegistry()
			c2, err := NewConsumer(js, schemas.Subjects{}, Config{}, rec, WithRegisterer(reg))
			if err != nil {
				t.Fatal(err)
			}
			c2.SkipThrough(tt.skip)
			if err := c2.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c2.Stop(); <-c2.Done() })
			rec.waitFor(t, len(tt.want))
			// Everything is acknowledged, the skipped messages included.
			cons, err := js.Consumer(ctx, schemas.StreamTelemetry, c2.Config().Durable)
			if err != nil {
				t.Fatal(err)
			}
			waitAllAcked(t, cons, 9)
			// The server redelivers the abandoned messages in an order of its own (see Stop).
			got := rec.versions()
			slices.Sort(got)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("handled %v, want %v", got, tt.want)
			}
			// The second instance caught up on a0..a5 in order (those after the skip), so their
			// redeliveries are skipped too.
			if got := metricValue(t, reg, "scalpel_ingest_skipped_total", nil); got != float64(max(tt.skip, 6)) {
				t.Errorf("skipped_total = %v, want %d", got, max(tt.skip, 6))
			}
		})
	}
}

func TestConsumerStopAbandonsFailingBatchForRedelivery(t *testing.T) {
	js := connectWithTopology(t)
	ctx := context.Background()
	for i := range 5 {
		publish(t, js, "telemetry.checkout.tax-calc", ev(fmt.Sprintf("v%d", i)))
	}
	failing := &recorder{fail: 1 << 30}
	c, err := NewConsumer(js, schemas.Subjects{}, Config{RetryDelay: schemas.Duration(5 * time.Millisecond)}, failing)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		failing.mu.Lock()
		defer failing.mu.Unlock()
		if failing.calls < 2 {
			return fmt.Errorf("%d handler calls", failing.calls)
		}
		return nil
	})
	c.Stop()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not finish while the handler kept failing")
	}
	// The abandoned batch was negatively acknowledged, so the next instance gets it at once.
	rec := &recorder{}
	startConsumer(t, js, rec, prometheus.NewRegistry(), Config{})
	rec.waitFor(t, 5)
	seen := map[string]bool{}
	for _, v := range rec.versions() {
		seen[v] = true
	}
	if len(seen) != 5 || len(rec.versions()) != 5 {
		t.Fatalf("after restart got %v, want v0..v4 once each", rec.versions())
	}
}

// TestConsumerCatchesUpOnACrashedInstancesMessages: an instance fetched messages and crashed
// without acknowledging them. The server would redeliver them only after AckWait, behind the
// newer messages; the next instance hands them over first, in stream order, and acknowledges
// their redeliveries unhandled.
func TestConsumerCatchesUpOnACrashedInstancesMessages(t *testing.T) {
	js := connectWithTopology(t)
	ctx := context.Background()
	const subj = "telemetry.checkout.tax-calc"
	for i := range 6 {
		publish(t, js, subj, ev(fmt.Sprintf("a%d", i)))
		if i == 0 {
			publish(t, js, subj, `{"ts":"not a time"}`) // rejected once, not again when redelivered
		}
	}
	cfg := Config{AckWait: schemas.Duration(time.Second)}.withDefaults(schemas.Subjects{})
	crashed, err := js.CreateOrUpdateConsumer(ctx, schemas.StreamTelemetry, jetstream.ConsumerConfig{
		Durable: cfg.Durable, FilterSubject: cfg.FilterSubject, AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	fetched, err := crashed.Fetch(3) // a0, the bad one and a1, never acknowledged
	if err != nil {
		t.Fatal(err)
	}
	for range fetched.Messages() {
	}
	for i := range 3 {
		publish(t, js, subj, ev(fmt.Sprintf("b%d", i)))
	}

	rec := &recorder{}
	reg := prometheus.NewRegistry()
	startConsumer(t, js, rec, reg, cfg)
	rec.waitFor(t, 9)
	want := "[a0 a1 a2 a3 a4 a5 b0 b1 b2]"
	if got := fmt.Sprint(rec.versions()); got != want {
		t.Fatalf("handled %s, want %s: in stream order, each once", got, want)
	}
	waitAllAcked(t, crashed, 10)
	if got := fmt.Sprint(rec.versions()); got != want {
		t.Fatalf("after the redeliveries handled %s, want %s", got, want)
	}
	if got := metricValue(t, reg, "scalpel_ingest_skipped_total", nil); got != 3 {
		t.Errorf("skipped_total = %v, want 3 (the redeliveries of what the crashed instance fetched)", got)
	}
	if got := metricValue(t, reg, "scalpel_rejected_total", map[string]string{"stage": "ingest"}); got != 1 {
		t.Errorf("rejected_total = %v, want 1", got)
	}
	rej, err := js.Stream(ctx, schemas.StreamRejected)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := rej.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("REJECTED holds %v messages (err %v), want the bad one once", info.State.Msgs, err)
	}
}

// TestTickSubjects: a consumer of all telemetry publishes its clock ticks on
// telemetry._scalpel.clock, which its filter covers; one that reads a group's part publishes them
// on a subject of its own and reads it too, unless its filter covers it already; ticks are off
// when tick_after is negative or the durable cannot be a subject token.
func TestTickSubjects(t *testing.T) {
	subj := schemas.Subjects{}
	for _, tt := range []struct {
		name            string
		durable, filter string
		after           time.Duration
		on              bool
		tick            string
		filters         []string
	}{
		{"all telemetry", "", "", 0, true, "telemetry._scalpel.clock", []string{"telemetry.>"}},
		{"all telemetry, named", "scalpel-ingest", "telemetry.>", 0, true, "telemetry._scalpel.clock", []string{"telemetry.>"}},
		{"a group", "grp-a", "telemetry.checkout.>", 0, true, "telemetry._scalpel.grp-a", []string{"telemetry.checkout.>", "telemetry._scalpel.grp-a"}},
		{"a group whose filter covers its ticks", "grp-b", "telemetry.*.*", 0, true, "telemetry._scalpel.grp-b", []string{"telemetry.*.*"}},
		{"a group, ticks off", "grp-a", "telemetry.checkout.>", -1, false, "", []string{"telemetry.checkout.>"}},
		{"a durable no token can carry", "grp=a", "telemetry.checkout.>", 0, false, "", []string{"telemetry.checkout.>"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Durable: tt.durable, FilterSubject: tt.filter, TickAfter: schemas.Duration(tt.after)}
			if _, on := c.Ticks(subj); on != tt.on {
				t.Fatalf("ticks on: %v, want %v", on, tt.on)
			}
			if tick, component := c.TickSubject(subj); tt.on && (tick != tt.tick || !strings.HasSuffix(tick, "."+component)) {
				t.Errorf("tick subject %q (component %q), want %q", tick, component, tt.tick)
			}
			if got := c.Filters(subj); !slices.Equal(got, tt.filters) {
				t.Errorf("filters %q, want %q", got, tt.filters)
			}
		})
	}
	for _, tt := range []struct {
		filter, subject string
		want            bool
	}{
		{"telemetry.>", "telemetry._scalpel.clock", true},
		{"telemetry.*.*", "telemetry._scalpel.clock", true},
		{"telemetry.*", "telemetry._scalpel.clock", false},
		{"telemetry._scalpel.>", "telemetry._scalpel.clock", true},
		{"telemetry.checkout.>", "telemetry._scalpel.clock", false},
		{"telemetry.*.*.>", "telemetry._scalpel.clock", false},
		{"telemetry._scalpel.clock", "telemetry._scalpel.clock", true},
	} {
		if got := SubjectCovers(tt.filter, tt.subject); got != tt.want {
			t.Errorf("SubjectCovers(%q, %q) = %v", tt.filter, tt.subject, got)
		}
	}
}
