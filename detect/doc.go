// Package detect owns the detect stage: it turns TelemetryEvents into Anomalies.
//
// Events are keyed by series (service, component, block, version, cohort) and folded into 1 s
// event-time buckets. When the watermark passes a bucket, the bucket is closed and every test of its
// series is updated once:
//
//   - error rate per category: a two-sample sequential probability ratio test against the
//     baseline's errors (a mixture of three alternatives, from the minimum effect to a gross
//     one), in which H0's rate is predicted from both sides pooled, so the baseline's own
//     sampling error is part of the test rather than a bound around it; its false-alarm rate is
//     bounded under continuous monitoring over a watch of any length (sprt.go);
//   - latency: the fraction of requests above the baseline's quantiles (p50, p90, p99.5, p99.9) is
//     tested by the same sequential test, where the alternative is "every latency scaled by the
//     minimum effect" (or by the gross factor). p99.9 catches a regression of the tail alone: a
//     slow path twice as slow doubles the share above p99 but multiplies the share above p99.9
//     about fifteenfold. A quantile is tested only when the baseline saw enough requests above
//     it (LatencyMinTailCount). When a test fires, a Mann-Whitney U test with a Hodges-Lehmann
//     shift and confidence interval on the DDSketches of both sides explains the shift
//     (mannwhitney.go);
//   - memory and throughput: a robust baseline (median/MAD, or EWMA for throughput) and CUSUM
//     (cusum.go); memory against the previous version's recent level, or the series' own, each
//     only once it has levelled off (loadFit.levelled);
//   - cpu, by the same CUSUM at the load the series serves: a new version's against the most its
//     previous version used at that load (a line of its cpu over its requests, loadFit), a
//     canary's against its cohort's in the same bucket, and a series no deploy changed against
//     its own line.
//
// Baselines (baseline.go) are inferred from telemetry: when a new version appears on a line
// (service, component, block, cohort), the previous version's recent history is frozen as its
// baseline; a canary cohort is compared with the concurrent baseline cohort. A series that has
// served for OwnProfileWarmup is also compared with its own long-run profile (profile.go): its
// error counts and latency sketch decayed with a long half-life, frozen while it fires, tested
// by the same error and latency tests. That is the baseline for regressions no deploy explains
// (a dependency broke, a flag flipped, a database got slow); its anomalies say
// BaselineVersion "own profile (1h)" and explain themselves in Evidence.Notes.
//
// Everything is a function of event time: the package never reads the wall clock, so a replay of
// the same events with the same config yields byte-identical anomalies. It does no I/O: wiring it
// to NATS is the pipeline's job.
package detect
