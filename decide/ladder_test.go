package decide

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Three services: web/page depends on checkout/tax-calc (cascade), report/export depends on it
// (disable), checkout/tax-calc is tagged fine.
func threeServices() []*schemas.Manifest {
	return []*schemas.Manifest{
		testManifest(),
		{Service: "web", Components: []schemas.ManifestComponent{{Component: "page", Granularity: schemas.GranularityMedium,
			DependsOn: []schemas.Dependency{{Service: "checkout", Component: "tax-calc", OnRollback: schemas.OnRollbackCascade}}}}},
		{Service: "report", Components: []schemas.ManifestComponent{{Component: "export", Granularity: schemas.GranularityMedium,
			DependsOn: []schemas.Dependency{{Service: "checkout", Component: "tax-calc", OnRollback: schemas.OnRollbackDisable}}}}},
	}
}

func TestScenarioFineFailsEscalatesToMedium(t *testing.T) {
	ctx := context.Background()
	e := New(DefaultConfig(), NewStaticCatalog(threeServices()...))
	deploys := []*schemas.DeployEvent{d0, d1,
		{ID: "w0", TS: t0, Service: "web", AppVersion: "10"}, {ID: "w1", TS: t0.Add(30 * time.Minute), Service: "web", AppVersion: "11"},
		{ID: "r0", TS: t0, Service: "report", AppVersion: "4"},
	}
	for _, d := range deploys {
		if _, err := e.HandleDeploy(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	a1 := anomaly("a1", "tax-calc", "2.5.0", 2*time.Minute, func(a *schemas.Anomaly) {
		a.Evidence.Blocks = map[string]int64{"rate-lookup": 90}
	})
	ds, err := e.HandleAnomaly(ctx, a1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("first decision: %v %v", ds, err)
	}
	fine := ds[0]
	if fine.Action != schemas.ActionRollback || fine.Granularity != schemas.GranularityFine {
		t.Fatalf("step 1 = %s %s: %s", fine.Action, fine.Granularity, fine.Reason)
	}
	// Plan: the dependents first (report/export disabled, web/page cascaded back), then the block.
	wantPlan := []string{"disable report/export 4→4", "rollback web/page 11→10", "rollback checkout/tax-calc/rate-lookup r2→r1"}
	if got := planText(fine.Plan); strings.Join(got, "; ") != strings.Join(wantPlan, "; ") {
		t.Errorf("plan = %v, want %v", got, wantPlan)
	}
	if len(fine.Targets) != 3 || fine.Targets[2].Step != 3 {
		t.Errorf("targets = %+v", fine.Targets)
	}
	if !strings.Contains(fine.Reason, "web/page goes back 11 → 10 (cascade from checkout/tax-calc)") {
		t.Errorf("reason does not explain the plan: %s", fine.Reason)
	}
	if err := fine.Validate(); err != nil {
		t.Fatal(err)
	}

	// Nothing is due before the verify period ends.
	if ds, err := e.Advance(fine.TS.Add(4 * time.Minute)); err != nil || len(ds) != 0 {
		t.Fatalf("early advance: %v %v", ds, err)
	}
	// The anomaly still fires when the verify period ends: climb to medium.
	ds, err = e.Advance(fine.TS.Add(6 * time.Minute))
	if err != nil || len(ds) != 1 {
		t.Fatalf("advance: %v %v", ds, err)
	}
	med := ds[0]
	if med.Action != schemas.ActionEscalate || med.Granularity != schemas.GranularityMedium || med.IncidentID != fine.IncidentID {
		t.Fatalf("step 2 = %s %s: %s", med.Action, med.Granularity, med.Reason)
	}
	if !med.TS.Equal(fine.TS.Add(5 * time.Minute)) {
		t.Errorf("escalation at %s, want the end of the verify period", med.TS)
	}
	last := med.Targets[len(med.Targets)-1]
	if last.Component != "tax-calc" || last.Block != "" || last.FromVersion != "2.5.0" || last.ToVersion != "2.4.0" {
		t.Errorf("medium target = %+v", last)
	}
	if !strings.Contains(med.Reason, "Escalating from fine to medium") {
		t.Errorf("reason = %s", med.Reason)
	}
	if err := med.Validate(); err != nil {
		t.Fatal(err)
	}

	// Recovery: detect resolves the anomaly once traffic moved to the old version.
	res := *a1
	res.Status = schemas.AnomalyResolved
	at := med.TS.Add(time.Minute)
	res.ResolvedAt = &at
	res.Resolution = "traffic moved to version 2.4.0, which is healthy"
	ds, err = e.HandleAnomaly(ctx, &res)
	if err != nil || len(ds) != 1 || ds[0].Action != schemas.ActionNone || !strings.Contains(ds[0].Reason, "Mitigated") {
		t.Fatalf("mitigated: %v %v", ds, err)
	}
	if inc := e.Incidents()[0]; inc.State != IncidentMitigated {
		t.Errorf("state = %s", inc.State)
	}
	// A redelivered resolution changes nothing.
	if ds, _ := e.HandleAnomaly(ctx, &res); len(ds) != 0 {
		t.Errorf("redelivered resolution: %v", ds)
	}

	// A later deploy of tax-calc restores the newer versions and resolves the incident.
	d2 := &schemas.DeployEvent{ID: "d2", TS: t1.Add(2 * time.Hour), Service: "checkout", AppVersion: "1.2",
		Components: []schemas.DeployComponent{{Component: "tax-calc", Version: "2.6.0"}}}
	ds, err = e.HandleDeploy(ctx, d2)
	if err != nil || len(ds) != 1 || ds[0].Action != schemas.ActionRestore {
		t.Fatalf("restore: %v %v", ds, err)
	}
	if got := planText(ds[0].Plan); got[0] != "restore checkout/tax-calc 2.4.0→2.6.0" || got[2] != "enable report/export 4→4" {
		t.Errorf("restore plan = %v", got)
	}
	if err := ds[0].Validate(); err != nil {
		t.Fatal(err)
	}
	if inc := e.Incidents()[0]; inc.State != IncidentResolved || inc.Step != 4 {
		t.Errorf("incident after restore = %s step %d", inc.State, inc.Step)
	}
}

func planText(ps []schemas.PlanStep) []string {
	var out []string
	for _, p := range ps {
		n := p.Service + "/" + p.Component
		if p.Block != "" {
			n += "/" + p.Block
		}
		out = append(out, p.Action+" "+n+" "+p.FromVersion+"→"+p.ToVersion)
	}
	return out
}

func setup(t *testing.T, cfg Config, ms []*schemas.Manifest) *Engine {
	t.Helper()
	e := New(cfg, NewStaticCatalog(ms...))
	for _, d := range []*schemas.DeployEvent{d0, d1} {
		if _, err := e.HandleDeploy(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func TestLadder(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, e *Engine, first schemas.Decision) []schemas.Decision
		want []string // action/granularity of each decision after the first
		has  string   // the last reason contains
	}{
		{
			name: "a new anomaly from post-rollback traffic escalates at once",
			run: func(t *testing.T, e *Engine, first schemas.Decision) []schemas.Decision {
				ds, _ := e.HandleAnomaly(ctx, anomaly("b1", "cart", "3.0", 5*time.Minute))
				return ds
			},
			want: []string{"escalate/coarse"}, has: "a new anomaly fired on checkout/cart",
		},
		{
			name: "an anomaly whose evidence starts while the rollback settles is not persistence",
			run: func(t *testing.T, e *Engine, first schemas.Decision) []schemas.Decision {
				// The first decision is at t1+1m; this anomaly's window starts 2s later, inside the 5s settle.
				ds, _ := e.HandleAnomaly(ctx, anomaly("b1", "cart", "3.0", 5*time.Minute, func(a *schemas.Anomaly) {
					a.Window.From = first.TS.Add(2 * time.Second)
				}))
				return ds
			},
		},
		{
			name: "late data of the old version is not persistence",
			run: func(t *testing.T, e *Engine, first schemas.Decision) []schemas.Decision {
				ds, _ := e.HandleAnomaly(ctx, anomaly("b1", "cart", "3.1", 5*time.Minute))
				return ds
			},
		},
		{
			name: "a failed ack of the step escalates",
			run: func(t *testing.T, e *Engine, first schemas.Decision) []schemas.Decision {
				var cmd string
				for id := range commandIDs(&first) {
					cmd = id
				}
				ds, err := e.HandleAck(ctx, &schemas.RollbackAck{CommandID: cmd, Service: "checkout", Instance: "pod-1", Status: schemas.AckFailed, Error: "image pull", ActiveVersion: "3.1", TS: first.TS.Add(time.Second)})
				if err != nil {
					t.Fatal(err)
				}
				// A second instance's failed ack of the same command changes nothing more.
				more, _ := e.HandleAck(ctx, &schemas.RollbackAck{CommandID: cmd, Service: "checkout", Instance: "pod-2", Status: schemas.AckFailed, Error: "x", ActiveVersion: "3.1", TS: first.TS.Add(2 * time.Second)})
				return append(ds, more...)
			},
			want: []string{"escalate/coarse"}, has: "instance pod-1 could not apply it (image pull)",
		},
		{
			name: "an actuation failure escalates",
			run: func(t *testing.T, e *Engine, first schemas.Decision) []schemas.Decision {
				ds, _ := e.HandleActuationFailure(ctx, first.ID, "webhook 403", first.TS.Add(time.Second))
				return ds
			},
			want: []string{"escalate/coarse"}, has: "actuation failed: webhook 403",
		},
		{
			name: "coarse that fails escalates to a person",
			run: func(t *testing.T, e *Engine, first schemas.Decision) []schemas.Decision {
				ds, _ := e.Advance(first.TS.Add(5 * time.Minute))
				more, _ := e.Advance(first.TS.Add(10 * time.Minute))
				return append(ds, more...)
			},
			want: []string{"escalate/coarse", "escalate/coarse"}, has: "Escalating to a person",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, DefaultConfig(), nil2(testManifest()))
			ds, err := e.HandleAnomaly(ctx, anomaly("a1", "cart", "3.1", time.Minute))
			if err != nil || len(ds) != 1 || ds[0].Action != schemas.ActionRollback {
				t.Fatalf("%v %v", ds, err)
			}
			got := tt.run(t, e, ds[0])
			var kinds []string
			for _, d := range got {
				kinds = append(kinds, d.Action+"/"+d.Granularity)
				if err := d.Validate(); err != nil {
					t.Error(err)
				}
			}
			if strings.Join(kinds, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("decisions = %v, want %v", kinds, tt.want)
			}
			if tt.has != "" && !strings.Contains(got[len(got)-1].Reason, tt.has) {
				t.Errorf("reason = %s", got[len(got)-1].Reason)
			}
		})
	}
}

func nil2(ms ...*schemas.Manifest) []*schemas.Manifest { return ms }

func TestApprovals(t *testing.T) {
	ctx := context.Background()
	for _, approve := range []bool{true, false} {
		e := setup(t, DefaultConfig(), nil2(testManifest()))
		ds, err := e.HandleAnomaly(ctx, anomaly("a1", "cart", "3.1", 20*time.Minute))
		if err != nil || len(ds) != 1 || ds[0].Action != schemas.ActionRecommend {
			t.Fatalf("%v %v", ds, err)
		}
		rec := ds[0]
		ap := &schemas.Approval{ID: "ap1", DecisionID: rec.ID, Service: "checkout", Approve: approve, Actor: "alice", Reason: "clearly the deploy", TS: rec.TS.Add(time.Minute)}
		ds, err = e.HandleApproval(ctx, ap)
		if err != nil || len(ds) != 1 {
			t.Fatalf("%v %v", ds, err)
		}
		want := schemas.ActionNone
		if approve {
			want = schemas.ActionRollback
		}
		if ds[0].Action != want || ds[0].IncidentID != rec.IncidentID || !strings.Contains(ds[0].Reason, "alice") {
			t.Errorf("approve=%v: %+v", approve, ds[0])
		}
		if approve && (len(ds[0].Targets) != 1 || ds[0].Targets[0].ToVersion != "3.0") {
			t.Errorf("approved targets = %+v", ds[0].Targets)
		}
		if again, _ := e.HandleApproval(ctx, ap); len(again) != 0 {
			t.Errorf("second answer: %v", again)
		}
	}
	e := setup(t, DefaultConfig(), nil2(testManifest()))
	ds, _ := e.HandleAnomaly(ctx, anomaly("a1", "cart", "3.1", 20*time.Minute))
	if ds, _ := e.Advance(ds[0].TS.Add(59 * time.Minute)); len(ds) != 0 {
		t.Fatalf("expired early: %v", ds)
	}
	ds, _ = e.Advance(ds[0].TS.Add(2 * time.Hour))
	if len(ds) != 1 || ds[0].Action != schemas.ActionNone || !strings.Contains(ds[0].Reason, "expired") {
		t.Fatalf("expiry: %v", ds)
	}
	if _, err := e.HandleApproval(ctx, &schemas.Approval{ID: "x", DecisionID: "nope", Service: "checkout", Approve: true, TS: t1}); !errors.Is(err, ErrUnknownDecision) {
		t.Errorf("unknown decision: %v", err)
	}
}

func TestGuards(t *testing.T) {
	ctx := context.Background()
	t.Run("blast radius", func(t *testing.T) {
		ms := nil2(testManifest())
		for _, s := range []string{"a", "b", "c"} {
			ms = append(ms, &schemas.Manifest{Service: s, Components: []schemas.ManifestComponent{{Component: "x"}}})
		}
		e := setup(t, DefaultConfig(), ms)
		for _, s := range []string{"a", "b", "c"} {
			a := anomaly("o-"+s, "x", "1", time.Minute)
			a.Service = s
			if _, err := e.HandleAnomaly(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
		ds, _ := e.HandleAnomaly(ctx, anomaly("a1", "cart", "3.1", time.Minute+time.Second))
		if len(ds) != 1 || ds[0].Action != schemas.ActionHold || ds[0].Policy.GuardsHit[0] != "blast_radius" {
			t.Fatalf("%+v", ds)
		}
	})
	t.Run("cooldown and budget", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.IncidentQuietPeriod = schemas.Duration(time.Minute)
		cfg.RollbackBudget = 2
		cfg.DefaultRollbackWindow = schemas.Duration(24 * time.Hour)
		m := testManifest()
		m.RollbackWindow = 0
		e := setup(t, cfg, nil2(m))
		var got []string
		for i, after := range []time.Duration{time.Minute, 5 * time.Minute, 20 * time.Minute, 40 * time.Minute} {
			ds, _ := e.HandleAnomaly(ctx, anomaly("a"+string(rune('0'+i)), "cart", "3.1", after))
			for _, d := range ds {
				got = append(got, d.Action+":"+strings.Join(d.Policy.GuardsHit, "+"))
			}
		}
		want := "rollback:,hold:cooldown,rollback:,hold:rollback_budget"
		if strings.Join(got, ",") != want {
			t.Errorf("got %v, want %s", got, want)
		}
	})
	t.Run("granularity window", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.GranularityWindows = map[string]schemas.Duration{schemas.GranularityCoarse: schemas.Duration(time.Minute)}
		e := setup(t, cfg, nil2(testManifest()))
		ds, _ := e.HandleAnomaly(ctx, anomaly("a1", "pay", "5.1", 2*time.Minute))
		if len(ds) != 1 || ds[0].Action != schemas.ActionRecommend || !strings.Contains(ds[0].Reason, "coarse rollback window of 1m") {
			t.Fatalf("%+v", ds)
		}
	})
	t.Run("cycle holds", func(t *testing.T) {
		ms := threeServices()
		ms[1].Components[0].DependsOn = append(ms[1].Components[0].DependsOn, schemas.Dependency{Service: "report", Component: "export", OnRollback: schemas.OnRollbackCascade})
		ms[2].Components[0].DependsOn = append(ms[2].Components[0].DependsOn, schemas.Dependency{Service: "web", Component: "page", OnRollback: schemas.OnRollbackCascade})
		ms[2].Components[0].DependsOn[0].OnRollback = schemas.OnRollbackCascade
		e := setup(t, DefaultConfig(), ms)
		ds, _ := e.HandleAnomaly(ctx, anomaly("a1", "tax-calc", "2.5.0", time.Minute, func(a *schemas.Anomaly) { a.Block = "rate-lookup" }))
		if len(ds) != 1 || ds[0].Action != schemas.ActionHold || !strings.Contains(ds[0].Reason, "dependency cycle") {
			t.Fatalf("%+v", ds)
		}
	})
}

func TestLastKnownGood(t *testing.T) {
	h := newServiceHistory()
	h.goodAfter = 10 * time.Minute
	l := &versionLog{}
	for i, v := range []string{"1", "2", "3", "4"} {
		l.add(versionEntry{Version: v, Since: t0.Add(time.Duration(i) * time.Hour), Source: sourceDeploy})
	}
	l.add(versionEntry{Version: "3b", Since: t0.Add(3*time.Hour - 2*time.Minute), Source: sourceDeploy})
	tests := []struct {
		name, bad, want, note string
	}{
		{"a version that ran only 2m is skipped", "", "3", "skipping 3b (ran only 2m)"},
		{"a version an incident rolled back is skipped", "3", "2", "rolled back by an earlier incident"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.bad != "" {
				h.markBad("c", tt.bad)
			}
			v, note, ok := h.lastGood(l, len(l.entries)-1, "c")
			if !ok || v != tt.want || !strings.Contains(note, tt.note) {
				t.Errorf("lastGood = %q %q %v, want %q with %q", v, note, ok, tt.want, tt.note)
			}
		})
	}
}

