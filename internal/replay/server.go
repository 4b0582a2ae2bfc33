package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/reject"
	"github.com/scalpel-dev/scalpel/schemas"
)

// ServerOptions says which part of the streams a ServerSource reads.
type ServerOptions struct {
	// Subjects carries the subject prefix scalpel runs under.
	Subjects schemas.Subjects
	// Since and Until bound the replay in event time; zero means from the start of the streams and
	// up to their end. The streams are positioned by the time the server stored a message, so
	// Warmup and Lag widen the read to cover the gap between event time and storage time.
	Since, Until time.Time
	// Warmup is telemetry read before Since so the detector has baselines when the range starts
	// (it needs the previous version's recent history: two detect history epochs for a busy
	// series, detect.history_max_epochs+1 for a sparse one, and the latency drift's thirteen:
	// detect.Config.ReplayWarmup). Default: the default config's, 1h5m; ignored when Since is
	// zero.
	Warmup time.Duration
	// Lag is how long after Until a message may have been stored and still belong to the range.
	// Default 5m; ignored when Until is zero.
	Lag time.Duration
	// Service restricts telemetry, deploys and the recorded records to one service (empty: all).
	Service string
	// Partition restricts the replay to one partition of a telemetry stream cut by service into
	// Partitions (ingest.partitions): the telemetry and clock ticks the serve process given
	// --partition K read, TelemetryFilters (its ingest.Config.Filters), and the recorded
	// anomalies, decisions, acks and approvals of the services stored in it. Its detector then
	// reads what that process's read, so its anomalies replay as they were published (nil: all,
	// which Run reads with a detector per partition when its config cuts the stream).
	Partition        *int
	Partitions       int
	TelemetryFilters []string
	// Batch is the ordered consumer's pull size (default 4096).
	Batch int
	// Checkpoints, when set and Since is too, is the config whose detector checkpoints the replay
	// may start from: the newest one of its ingest consumer before Since that its detect
	// config can restore (pipeline.FindCheckpoint, which serve keeps one of per
	// detect_checkpoint_history). The source then yields it as a checkpoint record and reads
	// telemetry from the sequence after it instead of Warmup before Since: the detector's state at
	// Since is then the live one, own profiles and throughput averages included. Without a usable
	// checkpoint it falls back to Warmup (see Checkpoint).
	Checkpoints *config.Config
}

// ServerSource reads a replay from a JetStream server: the current catalog from the scalpel_catalog
// bucket, every deploy from the start of DEPLOYS (version history needs them all, as live decide
// does), the recorded anomalies, decisions, acks, approvals (approval.<svc> in DECISIONS) and
// actuation failures (rejected.actuate in REJECTED) of the range, then telemetry with an ordered
// consumer. It reads up to the last message stored when it was opened, so a replay of a live stream
// ends.
type ServerSource struct {
	js   jetstream.JetStream
	o    ServerOptions
	meta []Record
	mi   int

	cps   []*CheckpointRecord // the checkpoints the replay starts from: none, one, or one per partition
	cpWhy string              // why there are none, or why some partitions have none
	// warmAlso says that some partitions start from no checkpoint, so the telemetry is read from
	// Warmup before Since too, if that is earlier than every checkpoint.
	warmAlso bool
	cons     jetstream.Consumer
	r        *streamReader
	last     uint64
	pending  uint64
	// written on nats.go's delivery goroutine, read by Progress on the prefetch goroutine
	first atomic.Uint64
	seq   atomic.Uint64
	done  atomic.Bool
}

