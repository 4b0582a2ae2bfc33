package decide

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

var t0 = time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
var t1 = t0.Add(time.Hour) // the deploy under test

func ptr[T any](v T) *T { return &v }

func testManifest() *schemas.Manifest {
	return &schemas.Manifest{
		Service:        "checkout",
		RollbackWindow: schemas.Duration(15 * time.Minute),
		Components: []schemas.ManifestComponent{
			{Component: "tax-calc", Granularity: schemas.GranularityFine, Blocks: []schemas.ManifestBlock{
				{Block: "rate-lookup", File: "tax/calc.go", Lines: "40-88"},
				{Block: "rounding", File: "tax/calc.go", Lines: "90-120"},
			}},
			{Component: "legacy", Granularity: schemas.GranularityFine, Blocks: []schemas.ManifestBlock{
				{Block: "parse", File: "legacy/parse.go", Lines: "1-50"},
			}},
			{Component: "cart", Granularity: schemas.GranularityMedium,
				Thresholds: &schemas.Thresholds{ErrorRate: ptr(0.05)}},
			{Component: "pay", Granularity: schemas.GranularityCoarse},
			{Component: "search", Granularity: schemas.GranularityMedium},
			{Component: "ledger", Granularity: schemas.GranularityMedium},
		},
	}
}

// The deploy before: everything at its old version.
var d0 = &schemas.DeployEvent{ID: "d0", TS: t0, Service: "checkout", AppVersion: "1.0", Components: []schemas.DeployComponent{
	{Component: "tax-calc", Version: "2.4.0", Blocks: []schemas.DeployBlock{{Block: "rate-lookup", Version: "r1"}, {Block: "rounding", Version: "o1"}}},
	{Component: "legacy", Version: "7"},
	{Component: "cart", Version: "3.0"},
	{Component: "pay", Version: "5.0"},
	{Component: "search", Version: "1.0"},
}}

// The deploy under test: changes tax-calc (only its rate-lookup block), legacy (unversioned
// blocks), cart, pay, adds ledger; leaves search alone.
var d1 = &schemas.DeployEvent{ID: "d1", TS: t1, Service: "checkout", AppVersion: "1.1", Components: []schemas.DeployComponent{
	{Component: "tax-calc", Version: "2.5.0", Blocks: []schemas.DeployBlock{{Block: "rate-lookup", Version: "r2"}, {Block: "rounding", Version: "o1"}}},
	{Component: "legacy", Version: "8"},
	{Component: "cart", Version: "3.1"},
	{Component: "pay", Version: "5.1"},
	{Component: "ledger", Version: "1.0"},
}}

// anomaly builds an error-rate anomaly detected at t1+after.
func anomaly(id, comp, version string, after time.Duration, mod ...func(*schemas.Anomaly)) *schemas.Anomaly {
	a := &schemas.Anomaly{
		ID: id, TSDetected: t1.Add(after), Window: schemas.Window{From: t1.Add(after - 30*time.Second), To: t1.Add(after)},
		Service: "checkout", Component: comp, Version: version, Metric: schemas.MetricErrorRate,
		ErrorCategory: schemas.ErrException, Observed: 0.098, Baseline: 0.02, Effect: 0.078, Statistic: 12.5, Score: ptr(12.5),
		Samples: schemas.Samples{Observed: 1200, Baseline: 5000},
	}
	for _, m := range mod {
		m(a)
	}
	return a
}

type want struct {
	action      string
	granularity string
	targets     []schemas.DecisionTarget
	reasonHas   []string
	dryRun      bool
}

