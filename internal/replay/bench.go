package replay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/internal/config"
)

// benchBatch is the pull size of both sides of BenchReplay, and of ServerSource's default.
const benchBatch = 4096

// BenchReplay measures replay throughput against the raw ordered-consumer rate on the same stream
// in the same run: in each of rounds rounds (at least 1), first a bare nats.go ordered consumer
// reads n messages and does nothing with them, then a replay reads the same n messages and decodes,
// detects and decides. The stream must hold at least n telemetry messages (telemetry.<svc>.<comp>
// under any prefix). It returns the median rates of each side and the median of the rounds' ratios:
// machines are shared and noisy, and a neighbour's burst of CPU that slows one round slows both of
// its halves, so the ratio of a round is steadier than either rate.
func BenchReplay(ctx context.Context, js jetstream.JetStream, stream string, n, rounds int) (replayRate, orderedRate, ratio float64, err error) {
	if n <= 0 {
		return 0, 0, 0, errors.New("bench replay: n must be > 0")
	}
	var reps, ords, ratios []float64
	for range max(rounds, 1) {
		o, err := benchOrdered(ctx, js, stream, n)
		if err != nil {
			return 0, 0, 0, err
		}
		r, err := benchReplay(ctx, js, stream, n)
		if err != nil {
			return 0, 0, 0, err
		}
		ords, reps, ratios = append(ords, o), append(reps, r), append(ratios, r/o)
	}
	return median(reps), median(ords), median(ratios), nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// benchOrdered is the baseline, what `nats bench js ordered` does: an ordered consumer whose
// Consume callback counts n messages and does nothing with them.
func benchOrdered(ctx context.Context, js jetstream.JetStream, stream string, n int) (float64, error) {
	start := time.Now()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, fmt.Errorf("bench replay: ordered consumer: %w", err)
	}
	if p := cons.CachedInfo().NumPending; p < uint64(n) {
		return 0, fmt.Errorf("bench replay: stream %s holds %d messages, want %d", stream, p, n)
	}
	got, all := 0, make(chan struct{})
	cc, err := cons.Consume(func(jetstream.Msg) {
		if got++; got == n {
			close(all)
		}
	}, jetstream.PullMaxMessages(benchBatch))
	if err != nil {
		return 0, fmt.Errorf("bench replay: ordered consumer: %w", err)
	}
	defer cc.Stop()
	select {
	case <-all:
	case <-cc.Closed():
		return 0, fmt.Errorf("bench replay: ordered consumer: %w", ErrConsumerStopped)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// benchReplay reads the same messages through Run with the default config.
func benchReplay(ctx context.Context, js jetstream.JetStream, stream string, n int) (float64, error) {
	cfg := config.Default()
	start := time.Now()
	src, err := newStreamSource(ctx, js, stream, n)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	cfg.NATS.SubjectPrefix = src.prefix
	tl, err := Run(ctx, src, Options{Config: cfg})
	if err != nil && !errors.Is(err, ErrNoInput) {
		return 0, fmt.Errorf("bench replay: %w", err)
	}
	el := time.Since(start).Seconds()
	if r := tl.Stats.Rejected; len(r) > 0 {
		return 0, fmt.Errorf("bench replay: %v messages rejected: the stream does not hold valid telemetry", r)
	}
	return float64(tl.Stats.Messages) / el, nil
}

// streamSource yields the first n messages of a stream as telemetry records.
type streamSource struct {
	r      *streamReader
	n      int
	got    atomic.Int64 // records handed over; Progress reads it from the prefetch goroutine
	prefix string
}

func newStreamSource(ctx context.Context, js jetstream.JetStream, stream string, n int) (*streamSource, error) {
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("bench replay: %w", err)
	}
	if p := cons.CachedInfo().NumPending; p < uint64(n) {
		return nil, fmt.Errorf("bench replay: stream %s holds %d messages, want %d", stream, p, n)
	}
	s := &streamSource{n: n}
	// The decoder checks subjects under the stream's prefix: take it from the first subject.
	prefixed := make(chan string, 1)
	seen := 0
	s.r, err = startReader(cons, benchBatch, func(m jetstream.Msg) (Record, bool, bool, error) {
		if seen++; seen == 1 {
			prefixed <- m.Subject()
		}
		return Record{Kind: KindTelemetry, Subject: m.Subject(), Data: m.Data()}, true, seen >= n, nil
	})
	if err != nil {
		return nil, fmt.Errorf("bench replay: %w", err)
	}
	select {
	case subj := <-prefixed:
		if i := strings.Index(subj, ".telemetry."); i > 0 && !strings.HasPrefix(subj, "telemetry.") {
			s.prefix = subj[:i]
		}
	case <-ctx.Done():
		s.r.stop()
		return nil, ctx.Err()
	}
	return s, nil
}

func (s *streamSource) Next(ctx context.Context) (Record, error) {
	rec, err := s.r.next(ctx)
	if err == nil {
		s.got.Add(1)
	}
	return rec, err
}

func (s *streamSource) Progress() float64 { return float64(s.got.Load()) / float64(s.n) }

func (s *streamSource) Close() error {
	s.r.stop()
	return nil
}
