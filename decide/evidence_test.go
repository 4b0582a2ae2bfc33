package decide

import (
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// A refactor between 1.0 and 2.0 swaps the places of the two blocks of tax-calc: line 60 of
// tax/calc.go is rate-lookup in 1.0 and rounding in 2.0. The catalog still has 1.0's ranges.
var (
	refactorV1 = &schemas.DeployEvent{ID: "r-1.0", TS: t0, Service: "checkout", AppVersion: "1.0", Components: []schemas.DeployComponent{
		{Component: "tax-calc", Version: "1.0", Blocks: []schemas.DeployBlock{
			{Block: "rate-lookup", Version: "1.0", File: "tax/calc.go", Lines: "40-88"},
			{Block: "rounding", Version: "1.0", File: "tax/calc.go", Lines: "90-120"},
		}},
	}}
	refactorV2 = &schemas.DeployEvent{ID: "r-2.0", TS: t1, Service: "checkout", AppVersion: "2.0", Components: []schemas.DeployComponent{
		{Component: "tax-calc", Version: "2.0", Blocks: []schemas.DeployBlock{
			{Block: "rate-lookup", Version: "2.0", File: "tax/calc.go", Lines: "71-130"},
			{Block: "rounding", Version: "2.0", File: "tax/calc.go", Lines: "40-70"},
		}},
	}}
	// unplacedV3 ships 3.0 without saying where its blocks live.
	unplacedV3 = &schemas.DeployEvent{ID: "r-3.0", TS: t1.Add(time.Hour), Service: "checkout", AppVersion: "3.0", Components: []schemas.DeployComponent{
		{Component: "tax-calc", Version: "3.0", Blocks: []schemas.DeployBlock{{Block: "rate-lookup", Version: "3.0"}, {Block: "rounding", Version: "3.0"}}},
	}}
	// partlyPlacedV4 places only rate-lookup; rounding keeps the catalog's range.
	partlyPlacedV4 = &schemas.DeployEvent{ID: "r-4.0", TS: t1.Add(2 * time.Hour), Service: "checkout", AppVersion: "4.0", Components: []schemas.DeployComponent{
		{Component: "tax-calc", Version: "4.0", Blocks: []schemas.DeployBlock{
			{Block: "rate-lookup", Version: "4.0", File: "tax/rates.go", Lines: "1-50"},
			{Block: "rounding", Version: "4.0"},
		}},
	}}
)

func TestEvidenceBlock(t *testing.T) {
	m := testManifest()
	comp, _ := m.Component("tax-calc")
	at := func(v string, after time.Duration, mod func(*schemas.Anomaly)) *schemas.Anomaly {
		a := &schemas.Anomaly{ID: "a", Service: "checkout", Component: "tax-calc", Version: v, TSDetected: t0.Add(after)}
		mod(a)
		return a
	}
	sites := func(s map[string]int64) func(*schemas.Anomaly) {
		return func(a *schemas.Anomaly) { a.Evidence.Sites = s }
	}
	tests := []struct {
		name    string
		cfg     func(*Config)
		anomaly *schemas.Anomaly
		want    string
		whyHas  []string
	}{
		{
			name:    "refactor: line 60 is rate-lookup in 1.0",
			anomaly: at("1.0", 30*time.Minute, sites(map[string]int64{"tax/calc.go:60": 40})),
			want:    "rate-lookup",
			whyHas:  []string{"100% of the excess errors come from block rate-lookup", "ranges deploy r-1.0 gave for version 1.0"},
		},
		{
			name:    "refactor: the same line 60 is rounding in 2.0",
			anomaly: at("2.0", 90*time.Minute, sites(map[string]int64{"tax/calc.go:60": 40})),
			want:    "rounding",
			whyHas:  []string{"100% of the excess errors come from block rounding", "ranges deploy r-2.0 gave for version 2.0"},
		},
		{
			name:    "refactor: a stack's innermost frame that 2.0 places wins",
			anomaly: at("2.0", 90*time.Minute, sites(map[string]int64{"/src/app/tax/calc.go:100 +0x1d\nmain.go:12": 40})),
			want:    "rate-lookup",
		},
		{
			name:    "a version whose deploy placed no block falls back to the catalog, saying so",
			anomaly: at("3.0", 3*time.Hour, sites(map[string]int64{"tax/calc.go:60": 40})),
			want:    "rate-lookup",
			whyHas:  []string{"catalog's line ranges, as no deploy gave ranges for version 3.0"},
		},
		{
			name:    "blocks the deploy did not place keep the catalog's ranges",
			anomaly: at("4.0", 4*time.Hour, sites(map[string]int64{"tax/calc.go:100": 40, "tax/rates.go:10": 2})),
			want:    "rounding",
			whyHas:  []string{"95% of the excess errors come from block rounding", "deploy r-4.0 gave for version 4.0, and the catalog's for blocks it did not place"},
		},
		{
			name: "errors spread over blocks and unknown code: no block named",
			anomaly: at("2.0", 90*time.Minute, sites(map[string]int64{
				"tax/calc.go:100": 40, "tax/calc.go:50": 35, "vendor/x.go:7": 25})),
			want:   "",
			whyHas: []string{"errors are spread over blocks rate-lookup 40%, rounding 35%, unknown site 25%: no block can be named with confidence (one needs 60% of the errors above baseline)"},
		},
		{
			name:    "a configured share of 0.4 names the leader of the same spread",
			cfg:     func(c *Config) { c.BlockMinShare = 0.4 },
			anomaly: at("2.0", 90*time.Minute, sites(map[string]int64{"tax/calc.go:100": 40, "tax/calc.go:50": 35, "vendor/x.go:7": 25})),
			want:    "rate-lookup",
			whyHas:  []string{"40% of the excess errors come from block rate-lookup"},
		},
		{
			name:    "too few errors to name a block",
			anomaly: at("2.0", 90*time.Minute, sites(map[string]int64{"tax/calc.go:100": 4})),
			want:    "",
			whyHas:  []string{"only 4 errors above baseline come from block rate-lookup, fewer than the 5 needed"},
		},
		{
			name:    "no site lies in a block",
			anomaly: at("2.0", 90*time.Minute, sites(map[string]int64{"vendor/x.go:7": 30, "junk": 3})),
			want:    "",
			whyHas:  []string{"none of the 33 errors above baseline lies in a block's line range"},
		},
		{
			name: "each block counts against its own baseline",
			anomaly: at("2.0", 90*time.Minute, func(a *schemas.Anomaly) {
				// rounding has more errors, but as many as before; rate-lookup's rose.
				a.Evidence.Blocks = map[string]int64{"rate-lookup": 30, "rounding": 80}
				a.Evidence.BaselineBlocks = map[string]float64{"rate-lookup": 5, "rounding": 78.5}
			}),
			want:   "rate-lookup",
			whyHas: []string{"94% of the excess errors come from block rate-lookup"},
		},
		{
			name: "no block rose above its baseline",
			anomaly: at("2.0", 90*time.Minute, func(a *schemas.Anomaly) {
				a.Evidence.Blocks = map[string]int64{"rate-lookup": 5}
				a.Evidence.BaselineBlocks = map[string]float64{"rate-lookup": 6}
			}),
			want:   "",
			whyHas: []string{"no block's errors rose above its own baseline"},
		},
		{
			name: "an anomaly on a block's own series names it",
			anomaly: at("2.0", 90*time.Minute, func(a *schemas.Anomaly) {
				a.Block = "rounding"
				a.Evidence.Blocks = map[string]int64{"rounding": 3}
			}),
			want:   "rounding",
			whyHas: []string{"the anomaly is on block rounding"},
		},
		{
			name: "a component-level anomaly's block is checked against the evidence",
			anomaly: at("2.0", 90*time.Minute, func(a *schemas.Anomaly) {
				a.Block = "rounding" // a detector named it with a looser rule
				a.Evidence.Blocks = map[string]int64{"rounding": 55, "rate-lookup": 45}
			}),
			want:   "",
			whyHas: []string{"errors are spread over blocks rounding 55%, rate-lookup 45%"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			h := newServiceHistory()
			for _, d := range []*schemas.DeployEvent{refactorV2, partlyPlacedV4, refactorV1, unplacedV3} { // out of order on purpose
				h.recordDeploy(d)
			}
			got, why := evidenceBlock(tt.anomaly, comp, h, cfg)
			if got != tt.want {
				t.Errorf("block = %q, want %q (why: %s)", got, tt.want, why)
			}
			for _, s := range tt.whyHas {
				if !strings.Contains(why, s) {
					t.Errorf("why lacks %q:\n%s", s, why)
				}
			}
		})
	}
}

// Through the whole engine: after the refactor, a site that the catalog's (1.0) ranges put in
// rounding rolls back rate-lookup, and spread errors roll back the component, saying why.
func TestEngineBlockFromErrorSites(t *testing.T) {
	tests := []struct {
		name      string
		sites     map[string]int64
		want      schemas.DecisionTarget
		reasonHas []string
	}{
		{
			name:      "refactor: the site maps through 2.0's ranges",
			sites:     map[string]int64{"tax/calc.go:100": 60, "tax/calc.go:50": 4},
			want:      schemas.DecisionTarget{Service: "checkout", Component: "tax-calc", Block: "rate-lookup", FromVersion: "2.0", ToVersion: "1.0", Step: 1},
			reasonHas: []string{"tagged fine and 94% of the excess errors come from block rate-lookup (error sites mapped through the line ranges deploy r-2.0 gave for version 2.0), so only block rate-lookup goes back 2.0 → 1.0"},
		},
		{
			name:  "spread: the component goes back instead",
			sites: map[string]int64{"tax/calc.go:100": 40, "tax/calc.go:50": 35, "vendor/x.go:7": 25},
			want:  schemas.DecisionTarget{Service: "checkout", Component: "tax-calc", FromVersion: "2.0", ToVersion: "1.0", Step: 1},
			reasonHas: []string{"tagged fine but errors are spread over blocks rate-lookup 40%, rounding 35%, unknown site 25%: no block can be named with confidence",
				"so the whole component goes back 2.0 → 1.0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := anomaly("a1", "tax-calc", "2.0", 2*time.Minute, func(a *schemas.Anomaly) { a.Evidence.Sites = tt.sites })
			_, out := run(t, nil, nil, []*schemas.DeployEvent{refactorV1, refactorV2}, []*schemas.Anomaly{a})
			if len(out) != 1 || len(out[0]) != 1 {
				t.Fatalf("want one decision, got %v", out)
			}
			d := out[0][0]
			if d.Action != schemas.ActionRollback || len(d.Targets) != 1 || d.Targets[0] != tt.want {
				t.Fatalf("%s %v, want rollback of %+v\n%s", d.Action, d.Targets, tt.want, d.Reason)
			}
			for _, s := range tt.reasonHas {
				if !strings.Contains(d.Reason, s) {
					t.Errorf("reason lacks %q:\n%s", s, d.Reason)
				}
			}
		})
	}
}

func TestConfigBlockConfidence(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{name: "defaults", mod: func(*Config) {}},
		{name: "share 1", mod: func(c *Config) { c.BlockMinShare = 1 }},
		{name: "share 0", mod: func(c *Config) { c.BlockMinShare = 0 }, wantErr: "block_min_share"},
		{name: "share above 1", mod: func(c *Config) { c.BlockMinShare = 1.5 }, wantErr: "block_min_share"},
		{name: "errors 0", mod: func(c *Config) { c.BlockMinErrors = 0 }, wantErr: "block_min_errors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mod(&c)
			err := c.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
	// A zero Config works: New fills in the documented defaults.
	e := New(Config{}, NewStaticCatalog(testManifest()))
	if e.cfg.BlockMinShare != 0.6 || e.cfg.BlockMinErrors != 5 {
		t.Fatalf("defaults %v, %d; want 0.6, 5", e.cfg.BlockMinShare, e.cfg.BlockMinErrors)
	}
}
