// Package decide is scalpel's decision engine: it turns anomalies into decisions a person can read at
// 3 a.m. and an actuator can execute.
//
// It owns the catalog (manifests per service in the scalpel_catalog KV bucket), the version history
// of every application, component and block (from DeployEvents and from versions observed in
// anomalies), rollback windows, incidents, policy, guards, the expansion of a decision into an
// ordered plan, and the Decision audit records published on decision.<svc>.
//
// An anomaly runs through a chain of small stages over one Case (Alertmanager-style), in this
// order: attribute, policy, target, guards, group, expand, emit.
//
//   - attribute finds the manifest, the component, and the deploy that changed it, and whether that
//     deploy's rollback window is open;
//   - policy decides what kind of answer the anomaly deserves (none for client errors, hold when the
//     deploy did not change the component, recommend outside the window, rollback inside it);
//   - target picks the granularity (fine → the block the evidence names, medium → the component,
//     coarse → the application) and the from/to versions from the version history;
//   - guards may stop an automatic action (blast radius, cooldown, budget, approvals — the seam);
//   - group folds the anomaly into its incident, so one burst yields one decision, not one per event;
//   - expand turns the targets into an ordered plan (dependency edges come later through the seam);
//   - emit stamps the deterministic id and records the decision on its incident.
//
// A firing anomaly of a version no deploy has announced yet waits up to deploy_skew of event time for
// the deploy that may explain it (pipelines announce a rollout as it ends, after its first requests):
// HandleDeploy decides it when that deploy arrives, Advance when the watermark passes the deadline,
// so the decision is the same whichever of the two reached decide first.
//
// The Engine is a pure function of event time: it never reads the wall clock, so live serving and
// replay produce byte-identical decisions. It is not safe for concurrent use: one goroutine (the
// single active decider) drives it.
//
// decide imports schemas and nats.go only; it never imports another stage or cmd.
package decide
