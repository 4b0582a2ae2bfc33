package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/actuate/logactuator"
	"github.com/scalpel-dev/scalpel/actuate/natsactuator"
	"github.com/scalpel-dev/scalpel/internal/reject"
	"github.com/scalpel-dev/scalpel/schemas"
)

func (p *Pipeline) startActuate(ctx context.Context) error {
	if p.actuators == nil {
		activeKV, err := p.js.KeyValue(ctx, schemas.BucketActive)
		if err != nil {
			return fmt.Errorf("actuate: open %s: %w", schemas.BucketActive, err)
		}
		na, err := natsactuator.New(p.js, activeKV, p.subj, natsactuator.WithLogger(p.log.With("stage", "actuate", "actuator", "nats")))
		if err != nil {
			return fmt.Errorf("actuate: %w", err)
		}
		p.actuators = map[string]actuate.Actuator{
			"nats": na,
			"log":  logactuator.New(p.log.With("stage", "actuate", "actuator", "log")),
		}
	}
	cons, err := p.js.CreateOrUpdateConsumer(ctx, schemas.StreamDecisions, jetstream.ConsumerConfig{
		Durable:       DurableActuate,
		FilterSubject: p.subj.DecisionAll(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       60 * time.Second,
		MaxDeliver:    8,
		BackOff:       []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second},
	})
	if err != nil {
		return fmt.Errorf("actuate: decisions consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { p.handleDecisionMsg(p.ctx, m) })
	if err != nil {
		return fmt.Errorf("actuate: decisions consumer: %w", err)
	}
	p.stops = append(p.stops, cc.Drain)
	return nil
}

func (p *Pipeline) actuatorFor(service string) actuate.Actuator {
	names := p.cfg.ActuatorsFor(service)
	if m, err := p.catalog.Manifest(context.Background(), service); err == nil && len(m.Actuators) > 0 {
		names = m.Actuators
	}
	var as []actuate.Actuator
	for _, n := range names {
		if a, ok := p.actuators[n]; ok {
			as = append(as, a)
		}
	}
	if len(as) == 1 {
		return as[0]
	}
	return actuate.Multi(as...)
}

func (p *Pipeline) handleDecisionMsg(ctx context.Context, m jetstream.Msg) {
	var d schemas.Decision
	if err := json.Unmarshal(m.Data(), &d); err != nil {
		p.reject(ctx, "actuate", m, "decision: malformed JSON: "+err.Error())
		_ = m.Term()
		return
	}
	cmds := actuate.Commands(&d, time.Duration(p.cfg.Actuate.CommandTTL))
	act := p.actuatorFor(d.Service)
	for _, cmd := range cmds {
		if err := act.Actuate(ctx, cmd); err != nil {
			if actuate.IsPermanent(err) {
				p.m.actuateErr.WithLabelValues("permanent").Inc()
				p.log.Error("command failed permanently", "stage", "actuate", "command", cmd.ID, "target", cmd.Target(), "err", err)
				p.reject(ctx, "actuate", m, fmt.Sprintf("command %s for %s: %v", cmd.ID, cmd.Target(), err))
				_ = m.Term()
				return
			}
			p.m.actuateErr.WithLabelValues("retryable").Inc()
			p.log.Warn("command failed; will retry", "stage", "actuate", "command", cmd.ID, "target", cmd.Target(), "err", err)
			_ = m.Nak() // the consumer's BackOff spaces the retries
			return
		}
		p.m.commands.WithLabelValues("ok").Inc()
		p.log.Info("command", "stage", "actuate", "command", cmd.ID, "action", cmd.Action, "target", cmd.Target(),
			"from", cmd.FromVersion, "to", cmd.ToVersion)
	}
	_ = m.Ack()
}

func (p *Pipeline) reject(ctx context.Context, stage string, m jetstream.Msg, reason string) {
	if err := p.rejecter.Reject(ctx, stage, reject.FromJetStream(m), "invalid", reason); err != nil {
		p.log.Error("could not publish reject", "stage", stage, "subject", m.Subject(), "reason", reason, "err", err)
	}
}