func TestEngine(t *testing.T) {
	tests := []struct {
		name      string
		manifests []*schemas.Manifest
		cfg       func(*Config)
		deploys   []*schemas.DeployEvent
		anomalies []*schemas.Anomaly
		want      []*want // one per anomaly; nil = no decision
	}{
		{
			name:    "fine: the block the evidence names goes back to its previous version",
			deploys: []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "tax-calc", "2.5.0", 4*time.Minute, func(a *schemas.Anomaly) {
				a.BaselineVersion = "2.4.0"
				a.Evidence.Blocks = map[string]int64{"rate-lookup": 110, "rounding": 3}
				a.Evidence.BaselineBlocks = map[string]float64{"rate-lookup": 10, "rounding": 3}
			})},
			want: []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityFine,
				targets:   []schemas.DecisionTarget{{Service: "checkout", Component: "tax-calc", Block: "rate-lookup", FromVersion: "r2", ToVersion: "r1", Step: 1}},
				reasonHas: []string{"checkout/tax-calc error rate (exception) is 9.8% against a baseline of 2%", "deploy d1 changed tax-calc 2.4.0 → 2.5.0", "inside the 15m rollback window", "100% of the excess errors come from block rate-lookup", "only block rate-lookup goes back r2 → r1"}}},
		},
		{
			name:    "fine: error sites map to a block through the manifest's line ranges",
			deploys: []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "tax-calc", "2.5.0", time.Minute, func(a *schemas.Anomaly) {
				a.Evidence.Sites = map[string]int64{"/src/app/tax/calc.go:52": 30, "main.go:10": 10}
			})},
			want: []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityFine,
				targets:   []schemas.DecisionTarget{{Service: "checkout", Component: "tax-calc", Block: "rate-lookup", FromVersion: "r2", ToVersion: "r1", Step: 1}},
				reasonHas: []string{"75% of the excess errors come from block rate-lookup (error sites mapped through the catalog's line ranges, as no deploy gave ranges for version 2.5.0)"}}},
		},
		{
			name:    "fine: a block the deploy did not change falls back to the component",
			deploys: []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "tax-calc", "2.5.0", time.Minute, func(a *schemas.Anomaly) {
				a.Block = "rounding"
			})},
			want: []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityMedium,
				targets:   []schemas.DecisionTarget{{Service: "checkout", Component: "tax-calc", FromVersion: "2.5.0", ToVersion: "2.4.0", Step: 1}},
				reasonHas: []string{"tagged fine but deploy d1 did not change block rounding, so the whole component goes back 2.5.0 → 2.4.0"}}},
		},
		{
			name:      "fine: no block named falls back to the component",
			deploys:   []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "tax-calc", "2.5.0", time.Minute)},
			want: []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityMedium,
				targets:   []schemas.DecisionTarget{{Service: "checkout", Component: "tax-calc", FromVersion: "2.5.0", ToVersion: "2.4.0", Step: 1}},
				reasonHas: []string{"the evidence names no block"}}},
		},
		{
			name:    "fine: unversioned block follows its component's versions",
			deploys: []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "legacy", "8", time.Minute, func(a *schemas.Anomaly) {
				a.Evidence.Blocks = map[string]int64{"parse": 50}
			})},
			want: []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityFine,
				targets: []schemas.DecisionTarget{{Service: "checkout", Component: "legacy", Block: "parse", FromVersion: "8", ToVersion: "7", Step: 1}}}},
		},
		{
			name:      "medium: the component goes back to its previous version",
			deploys:   []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "cart", "3.1", 2*time.Minute)},
			want: []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityMedium,
				targets:   []schemas.DecisionTarget{{Service: "checkout", Component: "cart", FromVersion: "3.1", ToVersion: "3.0", Step: 1}},
				reasonHas: []string{"Rolling back: cart is tagged medium, so the component goes back 3.1 → 3.0."}}},
		},
		{
			name:      "coarse: the application goes back",
			deploys:   []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "pay", "5.1", 2*time.Minute), anomaly("a2", "pay", "5.1", 3*time.Minute, func(a *schemas.Anomaly) { a.Metric = schemas.MetricLatency; a.ErrorCategory = "" })},
			want: []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityCoarse,
				targets:   []schemas.DecisionTarget{{Service: "checkout", FromVersion: "1.1", ToVersion: "1.0", Step: 1}},
				reasonHas: []string{"the whole application goes back 1.1 → 1.0"}}, nil},
		},
		{
			name:      "outside the window: recommend",
			deploys:   []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "cart", "3.1", 20*time.Minute)},
			want: []*want{{action: schemas.ActionRecommend, granularity: schemas.GranularityMedium,
				targets:   []schemas.DecisionTarget{{Service: "checkout", Component: "cart", FromVersion: "3.1", ToVersion: "3.0", Step: 1}},
				reasonHas: []string{"outside the 15m rollback window", "Recommending only", "scalpel approve"}}},
		},
		{
			name:      "config window applies when the manifest sets none",
			manifests: []*schemas.Manifest{func() *schemas.Manifest { m := testManifest(); m.RollbackWindow = 0; return m }()},
			cfg:       func(c *Config) { c.DefaultRollbackWindow = schemas.Duration(30 * time.Minute) },
			deploys:   []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "cart", "3.1", 20*time.Minute)},
			want:      []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityMedium, reasonHas: []string{"inside the 30m rollback window"}}},
		},
		{
			name:      "a component the open deploy did not change is held",
			deploys:   []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "search", "1.0", 2*time.Minute)},
			want:      []*want{{action: schemas.ActionHold, reasonHas: []string{"the open deploy d1 (app 1.1", "did not change search", "would not undo a change"}}},
		},
		{
			name:      "invalid_input errors are not regressions",
			deploys:   []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "cart", "3.1", time.Minute, func(a *schemas.Anomaly) { a.ErrorCategory = schemas.ErrInvalidInput })},
			want:      []*want{{action: schemas.ActionNone, reasonHas: []string{"client errors"}}},
		},
		{
			name:      "invalid_input may roll back when configured",
			cfg:       func(c *Config) { c.RollbackOnInvalidInput = true },
			deploys:   []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "cart", "3.1", time.Minute, func(a *schemas.Anomaly) { a.ErrorCategory = schemas.ErrInvalidInput })},
			want:      []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityMedium}},
		},
		{
			name:      "an error rate below the component's threshold is no action",
			deploys:   []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "cart", "3.1", time.Minute, func(a *schemas.Anomaly) { a.Observed = 0.04 })},
			want:      []*want{{action: schemas.ActionNone, reasonHas: []string{"below the component's threshold of 5%"}}},
		},
		{
			name:    "one burst yields one rollback",
			deploys: []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{
				anomaly("a1", "cart", "3.1", time.Minute),
				anomaly("a2", "cart", "3.1", time.Minute+time.Second),
				anomaly("a3", "cart", "3.1", 2*time.Minute, func(a *schemas.Anomaly) {
					a.Metric = schemas.MetricLatency
					a.ErrorCategory = ""
					a.Observed = 300
					a.Baseline = 100
				}),
				anomaly("a1", "cart", "3.1", time.Minute), // redelivered
			},
			want: []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityMedium}, nil, nil, nil},
		},
		{
			name:    "client errors first do not swallow the regression that follows",
			deploys: []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{
				anomaly("a1", "cart", "3.1", time.Minute, func(a *schemas.Anomaly) { a.ErrorCategory = schemas.ErrInvalidInput }),
				anomaly("a2", "cart", "3.1", 2*time.Minute),
			},
			want: []*want{{action: schemas.ActionNone}, {action: schemas.ActionRollback, granularity: schemas.GranularityMedium,
				targets: []schemas.DecisionTarget{{Service: "checkout", Component: "cart", FromVersion: "3.1", ToVersion: "3.0", Step: 1}}}},
		},
		{
			name:      "no previous version is a hold",
			deploys:   []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "ledger", "1.0", time.Minute)},
			want:      []*want{{action: schemas.ActionHold, reasonHas: []string{"no known previous version of checkout/ledger"}}},
		},
		{
			name:      "a baseline version observed in the anomaly is a rollback target",
			deploys:   []*schemas.DeployEvent{d1}, // scalpel adopted at d1: no earlier deploy on record
			anomalies: []*schemas.Anomaly{anomaly("a1", "cart", "3.1", time.Minute, func(a *schemas.Anomaly) { a.BaselineVersion = "3.0-legacy" })},
			want: []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityMedium,
				targets: []schemas.DecisionTarget{{Service: "checkout", Component: "cart", FromVersion: "3.1", ToVersion: "3.0-legacy", Step: 1}}}},
		},
		{
			// A canary's baseline says which cohort or history it was: the version precedes it.
			name:    "a canary's observed baseline version without its qualifier",
			deploys: []*schemas.DeployEvent{d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "cart", "3.1", time.Minute, func(a *schemas.Anomaly) {
				a.Cohort, a.BaselineVersion = schemas.CohortCanary, "3.0-legacy (cohort baseline)"
			})},
			want: []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityMedium,
				targets: []schemas.DecisionTarget{{Service: "checkout", Component: "cart", FromVersion: "3.1", ToVersion: "3.0-legacy", Step: 1}}}},
		},
		{
			name:      "no deploy at all: recommend from observed versions",
			anomalies: []*schemas.Anomaly{anomaly("a1", "cart", "3.1", time.Minute, func(a *schemas.Anomaly) { a.BaselineVersion = "3.0" })},
			want: []*want{{action: schemas.ActionRecommend, granularity: schemas.GranularityMedium,
				targets:   []schemas.DecisionTarget{{Service: "checkout", Component: "cart", FromVersion: "3.1", ToVersion: "3.0", Step: 1}},
				reasonHas: []string{"no deploy of checkout that changed cart is on record"}}},
		},
		{
			name:      "a service without a manifest is held",
			manifests: []*schemas.Manifest{},
			deploys:   []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "cart", "3.1", time.Minute)},
			want:      []*want{{action: schemas.ActionHold, reasonHas: []string{"no catalog manifest", "scalpel catalog apply"}}},
		},
		{
			name:      "dry run from the manifest",
			manifests: []*schemas.Manifest{func() *schemas.Manifest { m := testManifest(); m.DryRun = true; return m }()},
			deploys:   []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "cart", "3.1", time.Minute)},
			want:      []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityMedium, dryRun: true}},
		},
		{
			name:      "dry run from the config",
			cfg:       func(c *Config) { c.DryRun = true },
			deploys:   []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "cart", "3.1", time.Minute)},
			want:      []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityMedium, dryRun: true}},
		},
		{
			name:      "the degraded version being the target is a hold",
			deploys:   []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{anomaly("a1", "cart", "3.0", time.Minute)},
			want:      []*want{{action: schemas.ActionHold, reasonHas: []string{"the degraded version 3.0 is the rollback target itself"}}},
		},
		{
			name:    "a quiet incident closes; the next burst opens a new one",
			deploys: []*schemas.DeployEvent{d0, d1},
			anomalies: []*schemas.Anomaly{
				anomaly("a1", "cart", "3.1", time.Minute),
				anomaly("a2", "cart", "3.1", 2*time.Hour),
			},
			want: []*want{{action: schemas.ActionRollback, granularity: schemas.GranularityMedium}, {action: schemas.ActionRecommend, granularity: schemas.GranularityMedium,
				targets: []schemas.DecisionTarget{{Service: "checkout", Component: "cart", FromVersion: "3.1", ToVersion: "3.0", Step: 1}}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, got := run(t, tc.manifests, tc.cfg, tc.deploys, tc.anomalies)
			for i, w := range tc.want {
				ds := got[i]
				if w == nil {
					if len(ds) != 0 {
						t.Fatalf("anomaly %d: want no decision, got %+v", i, ds)
					}
					continue
				}
				if len(ds) != 1 {
					t.Fatalf("anomaly %d: want 1 decision, got %d: %+v", i, len(ds), ds)
				}
				checkDecision(t, ds[0], w)
			}
			// Every decision belongs to a distinct incident step: ids never collide.
			seen := map[string]bool{}
			for _, ds := range got {
				for _, d := range ds {
					if seen[d.ID] {
						t.Errorf("decision id %s issued twice", d.ID)
					}
					seen[d.ID] = true
				}
			}
			_ = e
		})
	}
}

