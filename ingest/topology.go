package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/schemas"
)

// ErrInvalidConfig is wrapped by every configuration validation error of this package.
var ErrInvalidConfig = errors.New("invalid config")

// Day is 24 hours; retention defaults are written in days because that is how operators think of them.
const Day = 24 * time.Hour

// TopologyConfig sizes the streams, KV buckets and object store scalpel needs (DESIGN §2). Every field
// has a default (DefaultTopologyConfig); a zero MaxBytes means "no byte limit, bounded by age only".
//
// Byte limits default to none on purpose: nats-server reserves a stream's MaxBytes against the
// account's storage up front, so a generous default would make EnsureTopology fail on small disks.
type TopologyConfig struct {
	// Replicas of every stream, bucket and object store (1 for a single server, 3 for a cluster).
	Replicas int `json:"replicas" yaml:"replicas"`
	// Duplicates is the dedupe window of every stream: a publish retried with the same Nats-Msg-Id
	// within it is stored once, so a retried rollback command is never a second rollback.
	Duplicates schemas.Duration `json:"duplicates" yaml:"duplicates"`

	// TelemetryMaxAge bounds how long raw telemetry is kept (default 7 days); replay reaches this far back.
	TelemetryMaxAge schemas.Duration `json:"telemetry_max_age" yaml:"telemetry_max_age"`
	// TelemetryMaxBytes bounds the TELEMETRY stream's size; the oldest telemetry is discarded first.
	// 0 = no byte limit (default).
	TelemetryMaxBytes int64 `json:"telemetry_max_bytes" yaml:"telemetry_max_bytes"`
	// TelemetryMaxMsgSize is the largest telemetry message the stream stores (default 0 = the
	// server's max_payload). It is deliberately not the decoder's limit: a message the stream refused
	// would vanish without a trace for a publisher that does not wait for acks (core NATS), whereas
	// one the stream stores and ingest finds too large goes to rejected.ingest with its reason.
	TelemetryMaxMsgSize int32 `json:"telemetry_max_msg_size" yaml:"telemetry_max_msg_size"`

	// DeploysMaxAge bounds the deploy history (default 365 days): version history for rollback targets.
	DeploysMaxAge schemas.Duration `json:"deploys_max_age" yaml:"deploys_max_age"`
	// AnomaliesMaxAge bounds the anomaly history (default 90 days).
	AnomaliesMaxAge schemas.Duration `json:"anomalies_max_age" yaml:"anomalies_max_age"`
	// DecisionsMaxAge bounds the decision audit trail (default 365 days).
	DecisionsMaxAge schemas.Duration `json:"decisions_max_age" yaml:"decisions_max_age"`
	// RollbacksMaxAge bounds commands and acks (default 90 days).
	RollbacksMaxAge schemas.Duration `json:"rollbacks_max_age" yaml:"rollbacks_max_age"`
	// RejectedMaxAge bounds rejected input kept for inspection (default 7 days).
	RejectedMaxAge schemas.Duration `json:"rejected_max_age" yaml:"rejected_max_age"`
	// RejectedMaxBytes bounds the REJECTED stream so a misbehaving producer cannot fill the disk with
	// garbage; 0 = no byte limit (default).
	RejectedMaxBytes int64 `json:"rejected_max_bytes" yaml:"rejected_max_bytes"`

	// ActiveHistory is how many past values of each scalpel_active key are kept (default 10, at least
	// 10, at most 64): the recent switches of a target are its rollback trail.
	ActiveHistory int `json:"active_history" yaml:"active_history"`
	// CatalogHistory is how many past manifests per service scalpel_catalog keeps (default 10, 1..64).
	CatalogHistory int `json:"catalog_history" yaml:"catalog_history"`

	// TelemetryPartitions is how many partitions the telemetry stream is cut into by service
	// (ingest.Config.Partitions, which sets it: the consumers and the stream must agree).
	TelemetryPartitions int `json:"-" yaml:"-"`
}

