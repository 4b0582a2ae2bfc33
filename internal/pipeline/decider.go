package pipeline

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/schemas"
)

// Durable consumers of the active decider besides DurableDecideAnomalies.
const (
	DurableDecideAcks      = "scalpel-decide-acks"
	DurableDecideApprovals = "scalpel-decide-approvals"
	DurableDecideRejected  = "scalpel-decide-rejected"
)

// deciderState is the decide stage's part of a Pipeline. It lives beside the struct (keyed by the
// pipeline) so the decide wiring stays in this file; fields are guarded by Pipeline.decideMu.
type deciderState struct {
	state jetstream.KeyValue // scalpel_state: lease and published-once records
	stops []func()           // consumers of the active decider; nil while standing by
	// unpublished holds decisions AdvanceDecide made but could not publish: no message will
	// offer them again, so the next call publishes them first.
	unpublished []schemas.Decision
}

var deciders sync.Map // *Pipeline → *deciderState

func (p *Pipeline) dec() *deciderState {
	v, _ := deciders.LoadOrStore(p, &deciderState{})
	return v.(*deciderState)
}

// lead rebuilds the engine and starts the consumers of the active decider.
func (p *Pipeline) lead(ctx context.Context) error {
	p.decideMu.Lock()
	p.engine = NewEngine(p.cfg, p.catalog, p.log) // as replay builds it
	p.decideMu.Unlock()
	var stops []func()
	fail := func(err error) error {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		return fmt.Errorf("decide: %w", err)
	}
	deploysUpTo, err := p.rebuild(ctx)
	if err != nil {
		return fail(err)
	}
	// Deploys after the rebuild's last one are live: their decisions (restores) are published.
	dstop, err := p.followDeploys(ctx, deploysUpTo+1)
	if err != nil {
		return fail(err)
	}
	stops = append(stops, dstop)
	for _, c := range []struct {
		stream, durable, filter string
		handle                  func(context.Context, jetstream.Msg)
	}{
		{schemas.StreamAnomalies, DurableDecideAnomalies, p.subj.AnomalyAll(), p.handleAnomalyMsg},
		{schemas.StreamRollbacks, DurableDecideAcks, p.subj.RollbackAck("*"), p.handleAckMsg},
		{schemas.StreamDecisions, DurableDecideApprovals, p.subj.ApprovalAll(), p.handleApprovalMsg},
		{schemas.StreamRejected, DurableDecideRejected, p.subj.Rejected(schemas.StageActuate), p.handleRejectedActuateMsg},
	} {
		cons, err := p.js.CreateOrUpdateConsumer(ctx, c.stream, jetstream.ConsumerConfig{
			Durable: c.durable, FilterSubject: c.filter, AckPolicy: jetstream.AckExplicitPolicy,
			// Never dropped: a message decide failed on (the state bucket or the stream out of
			// reach) is offered again, later and later, until it is decided. A bad one is
			// rejected and terminated instead (decideAndAck).
			AckWait: 30 * time.Second, MaxDeliver: -1,
		})
		if err != nil {
			return fail(fmt.Errorf("%s consumer: %w", c.durable, err))
		}
		h := c.handle
		cc, err := cons.Consume(func(m jetstream.Msg) { h(p.ctx, m) })
		if err != nil {
			return fail(fmt.Errorf("%s consumer: %w", c.durable, err))
		}
		stops = append(stops, cc.Drain)
	}
	p.decideMu.Lock()
	p.dec().stops = stops
	p.decideMu.Unlock()
	if p.followsShared() {
		// No detector of its own, or one that sees a part of the telemetry only: event time is
		// what the consumers share (followWatermarks), followed once the decider is in place to
		// be advanced.
		wstop, err := p.followWatermarks(p.ctx) // lives until unlead, not the start-up's ctx
		if err != nil {
			p.unlead()
			return fmt.Errorf("decide: follow the consumers' watermarks: %w", err)
		}
		p.decideMu.Lock()
		p.dec().stops = append(p.dec().stops, wstop)
		p.decideMu.Unlock()
	}
	return nil
}

// Leading reports whether this process is the active decider (it holds the lease and consumes).
func (p *Pipeline) Leading() bool {
	p.decideMu.Lock()
	defer p.decideMu.Unlock()
	return p.dec().stops != nil
}