// run feeds deploys then anomalies to a fresh engine and returns the decisions per anomaly. An
// anomaly that waits for its deploy (Config.DeploySkew) gets the decisions of advancing the
// watermark to its deadline, as the pipeline's watermark would.
func run(t *testing.T, manifests []*schemas.Manifest, mod func(*Config), deploys []*schemas.DeployEvent, anomalies []*schemas.Anomaly) (*Engine, [][]schemas.Decision) {
	t.Helper()
	if manifests == nil {
		manifests = []*schemas.Manifest{testManifest()}
	}
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e := New(cfg, NewStaticCatalog(manifests...))
	ctx := context.Background()
	for _, d := range deploys {
		if ds, err := e.HandleDeploy(ctx, d); err != nil || len(ds) != 0 {
			t.Fatalf("deploy %s: %v %v", d.ID, ds, err)
		}
	}
	var out [][]schemas.Decision
	for _, a := range anomalies {
		ds, err := e.HandleAnomaly(ctx, a)
		if err != nil {
			t.Fatalf("anomaly %s: %v", a.ID, err)
		}
		if p := e.parked[a.ID]; p != nil {
			if ds, err = e.Advance(p.deadline); err != nil {
				t.Fatalf("advance past anomaly %s: %v", a.ID, err)
			}
		}
		out = append(out, ds)
	}
	return e, out
}

