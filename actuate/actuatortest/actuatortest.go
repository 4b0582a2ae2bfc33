// Package actuatortest is the conformance kit every actuator runs through: Run checks the
// contract of actuate.Actuator against the actuator's visible effects, as watermill's
// pubsub/tests does for its backends.
package actuatortest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/schemas"
)

// Harness is what a factory hands the kit: a fresh actuator and a way to observe what it did.
type Harness struct {
	// Actuator is the actuator under test.
	Actuator actuate.Actuator
	// Effects returns one entry per visible effect the actuator has had so far — a message on the
	// stream, a log record at Info, a request the webhook receiver got — each entry the id of the
	// command that caused it. It must include every effect of every Actuate call that has returned,
	// so the kit can check that a repeat added none.
	Effects func(ctx context.Context) ([]string, error)
	// AtLeastOnce declares that a repeated command may repeat its effect (an exec that cannot tell
	// it already ran); receivers must then dedupe by command id. The kit then checks that a repeat
	// reuses the id instead of checking that it adds nothing.
	AtLeastOnce bool
}

// Factory builds a fresh Harness for one sub-test; cleanup goes in t.Cleanup.
type Factory func(t *testing.T) Harness

// Run runs the conformance tests against actuators built by factory.
func Run(t *testing.T, factory Factory) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"AcceptsValidCommand", testAccepts},
		{"IdempotentOnRepeat", testIdempotent},
		{"IdempotentUnderConcurrentRepeat", testConcurrentRepeat},
		{"DistinctCommandsDistinctEffects", testDistinct},
		{"CancelledContext", testCancelled},
		{"InvalidCommandIsPermanent", testInvalid},
		{"ExpiredCommandIsPermanent", testExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := factory(t)
			if h.Actuator == nil || h.Effects == nil {
				t.Fatal("actuatortest: factory returned a Harness without Actuator or Effects")
			}
			tt.fn(t, h)
		})
	}
}

// Command returns a valid command, unique to the test and n, for a fine-grained rollback of
// svc/comp/block-<n>. Its issued_at is fixed (event time) and it does not expire.
func Command(t testing.TB, n int) schemas.RollbackCommand {
	decision := schemas.DeriveID("decision", t.Name())
	block := fmt.Sprintf("block-%d", n)
	return schemas.RollbackCommand{
		ID:          schemas.DeriveID("command", decision, schemas.ActiveKey("checkout", "tax-calc", block), schemas.ActionRollback),
		DecisionID:  decision,
		IncidentID:  schemas.DeriveID("incident", t.Name()),
		Granularity: schemas.GranularityFine,
		Action:      schemas.ActionRollback,
		Service:     "checkout",
		Component:   "tax-calc",
		Block:       block,
		FromVersion: "2.4.0",
		ToVersion:   "2.3.9",
		Reason:      "conformance test: error rate 11% vs 2% baseline",
		IssuedAt:    time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC),
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func count(t *testing.T, h Harness, id string) int {
	t.Helper()
	effects, err := h.Effects(ctxFor(t))
	if err != nil {
		t.Fatalf("observing effects: %v", err)
	}
	n := 0
	for _, e := range effects {
		if e == id {
			n++
		}
	}
	return n
}

func mustActuate(t *testing.T, h Harness, cmd schemas.RollbackCommand) {
	t.Helper()
	if err := h.Actuator.Actuate(ctxFor(t), cmd); err != nil {
		t.Fatalf("Actuate(%s): %v", cmd.ID, err)
	}
}

func testAccepts(t *testing.T, h Harness) {
	cmd := Command(t, 1)
	mustActuate(t, h, cmd)
	if n := count(t, h, cmd.ID); n != 1 {
		t.Fatalf("after one Actuate: %d effects of %s, want 1", n, cmd.ID)
	}
}

func wantOnce(t *testing.T, h Harness, id string, n int) {
	t.Helper()
	switch {
	case n == 0:
		t.Fatalf("no effect of %s", id)
	case n > 1 && !h.AtLeastOnce:
		t.Fatalf("%d effects of %s after repeats, want exactly 1 (one burst must be one rollback)", n, id)
	}
}

func testIdempotent(t *testing.T, h Harness) {
	cmd := Command(t, 1)
	mustActuate(t, h, cmd)
	mustActuate(t, h, cmd)
	wantOnce(t, h, cmd.ID, count(t, h, cmd.ID))
}

func testConcurrentRepeat(t *testing.T, h Harness) {
	cmd := Command(t, 1)
	const n = 4
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() { errs <- h.Actuator.Actuate(ctxFor(t), cmd) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Actuate(%s): %v", cmd.ID, err)
		}
	}
	wantOnce(t, h, cmd.ID, count(t, h, cmd.ID))
}

func testDistinct(t *testing.T, h Harness) {
	a, b := Command(t, 1), Command(t, 2)
	mustActuate(t, h, a)
	mustActuate(t, h, b)
	for _, c := range []schemas.RollbackCommand{a, b} {
		if n := count(t, h, c.ID); n != 1 {
			t.Errorf("%d effects of %s, want 1", n, c.ID)
		}
	}
}

func testCancelled(t *testing.T, h Harness) {
	cmd := Command(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := h.Actuator.Actuate(ctx, cmd)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Actuate with a cancelled ctx = %v, want context.Canceled", err)
	}
	if actuate.IsPermanent(err) {
		t.Errorf("a cancelled ctx is no verdict on the command; %v must be retryable", err)
	}
	if n := count(t, h, cmd.ID); n != 0 {
		t.Errorf("%d effects of %s with a cancelled ctx, want 0", n, cmd.ID)
	}
}

func testInvalid(t *testing.T, h Harness) {
	cmd := Command(t, 1)
	cmd.Service = "not a name"
	err := h.Actuator.Actuate(ctxFor(t), cmd)
	if !errors.Is(err, schemas.ErrInvalid) || !actuate.IsPermanent(err) {
		t.Fatalf("Actuate(invalid) = %v, want a permanent error matching schemas.ErrInvalid", err)
	}
	if n := count(t, h, cmd.ID); n != 0 {
		t.Errorf("%d effects of an invalid command, want 0", n)
	}
}

func testExpired(t *testing.T, h Harness) {
	cmd := Command(t, 1)
	cmd.IssuedAt = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	exp := cmd.IssuedAt.Add(time.Minute)
	cmd.ExpiresAt = &exp
	err := h.Actuator.Actuate(ctxFor(t), cmd)
	if !errors.Is(err, actuate.ErrExpired) || !actuate.IsPermanent(err) {
		t.Fatalf("Actuate(expired) = %v, want a permanent error matching actuate.ErrExpired", err)
	}
	if n := count(t, h, cmd.ID); n != 0 {
		t.Errorf("%d effects of an expired command, want 0", n)
	}
}
