package decide

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// ErrInvalidInput is wrapped when a deploy or anomaly handed to the engine is unusable.
var ErrInvalidInput = errors.New("invalid input")

// Engine turns deploys and anomalies into decisions. It is not safe for concurrent use: one
// goroutine drives it (decide runs as a single active instance). It never reads the wall clock —
// every time it uses comes from the events — so replay reproduces live decisions byte for byte.
type Engine struct {
	cfg       Config
	cat       CatalogReader
	log       *slog.Logger
	guards    []Stage
	chain     MultiStage
	history   map[string]*serviceHistory
	deploys   map[string]*deployLog
	incidents map[string]*Incident // by incidentMapKey

	// byDecision finds the incident of a decision (approvals, acks, actuation failures).
	byDecision map[string]*Incident
	// commands maps the id of every command an acting decision implies to that decision.
	commands map[string]string
	// seen holds anomaly id + status already handled: redeliveries and the replay of a standby that
	// takes over change nothing.
	seen map[string]bool
	// rollbacks holds the event times of the rollbacks decided per target key (cooldown, budget).
	rollbacks map[string][]time.Time
	// recent holds the firing anomalies of the last blast window.
	recent []recentAnomaly
	// parked holds, by id, the firing anomalies waiting for a deploy stamped up to DeploySkew after
	// them (see Config.DeploySkew).
	parked map[string]*parkedAnomaly
	// due is the earliest event time at which Advance has work (zero: none), so that Advance is a
	// comparison when nothing is due.
	due time.Time
}

// Option configures an Engine.
type Option func(*Engine)

// WithLogger sets the logger; per-anomaly logs are at Debug, decisions at Info.
func WithLogger(l *slog.Logger) Option {
	return func(e *Engine) {
		if l != nil {
			e.log = l
		}
	}
}

// WithGuard adds a guard stage. Guards run after the target is known and before the incident is
// grouped; a guard that must stop an automatic action calls Case.Guard.
func WithGuard(g Stage) Option {
	return func(e *Engine) {
		if g != nil {
			e.guards = append(e.guards, g)
		}
	}
}

// New returns an engine reading manifests from cat. Zero fields of cfg take their defaults, so a
// zero Config works; callers validate a user's config with Config.Validate before.
func New(cfg Config, cat CatalogReader, opts ...Option) *Engine {
	def := DefaultConfig()
	if cfg.DefaultRollbackWindow <= 0 {
		cfg.DefaultRollbackWindow = def.DefaultRollbackWindow
	}
	if !validGranularity(cfg.DefaultGranularity) {
		cfg.DefaultGranularity = def.DefaultGranularity
	}
	if cfg.IncidentQuietPeriod <= 0 {
		cfg.IncidentQuietPeriod = def.IncidentQuietPeriod
	}
	if cfg.MaxDeploysPerService < 1 {
		cfg.MaxDeploysPerService = def.MaxDeploysPerService
	}
	for _, d := range []struct{ v, def *schemas.Duration }{{&cfg.VerifyPeriod, &def.VerifyPeriod}, {&cfg.GoodAfter, &def.GoodAfter},
		{&cfg.Cooldown, &def.Cooldown}, {&cfg.BudgetWindow, &def.BudgetWindow}, {&cfg.BlastWindow, &def.BlastWindow},
		{&cfg.ApprovalTimeout, &def.ApprovalTimeout}} {
		if *d.v <= 0 {
			*d.v = *d.def
		}
	}
	if cfg.VerifySettle <= 0 {
		cfg.VerifySettle = def.VerifySettle
	}
	if cfg.DeploySkew <= 0 {
		cfg.DeploySkew = def.DeploySkew
	}
	if cfg.RollbackBudget < 1 {
		cfg.RollbackBudget = def.RollbackBudget
	}
	if cfg.BlastRadius < 2 {
		cfg.BlastRadius = def.BlastRadius
	}
	if !(cfg.BlockMinShare > 0 && cfg.BlockMinShare <= 1) {
		cfg.BlockMinShare = def.BlockMinShare
	}
	if cfg.BlockMinErrors < 1 {
		cfg.BlockMinErrors = def.BlockMinErrors
	}
	e := &Engine{
		cfg:       cfg,
		cat:       cat,
		log:       slog.New(slog.DiscardHandler),
		history:   map[string]*serviceHistory{},
		deploys:   map[string]*deployLog{},
		incidents: map[string]*Incident{},

		byDecision: map[string]*Incident{},
		commands:   map[string]string{},
		seen:       map[string]bool{},
		rollbacks:  map[string][]time.Time{},
		parked:     map[string]*parkedAnomaly{},
	}
	for _, o := range opts {
		o(e)
	}
	e.chain = MultiStage{
		StageFunc(e.attribute),
		StageFunc(e.policy),
		StageFunc(e.target),
		StageFunc(e.granularityWindow),
		StageFunc(e.silence),
		StageFunc(e.blastRadius),
		StageFunc(e.cooldownBudget),
		MultiStage(e.guards),
		StageFunc(e.group),
		StageFunc(e.expand),
		StageFunc(e.emit),
	}
	return e
}