func checkDecision(t *testing.T, d schemas.Decision, w *want) {
	t.Helper()
	if err := d.Validate(); err != nil {
		t.Errorf("decision does not validate: %v\n%+v", err, d)
	}
	if d.Action != w.action || d.Granularity != w.granularity {
		t.Errorf("action/granularity = %s/%s, want %s/%s; reason: %s", d.Action, d.Granularity, w.action, w.granularity, d.Reason)
	}
	if w.targets != nil {
		if !equalJSON(d.Targets, w.targets) {
			t.Errorf("targets = %+v, want %+v", d.Targets, w.targets)
		}
	}
	for _, s := range w.reasonHas {
		if !strings.Contains(d.Reason, s) {
			t.Errorf("reason lacks %q:\n%s", s, d.Reason)
		}
	}
	if d.DryRun != w.dryRun {
		t.Errorf("dry_run = %v, want %v", d.DryRun, w.dryRun)
	}
	if d.Policy.GuardsHit == nil || d.Targets == nil || d.Plan == nil {
		t.Errorf("nil slices in %+v", d)
	}
	if d.Service != "checkout" || d.TS.IsZero() || d.ID == "" || d.IncidentID == "" {
		t.Errorf("missing identity in %+v", d)
	}
	if (d.Action == schemas.ActionRollback || d.Action == schemas.ActionRecommend) && len(d.Plan) != len(d.Targets) {
		t.Errorf("plan %+v does not cover targets %+v", d.Plan, d.Targets)
	}
	if n := strings.Count(d.Reason, ". "); n > 2 {
		t.Errorf("reason has more than two sentences: %s", d.Reason)
	}
	t.Logf("%s: %s", d.Action, d.Reason)
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// The same events give byte-identical decisions: ids derive from what they are about, times from the
// events.
func TestEngineDeterministic(t *testing.T) {
	anoms := []*schemas.Anomaly{
		anomaly("a1", "tax-calc", "2.5.0", time.Minute, func(a *schemas.Anomaly) { a.Evidence.Blocks = map[string]int64{"rate-lookup": 5, "rounding": 5} }),
		anomaly("a2", "cart", "3.1", time.Minute),
		anomaly("a3", "search", "1.0", time.Minute),
	}
	encode := func() string {
		// Half the excess errors each: a share of 0.5 lets the tie name a block.
		_, got := run(t, nil, func(c *Config) { c.BlockMinShare = 0.5 }, []*schemas.DeployEvent{d1, d0}, anoms) // out of order on purpose
		b, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	first := encode()
	for range 3 {
		if again := encode(); again != first {
			t.Fatalf("decisions differ between runs:\n%s\n%s", first, again)
		}
	}
	var got [][]schemas.Decision
	_ = json.Unmarshal([]byte(first), &got)
	want := schemas.DeriveID("decision", schemas.DeriveID("incident", "checkout", "tax-calc", "d1"), "1")
	if got[0][0].ID != want {
		t.Errorf("decision id = %s, want %s", got[0][0].ID, want)
	}
	// Equal error counts: the block that sorts first wins, every time.
	if got[0][0].Targets[0].Block != "rate-lookup" {
		t.Errorf("tie broken towards %q", got[0][0].Targets[0].Block)
	}
}

func TestEngineRejectsBadInput(t *testing.T) {
	e := New(DefaultConfig(), NewStaticCatalog(testManifest()))
	ctx := context.Background()
	if _, err := e.HandleDeploy(ctx, &schemas.DeployEvent{ID: "x"}); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("bad deploy: err = %v, want ErrInvalidInput", err)
	}
	if _, err := e.HandleAnomaly(ctx, &schemas.Anomaly{ID: "x"}); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("bad anomaly: err = %v, want ErrInvalidInput", err)
	}
	if _, err := e.HandleAnomaly(ctx, nil); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("nil anomaly: err = %v, want ErrInvalidInput", err)
	}
}

