// Package replay re-runs scalpel's detect and decide stages over recorded events, for incident
// analysis: what happened, and what another config would have done.
//
// It owns the record format of incident bundles (NDJSON, one Record a line), the Sources that yield
// records in order (a JetStream server or a bundle file), Run — the dry-run of detect + decide over
// event time that never actuates — the Timeline it returns, the Diff against the decisions that were
// recorded live, and the self-contained HTML report.
//
// Determinism: the detector and engine are built exactly as the live pipeline builds them
// (pipeline.NewDetector, pipeline.NewEngine), telemetry is fed in stream order, and the engine's
// other inputs — deploys, approvals, rollback acks and actuation failures — are merged with the
// detected anomalies in event time, kinds at equal times in the order live decide rebuilds its engine
// on takeover (deploys, anomalies, approvals, acks, actuation failures; a resolution counts at its
// resolved_at). An actuation failure happens when the rejected decision was stored, never before the
// decision, as live decide takes it. With the config that was live and the full history, the
// replayed anomalies and decisions are byte-identical to the recorded ones.
//
// It must not publish anything, write to any KV bucket, or call an actuator.
package replay
