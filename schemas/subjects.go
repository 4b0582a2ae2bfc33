package schemas

// Stream names (DESIGN §2).
const (
	StreamTelemetry = "TELEMETRY"
	StreamDeploys   = "DEPLOYS"
	StreamAnomalies = "ANOMALIES"
	StreamDecisions = "DECISIONS"
	StreamRollbacks = "ROLLBACKS"
	StreamRejected  = "REJECTED"
)

// KV buckets and object store (DESIGN §2).
const (
	BucketCatalog = "scalpel_catalog"
	BucketActive  = "scalpel_active"
	BucketState   = "scalpel_state"
	ObjectBlocks  = "scalpel_blocks"
	// ObjectState holds the detector's checkpoints. It shares its name with the BucketState KV
	// bucket — their streams differ (KV_scalpel_state, OBJ_scalpel_state) — because both hold state
	// that must survive a restart; a checkpoint is megabytes, beyond a KV value's payload.
	ObjectState = "scalpel_state"
)

// Reject headers carried by every message on rejected.<stage>.
const (
	HeaderRejectReason  = "Scalpel-Reject-Reason"
	HeaderRejectSubject = "Scalpel-Reject-Subject"
)

// StageActuate is the stage token of decisions actuate gave up on: rejected.actuate. decide reads it
// to learn a step failed; replay reads it to re-run that.
const StageActuate = "actuate"

// Headers of a decision on rejected.actuate, next to the reject headers.
const (
	// HeaderDecisionID is the id of the decision that could not be carried out.
	HeaderDecisionID = "Scalpel-Decision-Id"
	// HeaderCommandID is the id of the command that failed (absent when the decision itself was
	// unusable).
	HeaderCommandID = "Scalpel-Command-Id"
)

// Subjects builds subject names under an optional prefix (DESIGN §2: prefix configurable, default none).
// The zero value uses no prefix.
type Subjects struct {
	// Prefix, when set, is prepended with a dot: "acme" gives "acme.telemetry.<svc>.<comp>".
	Prefix string
}

func (s Subjects) p(rest string) string {
	if s.Prefix == "" {
		return rest
	}
	return s.Prefix + "." + rest
}

// Telemetry is telemetry.<svc>.<comp>.
func (s Subjects) Telemetry(svc, comp string) string { return s.p("telemetry." + svc + "." + comp) }

// TelemetryAll matches every telemetry subject.
func (s Subjects) TelemetryAll() string { return s.p("telemetry.>") }

// Deploy is deploy.<svc>.
func (s Subjects) Deploy(svc string) string { return s.p("deploy." + svc) }

// DeployAll matches every deploy subject.
func (s Subjects) DeployAll() string { return s.p("deploy.>") }

// Anomaly is anomaly.<svc>.<comp>.
func (s Subjects) Anomaly(svc, comp string) string { return s.p("anomaly." + svc + "." + comp) }

// AnomalyAll matches every anomaly subject.
func (s Subjects) AnomalyAll() string { return s.p("anomaly.>") }

// Decision is decision.<svc>.
func (s Subjects) Decision(svc string) string { return s.p("decision." + svc) }

// DecisionAll matches every decision subject.
func (s Subjects) DecisionAll() string { return s.p("decision.>") }

// RollbackCmd is rollback.cmd.<svc>.
func (s Subjects) RollbackCmd(svc string) string { return s.p("rollback.cmd." + svc) }

// RollbackAck is rollback.ack.<svc>.
func (s Subjects) RollbackAck(svc string) string { return s.p("rollback.ack." + svc) }

// RollbackAll matches every command and ack subject.
func (s Subjects) RollbackAll() string { return s.p("rollback.>") }

// Approval is approval.<svc>: answers to recommend decisions, stored in the DECISIONS stream.
func (s Subjects) Approval(svc string) string { return s.p("approval." + svc) }

// ApprovalAll matches every approval subject.
func (s Subjects) ApprovalAll() string { return s.p("approval.>") }

// Rejected is rejected.<stage>.
func (s Subjects) Rejected(stage string) string { return s.p("rejected." + stage) }

// RejectedAll matches every rejected subject.
func (s Subjects) RejectedAll() string { return s.p("rejected.>") }

// ActiveKey is the scalpel_active key of a target: svc.comp[.block].
func ActiveKey(svc, comp, block string) string {
	k := svc
	if comp != "" {
		k += "." + comp
		if block != "" {
			k += "." + block
		}
	}
	return k
}

// BlockObjectName is the scalpel_blocks object name: <svc>/<comp>[/<block>]@<version>.
func BlockObjectName(svc, comp, block, version string) string {
	n := svc + "/" + comp
	if block != "" {
		n += "/" + block
	}
	return n + "@" + version
}