// DecideIncidents returns the incidents the decide engine tracks (oldest first); a standby's
// engine is the one it rebuilt at its last takeover, or empty.
func (p *Pipeline) DecideIncidents() []decide.Incident {
	p.decideMu.Lock()
	defer p.decideMu.Unlock()
	if p.engine == nil {
		return nil
	}
	return p.engine.Incidents()
}

// unlead stops the active decider's consumers (standby).
func (p *Pipeline) unlead() {
	p.decideMu.Lock()
	stops := p.dec().stops
	p.dec().stops = nil
	p.dec().unpublished = nil // the next holder makes them again
	p.decideMu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}

// rebuildInput is one recorded input of the engine, replayed at takeover.
type rebuildInput struct {
	ts    time.Time
	kind  int // order at equal times: deploys, anomalies, approvals, acks, actuation failures
	apply func(context.Context) ([]schemas.Decision, error)
}

// rebuild feeds a fresh engine, outputs suppressed, with what the previous holder had handled:
// every deploy so far, and the anomalies, approvals, acks and actuation failures up to each
// durable's ack floor (the durables redeliver the rest). Inputs are merged in event time, so an
// approval lands after the recommendation it answers and an ack after its command's decision, as
// they did live; a takeover then knows every answered approval and every acked step instead of
// showing them pending again. Decisions re-made while rebuilding carry the ids the previous holder
// published them under, and the published-once records drop any that resurface later. It returns
// the stream sequence of the last deploy replayed.
func (p *Pipeline) rebuild(ctx context.Context) (uint64, error) {
	var inputs []rebuildInput
	add := func(ts time.Time, kind int, f func(context.Context) ([]schemas.Decision, error)) {
		inputs = append(inputs, rebuildInput{ts: ts, kind: kind, apply: f})
	}
	ds, err := p.js.Stream(ctx, schemas.StreamDeploys)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", schemas.StreamDeploys, err)
	}
	dinfo, err := ds.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", schemas.StreamDeploys, err)
	}
	deploysUpTo := dinfo.State.LastSeq
	err = p.readUpTo(ctx, schemas.StreamDeploys, p.subj.DeployAll(), deploysUpTo, func(m jetstream.Msg) {
		if ev, err := schemas.DecodeDeployEvent(m.Data()); err == nil {
			add(ev.TS, 0, func(ctx context.Context) ([]schemas.Decision, error) {
				ds, err := p.engine.HandleDeploy(ctx, ev)
				if err == nil {
					p.deploys.Add(1)
				}
				return ds, err
			})
		}
	})
	if err != nil {
		return 0, err
	}
	for _, c := range []struct {
		stream, durable, filter string
		kind                    int
		read                    func(jetstream.Msg)
	}{
		{schemas.StreamAnomalies, DurableDecideAnomalies, p.subj.AnomalyAll(), 1, func(m jetstream.Msg) {
			if a, err := schemas.DecodeAnomaly(m.Data()); err == nil {
				ts := a.TSDetected
				if a.IsResolved() && a.ResolvedAt != nil {
					ts = *a.ResolvedAt
				}
				add(ts, 1, func(ctx context.Context) ([]schemas.Decision, error) { return p.engine.HandleAnomaly(ctx, a) })
			}
		}},
		{schemas.StreamDecisions, DurableDecideApprovals, p.subj.ApprovalAll(), 2, func(m jetstream.Msg) {
			if ap, err := schemas.DecodeApproval(m.Data()); err == nil {
				add(ap.TS, 2, func(ctx context.Context) ([]schemas.Decision, error) { return p.engine.HandleApproval(ctx, ap) })
			}
		}},
		{schemas.StreamRollbacks, DurableDecideAcks, p.subj.RollbackAck("*"), 3, func(m jetstream.Msg) {
			if ack, err := schemas.DecodeAck(m.Data()); err == nil {
				add(ack.TS, 3, func(ctx context.Context) ([]schemas.Decision, error) { return p.engine.HandleAck(ctx, ack) })
			}
		}},
		{schemas.StreamRejected, DurableDecideRejected, p.subj.Rejected(schemas.StageActuate), 4, func(m jetstream.Msg) {
			if d, err := schemas.DecodeDecision(m.Data()); err == nil {
				reason, at := m.Headers().Get(schemas.HeaderRejectReason), d.TS
				if md, err := m.Metadata(); err == nil && md.Timestamp.After(at) {
					at = md.Timestamp
				}
				add(at, 4, func(ctx context.Context) ([]schemas.Decision, error) {
					return p.engine.HandleActuationFailure(ctx, d.ID, reason, at)
				})
			}
		}},
	} {
		floor, err := p.ackFloor(ctx, c.stream, c.durable)
		if err != nil {
			return 0, err
		}
		if err := p.readUpTo(ctx, c.stream, c.filter, floor, c.read); err != nil {
			return 0, err
		}
	}
	slices.SortStableFunc(inputs, func(a, b rebuildInput) int { return cmp.Or(a.ts.Compare(b.ts), cmp.Compare(a.kind, b.kind)) })
	p.decideMu.Lock()
	defer p.decideMu.Unlock()
	for _, in := range inputs {
		_, _ = in.apply(ctx) // already decided and published by the process that saw it first
	}
	p.log.Info("decide: engine rebuilt", "stage", "decide", "inputs", len(inputs), "incidents", len(p.engine.Incidents()))
	return deploysUpTo, nil
}

