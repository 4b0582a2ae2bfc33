// Package schemas holds the messages and manifests that cross stage boundaries: the JSON Schema
// files that are their truth (schemas/*.json, draft 2020-12), the Go types that mirror them, their
// validation, deterministic id derivation, and golden examples.
//
// Every stage imports this package; it imports no stage.
package schemas

import (
	"encoding/json"
	"strings"
	"time"
)

// Error categories a failed request may carry in TelemetryEvent.Error.
const (
	ErrTimeout      = "timeout"
	ErrException    = "exception"
	ErrInvalidInput = "invalid_input"
	ErrOther        = "other"
)

// ErrorCategories lists every valid error category, in a stable order.
var ErrorCategories = []string{ErrTimeout, ErrException, ErrInvalidInput, ErrOther}

// Cohort names with a meaning of their own. Any other token-safe name is allowed.
const (
	CohortBaseline = "baseline"
	CohortCanary   = "canary"
)

// TelemetryEvent is one request observation, an aggregate over an interval when Count > 1, or a
// resource sample (IsResourceSample).
// Field names map 1:1 to OpenTelemetry semantic conventions: service → service.name,
// version → service.version, component → code.function.name (or http.route for endpoints),
// error → error.type.
type TelemetryEvent struct {
	ID        string    `json:"id,omitempty"`
	TS        time.Time `json:"ts"`
	Service   string    `json:"service"`
	Component string    `json:"component"`
	Block     string    `json:"block,omitempty"`
	Version   string    `json:"version"`
	Cohort    string    `json:"cohort,omitempty"`
	// Instance names the process that served (OpenTelemetry service.instance.id: a pod, a host
	// and pid, a UUID per start), so that each instance's start can be told from its version's:
	// with detect.latency_warmup, a rolling update's instances each warm up uncompared.
	// Optional; at most 128 characters, no control characters.
	Instance string `json:"instance,omitempty"`
	// LatencyMS is the request's latency, or for an aggregate the mean latency of its requests.
	LatencyMS *float64 `json:"latency_ms,omitempty"`
	// Latency summary of an aggregate (optional).
	Latency *LatencySummary `json:"latency,omitempty"`
	// Error is the failed request's category; empty means success.
	Error string `json:"error,omitempty"`
	// ErrorSite locates a failure: "file:line" or a short stack of frames separated by newlines or ';'.
	ErrorSite string `json:"error_site,omitempty"`
	// Count is the number of requests the event covers (absent = 1).
	Count  int64            `json:"count,omitempty"`
	Errors map[string]int64 `json:"errors,omitempty"`
	CPU    *float64         `json:"cpu,omitempty"`
	// ProcessRPS is the requests per second the process whose cpu this is served over the
	// interval the cpu covers, across every component it serves. With it, cpu is read against
	// the process's whole load; without it, against this component's own requests, which is
	// right only when the process serves this component alone. Only with CPU.
	ProcessRPS *float64       `json:"process_rps,omitempty"`
	MemMB      *float64       `json:"mem_mb,omitempty"`
	Attrs      map[string]any `json:"attrs,omitempty"`
}

// LatencySummary summarises the latencies of an aggregate event, in milliseconds.
type LatencySummary struct {
	P50 float64 `json:"p50,omitempty"`
	P90 float64 `json:"p90,omitempty"`
	P99 float64 `json:"p99,omitempty"`
	Max float64 `json:"max,omitempty"`
	// Sum of all latencies in the aggregate; with Count it gives the mean.
	Sum float64 `json:"sum,omitempty"`
}

// Requests is the number of requests the event stands for: Count, 1 when it is absent, and 0
// for a resource sample.
func (e *TelemetryEvent) Requests() int64 {
	switch {
	case e.Count > 0:
		return e.Count
	case e.IsResourceSample():
		return 0
	}
	return 1
}

// IsResourceSample reports whether the event only samples a process's cpu or memory, as a
// metrics scraper reports them: it carries cpu or mem_mb and nothing of a request (no count,
// latency, error, errors or error_site). It stands for no request, so a scraper's samples
// neither add requests nor make a version that no longer serves look as if it did.
func (e *TelemetryEvent) IsResourceSample() bool {
	return (e.CPU != nil || e.MemMB != nil) && e.Count == 0 && e.LatencyMS == nil && e.Latency == nil &&
		e.Error == "" && len(e.Errors) == 0 && e.ErrorSite == ""
}

