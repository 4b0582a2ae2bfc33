package deployer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/actuate/deployer"
	"github.com/scalpel-dev/scalpel/actuate/natsactuator"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/schemas"
)

// env is an embedded server with the ROLLBACKS stream and scalpel_active bucket (the part of
// ingest's topology commands and acks travel through) and the nats actuator that issues commands.
type env struct {
	t    *testing.T
	nc   *nats.Conn
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	act  *natsactuator.Actuator
	mu   sync.Mutex
	acks []schemas.RollbackAck
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, nc, js := natstest.Connect(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: schemas.StreamRollbacks,
		Subjects: []string{schemas.Subjects{}.RollbackAll()}, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketActive, History: 10})
	if err != nil {
		t.Fatal(err)
	}
	act, err := natsactuator.New(js, kv, schemas.Subjects{})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, nc: nc, js: js, kv: kv, act: act}
	sub, err := nc.Subscribe(schemas.Subjects{}.RollbackAck("*"), func(m *nats.Msg) {
		var a schemas.RollbackAck
		if err := json.Unmarshal(m.Data, &a); err != nil {
			t.Errorf("ack does not decode: %v", err)
			return
		}
		e.mu.Lock()
		e.acks = append(e.acks, a)
		e.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return e
}

// deployer starts a deployer for "shop" on its own connection, so a reconnect of it is its own.
func (e *env) deployer(targets ...deployer.Target) (*deployer.Deployer, *nats.Conn) {
	e.t.Helper()
	nc, err := nats.Connect(e.nc.ConnectedUrl(), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	d, err := deployer.New(nc, "shop", deployer.WithInstance("shop-1"))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := d.Register(targets...); err != nil {
		e.t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(d.Stop)
	return d, nc
}

var seq atomic.Int64

// command is a rollback command issued now with a fresh id.
func command(comp, block, from, to string) schemas.RollbackCommand {
	n := fmt.Sprint(seq.Add(1))
	g := schemas.GranularityFine
	switch {
	case comp == "":
		g = schemas.GranularityCoarse
	case block == "":
		g = schemas.GranularityMedium
	}
	return schemas.RollbackCommand{ID: schemas.DeriveID("test-command", n), DecisionID: schemas.DeriveID("test-decision", n),
		IncidentID: "inc-" + n, Granularity: g, Action: schemas.ActionRollback, Service: "shop", Component: comp, Block: block,
		FromVersion: from, ToVersion: to, Reason: "test", IssuedAt: time.Now().UTC()}
}

func (e *env) issue(cmd schemas.RollbackCommand) {
	e.t.Helper()
	if err := e.act.Actuate(context.Background(), cmd); err != nil {
		e.t.Fatal(err)
	}
}

// publishRaw publishes a command without the actuator (which refuses expired or bad commands).
func (e *env) publishRaw(cmd schemas.RollbackCommand) {
	e.t.Helper()
	hdr, data, err := schemas.EncodeCommandEvent(&cmd, "")
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.nc.PublishMsg(&nats.Msg{Subject: schemas.Subjects{}.RollbackCmd("shop"), Header: nats.Header(hdr), Data: data}); err != nil {
		e.t.Fatal(err)
	}
}

// ackFor waits for the ack of a command.
func (e *env) ackFor(id string) schemas.RollbackAck {
	e.t.Helper()
	var got schemas.RollbackAck
	natstest.CheckFor(e.t, 5*time.Second, 5*time.Millisecond, func() error {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, a := range e.acks {
			if a.CommandID == id {
				got = a
				return nil
			}
		}
		return fmt.Errorf("no ack for %s among %d", id, len(e.acks))
	})
	return got
}

func discount() *deployer.Block[func(float64) float64] {
	return deployer.NewBlock[func(float64) float64]("pricing", "discount").
		Register("1.0", func(p float64) float64 { return p * 0.9 }).
		Register("2.0", func(p float64) float64 { return p * 0.8 })
}

func TestBlockSwitchIsAtomicUnderLoad(t *testing.T) {
	b := discount()
	if got := b.Active(); got != "1.0" {
		t.Fatalf("first registered version should be active, got %q", got)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				v, f := b.Current()
				want := map[string]float64{"1.0": 90, "2.0": 80}[v]
				if got := f(100); got != want {
					t.Errorf("version %s computed %v, want %v", v, got, want)
					return
				}
			}
		}()
	}
	for i := range 1000 {
		if err := b.Switch([]string{"1.0", "2.0"}[i%2]); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if err := b.Switch("3.0"); !errors.Is(err, deployer.ErrUnknownVersion) {
		t.Fatalf("switch to an unregistered version: %v, want ErrUnknownVersion", err)
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = b.Get() }); allocs != 0 {
		t.Fatalf("Get allocates %v times", allocs)
	}
}

func TestCommandSwitchesBlockAndAcks(t *testing.T) {
	e := newEnv(t)
	b := discount()
	tax := deployer.NewBlock[int]("pricing", "tax").Register("1.0", 1).Register("2.0", 2)
	_ = tax.Switch("2.0")
	_ = b.Switch("2.0")
	d, _ := e.deployer(b, tax)

	cmd := command("pricing", "discount", "2.0", "1.0")
	e.issue(cmd)
	ack := e.ackFor(cmd.ID)
	if ack.Status != schemas.AckApplied || ack.ActiveVersion != "1.0" || ack.Service != "shop" || ack.Instance != "shop-1" {
		t.Fatalf("ack %+v, want applied with active 1.0 from shop-1", ack)
	}
	if b.Active() != "1.0" || tax.Active() != "2.0" {
		t.Fatalf("discount %s, tax %s: want only discount back on 1.0", b.Active(), tax.Active())
	}
	if got := d.Version("pricing", "discount"); got != "1.0" {
		t.Fatalf("Version reports %q", got)
	}

	// The same command again (a retry after the Duplicates window) changes nothing and is acked once.
	e.publishRaw(cmd)
	other := command("pricing", "tax", "2.0", "1.0")
	e.issue(other)
	e.ackFor(other.ID)
	e.mu.Lock()
	n := 0
	for _, a := range e.acks {
		if a.CommandID == cmd.ID {
			n++
		}
	}
	e.mu.Unlock()
	// Acks repeat under the same Nats-Msg-Id; the stream keeps one.
	stream, _ := e.js.Stream(context.Background(), schemas.StreamRollbacks)
	msgs := 0
	cons, _ := stream.OrderedConsumer(context.Background(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{"rollback.ack.shop"}})
	batch, _ := cons.FetchNoWait(100)
	for m := range batch.Messages() {
		var a schemas.RollbackAck
		_ = json.Unmarshal(m.Data(), &a)
		if a.CommandID == cmd.ID {
			msgs++
		}
	}
	if msgs != 1 || n < 1 {
		t.Fatalf("stream holds %d acks of the command (%d seen on the wire), want 1", msgs, n)
	}
}

func TestStartTakesDesiredStateFromKV(t *testing.T) {
	e := newEnv(t)
	// scalpel rolled the block back while no instance was running.
	cmd := command("pricing", "discount", "2.0", "1.0")
	e.issue(cmd)
	b := discount()
	_ = b.Switch("2.0") // what the new binary would start with
	e.deployer(b)
	if b.Active() != "1.0" {
		t.Fatalf("after Start the block runs %s, want the desired 1.0", b.Active())
	}
}

func TestOutcomes(t *testing.T) {
	expired := time.Now().Add(-time.Minute)
	tests := []struct {
		name       string
		cmd        func() schemas.RollbackCommand
		raw        bool
		wantStatus string
		wantActive string
	}{
		{"unknown version fails", func() schemas.RollbackCommand { return command("pricing", "discount", "2.0", "0.9") }, false, schemas.AckFailed, "2.0"},
		{"unknown block is ignored", func() schemas.RollbackCommand { return command("pricing", "shipping", "2.0", "1.0") }, false, schemas.AckIgnored, ""},
		{"expired is ignored", func() schemas.RollbackCommand {
			c := command("pricing", "discount", "2.0", "1.0")
			c.IssuedAt = expired.Add(-time.Minute)
			c.ExpiresAt = &expired
			return c
		}, true, schemas.AckIgnored, "2.0"},
		{"medium switches the endpoint", func() schemas.RollbackCommand { return command("catalog", "", "2.0", "1.0") }, false, schemas.AckApplied, "1.0"},
		{"coarse runs the hook", func() schemas.RollbackCommand { return command("", "", "2.0", "1.0") }, false, schemas.AckApplied, "1.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			b := discount()
			_ = b.Switch("2.0")
			h := deployer.NewHandler("catalog").
				Register("1.0", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "v1") })).
				Register("2.0", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "v2") }))
			_ = h.Switch("2.0")
			var hooked atomic.Bool
			nc, err := nats.Connect(e.nc.ConnectedUrl())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			d, err := deployer.New(nc, "shop", deployer.WithInstance("shop-1"))
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Register(b, h); err != nil {
				t.Fatal(err)
			}
			if err := d.OnAppRollback(func(_ context.Context, c schemas.RollbackCommand) error { hooked.Store(true); return nil }); err != nil {
				t.Fatal(err)
			}
			if err := d.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer d.Stop()
			cmd := tc.cmd()
			if tc.raw {
				e.publishRaw(cmd)
			} else {
				e.issue(cmd)
			}
			ack := e.ackFor(cmd.ID)
			if ack.Status != tc.wantStatus || ack.ActiveVersion != tc.wantActive {
				t.Fatalf("ack %s active %q (%s), want %s active %q", ack.Status, ack.ActiveVersion, ack.Error, tc.wantStatus, tc.wantActive)
			}
			if ack.Status != schemas.AckApplied && ack.Error == "" {
				t.Fatalf("a %s ack should say why", ack.Status)
			}
			switch tc.name {
			case "medium switches the endpoint":
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
				if rec.Body.String() != "v1" {
					t.Fatalf("endpoint answers %q after rollback, want v1", rec.Body.String())
				}
			case "coarse runs the hook":
				if !hooked.Load() || b.Active() != "1.0" || h.Active() != "1.0" {
					t.Fatalf("coarse rollback: hook %v, block %s, endpoint %s", hooked.Load(), b.Active(), h.Active())
				}
			}
		})
	}
}

