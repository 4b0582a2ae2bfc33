package decide

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// recentAnomaly is what the blast radius guard remembers of a firing anomaly.
type recentAnomaly struct {
	ts       time.Time
	ref      Ref
	deployID string
	id       string // the anomaly's
}

// noteRecent remembers a firing anomaly for the blast radius guard and forgets those older than
// the blast window. An anomaly noted again (it waited for its deploy, and is now decided with it)
// replaces its earlier entry. An anomaly waiting for its deploy is noted without one: it degrades
// as much while it waits, and an outage of versions no deploy announced must still hold the rest.
func (e *Engine) noteRecent(a *schemas.Anomaly, att attribution) {
	r := recentAnomaly{ts: a.TSDetected, ref: Ref{a.Service, a.Component}, id: a.ID}
	if att.Deploy != nil {
		r.deployID = att.Deploy.ID
	}
	limit := a.TSDetected.Add(-time.Duration(e.cfg.BlastWindow))
	e.recent = slices.DeleteFunc(e.recent, func(x recentAnomaly) bool { return x.ts.Before(limit) || x.id == a.ID })
	e.recent = append(e.recent, r)
}

// graphFor returns the dependency graph of the whole catalog when the catalog can list its
// services, else of the case's own manifest. It is loaded once per case.
func (e *Engine) graphFor(ctx context.Context, c *Case) (*Graph, error) {
	if c.graph != nil {
		return c.graph, nil
	}
	if l, ok := e.cat.(CatalogLister); ok {
		g, _, err := LoadGraph(ctx, l)
		if err != nil {
			return nil, fmt.Errorf("catalog graph: %w", err)
		}
		c.graph = g
	} else {
		c.graph = BuildGraph([]*schemas.Manifest{c.Manifest})
	}
	return c.graph, nil
}

// granularityWindow turns an automatic rollback into a recommendation when the window of its
// granularity (Config.GranularityWindows) has closed even though the service's is still open.
func (e *Engine) granularityWindow(_ context.Context, c *Case) error {
	w, ok := e.cfg.GranularityWindows[c.Decision.Granularity]
	d := c.Attribution.Deploy
	if !ok || c.Decision.Action != schemas.ActionRollback || d == nil || time.Duration(w) >= c.Window {
		return nil
	}
	if !c.Anomaly.TSDetected.After(d.TS.Add(time.Duration(w))) {
		return nil
	}
	c.Decision.Action = schemas.ActionRecommend
	c.Decision.Policy.WindowOpen = false
	c.Decision.Policy.GuardsHit = append(c.Decision.Policy.GuardsHit, "rollback_window")
	c.Decision.Policy.Thresholds[c.Decision.Granularity+"_window_seconds"] = time.Duration(w).Seconds()
	c.reasoning = fmt.Sprintf("Recommending only, as the %s rollback window of %s after deploy %s has closed: %s once a person approves (`scalpel approve` with this decision's id).",
		c.Decision.Granularity, age(time.Duration(w)), d.ID, c.move)
	return nil
}

// silence turns an automatic rollback on a unit that fell silent into a recommendation, unless
// Config.RollbackOnSilence. A deploy that hangs or crashes its version is the likeliest cause,
// but a broken exporter or a lost route to NATS looks the same, and DESIGN holds scalpel to no
// rollback on an empty window: a person, who can look at the service, decides.
func (e *Engine) silence(_ context.Context, c *Case) error {
	a := c.Anomaly
	if e.cfg.RollbackOnSilence || c.Decision.Action != schemas.ActionRollback || !a.IsSilence() {
		return nil
	}
	c.Decision.Action = schemas.ActionRecommend
	c.Decision.Policy.GuardsHit = append(c.Decision.Policy.GuardsHit, "silence")
	c.reasoning = fmt.Sprintf("Recommending only: %s/%s has not served one request since %s, and a hung or crashed version looks from here just like its telemetry lost on the way, so scalpel does not roll back by itself (decide.rollback_on_silence changes this). Check the service: %s once a person approves (`scalpel approve` with this decision's id).",
		a.Service, a.Component, stamp(a.Window.From), c.move)
	return nil
}

