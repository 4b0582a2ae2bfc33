package decide

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// ErrUnknownDecision is returned when an approval, ack or actuation failure names a decision the
// engine does not know (made before its history, or not a decision at all).
var ErrUnknownDecision = errors.New("unknown decision")

// record stamps d as step of inc and updates the incident: its lifecycle, the commands the decision
// implies (so acks map back to it), the verify deadline, the pending approval. Every decision of
// the engine goes through here.
func (e *Engine) record(inc *Incident, d *schemas.Decision, step int) {
	d.IncidentID = inc.ID
	d.ID = schemas.DeriveID("decision", inc.ID, strconv.Itoa(step))
	if d.AnomalyIDs == nil {
		d.AnomalyIDs = []string{}
	}
	if d.Targets == nil {
		d.Targets = []schemas.DecisionTarget{}
	}
	if d.Plan == nil {
		d.Plan = []schemas.PlanStep{}
	}
	if d.Policy.GuardsHit == nil {
		d.Policy.GuardsHit = []string{}
	}
	inc.Step, inc.Action = step, d.Action
	if d.Granularity != "" {
		inc.Granularity = d.Granularity
	}
	inc.DecisionIDs = append(inc.DecisionIDs, d.ID)
	e.byDecision[d.ID] = inc
	if inc.summary == "" {
		inc.summary, _, _ = strings.Cut(d.Reason, "; ")
	}
	switch d.Action {
	case schemas.ActionRollback, schemas.ActionEscalate:
		if len(d.Targets) == 0 {
			break
		}
		for _, t := range d.Targets {
			if t.Service == d.Service && t.Step == len(d.Targets) {
				e.serviceHistory(t.Service).markBad(targetKey(t), t.FromVersion)
				k := t.Service + "/" + t.Component
				e.rollbacks[k] = append(e.rollbacks[k], d.TS)
			}
		}
		if d.DryRun {
			break // nothing changes, so there is nothing to verify
		}
		inc.State = IncidentMitigating
		inc.ActedAt, inc.VerifyUntil = d.TS, d.TS.Add(time.Duration(e.cfg.VerifyPeriod))
		inc.Targets = slices.Clone(d.Targets)
		inc.targetActions = inc.targetActions[:0]
		for _, t := range d.Targets {
			act := schemas.ActionRollback
			for _, s := range d.Plan {
				if s.Step == t.Step && s.Action == schemas.ActionDisable {
					act = schemas.ActionDisable
				}
			}
			inc.targetActions = append(inc.targetActions, targetAction{t, act})
		}
		inc.lastActing = d.ID
		inc.AppliedBy = nil // acks are per step
		for id := range commandIDs(d) {
			e.commands[id] = d.ID
		}
		e.wake(inc.VerifyUntil)
	case schemas.ActionRecommend:
		inc.PendingApproval, inc.ApprovalDeadline = d.ID, d.TS.Add(time.Duration(e.cfg.ApprovalTimeout))
		cp := *d
		inc.pending = &cp
		e.wake(inc.ApprovalDeadline)
	}
	e.log.Info("decision", "service", d.Service, "decision", d.ID, "incident", d.IncidentID, "step", step,
		"action", d.Action, "granularity", d.Granularity, "dry_run", d.DryRun, "state", inc.State)
}

// targetKey names a target in the version history's bad set: "" (application), comp or comp/block.
func targetKey(t schemas.DecisionTarget) string {
	if t.Block != "" {
		return blockKey(t.Component, t.Block)
	}
	return t.Component
}

// commandIDs returns the ids actuate gives the commands of d (actuate.Commands): one per target,
// DeriveID("command", decision id, ActiveKey(target), action), the action being the plan step's
// when it names a command action, else the decision's (escalate meaning rollback).
func commandIDs(d *schemas.Decision) map[string]schemas.DecisionTarget {
	out := map[string]schemas.DecisionTarget{}
	fallback := d.Action
	if fallback == schemas.ActionEscalate {
		fallback = schemas.ActionRollback
	}
	for _, t := range d.Targets {
		action := fallback
		for _, s := range d.Plan {
			if s.Step == t.Step && s.Service == t.Service && s.Component == t.Component && s.Block == t.Block && schemas.IsCommandAction(s.Action) {
				action = s.Action
			}
		}
		out[schemas.DeriveID("command", d.ID, schemas.ActiveKey(t.Service, t.Component, t.Block), action)] = t
	}
	return out
}