// NewServerSource opens the streams and reads everything but telemetry into memory (catalog,
// deploys, recorded anomalies, decisions, acks, approvals and actuation failures are small next to
// telemetry).
func NewServerSource(ctx context.Context, js jetstream.JetStream, o ServerOptions) (*ServerSource, error) {
	if o.Warmup == 0 {
		o.Warmup = detect.DefaultConfig().ReplayWarmup()
	}
	if o.Lag == 0 {
		o.Lag = 5 * time.Minute
	}
	if o.Batch <= 0 {
		o.Batch = 4096
	}
	s := &ServerSource{js: js, o: o}
	if err := s.readCatalog(ctx); err != nil {
		return nil, err
	}
	svc := "*"
	if o.Service != "" {
		svc = o.Service
	}
	sub := o.Subjects
	reads := []struct {
		kind, stream, subject string
		all                   bool
	}{
		{KindDeploy, schemas.StreamDeploys, sub.Deploy(svc), true},
		{KindAnomaly, schemas.StreamAnomalies, sub.Anomaly(svc, "*"), false},
		{KindDecision, schemas.StreamDecisions, sub.Decision(svc), false},
		{KindAck, schemas.StreamRollbacks, sub.RollbackAck(svc), false},
		{KindApproval, schemas.StreamDecisions, sub.Approval(svc), false},
		// rejected.actuate carries no service token: readAll filters by the decision's service.
		{KindActuationFailure, schemas.StreamRejected, sub.Rejected(schemas.StageActuate), false},
	}
	for _, r := range reads {
		if err := s.readAll(ctx, r.kind, r.stream, r.subject, r.all); err != nil {
			return nil, err
		}
	}
	if err := s.findCheckpoint(ctx); err != nil {
		return nil, err
	}
	if err := s.openTelemetry(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *ServerSource) readCatalog(ctx context.Context) error {
	kv, err := s.js.KeyValue(ctx, schemas.BucketCatalog)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil // no catalog: every decision will say so, as live
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", schemas.BucketCatalog, err)
	}
	cat := decide.NewCatalog(kv)
	names, err := cat.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return err
	}
	for _, n := range names {
		if s.o.Service != "" && n != s.o.Service {
			continue
		}
		m, rev, err := cat.Get(ctx, n)
		if err != nil {
			return err
		}
		b, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("encode manifest of %s: %w", n, err)
		}
		s.meta = append(s.meta, Record{Kind: KindManifest, Subject: n, Seq: rev, Data: b})
	}
	return nil
}

// findCheckpoint looks for the checkpoint the replay starts from (see ServerOptions.Checkpoints)
// and, when there is one, yields it before the telemetry.
func (s *ServerSource) findCheckpoint(ctx context.Context) error {
	switch {
	case s.o.Checkpoints == nil:
		s.cpWhy = "checkpoints not used"
		return nil
	case s.o.Since.IsZero():
		s.cpWhy = "the replay starts at the beginning of the streams"
		return nil
	}
	if _, err := s.js.Stream(ctx, schemas.StreamTelemetry); errors.Is(err, jetstream.ErrStreamNotFound) {
		s.cpWhy = "no telemetry stream"
		return nil
	}
	// On a stream cut into partitions, a replay of all of it runs a detector per partition
	// (Run), and each partition's consumer kept its own checkpoints: of a service, its
	// partition's; of every partition, each one's that has one.
	cfg := *s.o.Checkpoints
	parts := []*int{cfg.Ingest.Partition}
	if n := cfg.Ingest.Partitions; n > 0 && cfg.Ingest.Partition == nil {
		parts = nil
		for k := range n {
			if s.o.Service == "" || ingest.Partition(s.o.Service, n) == k {
				parts = append(parts, &k)
			}
		}
	}
	var (
		cps  []*CheckpointRecord
		none []string // partitions without one, and why
	)
	for _, k := range parts {
		c := cfg
		c.Ingest.Partition = k
		cp, why, err := pipeline.FindCheckpoint(ctx, s.js, c, s.o.Since)
		if err != nil {
			return fmt.Errorf("find a detector checkpoint: %w", err)
		}
		if cp == nil {
			if len(parts) == 1 {
				s.cpWhy = why
				return nil
			}
			// That partition's detector starts empty, with Warmup before Since; the others
			// start from theirs.
			none = append(none, fmt.Sprintf("partition %d: %s", *k, why))
			continue
		}
		snap := cp.Snapshot
		if s.o.Service != "" {
			// The checkpoint holds every service the consumer saw; the record (and a bundle) only
			// needs this one's.
			det, err := pipeline.RestoreDetector(c, snap, nil)
			if err != nil {
				return fmt.Errorf("restore detector checkpoint %s: %w", cp.Object, err)
			}
			det.KeepService(s.o.Service)
			if snap, err = det.Snapshot(); err != nil {
				return fmt.Errorf("restore detector checkpoint %s: %w", cp.Object, err)
			}
		}
		rec := &CheckpointRecord{Object: cp.Object, Seq: cp.Seq, Watermark: cp.Watermark, Service: s.o.Service, Snapshot: snap}
		if cfg.Ingest.Partition == nil {
			rec.Partition = k
		}
		cps = append(cps, rec)
	}
	for _, cp := range cps {
		b, err := json.Marshal(cp)
		if err != nil {
			return fmt.Errorf("encode checkpoint record: %w", err)
		}
		s.meta = append(s.meta, Record{Kind: KindCheckpoint, Subject: schemas.ObjectState + "/" + cp.Object, Seq: cp.Seq, Data: b})
	}
	s.cps = cps
	if len(none) > 0 {
		s.warmAlso = len(cps) > 0
		s.cpWhy = strings.Join(none, "; ")
	}
	return nil
}