// DefaultTopologyConfig returns the documented defaults.
func DefaultTopologyConfig() TopologyConfig {
	return TopologyConfig{
		Replicas:        1,
		Duplicates:      schemas.Duration(2 * time.Minute),
		TelemetryMaxAge: schemas.Duration(7 * Day),
		DeploysMaxAge:   schemas.Duration(365 * Day),
		AnomaliesMaxAge: schemas.Duration(90 * Day),
		DecisionsMaxAge: schemas.Duration(365 * Day),
		RollbacksMaxAge: schemas.Duration(90 * Day),
		RejectedMaxAge:  schemas.Duration(7 * Day),
		ActiveHistory:   10,
		CatalogHistory:  10,
	}
}

// Validate reports the first bad field.
func (c TopologyConfig) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: topology: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	switch {
	case c.Replicas < 1 || c.Replicas > 5:
		return bad("replicas must be 1..5, got %d", c.Replicas)
	case c.Duplicates <= 0:
		return bad("duplicates must be > 0 (every stream dedupes by Nats-Msg-Id), got %s", time.Duration(c.Duplicates))
	case c.TelemetryMaxAge < 0 || c.DeploysMaxAge < 0 || c.AnomaliesMaxAge < 0 ||
		c.DecisionsMaxAge < 0 || c.RollbacksMaxAge < 0 || c.RejectedMaxAge < 0:
		return bad("max ages must be >= 0 (0 = keep forever)")
	case c.TelemetryMaxBytes < 0 || c.RejectedMaxBytes < 0:
		return bad("max bytes must be >= 0 (0 = no byte limit)")
	case c.TelemetryMaxMsgSize < 0:
		return bad("telemetry_max_msg_size must be >= 0 (0 = server limit), got %d", c.TelemetryMaxMsgSize)
	case c.ActiveHistory < 10 || c.ActiveHistory > 64:
		return bad("active_history must be 10..64, got %d", c.ActiveHistory)
	case c.CatalogHistory < 1 || c.CatalogHistory > 64:
		return bad("catalog_history must be 1..64, got %d", c.CatalogHistory)
	}
	// The window must fit inside the shortest retention, or the server refuses the stream.
	for _, age := range []schemas.Duration{c.TelemetryMaxAge, c.DeploysMaxAge, c.AnomaliesMaxAge,
		c.DecisionsMaxAge, c.RollbacksMaxAge, c.RejectedMaxAge} {
		if age > 0 && c.Duplicates > age {
			return bad("duplicates (%s) must not exceed any max age (%s)", time.Duration(c.Duplicates), time.Duration(age))
		}
	}
	return nil
}

// Streams returns the stream configurations EnsureTopology creates, in creation order.
func (c TopologyConfig) Streams(subj schemas.Subjects) []jetstream.StreamConfig {
	mk := func(name, desc, subject string, maxAge schemas.Duration, maxBytes int64) jetstream.StreamConfig {
		mb := maxBytes
		if mb == 0 {
			mb = -1
		}
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{subject},
			Retention:   jetstream.LimitsPolicy,
			MaxMsgs:     -1,
			MaxBytes:    mb,
			MaxAge:      time.Duration(maxAge),
			Discard:     jetstream.DiscardOld,
			Storage:     jetstream.FileStorage,
			Replicas:    c.Replicas,
			Duplicates:  time.Duration(c.Duplicates),
			// Direct gets let `scalpel watch` and the API read single messages without a consumer.
			AllowDirect: true,
		}
	}
	tel := mk(schemas.StreamTelemetry, "scalpel: telemetry of watched services", subj.TelemetryAll(), c.TelemetryMaxAge, c.TelemetryMaxBytes)
	tel.MaxMsgSize = c.TelemetryMaxMsgSize
	tel.SubjectTransform = partitionTransform(subj, c.TelemetryPartitions)
	return []jetstream.StreamConfig{
		tel,
		mk(schemas.StreamDeploys, "scalpel: deploy events", subj.DeployAll(), c.DeploysMaxAge, 0),
		mk(schemas.StreamAnomalies, "scalpel: anomalies found by detect", subj.AnomalyAll(), c.AnomaliesMaxAge, 0),
		withSubjects(mk(schemas.StreamDecisions, "scalpel: decision audit records and approvals", subj.DecisionAll(), c.DecisionsMaxAge, 0), subj.ApprovalAll()),
		mk(schemas.StreamRollbacks, "scalpel: rollback commands and acks", subj.RollbackAll(), c.RollbacksMaxAge, 0),
		mk(schemas.StreamRejected, "scalpel: rejected input with reasons", subj.RejectedAll(), c.RejectedMaxAge, c.RejectedMaxBytes),
	}
}

