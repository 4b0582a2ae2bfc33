package replay

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
)

// prefetchBatch is how many records the reader goroutine hands over at a time: large enough that
// the channel costs nothing per record, small enough that progress stays smooth.
const prefetchBatch = 512

// prefetch reads src on its own goroutine, a batch ahead of the caller, so that fetching from the
// server (nats.go's parsing, flow control, heartbeats) runs on one core while decoding, detection and
// decisions run on the other. Order is kept; errors (io.EOF included) arrive after the records read
// before them.
type prefetch struct {
	src    Source
	ch     chan prefetched
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	cur      []Record
	i        int
	err      error
	progress atomic.Uint64 // math.Float64bits of src.Progress(), updated by the reader
}

type prefetched struct {
	recs     []Record
	err      error
	progress float64
}

func newPrefetch(ctx context.Context, src Source) *prefetch {
	ctx, cancel := context.WithCancel(ctx)
	p := &prefetch{src: src, ch: make(chan prefetched, 2), cancel: cancel, done: make(chan struct{})}
	go p.read(ctx)
	return p
}

func (p *prefetch) read(ctx context.Context) {
	defer close(p.done)
	defer close(p.ch)
	for {
		batch := make([]Record, 0, prefetchBatch)
		var err error
		for len(batch) < prefetchBatch {
			var rec Record
			if rec, err = p.src.Next(ctx); err != nil {
				break
			}
			batch = append(batch, rec)
		}
		select {
		case p.ch <- prefetched{recs: batch, err: err, progress: p.src.Progress()}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// Next returns the next record in source order.
func (p *prefetch) Next(ctx context.Context) (Record, error) {
	for p.i >= len(p.cur) {
		if p.err != nil {
			return Record{}, p.err
		}
		select {
		case b, ok := <-p.ch:
			if !ok {
				if p.err == nil {
					p.err = context.Canceled
				}
				return Record{}, p.err
			}
			p.cur, p.i, p.err = b.recs, 0, b.err
			p.progress.Store(floatBits(b.progress))
		case <-ctx.Done():
			return Record{}, ctx.Err()
		}
	}
	rec := p.cur[p.i]
	p.cur[p.i] = Record{} // let the message's buffer go once handled
	p.i++
	return rec, nil
}

// Progress is the underlying source's progress as of the last batch handed over.
func (p *prefetch) Progress() float64 { return floatFrom(p.progress.Load()) }

// Close stops the reader. The source itself stays open: whoever passed it to Run closes it.
func (p *prefetch) Close() error {
	p.once.Do(func() {
		p.cancel()
		for range p.ch { // unblock the reader
		}
		<-p.done
	})
	return nil
}

func floatBits(f float64) uint64 { return math.Float64bits(f) }
func floatFrom(b uint64) float64 { return math.Float64frombits(b) }
