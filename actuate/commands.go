package actuate

import (
	"sort"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Commands turns a decision into the commands that carry it out, one per target, in plan order
// (targets sorted by step). It returns none for a dry run or a decision that changes nothing (hold,
// recommend, none), and none for an escalation without targets (an escalation to a person).
//
// Everything in a command is a function of the decision, so a decision re-made after a crash, by a
// second decider or in a replay yields byte-identical commands, and the broker drops the repeats:
//   - ID = schemas.DeriveID("command", decision id, target key, action), where the target key is
//     schemas.ActiveKey of the target. A burst of anomalies attributed to one incident step is one
//     decision id, hence one command per target however often it is delivered.
//   - IssuedAt is the decision's event time, never the wall clock.
//   - ExpiresAt is IssuedAt+ttl when ttl > 0: a deployer that hears of the command later than that
//     ignores it (the situation it was decided for is gone), and actuators refuse to send it.
//
// The action of each command is the plan step's action for that target when the plan names one a
// deployer understands (rollback, disable, enable, restore) — so a cascade that disables a
// dependent is a disable — otherwise the decision's own action, with escalate meaning a rollback at
// the coarser level its targets name. Granularity follows the target's shape: a block is fine, a
// component medium, a bare service coarse.
func Commands(d *schemas.Decision, ttl time.Duration) []schemas.RollbackCommand {
	if d == nil || d.DryRun || len(d.Targets) == 0 {
		return nil
	}
	fallback, ok := commandAction(d.Action)
	if !ok {
		return nil
	}
	targets := append([]schemas.DecisionTarget(nil), d.Targets...)
	sort.SliceStable(targets, func(i, j int) bool { return targets[i].Step < targets[j].Step })

	cmds := make([]schemas.RollbackCommand, 0, len(targets))
	for _, t := range targets {
		if t.Service == "" {
			t.Service = d.Service
		}
		action := fallback
		if a, ok := planAction(d.Plan, t); ok {
			action = a
		}
		key := schemas.ActiveKey(t.Service, t.Component, t.Block)
		c := schemas.RollbackCommand{
			ID:          schemas.DeriveID("command", d.ID, key, action),
			DecisionID:  d.ID,
			IncidentID:  d.IncidentID,
			Granularity: granularityOf(t),
			Action:      action,
			Service:     t.Service,
			Component:   t.Component,
			Block:       t.Block,
			FromVersion: t.FromVersion,
			ToVersion:   t.ToVersion,
			Reason:      d.Reason,
			IssuedAt:    d.TS,
		}
		if ttl > 0 {
			exp := d.TS.Add(ttl)
			c.ExpiresAt = &exp
		}
		cmds = append(cmds, c)
	}
	return cmds
}

// commandAction maps a decision action to the command action that carries it out.
func commandAction(decisionAction string) (string, bool) {
	switch decisionAction {
	case schemas.ActionRollback, schemas.ActionDisable, schemas.ActionRestore, schemas.ActionEnable:
		return decisionAction, true
	case schemas.ActionEscalate:
		return schemas.ActionRollback, true
	}
	return "", false
}

// planAction is the command action the plan gives the target at its step, if any.
func planAction(plan []schemas.PlanStep, t schemas.DecisionTarget) (string, bool) {
	for _, s := range plan {
		if s.Step != t.Step || s.Service != t.Service || s.Component != t.Component || s.Block != t.Block {
			continue
		}
		if schemas.IsCommandAction(s.Action) {
			return s.Action, true
		}
	}
	return "", false
}

func granularityOf(t schemas.DecisionTarget) string {
	switch {
	case t.Block != "":
		return schemas.GranularityFine
	case t.Component != "":
		return schemas.GranularityMedium
	}
	return schemas.GranularityCoarse
}