// withSubjects adds subjects to a stream: approvals live next to the decisions they answer.
func withSubjects(sc jetstream.StreamConfig, more ...string) jetstream.StreamConfig {
	sc.Subjects = append(sc.Subjects, more...)
	return sc
}

// defaultTimeout bounds topology calls when the caller's context has no deadline.
const defaultTimeout = 30 * time.Second

// EnsureTopology creates or updates every stream, KV bucket and object store of DESIGN §2. It is
// idempotent: running it against an existing topology with the same config changes nothing, and with a
// changed config applies the mutable changes (retention, limits). Immutable changes (storage type, a
// different subject prefix overlapping another stream) fail with the server's error.
func EnsureTopology(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects, cfg TopologyConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	for _, sc := range cfg.Streams(subj) {
		if err := checkRepartition(ctx, js, &sc); err != nil {
			return err
		}
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("ensure stream %s (%s): %w", sc.Name, sc.Subjects[0], err)
		}
	}
	// KV and object-store streams keep the duplicate window nats.go and the server give them (2m):
	// their writes are idempotent by key (and CAS), so the window matters less there.
	kvs := []jetstream.KeyValueConfig{
		{Bucket: schemas.BucketCatalog, Description: "scalpel: catalog manifests per service",
			History: uint8(cfg.CatalogHistory), Storage: jetstream.FileStorage, Replicas: cfg.Replicas},
		{Bucket: schemas.BucketActive, Description: "scalpel: desired active version per svc.comp[.block]",
			History: uint8(cfg.ActiveHistory), Storage: jetstream.FileStorage, Replicas: cfg.Replicas},
		{Bucket: schemas.BucketState, Description: "scalpel: decide lease and decide state",
			History: 1, Storage: jetstream.FileStorage, Replicas: cfg.Replicas},
	}
	for _, kc := range kvs {
		if _, err := js.CreateOrUpdateKeyValue(ctx, kc); err != nil {
			return fmt.Errorf("ensure kv %s: %w", kc.Bucket, err)
		}
	}
	objs := []jetstream.ObjectStoreConfig{
		{Bucket: schemas.ObjectBlocks, Description: "scalpel: versioned block and function sources, artefact references",
			Storage: jetstream.FileStorage, Replicas: cfg.Replicas},
		// Detector checkpoints: a detector tracking thousands of series snapshots to megabytes,
		// beyond what a KV value may hold (the server's max_payload, 1 MiB by default), so they live
		// in an object store, which chunks them. It is named scalpel_state like the KV bucket of
		// decision leases: both are "state that survives a restart", and the names cannot collide
		// because a KV bucket is the stream KV_<name> and an object store OBJ_<name>. An object
		// store keeps one version per object name, so a checkpoint replaces the previous one.
		{Bucket: schemas.ObjectState, Description: "scalpel: detector checkpoints",
			Storage: jetstream.FileStorage, Replicas: cfg.Replicas},
	}
	for _, oc := range objs {
		if _, err := js.CreateOrUpdateObjectStore(ctx, oc); err != nil {
			return fmt.Errorf("ensure object store %s: %w", oc.Bucket, err)
		}
	}
	return nil
}
