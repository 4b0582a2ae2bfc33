// Package telemetry is the Go client a service embeds to publish its telemetry to scalpel: a
// Publisher that batches events and publishes them asynchronously to JetStream
// (telemetry.<svc>.<comp>), optionally aggregated per second so that a busy service sends one
// event per component and block per interval instead of one per request; net/http middleware that
// records each endpoint's latency and errors by category; Observe for code blocks; and, with
// WithResourceSampling, the process's cpu and resident memory as a scraper would send them.
//
// It never blocks or crashes the service: recording takes a short mutex and copies a few words;
// what cannot be buffered (NATS away, buffer full) is dropped and counted in Stats.
//
// It lives in a sub-package of ingest, not in ingest itself, because ingest's consumer side pulls
// in Prometheus and scalpel's internal packages; this one imports only schemas, nats.go (and its
// jetstream package) and the standard library, so embedding it costs little.
package telemetry