// DeployEvent announces a new version of a service and its components. It records versions and
// opens the rollback window.
type DeployEvent struct {
	ID         string            `json:"id"`
	TS         time.Time         `json:"ts"`
	Service    string            `json:"service"`
	AppVersion string            `json:"app_version"`
	Components []DeployComponent `json:"components,omitempty"`
	// Reason / who deployed; free text for the audit trail.
	Actor string `json:"actor,omitempty"`
}

// DeployComponent is one component's version within a DeployEvent.
type DeployComponent struct {
	Component string        `json:"component"`
	Version   string        `json:"version"`
	Blocks    []DeployBlock `json:"blocks,omitempty"`
}

// DeployBlock is one block's version within a DeployComponent.
type DeployBlock struct {
	Block     string `json:"block"`
	Version   string `json:"version"`
	SourceRef string `json:"source_ref,omitempty"`
	Hash      string `json:"hash,omitempty"`
	// File and Lines say where the block lives in the component version this deploy ships
	// ("tax/calc.go", "40-88"), with the same rules as a ManifestBlock's. A refactor moves code, so
	// error sites of this version map to blocks through these ranges rather than the catalog's,
	// which describe one version only. Lines needs File.
	File  string `json:"file,omitempty"`
	Lines string `json:"lines,omitempty"`
}

// Granularity of a rollback: fine = one block, medium = one component, coarse = the application.
const (
	GranularityFine   = "fine"
	GranularityMedium = "medium"
	GranularityCoarse = "coarse"
)

// Dependency edge policies on rollback.
const (
	OnRollbackCascade = "cascade"
	OnRollbackDisable = "disable"
	OnRollbackIgnore  = "ignore"
)

// Manifest is a service's catalog entry, applied with `scalpel catalog apply -f`.
type Manifest struct {
	Service string `json:"service" yaml:"service"`
	// RollbackWindow after a deploy, during which automated rollback needs no approval (e.g. "15m").
	RollbackWindow Duration `json:"rollback_window,omitempty" yaml:"rollback_window,omitempty"`
	// DryRun makes every decision for this service a dry run: recorded, never actuated.
	DryRun     bool                `json:"dry_run,omitempty" yaml:"dry_run,omitempty"`
	Actuators  []string            `json:"actuators,omitempty" yaml:"actuators,omitempty"`
	Components []ManifestComponent `json:"components" yaml:"components"`
}

// ManifestComponent describes one function or endpoint of a service.
type ManifestComponent struct {
	Component   string          `json:"component" yaml:"component"`
	Kind        string          `json:"kind,omitempty" yaml:"kind,omitempty"` // function | endpoint
	Granularity string          `json:"granularity,omitempty" yaml:"granularity,omitempty"`
	DependsOn   []Dependency    `json:"depends_on,omitempty" yaml:"depends_on,omitempty"`
	Blocks      []ManifestBlock `json:"blocks,omitempty" yaml:"blocks,omitempty"`
	Thresholds  *Thresholds     `json:"thresholds,omitempty" yaml:"thresholds,omitempty"`
}

// Dependency is an edge from a component to one it depends on.
type Dependency struct {
	Service    string `json:"service" yaml:"service"`
	Component  string `json:"component" yaml:"component"`
	OnRollback string `json:"on_rollback,omitempty" yaml:"on_rollback,omitempty"`
}

// ManifestBlock names a region inside a component and where it lives in the source.
type ManifestBlock struct {
	Block string `json:"block" yaml:"block"`
	File  string `json:"file,omitempty" yaml:"file,omitempty"`
	Lines string `json:"lines,omitempty" yaml:"lines,omitempty"` // "40-88"
}

// Thresholds override the detector's and policy's defaults for one component.
type Thresholds struct {
	// ErrorRate is the absolute error rate above which a rise counts (e.g. 0.02).
	ErrorRate *float64 `json:"error_rate,omitempty" yaml:"error_rate,omitempty"`
	// LatencyIncrease is the minimum relative latency increase that counts (0.25 = +25 %).
	LatencyIncrease *float64 `json:"latency_increase,omitempty" yaml:"latency_increase,omitempty"`
}

// Metrics an anomaly can be about.
const (
	MetricErrorRate  = "error_rate"
	MetricLatency    = "latency"
	MetricThroughput = "throughput"
	MetricCPU        = "cpu"
	MetricMem        = "mem"
)

