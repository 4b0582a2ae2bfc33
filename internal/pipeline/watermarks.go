package pipeline

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// WatermarkKey is the scalpel_state key under which the process that consumes durable shares its
// detector's watermark, for a process that decides without consuming telemetry (role decide).
func WatermarkKey(durable string) string { return watermarkPrefix + durable }

const watermarkPrefix = "watermark."

// watermarkStale is how long a shared watermark counts after it was last written: longer than
// the longest gap between clock ticks of a quiet consumer (longQuietTick), so a quiet partition
// is not taken for a retired one.
const watermarkStale = time.Minute

// shareWatermark writes the detector's watermark under WatermarkKey, at most once a second. It
// runs after each telemetry batch of the process that consumes the durable (clock ticks
// included, so a quiet consumer goes on writing).
func (p *Pipeline) shareWatermark(ctx context.Context, wm time.Time) {
	if wm.IsZero() {
		return
	}
	now := time.Now()
	p.wmMu.Lock()
	due := now.Sub(p.wmShared) >= time.Second
	if due {
		p.wmShared = now
	}
	p.wmMu.Unlock()
	kv := p.dec().state
	if !due || kv == nil {
		return
	}
	_, durable, _ := consumerOf(p.cfg)
	if _, err := kv.Put(ctx, WatermarkKey(durable), []byte(wm.UTC().Format(time.RFC3339Nano))); err != nil {
		p.log.Debug("ingest: cannot share the detector's watermark", "stage", "ingest", "err", err)
	}
}

// followWatermarks advances decide, in a process that consumes no telemetry (role decide), to the
// earliest watermark the consumers share (shareWatermark) among those written within
// watermarkStale: event time that every live partition has reached, so no verify period ends
// before the anomalies of its time have come from any of them. A consumer that stopped for good
// (a partition the stream is no longer cut into) drops out after watermarkStale.
func (p *Pipeline) followWatermarks(ctx context.Context) (stop func(), err error) {
	kv := p.dec().state
	w, err := kv.Watch(ctx, watermarkPrefix+"*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	type mark struct{ wm, at time.Time }
	marks := map[string]mark{}
	var last time.Time
	advance := func() {
		var low time.Time
		for _, m := range marks {
			if time.Since(m.at) < watermarkStale && (low.IsZero() || m.wm.Before(low)) {
				low = m.wm
			}
		}
		if low.After(last) {
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
					return
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
		_ = w.Stop()
		wg.Wait()
	}, nil
}
