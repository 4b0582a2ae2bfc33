package decide

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Target
		wantErr error
	}{
		{in: "checkout", want: Target{Service: "checkout"}},
		{in: "checkout/tax-calc", want: Target{Service: "checkout", Component: "tax-calc"}},
		{in: "checkout/tax-calc/rate-lookup", want: Target{Service: "checkout", Component: "tax-calc", Block: "rate-lookup"}},
		{in: "", wantErr: ErrBadTarget},
		{in: "checkout/", wantErr: ErrBadTarget},
		{in: "a/b/c/d", wantErr: ErrBadTarget},
		{in: "check.out", wantErr: ErrBadTarget},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTarget(tc.in)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if err == nil && got.String() != tc.in {
				t.Fatalf("String() %q, want %q", got.String(), tc.in)
			}
		})
	}
}

func TestVersionHistory(t *testing.T) {
	d0 := *d0
	d0.Actor = "ci"
	d1 := *d1
	// A whole-application deploy with no component list: every component moves to 1.2.
	d2 := schemas.DeployEvent{ID: "d2", TS: t1.Add(2 * time.Hour), Service: "checkout", AppVersion: "1.2", Actor: "alice"}
	other := schemas.DeployEvent{ID: "o1", TS: t1, Service: "billing", AppVersion: "9"}
	inc := "inc-1"
	fine := schemas.Decision{ID: "dec-1", TS: t1.Add(90 * time.Second), IncidentID: inc, Service: "checkout", Action: schemas.ActionRollback,
		Granularity: schemas.GranularityFine,
		Reason:      "checkout/tax-calc error rate 20% vs 1% on 1.0 since deploy d1. Rolling back: tax-calc is tagged fine, so only block rate-lookup goes back r2 → r1. More words.",
		Targets:     []schemas.DecisionTarget{{Service: "checkout", Component: "tax-calc", Block: "rate-lookup", FromVersion: "r2", ToVersion: "r1", Step: 1}},
		Plan:        []schemas.PlanStep{{Step: 1, Action: schemas.ActionRollback, Service: "checkout", Component: "tax-calc", Block: "rate-lookup"}}}
	medium := schemas.Decision{ID: "dec-2", TS: t1.Add(7 * time.Minute), IncidentID: inc, Service: "checkout", Action: schemas.ActionEscalate,
		Granularity: schemas.GranularityMedium, Reason: "summary. Escalating from fine to medium, because it still fires: tax-calc goes back 2.5.0 → 2.4.0.",
		Targets: []schemas.DecisionTarget{
			{Service: "checkout", Component: "cart", FromVersion: "3.1", ToVersion: "3.1", Step: 1},
			{Service: "checkout", Component: "tax-calc", FromVersion: "2.5.0", ToVersion: "2.4.0", Step: 2}},
		Plan: []schemas.PlanStep{
			{Step: 1, Action: schemas.ActionDisable, Service: "checkout", Component: "cart", Edge: "checkout/cart depends_on checkout/tax-calc: disable"},
			{Step: 2, Action: schemas.ActionRollback, Service: "checkout", Component: "tax-calc"}}}
	coarse := schemas.Decision{ID: "dec-3", TS: t1.Add(13 * time.Minute), IncidentID: inc, Service: "checkout", Action: schemas.ActionEscalate,
		Granularity: schemas.GranularityCoarse, Reason: "summary. Escalating from medium to coarse, because it still fires: the whole application goes back 1.1 → 1.0.",
		Targets: []schemas.DecisionTarget{{Service: "checkout", FromVersion: "1.1", ToVersion: "1.0", Step: 1}}}
	mitigated := schemas.Decision{ID: "dec-4", TS: t1.Add(15 * time.Minute), IncidentID: inc, Service: "checkout", Action: schemas.ActionNone,
		Reason: "Mitigated", Targets: coarse.Targets}
	dry := fine
	dry.ID, dry.DryRun = "dec-dry", true

	all := []schemas.DeployEvent{d2, d1, other, d0, d1} // out of order, with a redelivery
	decs := []schemas.Decision{mitigated, coarse, fine, medium, dry}

	type row struct{ version, from, until, cause string }
	rel := func(tm time.Time) string {
		if tm.IsZero() {
			return "now"
		}
		return tm.Sub(t0).String()
	}
	for _, tc := range []struct {
		name      string
		target    string
		decisions []schemas.Decision
		want      []row
		whyHas    map[int]string
	}{
		{name: "application", target: "checkout", decisions: decs, want: []row{
			{"1.0", "0s", "1h0m0s", "deploy"},
			{"1.1", "1h0m0s", "1h13m0s", "deploy"},
			{"1.0", "1h13m0s", "3h0m0s", "rollback"},
			{"1.2", "3h0m0s", "now", "deploy"},
		}, whyHas: map[int]string{0: "deploy d0 by ci", 2: "rollback by decision dec-3 (incident inc-1): Escalating from medium to coarse", 3: "deploy d2 by alice"}},
		{name: "block with its own versions", target: "checkout/tax-calc/rate-lookup", decisions: decs, want: []row{
			{"r1", "0s", "1h0m0s", "deploy"},
			{"r2", "1h0m0s", "1h1m30s", "deploy"},
			{"r1", "1h1m30s", "3h0m0s", "rollback"},
			{"1.2", "3h0m0s", "now", "deploy"},
		}, whyHas: map[int]string{1: "deploy d1", 2: "rollback by decision dec-1 (incident inc-1): Rolling back: tax-calc is tagged fine, so only block rate-lookup goes back r2 → r1."}},
		{name: "component through fine, medium, coarse and a whole-app deploy", target: "checkout/tax-calc", decisions: decs, want: []row{
			{"2.4.0", "0s", "1h0m0s", "deploy"},
			{"2.5.0", "1h0m0s", "1h7m0s", "deploy"},
			{"2.4.0", "1h7m0s", "3h0m0s", "rollback"},
			{"1.2", "3h0m0s", "now", "deploy"},
		}},
		{name: "disabled dependent", target: "checkout/cart", decisions: decs, want: []row{
			{"3.0", "0s", "1h0m0s", "deploy"},
			{"3.1", "1h0m0s", "1h7m0s", "deploy"},
			{"3.1", "1h7m0s", "1h13m0s", "disable"},
			{"3.0", "1h13m0s", "3h0m0s", "rollback"},
			{"1.2", "3h0m0s", "now", "deploy"},
		}},
		{name: "unversioned block follows its component", target: "checkout/legacy/parse", decisions: decs, want: []row{
			{"7", "0s", "1h0m0s", "deploy"},
			{"8", "1h0m0s", "1h13m0s", "deploy"},
			{"7", "1h13m0s", "3h0m0s", "rollback"},
			{"1.2", "3h0m0s", "now", "deploy"},
		}},
		{name: "component added by a later deploy", target: "checkout/ledger", decisions: nil, want: []row{
			{"1.0", "1h0m0s", "3h0m0s", "deploy"},
			{"1.2", "3h0m0s", "now", "deploy"},
		}},
		{name: "dry runs change nothing", target: "checkout/tax-calc/rate-lookup", decisions: []schemas.Decision{dry}, want: []row{
			{"r1", "0s", "1h0m0s", "deploy"},
			{"r2", "1h0m0s", "3h0m0s", "deploy"},
			{"1.2", "3h0m0s", "now", "deploy"},
		}},
		{name: "unknown target", target: "nowhere/x", decisions: decs, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, err := ParseTarget(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			got := VersionHistory(all, tc.decisions, target)
			var rows []string
			for _, s := range got {
				rows = append(rows, fmt.Sprintf("%s %s %s %s", s.Version, rel(s.From), rel(s.Until), s.Cause))
			}
			var want []string
			for _, r := range tc.want {
				want = append(want, fmt.Sprintf("%s %s %s %s", r.version, r.from, r.until, r.cause))
			}
			if strings.Join(rows, "\n") != strings.Join(want, "\n") {
				t.Fatalf("history:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
			}
			for i, sub := range tc.whyHas {
				if !strings.Contains(got[i].Why, sub) {
					t.Errorf("span %d why %q, want it to contain %q", i, got[i].Why, sub)
				}
			}
			if got == nil {
				t.Fatal("nil history; want an empty slice (JSON [])")
			}
		})
	}
}