// blastRadius holds when many unrelated components degrade at once: that is an outage (network,
// database, a shared dependency), not a bad change, and rolling back one piece would not help.
// Components linked by dependency edges, and components the same deploy changed, are related.
func (e *Engine) blastRadius(ctx context.Context, c *Case) error {
	if c.Decision.Action != schemas.ActionRollback {
		return nil
	}
	a := c.Anomaly
	own := Ref{a.Service, a.Component}
	ownDeploy := c.Decision.DeployID
	limit := a.TSDetected.Add(-time.Duration(e.cfg.BlastWindow))
	candidates := map[Ref]bool{}
	for _, r := range e.recent {
		if r.ts.Before(limit) || r.ts.After(a.TSDetected) || r.ref == own {
			continue
		}
		if ownDeploy != "" && r.deployID == ownDeploy && r.ref.Service == own.Service {
			continue
		}
		candidates[r.ref] = true
	}
	if len(candidates)+1 < e.cfg.BlastRadius {
		return nil
	}
	g, err := e.graphFor(ctx, c)
	if err != nil {
		return err
	}
	var unrelated []string
	for r := range candidates {
		if !g.Connected(own, r) {
			unrelated = append(unrelated, r.String())
		}
	}
	if len(unrelated)+1 < e.cfg.BlastRadius {
		return nil
	}
	slices.Sort(unrelated)
	c.Guard("blast_radius", fmt.Sprintf("Holding (blast radius): %d unrelated components degraded within %s (%s and %s), which looks like an outage, not a bad change; a rollback of %s would not help. Check shared infrastructure.",
		len(unrelated)+1, age(time.Duration(e.cfg.BlastWindow)), strings.Join(unrelated, ", "), own, own))
	return nil
}

// cooldownBudget holds a new incident's rollback of a component rolled back too recently (cooldown)
// or too often (budget): flapping between versions is worse than either version.
func (e *Engine) cooldownBudget(_ context.Context, c *Case) error {
	if c.Decision.Action != schemas.ActionRollback || len(c.Decision.Targets) == 0 {
		return nil
	}
	t := c.Decision.Targets[0]
	k := t.Service + "/" + t.Component
	now := c.Anomaly.TSDetected
	var within []time.Time
	for _, ts := range e.rollbacks[k] {
		if !ts.After(now) && now.Sub(ts) < time.Duration(e.cfg.BudgetWindow) {
			within = append(within, ts)
		}
	}
	e.rollbacks[k] = within
	if len(within) >= e.cfg.RollbackBudget {
		c.Guard("rollback_budget", fmt.Sprintf("Holding (rollback budget): %s was already rolled back %d times in the last %s, the most allowed; a person should look before it flaps again.",
			k, len(within), age(time.Duration(e.cfg.BudgetWindow))))
		return nil
	}
	if n := len(within); n > 0 && now.Sub(within[n-1]) < time.Duration(e.cfg.Cooldown) {
		c.Guard("cooldown", fmt.Sprintf("Holding (cooldown): %s was rolled back %s ago, less than the %s cooldown; rolling it back again so soon would flap it.",
			k, age(now.Sub(within[n-1])), age(time.Duration(e.cfg.Cooldown))))
	}
	return nil
}

