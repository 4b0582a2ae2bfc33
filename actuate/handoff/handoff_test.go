package handoff_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/actuate/handoff"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/reject"
	"github.com/scalpel-dev/scalpel/schemas"
)

// fastConfig retries quickly so the tests stay fast.
func fastConfig() handoff.Config {
	c := handoff.DefaultConfig()
	c.MaxRetries = 3
	c.InitialInterval = schemas.Duration(time.Millisecond)
	c.MaxInterval = schemas.Duration(5 * time.Millisecond)
	c.MaxElapsed = schemas.Duration(5 * time.Second)
	return c
}

func decision(id string) schemas.Decision {
	return schemas.Decision{
		ID:          schemas.DeriveID("decision", id),
		TS:          time.Now().UTC().Truncate(time.Millisecond),
		IncidentID:  schemas.DeriveID("incident", id),
		AnomalyIDs:  []string{"a1"},
		Service:     "checkout",
		Action:      schemas.ActionRollback,
		Granularity: schemas.GranularityFine,
		Targets: []schemas.DecisionTarget{
			{Service: "checkout", Component: "tax-calc", Block: "rate-lookup", FromVersion: "2.4.0", ToVersion: "2.3.9", Step: 1},
			{Service: "checkout", Component: "receipt", FromVersion: "1.2.0", ToVersion: "1.1.0", Step: 2},
		},
		Reason: "error rate 11% vs 2% baseline",
	}
}

// recorder is an actuator whose behaviour per call is scripted.
type recorder struct {
	mu    sync.Mutex
	calls []schemas.RollbackCommand
	fail  func(n int, cmd schemas.RollbackCommand) error // n counts calls from 1
}

func (r *recorder) Actuate(_ context.Context, cmd schemas.RollbackCommand) error {
	r.mu.Lock()
	r.calls = append(r.calls, cmd)
	n := len(r.calls)
	r.mu.Unlock()
	if r.fail != nil {
		return r.fail(n, cmd)
	}
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// bus runs a hand-off on gochannel and collects what reaches rejected.actuate.
type bus struct {
	t        *testing.T
	pubsub   *gochannel.GoChannel
	h        *handoff.Handoff
	mu       sync.Mutex
	rejected []*message.Message
	acked    chan string // UUIDs of decisions the router acknowledged
}

func newBus(t *testing.T, act actuate.Actuator, opts ...handoff.Option) *bus {
	t.Helper()
	ps := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)
	b := &bus{t: t, pubsub: ps}
	rej, err := ps.Subscribe(context.Background(), "rejected.actuate")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for m := range rej {
			b.mu.Lock()
			b.rejected = append(b.rejected, m)
			b.mu.Unlock()
			m.Ack()
		}
	}()
	resolve := func(_ context.Context, svc string) (actuate.Actuator, error) {
		if svc != "checkout" {
			return nil, actuate.Permanent(fmt.Errorf("no actuators for %s", svc))
		}
		return act, nil
	}
	opts = append([]handoff.Option{handoff.WithTopic("decisions"), handoff.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	h, err := handoff.New(fastConfig(), ps, ps, resolve, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		_ = h.Close()
		cancel()
		_ = ps.Close()
	})
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	b.h = h
	return b
}

// publish sends body and reports whether the router acknowledged it. gochannel redelivers a
// nacked message until it is acked, so a nack shows as a timeout.
func (b *bus) publish(body []byte, md map[string]string) (acked bool) {
	b.t.Helper()
	m := message.NewMessage(fmt.Sprintf("m-%d", time.Now().UnixNano()), body)
	for k, v := range md {
		m.Metadata.Set(k, v)
	}
	done := make(chan error, 1)
	go func() { done <- b.pubsub.Publish("decisions", m) }()
	select {
	case err := <-done:
		if err != nil {
			b.t.Fatal(err)
		}
		return true
	case <-time.After(5 * time.Second):
		return false
	}
}

func (b *bus) publishDecision(d schemas.Decision) bool {
	b.t.Helper()
	body, err := json.Marshal(d)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.publish(body, nil)
}

func (b *bus) rejects() []*message.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*message.Message(nil), b.rejected...)
}

