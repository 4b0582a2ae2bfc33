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

// DecodeAnomaly decodes one Anomaly strictly and validates it.
func DecodeAnomaly(b []byte) (*Anomaly, error) {
	var a Anomaly
	if err := decodeStrict(b, &a); err != nil {
		return nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return &a, nil
}

// DecodeDecision decodes one Decision strictly and validates it.
func DecodeDecision(b []byte) (*Decision, error) {
	var d Decision
	if err := decodeStrict(b, &d); err != nil {
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
