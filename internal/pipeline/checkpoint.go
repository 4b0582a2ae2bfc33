package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
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
//	watermark                 the detector's watermark (event time, RFC 3339)
//	series                    how many series the detector tracked (for people reading the object)
//
// Besides the checkpoint a restart reads, serve keeps dated copies for `scalpel replay`, one per
// detect_checkpoint_history of event time: the object "<checkpoint>@<watermark>", the watermark
// as 20060102T150405Z so that names sort by it. They carry the same metadata.
const (
	metaStream        = "telemetry-stream"
	metaStreamCreated = "telemetry-stream-created"
	metaSeq           = "telemetry-seq"
	metaDurable       = "durable"
	metaFilter        = "filter"
	metaWatermark     = "watermark"
	metaSeries        = "series"
)

// datedLayout is the watermark's form in a dated checkpoint's name.
const datedLayout = "20060102T150405Z"

// datedCheckpointName is the dated copy of checkpoint name taken at watermark wm.
func datedCheckpointName(name string, wm time.Time) string {
	return name + "@" + wm.UTC().Format(datedLayout)
}

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
	meta     map[string]string // the placing fields; telemetry-seq, watermark and series are set per put
	log      *slog.Logger
	m        checkpointMetrics
	// history is the event time between dated copies (0: none), keep how many are kept.
	history time.Duration
	keep    int

	mu        sync.Mutex
	busy      bool      // a put is in flight
	lastTry   time.Time // when the last snapshot was taken (or attempted)
	lastSeq   uint64    // the sequence of the last checkpoint stored
	lastDated time.Time // the watermark of the newest dated copy
	wg        sync.WaitGroup
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

	snap, ok := c.take(s, since)
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
		c.put(ctx, snap)
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
	snap, ok := c.take(s, since)
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
	c.put(ctx, snap)
}

// take snapshots the stage's detector; ok is false when there is nothing new to write or the
// snapshot failed (logged and counted).
func (c *checkpointer) take(s *DetectStage, since uint64) (snapshot, bool) {
	began := time.Now()
	snap, ok, err := s.snapshot(since)
	if err != nil {
		c.m.failures.Inc()
		c.log.Warn("detector checkpoint: snapshot failed; retrying next interval", "stage", "detect", "err", err)
		return snapshot{}, false
	}
	if ok {
		c.m.seconds.WithLabelValues("snapshot").Observe(time.Since(began).Seconds())
	}
	return snap, ok
}

// put stores one checkpoint, replacing the previous one, and a dated copy when the watermark has
// entered a new detect_checkpoint_history period since the last copy.
func (c *checkpointer) put(ctx context.Context, snap snapshot) {
	began := time.Now()
	meta := make(map[string]string, len(c.meta)+3)
	for k, v := range c.meta {
		meta[k] = v
	}
	meta[metaSeq] = strconv.FormatUint(snap.seq, 10)
	meta[metaWatermark] = snap.watermark.UTC().Format(time.RFC3339Nano)
	meta[metaSeries] = strconv.Itoa(snap.series)
	if err := c.putObject(ctx, c.name, "restored by serve on start", meta, snap); err != nil {
		return
	}
	took := time.Since(began)
	c.m.seconds.WithLabelValues("put").Observe(took.Seconds())
	c.m.bytes.Set(float64(len(snap.bytes)))
	c.m.seq.Set(float64(snap.seq))
	c.mu.Lock()
	c.lastSeq = max(c.lastSeq, snap.seq)
	dated := c.history > 0 && !snap.watermark.IsZero() &&
		(c.lastDated.IsZero() || snap.watermark.Truncate(c.history).After(c.lastDated.Truncate(c.history)))
	c.mu.Unlock()
	c.log.Debug("detector checkpoint written", "stage", "detect", "seq", snap.seq, "series", snap.series,
		"bytes", len(snap.bytes), "took", took.Round(time.Millisecond))
	if !dated {
		return
	}
	name := datedCheckpointName(c.name, snap.watermark)
	if err := c.putObject(ctx, name, "kept for scalpel replay (detect_checkpoint_history)", meta, snap); err != nil {
		return
	}
	c.mu.Lock()
	c.lastDated = snap.watermark
	c.mu.Unlock()
	c.log.Info("dated detector checkpoint kept for replay", "stage", "detect", "object", schemas.ObjectState+"/"+name,
		"seq", snap.seq, "series", snap.series, "bytes", len(snap.bytes))
	c.prune(ctx)
}

