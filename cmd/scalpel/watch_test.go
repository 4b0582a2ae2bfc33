package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/actuate/natsactuator"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/schemas"
)

func TestWatchConsumerConfig(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		o         watchOptions
		wantStart *time.Time
		wantPol   jetstream.DeliverPolicy
		wantErr   string
	}{
		{"new by default", watchOptions{}, nil, jetstream.DeliverNewPolicy, ""},
		{"all", watchOptions{all: true}, nil, jetstream.DeliverAllPolicy, ""},
		{"since duration", watchOptions{since: "90m"}, ptr(now.Add(-90 * time.Minute)), jetstream.DeliverByStartTimePolicy, ""},
		{"since time", watchOptions{since: "2026-11-26T10:00:00Z"}, ptr(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)), jetstream.DeliverByStartTimePolicy, ""},
		{"since garbage", watchOptions{since: "yesterday"}, nil, 0, "RFC 3339"},
		{"since negative", watchOptions{since: "-5m"}, nil, 0, "positive"},
		{"both", watchOptions{all: true, since: "1h"}, nil, 0, "give one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := watchConsumerConfig(schemas.Subjects{Prefix: "acme"}, "checkout", tt.o, now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"acme.rollback.cmd.checkout", "acme.rollback.ack.checkout"}; strings.Join(cfg.FilterSubjects, ",") != strings.Join(want, ",") {
				t.Errorf("filters %v, want %v", cfg.FilterSubjects, want)
			}
			if cfg.DeliverPolicy != tt.wantPol {
				t.Errorf("policy %v, want %v", cfg.DeliverPolicy, tt.wantPol)
			}
			if (cfg.OptStartTime == nil) != (tt.wantStart == nil) || (tt.wantStart != nil && !cfg.OptStartTime.Equal(*tt.wantStart)) {
				t.Errorf("start %v, want %v", cfg.OptStartTime, tt.wantStart)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// watchFixture publishes, on a fresh server, one command (through the nats actuator), its ack, an
// ack for another service (filtered out) and a stray message, and returns the server URL.
func watchFixture(t *testing.T) (string, schemas.RollbackCommand) {
	t.Helper()
	s, _, js := natstest.Connect(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: schemas.StreamRollbacks, Subjects: []string{"rollback.>"}, Duplicates: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketActive})
	if err != nil {
		t.Fatal(err)
	}
	a, err := natsactuator.New(js, kv, schemas.Subjects{})
	if err != nil {
		t.Fatal(err)
	}
	cmds := actuate.Commands(&schemas.Decision{
		ID: "d-1", TS: time.Date(2026, 11, 26, 10, 0, 5, 0, time.UTC), IncidentID: "inc-1",
		Service: "checkout", Action: schemas.ActionRollback, Reason: "error rate 11%\nvs 2% baseline",
		Targets: []schemas.DecisionTarget{{Service: "checkout", Component: "tax-calc", Block: "rate-lookup",
			FromVersion: "2.4.0", ToVersion: "2.3.9", Step: 1}},
	}, 0)
	if err := a.Actuate(ctx, cmds[0]); err != nil {
		t.Fatal(err)
	}
	pub := func(subject string, v any) {
		b, _ := json.Marshal(v)
		if _, err := js.Publish(ctx, subject, b); err != nil {
			t.Fatal(err)
		}
	}
	pub("rollback.ack.checkout", schemas.RollbackAck{CommandID: cmds[0].ID, Service: "checkout", Instance: "pod-1",
		Status: schemas.AckApplied, ActiveVersion: "2.3.9", TS: time.Date(2026, 11, 26, 10, 0, 6, 0, time.UTC)})
	pub("rollback.ack.billing", schemas.RollbackAck{CommandID: "x", Service: "billing", Instance: "pod-9",
		Status: schemas.AckApplied, ActiveVersion: "1", TS: time.Now()})
	pub("rollback.ack.checkout", map[string]string{"hello": "world"})
	return s.ClientURL(), cmds[0]
}

// runCLI runs the command line and returns what it printed. Its deadline only stops a command
// that hangs: one run of the scenario suite under -race on a loaded machine takes 15 s.
func runCLI(t *testing.T, args ...string) string {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := root.ExecuteContext(ctx); err != nil {
		t.Fatalf("scalpel %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func TestWatchJSON(t *testing.T) {
	url, cmd := watchFixture(t)
	out := runCLI(t, "--server", url, "watch", "checkout", "--all", "--count", "3", "-o", "json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3:\n%s", len(lines), out)
	}
	var got []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
		got = append(got, m)
	}
	if got[0]["kind"] != "command" || got[0]["id"] != cmd.ID || got[0]["to_version"] != "2.3.9" || got[0]["stream_seq"] != 1.0 {
		t.Errorf("line 1 = %v, want the command", got[0])
	}
	if got[1]["kind"] != "ack" || got[1]["command_id"] != cmd.ID || got[1]["instance"] != "pod-1" || got[1]["status"] != "applied" {
		t.Errorf("line 2 = %v, want the ack", got[1])
	}
	if got[2]["kind"] != "invalid" || !strings.Contains(got[2]["problem"].(string), "invalid rollback ack") {
		t.Errorf("line 3 = %v, want the stray message as invalid", got[2])
	}
}

func TestWatchTable(t *testing.T) {
	url, cmd := watchFixture(t)
	out := runCLI(t, "--server", url, "watch", "checkout", "--since", "1h", "--count", "2")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), out)
	}
	for _, want := range []string{"command", cmd.ID[:8], "rollback", "checkout/tax-calc/rate-lookup", "2.4.0→2.3.9", "error rate 11% vs 2% baseline"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("command line %q lacks %q", lines[0], want)
		}
	}
	for _, want := range []string{"ack", cmd.ID[:8], "applied", "instance=pod-1", "active=2.3.9"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("ack line %q lacks %q", lines[1], want)
		}
	}
}

// TestWatchFollowsNew: by default only messages published after the watch starts are shown. The
// watch's consumer starts at some point we cannot observe from outside, so the test keeps publishing
// new acks until one is printed, and checks that none of the history was.
func TestWatchFollowsNew(t *testing.T) {
	url, _ := watchFixture(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs([]string{"--server", url, "watch", "checkout", "--count", "1", "-o", "json"})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = root.ExecuteContext(ctx)
		done <- out.String()
	}()
	ack, _ := json.Marshal(schemas.RollbackAck{CommandID: "c-new", Service: "checkout", Instance: "pod-new",
		Status: schemas.AckIgnored, ActiveVersion: "2.3.9", TS: time.Date(2026, 11, 26, 10, 1, 0, 0, time.UTC)})
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case out := <-done:
			if !strings.Contains(out, `"instance":"pod-new"`) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Fatalf("watch printed %q, want exactly one new ack", out)
			}
			return
		case <-tick.C:
			if _, err := js.Publish(context.Background(), "rollback.ack.checkout", ack); err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatal("watch did not print a new message within 10s")
		}
	}
}