func (e *Engine) serviceHistory(svc string) *serviceHistory {
	h := e.history[svc]
	if h == nil {
		h = newServiceHistory()
		h.goodAfter = time.Duration(e.cfg.GoodAfter)
		e.history[svc] = h
	}
	return h
}

func (e *Engine) deployLog(svc string) *deployLog {
	l := e.deploys[svc]
	if l == nil {
		l = &deployLog{}
		e.deploys[svc] = l
	}
	return l
}

// HandleDeploy records the versions a deploy announced and opens its rollback window. A redelivered
// deploy (same id) changes nothing. It returns the decisions the deploy calls for: restoring a
// rolled-back target the new deploy replaces, and deciding the anomalies that waited for it (those
// it explains, by detection time then id, exactly as if the deploy had come first).
func (e *Engine) HandleDeploy(ctx context.Context, ev *schemas.DeployEvent) ([]schemas.Decision, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: nil deploy event", ErrInvalidInput)
	}
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("%w: deploy %q: %w", ErrInvalidInput, ev.ID, err)
	}
	if !e.deployLog(ev.Service).add(ev, e.cfg.MaxDeploysPerService) {
		e.log.Debug("deploy already recorded", "service", ev.Service, "deploy", ev.ID)
		return nil, nil
	}
	e.serviceHistory(ev.Service).recordDeploy(ev)
	e.log.Info("deploy recorded", "service", ev.Service, "deploy", ev.ID, "app_version", ev.AppVersion,
		"components", len(ev.Components), "ts", ev.TS)
	out := e.restore(ev)
	return append(out, e.unparkExplained(ctx, ev)...), nil
}

// HandleAnomaly runs the anomaly through the decision chain. It returns the decisions to publish on
// decision.<svc>: usually one, none when the anomaly joined an incident that already has its answer
// or waits for the deploy that may explain it (Config.DeploySkew; HandleDeploy or Advance decide it).
// An error means the anomaly could not be decided now (e.g. the catalog is unreachable) and should be
// retried; bad input is wrapped in ErrInvalidInput and should not be.
func (e *Engine) HandleAnomaly(ctx context.Context, a *schemas.Anomaly) ([]schemas.Decision, error) {
	if a == nil {
		return nil, fmt.Errorf("%w: nil anomaly", ErrInvalidInput)
	}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("%w: anomaly %q: %w", ErrInvalidInput, a.ID, err)
	}
	seenKey := a.ID + "\x1f" + a.Status
	if e.seen[seenKey] {
		e.log.Debug("anomaly already handled", "anomaly", a.ID, "status", a.Status)
		return nil, nil
	}
	if a.IsResolved() {
		e.seen[seenKey] = true
		if p := e.parked[a.ID]; p != nil {
			p.resolved = a // applied once the anomaly is decided
			return nil, nil
		}
		return e.resolved(a), nil
	}
	if _, ok := e.parked[a.ID]; ok {
		return nil, nil
	}
	park, err := e.shouldPark(ctx, a)
	if err != nil {
		return nil, fmt.Errorf("decide anomaly %s of %s/%s: %w", a.ID, a.Service, a.Component, err)
	}
	if park {
		e.seen[seenKey] = true
		e.park(a)
		return nil, nil
	}
	return e.decide(ctx, a)
}

// decide runs firing anomaly a through the chain; on error nothing is marked handled.
func (e *Engine) decide(ctx context.Context, a *schemas.Anomaly) ([]schemas.Decision, error) {
	seenKey := a.ID + "\x1f" + a.Status
	c := &Case{Anomaly: a}
	if err := e.chain.Exec(ctx, c); err != nil {
		return nil, fmt.Errorf("decide anomaly %s of %s/%s: %w", a.ID, a.Service, a.Component, err)
	}
	e.seen[seenKey] = true
	e.prune(a.TSDetected)
	return c.Out, nil
}

// Incidents returns a copy of the incidents the engine tracks, oldest first.
func (e *Engine) Incidents() []Incident {
	out := make([]Incident, 0, len(e.incidents))
	for _, inc := range e.incidents {
		out = append(out, inc.clone())
	}
	slices.SortFunc(out, func(x, y Incident) int {
		return cmp.Or(x.Opened.Compare(y.Opened), cmp.Compare(x.ID, y.ID))
	})
	return out
}

// prune forgets incidents quiet for twice the quiet period: they can no longer absorb anomalies.
// With each goes what the engine kept to answer later messages about it (forget).
func (e *Engine) prune(now time.Time) {
	limit := 2 * time.Duration(e.cfg.IncidentQuietPeriod)
	var gone []*Incident
	for k, inc := range e.incidents {
		if now.Sub(inc.LastSeen) > limit && inc.settled() {
			delete(e.incidents, k)
			gone = append(gone, inc)
		}
	}
	e.forget(gone...)
}

// forget drops what the engine kept about incidents it no longer holds, settled ones: which of
// their anomalies were handled, the incident of each of their decisions, and the decision of
// each of their commands. These grew with every anomaly and decision for as long as the process
// ran, where a takeover's rebuild holds only the streams' retention. A firing anomaly
// redelivered after this is decided again, as a takeover decides one delivered past the ack
// floor it rebuilt to; its incident has been settled and quiet for the quiet period by then. An
// approval of one of their decisions is then of an unknown decision (logged and dropped, as one
// no longer pending was), and an ack of one of their commands of an unknown command (changing
// nothing, as before: a settled incident has no step in progress).
func (e *Engine) forget(incs ...*Incident) {
	if len(incs) == 0 {
		return
	}
	decisions := map[string]bool{}
	for _, inc := range incs {
		for _, id := range inc.AnomalyIDs {
			for _, status := range [...]string{"", schemas.AnomalyFiring, schemas.AnomalyResolved} {
				delete(e.seen, id+"\x1f"+status)
			}
		}
		for _, id := range inc.DecisionIDs {
			if e.byDecision[id] == inc {
				delete(e.byDecision, id)
				decisions[id] = true
			}
		}
	}
	maps.DeleteFunc(e.commands, func(_, decision string) bool { return decisions[decision] })
}

// attribute finds the manifest, component, granularity, rollback window, the deploy behind the
// anomaly and the block the evidence names. It also learns the versions the anomaly observed.
func (e *Engine) attribute(ctx context.Context, c *Case) error {
	a := c.Anomaly
	m, err := e.cat.Manifest(ctx, a.Service)
	switch {
	case errors.Is(err, ErrUnknownService):
		m = nil
	case err != nil:
		return fmt.Errorf("catalog: %w", err)
	}
	c.Manifest = m
	c.Window = time.Duration(e.cfg.DefaultRollbackWindow)
	c.Granularity = e.cfg.DefaultGranularity
	if m != nil {
		if m.RollbackWindow > 0 {
			c.Window = time.Duration(m.RollbackWindow)
		}
		if comp, ok := m.Component(a.Component); ok {
			c.Component = comp
			if validGranularity(comp.Granularity) {
				c.Granularity = comp.Granularity
			}
		}
	}
	h := e.serviceHistory(a.Service)
	h.recordObserved(a)
	c.history = h
	c.Attribution = e.deployLog(a.Service).attribute(h, a.Component, a.Version, a.TSDetected, c.Window, time.Duration(e.cfg.DeploySkew))
	c.Block, c.BlockWhy = evidenceBlock(a, c.Component, h, e.cfg)
	if !c.escalation {
		e.noteRecent(a, c.Attribution)
	}

	d := &c.Decision
	d.TS = a.TSDetected
	d.Service = a.Service
	d.AnomalyIDs = []string{a.ID}
	d.DryRun = e.cfg.DryRun || (m != nil && m.DryRun)
	d.Policy.WindowOpen = c.Attribution.WindowOpen
	d.Policy.Thresholds = thresholds(c)
	d.Policy.GuardsHit = []string{}
	d.Targets = []schemas.DecisionTarget{}
	d.Plan = []schemas.PlanStep{}
	if c.Attribution.Deploy != nil {
		d.DeployID = c.Attribution.Deploy.ID
	}
	c.summary = summarize(c)
	e.log.Debug("anomaly attributed", "service", a.Service, "component", a.Component, "anomaly", a.ID,
		"deploy", d.DeployID, "window_open", d.Policy.WindowOpen, "block", c.Block)
	if m == nil {
		c.settle(schemas.ActionHold, fmt.Sprintf("Holding: %s has no catalog manifest, so its rollback window and granularity are unknown; apply one with `scalpel catalog apply -f`.", a.Service))
	}
	return nil
}