// Window is a closed event-time interval.
type Window struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// Anomaly is detect's finding about one series.
type Anomaly struct {
	ID            string    `json:"id"`
	TSDetected    time.Time `json:"ts_detected"`
	Window        Window    `json:"window"`
	Service       string    `json:"service"`
	Component     string    `json:"component"`
	Block         string    `json:"block,omitempty"`
	Version       string    `json:"version"`
	Cohort        string    `json:"cohort,omitempty"`
	Metric        string    `json:"metric"`
	ErrorCategory string    `json:"error_category,omitempty"`
	Observed      float64   `json:"observed"`
	Baseline      float64   `json:"baseline"`
	// BaselineVersion is the version (or cohort) the observation was compared with, for people:
	// a qualifier in parentheses may follow the version ("2.4.0 (cohort baseline)"), and
	// BaselineVersionOf reads the version back.
	BaselineVersion string   `json:"baseline_version,omitempty"`
	Effect          float64  `json:"effect"`
	Test            string   `json:"test,omitempty"` // which statistical test fired
	Statistic       float64  `json:"statistic"`
	PValue          *float64 `json:"p_value,omitempty"`
	Score           *float64 `json:"score,omitempty"`
	Samples         Samples  `json:"samples"`
	Evidence        Evidence `json:"evidence"`
	// Status is firing (the default, when empty) or resolved. When an episode ends, detect publishes
	// the same anomaly again — same ID — with Status resolved and ResolvedAt set, so decide can verify
	// that a rollback worked.
	Status     string     `json:"status,omitempty"`
	ResolvedAt *time.Time `json:"resolved_at,omitempty"`
	// Resolution says why the episode ended (e.g. "error rate back under baseline for 10s",
	// "traffic moved to version 1.0, which is healthy").
	Resolution string `json:"resolution,omitempty"`
}

// BaselineVersionOf is the version an Anomaly.BaselineVersion names: what precedes its
// parenthesised qualifier, if any ("2.4.0 (cohort baseline)" → "2.4.0"), and "" for the own
// profile, which names none.
func BaselineVersionOf(bv string) string {
	if strings.HasPrefix(bv, BaselineOwnProfile) {
		return ""
	}
	if i := strings.Index(bv, " ("); i > 0 && strings.HasSuffix(bv, ")") {
		return bv[:i]
	}
	return bv
}

// BaselineOwnProfile begins Anomaly.BaselineVersion when the series was compared with its own
// long-run profile ("own profile (1h)") rather than with another version or cohort: it names no
// version, and must not enter version history.
const BaselineOwnProfile = "own profile"

// Anomaly statuses.
const (
	AnomalyFiring   = "firing"
	AnomalyResolved = "resolved"
)

// IsResolved reports whether the anomaly announces the end of its episode.
func (a *Anomaly) IsResolved() bool { return a.Status == AnomalyResolved }

// ClockService and ClockComponent name the telemetry events that carry no request and only say
// how far event time has come: clock ticks, which serve publishes on telemetry._scalpel.clock
// when no telemetry has come in for ingest.tick_after (a process that reads only part of the
// telemetry, ingest.filter_subject, on telemetry._scalpel.<its durable>). Detection runs on
// event time, which otherwise moves only with events. The service name is reserved.
const (
	ClockService   = "_scalpel"
	ClockComponent = "clock"
)

// ClockTick is the clock tick that says event time has come to ts.
func ClockTick(ts time.Time) TelemetryEvent { return ClockTickAs(ClockComponent, ts) }

// ClockTickAs is ClockTick as the component its subject names (ingest.Config.TickSubject).
func ClockTickAs(component string, ts time.Time) TelemetryEvent {
	return TelemetryEvent{TS: ts.UTC(), Service: ClockService, Component: component, Version: "1"}
}

// IsClockTick reports whether e is a clock tick (ClockTick) rather than telemetry of a service.
func (e *TelemetryEvent) IsClockTick() bool { return e.Service == ClockService }

// IsSilence reports whether a is a unit that fell silent: a throughput drop to not one request
// (detect reads a busy unit's empty buckets after a deploy as counts of zero). Nothing in an
// empty window tells a hung or crashed version from its telemetry lost on the way.
func (a *Anomaly) IsSilence() bool { return a.Metric == MetricThroughput && a.Observed == 0 }

// MsgID is the Nats-Msg-Id to publish the anomaly with: its id while firing, and an id derived from
// it when resolved — the resolution carries the same anomaly id, and the stream's duplicate window
// would otherwise drop it as a repeat of the firing one.
func (a *Anomaly) MsgID() string {
	if a.IsResolved() {
		return DeriveID("anomaly-resolved", a.ID)
	}
	return a.ID
}

// Samples counts the observations on each side of a comparison.
type Samples struct {
	Observed int64 `json:"observed"`
	Baseline int64 `json:"baseline"`
}

