package decide

import (
	"slices"
	"strings"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Incident lifecycle states: open → mitigating (a rollback step is being verified) → mitigated (its
// anomalies resolved) or failed (no coarser level left, or it could not be applied) → resolved (a
// later deploy replaced what was rolled back, or the anomalies resolved before anything was done).
const (
	IncidentOpen       = "open"
	IncidentMitigating = "mitigating"
	IncidentMitigated  = "mitigated"
	IncidentFailed     = "failed"
	IncidentResolved   = "resolved"
)

// Incident groups the anomalies of one degradation: one target (the component, or the whole
// application for a coarse component) after one deploy. Its decisions share its id, so a burst of
// anomalies yields one command, not one per event.
type Incident struct {
	// ID is DeriveID("incident", service, key, deploy id), plus the opening anomaly's id for an
	// incident that reopens after a quiet period, so replays and a second decider derive the same id.
	ID       string    `json:"id"`
	Service  string    `json:"service"`
	Key      string    `json:"key"` // component, or "" for an application-level incident
	DeployID string    `json:"deploy_id,omitempty"`
	State    string    `json:"state"`
	Opened   time.Time `json:"opened"`
	LastSeen time.Time `json:"last_seen"`
	// AnomalyIDs lists every anomaly folded into the incident, in arrival order.
	AnomalyIDs []string `json:"anomaly_ids"`
	// Step is the ladder step of the latest decision; Action and Granularity are that decision's.
	Step        int      `json:"step"`
	Action      string   `json:"action"`
	Granularity string   `json:"granularity,omitempty"`
	DecisionIDs []string `json:"decision_ids"`

	// Firing lists the incident's anomalies that detect has not resolved yet.
	Firing []string `json:"firing"`
	// ActedAt is the event time of the latest step that changed versions (rollback, escalation);
	// VerifyUntil is when that step is judged: still firing then means escalate.
	ActedAt     time.Time `json:"acted_at,omitzero"`
	VerifyUntil time.Time `json:"verify_until,omitzero"`
	// Targets are the latest acting step's targets, in plan order (restore undoes them).
	Targets []schemas.DecisionTarget `json:"targets,omitempty"`
	// AppliedBy lists the deployer instances that acked the latest acting step's commands as
	// applied, with the version each reported active ("shop-1: 1.0").
	AppliedBy []string `json:"applied_by,omitempty"`
	// PendingApproval is the recommend decision waiting for `scalpel approve`, until ApprovalDeadline.
	PendingApproval  string    `json:"pending_approval,omitempty"`
	ApprovalDeadline time.Time `json:"approval_deadline,omitzero"`

	first       *schemas.Anomaly  // the opening anomaly: escalations re-derive targets from it
	summary     string            // what degraded, for later steps' reasons
	pendingMove string            // what the pending recommendation would do
	pending     *schemas.Decision // the pending recommendation
	lastActing  string            // id of the latest acting decision (acks of older ones are stale)
	// targetActions are the plan actions of Targets (rollback or disable).
	targetActions []targetAction
}

type targetAction struct {
	t      schemas.DecisionTarget
	action string
}

// acting reports whether a version change of the incident is being verified or held as a fix.
func (inc *Incident) acting() bool {
	return (inc.State == IncidentMitigating || inc.State == IncidentMitigated) && !inc.ActedAt.IsZero()
}

// settled reports whether nothing of the incident is still pending: it may be forgotten when quiet.
func (inc *Incident) settled() bool {
	switch inc.State {
	case IncidentMitigating, IncidentMitigated:
		return false
	}
	return inc.PendingApproval == ""
}

// persists reports whether firing anomaly a shows the incident's acting step did not fix it: its
// window starts after the rollback has settled (its evidence is post-rollback traffic) and it is not
// about traffic the step moved away from. After a block rollback the block's events carry its
// restored version, but the component aggregate of the version rolled away from still holds the
// block's last pre-rollback requests, so an aggregate anomaly there is not news; an anomaly on one
// of the component's blocks is. After a component or application rollback, late data of the old
// version is not news either.
func (inc *Incident) persists(a *schemas.Anomaly, settle time.Duration) bool {
	if !inc.acting() || a.Window.From.Before(inc.ActedAt.Add(settle)) {
		return false
	}
	if inc.first == nil {
		return true
	}
	if inc.Granularity == schemas.GranularityFine {
		return a.Block != "" || a.Version != inc.first.Version
	}
	return a.Version != inc.first.Version
}

func (inc *Incident) addAnomaly(a *schemas.Anomaly) {
	if !slices.Contains(inc.AnomalyIDs, a.ID) {
		inc.AnomalyIDs = append(inc.AnomalyIDs, a.ID)
	}
	if !slices.Contains(inc.Firing, a.ID) {
		inc.Firing = append(inc.Firing, a.ID)
	}
	if a.TSDetected.After(inc.LastSeen) {
		inc.LastSeen = a.TSDetected
	}
}

func (inc *Incident) clone() Incident {
	c := *inc
	c.AnomalyIDs = slices.Clone(inc.AnomalyIDs)
	c.DecisionIDs = slices.Clone(inc.DecisionIDs)
	c.Firing = slices.Clone(inc.Firing)
	c.Targets = slices.Clone(inc.Targets)
	c.AppliedBy = slices.Clone(inc.AppliedBy)
	return c
}

// actionRank orders actions by how much they do: a later anomaly of an open incident produces a
// new decision only when it deserves a stronger one (e.g. hold → rollback once a version is known).
func actionRank(action string) int {
	switch action {
	case schemas.ActionNone:
		return 0
	case schemas.ActionHold:
		return 1
	case schemas.ActionRecommend:
		return 2
	case schemas.ActionRollback, schemas.ActionDisable:
		return 3
	case schemas.ActionEscalate:
		return 4
	}
	return 0
}

func incidentMapKey(service, key, deployID string) string {
	return strings.Join([]string{service, key, deployID}, "\x1f")
}
