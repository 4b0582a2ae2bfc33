package decide

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// commandsOf derives the commands of d the way actuate does (one per target, id from the decision
// id, the target's active key and the plan's action), so the story's matching is checked against
// an independent derivation.
func commandsOf(d schemas.Decision) []schemas.RollbackCommand {
	if d.DryRun || !changesVersions(d.Action) {
		return nil
	}
	var out []schemas.RollbackCommand
	for _, t := range d.Targets {
		action := d.Action
		if action == schemas.ActionEscalate {
			action = schemas.ActionRollback
		}
		for _, p := range d.Plan {
			if p.Step == t.Step && p.Service == t.Service && p.Component == t.Component && p.Block == t.Block && schemas.IsCommandAction(p.Action) {
				action = p.Action
			}
		}
		if !schemas.IsCommandAction(action) {
			return nil
		}
		out = append(out, schemas.RollbackCommand{ID: schemas.DeriveID("command", d.ID, schemas.ActiveKey(t.Service, t.Component, t.Block), action),
			DecisionID: d.ID, IncidentID: d.IncidentID, Action: action, Service: t.Service, Component: t.Component, Block: t.Block,
			FromVersion: t.FromVersion, ToVersion: t.ToVersion, IssuedAt: d.TS})
	}
	return out
}

func ackOf(c schemas.RollbackCommand, instance, status string, after time.Duration) schemas.RollbackAck {
	a := schemas.RollbackAck{CommandID: c.ID, Service: c.Service, Instance: instance, Status: status, ActiveVersion: c.ToVersion, TS: c.IssuedAt.Add(after)}
	if status == schemas.AckFailed {
		a.ActiveVersion, a.Error = c.FromVersion, "no implementation registered for version "+c.ToVersion
	}
	return a
}

type trail struct {
	decisions []schemas.Decision
	commands  []schemas.RollbackCommand
	acks      []schemas.RollbackAck
	approvals []schemas.Approval
}

func (tr *trail) add(t *testing.T, ds []schemas.Decision, err error) []schemas.Decision {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	tr.decisions = append(tr.decisions, ds...)
	for _, d := range ds {
		tr.commands = append(tr.commands, commandsOf(d)...)
	}
	return ds
}

// ladderTrail: a fine rollback with a plan across three services, acked; the anomaly persists, so
// the ladder climbs to medium (one instance fails to apply part of it); recovery; a restoring deploy.
func ladderTrail(t *testing.T) (string, trail) {
	ctx := context.Background()
	var tr trail
	e := New(DefaultConfig(), NewStaticCatalog(threeServices()...))
	for _, d := range []*schemas.DeployEvent{d0, d1,
		{ID: "w0", TS: t0, Service: "web", AppVersion: "10"}, {ID: "w1", TS: t0.Add(30 * time.Minute), Service: "web", AppVersion: "11"},
		{ID: "r0", TS: t0, Service: "report", AppVersion: "4"}} {
		if _, err := e.HandleDeploy(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	a1 := anomaly("a1", "tax-calc", "2.5.0", 2*time.Minute, func(a *schemas.Anomaly) {
		a.BaselineVersion = "2.4.0"
		a.Evidence.Blocks = map[string]int64{"rate-lookup": 90}
	})
	ds, err := e.HandleAnomaly(ctx, a1)
	fine := tr.add(t, ds, err)[0]
	for _, c := range tr.commands {
		tr.acks = append(tr.acks, ackOf(c, c.Service+"-1", schemas.AckApplied, time.Second))
	}
	ds, err = e.Advance(fine.TS.Add(6 * time.Minute))
	med := tr.add(t, ds, err)[0]
	for _, c := range commandsOf(med) {
		tr.acks = append(tr.acks, ackOf(c, c.Service+"-1", schemas.AckApplied, 2*time.Second))
		if c.Service == "checkout" {
			tr.acks = append(tr.acks, ackOf(c, "checkout-2", schemas.AckApplied, 3*time.Second))
		}
	}
	res := *a1
	res.Status = schemas.AnomalyResolved
	at := med.TS.Add(time.Minute)
	res.ResolvedAt, res.Resolution = &at, "traffic moved to version 2.4.0, which is healthy"
	ds, err = e.HandleAnomaly(ctx, &res)
	tr.add(t, ds, err)
	ds, err = e.HandleDeploy(ctx, &schemas.DeployEvent{ID: "d2", TS: t1.Add(2 * time.Hour), Service: "checkout", AppVersion: "1.2",
		Components: []schemas.DeployComponent{{Component: "tax-calc", Version: "2.6.0"}}})
	tr.add(t, ds, err)
	return fine.IncidentID, tr
}

// approvalTrail: outside the rollback window the answer is a recommendation; alice approves it.
func approvalTrail(t *testing.T) (string, trail) {
	ctx := context.Background()
	var tr trail
	e := setup(t, DefaultConfig(), nil2(testManifest()))
	ds, err := e.HandleAnomaly(ctx, anomaly("a1", "cart", "3.1", 20*time.Minute))
	rec := tr.add(t, ds, err)[0]
	ap := schemas.Approval{ID: "ap1", DecisionID: rec.ID, Service: "checkout", Approve: true, Actor: "alice@ops", Reason: "clearly the deploy", TS: rec.TS.Add(3 * time.Minute)}
	tr.approvals = append(tr.approvals, ap, ap) // a redelivery is one approval
	ds, err = e.HandleApproval(ctx, &ap)
	tr.add(t, ds, err)
	for _, c := range tr.commands {
		tr.acks = append(tr.acks, ackOf(c, "checkout-7", schemas.AckFailed, time.Second))
	}
	return rec.IncidentID, tr
}

// dryRunTrail: a dry-run service's coarse rollback is recorded only.
func dryRunTrail(t *testing.T) (string, trail) {
	ctx := context.Background()
	var tr trail
	m := testManifest()
	m.DryRun = true
	e := setup(t, DefaultConfig(), nil2(m))
	ds, err := e.HandleAnomaly(ctx, anomaly("a1", "pay", "5.1", 2*time.Minute))
	d := tr.add(t, ds, err)[0]
	return d.IncidentID, tr
}

func TestStoryGolden(t *testing.T) {
	for _, tc := range []struct {
		name  string
		trail func(*testing.T) (string, trail)
	}{
		{"ladder", ladderTrail},
		{"approval", approvalTrail},
		{"dry-run", dryRunTrail},
		{"unknown", func(*testing.T) (string, trail) { return "no-such-incident", trail{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, tr := tc.trail(t)
			// Another incident's records and redeliveries are mixed in, as the streams hold them.
			_, other := approvalTrail(t)
			decisions := append(append(other.decisions, tr.decisions...), tr.decisions...)
			s := NewStory(id, decisions, append(tr.commands, other.commands...), append(tr.acks, tr.acks...), append(tr.approvals, other.approvals...))
			if tc.name != "unknown" && len(s.Steps) != len(tr.decisions) {
				t.Fatalf("%d steps, want %d", len(s.Steps), len(tr.decisions))
			}
			got := s.String()
			path := filepath.Join("testdata", "story", tc.name+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("story differs from %s (run with -update after checking):\n%s", path, got)
			}
			// -o json prints the same story.
			b, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			var back Story
			if err := json.Unmarshal(b, &back); err != nil || back.IncidentID != id || len(back.Steps) != len(s.Steps) {
				t.Fatalf("JSON round trip: %v %s", err, b)
			}
			if strings.Contains(string(b), "null") {
				t.Errorf("JSON has nulls where lists belong: %s", b)
			}
		})
	}
}
