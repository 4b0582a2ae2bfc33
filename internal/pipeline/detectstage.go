package pipeline

import (
	"context"
	"sync"

	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/schemas"
)

// DetectStage is the ingest handler that drives the detector: it observes each batch, advances the
// event-time watermark, and hands the anomalies that closed buckets produce to emit. ingest acks a
// batch only after HandleTelemetry returns, so an anomaly is durable before the telemetry that caused
// it is acknowledged.
type DetectStage struct {
	mu   sync.Mutex
	det  *detect.Detector
	emit func(context.Context, []schemas.Anomaly) error
}

// NewDetectStage wraps a detector; emit may be nil to discard anomalies (benchmarks).
func NewDetectStage(det *detect.Detector, emit func(context.Context, []schemas.Anomaly) error) *DetectStage {
	return &DetectStage{det: det, emit: emit}
}

// HandleTelemetry implements ingest.Handler.
func (s *DetectStage) HandleTelemetry(ctx context.Context, events []schemas.TelemetryEvent) error {
	s.mu.Lock()
	for i := range events {
		s.det.Observe(&events[i])
	}
	anomalies := s.det.Advance(s.det.Watermark())
	s.mu.Unlock()
	if len(anomalies) == 0 || s.emit == nil {
		return nil
	}
	return s.emit(ctx, anomalies)
}

// SeriesCount reports how many series the detector tracks.
func (s *DetectStage) SeriesCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.det.SeriesCount()
}