func TestSupersededCommandIsIgnored(t *testing.T) {
	e := newEnv(t)
	b := discount()
	_ = b.Switch("2.0")
	e.deployer(b)
	newer := command("pricing", "discount", "2.0", "1.0")
	older := command("pricing", "discount", "1.0", "2.0")
	older.IssuedAt = newer.IssuedAt.Add(-time.Second)
	e.issue(newer)
	e.ackFor(newer.ID)
	e.publishRaw(older) // the actuator would refuse it; a slow path might still deliver it
	if ack := e.ackFor(older.ID); ack.Status != schemas.AckIgnored || b.Active() != "1.0" {
		t.Fatalf("older command: ack %s, block on %s; want ignored and 1.0", ack.Status, b.Active())
	}
}

func TestSurvivesReconnect(t *testing.T) {
	e := newEnv(t)
	b := discount()
	_ = b.Switch("2.0")
	_, nc := e.deployer(b)
	var reconnected atomic.Int32
	nc.SetReconnectHandler(func(*nats.Conn) { reconnected.Add(1) })
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if reconnected.Load() == 0 || !nc.IsConnected() {
			return errors.New("not reconnected yet")
		}
		return nil
	})
	cmd := command("pricing", "discount", "2.0", "1.0")
	e.issue(cmd)
	if ack := e.ackFor(cmd.ID); ack.Status != schemas.AckApplied || b.Active() != "1.0" {
		t.Fatalf("after a reconnect: ack %s, block %s", ack.Status, b.Active())
	}
}

