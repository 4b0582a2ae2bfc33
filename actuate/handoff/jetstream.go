package handoff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/internal/reject"
	"github.com/scalpel-dev/scalpel/schemas"
)

// JetStreamConfig says how the hand-off consumes the DECISIONS stream.
type JetStreamConfig struct {
	// Durable is the consumer's name; keeping it stable lets a restarted process continue where
	// the last one stopped.
	Durable string
	// Subjects gives the filter (decision.> under the prefix).
	Subjects schemas.Subjects
	// Handoff is the hand-off's Config; AckWait comes from it.
	Handoff Config
	// MaxDeliver bounds redeliveries of a decision the hand-off could not settle (the process
	// died, the reject could not be stored). Default -1, unlimited: a decision is carried out or
	// rejected to rejected.actuate, where decide sees it fail, and never dropped unseen.
	MaxDeliver int
	// NakDelay spaces those redeliveries. Default 5s.
	NakDelay time.Duration
	// Logger receives watermill-nats's logs, one level down (default: discard).
	Logger *slog.Logger
}

// NewJetStreamSubscriber returns a watermill subscriber on the durable consumer cfg.Durable of
// the DECISIONS stream. nc must be a connection of its own: the subscriber drains and closes it
// when the router closes. The stream must exist — topology is ingest's, and this never creates or
// alters a stream; the consumer is created or updated with our settings (explicit acks, AckWait,
// MaxDeliver), not watermill's defaults.
func NewJetStreamSubscriber(nc *nats.Conn, cfg JetStreamConfig) (message.Subscriber, error) {
	if nc == nil {
		return nil, errors.New("handoff: nil NATS connection")
	}
	if cfg.Durable == "" {
		return nil, errors.New("handoff: durable consumer name required")
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = -1
	}
	if cfg.NakDelay == 0 {
		cfg.NakDelay = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Handoff.AckWait == 0 {
		cfg.Handoff = DefaultConfig()
	}
	ackWait := time.Duration(cfg.Handoff.AckWait)
	init := func(ctx context.Context, js jetstream.JetStream, topic string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
		stream, err := js.Stream(ctx, schemas.StreamDecisions)
		if err != nil {
			return nil, nil, fmt.Errorf("stream %s: %w", schemas.StreamDecisions, err)
		}
		cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable:       cfg.Durable,
			FilterSubject: topic,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       ackWait,
			MaxDeliver:    cfg.MaxDeliver,
			// Decisions are few and each may take a while to carry out; one at a time keeps them in
			// order per service and keeps a slow actuator from multiplying the in-flight work.
			MaxAckPending: 1,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("consumer %s: %w", cfg.Durable, err)
		}
		// No closer: the durable outlives the process.
		return cons, nil, nil
	}
	return wmjs.NewSubscriber(wmjs.SubscriberConfig{
		Conn:                nc,
		Logger:              wmLogger(cfg.Logger),
		AckWaitTimeout:      ackWait,
		ResourceInitializer: init,
		NakDelay:            wmjs.NewStaticDelay(cfg.NakDelay),
		Unmarshaler:         unmarshaler{},
	})
}

// unmarshaler maps a JetStream message onto a watermill one: UUID = Nats-Msg-Id (the decision id,
// as decide publishes it) or the stream position; metadata = the headers, minus JetStream's
// control headers, plus the subject and stream position the reject needs. It never fails: the
// subscriber cannot handle an unmarshal error, and a bad body is the handler's to reject.
type unmarshaler struct{}

func (unmarshaler) Unmarshal(msg jetstream.Msg) (*message.Message, error) {
	origin := ""
	if md, err := msg.Metadata(); err == nil {
		origin = md.Stream + ":" + strconv.FormatUint(md.Sequence.Stream, 10)
	}
	id := msg.Headers().Get(jetstream.MsgIDHeader)
	if id == "" {
		id = origin
	}
	if origin == "" {
		origin = id
	}
	m := message.NewMessage(id, msg.Data())
	for k, vs := range msg.Headers() {
		if strings.HasPrefix(k, "Nats-") || len(vs) == 0 {
			continue
		}
		m.Metadata.Set(k, vs[0])
	}
	m.Metadata.Set(metaSubject, msg.Subject())
	if origin != "" {
		m.Metadata.Set(metaOrigin, origin)
	}
	return m, nil
}

// NewRejectPublisher returns the poison publisher of the JetStream path: each message goes to
// rejected.actuate through rp, with the reason, subject and class the hand-off set, the original
// body, and a Nats-Msg-Id derived from the original's stream position, so a decision rejected
// twice (redelivered after a crash) is stored once.
func NewRejectPublisher(rp *reject.Publisher) message.Publisher {
	return rejectPublisher{rp: rp}
}

type rejectPublisher struct{ rp *reject.Publisher }

func (p rejectPublisher) Publish(_ string, msgs ...*message.Message) error {
	for _, m := range msgs {
		md := m.Metadata
		hdr := nats.Header{}
		for k, v := range md {
			switch k {
			case schemas.HeaderRejectReason, schemas.HeaderRejectSubject, reject.HeaderClass, reject.HeaderStage, reject.HeaderOrigin:
				continue
			}
			hdr.Set(k, v)
		}
		origin := md.Get(reject.HeaderOrigin)
		if origin == "" {
			origin = md.Get(HeaderDecisionID)
		}
		// The reject must be stored even when the decision's context is ending; bound it instead.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(m.Context()), 10*time.Second)
		err := p.rp.Reject(ctx, RejectStage, reject.Message{
			Subject: md.Get(schemas.HeaderRejectSubject), Data: m.Payload, Header: hdr, Origin: origin,
		}, md.Get(reject.HeaderClass), md.Get(schemas.HeaderRejectReason))
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

func (rejectPublisher) Close() error { return nil }
