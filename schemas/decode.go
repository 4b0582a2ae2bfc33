package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// decodeStrict decodes exactly one JSON value into v, refusing unknown fields and trailing data,
// so that a typo ("latency": 12) is an error and not a silently dropped field.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return expectEOF(dec)
}

// requireKeys checks that the JSON object b (already decoded once, so well-formed) has every key,
// not null. It returns the object's members for nested checks.
func requireKeys(b []byte, prefix string, keys ...string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	for _, k := range keys {
		v, ok := m[k]
		if !ok || string(v) == "null" {
			return nil, &ValidationError{Field: prefix + k, Reason: "required"}
		}
	}
	return m, nil
}

// DecodeTelemetryEvent decodes one TelemetryEvent strictly (unknown fields are ErrMalformed) and
// validates it (ErrInvalid). It is the reference decoder; a hot path may decode its own way but
// must then call Validate.
func DecodeTelemetryEvent(b []byte) (*TelemetryEvent, error) {
	var e TelemetryEvent
	if err := decodeStrict(b, &e); err != nil {
		return nil, err
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

// DecodeDeployEvent decodes one DeployEvent strictly (unknown fields are ErrMalformed) and
// validates it (ErrInvalid).
func DecodeDeployEvent(b []byte) (*DeployEvent, error) {
	var d DeployEvent
	if err := decodeStrict(b, &d); err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// DecodeAck decodes one RollbackAck strictly (unknown fields are ErrMalformed) and validates it
// (ErrInvalid).
func DecodeAck(b []byte) (*RollbackAck, error) {
	var a RollbackAck
	if err := decodeStrict(b, &a); err != nil {
		return nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return &a, nil
}

// DecodeAnomaly decodes one Anomaly strictly and validates it. Besides Validate, it requires the
// fields whose absence Go cannot see in the struct (observed, baseline, effect, statistic,
// samples, evidence: a missing number would read as 0).
func DecodeAnomaly(b []byte) (*Anomaly, error) {
	var a Anomaly
	if err := decodeStrict(b, &a); err != nil {
		return nil, err
	}
	top, err := requireKeys(b, "", "observed", "baseline", "effect", "statistic", "samples", "evidence")
	if err != nil {
		return nil, err
	}
	if _, err := requireKeys(top["samples"], "samples.", "observed", "baseline"); err != nil {
		return nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return &a, nil
}

// DecodeDecision decodes one Decision strictly and validates it. Besides Validate, it requires the
// fields whose absence Go cannot see in the struct (anomaly_ids, targets, policy with window_open
// and guards_hit, plan, dry_run): an audit record missing them explains nothing.
func DecodeDecision(b []byte) (*Decision, error) {
	var d Decision
	if err := decodeStrict(b, &d); err != nil {
		return nil, err
	}
	top, err := requireKeys(b, "", "anomaly_ids", "targets", "policy", "plan", "dry_run")
	if err != nil {
		return nil, err
	}
	if _, err := requireKeys(top["policy"], "policy.", "window_open", "guards_hit"); err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// DecodeRollbackCommand decodes one RollbackCommand (the CloudEvent's data) strictly and
// validates it.
func DecodeRollbackCommand(b []byte) (*RollbackCommand, error) {
	var c RollbackCommand
	if err := decodeStrict(b, &c); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// MarshalJSON writes a Decision with its required arrays as [] rather than null when they are
// nil, so that a Decision built in Go always matches decision.json.
func (d Decision) MarshalJSON() ([]byte, error) {
	type plain Decision // no methods: avoids recursing into MarshalJSON
	p := plain(d)
	if p.AnomalyIDs == nil {
		p.AnomalyIDs = []string{}
	}
	if p.Targets == nil {
		p.Targets = []DecisionTarget{}
	}
	if p.Plan == nil {
		p.Plan = []PlanStep{}
	}
	if p.Policy.GuardsHit == nil {
		p.Policy.GuardsHit = []string{}
	}
	return json.Marshal(p)
}