// wake makes Advance look again at t.
func (e *Engine) wake(t time.Time) {
	if e.due.IsZero() || t.Before(e.due) {
		e.due = t
	}
}

func nextGranularity(g string) string {
	switch g {
	case schemas.GranularityFine:
		return schemas.GranularityMedium
	case schemas.GranularityMedium:
		return schemas.GranularityCoarse
	}
	return ""
}

// escalate climbs the incident one level (fine → medium → coarse) at event time at, because of why.
// A level whose target cannot be found is skipped; with no level left the incident fails and the
// decision escalates to a person (an escalate decision without targets).
func (e *Engine) escalate(ctx context.Context, inc *Incident, at time.Time, why string) ([]schemas.Decision, error) {
	prev := inc.Granularity
	var skipped []string
	for g := nextGranularity(prev); g != ""; g = nextGranularity(g) {
		c := &Case{Anomaly: inc.first, Incident: inc, Step: inc.Step + 1, escalation: true}
		if err := e.attribute(ctx, c); err != nil {
			return nil, err
		}
		if c.Settled {
			break // no manifest any more: nothing automatic is possible
		}
		c.Decision.TS = at
		c.Decision.AnomalyIDs = slices.Clone(inc.AnomalyIDs)
		c.Decision.Action = schemas.ActionEscalate
		c.Granularity = g
		if err := e.target(ctx, c); err != nil {
			return nil, err
		}
		if !c.Settled {
			if err := e.expand(ctx, c); err != nil {
				return nil, err
			}
		}
		if c.Settled || c.Decision.Granularity != g {
			skipped = append(skipped, fmt.Sprintf("%s (%s)", g, strings.TrimSuffix(strings.TrimPrefix(c.reasoning, "Holding: "), ".")))
			continue
		}
		c.reasoning = fmt.Sprintf("Escalating from %s to %s, because %s: %s.", prev, g, why, c.move)
		if len(skipped) > 0 {
			c.reasoning += " Skipped " + strings.Join(skipped, "; ") + "."
		}
		d := &c.Decision
		d.Reason = inc.summary + ". " + c.reasoning
		e.record(inc, d, c.Step)
		return []schemas.Decision{*d}, nil
	}
	d := &schemas.Decision{
		TS: at, Service: inc.Service, Action: schemas.ActionEscalate, AnomalyIDs: slices.Clone(inc.AnomalyIDs),
		DeployID: inc.DeployID, Granularity: inc.Granularity,
	}
	d.Reason = fmt.Sprintf("%s. Escalating to a person: %s, and no coarser automatic rollback is left after %s", inc.summary, why, prev)
	if len(skipped) > 0 {
		d.Reason += " (" + strings.Join(skipped, "; ") + ")"
	}
	d.Reason += ". Look at the service now."
	inc.State = IncidentFailed
	e.record(inc, d, inc.Step+1)
	return []schemas.Decision{*d}, nil
}

// resolved handles detect's end-of-episode for anomaly a: when the incident's last firing anomaly
// resolves, a rollback being verified has worked (mitigated), and an incident nothing was done for
// is over (resolved; a pending recommendation is withdrawn).
func (e *Engine) resolved(a *schemas.Anomaly) []schemas.Decision {
	var out []schemas.Decision
	for _, inc := range e.sortedIncidents() {
		i := slices.Index(inc.Firing, a.ID)
		if i < 0 {
			continue
		}
		inc.Firing = slices.Delete(inc.Firing, i, i+1)
		if len(inc.Firing) > 0 {
			continue
		}
		at := a.TSDetected
		if a.ResolvedAt != nil {
			at = *a.ResolvedAt
		}
		why := "detect reports the anomalies resolved"
		if a.Resolution != "" {
			why = "detect reports: " + a.Resolution
		}
		switch {
		case inc.State == IncidentMitigating:
			inc.State = IncidentMitigated
			d := &schemas.Decision{TS: at, Service: inc.Service, Action: schemas.ActionNone, Granularity: inc.Granularity,
				AnomalyIDs: slices.Clone(inc.AnomalyIDs), DeployID: inc.DeployID, Targets: slices.Clone(inc.Targets)}
			d.Reason = fmt.Sprintf("%s. Mitigated: the %s rollback (%s) fixed it; %s, %s after the rollback. The rolled back versions stay until a new deploy replaces them.",
				inc.summary, inc.Granularity, targetsShort(inc.Targets), why, age(at.Sub(inc.ActedAt)))
			e.record(inc, d, inc.Step+1)
			out = append(out, *d)
		case inc.PendingApproval != "":
			d := &schemas.Decision{TS: at, Service: inc.Service, Action: schemas.ActionNone, AnomalyIDs: slices.Clone(inc.AnomalyIDs), DeployID: inc.DeployID}
			d.Reason = fmt.Sprintf("%s. Withdrawing recommendation %s: %s before anyone approved it.", inc.summary, inc.PendingApproval, why)
			inc.PendingApproval, inc.pending = "", nil
			inc.State = IncidentResolved
			e.record(inc, d, inc.Step+1)
			out = append(out, *d)
		case inc.State == IncidentOpen:
			inc.State = IncidentResolved
		}
	}
	return out
}

