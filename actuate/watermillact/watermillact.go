// Package watermillact is the `watermill` actuator: it publishes each command through any
// watermill message.Publisher — Kafka, AMQP, SQL, Google Pub/Sub, NATS — so that teams whose
// deployers live on another bus receive the same CloudEvent the nats actuator puts on
// rollback.cmd.<svc>.
//
// The message is the binary-mode CloudEvent: metadata = the ce-* headers, content-type and
// Nats-Msg-Id (what schemas.EncodeCommandEvent writes), payload = the command as JSON, UUID = the
// command id. A bus without broker-side deduplication may deliver a retried command twice;
// receivers dedupe by ce-id, as the deployer SDK does.
package watermillact

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/schemas"
)

// Actuator publishes commands through a watermill Publisher. It is safe for concurrent use when
// the Publisher is, as watermill's are.
type Actuator struct {
	pub    message.Publisher
	topic  func(*schemas.RollbackCommand) string
	log    *slog.Logger
	source string
	now    func() time.Time
}

var _ actuate.Actuator = (*Actuator)(nil)

// Option configures an Actuator.
type Option func(*Actuator) error

// WithSubjects publishes to subj.RollbackCmd(service), so a prefix applies (default: no prefix).
func WithSubjects(subj schemas.Subjects) Option {
	return WithTopic(func(c *schemas.RollbackCommand) string { return subj.RollbackCmd(c.Service) })
}

// WithTopic sets the topic of a command (default rollback.cmd.<svc>). Kafka users often want one
// topic for all services ("scalpel-rollbacks"); the service is in the payload and metadata.
func WithTopic(topic func(*schemas.RollbackCommand) string) Option {
	return func(a *Actuator) error {
		if topic == nil {
			return errors.New("watermillact: nil topic function")
		}
		a.topic = topic
		return nil
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(a *Actuator) error {
		if l == nil {
			return errors.New("watermillact: nil logger")
		}
		a.log = l
		return nil
	}
}

// WithSource sets the CloudEvent source (default schemas.DefaultCommandSource).
func WithSource(source string) Option {
	return func(a *Actuator) error {
		if source == "" {
			return errors.New("watermillact: empty source")
		}
		a.source = source
		return nil
	}
}

// WithClock sets the clock of expiry checks (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(a *Actuator) error {
		if now == nil {
			return errors.New("watermillact: nil clock")
		}
		a.now = now
		return nil
	}
}

// New returns an actuator publishing through pub. The caller owns pub and closes it.
func New(pub message.Publisher, opts ...Option) (*Actuator, error) {
	if pub == nil {
		return nil, errors.New("watermillact: nil publisher")
	}
	a := &Actuator{
		pub:    pub,
		topic:  func(c *schemas.RollbackCommand) string { return schemas.Subjects{}.RollbackCmd(c.Service) },
		log:    slog.New(slog.DiscardHandler),
		source: schemas.DefaultCommandSource,
		now:    time.Now,
	}
	for _, o := range opts {
		if err := o(a); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Message returns the watermill message of cmd.
func Message(cmd *schemas.RollbackCommand, source string) (*message.Message, error) {
	hdr, data, err := schemas.EncodeCommandEvent(cmd, source)
	if err != nil {
		return nil, err
	}
	msg := message.NewMessage(cmd.ID, data)
	for k, vs := range hdr {
		if len(vs) > 0 {
			msg.Metadata.Set(k, vs[0])
		}
	}
	return msg, nil
}

// Actuate publishes cmd. Publisher errors are retryable: watermill does not classify them, and a
// broker that is down now may not be in a second.
func (a *Actuator) Actuate(ctx context.Context, cmd schemas.RollbackCommand) error {
	if err := actuate.ContextErr(ctx); err != nil {
		return err
	}
	if err := actuate.Check(&cmd, a.now()); err != nil {
		return err
	}
	msg, err := Message(&cmd, a.source)
	if err != nil {
		return actuate.Permanent(err)
	}
	msg.SetContext(ctx)
	topic := a.topic(&cmd)
	if err := a.pub.Publish(topic, msg); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return actuate.Retryable(fmt.Errorf("publish command %s to %s: %w (%v)", cmd.ID, topic, cerr, err))
		}
		return actuate.Retryable(fmt.Errorf("publish command %s to %s: %w", cmd.ID, topic, err))
	}
	a.log.Debug("command published", "command_id", cmd.ID, "target", cmd.Target(), "topic", topic)
	return nil
}
