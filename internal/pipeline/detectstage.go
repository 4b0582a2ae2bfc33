package pipeline

import (
	"context"
	"sync"
	"time"

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
	// afterBatch, when set, lets event time pass downstream (decide's verify periods and approval
	// timeouts) once the batch's anomalies are stored.
	afterBatch func(context.Context, time.Time)
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
	wm := s.det.Watermark()
	anomalies := s.det.Advance(wm)
	s.mu.Unlock()
	if len(anomalies) > 0 && s.emit != nil {
		if err := s.emit(ctx, anomalies); err != nil {
			return err
		}
	}
	if s.afterBatch != nil {
		s.afterBatch(ctx, wm)
	}
	return nil
}

// SeriesCount reports how many series the detector tracks.
func (s *DetectStage) SeriesCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.det.SeriesCount()
}

// restore feeds events the detector had already accounted before a restart and discards what they
// produce: their anomalies were published the first time.
func (s *DetectStage) restore(events []schemas.TelemetryEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range events {
		s.det.Observe(&events[i])
	}
	s.det.Advance(s.det.Watermark())
}