func targetsShort(ts []schemas.DecisionTarget) string {
	parts := make([]string, 0, len(ts))
	for _, t := range ts {
		parts = append(parts, fmt.Sprintf("%s %s → %s", targetName(t), t.FromVersion, t.ToVersion))
	}
	return strings.Join(parts, ", ")
}

func targetName(t schemas.DecisionTarget) string {
	s := t.Service
	if t.Component != "" {
		s += "/" + t.Component
		if t.Block != "" {
			s += "/" + t.Block
		}
	}
	return s
}

func (e *Engine) sortedIncidents() []*Incident {
	out := make([]*Incident, 0, len(e.incidents))
	for _, inc := range e.incidents {
		out = append(out, inc)
	}
	slices.SortFunc(out, func(x, y *Incident) int { return cmp.Or(x.Opened.Compare(y.Opened), cmp.Compare(x.ID, y.ID)) })
	return out
}

// Advance lets event time pass up to watermark (the detector's): anomalies that waited DeploySkew
// for a deploy without one coming are decided, verify periods that ended escalate or confirm their
// step, recommendations nobody answered expire. It is a comparison when nothing is due. Decisions
// carry the deadline's time (a waiting anomaly's: its detection time), not the watermark's, so
// replay agrees with live serving whatever the batching. Deciding an anomaly or escalating reads the
// catalog (bounded by the catalog's own timeout); on error the deadline is kept and the next call
// retries.
func (e *Engine) Advance(watermark time.Time) ([]schemas.Decision, error) {
	if e.due.IsZero() || watermark.Before(e.due) {
		return nil, nil
	}
	ctx := context.Background()
	// Anomalies no deploy came for in time are decided first, at their own detection time: the
	// incidents they open are then judged below like any other.
	out, err := e.unparkDue(ctx, watermark)
	if err != nil {
		return out, err
	}
	for _, inc := range e.sortedIncidents() {
		if inc.State == IncidentMitigating && !inc.VerifyUntil.IsZero() && !watermark.Before(inc.VerifyUntil) {
			at := inc.VerifyUntil
			inc.VerifyUntil = time.Time{}
			if len(inc.Firing) > 0 {
				why := fmt.Sprintf("%d of its anomalies still fire %s after the %s rollback", len(inc.Firing), age(time.Duration(e.cfg.VerifyPeriod)), inc.Granularity)
				ds, err := e.escalate(ctx, inc, at, why)
				if err != nil {
					inc.VerifyUntil = at // retry on the next watermark
					return out, err
				}
				out = append(out, ds...)
			}
		}
		if inc.PendingApproval != "" && !watermark.Before(inc.ApprovalDeadline) {
			d := &schemas.Decision{TS: inc.ApprovalDeadline, Service: inc.Service, Action: schemas.ActionNone,
				AnomalyIDs: slices.Clone(inc.AnomalyIDs), DeployID: inc.DeployID}
			d.Reason = fmt.Sprintf("%s. Recommendation %s expired: nobody approved or rejected it within %s, so nothing was rolled back.",
				inc.summary, inc.PendingApproval, age(time.Duration(e.cfg.ApprovalTimeout)))
			inc.PendingApproval, inc.pending = "", nil
			e.record(inc, d, inc.Step+1)
			out = append(out, *d)
		}
	}
	e.due = time.Time{}
	for _, inc := range e.incidents {
		if inc.State == IncidentMitigating && !inc.VerifyUntil.IsZero() {
			e.wake(inc.VerifyUntil)
		}
		if inc.PendingApproval != "" {
			e.wake(inc.ApprovalDeadline)
		}
	}
	for _, p := range e.parked {
		e.wake(p.deadline)
	}
	return out, nil
}

