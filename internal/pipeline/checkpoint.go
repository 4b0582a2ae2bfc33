package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/schemas"
)

// A detector checkpoint is one object in the scalpel_state object store: its bytes are
// detect.Snapshot's, untouched, and its metadata says which telemetry it holds. The object store
// checks the bytes against their SHA-256 digest on every read, and detect.Restore checks they were
// written under the same detect config, so the metadata only has to place the checkpoint in the
// stream:
//
//	telemetry-stream          the stream ingest consumes (TELEMETRY)
//	telemetry-stream-created  when that stream was created (RFC 3339): a stream deleted and made
//	                          anew restarts its sequences, and an old checkpoint must not skip them
//	telemetry-seq             the stream sequence through which the detector holds the telemetry
//	durable, filter           the ingest consumer and its filter subject the telemetry came through
//	series                    how many series the detector tracked (for people reading the object)
const (
	metaStream        = "telemetry-stream"
	metaStreamCreated = "telemetry-stream-created"
	metaSeq           = "telemetry-seq"
	metaDurable       = "durable"
	metaFilter        = "filter"
	metaSeries        = "series"
)

// checkpointObjectName is the object holding the detector checkpoint of the ingest consumer
// durable: "detect" for the default consumer, "detect.<durable>" for another, so that processes
// consuming different partitions of telemetry under different durables keep one checkpoint each.
func checkpointObjectName(durable string) string {
	if durable == "" || durable == ingest.DefaultConfig().Durable {
		return "detect"
	}
	return "detect." + durable
}

// checkpointPutTimeout bounds one checkpoint write.
const checkpointPutTimeout = 30 * time.Second

// checkpointMetrics are the checkpoint's figures, next to scalpel_detect_series.
type checkpointMetrics struct {
	bytes    prometheus.Gauge
	seq      prometheus.Gauge
	seconds  *prometheus.HistogramVec
	written  prometheus.Counter
	failures prometheus.Counter
}

func newCheckpointMetrics() checkpointMetrics {
	return checkpointMetrics{
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "scalpel_detect_checkpoint_bytes",
			Help: "Size of the last detector checkpoint written to scalpel_state."}),
		seq: prometheus.NewGauge(prometheus.GaugeOpts{Name: "scalpel_detect_checkpoint_seq",
			Help: "Telemetry stream sequence the last detector checkpoint holds the state through."}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "scalpel_detect_checkpoint_seconds",
			Help:    "Time to take a detector checkpoint, by phase: snapshot (under the detector's lock, on the hot path) and put (in the background).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9)}, []string{"phase"}),
		written: prometheus.NewCounter(prometheus.CounterOpts{Name: "scalpel_detect_checkpoints_total",
			Help: "Detector checkpoints written to scalpel_state."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "scalpel_detect_checkpoint_failures_total",
			Help: "Detector checkpoints that could not be taken or written; the next interval tries again."}),
	}
}

func (m checkpointMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.bytes, m.seq, m.seconds, m.written, m.failures}
}

// checkpointer writes detector checkpoints: after a batch at most once per interval, and once more
// when ingest has drained. The snapshot is taken on the ingest worker, between batches, under the
// stage's lock; the put runs on its own goroutine, one at a time, so a slow object store never holds
// up telemetry — while a put is in flight, later batches do not take another snapshot.
type checkpointer struct {
	obj      jetstream.ObjectStore
	name     string
	interval time.Duration
	meta     map[string]string // the placing fields; telemetry-seq and series are set per put
	log      *slog.Logger
	m        checkpointMetrics

	mu      sync.Mutex
	busy    bool      // a put is in flight
	lastTry time.Time // when the last snapshot was taken (or attempted)
	lastSeq uint64    // the sequence of the last checkpoint stored
	wg      sync.WaitGroup
}

// afterBatch takes a checkpoint if the interval has passed since the last one and none is being
// written. It never fails the batch: a failure is logged and retried next interval.
func (c *checkpointer) afterBatch(s *DetectStage) {
	now := time.Now()
	c.mu.Lock()
	if c.busy || now.Sub(c.lastTry) < c.interval {
		c.mu.Unlock()
		return
	}
	c.busy, c.lastTry = true, now
	since := c.lastSeq
	c.mu.Unlock()

	snap, seq, series, ok := c.take(s, since)
	if !ok {
		c.done()
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.done()
		ctx, cancel := context.WithTimeout(context.Background(), checkpointPutTimeout)
		defer cancel()
		c.put(ctx, snap, seq, series)
	}()
}

func (c *checkpointer) done() {
	c.mu.Lock()
	c.busy = false
	c.mu.Unlock()
}

// final waits for a put in flight, then writes the state ingest left the detector in, unless the
// last checkpoint already holds it. ingest must have stopped: no batch is being handled.
func (c *checkpointer) final(ctx context.Context, s *DetectStage) {
	c.wg.Wait()
	c.mu.Lock()
	since := c.lastSeq
	c.mu.Unlock()
	snap, seq, series, ok := c.take(s, since)
	if !ok {
		s.mu.Lock()
		pending := s.unsent != nil || s.failed
		s.mu.Unlock()
		if pending {
			c.log.Warn("detector checkpoint on stop skipped: a batch's anomalies were never stored; the last checkpoint stands",
				"stage", "detect", "checkpoint_seq", since)
		}
		return
	}
	ctx, cancel := context.WithTimeout(ctx, checkpointPutTimeout)
	defer cancel()
	c.put(ctx, snap, seq, series)
}

