package schemas

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Sentinel errors callers branch on. Every error returned by a Validate method or a Decode/Parse
// function of this package matches exactly one of them with errors.Is.
var (
	// ErrInvalid: the message decoded but breaks a rule of its schema (bad name, negative latency,
	// unknown error category, ...). Never retry it; reject it.
	ErrInvalid = errors.New("invalid message")
	// ErrMalformed: the bytes are not the message at all (not JSON/YAML, wrong types, unknown fields).
	ErrMalformed = errors.New("malformed message")
	// ErrTooLarge: the input is larger than this package accepts for its kind.
	ErrTooLarge = errors.New("message too large")
)

// Limits shared by the Go validation and the JSON Schema files; the two must agree.
const (
	// MaxNameLen is the longest service, component, block, cohort or actuator name.
	MaxNameLen = 64
	// MaxVersionLen is the longest version or id, in characters (Unicode code points, as JSON
	// Schema's maxLength counts).
	MaxVersionLen = 128
	// MaxErrorSiteLen is the longest error_site, in characters: about 1 KiB of a typical ASCII
	// stack, enough for the few innermost frames that locate a block, small enough that one bad
	// client cannot bloat evidence.
	MaxErrorSiteLen = 1024
	// MaxPathLen is the longest source file path in a manifest block or an evidence site key.
	MaxPathLen = 1024
	// MaxLine is the largest line number a manifest block may name (9 digits).
	MaxLine = 999_999_999
)

// ValidationError says which field broke which rule. It matches ErrInvalid with errors.Is.
type ValidationError struct {
	// Field is the path of the offending field in JSON names, e.g. "latency_ms",
	// "errors.boom" or "components[2].blocks[0].lines".
	Field string
	// Reason says what is wrong and, where it helps, what value was seen.
	Reason string
}

// Error reads "field: reason", e.g. `latency_ms: must be a finite number >= 0, got -3`.
func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap makes every ValidationError match ErrInvalid.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// invalid builds a ValidationError; only called on the failure path, so the success path of the
// validators never allocates.
func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// prefixed re-roots a ValidationError under a parent path ("components[2]" + ".blocks[0].lines").
func prefixed(parent string, err error) error {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return &ValidationError{Field: parent + "." + ve.Field, Reason: ve.Reason}
	}
	return err
}

// IsName reports whether s is a NATS-token-safe name: [A-Za-z0-9_-]{1,64}.
func IsName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameByte[s[i]] {
			return false
		}
	}
	return true
}

// nameByte is the name alphabet as a table: one load per byte on the ingest hot path.
var nameByte = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
	}
	return t
}()

// isControl reports the runes the schemas exclude from versions and ids: C0, DEL and C1 controls.
func isControl(r rune) bool { return r < 0x20 || (r >= 0x7f && r <= 0x9f) }

// IsVersion reports whether s is a valid version or id: 1 to 128 characters, valid UTF-8, no
// control characters. Versions never appear in subjects, so anything printable goes ("2.4.0", a git
// sha, "v1.2.3+build.7").
func IsVersion(s string) bool {
	if len(s) == 0 {
		return false
	}
	if len(s) <= MaxVersionLen && printableASCII(s) { // ids and versions nearly always are
		return true
	}
	n := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return false
			}
			i++
		} else {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 || isControl(r) {
				return false
			}
			i += size
		}
		n++
		if n > MaxVersionLen {
			return false
		}
	}
	return true
}

// printableASCII reports whether every byte of s is in 0x20..0x7e, eight bytes at a time: a
// version string or an event id of that alphabet has no control character, whatever its length in
// runes, and is checked in a few nanoseconds instead of a rune at a time.
func printableASCII(s string) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := binary.LittleEndian.Uint64([]byte(s[i : i+8]))
		below := (x - 0x20*ones) &^ x & highs      // a byte below 0x20 (exact for a threshold ≤ 0x80)
		above := ((x &^ highs) + ones | x) & highs // a byte that is 0x7f or has its high bit set
		if below|above != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// IsErrorCategory reports whether s is one of ErrorCategories.