// thresholds records the policy numbers the decision was made under.
func thresholds(c *Case) map[string]float64 {
	t := map[string]float64{"rollback_window_seconds": c.Window.Seconds()}
	if c.Component != nil && c.Component.Thresholds != nil {
		if v := c.Component.Thresholds.ErrorRate; v != nil {
			t["error_rate"] = *v
		}
		if v := c.Component.Thresholds.LatencyIncrease; v != nil {
			t["latency_increase"] = *v
		}
	}
	return t
}

// clientErrors reports whether the anomaly is about client errors, which are not regressions.
func (e *Engine) clientErrors(a *schemas.Anomaly) bool {
	return a.Metric == schemas.MetricErrorRate && a.ErrorCategory == schemas.ErrInvalidInput && !e.cfg.RollbackOnInvalidInput
}

// policy decides what kind of answer the anomaly deserves: none for what is not a regression, hold
// when the open deploy did not change the component, rollback inside the window, recommend outside.
func (e *Engine) policy(_ context.Context, c *Case) error {
	if c.Settled {
		return nil
	}
	a := c.Anomaly
	if e.clientErrors(a) {
		c.settle(schemas.ActionNone, "No action: invalid_input errors are client errors, not a regression of the code, and a rollback would not stop them (decide.rollback_on_invalid_input changes this).")
		return nil
	}
	if th := c.Component; th != nil && th.Thresholds != nil {
		if v := th.Thresholds.ErrorRate; v != nil && a.Metric == schemas.MetricErrorRate && a.Observed < *v {
			c.settle(schemas.ActionNone, fmt.Sprintf("No action: the error rate stays below the component's threshold of %s.", pct(*v)))
			return nil
		}
		if v := th.Thresholds.LatencyIncrease; v != nil && a.Metric == schemas.MetricLatency && a.Baseline > 0 && (a.Observed-a.Baseline)/a.Baseline < *v {
			c.settle(schemas.ActionNone, fmt.Sprintf("No action: latency rose less than the component's threshold of +%s.", pct(*v)))
			return nil
		}
	}
	att := c.Attribution
	switch {
	case att.Deploy != nil && att.WindowOpen && !att.Changed:
		c.settle(schemas.ActionHold, fmt.Sprintf("Holding: rolling back %s would not undo a change it did not get; look at its dependencies or the infrastructure.", a.Component))
	case att.Deploy != nil && att.WindowOpen:
		c.Decision.Action = schemas.ActionRollback
	default:
		c.Decision.Action = schemas.ActionRecommend
	}
	return nil
}

// target picks the granularity and the from/to versions: fine → the block the evidence names,
// medium → the component, coarse → the application. A fine component whose evidence names no usable
// block falls back to medium, saying why. No known previous version means hold.
func (e *Engine) target(_ context.Context, c *Case) error {
	if c.Settled {
		return nil
	}
	g, fallback := c.Granularity, ""
	if g == schemas.GranularityFine {
		t, why, ok := blockTarget(c)
		if ok {
			e.setTarget(c, schemas.GranularityFine, t, fmt.Sprintf("%s is tagged fine and %s, so only block %s", c.Anomaly.Component, c.BlockWhy, t.Block))
			return nil
		}
		g, fallback = schemas.GranularityMedium, fmt.Sprintf("%s is tagged fine but %s, so the whole component", c.Anomaly.Component, why)
	}
	switch g {
	case schemas.GranularityMedium:
		t, why, ok := componentTarget(c)
		if !ok {
			c.settle(schemas.ActionHold, "Holding: "+why+".")
			return nil
		}
		if fallback == "" {
			fallback = fmt.Sprintf("%s is tagged medium, so the component", c.Anomaly.Component)
		}
		e.setTarget(c, schemas.GranularityMedium, t, fallback)
	case schemas.GranularityCoarse:
		t, why, ok := appTarget(c)
		if !ok {
			c.settle(schemas.ActionHold, "Holding: "+why+".")
			return nil
		}
		e.setTarget(c, schemas.GranularityCoarse, t, fmt.Sprintf("%s is tagged coarse, so the whole application", c.Anomaly.Component))
	}
	return nil
}

