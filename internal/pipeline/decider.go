package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/schemas"
)

func (p *Pipeline) startDecide(ctx context.Context) error {
	// Deploy history is replayed from the start of DEPLOYS on every start, so a restarted decider
	// knows every version and open window. Decisions made while catching up are dropped: they were
	// published by the process that saw those deploys first.
	stream, err := p.js.Stream(ctx, schemas.StreamDeploys)
	if err != nil {
		return fmt.Errorf("decide: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("decide: %w", err)
	}
	catchUpTo := info.State.LastSeq
	deploys, err := p.js.OrderedConsumer(ctx, schemas.StreamDeploys, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{p.subj.DeployAll()},
	})
	if err != nil {
		return fmt.Errorf("decide: deploys consumer: %w", err)
	}
	caughtUp := make(chan struct{})
	var once sync.Once
	if catchUpTo == 0 {
		once.Do(func() { close(caughtUp) })
	}
	dcc, err := deploys.Consume(func(m jetstream.Msg) {
		md, _ := m.Metadata()
		live := md == nil || md.Sequence.Stream > catchUpTo
		p.handleDeployMsg(p.ctx, m, live)
		if md != nil && md.Sequence.Stream >= catchUpTo {
			once.Do(func() { close(caughtUp) })
		}
	})
	if err != nil {
		return fmt.Errorf("decide: deploys consumer: %w", err)
	}
	p.stops = append(p.stops, dcc.Stop)
	select {
	case <-caughtUp:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("decide: timed out replaying deploy history")
	}

	cons, err := p.js.CreateOrUpdateConsumer(ctx, schemas.StreamAnomalies, jetstream.ConsumerConfig{
		Durable:       DurableDecideAnomalies,
		FilterSubject: p.subj.AnomalyAll(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    10,
	})
	if err != nil {
		return fmt.Errorf("decide: anomalies consumer: %w", err)
	}
	acc, err := cons.Consume(func(m jetstream.Msg) { p.handleAnomalyMsg(p.ctx, m) })
	if err != nil {
		return fmt.Errorf("decide: anomalies consumer: %w", err)
	}
	p.stops = append(p.stops, acc.Drain)
	return nil
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
		if err := p.publishDecisions(ctx, decisions); err != nil {
			p.log.Error("publish decisions", "stage", "decide", "err", err)
		}
	}
}

func (p *Pipeline) handleAnomalyMsg(ctx context.Context, m jetstream.Msg) {
	var a schemas.Anomaly
	if err := json.Unmarshal(m.Data(), &a); err != nil {
		p.reject(ctx, "decide", m, "anomaly: malformed JSON: "+err.Error())
		_ = m.Term()
		return
	}
	if err := a.Validate(); err != nil {
		p.reject(ctx, "decide", m, "anomaly: "+err.Error())
		_ = m.Term()
		return
	}
	p.decideMu.Lock()
	decisions, err := p.engine.HandleAnomaly(ctx, &a)
	p.decideMu.Unlock()
	if err != nil {
		p.log.Warn("anomaly not decided; will retry", "stage", "decide", "anomaly", a.ID, "err", err)
		_ = m.NakWithDelay(2 * time.Second)
		return
	}
	if err := p.publishDecisions(ctx, decisions); err != nil {
		p.log.Warn("publish decisions failed; will retry", "stage", "decide", "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
}

func (p *Pipeline) publishDecisions(ctx context.Context, decisions []schemas.Decision) error {
	for i := range decisions {
		d := &decisions[i]
		b, err := json.Marshal(d)
		if err != nil {
			return fmt.Errorf("encode decision: %w", err)
		}
		if _, err := p.js.Publish(ctx, p.subj.Decision(d.Service), b, jetstream.WithMsgID(d.ID)); err != nil {
			return fmt.Errorf("publish decision %s: %w", d.ID, err)
		}
		p.m.decisions.WithLabelValues(d.Action).Inc()
		p.log.Debug("decision published", "stage", "decide", "service", d.Service, "action", d.Action, "granularity", d.Granularity,
			"incident", d.IncidentID, "id", d.ID, "dry_run", d.DryRun, "reason", d.Reason)
	}
	return nil
}