// Checkpoint returns the detector checkpoint the replay starts from, or nil and why there is none.
// A replay of every partition of a cut stream may start from several (Checkpoints): it returns
// the first.
func (s *ServerSource) Checkpoint() (*CheckpointRecord, string) {
	if len(s.cps) == 0 {
		return nil, s.cpWhy
	}
	return s.cps[0], ""
}

// Checkpoints returns the detector checkpoints the replay starts from, one per partition of a cut
// stream it reads every partition of, and why there are none, or none for some partitions.
func (s *ServerSource) Checkpoints() ([]*CheckpointRecord, string) {
	return s.cps, s.cpWhy
}

// startTime is where the range starts in storage time, or nil for the start of the stream.
func (s *ServerSource) startTime() *time.Time {
	if s.o.Since.IsZero() {
		return nil
	}
	t := s.o.Since.Add(-s.o.Warmup)
	return &t
}

func (s *ServerSource) pastEnd(stored time.Time) bool {
	return !s.o.Until.IsZero() && stored.After(s.o.Until.Add(s.o.Lag))
}

func (s *ServerSource) orderedConfig(subject string, all bool) jetstream.OrderedConsumerConfig {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
	if t := s.startTime(); t != nil && !all {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = t
	}
	return cfg
}

// readAll reads a small stream up to its current end.
func (s *ServerSource) readAll(ctx context.Context, kind, stream, subject string, all bool) error {
	if _, err := s.js.Stream(ctx, stream); errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	} else if err != nil {
		return fmt.Errorf("open %s: %w", stream, err)
	}
	cons, err := s.js.OrderedConsumer(ctx, stream, s.orderedConfig(subject, all))
	if err != nil {
		return fmt.Errorf("read %s: %w", stream, err)
	}
	pending := cons.CachedInfo().NumPending
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 1024)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("read %s: %w", stream, err)
			}
			pending = md.NumPending
			if !all && s.pastEnd(md.Timestamp) {
				pending = 0
				break
			}
			rec := Record{Kind: kind, Subject: m.Subject(), Seq: md.Sequence.Stream, Time: md.Timestamp,
				Data: append([]byte(nil), m.Data()...)}
			if kind == KindActuationFailure {
				if !s.failureOf(rec.Data) {
					continue
				}
				rec.Headers = rejectHeaders(m.Headers())
			}
			if kind != KindDeploy && !s.inPartition(rec.Data) {
				continue
			}
			s.meta = append(s.meta, rec)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		if got == 0 {
			break
		}
	}
	return nil
}

// failureOf reports whether a rejected.actuate body is a decision of the service the source is
// restricted to. Bodies that are not decisions stay in: live decide skips them, and so will Run.
func (s *ServerSource) failureOf(body []byte) bool {
	if s.o.Service == "" {
		return true
	}
	var d struct {
		Service string `json:"service"`
	}
	if err := json.Unmarshal(body, &d); err != nil {
		return true
	}
	return d.Service == s.o.Service
}

// inPartition reports whether a recorded anomaly, decision, ack or approval is of a service
// stored in the partition the source is restricted to (ServerOptions.Partition). Every deploy is
// kept: decide learns versions from all of them, as live.
func (s *ServerSource) inPartition(body []byte) bool {
	if s.o.Partition == nil {
		return true
	}
	var d struct {
		Service string `json:"service"`
	}
	if err := json.Unmarshal(body, &d); err != nil || d.Service == "" {
		return true // live decide skips what it cannot read, and so will Run
	}
	return ingest.Partition(d.Service, s.o.Partitions) == *s.o.Partition
}

