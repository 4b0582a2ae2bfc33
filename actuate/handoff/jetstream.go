package handoff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

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
	// Logger receives the subscriber's logs (default: discard).
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
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("handoff: %w", err)
	}
	return &jsSubscriber{nc: nc, js: js, cfg: cfg, ackWait: time.Duration(cfg.Handoff.AckWait), closing: make(chan struct{})}, nil
}

// jsSubscriber is the hand-off's watermill subscriber on a JetStream durable. watermill-nats's
// (v2.1.3, the newest) closes a subscription's output channel while nats.go may still be handing
// it a message: a data race that -race reports when the router stops, and a "send on closed
// channel" panic whenever the handler's select picks the send after the close. This one closes
// the output only once the consumer has stopped and no delivery is in progress. A message it
// gives up on while closing is not acknowledged, and the server redelivers it after AckWait.
type jsSubscriber struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	cfg     JetStreamConfig
	ackWait time.Duration

	closing chan struct{}
	once    sync.Once
	subs    sync.WaitGroup
}

// Subscribe consumes the durable, filtered on topic, until the subscriber closes or ctx ends.
func (s *jsSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	select {
	case <-s.closing:
		return nil, errors.New("handoff: subscriber closed")
	default:
	}
	stream, err := s.js.Stream(ctx, schemas.StreamDecisions)
	if err != nil {
		return nil, fmt.Errorf("handoff: stream %s: %w", schemas.StreamDecisions, err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       s.cfg.Durable,
		FilterSubject: topic,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.ackWait,
		MaxDeliver:    s.cfg.MaxDeliver,
		// Decisions are few and each may take a while to carry out; one at a time keeps them in
		// order per service and keeps a slow actuator from multiplying the in-flight work.
		MaxAckPending: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("handoff: consumer %s: %w", s.cfg.Durable, err)
	}
	out := make(chan *message.Message)
	var (
		mu       sync.Mutex // guards stopped, and inflight's Add against its Wait
		stopped  bool
		inflight sync.WaitGroup
	)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		mu.Lock()
		if stopped {
			mu.Unlock()
			return // redelivered after AckWait, to whoever consumes then
		}
		inflight.Add(1)
		mu.Unlock()
		defer inflight.Done()
		s.deliver(ctx, msg, out)
	})
	if err != nil {
		return nil, fmt.Errorf("handoff: consume %s: %w", s.cfg.Durable, err)
	}
	s.subs.Add(1)
	go func() {
		defer s.subs.Done()
		select {
		case <-s.closing:
		case <-ctx.Done():
		}
		mu.Lock()
		stopped = true
		mu.Unlock()
		cc.Stop()
		inflight.Wait() // every delivery has seen closing or ctx end, and left out alone
		close(out)
	}()
	return out, nil
}

// deliver hands msg to the router as a watermill message and settles it as the handler does:
// acked, nacked (redelivered after NakDelay), or left for the server to redeliver after AckWait
// when the handler takes longer or the subscriber closes first.
func (s *jsSubscriber) deliver(ctx context.Context, msg jetstream.Msg, out chan<- *message.Message) {
	m, _ := unmarshaler{}.Unmarshal(msg)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.SetContext(ctx)
	select {
	case out <- m:
	case <-s.closing:
		return
	case <-ctx.Done():
		return
	}
	timeout := time.NewTimer(s.ackWait)
	defer timeout.Stop()
	log := s.cfg.Logger.With("subject", msg.Subject(), "id", m.UUID)
	select {
	case <-m.Acked():
		if err := msg.DoubleAck(ctx); err != nil {
			log.Warn("actuate: cannot acknowledge a decision; it will be redelivered", "stage", "actuate", "err", err)
		}
	case <-m.Nacked():
		if err := msg.NakWithDelay(s.cfg.NakDelay); err != nil {
			log.Warn("actuate: cannot nak a decision; it will be redelivered after ack_wait", "stage", "actuate", "err", err)
		}
	case <-timeout.C:
		log.Debug("actuate: a decision was not settled within ack_wait; the server redelivers it", "stage", "actuate")
	case <-s.closing:
	case <-ctx.Done():
	}
}

// Close stops every subscription, waits for their outputs to close, then drains the connection.
func (s *jsSubscriber) Close() error {
	s.once.Do(func() { close(s.closing) })
	done := make(chan struct{})
	go func() {
		s.subs.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		return errors.New("handoff: subscriptions did not stop within 10s")
	}
	if err := s.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("handoff: drain connection: %w", err)
	}
	return nil
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
