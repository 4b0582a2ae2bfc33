package natsactuator_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/actuate/actuatortest"
	"github.com/scalpel-dev/scalpel/actuate/natsactuator"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/schemas"
)

// env is an embedded server with the parts of the topology the actuator writes to. The real
// topology lives in ingest; these tests only need a ROLLBACKS stream with a Duplicates window and
// the scalpel_active bucket.
type env struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue
	subj   schemas.Subjects
}

func newEnv(t *testing.T, prefix string) *env {
	t.Helper()
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	subj := schemas.Subjects{Prefix: prefix}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       schemas.StreamRollbacks,
		Subjects:   []string{subj.RollbackAll()},
		Duplicates: 2 * time.Minute,
		Storage:    jetstream.FileStorage,
	})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketActive, History: 16})
	if err != nil {
		t.Fatal(err)
	}
	return &env{js: js, stream: stream, kv: kv, subj: subj}
}

func (e *env) actuator(t *testing.T, kv jetstream.KeyValue, opts ...natsactuator.Option) *natsactuator.Actuator {
	t.Helper()
	if kv == nil {
		kv = e.kv
	}
	opts = append([]natsactuator.Option{natsactuator.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	a, err := natsactuator.New(e.js, kv, e.subj, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// messages returns every message in the stream, in order.
func (e *env) messages(t *testing.T) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	info, err := e.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := e.stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func (e *env) history(t *testing.T, key string) []jetstream.KeyValueEntry {
	t.Helper()
	h, err := e.kv.History(context.Background(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func active(t *testing.T, kv jetstream.KeyValue, key string) schemas.ActiveVersion {
	t.Helper()
	e, err := kv.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	var v schemas.ActiveVersion
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestConformance(t *testing.T) {
	actuatortest.Run(t, func(t *testing.T) actuatortest.Harness {
		e := newEnv(t, "")
		return actuatortest.Harness{
			Actuator: e.actuator(t, nil),
			// The visible effect is a command in the stream; PubAck means it is stored before
			// Actuate returns.
			Effects: func(context.Context) ([]string, error) {
				var ids []string
				for _, m := range e.messages(t) {
					ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
				}
				return ids, nil
			},
		}
	})
}

func burstDecision() *schemas.Decision {
	return &schemas.Decision{
		ID:         schemas.DeriveID("decision", "inc-1", "deploy-7", "step-1"),
		TS:         time.Date(2026, 11, 26, 10, 0, 5, 0, time.UTC),
		IncidentID: "inc-1",
		AnomalyIDs: []string{"a1"},
		Service:    "checkout",
		Action:     schemas.ActionRollback,
		Targets: []schemas.DecisionTarget{
			{Service: "checkout", Component: "tax-calc", Block: "rate-lookup", FromVersion: "2.4.0", ToVersion: "2.3.9", Step: 1},
			{Service: "checkout", Component: "receipt", FromVersion: "1.2.0", ToVersion: "1.1.0", Step: 2},
		},
		Reason: "error rate 11% vs 2% baseline",
	}
}

// TestBurstIsOneCommandPerTarget replays what an anomaly burst does to actuate: the same decision
// delivered again and again (redeliveries, a re-made decision after a crash). The stream must hold
// one command per target and the bucket one revision per key.
func TestBurstIsOneCommandPerTarget(t *testing.T) {
	e := newEnv(t, "")
	a := e.actuator(t, nil)
	ctx := context.Background()
	for range 20 {
		for _, cmd := range actuate.Commands(burstDecision(), 0) {
			if err := a.Actuate(ctx, cmd); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := actuate.Commands(burstDecision(), 0)
	msgs := e.messages(t)
	if len(msgs) != len(want) {
		t.Fatalf("%d messages in the stream, want %d (one per target)", len(msgs), len(want))
	}
	for i, cmd := range want {
		if got := msgs[i].Header.Get(jetstream.MsgIDHeader); got != cmd.ID {
			t.Errorf("message %d has Nats-Msg-Id %s, want %s", i, got, cmd.ID)
		}
		if msgs[i].Subject != "rollback.cmd.checkout" {
			t.Errorf("message %d on %s", i, msgs[i].Subject)
		}
		key := schemas.ActiveKey(cmd.Service, cmd.Component, cmd.Block)
		if h := e.history(t, key); len(h) != 1 {
			t.Errorf("%s has %d revisions, want 1", key, len(h))
		}
		got := active(t, e.kv, key)
		want := schemas.ActiveVersion{Version: cmd.ToVersion, FromVersion: cmd.FromVersion, CommandID: cmd.ID,
			DecisionID: cmd.DecisionID, IncidentID: cmd.IncidentID, Action: cmd.Action, TS: cmd.IssuedAt}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %+v, want %+v", key, got, want)
		}
	}
}

func TestCommandEventDecodes(t *testing.T) {
	e := newEnv(t, "acme")
	a := e.actuator(t, nil, natsactuator.WithSource("scalpel://prod-eu"))
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	cmd := actuatortest.Command(t, 1)
	cmd.ExpiresAt = &exp
	if err := a.Actuate(context.Background(), cmd); err != nil {
		t.Fatal(err)
	}
	msgs := e.messages(t)
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Subject != "acme.rollback.cmd.checkout" {
		t.Errorf("subject %s, want the prefixed acme.rollback.cmd.checkout", m.Subject)
	}
	got, err := schemas.DecodeCommandEvent(m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, cmd) {
		t.Errorf("decoded\n%+v\nwant\n%+v", *got, cmd)
	}
	if src, _ := schemas.CommandEventSource(m.Header); src != "scalpel://prod-eu" {
		t.Errorf("ce-source %q", src)
	}
	if _, err := e.kv.Get(context.Background(), "checkout.tax-calc.block-1"); err != nil {
		t.Errorf("desired state not written: %v", err)
	}
}

// racingKV lets another writer slip in between the actuator's read and its write, for the first
// `races` reads.
type racingKV struct {
	jetstream.KeyValue
	races int
	gets  atomic.Int32
	rival func(ctx context.Context, key string, n int)
}

func (r *racingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	entry, err := r.KeyValue.Get(ctx, key)
	n := int(r.gets.Add(1))
	if n <= r.races {
		r.rival(ctx, key, n)
	}
	return entry, err
}

func rivalValue(t *testing.T, n int) []byte {
	v, err := json.Marshal(schemas.ActiveVersion{Version: "9.9.9", CommandID: "rival", DecisionID: "rival",
		Action: schemas.ActionRollback, TS: time.Date(2026, 11, 26, 9, 0, n, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestCASConflict(t *testing.T) {
	tests := []struct {
		name     string
		existing bool // the key exists before (Update path) or not (Create path)
	}{
		{"update loses a race", true},
		{"create loses a race", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, "")
			cmd := actuatortest.Command(t, 1)
			key := schemas.ActiveKey(cmd.Service, cmd.Component, cmd.Block)
			if tt.existing {
				if _, err := e.kv.Put(context.Background(), key, rivalValue(t, 0)); err != nil {
					t.Fatal(err)
				}
			}
			kv := &racingKV{KeyValue: e.kv, races: 1, rival: func(ctx context.Context, key string, n int) {
				if _, err := e.kv.Put(ctx, key, rivalValue(t, n)); err != nil {
					t.Error(err)
				}
			}}
			if err := e.actuator(t, kv).Actuate(context.Background(), cmd); err != nil {
				t.Fatal(err)
			}
			if got := kv.gets.Load(); got != 2 {
				t.Errorf("%d reads, want 2 (the conflict re-reads once)", got)
			}
			if got := active(t, e.kv, key); got.CommandID != cmd.ID {
				t.Errorf("key holds %s, want %s", got.CommandID, cmd.ID)
			}
			wantRevs := 2 // the rival's and ours
			if tt.existing {
				wantRevs = 3
			}
			if h := e.history(t, key); len(h) != wantRevs {
				t.Errorf("%d revisions, want %d", len(h), wantRevs)
			}
			if n := len(e.messages(t)); n != 1 {
				t.Errorf("%d messages, want 1", n)
			}
		})
	}
}

func TestCASConflictGivesUp(t *testing.T) {
	e := newEnv(t, "")
	kv := &racingKV{KeyValue: e.kv, races: 1 << 30, rival: func(ctx context.Context, key string, n int) {
		if _, err := e.kv.Put(ctx, key, rivalValue(t, n%60)); err != nil {
			t.Error(err)
		}
	}}
	err := e.actuator(t, kv, natsactuator.WithCASAttempts(3)).Actuate(context.Background(), actuatortest.Command(t, 1))
	if !errors.Is(err, natsactuator.ErrConflict) || actuate.IsPermanent(err) {
		t.Fatalf("err = %v, want retryable ErrConflict", err)
	}
	if got := kv.gets.Load(); got != 3 {
		t.Errorf("%d reads, want 3", got)
	}
	if n := len(e.messages(t)); n != 0 {
		t.Errorf("%d messages published without desired state, want 0", n)
	}
}

func TestSupersededCommandIsRefused(t *testing.T) {
	e := newEnv(t, "")
	a := e.actuator(t, nil)
	ctx := context.Background()
	older, newer := actuatortest.Command(t, 1), actuatortest.Command(t, 1)
	newer.ID, newer.Action, newer.ToVersion = "restore-1", schemas.ActionRestore, "2.4.0"
	newer.IssuedAt = older.IssuedAt.Add(time.Minute)
	if err := a.Actuate(ctx, newer); err != nil {
		t.Fatal(err)
	}
	// The older command arrives late (a retry from before the restore): it must not undo it.
	err := a.Actuate(ctx, older)
	if !errors.Is(err, actuate.ErrSuperseded) || !actuate.IsPermanent(err) {
		t.Fatalf("err = %v, want permanent ErrSuperseded", err)
	}
	if got := active(t, e.kv, "checkout.tax-calc.block-1"); got.CommandID != newer.ID {
		t.Errorf("key holds %s, want the newer %s", got.CommandID, newer.ID)
	}
	if n := len(e.messages(t)); n != 1 {
		t.Errorf("%d messages, want 1", n)
	}
}

// TestRetryAfterCrashBetweenWriteAndPublish: the desired state was written by an attempt that died
// before publishing. The retry must publish without a second revision.
func TestRetryAfterCrashBetweenWriteAndPublish(t *testing.T) {
	e := newEnv(t, "")
	cmd := actuatortest.Command(t, 1)
	key := schemas.ActiveKey(cmd.Service, cmd.Component, cmd.Block)
	val, _ := json.Marshal(schemas.ActiveVersionOf(&cmd))
	if _, err := e.kv.Create(context.Background(), key, val); err != nil {
		t.Fatal(err)
	}
	if err := e.actuator(t, nil).Actuate(context.Background(), cmd); err != nil {
		t.Fatal(err)
	}
	if n := len(e.messages(t)); n != 1 {
		t.Errorf("%d messages, want 1", n)
	}
	if h := e.history(t, key); len(h) != 1 {
		t.Errorf("%d revisions, want 1", len(h))
	}
}

func TestUnreadableValueIsRepaired(t *testing.T) {
	e := newEnv(t, "")
	cmd := actuatortest.Command(t, 1)
	key := schemas.ActiveKey(cmd.Service, cmd.Component, cmd.Block)
	if _, err := e.kv.Put(context.Background(), key, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if err := e.actuator(t, nil).Actuate(context.Background(), cmd); err != nil {
		t.Fatal(err)
	}
	if got := active(t, e.kv, key); got.CommandID != cmd.ID {
		t.Errorf("key holds %q", got.CommandID)
	}
}

func TestNoStreamIsRetryable(t *testing.T) {
	_, _, js := natstest.Connect(t)
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: schemas.BucketActive})
	if err != nil {
		t.Fatal(err)
	}
	a, err := natsactuator.New(js, kv, schemas.Subjects{}, natsactuator.WithTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	err = a.Actuate(context.Background(), actuatortest.Command(t, 1))
	if err == nil || actuate.IsPermanent(err) {
		t.Fatalf("err = %v, want a retryable error (the stream may not exist yet)", err)
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	_, _, js := natstest.Connect(t)
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: schemas.BucketActive})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		js   jetstream.JetStream
		kv   jetstream.KeyValue
		opt  natsactuator.Option
	}{
		{"nil js", nil, kv, nil},
		{"nil kv", js, nil, nil},
		{"zero timeout", js, kv, natsactuator.WithTimeout(0)},
		{"zero attempts", js, kv, natsactuator.WithCASAttempts(0)},
		{"empty source", js, kv, natsactuator.WithSource("")},
		{"nil logger", js, kv, natsactuator.WithLogger(nil)},
		{"nil clock", js, kv, natsactuator.WithClock(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []natsactuator.Option
			if tt.opt != nil {
				opts = append(opts, tt.opt)
			}
			if _, err := natsactuator.New(tt.js, tt.kv, schemas.Subjects{}, opts...); err == nil {
				t.Fatal("New accepted bad input")
			}
		})
	}
}
