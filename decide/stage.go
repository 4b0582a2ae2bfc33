package decide

import (
	"context"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Case is one anomaly on its way through the stages: what it is about, what the stages found, and the
// decision being built. Stages read what earlier stages wrote and add their part.
type Case struct {
	// Anomaly is the input. Stages never modify it.
	Anomaly *schemas.Anomaly

	// Manifest is the service's catalog entry; nil when the service has none.
	Manifest *schemas.Manifest
	// Component is the anomaly's component in the manifest; nil when the manifest does not list it.
	Component *schemas.ManifestComponent
	// Granularity is the component's tag (or the configured default) — where the ladder starts.
	Granularity string
	// Window is the rollback window that applies to the service.
	Window time.Duration

	// Attribution is the deploy behind the anomaly, if any, and whether its window is open.
	Attribution attribution
	// Block is the block the evidence names (anomaly.block, else the block with the most excess
	// errors, else the block whose lines hold the top error site); empty when none is named.
	Block string
	// BlockWhy says how Block was found, for the reason.
	BlockWhy string

	// Incident is the incident the anomaly belongs to, set by group.
	Incident *Incident
	// Step is the ladder step of the decision being built (1 = the first answer of the incident).
	Step int

	// Decision is the record being built; emit completes it.
	Decision schemas.Decision
	// Settled is set by a stage that fixed Decision.Action for good (none, hold): later stages that
	// choose actions leave it alone, but the decision is still emitted.
	Settled bool
	// Drop is set when the anomaly produces no decision (it was folded into an open incident).
	// MultiStage stops at the stage that sets it.
	Drop bool

	// Out collects the decisions emitted for this anomaly.
	Out []schemas.Decision

	// summary and reasoning are the two halves of Decision.Reason: what degraded and what changed,
	// then what the decision does and why at this granularity.
	summary, reasoning string
	// move says what the target does ("only block x goes back r2 → r1"), for approvals and windows.
	move string
	// goodNote explains a rollback target other than the previous version.
	goodNote string
	// escalation is set when the case is a ladder step of an existing incident.
	escalation bool
	graph      *Graph

	history *serviceHistory
}

// settle fixes the decision's action and the reasoning behind it.
func (c *Case) settle(action, reasoning string) {
	c.Decision.Action = action
	c.reasoning = reasoning
	c.Settled = true
}

// Stage is one step of the decision chain.
type Stage interface {
	Exec(ctx context.Context, c *Case) error
}

// StageFunc adapts a function to a Stage.
type StageFunc func(ctx context.Context, c *Case) error

// Exec calls f.
func (f StageFunc) Exec(ctx context.Context, c *Case) error { return f(ctx, c) }

// MultiStage runs stages in order until one fails or drops the case.
type MultiStage []Stage

// Exec runs every stage in order.
func (ms MultiStage) Exec(ctx context.Context, c *Case) error {
	for _, s := range ms {
		if c.Drop {
			return nil
		}
		if err := s.Exec(ctx, c); err != nil {
			return err
		}
	}
	return nil
}