// setTarget records the target and the sentence that explains it, or holds when the rollback would
// land on the very version that is degrading.
func (e *Engine) setTarget(c *Case, g string, t schemas.DecisionTarget, what string) {
	if c.Anomaly.Version != "" && t.ToVersion == c.Anomaly.Version {
		c.settle(schemas.ActionHold, fmt.Sprintf("Holding: the degraded version %s is the rollback target itself, so rolling back would not help.", t.ToVersion))
		return
	}
	c.Decision.Granularity = g
	c.Decision.Targets = []schemas.DecisionTarget{t}
	move := fmt.Sprintf("%s goes back %s → %s", what, t.FromVersion, t.ToVersion)
	if c.goodNote != "" {
		move += " (" + c.goodNote + ")"
	}
	c.move = move
	switch c.Decision.Action {
	case schemas.ActionEscalate:
		c.reasoning = "Escalating: " + move + "."
	case schemas.ActionRollback:
		c.reasoning = "Rolling back: " + move + "."
	case schemas.ActionRecommend:
		c.reasoning = fmt.Sprintf("Recommending only, as no rollback window is open: %s once a person approves (`scalpel approve` with this decision's id).", move)
	}
}

// Guard records that guard name stopped the automatic action, holding with reasoning instead. Guard
// stages call it; it does nothing to decisions that are not automatic actions.
func (c *Case) Guard(name, reasoning string) {
	c.Decision.Policy.GuardsHit = append(c.Decision.Policy.GuardsHit, name)
	if c.Decision.Action == schemas.ActionRollback || c.Decision.Action == schemas.ActionDisable {
		c.Decision.Targets = []schemas.DecisionTarget{}
		c.settle(schemas.ActionHold, reasoning)
	}
}

// group folds the anomaly into its incident. An anomaly of an open incident produces no decision
// unless it deserves a stronger action than the incident already got; then it is the incident's
// next step.
func (e *Engine) group(ctx context.Context, c *Case) error {
	a := c.Anomaly
	key := a.Component
	if c.Granularity == schemas.GranularityCoarse {
		key = "" // every coarse component rolls back the same application: one incident
	}
	deployID := c.Decision.DeployID
	mk := incidentMapKey(a.Service, key, deployID)
	inc := e.incidents[mk]
	reopen := false
	if inc != nil && a.TSDetected.Sub(inc.LastSeen) > time.Duration(e.cfg.IncidentQuietPeriod) {
		if inc.settled() { // the reopened incident replaces it: nothing of it is pending
			e.forget(inc)
		}
		inc, reopen = nil, true
	}
	if inc != nil && inc.persists(a, time.Duration(e.cfg.VerifySettle)) {
		// Traffic after the rollback still degrades: the step did not fix it.
		inc.addAnomaly(a)
		why := fmt.Sprintf("a new anomaly fired on %s/%s (%s %s) from traffic after the %s rollback at %s",
			a.Service, a.Component, metricName(a), metricValue(a.Metric, a.Observed), inc.Granularity, stamp(inc.ActedAt))
		ds, err := e.escalate(ctx, inc, a.TSDetected, why)
		if err != nil {
			return err
		}
		c.Incident, c.Drop, c.Out = inc, true, append(c.Out, ds...)
		return nil
	}
	if inc != nil {
		inc.addAnomaly(a)
		if a.TSDetected.After(inc.LastSeen) {
			inc.LastSeen = a.TSDetected
		}
		if actionRank(c.Decision.Action) <= actionRank(inc.Action) {
			e.log.Debug("anomaly joins open incident", "service", a.Service, "component", a.Component,
				"anomaly", a.ID, "incident", inc.ID, "action", inc.Action)
			c.Incident, c.Drop = inc, true
			return nil
		}
		c.Incident, c.Step = inc, inc.Step+1
		return nil
	}
	parts := []string{a.Service, key, deployID}
	if reopen {
		parts = append(parts, a.ID)
	}
	inc = &Incident{
		ID:         schemas.DeriveID("incident", parts...),
		Service:    a.Service,
		Key:        key,
		DeployID:   deployID,
		State:      IncidentOpen,
		Opened:     a.TSDetected,
		LastSeen:   a.TSDetected,
		AnomalyIDs: []string{a.ID},
		Firing:     []string{a.ID},
		first:      a,
	}
	e.incidents[mk] = inc
	c.Incident, c.Step = inc, 1
	return nil
}

// emit stamps the decision's deterministic id and reason and records it on the incident.
func (e *Engine) emit(_ context.Context, c *Case) error {
	d := &c.Decision
	d.Reason = c.summary + " " + c.reasoning
	e.record(c.Incident, d, c.Step)
	if d.Action == schemas.ActionRecommend {
		c.Incident.pendingMove = c.move
	}
	c.Out = append(c.Out, *d)
	return nil
}