// putObject writes one checkpoint object; a failure is logged and counted, and the next interval
// tries again.
func (c *checkpointer) putObject(ctx context.Context, name, what string, meta map[string]string, snap snapshot) error {
	_, err := c.obj.Put(ctx, jetstream.ObjectMeta{
		Name:        name,
		Description: "scalpel detector checkpoint (detect.Snapshot); " + what,
		Metadata:    meta,
	}, bytes.NewReader(snap.bytes))
	if err != nil {
		c.m.failures.Inc()
		c.log.Warn("detector checkpoint: write failed; retrying next interval", "stage", "detect",
			"object", schemas.ObjectState+"/"+name, "seq", snap.seq, "bytes", len(snap.bytes), "err", err)
		return err
	}
	c.m.written.Inc()
	return nil
}

// datedCheckpoints lists the dated copies of checkpoint name in obj, oldest first.
func datedCheckpoints(ctx context.Context, obj jetstream.ObjectStore, name string) ([]*jetstream.ObjectInfo, error) {
	all, err := obj.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*jetstream.ObjectInfo
	for _, info := range all {
		if rest, ok := strings.CutPrefix(info.Name, name+"@"); ok {
			if _, err := time.Parse(datedLayout, rest); err == nil {
				out = append(out, info)
			}
		}
	}
	slices.SortFunc(out, func(a, b *jetstream.ObjectInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// prune deletes the oldest dated copies beyond keep.
func (c *checkpointer) prune(ctx context.Context) {
	dated, err := datedCheckpoints(ctx, c.obj, c.name)
	if err != nil {
		c.log.Warn("detector checkpoint: cannot list dated checkpoints to prune; trying again with the next", "stage", "detect", "err", err)
		return
	}
	for _, info := range dated[:max(0, len(dated)-c.keep)] {
		if err := c.obj.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			c.log.Warn("detector checkpoint: cannot delete an old dated checkpoint; trying again with the next", "stage", "detect",
				"object", schemas.ObjectState+"/"+info.Name, "err", err)
		}
	}
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
	for k, v := range want {
		if got := info.Metadata[k]; got != v {
			return nil, fmt.Errorf("%w: taken with %s %q, this process has %q", errUnusableCheckpoint, k, got, v)
		}
	}
	seq, err := strconv.ParseUint(info.Metadata[metaSeq], 10, 64)
	if err != nil || seq == 0 {
		return nil, fmt.Errorf("%w: bad %s %q", errUnusableCheckpoint, metaSeq, info.Metadata[metaSeq])
	}
	if last := stream.State.LastSeq; seq > last {
		return nil, fmt.Errorf("%w: it holds telemetry through sequence %d, beyond the stream's last (%d)", errUnusableCheckpoint, seq, last)
	}
	det, err := RestoreDetector(cfg, snap, log)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUnusableCheckpoint, err)
	}
	return &checkpoint{det: det, seq: seq, bytes: len(snap), modTime: info.ModTime}, nil
}

// consumerOf names what cfg's ingest consumes: the stream, the durable and the filter subject,
// defaults filled in.
func consumerOf(cfg config.Config) (stream, durable, filter string) {
	stream = cfg.Ingest.Stream
	durable, filter = cfg.Ingest.Consumes(cfg.Subjects())
	if stream == "" {
		stream = schemas.StreamTelemetry
	}
	return stream, durable, filter
}

// StoredCheckpoint is a detector checkpoint read from scalpel_state, for a replay to start from.
type StoredCheckpoint struct {
	Object    string    // its name in scalpel_state
	Seq       uint64    // the telemetry stream sequence through which it holds the detector's state
	Watermark time.Time // the detector's watermark then
	Snapshot  []byte    // detect.Snapshot's bytes
}

// CheckpointInfo describes a stored detector checkpoint of a consumer: the latest one or a dated
// copy.
type CheckpointInfo struct {
	Object    string    `json:"object"`
	Watermark time.Time `json:"watermark"`
	Seq       uint64    `json:"telemetry_seq"`
	Series    int       `json:"series"`
	Bytes     uint64    `json:"bytes"`
	// Problem says why a replay cannot start from it, "" when it can: of another stream (one
	// since deleted and made anew), its later telemetry aged out of the stream, taken under
	// another detect config or build.
	Problem string `json:"problem,omitempty"`
}

// Problems a checkpoint can have (CheckpointInfo.Problem).
const (
	problemStream = "of another telemetry stream, consumer or filter"
	problemAged   = "the telemetry after it has aged out of the stream"
	problemConfig = "taken under another detect config or build"
)

// ListCheckpoints lists the detector checkpoints of cfg's ingest consumer, newest watermark first,
// each with what stops a replay under cfg from starting from it. It reads each checkpoint's header
// only. Checkpoints written before they carried their watermark are left out.
func ListCheckpoints(ctx context.Context, js jetstream.JetStream, cfg config.Config) ([]CheckpointInfo, error) {
	obj, err := js.ObjectStore(ctx, schemas.ObjectState)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open object store %s: %w", schemas.ObjectState, err)
	}
	return listCheckpoints(ctx, js, obj, cfg)
}