type failingCatalog struct{}

func (failingCatalog) Manifest(context.Context, string) (*schemas.Manifest, error) {
	return nil, errors.New("kv unavailable")
}

func TestEngineCatalogErrorIsRetryable(t *testing.T) {
	e := New(DefaultConfig(), failingCatalog{})
	_, err := e.HandleAnomaly(context.Background(), anomaly("a1", "cart", "3.1", time.Minute))
	if err == nil || errors.Is(err, ErrInvalidInput) {
		t.Fatalf("err = %v, want a non-input error", err)
	}
}

func TestGuardHolds(t *testing.T) {
	guard := StageFunc(func(_ context.Context, c *Case) error {
		c.Guard("blast_radius", "Holding: many components degrade at once, which looks like an outage, not a bad change.")
		return nil
	})
	e := New(DefaultConfig(), NewStaticCatalog(testManifest()), WithGuard(guard))
	ctx := context.Background()
	for _, d := range []*schemas.DeployEvent{d0, d1} {
		if _, err := e.HandleDeploy(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := e.HandleAnomaly(ctx, anomaly("a1", "cart", "3.1", time.Minute))
	if err != nil || len(ds) != 1 {
		t.Fatalf("%v %v", ds, err)
	}
	d := ds[0]
	if d.Action != schemas.ActionHold || len(d.Targets) != 0 || len(d.Plan) != 0 || len(d.Policy.GuardsHit) != 1 || d.Policy.GuardsHit[0] != "blast_radius" {
		t.Errorf("guarded decision = %+v", d)
	}
	if err := d.Validate(); err != nil {
		t.Error(err)
	}
}

func TestIncidents(t *testing.T) {
	e, _ := run(t, nil, nil, []*schemas.DeployEvent{d0, d1}, []*schemas.Anomaly{
		anomaly("a1", "cart", "3.1", time.Minute),
		anomaly("a2", "cart", "3.1", 2*time.Minute),
	})
	incs := e.Incidents()
	if len(incs) != 1 {
		t.Fatalf("incidents = %+v", incs)
	}
	inc := incs[0]
	if inc.State != IncidentMitigating || len(inc.AnomalyIDs) != 2 || len(inc.DecisionIDs) != 1 || inc.DeployID != "d1" || inc.Key != "cart" {
		t.Errorf("incident = %+v", inc)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"default", func(*Config) {}, ""},
		{"zero window", func(c *Config) { c.DefaultRollbackWindow = 0 }, "default_rollback_window"},
		{"bad granularity", func(c *Config) { c.DefaultGranularity = "tiny" }, "default_granularity"},
		{"zero quiet", func(c *Config) { c.IncidentQuietPeriod = 0 }, "incident_quiet_period"},
		{"no deploys", func(c *Config) { c.MaxDeploysPerService = 0 }, "max_deploys_per_service"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %s", err, tc.wantErr)
			}
		})
	}
}

