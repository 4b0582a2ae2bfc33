package pipeline

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// WatermarkKey is the scalpel_state key under which the process that consumes durable shares its
// detector's watermark, for the process that decides on the consumers' event time
// (followsShared).
func WatermarkKey(durable string) string { return watermarkPrefix + durable }

const watermarkPrefix = "watermark."

// WatermarkStale is how long a shared watermark counts after it was last written: longer than
// the longest gap between clock ticks of a quiet consumer (longQuietTick), so a quiet partition
// is not taken for a retired one. A replay of every partition leaves out a partition's
// detector that read nothing the server stored in the last WatermarkStale in the same way.
const WatermarkStale = time.Minute

// shareWatermark writes the detector's watermark under WatermarkKey, at most once a second: at
// once when the last write is a second old, else the newest watermark when the second is up. It
// runs after each telemetry batch of the process that consumes the durable (clock ticks
// included, so a quiet consumer goes on writing); the last of a burst of batches is written too,
// or a decider following it would wait for the next batch, which may not come before a tick.
func (p *Pipeline) shareWatermark(ctx context.Context, wm time.Time) {
	if wm.IsZero() {
		return
	}
	p.wmMu.Lock()
	p.wmLatest = wm
	if p.wmTimer != nil {
		p.wmMu.Unlock()
		return // the write due takes the newest
	}
	if wait := time.Second - time.Since(p.wmShared); wait > 0 {
		ctx := context.WithoutCancel(ctx)
		p.wmTimer = time.AfterFunc(wait, func() { p.writeWatermark(ctx) })
		p.wmMu.Unlock()
		return
	}
	p.wmMu.Unlock()
	p.writeWatermark(ctx)
}

// writeWatermark writes the newest watermark shareWatermark was given.
func (p *Pipeline) writeWatermark(ctx context.Context) {
	p.wmMu.Lock()
	wm := p.wmLatest
	p.wmShared, p.wmTimer = time.Now(), nil
	p.wmMu.Unlock()
	kv := p.dec().state
	if kv == nil {
		return
	}
	_, durable, _ := consumerOf(p.cfg)
	if _, err := kv.Put(ctx, WatermarkKey(durable), []byte(wm.UTC().Format(time.RFC3339Nano))); err != nil {
		p.log.Debug("ingest: cannot share the detector's watermark", "stage", "ingest", "err", err)
	}
}

// stopSharingWatermark stops a write that is due, when ingest stops: with drain (the consumer
// handed everything over), after writing it, so what the detector reached is shared at once.
func (p *Pipeline) stopSharingWatermark(drain bool) {
	p.wmMu.Lock()
	due := p.wmTimer != nil && p.wmTimer.Stop()
	p.wmTimer = nil
	p.wmMu.Unlock()
	if due && drain {
		p.writeWatermark(context.WithoutCancel(p.ctx))
	}
}

// followsShared reports whether decide, in this process, follows the watermarks the consumers
// share (followWatermarks) rather than its own detector's: when it has no detector (role decide),
// and when its detector reads a part of the telemetry (a partition, or a filter). The other parts'
// event time may lag this part's by as much as their consumers lag: a backlog, a process taking
// over, producers that batch. Decided on this part's event time alone, a rollback's verify period
// would end before the anomalies of its time had come from the part of its service, and would
// climb the ladder for a problem the rollback fixed; an anomaly waiting deploy_skew for its deploy
// would be decided without it.
func (p *Pipeline) followsShared() bool {
	return !p.cfg.Ingests() || !p.cfg.Ingest.ReadsAll(p.subj)
}

// followWatermarks advances decide, in a process that follows the consumers (followsShared), to
// the earliest watermark they share (shareWatermark) among those written within WatermarkStale:
// event time that every live partition has reached, so no verify period ends before the anomalies
// of its time have come from any of them. A consumer that stopped for good (a partition the stream
// is no longer cut into) drops out after WatermarkStale.
func (p *Pipeline) followWatermarks(ctx context.Context) (stop func(), err error) {
	kv := p.dec().state
	ctx, cancel := context.WithCancel(ctx)
	watch := func() (jetstream.KeyWatcher, error) {
		return kv.Watch(ctx, watermarkPrefix+"*", jetstream.IgnoreDeletes()) // stopped with ctx
	}
	w, err := watch()
	if err != nil {
		cancel()
		return nil, err
	}
	type mark struct{ wm, at time.Time }
	marks := map[string]mark{}
	var last time.Time
	advance := func() {
		var low time.Time
		for _, m := range marks {
			if time.Since(m.at) < WatermarkStale && (low.IsZero() || m.wm.Before(low)) {
				low = m.wm
			}
		}
		if p.cfg.Ingests() {
			// This process's own part counts as it is, not as it last shared it: should the
			// watch fall behind, the others' marks go stale and decide goes on on its own
			// detector's event time, as it did before it followed the others.
			if own := p.detect.Watermark(); !own.IsZero() && (low.IsZero() || own.Before(low)) {
				low = own
			}
		}
		// Also when low has not moved: what was decided since (a rollback whose verify period
		// ended before low) is due at low, and the engine does nothing when nothing is.
		if !low.IsZero() && !low.Before(last) {
			last = low
			p.AdvanceDecide(ctx, low)
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					// The watch ended without being stopped (its subscription closed): watch
					// again, or decide would stand still.
					for !ok {
						p.log.Warn("decide: the watch of the consumers' shared watermarks ended; watching again", "stage", "decide")
						select {
						case <-ctx.Done():
							return
						case <-time.After(time.Second):
						}
						if nw, err := watch(); err == nil {
							w, ok = nw, true
						}
					}
					continue
				}
				if e == nil {
					continue // the initial values are in
				}
				if wm, err := time.Parse(time.RFC3339Nano, string(e.Value())); err == nil {
					marks[strings.TrimPrefix(e.Key(), watermarkPrefix)] = mark{wm, e.Created()}
				}
				advance()
			case <-tick.C:
				advance() // a consumer that went stale no longer holds the others back
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
	}, nil
}