// take snapshots the stage's detector; ok is false when there is nothing new to write or the
// snapshot failed (logged and counted).
func (c *checkpointer) take(s *DetectStage, since uint64) (snap []byte, seq uint64, series int, ok bool) {
	began := time.Now()
	snap, seq, series, ok, err := s.snapshot(since)
	if err != nil {
		c.m.failures.Inc()
		c.log.Warn("detector checkpoint: snapshot failed; retrying next interval", "stage", "detect", "err", err)
		return nil, 0, 0, false
	}
	if ok {
		c.m.seconds.WithLabelValues("snapshot").Observe(time.Since(began).Seconds())
	}
	return snap, seq, series, ok
}

// put stores one checkpoint, replacing the previous one.
func (c *checkpointer) put(ctx context.Context, snap []byte, seq uint64, series int) {
	began := time.Now()
	meta := make(map[string]string, len(c.meta)+2)
	for k, v := range c.meta {
		meta[k] = v
	}
	meta[metaSeq] = strconv.FormatUint(seq, 10)
	meta[metaSeries] = strconv.Itoa(series)
	_, err := c.obj.Put(ctx, jetstream.ObjectMeta{
		Name:        c.name,
		Description: "scalpel detector checkpoint (detect.Snapshot); restored by serve on start",
		Metadata:    meta,
	}, bytes.NewReader(snap))
	took := time.Since(began)
	if err != nil {
		c.m.failures.Inc()
		c.log.Warn("detector checkpoint: write failed; retrying next interval", "stage", "detect",
			"object", schemas.ObjectState+"/"+c.name, "seq", seq, "bytes", len(snap), "err", err)
		return
	}
	c.m.seconds.WithLabelValues("put").Observe(took.Seconds())
	c.m.written.Inc()
	c.m.bytes.Set(float64(len(snap)))
	c.m.seq.Set(float64(seq))
	c.mu.Lock()
	c.lastSeq = max(c.lastSeq, seq)
	c.mu.Unlock()
	c.log.Debug("detector checkpoint written", "stage", "detect", "seq", seq, "series", series,
		"bytes", len(snap), "took", took.Round(time.Millisecond))
}

// checkpoint is a checkpoint read back: the detector it restores and where it stands.
type checkpoint struct {
	det     *detect.Detector
	seq     uint64
	bytes   int
	modTime time.Time
}

// errNoCheckpoint says there is no checkpoint to restore from; errUnusableCheckpoint wraps the
// reasons one is refused. Either way serve falls back to replaying detect_restore.
var (
	errNoCheckpoint       = errors.New("no detector checkpoint")
	errUnusableCheckpoint = errors.New("detector checkpoint unusable")
)

// loadCheckpoint reads the checkpoint and restores a detector from it. It returns errNoCheckpoint
// when there is none, an error wrapping errUnusableCheckpoint (and detect.ErrSnapshotConfig or
// detect.ErrSnapshotCorrupt where they apply) when it cannot be used, and other errors for I/O.
func loadCheckpoint(ctx context.Context, obj jetstream.ObjectStore, name string, want map[string]string,
	stream *jetstream.StreamInfo, cfg config.Config, log *slog.Logger) (*checkpoint, error) {
	res, err := obj.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, errNoCheckpoint
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", schemas.ObjectState, name, err)
	}
	defer res.Close()
	info, err := res.Info()
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", schemas.ObjectState, name, err)
	}
	snap, err := io.ReadAll(res)
	if err != nil {
		// A digest mismatch lands here: the stored bytes are damaged.
		return nil, fmt.Errorf("%w: read %s/%s: %w", errUnusableCheckpoint, schemas.ObjectState, name, err)
	}
	for _, k := range []string{metaStream, metaStreamCreated, metaDurable, metaFilter} {
		if got := info.Metadata[k]; got != want[k] {
			return nil, fmt.Errorf("%w: taken with %s %q, this process has %q", errUnusableCheckpoint, k, got, want[k])
		}
	}
	seq, err := strconv.ParseUint(info.Metadata[metaSeq], 10, 64)
	if err != nil || seq == 0 {
		return nil, fmt.Errorf("%w: bad %s %q", errUnusableCheckpoint, metaSeq, info.Metadata[metaSeq])
	}
	if last := stream.State.LastSeq; seq > last {
		return nil, fmt.Errorf("%w: it holds telemetry through sequence %d, beyond the stream's last (%d)", errUnusableCheckpoint, seq, last)
	}
	det, err := detect.Restore(cfg.Detect, snap, detectorOptions(log)...) // NewDetector's options
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUnusableCheckpoint, err)
	}
	return &checkpoint{det: det, seq: seq, bytes: len(snap), modTime: info.ModTime}, nil
}
