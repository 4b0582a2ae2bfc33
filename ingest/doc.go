// Package ingest owns the way telemetry enters scalpel: the JetStream topology every stage relies on
// (streams, KV buckets, object store), the hot-path decoder and validator of TelemetryEvent messages,
// the durable pull consumer that hands decoded batches to the next stage, and the routing of bad input
// to rejected.ingest.
//
// ingest imports schemas and internal plumbing only; it knows nothing of detect, decide or actuate.
// The next stage is reached through the small Handler interface.
package ingest
