package replay

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// consumeBatch is how many records the Consume callback hands over at a time: large enough that
// the channel costs nothing per record, small enough that progress stays smooth.
const consumeBatch = 512

// ErrConsumerStopped is returned when the server side of a read ends before the range did (the
// connection closed, the consumer was deleted).
var ErrConsumerStopped = errors.New("replay: the stream consumer stopped before the end of the range")

// streamReader reads an ordered consumer with nats.go's callback API, Consume, as `nats bench js
// ordered` does. MessagesContext.Next arms and stops a heartbeat timer on every call (a third of
// the cost of fetching a message, measured); Consume keeps one per subscription. The callback
// turns messages into records and hands them over in batches, in stream order; next returns them.
type streamReader struct {
	cc   jetstream.ConsumeContext
	ch   chan readBatch
	free chan []Record // batches next is done with, for the callback to fill again
	done chan struct{}
	once sync.Once

	cur []Record
	i   int
	err error

	// owned by the callback goroutine
	batch []Record
	ended bool
}

type readBatch struct {
	recs []Record
	err  error // io.EOF after the last record of the range
}

// convertFunc turns a message into a record. keep false drops the message; last true ends the read
// after it (after the record, when kept); an error ends the read before it.
type convertFunc func(m jetstream.Msg) (rec Record, keep, last bool, err error)

// startReader starts consuming cons, pull messages ahead, through conv.
func startReader(cons jetstream.Consumer, pull int, conv convertFunc) (*streamReader, error) {
	r := &streamReader{ch: make(chan readBatch, 4), free: make(chan []Record, 4), done: make(chan struct{})}
	cc, err := cons.Consume(func(m jetstream.Msg) { r.handle(m, conv) }, jetstream.PullMaxMessages(pull))
	if err != nil {
		return nil, err
	}
	r.cc = cc
	return r, nil
}

// handle runs on nats.go's delivery goroutine, one message at a time. Blocking on a full channel
// is the back-pressure: nats.go stops pulling once its buffer is full.
func (r *streamReader) handle(m jetstream.Msg, conv convertFunc) {
	if r.ended {
		return
	}
	rec, keep, last, err := conv(m)
	switch {
	case err != nil:
		r.flush(err)
		return
	case keep:
		r.batch = append(r.batch, rec)
	}
	if last {
		r.flush(io.EOF)
		return
	}
	if len(r.batch) >= consumeBatch {
		r.flush(nil)
	}
}

// flush hands the pending batch over; a non-nil err ends the read.
func (r *streamReader) flush(err error) {
	if err != nil {
		r.ended = true
	}
	select {
	case r.ch <- readBatch{recs: r.batch, err: err}:
	case <-r.done:
		r.ended = true
	}
	select {
	case r.batch = <-r.free:
	default:
		r.batch = make([]Record, 0, consumeBatch)
	}
}

// next returns the next record, io.EOF after the last one of the range.
func (r *streamReader) next(ctx context.Context) (Record, error) {
	for r.i >= len(r.cur) {
		if r.err != nil {
			return Record{}, r.err
		}
		if r.cur != nil { // every record of it was handed over (and its slot cleared)
			select {
			case r.free <- r.cur[:0]:
			default:
			}
			r.cur = nil
		}
		select {
		case b := <-r.ch:
			r.cur, r.i, r.err = b.recs, 0, b.err
			if b.err != nil {
				r.stop() // the range is read: stop pulling what lies beyond it
			}
		case <-r.cc.Closed():
			select { // a batch handed over just before the end still counts
			case b := <-r.ch:
				r.cur, r.i, r.err = b.recs, 0, b.err
			default:
				r.err = ErrConsumerStopped
			}
		case <-ctx.Done():
			return Record{}, ctx.Err()
		}
	}
	rec := r.cur[r.i]
	r.cur[r.i] = Record{} // let the message's buffer go once handed over
	r.i++
	return rec, nil
}

// stop ends the subscription; a callback blocked on handing over a batch returns.
func (r *streamReader) stop() {
	r.once.Do(func() {
		close(r.done)
		r.cc.Stop()
	})
}