// Evidence is what a person needs to see why an anomaly was raised.
type Evidence struct {
	// Blocks maps each block of the component to its errors in the anomaly window.
	Blocks map[string]int64 `json:"blocks,omitempty"`
	// BaselineBlocks maps each block to its errors in the baseline window, scaled to the same request count.
	BaselineBlocks map[string]float64 `json:"baseline_blocks,omitempty"`
	// Sites maps error sites to their error counts when events carried error_site.
	Sites map[string]int64 `json:"sites,omitempty"`
	Notes []string         `json:"notes,omitempty"`
}

// Decision actions.
const (
	ActionRollback  = "rollback"
	ActionDisable   = "disable"
	ActionEscalate  = "escalate"
	ActionHold      = "hold"
	ActionRecommend = "recommend"
	ActionNone      = "none"
	ActionRestore   = "restore"
	ActionEnable    = "enable"
)

// Decision is decide's audit record: enough to explain the decision to a person with nothing else at hand.
type Decision struct {
	ID          string           `json:"id"`
	TS          time.Time        `json:"ts"`
	IncidentID  string           `json:"incident_id"`
	AnomalyIDs  []string         `json:"anomaly_ids"`
	Service     string           `json:"service"`
	Action      string           `json:"action"`
	Granularity string           `json:"granularity,omitempty"`
	Targets     []DecisionTarget `json:"targets"`
	Reason      string           `json:"reason"`
	Policy      PolicyInfo       `json:"policy"`
	Plan        []PlanStep       `json:"plan"`
	DryRun      bool             `json:"dry_run"`
	// DeployID is the deploy the decision attributes the anomaly to, when one was found.
	DeployID string `json:"deploy_id,omitempty"`
}

// DecisionTarget is one thing a decision changes.
type DecisionTarget struct {
	Service     string `json:"service"`
	Component   string `json:"component,omitempty"`
	Block       string `json:"block,omitempty"`
	FromVersion string `json:"from_version"`
	ToVersion   string `json:"to_version"`
	Step        int    `json:"step"`
}

// PolicyInfo records the policy state a decision was made under.
type PolicyInfo struct {
	WindowOpen bool               `json:"window_open"`
	Thresholds map[string]float64 `json:"thresholds,omitempty"`
	GuardsHit  []string           `json:"guards_hit"`
}

// PlanStep is one ordered step of a decision's plan.
type PlanStep struct {
	Step      int    `json:"step"`
	Action    string `json:"action"`
	Service   string `json:"service"`
	Component string `json:"component,omitempty"`
	Block     string `json:"block,omitempty"`
	// Edge explains why the step is in the plan (e.g. "checkout/tax-calc depends_on pricing/rates: cascade").
	Edge        string `json:"edge,omitempty"`
	FromVersion string `json:"from_version,omitempty"`
	ToVersion   string `json:"to_version,omitempty"`
}

// CloudEvent type of a RollbackCommand.
const RollbackCommandType = "io.scalpel.rollback.v1"

// RollbackCommand is the data of the CloudEvent actuate publishes on rollback.cmd.<svc>.
type RollbackCommand struct {
	ID          string     `json:"id"`
	DecisionID  string     `json:"decision_id"`
	IncidentID  string     `json:"incident_id"`
	Granularity string     `json:"granularity"`
	Action      string     `json:"action"` // rollback | disable | enable | restore
	Service     string     `json:"service"`
	Component   string     `json:"component,omitempty"`
	Block       string     `json:"block,omitempty"`
	FromVersion string     `json:"from_version"`
	ToVersion   string     `json:"to_version"`
	Reason      string     `json:"reason"`
	IssuedAt    time.Time  `json:"issued_at"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
}

// Target is the command's `<svc>/<comp>[/<block>]` (the CloudEvent subject).
func (c *RollbackCommand) Target() string {
	s := c.Service
	if c.Component != "" {
		s += "/" + c.Component
		if c.Block != "" {
			s += "/" + c.Block
		}
	}
	return s
}

// Ack statuses.
const (
	AckApplied = "applied"
	AckFailed  = "failed"
	AckIgnored = "ignored"
)

// RollbackAck is a deployer's answer to a RollbackCommand.
type RollbackAck struct {
	CommandID     string    `json:"command_id"`
	Service       string    `json:"service"`
	Instance      string    `json:"instance"`
	Status        string    `json:"status"`
	ActiveVersion string    `json:"active_version"`
	Error         string    `json:"error,omitempty"`
	TS            time.Time `json:"ts"`
}

// Duration is a time.Duration that reads and writes as a Go duration string ("15m").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string such as "15m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// UnmarshalYAML reads a duration string such as "15m".
func (d *Duration) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }
