package decide

import (
	"slices"
	"strings"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Incident lifecycle states. This version opens incidents and marks them mitigating when a rollback
// is decided; verification (mitigated / failed) and resolution come with the escalation ladder.
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
}

func (inc *Incident) clone() Incident {
	c := *inc
	c.AnomalyIDs = slices.Clone(inc.AnomalyIDs)
	c.DecisionIDs = slices.Clone(inc.DecisionIDs)
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
