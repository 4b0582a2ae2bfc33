package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/schemas"
)

// restoreSource is where the detector's input stands at start-up.
type restoreSource struct {
	stream, durable, filter string
	// filters are what the ingest consumer reads: the filter, and its clock ticks' subject
	// (ingest.Config.Filters).
	filters []string
	info    *jetstream.StreamInfo
	// floor is the ingest consumer's ack floor: every telemetry message up to it was handled and
	// acknowledged. 0 when nothing was, or the consumer does not exist (first start).
	floor uint64
}

// restoreDetector rebuilds the detector's state after a restart or a crash, before the durable
// consumer resumes, and prepares the checkpointer.
//
// From a checkpoint (detect_checkpoint > 0): the detector is restored from the object "detect" of
// the scalpel_state object store, which holds its state through stream sequence S; the telemetry
// acknowledged after S — up to the ack floor — is run through it with its output discarded (those
// anomalies were published the first time), and the ingest consumer is told to skip messages up to
// S, which the previous process handled but may not have acknowledged before it stopped.
//
// Without a usable checkpoint (none yet, checkpoints disabled, another detect config, damaged bytes)
// it falls back to running the last detect_restore of acknowledged telemetry back through the
// detector. Detection is a function of the events alone, so that rebuilds the state of the window
// (open buckets, frozen baselines, running tests); what is older than the window is lost.
func (p *Pipeline) restoreDetector(ctx context.Context) error {
	src, err := p.restoreSource(ctx)
	if err != nil {
		return fmt.Errorf("restore detector: %w", err)
	}
	p.detectStream = src.info.Created
	if time.Duration(p.cfg.DetectCheckpoint) > 0 {
		if err := p.newCheckpointer(ctx, src); err != nil {
			return fmt.Errorf("restore detector: %w", err)
		}
		done, err := p.restoreFromCheckpoint(ctx, src)
		if err != nil || done {
			return err
		}
	}
	return p.restoreFromWindow(ctx, src)
}

// placing is the metadata that places a checkpoint of this source in the stream (see checkpoint.go).
func (src restoreSource) placing() map[string]string {
	return map[string]string{
		metaStream:        src.stream,
		metaStreamCreated: src.info.Created.UTC().Format(time.RFC3339Nano),
		metaDurable:       src.durable,
		metaFilter:        src.filter,
	}
}

// restoreSource reads the telemetry stream and the ingest consumer's position.
func (p *Pipeline) restoreSource(ctx context.Context) (restoreSource, error) {
	var src restoreSource
	src.stream, src.durable, src.filter = consumerOf(p.cfg)
	src.filters = p.cfg.Ingest.Filters(p.subj)
	str, err := p.js.Stream(ctx, src.stream)
	if err != nil {
		return src, err
	}
	src.info = str.CachedInfo()
	cons, err := p.js.Consumer(ctx, src.stream, src.durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return src, nil // first start: nothing was acknowledged
	}
	if err != nil {
		return src, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return src, err
	}
	src.floor = info.AckFloor.Stream
	return src, nil
}

// newCheckpointer opens the object store and prepares the stage's checkpointer.
func (p *Pipeline) newCheckpointer(ctx context.Context, src restoreSource) error {
	obj, err := p.js.ObjectStore(ctx, schemas.ObjectState)
	if err != nil {
		return fmt.Errorf("open object store %s: %w", schemas.ObjectState, err)
	}
	p.ckpt = &checkpointer{
		obj:      obj,
		name:     checkpointObjectName(src.durable),
		interval: time.Duration(p.cfg.DetectCheckpoint),
		meta:     src.placing(),
		log:      p.log,
		m:        p.m.ckpt,
		lastTry:  time.Now(), // the first checkpoint one interval after start
		history:  time.Duration(p.cfg.DetectCheckpointHistory),
		keep:     p.cfg.DetectCheckpointKeep,
	}
	if p.ckpt.history > 0 {
		dated, err := datedCheckpoints(ctx, obj, p.ckpt.name)
		if err != nil {
			return fmt.Errorf("list dated checkpoints in %s: %w", schemas.ObjectState, err)
		}
		if len(dated) > 0 {
			name := dated[len(dated)-1].Name
			p.ckpt.lastDated, _ = time.Parse(datedLayout, name[len(p.ckpt.name)+1:]) // datedCheckpoints parsed it
		}
	}
	return nil
}

