package decide

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// ErrBadTarget is wrapped by ParseTarget when a target is not svc, svc/comp or svc/comp/block.
var ErrBadTarget = errors.New("bad target")

// Target names what a version history is about: the application (Component empty), a component,
// or a block of a component.
type Target struct {
	Service   string `json:"service"`
	Component string `json:"component,omitempty"`
	Block     string `json:"block,omitempty"`
}

// ParseTarget reads "svc", "svc/comp" or "svc/comp/block".
func ParseTarget(s string) (Target, error) {
	parts := strings.Split(s, "/")
	if len(parts) > 3 {
		return Target{}, fmt.Errorf("%w %q: give svc, svc/comp or svc/comp/block", ErrBadTarget, s)
	}
	for _, p := range parts {
		if !validName(p) {
			return Target{}, fmt.Errorf("%w %q: %q is not a name ([A-Za-z0-9_-], 1 to 64 characters)", ErrBadTarget, s, p)
		}
	}
	t := Target{Service: parts[0]}
	if len(parts) > 1 {
		t.Component = parts[1]
	}
	if len(parts) > 2 {
		t.Block = parts[2]
	}
	return t, nil
}

func validName(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// String is svc[/comp[/block]].
func (t Target) String() string {
	return targetName(schemas.DecisionTarget{Service: t.Service, Component: t.Component, Block: t.Block})
}

// ObjectName is the target's scalpel_blocks object name at version v ("" for the application,
// which has no object of its own).
func (t Target) ObjectName(v string) string {
	if t.Component == "" {
		return ""
	}
	return schemas.BlockObjectName(t.Service, t.Component, t.Block, v)
}

// VersionSpan is one stretch of a target's history: Version was active from From until Until
// (zero: still active), because of Why.
type VersionSpan struct {
	Version string    `json:"version"`
	From    time.Time `json:"active_from"`
	Until   time.Time `json:"active_until,omitzero"`
	// Why says what made the version active, in words: "deploy d-2 by ci" or
	// "rollback by decision <id> (incident <id>): <short reason>".
	Why string `json:"why"`
	// Cause is deploy or the decision's action (rollback, escalate, disable, restore, enable).
	Cause      string `json:"cause"`
	DeployID   string `json:"deploy_id,omitempty"`
	DecisionID string `json:"decision_id,omitempty"`
	IncidentID string `json:"incident_id,omitempty"`
	// SHA256 is the digest of the version's source in scalpel_blocks, when one is stored (filled
	// by the caller, which reads the object store).
	SHA256 string `json:"sha256,omitempty"`
}

// change is one moment at which the target's active version changed.
type change struct {
	at    time.Time
	order int // deploys before decisions at the same instant, then input order
	span  VersionSpan
}

// VersionHistory builds the history of target from the deploys that announced its versions and the
// decisions that changed them (rollback, escalate, disable, restore, enable; dry runs change
// nothing). Inputs may come in any order; the result is in time order, each span ending where the
// next begins. Re-announcing the active version does not start a new span.
//
// Which version a deploy gives the target: the application's app_version; a component's version
// in the deploy's component list, or app_version when the deploy lists no components (the whole
// application was replaced); a block's version in the component's block list, or — for a block no
// deploy ever versioned on its own — its component's version. A coarse decision (a target without
// component) moves a component or block to the version the application version it goes back to
// gave it, as recorded by that version's deploy.
func VersionHistory(deploys []schemas.DeployEvent, decisions []schemas.Decision, target Target) []VersionSpan {
	deploys = slices.Clone(deploys)
	slices.SortStableFunc(deploys, func(a, b schemas.DeployEvent) int { return a.TS.Compare(b.TS) })
	ownBlock := target.Block != "" && slices.ContainsFunc(deploys, func(ev schemas.DeployEvent) bool {
		return ev.Service == target.Service && slices.ContainsFunc(ev.Components, func(c schemas.DeployComponent) bool {
			return c.Component == target.Component && slices.ContainsFunc(c.Blocks, func(b schemas.DeployBlock) bool { return b.Block == target.Block })
		})
	})
	// versionIn is what deploy ev gives the target, if anything.
	versionIn := func(ev *schemas.DeployEvent) (string, bool) {
		if ev.Service != target.Service {
			return "", false
		}
		if target.Component == "" || len(ev.Components) == 0 {
			return ev.AppVersion, true
		}
		for _, c := range ev.Components {
			if c.Component != target.Component {
				continue
			}
			if target.Block == "" || !ownBlock {
				return c.Version, true
			}
			for _, b := range c.Blocks {
				if b.Block == target.Block {
					return b.Version, true
				}
			}
		}
		return "", false
	}

	var changes []change
	seenDeploy := map[string]bool{}
	for i := range deploys {
		ev := &deploys[i]
		if seenDeploy[ev.ID] {
			continue // a redelivered deploy is one deploy
		}
		seenDeploy[ev.ID] = true
		v, ok := versionIn(ev)
		if !ok {
			continue
		}
		why := "deploy " + ev.ID
		if ev.Actor != "" {
			why += " by " + ev.Actor
		}
		changes = append(changes, change{at: ev.TS, order: i, span: VersionSpan{Version: v, From: ev.TS, Why: why, Cause: "deploy", DeployID: ev.ID}})
	}

	seenDecision := map[string]bool{}
	for i := range decisions {
		d := &decisions[i]
		if d.DryRun || seenDecision[d.ID] || !changesVersions(d.Action) {
			continue
		}
		seenDecision[d.ID] = true
		for _, t := range d.Targets {
			svc := cmp.Or(t.Service, d.Service)
			if svc != target.Service {
				continue
			}
			var v string
			switch {
			case t.Component == target.Component && t.Block == target.Block:
				v = t.ToVersion
			case t.Component == "" && target.Component != "":
				// The whole application went back: the target runs what that application version had.
				v = versionOfApp(deploys, t.ToVersion, d.TS, versionIn)
			case t.Block == "" && t.Component == target.Component && target.Block != "" && !ownBlock:
				v = t.ToVersion // an unversioned block follows its component
			default:
				continue
			}
			if v == "" {
				continue
			}
			action := planActionOf(d, t)
			changes = append(changes, change{at: d.TS, order: len(deploys) + i, span: VersionSpan{
				Version: v, From: d.TS, Cause: action, DecisionID: d.ID, IncidentID: d.IncidentID,
				Why: fmt.Sprintf("%s by decision %s (incident %s): %s", action, d.ID, d.IncidentID, shortReason(d.Reason)),
			}})
		}
	}
	slices.SortStableFunc(changes, func(a, b change) int { return cmp.Or(a.at.Compare(b.at), cmp.Compare(a.order, b.order)) })

	var out []VersionSpan
	for _, c := range changes {
		if n := len(out); n > 0 && out[n-1].Version == c.span.Version && c.span.Cause != schemas.ActionDisable && out[n-1].Cause != schemas.ActionDisable {
			continue // the active version re-announced: nothing changed
		}
		if n := len(out); n > 0 {
			out[n-1].Until = c.at
		}
		out = append(out, c.span)
	}
	if out == nil {
		out = []VersionSpan{}
	}
	return out
}

// changesVersions reports whether a decision of this action changes what runs.
func changesVersions(action string) bool {
	switch action {
	case schemas.ActionRollback, schemas.ActionEscalate, schemas.ActionDisable, schemas.ActionRestore, schemas.ActionEnable:
		return true
	}
	return false
}

// planActionOf is what the decision does to t: its plan step's action when that is a command
// action (a cascade may disable a dependent), else the decision's, escalate meaning rollback.
func planActionOf(d *schemas.Decision, t schemas.DecisionTarget) string {
	for _, s := range d.Plan {
		if s.Step == t.Step && s.Service == t.Service && s.Component == t.Component && s.Block == t.Block && schemas.IsCommandAction(s.Action) {
			return s.Action
		}
	}
	if d.Action == schemas.ActionEscalate {
		return schemas.ActionRollback
	}
	return d.Action
}

// versionOfApp is the version the latest deploy of application version app before at gave the
// target; app itself when no such deploy is known (the target follows the application).
func versionOfApp(deploys []schemas.DeployEvent, app string, at time.Time, versionIn func(*schemas.DeployEvent) (string, bool)) string {
	for i := len(deploys) - 1; i >= 0; i-- {
		ev := &deploys[i]
		if ev.AppVersion != app || ev.TS.After(at) {
			continue
		}
		if v, ok := versionIn(ev); ok {
			return v
		}
	}
	return app
}

// shortReason is the first sentence of what a decision did, without the summary of what degraded
// that every step of an incident repeats: the part after the summary when there is one.
func shortReason(r string) string {
	r = strings.TrimSpace(r)
	for _, marker := range []string{"Rolling back", "Escalating", "Restoring", "Disabling", "Enabling"} {
		if i := strings.Index(r, marker); i >= 0 {
			r = r[i:]
			break
		}
	}
	if i := strings.Index(r, ". "); i >= 0 {
		r = r[:i+1]
	}
	const limit = 160
	if len([]rune(r)) > limit {
		r = string([]rune(r)[:limit-1]) + "…"
	}
	return r
}
