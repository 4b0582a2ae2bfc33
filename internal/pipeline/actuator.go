package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/actuate/exec"
	"github.com/scalpel-dev/scalpel/actuate/handoff"
	"github.com/scalpel-dev/scalpel/actuate/logactuator"
	"github.com/scalpel-dev/scalpel/actuate/natsactuator"
	"github.com/scalpel-dev/scalpel/actuate/webhook"
	"github.com/scalpel-dev/scalpel/internal/reject"
	"github.com/scalpel-dev/scalpel/schemas"
)

// startActuate runs the decision → actuator hand-off on watermill's Router over the durable
// DurableActuate consumer of DECISIONS; decisions that cannot be carried out land in
// rejected.actuate.
func (p *Pipeline) startActuate(ctx context.Context) error {
	log := p.log.With("stage", "actuate")
	resolver, err := p.newActuatorSet(ctx, log)
	if err != nil {
		return err
	}
	// The hand-off's subscriber drains and closes the connection it is given, so it gets one of
	// its own, dialled with the pipeline connection's options.
	nc, err := ownConn(p.js.Conn())
	if err != nil {
		return fmt.Errorf("actuate: connect: %w", err)
	}
	sub, err := handoff.NewJetStreamSubscriber(nc, handoff.JetStreamConfig{
		Durable: DurableActuate, Subjects: p.subj, Handoff: p.cfg.Actuate.HandOff, Logger: log,
	})
	if err != nil {
		nc.Close()
		return fmt.Errorf("actuate: %w", err)
	}
	h, err := handoff.New(p.cfg.Actuate.HandOff, sub, handoff.NewRejectPublisher(p.rejecter), resolver.resolve,
		handoff.WithLogger(log), handoff.WithSubjects(p.subj),
		handoff.WithCommandTTL(time.Duration(p.cfg.Actuate.CommandTTL)),
		handoff.WithObserver(func(cmd schemas.RollbackCommand, err error) {
			switch {
			case err == nil:
				p.m.commands.WithLabelValues("ok").Inc()
			case actuate.IsPermanent(err):
				p.m.actuateErr.WithLabelValues("permanent").Inc()
			default:
				p.m.actuateErr.WithLabelValues("retryable").Inc()
			}
		}))
	if err != nil {
		_ = sub.Close()
		return fmt.Errorf("actuate: %w", err)
	}
	// The router lives until Stop, not until the start-up context ends.
	if err := h.Start(p.ctx); err != nil {
		_ = h.Close()
		return fmt.Errorf("actuate: %w", err)
	}
	p.stops = append(p.stops, func() {
		if err := h.Close(); err != nil {
			log.Warn("closing the hand-off", "err", err)
		}
	})
	return nil
}

// ownConn dials a second connection with nc's options (servers, credentials, TLS, in-process
// server) to the server nc is connected to.
func ownConn(nc *nats.Conn) (*nats.Conn, error) {
	opts := nc.Opts
	if u := nc.ConnectedUrl(); u != "" {
		opts.Url = u
	}
	if opts.Name != "" {
		opts.Name += "-actuate"
	}
	return opts.Connect()
}

// actuatorSet builds and caches each service's actuators: nats and log are shared, webhook and exec
// are per service (their settings are).
type actuatorSet struct {
	p        *Pipeline
	log      *slog.Logger
	override map[string]actuate.Actuator

	mu        sync.Mutex
	perTarget map[string]actuate.Actuator // "<name>/<service>" → actuator
}

func (p *Pipeline) newActuatorSet(ctx context.Context, log *slog.Logger) (*actuatorSet, error) {
	s := &actuatorSet{p: p, log: log, override: p.actuators, perTarget: map[string]actuate.Actuator{}}
	if s.override != nil {
		return s, nil
	}
	activeKV, err := p.js.KeyValue(ctx, schemas.BucketActive)
	if err != nil {
		return nil, fmt.Errorf("actuate: open %s: %w", schemas.BucketActive, err)
	}
	na, err := natsactuator.New(p.js, activeKV, p.subj, natsactuator.WithLogger(log.With("actuator", "nats")))
	if err != nil {
		return nil, fmt.Errorf("actuate: %w", err)
	}
	s.perTarget["nats/"] = na
	s.perTarget["log/"] = logactuator.New(log.With("actuator", "log"))
	return s, nil
}

// names returns the actuators of service: its manifest's list, else the configuration's.
func (s *actuatorSet) names(ctx context.Context, service string) []string {
	names := s.p.cfg.ActuatorsFor(service)
	if m, err := s.p.catalog.Manifest(ctx, service); err == nil && len(m.Actuators) > 0 {
		names = m.Actuators
	}
	return names
}

// resolve is the hand-off's Resolver.
func (s *actuatorSet) resolve(ctx context.Context, service string) (actuate.Actuator, error) {
	names := s.names(ctx, service)
	var as []actuate.Actuator
	for _, n := range names {
		if s.override != nil {
			if a, ok := s.override[n]; ok {
				as = append(as, a)
			}
			continue
		}
		a, err := s.get(n, service)
		if err != nil {
			// A manifest naming an actuator the configuration cannot build: no retry repairs it.
			return nil, actuate.Permanent(err)
		}
		as = append(as, a)
	}
	switch len(as) {
	case 0:
		return nil, actuate.Permanent(fmt.Errorf("no usable actuator among [%s] for %s", strings.Join(names, ", "), service))
	case 1:
		return as[0], nil
	}
	return actuate.Multi(as...), nil
}

func (s *actuatorSet) get(name, service string) (actuate.Actuator, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.perTarget[name+"/"]; ok {
		return a, nil
	}
	key := name + "/" + service
	if a, ok := s.perTarget[key]; ok {
		return a, nil
	}
	log := s.log.With("actuator", name, "service", service)
	var (
		a   actuate.Actuator
		err error
	)
	switch name {
	case "webhook":
		a, err = webhook.New(s.p.cfg.Actuate.Webhook.For(service), webhook.WithLogger(log))
	case "exec":
		a, err = exec.New(s.p.cfg.Actuate.Exec.For(service), exec.WithLogger(log))
	default:
		err = fmt.Errorf("unknown actuator %q", name)
	}
	if err != nil {
		return nil, fmt.Errorf("actuator %s for %s: %w", name, service, err)
	}
	s.perTarget[key] = a
	return a, nil
}

func (p *Pipeline) reject(ctx context.Context, stage string, m jetstream.Msg, reason string) {
	if err := p.rejecter.Reject(ctx, stage, reject.FromJetStream(m), "invalid", reason); err != nil {
		p.log.Error("could not publish reject", "stage", stage, "subject", m.Subject(), "reason", reason, "err", err)
	}
}
