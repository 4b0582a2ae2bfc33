package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/schemas"
)

// IngestLeaseKey is the scalpel_state key of the lease on an ingest durable: the process that
// holds it consumes the durable and runs the detector on what it delivers.
func IngestLeaseKey(durable string) string { return "ingest.lease." + durable }

// The stages that run as one active instance, as scalpel_stage_active labels them.
const (
	stageIngest = iota
	stageDecide
)

var stageNames = [...]string{stageIngest: "ingest", stageDecide: "decide"}

// setActive records whether this process runs stage, for scalpel_stage_active and Active.
func (p *Pipeline) setActive(stage int, on bool) {
	p.active[stage].Store(on)
	v := 0.0
	if on {
		v = 1
	}
	p.m.active.WithLabelValues(stageNames[stage]).Set(v)
}

// Active reports whether this process consumes the telemetry (ingest, with detect) and whether it
// decides; false while it stands by for another process.
func (p *Pipeline) Active() (ingest, decide bool) {
	return p.active[stageIngest].Load(), p.active[stageDecide].Load()
}

// leases are the leases of the stages that run as one active instance among the serve
// processes sharing a server, and whether this process holds them. Only the loop of startActive
// touches them (and renewing, while the loop waits on a takeover), then Stop once it has ended.
type leases struct {
	ingest, decide      *decide.Lease
	ingesting, deciding bool
	// unreachable is set while a standby cannot reach the ingest lease (logged once per outage).
	unreachable bool
}

// startActive runs ingest, detect and decide as single active instances.
//
// The detector is stateful: every series must see all of its events, in order. So serve processes
// sharing an ingest durable do not share its messages, as stateless consumers would; the one that
// holds the durable's lease (IngestLeaseKey in scalpel_state) consumes it, and the others stand
// by. One process at a time also decides (decide.LeaseKey), and it is one that ingests: decide's
// verify periods and approval timeouts run on its detector's watermark. A process that takes a
// lease over restores the detector from the last checkpoint and the telemetry acknowledged since
// (restoreDetector), or rebuilds the decide engine from the streams (lead), before it consumes.
// Each lease is renewed every third of decide.lease_ttl; a process that dies is replaced within
// the TTL, one that stops releases its leases when it has drained.
func (p *Pipeline) startActive(ctx context.Context) error {
	stateKV, err := p.js.KeyValue(ctx, schemas.BucketState)
	if err != nil {
		return fmt.Errorf("open %s: %w", schemas.BucketState, err)
	}
	p.dec().state = stateKV
	ttl := p.cfg.Decide.LeaseDuration()
	_, durable, _ := consumerOf(p.cfg)
	l := &leases{ingest: decide.NewLease(stateKV, IngestLeaseKey(durable), ttl), decide: decide.NewLease(stateKV, decide.LeaseKey, ttl)}
	p.ingestLease.Store(l.ingest)
	p.decideLease.Store(l.decide)
	if err := p.stepActive(ctx, l, true); err != nil {
		p.giveUp(l, true)
		return err
	}
	stopLoop := every(ttl/3, func() {
		_ = p.stepActive(p.ctx, l, false) // after start, failures are logged and retried
	})
	p.stops = append(p.stops, func() {
		stopLoop()
		p.giveUp(l, true)
		deciders.Delete(p)
	})
	return nil
}