func (b *bus) waitRejects(n int) []*message.Message {
	b.t.Helper()
	natstest.CheckFor(b.t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := len(b.rejects()); got < n {
			return fmt.Errorf("%d rejects, want %d", got, n)
		}
		return nil
	})
	return b.rejects()
}

func TestCarriesOutDecision(t *testing.T) {
	act := &recorder{}
	var observed []error
	var mu sync.Mutex
	b := newBus(t, act, handoff.WithObserver(func(_ schemas.RollbackCommand, err error) {
		mu.Lock()
		observed = append(observed, err)
		mu.Unlock()
	}))
	d := decision("carry")
	if !b.publishDecision(d) {
		t.Fatal("decision nacked")
	}
	want := actuate.Commands(&d, 0)
	if act.count() != len(want) {
		t.Fatalf("%d Actuate calls, want %d", act.count(), len(want))
	}
	for i, c := range act.calls {
		if c.ID != want[i].ID {
			t.Errorf("call %d: command %s, want %s", i, c.ID, want[i].ID)
		}
	}
	if len(observed) != len(want) || observed[0] != nil {
		t.Errorf("observer saw %v", observed)
	}
	if r := b.rejects(); len(r) != 0 {
		t.Errorf("%d rejects of a decision carried out", len(r))
	}
}

func TestRetryableFailureIsRetried(t *testing.T) {
	act := &recorder{fail: func(n int, _ schemas.RollbackCommand) error {
		if n <= 2 {
			return actuate.Retryable(errors.New("503 from deployer"))
		}
		return nil
	}}
	b := newBus(t, act)
	if !b.publishDecision(decision("retry")) {
		t.Fatal("decision nacked")
	}
	// Two failures of the first command, then both commands succeed.
	if got := act.count(); got != 4 {
		t.Errorf("%d Actuate calls, want 4", got)
	}
	if r := b.rejects(); len(r) != 0 {
		t.Errorf("%d rejects of a decision that succeeded on retry", len(r))
	}
}

// TestKeepsFailingLandsInRejected is the contract with decide: a command that keeps failing ends in
// rejected.actuate with the reason, the decision id and the original decision.
func TestKeepsFailingLandsInRejected(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantCalls int
		wantClass string
	}{
		{"retryable until the budget runs out", actuate.Retryable(errors.New("deployer unreachable")), 4, handoff.ClassRetriesExhausted},
		{"unclassified counts as retryable", errors.New("something odd"), 4, handoff.ClassRetriesExhausted},
		{"permanent skips the retries", actuate.Permanent(errors.New("400 unknown service")), 1, handoff.ClassPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			act := &recorder{fail: func(int, schemas.RollbackCommand) error { return tt.err }}
			b := newBus(t, act)
			d := decision(tt.name)
			body, _ := json.Marshal(d)
			if !b.publish(body, nil) {
				t.Fatal("a rejected decision must be acknowledged")
			}
			if got := act.count(); got != tt.wantCalls {
				t.Errorf("%d Actuate calls, want %d (max_retries 3)", got, tt.wantCalls)
			}
			r := b.waitRejects(1)
			if len(r) != 1 {
				t.Fatalf("%d rejects, want 1", len(r))
			}
			m := r[0]
			if string(m.Payload) != string(body) {
				t.Errorf("reject body %s, want the original decision", m.Payload)
			}
			cmd := actuate.Commands(&d, 0)[0]
			for k, want := range map[string]string{
				handoff.HeaderDecisionID:    d.ID,
				handoff.HeaderCommandID:     cmd.ID,
				schemas.HeaderRejectSubject: "decision.checkout",
				reject.HeaderClass:          tt.wantClass,
				reject.HeaderStage:          "actuate",
			} {
				if got := m.Metadata.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			reason := m.Metadata.Get(schemas.HeaderRejectReason)
			if !strings.Contains(reason, tt.err.Error()) || !strings.Contains(reason, cmd.ID) {
				t.Errorf("reason %q does not say which command failed and why", reason)
			}
			if m.Metadata.Get("reason_poisoned") != "" {
				t.Error("watermill's poison metadata leaked into the reject")
			}
		})
	}
}