// expand turns the targets into the ordered plan. The dependents of the target (from the catalog's
// dependency graph) are cascaded back or disabled per edge before the target changes under them;
// a cycle, or a dependent whose version to go back to is unknown, holds the decision.
func (e *Engine) expand(ctx context.Context, c *Case) error {
	d := &c.Decision
	if len(d.Targets) == 0 || (d.Action != schemas.ActionRollback && d.Action != schemas.ActionRecommend && d.Action != schemas.ActionEscalate) {
		for i := range d.Targets {
			d.Targets[i].Step = i + 1
		}
		return nil
	}
	primary := d.Targets[0]
	g, err := e.graphFor(ctx, c)
	if err != nil {
		return err
	}
	var roots []Ref
	if primary.Component != "" {
		roots = []Ref{{primary.Service, primary.Component}}
	} else if c.Manifest != nil {
		for _, mc := range c.Manifest.Components {
			roots = append(roots, Ref{primary.Service, mc.Component})
		}
	}
	var impacts []Impact
	seen := map[Ref]bool{}
	for _, r := range roots {
		seen[r] = true
	}
	for _, r := range roots {
		imp, err := g.Expand(r)
		if err != nil {
			c.Decision.Targets = []schemas.DecisionTarget{}
			c.settle(schemas.ActionHold, fmt.Sprintf("Holding: %v; fix the catalog's depends_on edges (`scalpel catalog graph`).", err))
			return nil
		}
		for _, x := range imp {
			if primary.Component == "" && x.Ref.Service == primary.Service {
				continue // the whole application goes back anyway
			}
			if !seen[x.Ref] {
				seen[x.Ref] = true
				impacts = append(impacts, x)
			}
		}
	}
	targets := make([]schemas.DecisionTarget, 0, len(impacts)+1)
	plan := make([]schemas.PlanStep, 0, len(impacts)+1)
	var touched []string
	for _, x := range impacts {
		h := e.serviceHistory(x.Ref.Service)
		l := h.component(x.Ref.Component)
		idx := l.index(d.TS)
		edge := fmt.Sprintf("%s depends_on %s: %s", x.Edge.From, x.Edge.To, x.Edge.OnRollback)
		if idx < 0 {
			c.Decision.Targets = []schemas.DecisionTarget{}
			c.settle(schemas.ActionHold, fmt.Sprintf("Holding: %s (%s) must follow the rollback, but no version of it is known.", x.Ref, edge))
			return nil
		}
		cur := l.entries[idx].Version
		to := cur
		if x.Action == schemas.ActionRollback {
			prev, _, ok := h.lastGood(l, idx, x.Ref.Component)
			if !ok {
				c.Decision.Targets = []schemas.DecisionTarget{}
				c.settle(schemas.ActionHold, fmt.Sprintf("Holding: %s (%s) must go back with it, but it has no known good previous version.", x.Ref, edge))
				return nil
			}
			to = prev
			touched = append(touched, fmt.Sprintf("%s goes back %s → %s (cascade from %s)", x.Ref, cur, to, x.Edge.To))
		} else {
			touched = append(touched, fmt.Sprintf("%s is disabled while %s goes back", x.Ref, x.Edge.To))
		}
		step := len(targets) + 1
		targets = append(targets, schemas.DecisionTarget{Service: x.Ref.Service, Component: x.Ref.Component, FromVersion: cur, ToVersion: to, Step: step})
		plan = append(plan, schemas.PlanStep{Step: step, Action: x.Action, Service: x.Ref.Service, Component: x.Ref.Component,
			Edge: edge, FromVersion: cur, ToVersion: to})
	}
	primary.Step = len(targets) + 1
	targets = append(targets, primary)
	plan = append(plan, schemas.PlanStep{Step: primary.Step, Action: schemas.ActionRollback, Service: primary.Service,
		Component: primary.Component, Block: primary.Block, FromVersion: primary.FromVersion, ToVersion: primary.ToVersion})
	d.Targets, d.Plan = targets, plan
	if len(touched) > 0 {
		s := fmt.Sprintf(" First, for what depends on it: %s.", strings.Join(touched, "; "))
		c.reasoning += s
		c.move += ";" + strings.TrimSuffix(s[len(" First,"):], ".")
	}
	return nil
}