// After a block rollback, the component aggregate of the version rolled away from still holds the
// block's last pre-rollback requests: an anomaly there is not the problem persisting, while one on
// another block of that version is.
func TestFineRollbackAggregateOfOldVersionIsNotPersistence(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name      string
		block     string
		wantSteps int
	}{
		{name: "aggregate of the old version", block: "", wantSteps: 0},
		{name: "another block of the old version", block: "rounding", wantSteps: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, DefaultConfig(), nil2(testManifest()))
			ds, err := e.HandleAnomaly(ctx, anomaly("a1", "tax-calc", "2.5.0", 2*time.Minute, func(a *schemas.Anomaly) {
				a.Evidence.Blocks = map[string]int64{"rate-lookup": 90}
			}))
			if err != nil || len(ds) != 1 || ds[0].Granularity != schemas.GranularityFine {
				t.Fatalf("first decision: %v %v", ds, err)
			}
			later := anomaly("a2", "tax-calc", "2.5.0", 3*time.Minute, func(a *schemas.Anomaly) {
				a.Metric, a.ErrorCategory = schemas.MetricLatency, ""
				a.Block = tt.block
				a.Window.From = ds[0].TS.Add(20 * time.Second) // well after the rollback settled
			})
			got, err := e.HandleAnomaly(ctx, later)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.wantSteps {
				t.Fatalf("got %d decisions after the rollback, want %d: %+v", len(got), tt.wantSteps, got)
			}
		})
	}
}