// rejectHeaders keeps the headers that explain an actuation failure.
func rejectHeaders(h nats.Header) map[string]string {
	out := map[string]string{}
	for _, k := range []string{schemas.HeaderRejectReason, schemas.HeaderRejectSubject, schemas.HeaderDecisionID, schemas.HeaderCommandID, reject.HeaderClass} {
		if v := h.Get(k); v != "" {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (s *ServerSource) openTelemetry(ctx context.Context) error {
	stream, err := s.js.Stream(ctx, schemas.StreamTelemetry)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s.done.Store(true)
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", schemas.StreamTelemetry, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("open %s: %w", schemas.StreamTelemetry, err)
	}
	s.first.Store(info.State.FirstSeq)
	s.last = info.State.LastSeq
	subject := s.o.Subjects.TelemetryAll()
	if s.o.Service != "" {
		subject = s.o.Subjects.Telemetry(s.o.Service, ">")
	}
	occ := s.orderedConfig(subject, false)
	if s.o.Partition != nil && s.o.Service == "" {
		occ.FilterSubjects = s.o.TelemetryFilters
	}
	if len(s.cps) > 0 {
		// From the earliest: each partition's detector skips what its checkpoint holds (Run).
		from := s.cps[0].Seq + 1
		for _, cp := range s.cps {
			from = min(from, cp.Seq+1)
		}
		if s.warmAlso {
			// The partitions without one warm up as a replay without checkpoints does.
			w, err := s.seqAt(ctx, stream, occ.FilterSubjects, *s.startTime())
			if err != nil {
				return err
			}
			from = min(from, w)
		}
		occ.DeliverPolicy, occ.OptStartTime, occ.OptStartSeq = jetstream.DeliverByStartSequencePolicy, nil, from
	}
	cons, err := s.js.OrderedConsumer(ctx, schemas.StreamTelemetry, occ)
	if err != nil {
		return fmt.Errorf("read %s: %w", schemas.StreamTelemetry, err)
	}
	s.cons = cons
	s.pending = cons.CachedInfo().NumPending
	if s.pending == 0 || s.last == 0 {
		s.done.Store(true)
	}
	return nil
}

// seqAt is the sequence of the first message on filters stored at or after t, or the one after
// the stream's last when there is none.
func (s *ServerSource) seqAt(ctx context.Context, stream jetstream.Stream, filters []string, t time.Time) (uint64, error) {
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: filters,
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &t})
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", schemas.StreamTelemetry, err)
	}
	if cons.CachedInfo().NumPending == 0 {
		return s.last + 1, nil
	}
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", schemas.StreamTelemetry, err)
	}
	md, err := m.Metadata()
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", schemas.StreamTelemetry, err)
	}
	return md.Sequence.Stream, nil
}

// Next implements Source.
func (s *ServerSource) Next(ctx context.Context) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	if s.mi < len(s.meta) {
		s.mi++
		return s.meta[s.mi-1], nil
	}
	if s.done.Load() && s.r == nil {
		return Record{}, io.EOF
	}
	if s.r == nil {
		r, err := startReader(s.cons, s.o.Batch, s.telemetryRecord)
		if err != nil {
			return Record{}, fmt.Errorf("read %s: %w", schemas.StreamTelemetry, err)
		}
		s.r = r
	}
	rec, err := s.r.next(ctx)
	switch {
	case err == nil:
		return rec, nil
	case errors.Is(err, io.EOF):
		s.done.Store(true)
		return Record{}, io.EOF
	case ctx.Err() != nil:
		return Record{}, ctx.Err()
	default:
		return Record{}, fmt.Errorf("read %s: %w", schemas.StreamTelemetry, err)
	}
}

// telemetryRecord turns a TELEMETRY message into a record, on nats.go's delivery goroutine. The
// read ends at the last message stored when the source was opened, or past Until (plus Lag).
func (s *ServerSource) telemetryRecord(m jetstream.Msg) (rec Record, keep, last bool, err error) {
	md, err := m.Metadata()
	if err != nil {
		return Record{}, false, false, err
	}
	seq := md.Sequence.Stream
	if s.seq.Load() == 0 {
		s.first.Store(seq) // progress counts from where the range starts
	}
	s.seq.Store(seq)
	if s.pastEnd(md.Timestamp) {
		return Record{}, false, true, nil
	}
	last = md.NumPending == 0 || seq >= s.last
	return Record{Kind: KindTelemetry, Subject: m.Subject(), Seq: seq, Time: md.Timestamp, Data: m.Data()}, true, last, nil
}

// Progress implements Source: the position in the telemetry stream.
func (s *ServerSource) Progress() float64 {
	if s.done.Load() {
		return 1
	}
	first, seq := s.first.Load(), s.seq.Load()
	if s.last <= first || seq == 0 {
		return 0
	}
	return min(1, float64(seq-first)/float64(s.last-first))
}

// Close stops the consumer.
func (s *ServerSource) Close() error {
	if s.r != nil {
		s.r.stop()
	}
	return nil
}