// ackFloor is the stream sequence up to which durable has acknowledged everything (0 when the
// durable does not exist yet).
func (p *Pipeline) ackFloor(ctx context.Context, stream, durable string) (uint64, error) {
	cons, err := p.js.Consumer(ctx, stream, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%s/%s: %w", stream, durable, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s/%s: %w", stream, durable, err)
	}
	return info.AckFloor.Stream, nil
}

// readUpTo hands every message of stream matching filter with a sequence up to upTo to read, in
// stream order, through an ordered consumer (nothing is acknowledged or changed).
func (p *Pipeline) readUpTo(ctx context.Context, stream, filter string, upTo uint64, read func(jetstream.Msg)) error {
	if upTo == 0 {
		return nil
	}
	oc, err := p.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return fmt.Errorf("%s replay: %w", stream, err)
	}
	info, err := oc.Info(ctx)
	if err != nil {
		return fmt.Errorf("%s replay: %w", stream, err)
	}
	if info.NumPending == 0 {
		return nil
	}
	for {
		batch, err := oc.Fetch(256, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("%s replay: %w", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if md.Sequence.Stream > upTo {
				return nil
			}
			read(m)
			if md.Sequence.Stream == upTo || md.NumPending == 0 {
				return nil
			}
		}
		if n == 0 {
			return nil
		}
	}
}

// followDeploys hands deploys from stream sequence from on to the engine as they arrive.
func (p *Pipeline) followDeploys(ctx context.Context, from uint64) (func(), error) {
	oc, err := p.js.OrderedConsumer(ctx, schemas.StreamDeploys, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{p.subj.DeployAll()},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		return nil, fmt.Errorf("%s follow: %w", schemas.StreamDeploys, err)
	}
	cc, err := oc.Consume(func(m jetstream.Msg) { p.handleDeployMsg(p.ctx, m, true) })
	if err != nil {
		return nil, fmt.Errorf("%s follow: %w", schemas.StreamDeploys, err)
	}
	return cc.Stop, nil
}

func (p *Pipeline) handleDeployMsg(ctx context.Context, m jetstream.Msg, live bool) {
	ev, err := schemas.DecodeDeployEvent(m.Data())
	if err != nil {
		// The deploy stream is replayed on each start; reject only the first time it is seen.
		if live {
			p.reject(ctx, "decide", m, "deploy event: "+err.Error())
		}
		return
	}
	p.decideMu.Lock()
	decisions, err := p.engine.HandleDeploy(ctx, ev)
	p.decideMu.Unlock()
	if err != nil {
		p.log.Warn("deploy not recorded", "stage", "decide", "service", ev.Service, "deploy", ev.ID, "err", err)
		return
	}
	p.deploys.Add(1)
	if live {
		p.publishDeployDecisions(ctx, decisions)
	}
}