// A deploy announced a moment after its new version's regression was caught is still the change
// behind it (rollouts are announced as they start or end); one announced much later, or one that did
// not set the component to the anomaly's version, is not.
func TestDeployAnnouncedAfterDetection(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name       string
		late       time.Duration
		version    string
		wantAction string
	}{
		{name: "announced 1s after detection", late: time.Second, version: "3.1", wantAction: schemas.ActionRollback},
		// Not explained by d1: attributed to d0, whose window closed long ago, and 3.1 or 9.9 has
		// no version before it on record at that time, so there is nothing to roll back to.
		{name: "announced 5m after detection", late: 5 * time.Minute, version: "3.1", wantAction: schemas.ActionHold},
		{name: "a version the deploy did not set", late: time.Second, version: "9.9", wantAction: schemas.ActionHold},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := New(DefaultConfig(), NewStaticCatalog(testManifest()))
			if _, err := e.HandleDeploy(ctx, d0); err != nil {
				t.Fatal(err)
			}
			a := anomaly("a1", "cart", tt.version, time.Hour)
			late := *d1
			late.TS = a.TSDetected.Add(tt.late)
			if _, err := e.HandleDeploy(ctx, &late); err != nil {
				t.Fatal(err)
			}
			ds, err := e.HandleAnomaly(ctx, a)
			if err == nil && len(ds) == 0 {
				// 9.9: no deploy announced it, so it waits for one until the skew has passed.
				ds, err = e.Advance(a.TSDetected.Add(time.Duration(DefaultConfig().DeploySkew)))
			}
			if err != nil || len(ds) != 1 {
				t.Fatalf("%v %v", ds, err)
			}
			if ds[0].Action != tt.wantAction {
				t.Fatalf("action %s, want %s: %s", ds[0].Action, tt.wantAction, ds[0].Reason)
			}
		})
	}
}

