package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/schemas"
)

// restoreDetector rebuilds the detector's state after a restart or a crash by running the telemetry
// it had already acknowledged back through it — the last cfg.DetectRestore of event time up to the
// ingest consumer's ack floor — with its output discarded, before the durable consumer resumes.
// Detection is a function of the events alone, so the detector comes back as it was (open buckets,
// baselines, running tests) for the window replayed, and nothing it had accounted is lost. The
// anomalies it re-derives were published the first time; a repeat would carry the same ids.
func (p *Pipeline) restoreDetector(ctx context.Context) error {
	window := time.Duration(p.cfg.DetectRestore)
	if window <= 0 {
		return nil
	}
	durable := p.cfg.Ingest.Durable
	if durable == "" {
		durable = ingest.DefaultConfig().Durable
	}
	stream := p.cfg.Ingest.Stream
	if stream == "" {
		stream = schemas.StreamTelemetry
	}
	cons, err := p.js.Consumer(ctx, stream, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil // first start: nothing was acknowledged
	}
	if err != nil {
		return fmt.Errorf("restore detector: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("restore detector: %w", err)
	}
	floor := info.AckFloor.Stream
	if floor == 0 {
		return nil
	}
	str, err := p.js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("restore detector: %w", err)
	}
	last, err := str.GetMsg(ctx, floor)
	if err != nil {
		// The acknowledged message may have aged out; start from what the stream still holds.
		p.log.Warn("restore detector: last acknowledged telemetry is gone; detector starts empty", "seq", floor, "err", err)
		return nil
	}
	filter := p.cfg.Ingest.FilterSubject
	if filter == "" {
		filter = p.subj.TelemetryAll()
	}
	start := last.Time.Add(-window)
	oc, err := p.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	})
	if err != nil {
		return fmt.Errorf("restore detector: %w", err)
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return fmt.Errorf("restore detector: %w", err)
	}
	defer it.Stop()
	dec := ingest.NewDecoder(ingest.DecoderConfig{MaxMessageBytes: p.cfg.Ingest.MaxMessageBytes,
		AllowUnknownFields: p.cfg.Ingest.AllowUnknownFields, Subjects: p.subj})
	var (
		events []schemas.TelemetryEvent
		n      int
		began  = time.Now()
	)
	for {
		m, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
		if err != nil {
			// Nothing more within the wait: the floor message was filtered out or removed.
			p.log.Warn("restore detector: stopped early", "replayed", n, "err", err)
			break
		}
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		// Rejected messages are rejected again here, silently: they were published to
		// rejected.ingest the first time.
		events, _ = dec.Decode(m.Subject(), m.Data(), events[:0])
		p.detect.restore(events)
		n++
		if md.Sequence.Stream >= floor {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	p.log.Info("detector restored from acknowledged telemetry", "stage", "detect", "messages", n,
		"from", start.UTC().Format(time.RFC3339), "to_seq", floor, "took", time.Since(began).Round(time.Millisecond))
	return nil
}