// restoreFromCheckpoint restores the detector from its checkpoint and replays what was acknowledged
// after it. done is false when there is no usable checkpoint: the caller falls back.
func (p *Pipeline) restoreFromCheckpoint(ctx context.Context, src restoreSource) (done bool, err error) {
	began := time.Now()
	object := schemas.ObjectState + "/" + p.ckpt.name
	cp, err := loadCheckpoint(ctx, p.ckpt.obj, p.ckpt.name, p.ckpt.meta, src.info, p.cfg, p.log)
	switch {
	case errors.Is(err, errNoCheckpoint):
		p.log.Info("restore detector: no checkpoint yet; replaying detect_restore of telemetry instead",
			"stage", "detect", "object", object)
		return false, nil
	case errors.Is(err, detect.ErrSnapshotConfig):
		p.log.Info("restore detector: the checkpoint was taken under another detect config; replaying detect_restore of telemetry instead",
			"stage", "detect", "object", object)
		return false, nil
	case errors.Is(err, errUnusableCheckpoint):
		p.log.Warn("restore detector: checkpoint unusable; replaying detect_restore of telemetry instead",
			"stage", "detect", "object", object, "err", err)
		return false, nil
	case err != nil:
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		p.log.Warn("restore detector: cannot read the checkpoint; replaying detect_restore of telemetry instead",
			"stage", "detect", "object", object, "err", err)
		return false, nil
	}
	p.detect.reset(cp.det, cp.seq)
	p.ckpt.lastSeq = cp.seq
	p.detectSkip = cp.seq
	if first := src.info.State.FirstSeq; src.floor > cp.seq && first > cp.seq+1 {
		p.log.Warn("restore detector: telemetry acknowledged after the checkpoint has aged out of the stream; the detector misses it",
			"stage", "detect", "checkpoint_seq", cp.seq, "first_seq", first)
	}
	replayed := 0
	if src.floor > cp.seq {
		replayed, err = p.replay(ctx, src, jetstream.OrderedConsumerConfig{
			FilterSubjects: src.filters,
			DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:    cp.seq + 1,
		})
		if err != nil {
			return false, err
		}
		p.detect.setSeq(src.floor)
	}
	p.log.Info("detector restored from checkpoint", "stage", "detect", "object", object,
		"series", p.detect.SeriesCount(), "bytes", cp.bytes, "checkpoint_seq", cp.seq, "ack_floor", src.floor,
		"replayed", replayed, "checkpoint_age", time.Since(cp.modTime).Round(time.Second),
		"took", time.Since(began).Round(time.Millisecond))
	return true, nil
}

// restoreFromWindow runs the last detect_restore of acknowledged telemetry back through the
// detector.
func (p *Pipeline) restoreFromWindow(ctx context.Context, src restoreSource) error {
	window := time.Duration(p.cfg.DetectRestore)
	if window <= 0 || src.floor == 0 {
		return nil
	}
	str, err := p.js.Stream(ctx, src.stream)
	if err != nil {
		return fmt.Errorf("restore detector: %w", err)
	}
	last, err := str.GetMsg(ctx, src.floor)
	if err != nil {
		// The acknowledged message may have aged out; start from what the stream still holds.
		p.log.Warn("restore detector: last acknowledged telemetry is gone; detector starts empty", "stage", "detect",
			"seq", src.floor, "err", err)
		return nil
	}
	began := time.Now()
	start := last.Time.Add(-window)
	n, err := p.replay(ctx, src, jetstream.OrderedConsumerConfig{
		FilterSubjects: src.filters,
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	})
	if err != nil {
		return err
	}
	p.detect.setSeq(src.floor)
	p.log.Info("detector restored from acknowledged telemetry", "stage", "detect", "series", p.detect.SeriesCount(),
		"replayed", n, "from", start.UTC().Format(time.RFC3339), "to_seq", src.floor,
		"took", time.Since(began).Round(time.Millisecond))
	return nil
}

// replay runs the telemetry an ordered consumer of occ delivers through the stage's restore, up to
// the ack floor, and returns how many messages it read.
func (p *Pipeline) replay(ctx context.Context, src restoreSource, occ jetstream.OrderedConsumerConfig) (int, error) {
	oc, err := p.js.OrderedConsumer(ctx, src.stream, occ)
	if err != nil {
		return 0, fmt.Errorf("restore detector: %w", err)
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return 0, fmt.Errorf("restore detector: %w", err)
	}
	defer it.Stop()
	dec := ingest.NewDecoder(p.cfg.Ingest.DecoderConfig(p.subj))
	var (
		events []schemas.TelemetryEvent
		n      int
	)
	for {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		m, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
		if err != nil {
			// Nothing more within the wait: the floor message was filtered out or removed.
			p.log.Warn("restore detector: stopped early", "stage", "detect", "replayed", n, "err", err)
			return n, nil
		}
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		if md.Sequence.Stream > src.floor {
			return n, nil // past the floor: the ingest consumer delivers it
		}
		// Rejected messages are rejected again here, silently: they were published to
		// rejected.ingest the first time.
		events, _ = dec.DecodeStored(m.Subject(), m.Data(), md.Timestamp, events[:0])
		p.detect.restore(events)
		n++
		if md.Sequence.Stream == src.floor || md.NumPending == 0 {
			return n, nil
		}
	}
}
