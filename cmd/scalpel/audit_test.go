package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/actuate/natsactuator"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// TestAuditTrailCommands: scalpel decisions, decisions --incident, incidents and versions read back
// the trail a rollback of one block leaves in the streams (two deploys, the decision, its command
// and the deployer's ack, a hold of another incident, and a message that is not a decision), and
// an unknown incident is an error that says what to do.
func TestAuditTrailCommands(t *testing.T) {
	s, _, js := natstest.Connect(t)
	ctx := context.Background()
	cfg := config.Default()
	if err := ingest.EnsureTopology(ctx, js, cfg.Subjects(), cfg.Topology); err != nil {
		t.Fatal(err)
	}
	pub := func(subject string, v any) {
		b, _ := json.Marshal(v)
		if _, err := js.Publish(ctx, subject, b); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().UTC().Add(-30 * time.Minute).Truncate(time.Second)
	pub("deploy.checkout", sim.CheckoutDeploy("d-1.0", t0, "1.0"))
	pub("deploy.checkout", sim.CheckoutDeploy("d-2.0", t0.Add(10*time.Minute), "2.0"))
	d := schemas.Decision{ID: "dec-1", TS: t0.Add(10*time.Minute + 2*time.Second), IncidentID: "inc-1", AnomalyIDs: []string{"a-1"},
		Service: "checkout", Action: schemas.ActionRollback, Granularity: schemas.GranularityFine, DeployID: "d-2.0",
		Reason: "checkout/tax-calc/rate-lookup error rate (exception) is 25% against a baseline of 1%",
		Targets: []schemas.DecisionTarget{{Service: "checkout", Component: "tax-calc", Block: "rate-lookup",
			FromVersion: "2.0", ToVersion: "1.0", Step: 1}}}
	pub("decision.checkout", d)
	pub("decision.checkout", map[string]string{"hello": "world"})
	pub("decision.checkout", schemas.Decision{ID: "dec-2", TS: t0.Add(20 * time.Minute), IncidentID: "inc-2", AnomalyIDs: []string{"a-2"},
		Service: "checkout", Action: schemas.ActionHold, Reason: "checkout/cart latency p99 is 80ms against a baseline of 40ms; no deploy changed cart"})
	kv, err := js.KeyValue(ctx, schemas.BucketActive)
	if err != nil {
		t.Fatal(err)
	}
	a, err := natsactuator.New(js, kv, schemas.Subjects{})
	if err != nil {
		t.Fatal(err)
	}
	cmd := actuate.Commands(&d, 0)[0]
	if err := a.Actuate(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	pub("rollback.ack.checkout", schemas.RollbackAck{CommandID: cmd.ID, Service: "checkout", Instance: "pod-1",
		Status: schemas.AckApplied, ActiveVersion: "1.0", TS: d.TS.Add(time.Second)})

	url := s.ClientURL()
	out := runCLI(t, "--server", url, "decisions", "--service", "checkout")
	for _, want := range []string{"rollback", "fine", "tax-calc/rate-lookup 2.0→1.0", "error rate (exception) is 25%"} {
		if !strings.Contains(out, want) {
			t.Errorf("decisions: no %q in\n%s", want, out)
		}
	}
	out = runCLI(t, "--server", url, "decisions", "--incident", "inc-1")
	for _, want := range []string{"Incident inc-1", "deploy:   d-2.0", "Step 1", "(decision dec-1)", "pod-1"} {
		if !strings.Contains(out, want) {
			t.Errorf("decisions --incident: no %q in\n%s", want, out)
		}
	}
	out = runCLI(t, "--server", url, "incidents", "--service", "checkout")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "inc-1") || !strings.Contains(lines[2], "inc-2") {
		t.Fatalf("incidents: want inc-1 then inc-2 under the header:\n%s", out)
	}
	for i, want := range [][]string{
		{"mitigating", "rollback/fine", "error rate (exception) is 25% against a baseline of 1%"},
		{"held", "hold", "checkout/cart latency p99 is 80ms against a baseline of 40ms"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("incidents, line %d: no %q in %s", i+1, w, lines[i+1])
			}
		}
	}
	if strings.Contains(lines[2], "no deploy changed cart") {
		t.Errorf("incidents: the summary goes past the reason's first clause: %s", lines[2])
	}
	out = runCLI(t, "--server", url, "versions", "checkout/tax-calc/rate-lookup")
	for _, want := range []string{"deploy d-1.0", "deploy d-2.0", "rollback by decision dec-1"} {
		if !strings.Contains(out, want) {
			t.Errorf("versions: no %q in\n%s", want, out)
		}
	}
	root := newRootCmd()
	var buf bytes.Buffer
	root.SetOut(&buf)
	root.SetErr(&buf)
	root.SetArgs([]string{"--server", url, "decisions", "--incident", "inc-9"})
	if err := root.ExecuteContext(ctx); err == nil || !strings.Contains(err.Error(), "list recent ones with `scalpel decisions`") {
		t.Errorf("decisions of an unknown incident: %v", err)
	}
}