func TestPanickingActuatorIsRecovered(t *testing.T) {
	act := &recorder{fail: func(n int, _ schemas.RollbackCommand) error {
		if n == 1 {
			panic("nil map in a plug-in")
		}
		return nil
	}}
	b := newBus(t, act)
	if !b.publishDecision(decision("panic")) {
		t.Fatal("decision nacked")
	}
	if got := act.count(); got != 3 {
		t.Errorf("%d Actuate calls, want 3 (the panic, then both commands)", got)
	}
}

func TestDuplicateDecisionActsOnce(t *testing.T) {
	act := &recorder{}
	b := newBus(t, act)
	d := decision("dup")
	for range 3 {
		if !b.publishDecision(d) {
			t.Fatal("decision nacked")
		}
	}
	if got := act.count(); got != 2 {
		t.Errorf("%d Actuate calls for one decision delivered 3 times, want 2 (one per target)", got)
	}
}

func TestRejectedDecisionIsNotRetriedOnRedelivery(t *testing.T) {
	act := &recorder{fail: func(int, schemas.RollbackCommand) error { return actuate.Permanent(errors.New("refused")) }}
	b := newBus(t, act)
	d := decision("redeliver")
	b.publishDecision(d)
	b.publishDecision(d)
	if got := act.count(); got != 1 {
		t.Errorf("%d Actuate calls, want 1", got)
	}
	if n := len(b.waitRejects(1)); n != 1 {
		t.Errorf("%d rejects, want 1", n)
	}
}

func TestMessagesThatAreNotDecisions(t *testing.T) {
	hold := decision("hold")
	hold.Action, hold.Targets = schemas.ActionHold, nil
	holdBody, _ := json.Marshal(hold)
	dry := decision("dry")
	dry.DryRun = true
	dryBody, _ := json.Marshal(dry)
	bad := decision("bad")
	bad.Targets[0].FromVersion = ""
	badBody, _ := json.Marshal(bad)
	tests := []struct {
		name       string
		body       string
		md         map[string]string
		wantReject string // class, or "" for none
	}{
		{"other kind by header", `{"id":"x","action":"rollback"}`, map[string]string{handoff.HeaderKind: "verification"}, ""},
		{"other kind by shape", `{"kind":"lease","holder":"a"}`, nil, ""},
		{"hold", string(holdBody), nil, ""},
		{"dry run", string(dryBody), nil, ""},
		{"malformed JSON", `{"id":"x","action":`, nil, handoff.ClassInvalid},
		{"wrong types", `{"id":"x","action":"rollback","targets":"all"}`, nil, handoff.ClassInvalid},
		{"schema violation", string(badBody), nil, handoff.ClassInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			act := &recorder{}
			b := newBus(t, act)
			if !b.publish([]byte(tt.body), tt.md) {
				t.Fatal("nacked: bad input must be settled, not redelivered forever")
			}
			if act.count() != 0 {
				t.Errorf("%d Actuate calls, want 0", act.count())
			}
			if tt.wantReject == "" {
				if r := b.rejects(); len(r) != 0 {
					t.Errorf("rejected: %s", r[0].Metadata.Get(schemas.HeaderRejectReason))
				}
				return
			}
			r := b.waitRejects(1)
			if got := r[0].Metadata.Get(reject.HeaderClass); got != tt.wantReject {
				t.Errorf("class %q, want %q", got, tt.wantReject)
			}
			if r[0].Metadata.Get(schemas.HeaderRejectReason) == "" {
				t.Error("no reason")
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*handoff.Config)
		wantErr bool
	}{
		{"default", func(*handoff.Config) {}, false},
		{"negative retries", func(c *handoff.Config) { c.MaxRetries = -1 }, true},
		{"zero interval", func(c *handoff.Config) { c.InitialInterval = 0 }, true},
		{"inverted intervals", func(c *handoff.Config) { c.InitialInterval = c.MaxInterval + 1 }, true},
		{"ack wait too short", func(c *handoff.Config) { c.AckWait = c.MaxElapsed }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := handoff.DefaultConfig()
			tt.edit(&c)
			if err := c.Validate(); (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
