package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/actuate/exec"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/replay"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// A 30 s rollback window: the block below goes bad 45 s after its deploy, so decide recommends.
var lateManifest = strings.Replace(sim.CheckoutManifest, "rollback_window: 15m", "rollback_window: 30s", 1)

// TestReplayReproducesApprovalAndActuationFailure records an incident that a person and a failed
// actuator steered: the deploy's anomaly arrives outside the rollback window, decide recommends, a
// person approves (as `scalpel approve` does), the approved rollback cannot be carried out (the
// service's exec actuator exits 2, a permanent failure, so actuate routes the decision to
// rejected.actuate) and decide escalates. A replay from the server and from an exported bundle
// must make the same decisions byte for byte, which it can only do by feeding the approval and
// the actuation failure to the engine as live decide did.
func TestReplayReproducesApprovalAndActuationFailure(t *testing.T) {
	cfg := config.Default()
	cfg.Actuate.Services = map[string][]string{"checkout": {"exec"}}
	cfg.Actuate.Exec.Services = map[string]exec.Config{"checkout": {Argv: []string{"sh", "-c", "echo rollout refused >&2; exit 2"}}}
	l := startLive(t, cfg, lateManifest)

	svc := sim.Checkout(11)
	lookup := svc.Block("tax-calc", "rate-lookup")
	bad := lookup.Versions["2.0"]
	delete(lookup.Versions, "2.0") // 2.0 starts healthy: the regression is latent
	t0 := time.Now().UTC().Add(-4 * time.Minute).Truncate(time.Second)
	l.publishDeploy(sim.CheckoutDeploy("d-1.0", t0, "1.0"))
	l.publish(svc.Traffic(t0, 120*time.Second))
	t1 := t0.Add(120 * time.Second)
	l.publishDeploy(sim.CheckoutDeploy("d-2.0", t1, "2.0"))
	svc.SetVersion("2.0")
	l.publish(svc.Traffic(t1, 45*time.Second))
	lookup.Versions["2.0"] = bad
	l.publish(svc.Traffic(t1.Add(45*time.Second), 40*time.Second))
	l.idle(durIngest, durDecide)

	recommend := l.waitDecision(func(d *schemas.Decision) bool { return d.Action == schemas.ActionRecommend })
	// As `scalpel approve` publishes it: now, in wall-clock time, after the telemetry it answers.
	ap := schemas.Approval{ID: schemas.DeriveID("approval", recommend.ID), DecisionID: recommend.ID, Service: "checkout",
		Approve: true, Actor: "alice@ops", Reason: "the 2.0 rate lookup breaks tax", TS: time.Now().UTC()}
	b, _ := json.Marshal(&ap)
	if _, err := l.js.Publish(l.ctx, l.subj.Approval(ap.Service), b, jetstream.WithMsgID(ap.ID)); err != nil {
		t.Fatal(err)
	}
	rollback := l.waitDecision(func(d *schemas.Decision) bool {
		return d.IncidentID == recommend.IncidentID && d.Action == schemas.ActionRollback
	})
	// The rollback fails to actuate; decide takes the failure as a failed step and escalates.
	l.waitDecision(func(d *schemas.Decision) bool {
		return d.IncidentID == recommend.IncidentID && d.TS.After(rollback.TS) && strings.Contains(d.Reason, "actuation failed")
	})
	l.settle()
	rec := l.recording()
	failures := readStream(t, l.js, schemas.StreamRejected, l.subj.Rejected("actuate"))
	if len(failures) == 0 {
		t.Fatal("no decision in rejected.actuate")
	}
	t.Logf("live: %d anomalies, %d decisions, %d actuation failures", len(rec.anomalies), len(rec.decisions), len(failures))

	ctx := context.Background()
	open := func() replay.Source {
		src, err := replay.NewServerSource(ctx, l.js, replay.ServerOptions{Subjects: l.subj})
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	check := func(t *testing.T, tl *replay.Timeline) {
		t.Helper()
		sameBytes(t, "anomaly", marshalAll(t, tl.Anomalies), rec.anomalies)
		sameBytes(t, "decision", marshalAll(t, tl.Decisions), rec.decisions)
		if !tl.Diff.Identical {
			t.Fatalf("diff against the recording is not empty: %v", tl.Diff.Lines())
		}
		if len(tl.Warnings) > 0 {
			t.Errorf("warnings: %v", tl.Warnings)
		}
		if len(tl.Recorded.Approvals) != 1 || len(tl.Recorded.ActuationFailures) != len(failures) {
			t.Errorf("timeline holds %d approvals and %d actuation failures, want 1 and %d",
				len(tl.Recorded.Approvals), len(tl.Recorded.ActuationFailures), len(failures))
		}
		kinds := map[string]int{}
		for _, e := range tl.Events {
			kinds[e.Kind]++
		}
		if kinds["approval"] != 1 || kinds["actuation_failure"] != len(failures) {
			t.Errorf("story has %d approval and %d actuation_failure entries, want 1 and %d", kinds["approval"], kinds["actuation_failure"], len(failures))
		}
	}

	src := open()
	tl, err := replay.Run(ctx, src, replay.Options{Config: cfg, Charts: true})
	_ = src.Close()
	if err != nil {
		t.Fatal(err)
	}
	check(t, tl)

	t.Run("bundle", func(t *testing.T) {
		bundle, recs := exportBundle(t, ctx, open())
		kinds := map[string]int{}
		for _, r := range recs {
			kinds[r.Kind]++
			if r.Kind == replay.KindActuationFailure && r.Headers[schemas.HeaderRejectReason] == "" {
				t.Errorf("actuation failure record (seq %d) without its reject reason: headers %v", r.Seq, r.Headers)
			}
		}
		if kinds[replay.KindApproval] != 1 || kinds[replay.KindActuationFailure] != len(failures) {
			t.Errorf("bundle kinds %v: want 1 approval and %d actuation failures", kinds, len(failures))
		}
		ftl, err := replay.Run(ctx, replay.NewFileSource(bytes.NewReader(bundle), int64(len(bundle))), replay.Options{Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		check(t, ftl)
	})

	// Without the answers the replay must differ: that shows they are what it reproduced.
	for _, tc := range []struct {
		name, drop string
	}{
		// The recommendation stays unanswered: no rollback, no failure, no escalation.
		{"without the approval", replay.KindApproval},
		// The rollback looks carried out: no escalation.
		{"without the actuation failures", replay.KindActuationFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, recs := exportBundle(t, ctx, open())
			var kept []replay.Record
			for _, r := range recs {
				if r.Kind != tc.drop {
					kept = append(kept, r)
				}
			}
			wtl, err := replay.Run(ctx, replay.NewSliceSource(kept), replay.Options{Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			if wtl.Diff.Identical || len(wtl.Diff.Removed) == 0 || len(wtl.Diff.Added) != 0 {
				t.Fatalf("replay without %s records: want only removed decisions, got %v", tc.drop, wtl.Diff.Lines())
			}
			for _, d := range wtl.Diff.Removed {
				if d.Action == schemas.ActionRecommend || d.ID == rollback.ID && tc.drop != replay.KindApproval {
					t.Errorf("a decision made before the dropped input went missing: %v", wtl.Diff.Lines())
				}
			}
		})
	}

	t.Run("report", func(t *testing.T) {
		var b bytes.Buffer
		if err := replay.WriteReport(&b, tl, replay.ReportOptions{}); err != nil {
			t.Fatal(err)
		}
		page := b.String()
		for _, want := range []string{"approvals recorded", "alice@ops approved recommendation " + recommend.ID,
			"actuation failures recorded", "actuation failed", "rollout refused"} {
			if !strings.Contains(page, want) {
				t.Errorf("report lacks %q", want)
			}
		}
	})
}

// waitDecision polls DECISIONS until a decision matches.
func (l *live) waitDecision(match func(*schemas.Decision) bool) schemas.Decision {
	l.t.Helper()
	var found schemas.Decision
	natstest.CheckFor(l.t, 30*time.Second, 50*time.Millisecond, func() error {
		for _, b := range readStream(l.t, l.js, schemas.StreamDecisions, l.subj.Decision("*")) {
			var d schemas.Decision
			if err := json.Unmarshal(b, &d); err != nil {
				return err
			}
			if match(&d) {
				found = d
				return nil
			}
		}
		return fmt.Errorf("no matching decision yet")
	})
	return found
}

// settle waits until every stage has handled everything and no new decision appears between two
// looks: the escalation ladder has run to its end.
func (l *live) settle() {
	l.t.Helper()
	prev := -1
	natstest.CheckFor(l.t, 30*time.Second, 200*time.Millisecond, func() error {
		for _, c := range [][2]string{durIngest, durDecide,
			{schemas.StreamDecisions, pipeline.DurableActuate},
			{schemas.StreamDecisions, pipeline.DurableDecideApprovals},
			{schemas.StreamRejected, pipeline.DurableDecideRejected},
		} {
			if err := natstest.Idle(l.ctx, l.js, c[0], c[1]); err != nil {
				prev = -1
				return err
			}
		}
		n := len(readStream(l.t, l.js, schemas.StreamDecisions, l.subj.Decision("*")))
		if n != prev {
			prev = n
			return fmt.Errorf("%d decisions, still moving", n)
		}
		return nil
	})
}
