package replay

import (
	"context"
	"math"
	"sync"
	"sync/atomic"

	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/schemas"
)

// prefetchBatch is how many records the reader goroutine hands over at a time: large enough that
// the channel costs nothing per record, small enough that progress stays smooth.
const prefetchBatch = 512

// prefetch reads src on its own goroutine, a batch ahead of the caller, so that fetching from the
// server (nats.go's parsing, flow control, heartbeats) runs on one core while detection and
// decisions run on the other. With a decoder, a third goroutine decodes each batch's telemetry in
// between: decoding is the largest per-event cost of a replay (about two thirds of the run's own
// work), and it depends on nothing but the message, so it overlaps with detecting the batch
// before. Order is kept; errors (io.EOF included) arrive after the records read before them.
type prefetch struct {
	src    Source
	dec    *ingest.Decoder
	ch     chan prefetched
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	cur      []Record
	curSlab  []schemas.TelemetryEvent
	i        int
	err      error
	progress atomic.Uint64 // math.Float64bits of src.Progress(), updated by the reader

	// Batches and event slabs the caller is done with go back to the reader and the decoder: at a
	// few hundred bytes per event, allocating them afresh made the garbage collector the largest
	// cost of a replay after decoding.
	freeRecs  chan []Record
	freeSlabs chan []schemas.TelemetryEvent
}

type prefetched struct {
	recs     []Record
	slab     []schemas.TelemetryEvent // the events recs[i].pre point into
	err      error
	progress float64
}

// newPrefetch starts reading src and decoding its telemetry records with dec (which must not be
// used elsewhere).
func newPrefetch(ctx context.Context, src Source, dec *ingest.Decoder) *prefetch {
	ctx, cancel := context.WithCancel(ctx)
	p := &prefetch{src: src, dec: dec, ch: make(chan prefetched, 2), cancel: cancel, done: make(chan struct{}),
		freeRecs: make(chan []Record, 4), freeSlabs: make(chan []schemas.TelemetryEvent, 4)}
	raw, readDone := make(chan prefetched, 2), make(chan struct{})
	go p.read(ctx, raw, readDone)
	go p.decode(ctx, raw, readDone)
	return p
}

// decode passes the reader's batches on with their telemetry decoded. The events of a batch share
// one slab, so decoding costs no allocation per record beyond the decoder's own.
func (p *prefetch) decode(ctx context.Context, in <-chan prefetched, readDone <-chan struct{}) {
	defer close(p.done)
	defer func() { <-readDone }()
	defer func() {
		for range in { // unblock the reader if we stop first
		}
	}()
	defer close(p.ch)
	for b := range in {
		var slab []schemas.TelemetryEvent
		for i := range b.recs {
			rec := &b.recs[i]
			if rec.Kind != KindTelemetry {
				continue
			}
			if slab == nil {
				select {
				case slab = <-p.freeSlabs:
				default:
					slab = make([]schemas.TelemetryEvent, 0, len(b.recs)-i)
				}
			}
			start := len(slab)
			var err error
			slab, err = p.dec.DecodeStored(rec.Subject, rec.Body(), rec.Time, slab)
			if err != nil {
				slab = slab[:start]
			}
			rec.pre = predecoded{events: slab[start:len(slab):len(slab)], err: err}
			if p.dec.Partitions() > 0 { // only a replay whose config cuts the stream routes by it
				rec.pre.part, rec.pre.cut = p.dec.PartitionOf(rec.Subject)
			}
		}
		b.slab = slab
		select {
		case p.ch <- b:
		case <-ctx.Done():
			return
		}
	}
}

func (p *prefetch) read(ctx context.Context, out chan<- prefetched, done chan<- struct{}) {
	defer close(done)
	defer close(out)
	for {
		var batch []Record
		select {
		case batch = <-p.freeRecs:
		default:
			batch = make([]Record, 0, prefetchBatch)
		}
		var err error
		for len(batch) < prefetchBatch {
			var rec Record
			if rec, err = p.src.Next(ctx); err != nil {
				break
			}
			batch = append(batch, rec)
		}
		select {
		case out <- prefetched{recs: batch, err: err, progress: p.src.Progress()}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// Next returns the next record in source order; a telemetry record comes decoded (rec.pre), its
// events valid until the next call.
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
			p.recycle()
			p.cur, p.curSlab, p.i, p.err = b.recs, b.slab, 0, b.err
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

// recycle hands the batch just finished back: the caller is done with every record of it (and
// with the events they point into) once it asks for the next record.
func (p *prefetch) recycle() {
	if p.cur != nil {
		select {
		case p.freeRecs <- p.cur[:0]:
		default:
		}
	}
	if p.curSlab != nil {
		select {
		case p.freeSlabs <- p.curSlab[:0]:
		default:
		}
	}
	p.cur, p.curSlab = nil, nil
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