// The engine hears the deployers' applied acks of the current step, and forgets them when the
// ladder moves to another step.
func TestAppliedAcksAreRecorded(t *testing.T) {
	ctx := context.Background()
	e := setup(t, DefaultConfig(), nil2(testManifest()))
	ds, err := e.HandleAnomaly(ctx, anomaly("a1", "cart", "3.1", time.Minute))
	if err != nil || len(ds) != 1 {
		t.Fatalf("%v %v", ds, err)
	}
	var cmd string
	for id := range commandIDs(&ds[0]) {
		cmd = id
	}
	for _, inst := range []string{"pod-1", "pod-2", "pod-1"} { // pod-1's ack redelivered
		if _, err := e.HandleAck(ctx, &schemas.RollbackAck{CommandID: cmd, Service: "checkout", Instance: inst,
			Status: schemas.AckApplied, ActiveVersion: "3.0", TS: ds[0].TS.Add(time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.Incidents()[0].AppliedBy; strings.Join(got, ",") != "pod-1: 3.0,pod-2: 3.0" {
		t.Fatalf("AppliedBy = %v", got)
	}
	// The step fails to fix it: the escalation is a new step whose acks start empty.
	if _, err := e.Advance(ds[0].TS.Add(6 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := e.Incidents()[0].AppliedBy; len(got) != 0 {
		t.Fatalf("AppliedBy after escalation = %v", got)
	}
}
