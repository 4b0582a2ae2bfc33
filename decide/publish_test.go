package decide

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/schemas"
)

func TestPublishDedupes(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	subj := schemas.Subjects{}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: schemas.StreamDecisions, Subjects: []string{subj.DecisionAll()}, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	_, got := run(t, nil, nil, []*schemas.DeployEvent{d0, d1}, []*schemas.Anomaly{anomaly("a1", "cart", "3.1", time.Minute)})
	d := got[0][0]
	for range 2 { // a decision re-made after a crash is stored once
		if _, err := Publish(ctx, js, subj, &d); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := js.Stream(ctx, schemas.StreamDecisions)
	if err != nil {
		t.Fatal(err)
	}
	info, err := msg.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1", info.State.Msgs)
	}
	raw, err := msg.GetLastMsgForSubject(ctx, subj.Decision("checkout"))
	if err != nil {
		t.Fatal(err)
	}
	back, err := schemas.DecodeDecision(raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	if back.ID != d.ID || raw.Header.Get(jetstream.MsgIDHeader) != d.ID {
		t.Errorf("stored %s (msg id %s), want %s", back.ID, raw.Header.Get(jetstream.MsgIDHeader), d.ID)
	}
	if _, err := Publish(ctx, js, subj, &schemas.Decision{}); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("invalid decision: err = %v", err)
	}
}