// A regression against the series' own long-run profile names no version: it must not enter
// version history (it would become a rollback target), and no deploy explains it, so it is held.
func TestOwnProfileAnomalyIsHeldAndNamesNoVersion(t *testing.T) {
	ctx := context.Background()
	e := New(DefaultConfig(), NewStaticCatalog(testManifest()))
	for _, d := range []*schemas.DeployEvent{d0, d1} {
		if _, err := e.HandleDeploy(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	a := anomaly("own", "search", "1.0", 3*time.Hour, func(a *schemas.Anomaly) {
		a.BaselineVersion = schemas.BaselineOwnProfile + " (1h)"
	})
	ds, err := e.HandleAnomaly(ctx, a)
	if err != nil || len(ds) != 1 {
		t.Fatalf("%v %v", ds, err)
	}
	if ds[0].Action == schemas.ActionRollback || strings.Contains(ds[0].Reason, "→ own profile") {
		t.Fatalf("own-profile anomaly led to %s: %s", ds[0].Action, ds[0].Reason)
	}
	for _, v := range e.serviceHistory("checkout").component("search").entries {
		if strings.HasPrefix(v.Version, schemas.BaselineOwnProfile) {
			t.Fatalf("version history took the profile label as a version: %+v", v)
		}
	}
}

// A deploy announced as its rollout ends, seconds after the regression it caused was caught, may
// reach decide before or after the anomaly (live consumers race; replay goes in event time). The
// decisions — ids and content — are the same either way; with no deploy at all the anomaly is
// decided once the watermark passes detection + deploy_skew, still stamped at its detection.
func TestDeployArrivalOrderDecidesTheSame(t *testing.T) {
	ctx := context.Background()
	a1 := anomaly("a1", "cart", "3.1", time.Minute)
	a2 := anomaly("a2", "cart", "3.1", time.Minute+time.Second) // the same burst: joins a1's incident
	late := *d1
	late.TS = a1.TSDetected.Add(2 * time.Second) // stamped when the rollout ended
	resolvedAt := a1.TSDetected.Add(30 * time.Second)
	res := *a1
	res.Status, res.ResolvedAt, res.Resolution = schemas.AnomalyResolved, &resolvedAt, "error rate back under baseline for 10s"
	skew := time.Duration(DefaultConfig().DeploySkew)

	type step func(*Engine) ([]schemas.Decision, error)
	deploy := func(e *Engine) ([]schemas.Decision, error) { return e.HandleDeploy(ctx, &late) }
	fire := func(a *schemas.Anomaly) step {
		return func(e *Engine) ([]schemas.Decision, error) { return e.HandleAnomaly(ctx, a) }
	}
	advance := func(d time.Duration) step {
		return func(e *Engine) ([]schemas.Decision, error) { return e.Advance(a1.TSDetected.Add(d)) }
	}
	// play feeds steps to a fresh engine and returns its decisions.
	play := func(t *testing.T, steps []step) (*Engine, []schemas.Decision) {
		t.Helper()
		e := New(DefaultConfig(), NewStaticCatalog(testManifest()))
		if _, err := e.HandleDeploy(ctx, d0); err != nil {
			t.Fatal(err)
		}
		var got []schemas.Decision
		for i, s := range steps {
			ds, err := s(e)
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			got = append(got, ds...)
		}
		return e, got
	}
	deployFirst := []step{deploy, fire(a1), fire(a2), advance(time.Second)}
	deployFirstResolved := []step{deploy, fire(a1), fire(&res)}
	for _, tt := range []struct {
		name  string
		steps []step
		same  []step // steps whose decisions these must equal byte for byte
		want  []string
	}{
		{name: "deploy first", steps: deployFirst, want: []string{schemas.ActionRollback}},
		{name: "deploy 2s after the anomaly", steps: []step{fire(a1), advance(time.Second), fire(a2), deploy, advance(2 * time.Second)},
			same: deployFirst, want: []string{schemas.ActionRollback}},
		{name: "deploy while the watermark is still short of the deadline", steps: []step{fire(a1), fire(a2), advance(skew - time.Second), deploy},
			same: deployFirst, want: []string{schemas.ActionRollback}},
		{name: "no deploy: decided once the watermark passes the skew", steps: []step{fire(a1), fire(a2), advance(skew - time.Second), advance(skew + time.Second)},
			want: []string{schemas.ActionHold}},
		{name: "deploy first, resolved later", steps: deployFirstResolved, want: []string{schemas.ActionRollback, schemas.ActionNone}},
		{name: "resolved while waiting, deploy after", steps: []step{fire(a1), fire(&res), deploy},
			same: deployFirstResolved, want: []string{schemas.ActionRollback, schemas.ActionNone}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, got := play(t, tt.steps)
			var actions []string
			for _, d := range got {
				actions = append(actions, d.Action)
			}
			if strings.Join(actions, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("actions %v, want %v: %+v", actions, tt.want, got)
			}
			if got[0].TS != a1.TSDetected || got[0].AnomalyIDs[0] != a1.ID {
				t.Errorf("first decision at %s about %v, want at detection %s about a1", got[0].TS, got[0].AnomalyIDs, a1.TSDetected)
			}
			if len(e.parked) != 0 {
				t.Errorf("%d anomalies still wait", len(e.parked))
			}
			if tt.same == nil {
				return
			}
			_, ref := play(t, tt.same)
			b, _ := json.Marshal(got)
			rb, _ := json.Marshal(ref)
			if string(b) != string(rb) {
				t.Errorf("decisions differ with the deploy first:\n%s\n%s", rb, b)
			}
		})
	}
}

// TestEngineForgetsPrunedIncidents: a month of daily incidents, each decided and settled, leaves
// the engine holding what the last few need, not every anomaly and decision it ever handled:
// whether the next day's incident reopens the same key (the old one is replaced) or another
// key's (the old one is pruned).
func TestEngineForgetsPrunedIncidents(t *testing.T) {
	for _, tt := range []struct {
		name string
		comp func(day int) string
	}{
		{"reopened", func(int) string { return "search" }},
		{"pruned", func(day int) string { return [2]string{"search", "cart"}[day%2] }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := New(DefaultConfig(), NewStaticCatalog(testManifest()))
			for _, d := range []*schemas.DeployEvent{d0, d1} {
				if _, err := e.HandleDeploy(ctx, d); err != nil {
					t.Fatal(err)
				}
			}
			held := func(day int) [3]int {
				at := time.Duration(day)*24*time.Hour + 3*time.Hour
				firing := anomaly(fmt.Sprintf("own-%d", day), tt.comp(day), "1.0", at, func(a *schemas.Anomaly) {
					a.BaselineVersion = schemas.BaselineOwnProfile + " (1h)"
				})
				if ds, err := e.HandleAnomaly(ctx, firing); err != nil || len(ds) != 1 {
					t.Fatalf("day %d: %v %v", day, ds, err)
				}
				resolved := *firing
				resolved.Status, resolved.ResolvedAt = schemas.AnomalyResolved, ptr(firing.TSDetected.Add(5*time.Minute))
				if _, err := e.HandleAnomaly(ctx, &resolved); err != nil {
					t.Fatalf("day %d resolved: %v", day, err)
				}
				// Redelivered the same day, it is still known.
				if ds, err := e.HandleAnomaly(ctx, firing); err != nil || len(ds) != 0 {
					t.Fatalf("day %d: redelivered anomaly decided again: %v %v", day, ds, err)
				}
				return [3]int{len(e.seen), len(e.byDecision), len(e.incidents)}
			}
			first := held(0)
			var last [3]int
			for day := 1; day <= 30; day++ {
				last = held(day)
			}
			if last[0] > first[0]+2 || last[1] > first[1]+1 || last[2] > first[2]+1 {
				t.Fatalf("after 30 days the engine holds %v anomalies seen, decisions and incidents; after the first, %v", last, first)
			}
		})
	}
}

