package schemas

import (
	"time"
	"unicode/utf8"
)

// Approval is a person's answer to a `recommend` decision, published by `scalpel approve ID` or
// `scalpel reject ID` on approval.<svc> (stored in the DECISIONS stream next to the decisions it
// answers). decide turns an approved recommendation into a rollback step of the same incident and a
// rejected one into `none`, quoting the reason.
type Approval struct {
	// ID is the approval's own id, also its Nats-Msg-Id: a repeated `scalpel approve` is stored once.
	ID string `json:"id"`
	// DecisionID is the recommend decision answered.
	DecisionID string `json:"decision_id"`
	// Service is the decision's service (the subject token).
	Service string `json:"service"`
	// Approve is true for approve, false for reject.
	Approve bool `json:"approve"`
	// Actor is who answered (user@host by default), for the audit trail.
	Actor string `json:"actor,omitempty"`
	// Reason is free text quoted in the resulting decision.
	Reason string `json:"reason,omitempty"`
	// TS is when the answer was given.
	TS time.Time `json:"ts"`
}

// MaxReasonLen bounds an approval's reason and actor: they are quoted in decisions.
const MaxReasonLen = 1024

// Validate checks an Approval against approval.json, plus a non-zero ts.
func (a *Approval) Validate() error {
	if err := checkVersion("id", a.ID); err != nil {
		return err
	}
	if err := checkVersion("decision_id", a.DecisionID); err != nil {
		return err
	}
	if err := checkName("service", a.Service); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{{"actor", a.Actor}, {"reason", a.Reason}} {
		if !utf8.ValidString(f.v) {
			return invalid(f.name, "must be valid UTF-8")
		}
		if err := checkMaxChars(f.name, f.v, MaxReasonLen); err != nil {
			return err
		}
	}
	return checkTime("ts", a.TS)
}

// DecodeApproval decodes one Approval strictly (unknown fields are ErrMalformed) and validates it
// (ErrInvalid).
func DecodeApproval(b []byte) (*Approval, error) {
	var a Approval
	if err := decodeStrict(b, &a); err != nil {
		return nil, err
	}
	if _, err := requireKeys(b, "", "approve"); err != nil {
		return nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return &a, nil
}