func IsErrorCategory(s string) bool {
	switch s {
	case ErrTimeout, ErrException, ErrInvalidInput, ErrOther:
		return true
	}
	return false
}

func checkName(field, s string) error {
	if IsName(s) {
		return nil
	}
	if s == "" {
		return invalid(field, "required")
	}
	return invalid(field, "%q: must match [A-Za-z0-9_-]{1,64}", clip(s))
}

// checkOptName accepts "" (absent: Go cannot tell an omitted field from an empty one, and the
// schemas say the same).
func checkOptName(field, s string) error {
	if s == "" {
		return nil
	}
	return checkName(field, s)
}

func checkVersion(field, s string) error {
	if IsVersion(s) {
		return nil
	}
	if s == "" {
		return invalid(field, "required")
	}
	return invalid(field, "%q: must be 1-%d characters without control characters", clip(s), MaxVersionLen)
}

func checkOptVersion(field, s string) error {
	if s == "" {
		return nil
	}
	return checkVersion(field, s)
}

// checkText requires a non-empty valid UTF-8 string (free text such as a reason).
func checkText(field, s string) error {
	if s == "" {
		return invalid(field, "required")
	}
	if !utf8.ValidString(s) {
		return invalid(field, "must be valid UTF-8")
	}
	return nil
}

// checkMaxChars bounds a free-text field by characters (code points), as JSON Schema's maxLength does.
func checkMaxChars(field, s string, max int) error {
	if len(s) <= max { // fast path: bytes >= characters
		return nil
	}
	if n := utf8.RuneCountInString(s); n > max {
		return invalid(field, "must be at most %d characters, got %d", max, n)
	}
	return nil
}