// HandleAck records a deployer's answer to a command. A failed ack of the incident's current step
// means the step could not be applied: the ladder climbs (or the incident fails at coarse). Acks of
// unknown or superseded commands change nothing.
func (e *Engine) HandleAck(ctx context.Context, ack *schemas.RollbackAck) ([]schemas.Decision, error) {
	if ack == nil {
		return nil, fmt.Errorf("%w: nil ack", ErrInvalidInput)
	}
	decisionID, ok := e.commands[ack.CommandID]
	if !ok {
		e.log.Debug("ack of an unknown command", "command", ack.CommandID, "status", ack.Status)
		return nil, nil
	}
	if ack.Status != schemas.AckFailed {
		e.log.Debug("ack", "command", ack.CommandID, "decision", decisionID, "status", ack.Status, "instance", ack.Instance)
		if inc := e.byDecision[decisionID]; ack.Status == schemas.AckApplied && inc != nil && inc.lastActing == decisionID {
			if who := ack.Instance + ": " + ack.ActiveVersion; !slices.Contains(inc.AppliedBy, who) {
				inc.AppliedBy = append(inc.AppliedBy, who)
			}
		}
		return nil, nil
	}
	return e.stepFailed(ctx, decisionID, fmt.Sprintf("instance %s could not apply it (%s)", ack.Instance, ack.Error), ack.TS)
}

// HandleActuationFailure records that the commands of a decision could not be delivered at all
// (actuate gave up and routed the decision to rejected.actuate): the step failed.
func (e *Engine) HandleActuationFailure(ctx context.Context, decisionID, reason string, at time.Time) ([]schemas.Decision, error) {
	if _, ok := e.byDecision[decisionID]; !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownDecision, decisionID)
	}
	return e.stepFailed(ctx, decisionID, "actuation failed: "+reason, at)
}

func (e *Engine) stepFailed(ctx context.Context, decisionID, why string, at time.Time) ([]schemas.Decision, error) {
	inc := e.byDecision[decisionID]
	if inc == nil || inc.lastActing != decisionID || inc.State != IncidentMitigating {
		return nil, nil // superseded, or already escalated by another instance's ack
	}
	if at.Before(inc.ActedAt) {
		at = inc.ActedAt
	}
	return e.escalate(ctx, inc, at, fmt.Sprintf("the %s rollback could not be applied: %s", inc.Granularity, why))
}

// HandleApproval answers a pending recommendation: approve makes it a rollback step of the same
// incident, reject a `none` decision quoting the reason. An answer to a recommendation that is no
// longer pending (answered, expired, withdrawn) changes nothing.
func (e *Engine) HandleApproval(_ context.Context, ap *schemas.Approval) ([]schemas.Decision, error) {
	if ap == nil {
		return nil, fmt.Errorf("%w: nil approval", ErrInvalidInput)
	}
	if err := ap.Validate(); err != nil {
		return nil, fmt.Errorf("%w: approval %q: %w", ErrInvalidInput, ap.ID, err)
	}
	inc := e.byDecision[ap.DecisionID]
	if inc == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownDecision, ap.DecisionID)
	}
	if inc.PendingApproval != ap.DecisionID || inc.pending == nil {
		e.log.Debug("approval of a decision no longer pending", "decision", ap.DecisionID)
		return nil, nil
	}
	rec := inc.pending
	inc.PendingApproval, inc.pending = "", nil
	who := cmp.Or(ap.Actor, "someone")
	because := ""
	if ap.Reason != "" {
		because = " (" + ap.Reason + ")"
	}
	at := ap.TS
	if at.Before(rec.TS) {
		at = rec.TS
	}
	d := &schemas.Decision{TS: at, Service: rec.Service, AnomalyIDs: slices.Clone(inc.AnomalyIDs), DeployID: rec.DeployID,
		Granularity: rec.Granularity, DryRun: rec.DryRun, Policy: rec.Policy}
	d.Policy.GuardsHit = append(slices.Clone(rec.Policy.GuardsHit), "approval")
	if ap.Approve {
		d.Action = schemas.ActionRollback
		d.Targets, d.Plan = slices.Clone(rec.Targets), slices.Clone(rec.Plan)
		d.Reason = fmt.Sprintf("%s. Rolling back: %s approved recommendation %s%s; %s.", inc.summary, who, rec.ID, because, inc.pendingMove)
	} else {
		d.Action = schemas.ActionNone
		d.Reason = fmt.Sprintf("%s. Not rolling back: %s rejected recommendation %s%s.", inc.summary, who, rec.ID, because)
	}
	e.record(inc, d, inc.Step+1)
	return []schemas.Decision{*d}, nil
}