// listCheckpoints is ListCheckpoints on the object store obj.
func listCheckpoints(ctx context.Context, js jetstream.JetStream, obj jetstream.ObjectStore, cfg config.Config) ([]CheckpointInfo, error) {
	var src restoreSource
	src.stream, src.durable, src.filter = consumerOf(cfg)
	str, err := js.Stream(ctx, src.stream)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", src.stream, err)
	}
	src.info = str.CachedInfo()
	info, want := src.info, src.placing()
	name := checkpointObjectName(src.durable)
	all, err := obj.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, fmt.Errorf("list %s: %w", schemas.ObjectState, err)
	}
	var out []CheckpointInfo
	for _, o := range all {
		if o.Name != name && !strings.HasPrefix(o.Name, name+"@") {
			continue
		}
		wm, err1 := time.Parse(time.RFC3339Nano, o.Metadata[metaWatermark])
		seq, err2 := strconv.ParseUint(o.Metadata[metaSeq], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		series, _ := strconv.Atoi(o.Metadata[metaSeries])
		ci := CheckpointInfo{Object: o.Name, Watermark: wm, Seq: seq, Series: series, Bytes: o.Size}
		switch {
		case !sameMeta(o.Metadata, want):
			ci.Problem = problemStream
		case seq > info.State.LastSeq || seq+1 < info.State.FirstSeq:
			ci.Problem = problemAged
		default:
			head, err := readHeader(ctx, obj, o.Name)
			if errors.Is(err, jetstream.ErrObjectNotFound) {
				continue // pruned meanwhile
			}
			if err != nil {
				return nil, err
			}
			if detect.CheckSnapshot(cfg.Detect, head) != nil {
				ci.Problem = problemConfig
			}
		}
		out = append(out, ci)
	}
	slices.SortFunc(out, func(a, b CheckpointInfo) int { return b.Watermark.Compare(a.Watermark) })
	return out, nil
}

// readHeader reads the first detect.SnapshotHeaderLen bytes of a checkpoint object.
func readHeader(ctx context.Context, obj jetstream.ObjectStore, name string) ([]byte, error) {
	res, err := obj.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer res.Close()
	head := make([]byte, detect.SnapshotHeaderLen)
	n, err := io.ReadFull(res, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read %s/%s: %w", schemas.ObjectState, name, err)
	}
	return head[:n], nil
}

// FindCheckpoint returns the newest detector checkpoint of cfg's ingest consumer, dated or the
// latest, that saw no event at or after at, and from which a replay under cfg can go on (see
// ListCheckpoints). The newest event it saw is its watermark plus allowed_lateness: a test that
// fires within a bucket fires on the event that carries it over, so the checkpoint's detector has
// emitted anomalies detected up to that event, and a replay from it would miss one of them
// detected at or after at. When none qualifies it returns nil and says why, in words for the
// user; err is for I/O.
func FindCheckpoint(ctx context.Context, js jetstream.JetStream, cfg config.Config, at time.Time) (*StoredCheckpoint, string, error) {
	obj, err := js.ObjectStore(ctx, schemas.ObjectState)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, "serve has written no detector checkpoint (no " + schemas.ObjectState + " object store)", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("open object store %s: %w", schemas.ObjectState, err)
	}
	list, err := listCheckpoints(ctx, js, obj, cfg)
	if err != nil {
		return nil, "", err
	}
	later := 0
	problems := map[string]int{}
	lateness := time.Duration(cfg.Detect.AllowedLateness)
	for _, ci := range list {
		switch {
		case !ci.Watermark.Add(lateness).Before(at):
			later++
		case ci.Problem != "":
			problems[ci.Problem]++
		default:
			snap, err := obj.GetBytes(ctx, ci.Object)
			if errors.Is(err, jetstream.ErrObjectNotFound) {
				continue // pruned meanwhile
			}
			if err != nil {
				return nil, "", fmt.Errorf("read %s/%s: %w", schemas.ObjectState, ci.Object, err)
			}
			return &StoredCheckpoint{Object: ci.Object, Seq: ci.Seq, Watermark: ci.Watermark, Snapshot: snap}, "", nil
		}
	}
	why := fmt.Sprintf("no detector checkpoint before %s", at.UTC().Format(time.RFC3339))
	var parts []string
	if later > 0 {
		parts = append(parts, fmt.Sprintf("%d later", later))
	}
	for _, p := range []string{problemStream, problemAged, problemConfig} {
		if n := problems[p]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, p))
		}
	}
	if len(parts) > 0 {
		why += " (kept: " + strings.Join(parts, "; ") + ")"
	}
	return nil, why, nil
}

// sameMeta reports whether a checkpoint's metadata places it in the stream and consumer want names.
func sameMeta(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}