func checkTime(field string, t time.Time) error {
	if t.IsZero() {
		return invalid(field, "required (a non-zero RFC 3339 timestamp)")
	}
	return nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

func checkNonNeg(field string, f float64) error {
	if finite(f) && f >= 0 {
		return nil
	}
	return invalid(field, "must be a finite number >= 0, got %s", fmtFloat(f))
}

func checkOptNonNeg(field string, f *float64) error {
	if f == nil {
		return nil
	}
	return checkNonNeg(field, *f)
}

func checkFinite(field string, f float64) error {
	if finite(f) {
		return nil
	}
	return invalid(field, "must be a finite number, got %s", fmtFloat(f))
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// clip keeps error messages short when the offending value is huge.
func clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// Validate checks a TelemetryEvent against telemetry_event.json. It runs on every ingested event,
// so it is written by hand: no reflection, and no allocation unless the event is invalid.
//
// Beyond what the JSON Schema can say, it rejects NaN and infinite numbers (which JSON cannot
// carry but a Go producer can), a zero ts, and errors{} whose sum exceeds the request count.
func (e *TelemetryEvent) Validate() error {
	if e.ID != "" {
		if err := checkVersion("id", e.ID); err != nil {
			return err
		}
	}
	if err := checkTime("ts", e.TS); err != nil {
		return err
	}
	if err := checkName("service", e.Service); err != nil {
		return err
	}
	if err := checkName("component", e.Component); err != nil {
		return err
	}
	if err := checkOptName("block", e.Block); err != nil {
		return err
	}
	if err := checkVersion("version", e.Version); err != nil {
		return err
	}
	if err := checkOptName("cohort", e.Cohort); err != nil {
		return err
	}
	if err := checkOptVersion("instance", e.Instance); err != nil {
		return err
	}
	if err := checkOptNonNeg("latency_ms", e.LatencyMS); err != nil {
		return err
	}
	if l := e.Latency; l != nil {
		if err := l.validate(); err != nil {
			return prefixed("latency", err)
		}
	}
	if e.Error != "" && !IsErrorCategory(e.Error) {
		return invalid("error", "%q: must be one of timeout, exception, invalid_input, other", clip(e.Error))
	}
	if err := checkMaxChars("error_site", e.ErrorSite, MaxErrorSiteLen); err != nil {
		return err
	}
	if e.ErrorSite != "" && !utf8.ValidString(e.ErrorSite) {
		return invalid("error_site", "must be valid UTF-8")
	}
	if e.Count < 0 {
		return invalid("count", "must be >= 0, got %d", e.Count)
	}
	if len(e.Errors) > 0 {
		var sum int64
		for k, v := range e.Errors {
			if !IsErrorCategory(k) {
				return invalid("errors."+clip(k), "unknown error category (want timeout, exception, invalid_input or other)")
			}
			if v < 0 {
				return invalid("errors."+k, "must be >= 0, got %d", v)
			}
			sum += v // each v <= MaxInt64 and there are at most 4 keys, so overflow shows as a negative sum
			if sum < 0 {
				return invalid("errors", "sum overflows")
			}
		}
		if n := e.Requests(); sum > n {
			return invalid("errors", "sum %d exceeds the request count %d", sum, n)
		}
	}
	if err := checkOptNonNeg("cpu", e.CPU); err != nil {
		return err
	}
	if err := checkOptNonNeg("process_rps", e.ProcessRPS); err != nil {
		return err
	}
	if e.ProcessRPS != nil && e.CPU == nil {
		return invalid("process_rps", "without cpu: it is the load the process's cpu was measured at, so send it with cpu")
	}
	return checkOptNonNeg("mem_mb", e.MemMB)
}

func (l *LatencySummary) validate() error {
	if err := checkNonNeg("p50", l.P50); err != nil {
		return err
	}
	if err := checkNonNeg("p90", l.P90); err != nil {
		return err
	}
	if err := checkNonNeg("p99", l.P99); err != nil {
		return err
	}
	if err := checkNonNeg("max", l.Max); err != nil {
		return err
	}
	return checkNonNeg("sum", l.Sum)
}

// Validate checks a DeployEvent against deploy_event.json, plus what the schema cannot say: a
// non-zero ts and component (and, per component, block) names that are unique.
func (d *DeployEvent) Validate() error {
	if err := checkVersion("id", d.ID); err != nil {
		return err
	}
	if err := checkTime("ts", d.TS); err != nil {
		return err
	}
	if err := checkName("service", d.Service); err != nil {
		return err
	}
	if err := checkVersion("app_version", d.AppVersion); err != nil {
		return err
	}
	if d.Actor != "" && !utf8.ValidString(d.Actor) {
		return invalid("actor", "must be valid UTF-8")
	}
	for i := range d.Components {
		c := &d.Components[i]
		p := "components[" + strconv.Itoa(i) + "]"
		if err := checkName(p+".component", c.Component); err != nil {
			return err
		}
		for j := range i {
			if d.Components[j].Component == c.Component {
				return invalid(p+".component", "%q: duplicate of components[%d]", c.Component, j)
			}
		}
		if err := checkVersion(p+".version", c.Version); err != nil {
			return err
		}
		for j := range c.Blocks {
			b := &c.Blocks[j]
			bp := p + ".blocks[" + strconv.Itoa(j) + "]"
			if err := checkName(bp+".block", b.Block); err != nil {
				return err
			}
			for k := range j {
				if c.Blocks[k].Block == b.Block {
					return invalid(bp+".block", "%q: duplicate of blocks[%d]", b.Block, k)
				}
			}
			if err := checkVersion(bp+".version", b.Version); err != nil {
				return err
			}
			if err := checkMaxChars(bp+".source_ref", b.SourceRef, MaxPathLen); err != nil {
				return err
			}
			if err := checkOptVersion(bp+".hash", b.Hash); err != nil {
				return err
			}
			if err := checkBlockRange(bp, b.File, b.Lines); err != nil {
				return err
			}
		}
	}
	return nil
}

// Validate checks an Anomaly against anomaly.json, plus: finite numbers, window.from <= window.to,
// non-zero timestamps.
func (a *Anomaly) Validate() error {
	if err := checkVersion("id", a.ID); err != nil {
		return err
	}
	if err := checkTime("ts_detected", a.TSDetected); err != nil {
		return err
	}
	if err := checkTime("window.from", a.Window.From); err != nil {
		return err
	}
	if err := checkTime("window.to", a.Window.To); err != nil {
		return err
	}
	if a.Window.To.Before(a.Window.From) {
		return invalid("window", "from %s is after to %s", a.Window.From.Format(time.RFC3339Nano), a.Window.To.Format(time.RFC3339Nano))
	}
	if err := checkName("service", a.Service); err != nil {
		return err
	}
	if err := checkName("component", a.Component); err != nil {
		return err
	}
	if err := checkOptName("block", a.Block); err != nil {
		return err
	}
	if err := checkVersion("version", a.Version); err != nil {
		return err
	}
	if err := checkOptName("cohort", a.Cohort); err != nil {
		return err
	}
	switch a.Metric {
	case MetricErrorRate, MetricLatency, MetricThroughput, MetricCPU, MetricMem:
	case "":
		return invalid("metric", "required")
	default:
		return invalid("metric", "%q: must be one of error_rate, latency, throughput, cpu, mem", clip(a.Metric))
	}
	if a.ErrorCategory != "" && !IsErrorCategory(a.ErrorCategory) {
		return invalid("error_category", "%q: must be one of timeout, exception, invalid_input, other", clip(a.ErrorCategory))
	}
	switch a.Status {
	case "", AnomalyFiring:
		if a.ResolvedAt != nil {
			return invalid("resolved_at", "set on an anomaly whose status is not resolved")
		}
	case AnomalyResolved:
		if a.ResolvedAt == nil || a.ResolvedAt.IsZero() {
			return invalid("resolved_at", "required when status is resolved")
		}
	default:
		return invalid("status", "%q: must be firing or resolved", clip(a.Status))
	}
	for _, f := range [...]struct {
		name string
		v    float64
	}{{"observed", a.Observed}, {"baseline", a.Baseline}, {"effect", a.Effect}, {"statistic", a.Statistic}} {
		if err := checkFinite(f.name, f.v); err != nil {
			return err
		}
	}
	if err := checkOptVersion("baseline_version", a.BaselineVersion); err != nil {
		return err
	}
	if a.PValue == nil && a.Score == nil {
		return invalid("p_value", "one of p_value or score is required")
	}
	if p := a.PValue; p != nil && !(finite(*p) && *p >= 0 && *p <= 1) {
		return invalid("p_value", "must be in [0, 1], got %s", fmtFloat(*p))
	}
	if s := a.Score; s != nil {
		if err := checkFinite("score", *s); err != nil {
			return err
		}
	}
	if a.Samples.Observed < 0 {
		return invalid("samples.observed", "must be >= 0, got %d", a.Samples.Observed)
	}
	if a.Samples.Baseline < 0 {
		return invalid("samples.baseline", "must be >= 0, got %d", a.Samples.Baseline)
	}
	return a.Evidence.validate()
}

func (ev *Evidence) validate() error {
	for k, v := range ev.Blocks {
		if err := checkName("evidence.blocks", k); err != nil {
			return err
		}
		if v < 0 {
			return invalid("evidence.blocks."+k, "must be >= 0, got %d", v)
		}
	}
	for k, v := range ev.BaselineBlocks {
		if err := checkName("evidence.baseline_blocks", k); err != nil {
			return err
		}
		if err := checkNonNeg("evidence.baseline_blocks."+k, v); err != nil {
			return err
		}
	}
	for k, v := range ev.Sites {
		if k == "" {
			return invalid("evidence.sites", "empty site key")
		}
		if err := checkMaxChars("evidence.sites", k, MaxErrorSiteLen); err != nil {
			return err
		}
		if v < 0 {
			return invalid("evidence.sites."+clip(k), "must be >= 0, got %d", v)
		}
	}
	return nil
}

// IsAction reports whether s is a Decision action.
func IsAction(s string) bool {
	switch s {
	case ActionRollback, ActionDisable, ActionEscalate, ActionHold, ActionRecommend, ActionNone, ActionRestore, ActionEnable:
		return true
	}
	return false
}

// IsGranularity reports whether s is fine, medium or coarse.
func IsGranularity(s string) bool {
	return s == GranularityFine || s == GranularityMedium || s == GranularityCoarse
}

// Validate checks a Decision against decision.json, plus: a non-zero ts, finite thresholds, and
// plan steps numbered in strictly increasing order (the plan is executed in that order).
func (d *Decision) Validate() error {
	if err := checkVersion("id", d.ID); err != nil {
		return err
	}
	if err := checkTime("ts", d.TS); err != nil {
		return err
	}
	if err := checkVersion("incident_id", d.IncidentID); err != nil {
		return err
	}
	for i, id := range d.AnomalyIDs {
		if err := checkVersion("anomaly_ids["+strconv.Itoa(i)+"]", id); err != nil {
			return err
		}
	}
	if err := checkName("service", d.Service); err != nil {
		return err
	}
	if !IsAction(d.Action) {
		if d.Action == "" {
			return invalid("action", "required")
		}
		return invalid("action", "%q: must be one of rollback, disable, escalate, hold, recommend, none, restore, enable", clip(d.Action))
	}
	if d.Granularity != "" && !IsGranularity(d.Granularity) {
		return invalid("granularity", "%q: must be one of fine, medium, coarse", clip(d.Granularity))
	}
	for i := range d.Targets {
		if err := d.Targets[i].validate(); err != nil {
			return prefixed("targets["+strconv.Itoa(i)+"]", err)
		}
	}
	if err := checkText("reason", d.Reason); err != nil {
		return err
	}
	for k, v := range d.Policy.Thresholds {
		if k == "" {
			return invalid("policy.thresholds", "empty key")
		}
		if err := checkFinite("policy.thresholds."+k, v); err != nil {
			return err
		}
	}
	last := 0
	for i := range d.Plan {
		if err := d.Plan[i].validate(); err != nil {
			return prefixed("plan["+strconv.Itoa(i)+"]", err)
		}
		if d.Plan[i].Step <= last {
			return invalid("plan["+strconv.Itoa(i)+"].step", "%d: steps must increase (previous %d)", d.Plan[i].Step, last)
		}
		last = d.Plan[i].Step
	}
	return checkOptVersion("deploy_id", d.DeployID)
}

func (t *DecisionTarget) validate() error {
	if err := checkName("service", t.Service); err != nil {
		return err
	}
	if err := checkTargetPath(t.Component, t.Block); err != nil {
		return err
	}
	if err := checkVersion("from_version", t.FromVersion); err != nil {
		return err
	}
	if err := checkVersion("to_version", t.ToVersion); err != nil {
		return err
	}
	if t.Step < 1 {
		return invalid("step", "must be >= 1, got %d", t.Step)
	}
	return nil
}

func (s *PlanStep) validate() error {
	if s.Step < 1 {
		return invalid("step", "must be >= 1, got %d", s.Step)
	}
	if !IsAction(s.Action) {
		if s.Action == "" {
			return invalid("action", "required")
		}
		return invalid("action", "%q: must be one of rollback, disable, escalate, hold, recommend, none, restore, enable", clip(s.Action))
	}
	if err := checkName("service", s.Service); err != nil {
		return err
	}
	if err := checkTargetPath(s.Component, s.Block); err != nil {
		return err
	}
	if err := checkOptVersion("from_version", s.FromVersion); err != nil {
		return err
	}
	return checkOptVersion("to_version", s.ToVersion)
}

// checkTargetPath: a block only exists inside a component.
func checkTargetPath(component, block string) error {
	if err := checkOptName("component", component); err != nil {
		return err
	}
	if err := checkOptName("block", block); err != nil {
		return err
	}
	if block != "" && component == "" {
		return invalid("component", "required when block is set")
	}
	return nil
}

// IsCommandAction reports whether s is an action a RollbackCommand may carry.
func IsCommandAction(s string) bool {
	return s == ActionRollback || s == ActionDisable || s == ActionEnable || s == ActionRestore
}

// Validate checks a RollbackCommand against rollback_command.json, plus: non-zero issued_at, and
// expires_at (when set) after issued_at.
func (c *RollbackCommand) Validate() error {
	if err := checkVersion("id", c.ID); err != nil {
		return err
	}
	if err := checkVersion("decision_id", c.DecisionID); err != nil {
		return err
	}
	if err := checkVersion("incident_id", c.IncidentID); err != nil {
		return err
	}
	if !IsGranularity(c.Granularity) {
		if c.Granularity == "" {
			return invalid("granularity", "required")
		}
		return invalid("granularity", "%q: must be one of fine, medium, coarse", clip(c.Granularity))
	}
	if !IsCommandAction(c.Action) {
		if c.Action == "" {
			return invalid("action", "required")
		}
		return invalid("action", "%q: must be one of rollback, disable, enable, restore", clip(c.Action))
	}
	if err := checkName("service", c.Service); err != nil {
		return err
	}
	if err := checkTargetPath(c.Component, c.Block); err != nil {
		return err
	}
	if err := checkVersion("from_version", c.FromVersion); err != nil {
		return err
	}
	if err := checkVersion("to_version", c.ToVersion); err != nil {
		return err
	}
	if err := checkText("reason", c.Reason); err != nil {
		return err
	}
	if err := checkTime("issued_at", c.IssuedAt); err != nil {
		return err
	}
	if c.ExpiresAt != nil && !c.ExpiresAt.After(c.IssuedAt) {
		return invalid("expires_at", "%s: must be after issued_at %s", c.ExpiresAt.Format(time.RFC3339Nano), c.IssuedAt.Format(time.RFC3339Nano))
	}
	return nil
}

// Validate checks a RollbackAck against rollback_ack.json, plus a non-zero ts. A failed ack must
// say why in error: an operator reading it has nothing else.
func (a *RollbackAck) Validate() error {
	if err := checkVersion("command_id", a.CommandID); err != nil {
		return err
	}
	if err := checkName("service", a.Service); err != nil {
		return err
	}
	if err := checkVersion("instance", a.Instance); err != nil {
		return err
	}
	switch a.Status {
	case AckApplied, AckIgnored:
	case AckFailed:
		if a.Error == "" {
			return invalid("error", "required when status is failed")
		}
	case "":
		return invalid("status", "required")
	default:
		return invalid("status", "%q: must be one of applied, failed, ignored", clip(a.Status))
	}
	if err := checkVersion("active_version", a.ActiveVersion); err != nil {
		return err
	}
	if a.Error != "" && !utf8.ValidString(a.Error) {
		return invalid("error", "must be valid UTF-8")
	}
	return checkTime("ts", a.TS)
}

// checkBlockRange checks a deploy block's optional file and "START-END" line range (p names the
// block in errors) by the rules of a manifest block's.
func checkBlockRange(p, file, lines string) error {
	if file != "" && !isPath(file) {
		return invalid(p+".file", "%q: must be 1-%d characters without control characters", clip(file), MaxPathLen)
	}
	if lines == "" {
		return nil
	}
	if file == "" {
		return invalid(p+".file", "required when lines is set")
	}
	start, end, ok := parseLines(lines)
	if !ok {
		return invalid(p+".lines", "%q: must be \"START-END\" with line numbers from 1", clip(lines))
	}
	if start > end {
		return invalid(p+".lines", "%q: start after end", lines)
	}
	return nil
}