func TestRegisterRejectsBadTargets(t *testing.T) {
	e := newEnv(t)
	d, err := deployer.New(e.nc, "shop")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		targets []deployer.Target
		want    error
	}{
		{"bad component", []deployer.Target{deployer.NewBlock[int]("pri cing", "x")}, deployer.ErrBadName},
		{"bad block", []deployer.Target{deployer.NewBlock[int]("pricing", "a.b")}, deployer.ErrBadName},
		{"duplicate", []deployer.Target{deployer.NewBlock[int]("pricing", "x"), deployer.NewBlock[int]("pricing", "x")}, deployer.ErrDuplicateTarget},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.Register(tc.targets...); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := deployer.New(e.nc, "shop.eu"); !errors.Is(err, deployer.ErrBadName) {
		t.Fatalf("service with a dot: %v", err)
	}
}

func TestBenchCommandAck(t *testing.T) {
	e := newEnv(t)
	p50, p99, err := deployer.BenchCommandAck(context.Background(), e.js, e.act.Actuate, 20)
	if err != nil {
		t.Fatal(err)
	}
	if p50 <= 0 || p99 < p50 {
		t.Fatalf("p50 %v p99 %v", p50, p99)
	}
	t.Logf("command → ack: p50 %v, p99 %v", p50, p99)
}
