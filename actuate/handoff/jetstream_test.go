package handoff_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/actuate/handoff"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/reject"
	"github.com/scalpel-dev/scalpel/schemas"
)

// TestJetStreamPath runs the hand-off as serve does: a durable consumer on DECISIONS through
// NewJetStreamSubscriber on a connection of its own, rejects stored in REJECTED through
// reject.Publisher.
func TestJetStreamPath(t *testing.T) {
	srv, _, js := natstest.Connect(t)
	ctx := context.Background()
	subj := schemas.Subjects{}
	for _, sc := range []jetstream.StreamConfig{
		{Name: schemas.StreamDecisions, Subjects: []string{subj.DecisionAll()}, Duplicates: time.Minute},
		{Name: schemas.StreamRejected, Subjects: []string{subj.RejectedAll()}, Duplicates: time.Minute},
	} {
		if _, err := js.CreateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	rp, err := reject.NewPublisher(js, subj, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	own, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig()
	sub, err := handoff.NewJetStreamSubscriber(own, handoff.JetStreamConfig{Durable: "scalpel-actuate", Subjects: subj, Handoff: cfg})
	if err != nil {
		t.Fatal(err)
	}
	act := &recorder{fail: func(_ int, cmd schemas.RollbackCommand) error {
		if cmd.Component == "receipt" {
			return actuate.Permanent(errors.New("422 receipt has no version 1.1.0"))
		}
		return nil
	}}
	resolve := func(context.Context, string) (actuate.Actuator, error) { return act, nil }
	h, err := handoff.New(cfg, sub, handoff.NewRejectPublisher(rp), resolve, handoff.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	t.Cleanup(func() { _ = h.Close(); cancel() })
	if err := h.Start(runCtx); err != nil {
		t.Fatal(err)
	}

	good := decision("js-good")
	good.Targets = good.Targets[:1]
	bad := decision("js-bad")
	for _, d := range []schemas.Decision{good, bad, good} {
		b, _ := json.Marshal(d)
		if _, err := js.Publish(ctx, subj.Decision(d.Service), b, jetstream.WithMsgID(d.ID)); err != nil {
			t.Fatal(err)
		}
	}
	// Something else on decision.> is skipped, not rejected.
	if _, err := js.Publish(ctx, "decision.checkout", []byte(`{"kind":"note"}`)); err != nil {
		t.Fatal(err)
	}

	// Wait for the calls as well as for an empty consumer: right after the publishes the
	// consumer's counts can read zero before it has delivered anything.
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := act.count(); got < 3 {
			return fmt.Errorf("%d Actuate calls so far", got)
		}
		return natstest.Idle(ctx, js, schemas.StreamDecisions, "scalpel-actuate")
	})
	// good: one call; bad: the first target succeeds, the second is refused once.
	if got := act.count(); got != 3 {
		t.Errorf("%d Actuate calls, want 3", got)
	}

	stream, err := js.Stream(ctx, schemas.StreamRejected)
	if err != nil {
		t.Fatal(err)
	}
	var m *jetstream.RawStreamMsg
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		m, err = stream.GetLastMsgForSubject(ctx, "rejected.actuate")
		return err
	})
	got, err := schemas.DecodeDecision(m.Data)
	if err != nil || got.ID != bad.ID {
		t.Fatalf("reject body decodes to %v (err %v), want decision %s", got, err, bad.ID)
	}
	for k, want := range map[string]string{
		handoff.HeaderDecisionID:    bad.ID,
		schemas.HeaderRejectSubject: "decision.checkout",
		reject.HeaderClass:          handoff.ClassPermanent,
		reject.HeaderStage:          "actuate",
	} {
		if v := m.Header.Get(k); v != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
	if r := m.Header.Get(schemas.HeaderRejectReason); r == "" {
		t.Error("no reason")
	}
	info, _ := stream.Info(ctx)
	if info.State.Msgs != 1 {
		t.Errorf("%d rejects, want 1", info.State.Msgs)
	}
	// Topology is not ours: the hand-off must not have created streams.
	names := js.StreamNames(ctx)
	n := 0
	for range names.Name() {
		n++
	}
	if n != 2 {
		t.Errorf("%d streams, want the 2 the test created", n)
	}
}

// TestJetStreamSubscriberStopsWhileDelivering: closing the subscriber while messages are being
// handed to the router, again and again, closes each output once no delivery is in progress
// (under -race: no close against a send, no send on a closed channel), and what was handed out
// and not acknowledged before the close comes back to the next subscriber on the durable.
func TestJetStreamSubscriberStopsWhileDelivering(t *testing.T) {
	srv, _, js := natstest.Connect(t)
	ctx := context.Background()
	subj := schemas.Subjects{}
	str, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: schemas.StreamDecisions, Subjects: []string{subj.DecisionAll()}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	for i := range n {
		if _, err := js.Publish(ctx, subj.Decision("checkout"), []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fastConfig()
	cfg.AckWait = schemas.Duration(200 * time.Millisecond)
	seen := map[string]bool{}
	subscribe := func() (message.Subscriber, <-chan *message.Message) {
		own, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		sub, err := handoff.NewJetStreamSubscriber(own, handoff.JetStreamConfig{Durable: "scalpel-actuate", Subjects: subj, Handoff: cfg})
		if err != nil {
			t.Fatal(err)
		}
		out, err := sub.Subscribe(ctx, subj.DecisionAll())
		if err != nil {
			t.Fatal(err)
		}
		return sub, out
	}
	var cons jetstream.Consumer
	for round := range 30 {
		sub, out := subscribe()
		if cons == nil { // the first subscription creates the durable
			if cons, err = str.Consumer(ctx, "scalpel-actuate"); err != nil {
				t.Fatal(err)
			}
		}
		closed := make(chan error, 1)
		closeNow := func() { go func() { closed <- sub.Close() }() }
		// Close at varying points: at once, or as the round's first, second or third message is
		// being settled, while the next delivery may already be under way.
		after := round % 4
		if after == 0 {
			closeNow()
		}
		got, closing := 0, after == 0
		poll := time.NewTicker(20 * time.Millisecond)
	deliveries:
		for {
			select {
			case m, ok := <-out:
				if !ok {
					break deliveries // the subscriber has closed the output
				}
				seen[string(m.Payload)] = true
				if got++; got == after {
					closeNow()
					closing = true
				}
				m.Ack()
			case <-poll.C:
				// The durable has fewer left than the round waits for: close all the same.
				if info, err := cons.Info(ctx); !closing && err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
					closeNow()
					closing = true
				}
			}
		}
		poll.Stop()
		if err := <-closed; err != nil {
			t.Fatalf("round %d: close: %v", round, err)
		}
	}
	// One that stays until the durable has nothing left: every message was acknowledged once.
	sub, out := subscribe()
	defer sub.Close()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-out:
			seen[string(m.Payload)] = true
			m.Ack()
			continue
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("the durable still holds messages; %d of %d seen", len(seen), n)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			break
		}
	}
	if len(seen) != n {
		t.Errorf("%d of %d messages ever delivered", len(seen), n)
	}
}