// publishDeployDecisions publishes what a deploy decided (restores, rollbacks of anomalies that
// waited for it). The deploy stream is read by an ordered consumer with nothing to redeliver, so a
// failed publish is retried here, with backoff, until it succeeds or the pipeline stops; the
// decisions' ids make a repeat harmless.
func (p *Pipeline) publishDeployDecisions(ctx context.Context, decisions []schemas.Decision) {
	delay := 250 * time.Millisecond
	for attempt := 1; len(decisions) > 0; attempt++ {
		err := p.publishDecisions(ctx, decisions)
		if err == nil {
			return
		}
		if !p.Leading() {
			p.log.Info("decisions of a deploy left to the active decider: this process no longer decides",
				"stage", "decide", "decisions", len(decisions), "err", err)
			return
		}
		p.log.Warn("publish decisions of a deploy failed; retrying", "stage", "decide", "attempt", attempt, "delay", delay, "err", err)
		select {
		case <-ctx.Done():
			p.log.Error("decisions of a deploy not published: stopping", "stage", "decide", "decisions", len(decisions), "err", err)
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// decideAndAck runs one engine call under the lock, publishes its decisions and settles the
// message: bad input is terminated, other errors are retried.
func (p *Pipeline) decideAndAck(ctx context.Context, m jetstream.Msg, what string, f func() ([]schemas.Decision, error)) {
	p.decideMu.Lock()
	decisions, err := f()
	p.decideMu.Unlock()
	switch {
	case errors.Is(err, decide.ErrInvalidInput):
		p.reject(ctx, "decide", m, what+": "+err.Error())
		_ = m.Term()
		return
	case errors.Is(err, decide.ErrUnknownDecision):
		p.log.Warn("decide: "+what+" names an unknown decision", "stage", "decide", "err", err)
		_ = m.Ack()
		return
	case err != nil:
		delay, n := redeliveryDelay(m)
		p.log.Warn(what+" not decided; will retry", "stage", "decide", "err", err, "deliveries", n, "delay", delay)
		_ = m.NakWithDelay(delay)
		return
	}
	if err := p.publishDecisions(ctx, decisions); err != nil {
		delay, n := redeliveryDelay(m)
		p.log.Warn("publish decisions failed; will retry", "stage", "decide", "err", err, "deliveries", n, "delay", delay)
		_ = m.NakWithDelay(delay)
		return
	}
	_ = m.Ack()
}

// redeliveryDelay is how long a message decide failed on waits before it is offered again: 1 s,
// doubling with each delivery up to 30 s. It also returns how many times it has been delivered.
func redeliveryDelay(m jetstream.Msg) (time.Duration, uint64) {
	var n uint64 = 1
	if md, err := m.Metadata(); err == nil {
		n = max(md.NumDelivered, 1)
	}
	return min(time.Second<<min(n-1, 5), 30*time.Second), n
}

func (p *Pipeline) handleAnomalyMsg(ctx context.Context, m jetstream.Msg) {
	var a schemas.Anomaly
	if err := json.Unmarshal(m.Data(), &a); err != nil {
		p.reject(ctx, "decide", m, "anomaly: malformed JSON: "+err.Error())
		_ = m.Term()
		return
	}
	p.decideAndAck(ctx, m, "anomaly", func() ([]schemas.Decision, error) { return p.engine.HandleAnomaly(ctx, &a) })
}

func (p *Pipeline) handleAckMsg(ctx context.Context, m jetstream.Msg) {
	ack, err := schemas.DecodeAck(m.Data())
	if err != nil {
		p.reject(ctx, "decide", m, "rollback ack: "+err.Error())
		_ = m.Term()
		return
	}
	p.decideAndAck(ctx, m, "rollback ack", func() ([]schemas.Decision, error) { return p.engine.HandleAck(ctx, ack) })
}

func (p *Pipeline) handleApprovalMsg(ctx context.Context, m jetstream.Msg) {
	ap, err := schemas.DecodeApproval(m.Data())
	if err != nil {
		p.reject(ctx, "decide", m, "approval: "+err.Error())
		_ = m.Term()
		return
	}
	p.decideAndAck(ctx, m, "approval", func() ([]schemas.Decision, error) { return p.engine.HandleApproval(ctx, ap) })
}

// handleRejectedActuateMsg turns a decision actuate gave up on into a failed ladder step.
func (p *Pipeline) handleRejectedActuateMsg(ctx context.Context, m jetstream.Msg) {
	d, err := schemas.DecodeDecision(m.Data())
	if err != nil {
		_ = m.Ack() // not a decision (actuate rejects only decisions); nothing to verify
		return
	}
	reason := m.Headers().Get(schemas.HeaderRejectReason)
	at := d.TS
	if md, err := m.Metadata(); err == nil && md.Timestamp.After(at) {
		at = md.Timestamp
	}
	p.decideAndAck(ctx, m, "actuation failure", func() ([]schemas.Decision, error) {
		return p.engine.HandleActuationFailure(ctx, d.ID, reason, at)
	})
}

// AdvanceDecide lets event time pass in the decide stage up to the detector's watermark: verify
// periods, approval timeouts. The detect stage calls it after each telemetry batch, or, when this
// process decides on the consumers' shared event time (followsShared), followWatermarks does.
func (p *Pipeline) AdvanceDecide(ctx context.Context, watermark time.Time) {
	p.decideMu.Lock()
	if p.engine == nil || p.dec().stops == nil {
		p.decideMu.Unlock()
		return // standing by: the active decider advances its own engine
	}
	if l := p.decideLease.Load(); l != nil && !leaseValid(l) {
		// Its decisions could not be published (see publishDecisions), and nothing would
		// offer them again: the engine waits, and a later batch advances it past this watermark.
		p.decideMu.Unlock()
		return
	}
	decisions, err := p.engine.Advance(watermark)
	p.decideWM, p.decideAt = watermark, time.Now()
	decisions = append(p.dec().unpublished, decisions...)
	p.dec().unpublished = nil
	p.decideMu.Unlock()
	if err != nil {
		p.log.Warn("decide: advance", "stage", "decide", "err", err)
	}
	if err := p.publishDecisions(ctx, decisions); err != nil {
		// Those published already are recorded, and publishDecisions skips them next time.
		p.log.Error("publish decisions failed; will retry after the next batch", "stage", "decide",
			"decisions", len(decisions), "err", err)
		p.decideMu.Lock()
		if p.dec().stops != nil { // still deciding (a new holder makes them again)
			p.dec().unpublished = append(decisions, p.dec().unpublished...)
		}
		p.decideMu.Unlock()
	}
}

// DecideWatermark is the event time the decide stage has reached (verify periods and approval
// timeouts end on it), and the wall-clock time it was last advanced; zero while this process does
// not decide, or has not advanced it yet.
func (p *Pipeline) DecideWatermark() (watermark, at time.Time) {
	p.decideMu.Lock()
	defer p.decideMu.Unlock()
	if p.dec().stops == nil {
		return time.Time{}, time.Time{}
	}
	return p.decideWM, p.decideAt
}

// publishDecisions publishes each decision once: a decision already recorded in scalpel_state
// (published before a restart or by the previous lease holder) is skipped; the Nats-Msg-Id covers a
// crash between publishing and recording.
//
// Only while the decide lease is valid by this process's clock: a decider paused past its lease
// (a stopped VM, a long stall) learns that another took over only at its next renewal, and what
// it decided meanwhile, on a state the new holder has moved past, is not published. The message
// that led to it goes back for the new holder.
func (p *Pipeline) publishDecisions(ctx context.Context, decisions []schemas.Decision) error {
	if l := p.decideLease.Load(); len(decisions) > 0 && l != nil && !leaseValid(l) {
		return errDecideLeaseLapsed
	}
	for i := range decisions {
		d := &decisions[i]
		if p.dec().state != nil {
			if done, err := decide.WasPublished(ctx, p.dec().state, d.ID); err != nil {
				return err
			} else if done {
				p.log.Debug("decision already published", "stage", "decide", "id", d.ID)
				continue
			}
		}
		b, err := json.Marshal(d)
		if err != nil {
			return fmt.Errorf("encode decision: %w", err)
		}
		if _, err := p.js.Publish(ctx, p.subj.Decision(d.Service), b, jetstream.WithMsgID(d.ID)); err != nil {
			return fmt.Errorf("publish decision %s: %w", d.ID, err)
		}
		if p.dec().state != nil {
			if _, err := decide.Published(ctx, p.dec().state, d.ID); err != nil {
				return err
			}
		}
		p.m.decisions.WithLabelValues(d.Action).Inc()
		p.log.Debug("decision published", "stage", "decide", "service", d.Service, "action", d.Action, "granularity", d.Granularity,
			"incident", d.IncidentID, "id", d.ID, "dry_run", d.DryRun, "reason", d.Reason)
	}
	return nil
}