// stepActive takes, renews or gives up the leases. At start (first) a failure to reach the
// bucket or to start a stage is returned; later it is logged, and the next step tries again.
func (p *Pipeline) stepActive(ctx context.Context, l *leases, first bool) error {
	if !p.cfg.Ingests() {
		return p.stepDecide(ctx, l, first) // role decide: no telemetry, no ingest lease
	}
	if b := p.bal; b != nil {
		k := *p.cfg.Ingest.Partition
		if l.ingesting && b.shouldRelease(k, l.deciding) {
			p.log.Info("ingest: handing the partition over: this process holds more than its share", "stage", "ingest", "lease", l.ingest.Key())
			p.giveUp(l, true)
			return nil
		}
		if !l.ingesting && !b.mayTake(k) {
			return nil // its share is full: another process takes this partition
		}
		defer func() {
			if l.ingesting {
				b.taken(k)
			} else {
				b.dropped(k)
			}
		}()
	}
	err := l.ingest.Acquire(ctx)
	if l.unreachable && (err == nil || errors.Is(err, decide.ErrLeaseHeld)) {
		l.unreachable = false
		p.log.Info("ingest: lease reachable again", "stage", "ingest", "lease", l.ingest.Key())
	}
	switch {
	case err == nil:
	case l.ingesting:
		p.log.Warn("ingest: lease lost, standing by", "stage", "ingest", "lease", l.ingest.Key(), "err", err)
		p.giveUp(l, false)
		return nil
	case errors.Is(err, decide.ErrLeaseHeld):
		if first {
			p.log.Info("ingest: standing by, another process consumes the durable", "stage", "ingest", "lease", l.ingest.Key())
		}
		return nil
	case first:
		return fmt.Errorf("ingest: %w", err)
	case !l.unreachable:
		l.unreachable = true
		p.log.Warn("ingest: cannot reach the lease; standing by until it can", "stage", "ingest", "lease", l.ingest.Key(), "err", err)
		return nil
	default:
		return nil
	}
	if !l.ingesting && !first {
		p.log.Info("ingest: lease acquired, taking over", "stage", "ingest", "lease", l.ingest.Key(), "holder", l.ingest.Holder())
	}
	if err := p.stepDecide(ctx, l, first); err != nil {
		return err
	}
	if l.ingesting {
		return nil
	}
	stopRenewing := renewing(ctx, l.ingest, l.decide)
	err = p.startIngest(ctx)
	stopRenewing()
	if err != nil { // startIngest sets p.ingest only once its consumer runs: nothing to stop
		if first {
			return err
		}
		p.log.Error("ingest: take over failed", "stage", "ingest", "err", err)
		p.giveUp(l, false)
		return nil
	}
	l.ingesting = true
	p.setActive(stageIngest, true)
	return nil
}

// stepDecide takes, renews or gives up the decide lease, for a process that holds the ingest one
// and may decide (role).
func (p *Pipeline) stepDecide(ctx context.Context, l *leases, first bool) error {
	if !p.cfg.Decides() {
		return nil
	}
	err := l.decide.Acquire(ctx)
	switch {
	case err == nil && !l.deciding:
		if !first {
			p.log.Info("decide: lease acquired, taking over", "stage", "decide", "holder", l.decide.Holder())
		}
		stopRenewing := renewing(ctx, l.ingest, l.decide)
		err := p.lead(ctx)
		stopRenewing()
		if err != nil {
			p.unlead()
			if first {
				return err
			}
			p.log.Error("decide: take over failed", "stage", "decide", "err", err)
			_ = l.decide.Release(ctx)
			return nil
		}
		l.deciding = true
		p.setActive(stageDecide, true)
	case err != nil && l.deciding:
		p.log.Warn("decide: lease lost, standing by", "stage", "decide", "err", err)
		p.unlead()
		l.deciding = false
		p.setActive(stageDecide, false)
	case err != nil && first && !errors.Is(err, decide.ErrLeaseHeld):
		return fmt.Errorf("decide: %w", err)
	case err != nil && first:
		p.log.Info("decide: standing by, another process holds the lease", "stage", "decide")
	}
	return nil
}

// giveUp stops both stages and releases their leases, upstream first. With drain (Stop, or a
// start that failed), ingest hands every fetched message to the detector and checkpoints before
// its lease goes, so a standby takes over at once from that state; the leases are renewed
// meanwhile, or drains that outlast their remaining time would be fenced off the batches and
// decisions they are handing over. Without (the ingest lease was lost, or a takeover failed),
// fetched telemetry goes back to the server unhandled, for the new holder, and nothing is
// checkpointed over its state. Releasing a lease this process does not hold does nothing.
func (p *Pipeline) giveUp(l *leases, drain bool) {
	ctx := context.WithoutCancel(p.ctx)
	stopRenewing := func() {}
	if drain {
		stopRenewing = renewing(ctx, l.ingest, l.decide)
	}
	p.stopIngest(drain)
	p.unlead()
	stopRenewing()
	_ = l.ingest.Release(ctx)
	_ = l.decide.Release(ctx)
	l.ingesting, l.deciding = false, false
	p.setActive(stageIngest, false)
	p.setActive(stageDecide, false)
}

// renewing renews those of the leases this process holds every third of their TTL until the
// returned func is called. A takeover restores the detector or rebuilds the decide engine before
// it consumes, which can outlast the TTL; without renewals another standby would take the lease
// meanwhile and do the same.
func renewing(ctx context.Context, leases ...*decide.Lease) (stop func()) {
	return every(leases[0].TTL()/3, func() {
		for _, l := range leases {
			if l.Held() {
				_ = l.Acquire(ctx) // a lease lost meanwhile is noticed by the next step
			}
		}
	})
}

// every runs fn every d on a goroutine of its own until stop is called; stop waits for a run in
// progress.
func every(d time.Duration, fn func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fn()
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}
