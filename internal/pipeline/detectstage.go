package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/schemas"
)

// DetectStage is the ingest handler that drives the detector: it observes each batch, advances the
// event-time watermark, and hands the anomalies that closed buckets produce to emit. ingest acks a
// batch only after HandleTelemetry returns, so an anomaly is durable before the telemetry that caused
// it is acknowledged.
type DetectStage struct {
	mu  sync.Mutex
	det *detect.Detector
	// seq is the stream sequence of the last telemetry the detector holds with its anomalies
	// stored (ingest.BatchLastSeq): a checkpoint of det is valid "through seq". 0 = unknown.
	seq uint64
	// unsent holds the anomalies of a batch the detector observed but emit failed for, and
	// unsentSeq that batch's sequence: ingest offers the same batch again, and observing it twice
	// would count its events twice, so the retry re-emits these instead. A checkpoint is never
	// taken while they are pending: it would hold the batch's state without its anomalies.
	unsent    []schemas.Anomaly
	unsentSeq uint64
	failed    bool // a batch failed mid-way and was not re-offered with a known sequence
	emit      func(context.Context, []schemas.Anomaly) error
	// afterBatch, when set, lets event time pass downstream (decide's verify periods and approval
	// timeouts) once the batch's anomalies are stored.
	afterBatch func(context.Context, time.Time)
	// ckpt, when set, checkpoints the detector after a batch, at most once per its interval.
	ckpt *checkpointer
	// fence, when set, is asked before each batch whether this process may still handle
	// telemetry (it holds the ingest lease); an error fails the batch, which ingest retries.
	fence func() error
	// heardTS is the newest event time of the telemetry handled (clock ticks aside), and heardAt
	// the wall-clock time telemetry last came in: what clock ticks are made from (ticks.go).
	heardTS, heardAt time.Time
}

// NewDetectStage wraps a detector; emit may be nil to discard anomalies (benchmarks).
func NewDetectStage(det *detect.Detector, emit func(context.Context, []schemas.Anomaly) error) *DetectStage {
	return &DetectStage{det: det, emit: emit}
}

// HandleTelemetry implements ingest.Handler.
func (s *DetectStage) HandleTelemetry(ctx context.Context, events []schemas.TelemetryEvent) error {
	if s.fence != nil {
		if err := s.fence(); err != nil {
			return err
		}
	}
	seq, known := ingest.BatchLastSeq(ctx)
	s.mu.Lock()
	var anomalies []schemas.Anomaly
	if known && s.unsent != nil && s.unsentSeq == seq {
		anomalies = s.unsent // the same batch again: already observed
	} else {
		heard := false
		for i := range events {
			ev := &events[i]
			if !ev.IsClockTick() {
				heard = true
				if ev.TS.After(s.heardTS) {
					s.heardTS = ev.TS
				}
			}
			s.det.Observe(ev)
		}
		if heard {
			s.heardAt = time.Now() // clock ticks only: wall-clock time, never detection's
		}
		anomalies = s.det.Advance(s.det.Watermark())
	}
	wm := s.det.Watermark()
	s.unsent, s.unsentSeq = nil, 0
	s.mu.Unlock()
	if len(anomalies) > 0 && s.emit != nil {
		if err := s.emit(ctx, anomalies); err != nil {
			s.mu.Lock()
			if known {
				s.unsent, s.unsentSeq = anomalies, seq
			} else {
				s.failed = true
			}
			s.mu.Unlock()
			return err
		}
	}
	if s.afterBatch != nil {
		s.afterBatch(ctx, wm)
	}
	if known {
		s.mu.Lock()
		s.seq = max(s.seq, seq)
		s.mu.Unlock()
		if s.ckpt != nil {
			s.ckpt.afterBatch(s)
		}
	}
	return nil
}

// SeriesCount reports how many series the detector tracks.
func (s *DetectStage) SeriesCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.det.SeriesCount()
}

// heard returns the newest event time of the telemetry handled and when telemetry last came in
// (wall clock); ts is zero before any.
func (s *DetectStage) heard() (ts, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.heardTS, s.heardAt
}

// hearFrom starts heard's reckoning at now, from the event time the detector holds: a process
// that starts consuming, or takes over, counts the quiet from then.
func (s *DetectStage) hearFrom(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if wm := s.det.Watermark(); !wm.IsZero() {
		s.heardTS = wm.Add(time.Duration(s.det.Config().AllowedLateness))
	} else {
		s.heardTS = time.Time{}
	}
	s.heardAt = now
}

// Watermark is the detector's event-time watermark (zero before any event).
func (s *DetectStage) Watermark() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.det.Watermark()
}

// droppedCollector exports scalpel_detect_dropped_events_total: the events the detector did not
// detect on, by reason, read under one lock per scrape. The counts are the detector's own, which
// its checkpoint keeps, so they carry on across a restart.
type droppedCollector struct {
	stage *DetectStage
	desc  *prometheus.Desc
}

func newDroppedCollector(stage *DetectStage) droppedCollector {
	return droppedCollector{stage: stage, desc: prometheus.NewDesc("scalpel_detect_dropped_events_total",
		"Telemetry events the detector did not detect on, by reason: late (their bucket had closed), invalid (no service, component, version or time), series_limit (their series would have exceeded max_series).",
		[]string{"reason"}, nil)}
}

func (c droppedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c droppedCollector) Collect(ch chan<- prometheus.Metric) {
	c.stage.mu.Lock()
	det := c.stage.det
	counts := [...]uint64{det.LateEvents(), det.InvalidEvents(), det.OverLimitEvents()}
	c.stage.mu.Unlock()
	for i, reason := range [...]string{"late", "invalid", "series_limit"} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(counts[i]), reason)
	}
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

// reset replaces the detector (a fresh one, or one restored from a checkpoint) and says how far in
// the stream it reaches. Anomalies of a batch that failed go with the detector that made them.
func (s *DetectStage) reset(det *detect.Detector, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.det, s.seq = det, seq
	s.unsent, s.unsentSeq, s.failed = nil, 0, false
}

// setSeq records how far in the stream the detector reaches after a restore replayed telemetry.
func (s *DetectStage) setSeq(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq = seq
}

// snapshot is a copy of the detector's state and where it stands.
type snapshot struct {
	bytes     []byte
	seq       uint64    // the telemetry stream sequence the state holds
	series    int       // series tracked
	watermark time.Time // the detector's watermark (event time)
}

// snapshot copies the detector's state and the sequence it reaches, under the lock so that the two
// agree. ok is false when there is nothing a restart could use: no known sequence, nothing new since
// since (a checkpoint through since exists), or a batch whose anomalies are not stored.
func (s *DetectStage) snapshot(since uint64) (snap snapshot, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seq == 0 || s.seq <= since || s.unsent != nil || s.failed {
		return snapshot{}, false, nil
	}
	b, err := s.det.Snapshot()
	if err != nil {
		return snapshot{}, false, err
	}
	return snapshot{bytes: b, seq: s.seq, series: s.det.SeriesCount(), watermark: s.det.Watermark()}, true, nil
}