// TestSilenceIsRecommendedNotRolledBack: a unit that fell silent right after a deploy is most
// likely the deploy's doing, but its telemetry lost on the way looks the same, and an empty
// window must not roll back by itself. The decision recommends the rollback a drop to a few
// requests a second would have made, until decide.rollback_on_silence says otherwise.
func TestSilenceIsRecommendedNotRolledBack(t *testing.T) {
	throughput := func(observed float64) func(*schemas.Anomaly) {
		return func(a *schemas.Anomaly) {
			a.Metric, a.ErrorCategory, a.Observed, a.Baseline, a.Effect = schemas.MetricThroughput, "", observed, 40, observed/40-1
		}
	}
	decide := func(cfg Config, a *schemas.Anomaly) schemas.Decision {
		t.Helper()
		e := New(cfg, NewStaticCatalog(testManifest()))
		for _, d := range []*schemas.DeployEvent{d0, d1} {
			if _, err := e.HandleDeploy(context.Background(), d); err != nil {
				t.Fatal(err)
			}
		}
		ds, err := e.HandleAnomaly(context.Background(), a)
		if err != nil || len(ds) != 1 {
			t.Fatalf("%v %v", ds, err)
		}
		if err := ds[0].Validate(); err != nil {
			t.Error(err)
		}
		return ds[0]
	}
	d := decide(DefaultConfig(), anomaly("a1", "cart", "3.1", time.Minute, throughput(0)))
	if d.Action != schemas.ActionRecommend || !d.Policy.WindowOpen || len(d.Targets) != 1 || d.Targets[0].ToVersion != "3.0" ||
		!strings.Contains(strings.Join(d.Policy.GuardsHit, ","), "silence") {
		t.Errorf("silence decided %+v, want a recommendation of cart 3.1 → 3.0 with the silence guard hit", d)
	}
	for _, s := range []string{"has not served one request since 2026-11-26 10:00:30Z", "decide.rollback_on_silence", "scalpel approve"} {
		if !strings.Contains(d.Reason, s) {
			t.Errorf("reason %q does not say %q", d.Reason, s)
		}
	}
	if d := decide(DefaultConfig(), anomaly("a1", "cart", "3.1", time.Minute, throughput(5))); d.Action != schemas.ActionRollback {
		t.Errorf("a drop to 5 req/s decided %s, want rollback", d.Action)
	}
	cfg := DefaultConfig()
	cfg.RollbackOnSilence = true
	if d := decide(cfg, anomaly("a1", "cart", "3.1", time.Minute, throughput(0))); d.Action != schemas.ActionRollback {
		t.Errorf("with rollback_on_silence, silence decided %s, want rollback", d.Action)
	}
}
