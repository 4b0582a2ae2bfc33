package decide

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// parkedAnomaly is a firing anomaly waiting for the deploy that may explain it (Config.DeploySkew).
type parkedAnomaly struct {
	a *schemas.Anomaly
	// deadline is a.TSDetected + DeploySkew: no deploy stamped later can explain a, so Advance
	// decides it once the watermark reaches it.
	deadline time.Time
	// resolved is detect's end of episode for a when it came while a waited; it is applied right
	// after a is decided, as it would have been had a been decided on arrival.
	resolved *schemas.Anomaly
}

// explainedByDeploy reports whether a recorded deploy of a's service set a's component to a's
// version, stamped no later than DeploySkew after a's detection: the deploy attribute may take
// as the change behind a.
func (e *Engine) explainedByDeploy(a *schemas.Anomaly) bool {
	l := e.deploys[a.Service]
	if l == nil {
		return false
	}
	h := e.serviceHistory(a.Service)
	return slices.ContainsFunc(l.deploys, func(d *schemas.DeployEvent) bool {
		return e.explains(h, d, a)
	})
}

// explains reports whether deploy d set a's component to a's version within the skew.
func (e *Engine) explains(h *serviceHistory, d *schemas.DeployEvent, a *schemas.Anomaly) bool {
	if d.Service != a.Service || d.TS.Sub(a.TSDetected) > time.Duration(e.cfg.DeploySkew) {
		return false
	}
	to, changed := h.componentChange(d, a.Component)
	return changed && to == a.Version
}

// deployedVersion reports whether any deploy announced v for comp or for the whole application.
func deployedVersion(h *serviceHistory, comp, v string) bool {
	for _, l := range []*versionLog{h.comps[comp], &h.app} {
		if l != nil && slices.ContainsFunc(l.entries, func(en versionEntry) bool {
			return en.Version == v && en.Source == sourceDeploy
		}) {
			return true
		}
	}
	return false
}

// shouldPark reports whether firing anomaly a must wait for its deploy: it names a version, no
// recorded deploy explains it, no deploy ever announced that version (so one still may, a moment
// late), and no incident of its target would take it (escalation and persistence are judged at
// once). A catalog error is returned for the caller to retry, as the chain would.
func (e *Engine) shouldPark(ctx context.Context, a *schemas.Anomaly) (bool, error) {
	if a.Version == "" || e.explainedByDeploy(a) || deployedVersion(e.serviceHistory(a.Service), a.Component, a.Version) {
		return false, nil
	}
	key := a.Component
	m, err := e.cat.Manifest(ctx, a.Service)
	switch {
	case errors.Is(err, ErrUnknownService):
	case err != nil:
		return false, fmt.Errorf("catalog: %w", err)
	case m != nil:
		if comp, ok := m.Component(a.Component); ok && comp.Granularity == schemas.GranularityCoarse {
			key = "" // as group: every coarse component shares the application's incident
		}
	}
	quiet := time.Duration(e.cfg.IncidentQuietPeriod)
	for _, inc := range e.incidents {
		if inc.Service == a.Service && inc.Key == key && a.TSDetected.Sub(inc.LastSeen) <= quiet {
			return false, nil
		}
	}
	return true, nil
}

// park holds a until its deploy arrives (HandleDeploy) or its deadline passes (Advance).
func (e *Engine) park(a *schemas.Anomaly) {
	p := &parkedAnomaly{a: a, deadline: a.TSDetected.Add(time.Duration(e.cfg.DeploySkew))}
	e.parked[a.ID] = p
	e.noteRecent(a, attribution{})
	e.wake(p.deadline)
	e.log.Debug("anomaly waits for its deploy", "service", a.Service, "component", a.Component, "anomaly", a.ID,
		"version", a.Version, "until", p.deadline)
}

// sortedParked returns the parked anomalies keep selects, by detection time then id, so that
// decisions come out in the same order whatever order they were parked in.
func (e *Engine) sortedParked(keep func(*parkedAnomaly) bool) []*parkedAnomaly {
	var out []*parkedAnomaly
	for _, p := range e.parked {
		if keep(p) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(x, y *parkedAnomaly) int {
		return cmp.Or(x.a.TSDetected.Compare(y.a.TSDetected), cmp.Compare(x.a.ID, y.a.ID))
	})
	return out
}

// unpark decides parked anomaly p as HandleAnomaly would have on arrival, then applies a
// resolution that came while it waited. On error p stays parked.
func (e *Engine) unpark(ctx context.Context, p *parkedAnomaly) ([]schemas.Decision, error) {
	out, err := e.decide(ctx, p.a)
	if err != nil {
		return nil, err
	}
	delete(e.parked, p.a.ID)
	if p.resolved != nil {
		out = append(out, e.resolved(p.resolved)...)
	}
	return out, nil
}

// unparkExplained decides the parked anomalies of ev's service that ev explains.
func (e *Engine) unparkExplained(ctx context.Context, ev *schemas.DeployEvent) []schemas.Decision {
	h := e.serviceHistory(ev.Service)
	var out []schemas.Decision
	for _, p := range e.sortedParked(func(p *parkedAnomaly) bool { return e.explains(h, ev, p.a) }) {
		ds, err := e.unpark(ctx, p)
		if err != nil {
			// The deploy is recorded, so Advance decides it at its deadline, to the same result.
			e.log.Warn("anomaly explained by a deploy not decided; retried at its deadline", "service", ev.Service,
				"deploy", ev.ID, "anomaly", p.a.ID, "err", err)
			continue
		}
		out = append(out, ds...)
	}
	return out
}

// unparkDue decides the parked anomalies whose deadline the watermark reached.
func (e *Engine) unparkDue(ctx context.Context, watermark time.Time) ([]schemas.Decision, error) {
	var out []schemas.Decision
	for _, p := range e.sortedParked(func(p *parkedAnomaly) bool { return !watermark.Before(p.deadline) }) {
		ds, err := e.unpark(ctx, p)
		if err != nil {
			return out, err
		}
		out = append(out, ds...)
	}
	return out, nil
}