// restore answers a deploy that replaces what an incident rolled back: the rollback's pins give way
// to the new versions (restore), dependents cascaded back return to their versions and disabled ones
// are enabled, and the incident is resolved.
func (e *Engine) restore(ev *schemas.DeployEvent) []schemas.Decision {
	var out []schemas.Decision
	h := e.serviceHistory(ev.Service)
	for _, inc := range e.sortedIncidents() {
		if inc.Service != ev.Service || len(inc.Targets) == 0 || !ev.TS.After(inc.ActedAt) ||
			(inc.State != IncidentMitigating && inc.State != IncidentMitigated && inc.State != IncidentFailed) {
			continue
		}
		primary := inc.Targets[len(inc.Targets)-1]
		newV := ""
		switch {
		case primary.Component == "":
			newV = ev.AppVersion
		case primary.Block != "":
			if to, changed, ok := h.blockChange(ev, primary.Component, primary.Block); ok && changed {
				newV = to
			} else if to, changed := h.componentChange(ev, primary.Component); changed && !ok {
				newV = to
			}
		default:
			if to, changed := h.componentChange(ev, primary.Component); changed {
				newV = to
			}
		}
		if newV == "" {
			continue
		}
		d := &schemas.Decision{TS: ev.TS, Service: inc.Service, Action: schemas.ActionRestore, Granularity: inc.Granularity,
			AnomalyIDs: slices.Clone(inc.AnomalyIDs), DeployID: ev.ID}
		// Undo in the reverse order of the rollback: the target first, then what depends on it.
		for i := len(inc.Targets) - 1; i >= 0; i-- {
			t := inc.Targets[i]
			step := len(inc.Targets) - i
			act, from, to := schemas.ActionRestore, t.ToVersion, t.FromVersion
			if i == len(inc.Targets)-1 {
				to = newV
			}
			edge := ""
			if planAct, ok := planStepAction(inc, t); ok && planAct == schemas.ActionDisable {
				act, from, to = schemas.ActionEnable, t.FromVersion, t.ToVersion
				edge = "was disabled while its dependency was rolled back"
			}
			d.Targets = append(d.Targets, schemas.DecisionTarget{Service: t.Service, Component: t.Component, Block: t.Block, FromVersion: from, ToVersion: to, Step: step})
			d.Plan = append(d.Plan, schemas.PlanStep{Step: step, Action: act, Service: t.Service, Component: t.Component, Block: t.Block,
				FromVersion: from, ToVersion: to, Edge: edge})
		}
		d.Reason = fmt.Sprintf("%s. Restoring: deploy %s brings %s version %s, replacing the %s rollback to %s; the rollback's pins give way (%s).",
			inc.summary, ev.ID, targetName(primary), newV, inc.Granularity, primary.ToVersion, targetsShort(d.Targets))
		inc.State = IncidentResolved
		e.record(inc, d, inc.Step+1)
		inc.Targets = nil
		out = append(out, *d)
	}
	return out
}

// planStepAction is the action the incident's latest acting decision gave target t.
func planStepAction(inc *Incident, t schemas.DecisionTarget) (string, bool) {
	for _, a := range inc.targetActions {
		if a.t == t {
			return a.action, true
		}
	}
	return "", false
}
