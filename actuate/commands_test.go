package actuate_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/schemas"
)

func decision(action string, dryRun bool) *schemas.Decision {
	return &schemas.Decision{
		ID:          "5b0c7a1e-0000-5000-8000-000000000001",
		TS:          time.Date(2026, 11, 26, 10, 0, 5, 0, time.UTC),
		IncidentID:  "inc-1",
		AnomalyIDs:  []string{"a1", "a2"},
		Service:     "checkout",
		Action:      action,
		Granularity: schemas.GranularityFine,
		Targets: []schemas.DecisionTarget{
			// Deliberately out of plan order: commands come out sorted by step.
			{Service: "checkout", Component: "receipt", FromVersion: "1.2.0", ToVersion: "1.1.0", Step: 2},
			{Service: "checkout", Component: "tax-calc", Block: "rate-lookup", FromVersion: "2.4.0", ToVersion: "2.3.9", Step: 1},
		},
		Reason: "error rate 11% vs 2%",
		Plan: []schemas.PlanStep{
			{Step: 1, Action: action, Service: "checkout", Component: "tax-calc", Block: "rate-lookup"},
			{Step: 2, Action: schemas.ActionDisable, Service: "checkout", Component: "receipt", Edge: "receipt depends_on tax-calc: disable"},
		},
		DryRun: dryRun,
	}
}

func TestCommandsNoneForNonActions(t *testing.T) {
	tests := []struct {
		name string
		d    *schemas.Decision
	}{
		{"nil", nil},
		{"hold", decision(schemas.ActionHold, false)},
		{"recommend", decision(schemas.ActionRecommend, false)},
		{"none", decision(schemas.ActionNone, false)},
		{"dry run rollback", decision(schemas.ActionRollback, true)},
		{"escalate to a person", func() *schemas.Decision {
			d := decision(schemas.ActionEscalate, false)
			d.Targets = nil
			return d
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := actuate.Commands(tt.d, time.Minute); len(got) != 0 {
				t.Fatalf("Commands = %+v, want none", got)
			}
		})
	}
}

func TestCommands(t *testing.T) {
	d := decision(schemas.ActionRollback, false)
	got := actuate.Commands(d, 10*time.Minute)
	if len(got) != 2 {
		t.Fatalf("got %d commands, want 2", len(got))
	}
	exp := d.TS.Add(10 * time.Minute)
	want0 := schemas.RollbackCommand{
		ID:          schemas.DeriveID("command", d.ID, "checkout.tax-calc.rate-lookup", "rollback"),
		DecisionID:  d.ID,
		IncidentID:  "inc-1",
		Granularity: schemas.GranularityFine,
		Action:      schemas.ActionRollback,
		Service:     "checkout", Component: "tax-calc", Block: "rate-lookup",
		FromVersion: "2.4.0", ToVersion: "2.3.9",
		Reason:   d.Reason,
		IssuedAt: d.TS, ExpiresAt: &exp,
	}
	if !reflect.DeepEqual(got[0], want0) {
		t.Errorf("command 0 =\n%+v\nwant\n%+v", got[0], want0)
	}
	if c := got[1]; c.Action != schemas.ActionDisable || c.Granularity != schemas.GranularityMedium || c.Target() != "checkout/receipt" {
		t.Errorf("command 1 = %+v, want the plan's disable of checkout/receipt", c)
	}
	for _, c := range got {
		if err := c.Validate(); err != nil {
			t.Errorf("command %s invalid: %v", c.ID, err)
		}
	}

	// Deterministic: the same decision, re-made (a fresh copy) gives identical commands.
	again := actuate.Commands(decision(schemas.ActionRollback, false), 10*time.Minute)
	if !reflect.DeepEqual(got, again) {
		t.Error("Commands is not deterministic")
	}
	if noTTL := actuate.Commands(d, 0); noTTL[0].ExpiresAt != nil {
		t.Error("ttl 0 must leave expires_at unset")
	}
}

func TestCommandsEscalate(t *testing.T) {
	d := decision(schemas.ActionEscalate, false)
	d.Granularity = schemas.GranularityCoarse
	d.Targets = []schemas.DecisionTarget{{Service: "checkout", FromVersion: "7.0.0", ToVersion: "6.9.1", Step: 1}}
	d.Plan = []schemas.PlanStep{{Step: 1, Action: schemas.ActionEscalate, Service: "checkout"}}
	got := actuate.Commands(d, 0)
	if len(got) != 1 || got[0].Action != schemas.ActionRollback || got[0].Granularity != schemas.GranularityCoarse || got[0].Target() != "checkout" {
		t.Fatalf("escalate commands = %+v, want one coarse rollback of checkout", got)
	}
}
