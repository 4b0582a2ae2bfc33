// Package handoff owns the decision → actuator hand-off: a watermill Router that consumes
// decision.<svc>, turns each actionable Decision into commands (actuate.Commands) and carries them
// out through the service's actuator, with watermill's middleware doing the bookkeeping:
//
//	Deduplicator (by decision id, remembered once handled)
//	  → PoisonQueue (to rejected.actuate, with Scalpel-Reject-Reason, Scalpel-Reject-Subject and
//	    Scalpel-Decision-Id; the body is the original decision)
//	    → Retry (exponential backoff with jitter; permanent actuate errors skip it)
//	      → Recoverer (a panicking actuator is a failed attempt, not a dead process)
//	        → handler
//
// Unit tests run it on gochannel; serve runs it on JetStream through NewJetStreamSubscriber and
// NewRejectPublisher. The decide stage consumes rejected.actuate to learn that a decision could not
// be carried out. The package never creates or alters streams.
package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/internal/reject"
	"github.com/scalpel-dev/scalpel/schemas"
)

// Headers (watermill metadata) of the messages the hand-off rejects, next to
// schemas.HeaderRejectReason, schemas.HeaderRejectSubject and reject.HeaderClass.
const (
	// HeaderDecisionID is the id of the decision that could not be carried out.
	HeaderDecisionID = schemas.HeaderDecisionID
	// HeaderCommandID is the id of the command that failed (absent when the decision itself was
	// unusable).
	HeaderCommandID = schemas.HeaderCommandID
	// HeaderKind, when set on a message on decision.>, names its kind; anything but KindDecision is
	// skipped, so that other kinds of message may share the subjects later.
	HeaderKind = "Scalpel-Kind"
	// KindDecision is the HeaderKind of a Decision.
	KindDecision = "decision"
)

// Reject classes (reject.HeaderClass) of rejected.actuate.
const (
	// ClassPermanent: an actuator refused a command for good (bad command, 4xx, usage error).
	ClassPermanent = "permanent"
	// ClassRetriesExhausted: a command kept failing with retryable errors until the retry budget
	// ran out.
	ClassRetriesExhausted = "retries_exhausted"
	// ClassInvalid: the message on decision.> was not a usable decision (malformed JSON, schema
	// violation).
	ClassInvalid = "invalid"
)

// RejectStage is the stage name of the rejects: they go to rejected.actuate.
const RejectStage = schemas.StageActuate

// HandlerName is the router handler's name, as it appears in watermill's logs.
const HandlerName = "scalpel-actuate"

// private metadata: where the message came from, set by the JetStream unmarshaler or the handler.
const (
	metaSubject = "_scalpel_subject"
	metaOrigin  = "_scalpel_origin"
)

// ErrNotDecision is wrapped by the error of a message on decision.> that is not a usable decision.
var ErrNotDecision = errors.New("not a decision")

// Resolver returns the actuator that carries out a service's commands. An error is classified
// like an actuator's (actuate.Permanent / Retryable; unclassified is retryable).
type Resolver func(ctx context.Context, service string) (actuate.Actuator, error)

// Observer is told the outcome of every Actuate call (nil error: carried out). The wiring counts
// metrics with it.
type Observer func(cmd schemas.RollbackCommand, err error)

// Handoff runs the hand-off. Start it with Run or Start, stop it with Close.
type Handoff struct {
	cfg      Config
	subj     schemas.Subjects
	topic    string
	resolve  Resolver
	log      *slog.Logger
	wmlog    watermill.LoggerAdapter
	ttl      time.Duration
	observe  Observer
	onReject func(decisionID, reason string)
	router   *message.Router
	done     chan error
}

// Option configures a Handoff.
type Option func(*Handoff) error

// WithLogger sets the logger (default: discard). Per-message logs are at Debug; a rejected
// decision is logged at Error.
func WithLogger(l *slog.Logger) Option {
	return func(h *Handoff) error {
		if l == nil {
			return errors.New("handoff: nil logger")
		}
		h.log = l
		return nil
	}
}

// WithSubjects sets the subject prefix: the hand-off consumes subj.DecisionAll() and rejects to
// subj.Rejected("actuate") (default: no prefix).
func WithSubjects(subj schemas.Subjects) Option {
	return func(h *Handoff) error { h.subj = subj; return nil }
}

// WithCommandTTL sets the commands' expiry after the decision's event time (default none).
func WithCommandTTL(ttl time.Duration) Option {
	return func(h *Handoff) error {
		if ttl < 0 {
			return fmt.Errorf("handoff: command TTL must be >= 0, got %s", ttl)
		}
		h.ttl = ttl
		return nil
	}
}

// WithObserver sets a function told the outcome of every Actuate call.
func WithObserver(o Observer) Option {
	return func(h *Handoff) error { h.observe = o; return nil }
}

// WithTopic overrides the topic subscribed to (default subj.DecisionAll()); gochannel tests and
// buses without wildcards use it.
func WithTopic(topic string) Option {
	return func(h *Handoff) error {
		if topic == "" {
			return errors.New("handoff: empty topic")
		}
		h.topic = topic
		return nil
	}
}

// New prepares a hand-off reading decisions from sub and rejecting to poison (topic
// rejected.actuate). The Router owns sub and closes it on Close; the caller owns poison.
func New(cfg Config, sub message.Subscriber, poison message.Publisher, resolve Resolver, opts ...Option) (*Handoff, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("handoff: %w", err)
	}
	if sub == nil || poison == nil || resolve == nil {
		return nil, errors.New("handoff: subscriber, poison publisher and resolver are required")
	}
	h := &Handoff{cfg: cfg, resolve: resolve, log: slog.New(slog.DiscardHandler), done: make(chan error, 1)}
	for _, o := range opts {
		if err := o(h); err != nil {
			return nil, err
		}
	}
	if h.topic == "" {
		h.topic = h.subj.DecisionAll()
	}
	h.wmlog = wmLogger(h.log)

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, h.wmlog)
	if err != nil {
		return nil, fmt.Errorf("handoff: %w", err)
	}
	pq, err := middleware.PoisonQueueWithFilter(&poisonPublisher{next: poison, onReject: h.rejected},
		h.subj.Rejected(RejectStage), h.shouldReject)
	if err != nil {
		return nil, fmt.Errorf("handoff: %w", err)
	}
	dedupe := &middleware.Deduplicator{KeyFactory: decisionKey, Repository: newHandled(time.Duration(cfg.DedupeWindow)), Timeout: time.Second}
	retry := middleware.Retry{
		MaxRetries:          cfg.MaxRetries,
		InitialInterval:     time.Duration(cfg.InitialInterval),
		MaxInterval:         time.Duration(cfg.MaxInterval),
		Multiplier:          2,
		RandomizationFactor: 0.5,
		MaxElapsedTime:      time.Duration(cfg.MaxElapsed),
		ShouldRetry: func(p middleware.RetryParams) bool {
			return !actuate.IsPermanent(p.Err) && !errors.Is(p.Err, context.Canceled)
		},
		OnRetryHook: func(n int, delay time.Duration) {
			h.log.Debug("retrying decision", "stage", "actuate", "retry", n, "delay", delay)
		},
	}
	router.AddMiddleware(
		dedupe.Middleware,
		dedupe.Repository.(*handled).remember(decisionKey),
		pq,
		retry.Middleware,
		middleware.Recoverer,
	)
	router.AddConsumerHandler(HandlerName, h.topic, sub, h.handle)
	h.router = router
	return h, nil
}

// Run runs the router until ctx ends or Close is called.
func (h *Handoff) Run(ctx context.Context) error { return h.router.Run(ctx) }

// Start runs the router in the background and returns once it is consuming (or failed to start).
func (h *Handoff) Start(ctx context.Context) error {
	go func() { h.done <- h.router.Run(ctx) }()
	select {
	case <-h.router.Running():
		return nil
	case err := <-h.done:
		if err == nil {
			err = errors.New("router stopped before it ran")
		}
		return fmt.Errorf("handoff: %w", err)
	case <-ctx.Done():
		_ = h.router.Close()
		return ctx.Err()
	}
}

// Running is closed once the router consumes.
func (h *Handoff) Running() <-chan struct{} { return h.router.Running() }

// Close stops consuming, lets the decision in flight finish (up to 30 s), and closes the
// subscriber.
func (h *Handoff) Close() error { return h.router.Close() }

// shouldReject keeps shutdown out of rejected.actuate: a decision interrupted by Close is not a
// failed one; it is redelivered to the next process.
func (h *Handoff) shouldReject(err error) bool {
	return !errors.Is(err, context.Canceled)
}

func (h *Handoff) rejected(msg *message.Message) {
	h.log.Error("decision rejected to rejected.actuate", "stage", "actuate",
		"decision_id", msg.Metadata.Get(HeaderDecisionID), "command_id", msg.Metadata.Get(HeaderCommandID),
		"class", msg.Metadata.Get(reject.HeaderClass), "reason", msg.Metadata.Get(schemas.HeaderRejectReason))
}

// probe is what tells a Decision from other messages that may share decision.>.
type probe struct {
	ID     *string `json:"id"`
	Action *string `json:"action"`
}

// handle carries out one decision. It returns a classified error; the middleware retries,
// rejects or acknowledges.
func (h *Handoff) handle(msg *message.Message) error {
	ctx := msg.Context()
	if kind := msg.Metadata.Get(HeaderKind); kind != "" && kind != KindDecision {
		h.log.Debug("skipping a non-decision message", "stage", "actuate", "kind", kind, "uuid", msg.UUID)
		return nil
	}
	var p probe
	if err := json.Unmarshal(msg.Payload, &p); err != nil {
		msg.Metadata.Set(reject.HeaderClass, ClassInvalid)
		return actuate.Permanent(fmt.Errorf("%w: malformed JSON: %w", ErrNotDecision, err))
	}
	if p.ID == nil || p.Action == nil {
		// Another kind of message without a kind header: not ours to judge.
		h.log.Debug("skipping a message without id and action", "stage", "actuate", "uuid", msg.UUID)
		return nil
	}
	var d schemas.Decision
	if err := json.Unmarshal(msg.Payload, &d); err != nil {
		msg.Metadata.Set(HeaderDecisionID, *p.ID)
		msg.Metadata.Set(reject.HeaderClass, ClassInvalid)
		return actuate.Permanent(fmt.Errorf("%w: decision %s: %w", ErrNotDecision, *p.ID, err))
	}
	msg.Metadata.Set(HeaderDecisionID, d.ID)
	if msg.Metadata.Get(metaSubject) == "" && d.Service != "" {
		msg.Metadata.Set(metaSubject, h.subj.Decision(d.Service))
	}
	if d.DryRun {
		return nil
	}
	cmds := actuate.Commands(&d, h.ttl)
	if len(cmds) == 0 {
		return nil
	}
	// Validate only what will be acted on: a hold or a dry run carries nothing to refuse.
	if err := d.Validate(); err != nil {
		msg.Metadata.Set(reject.HeaderClass, ClassInvalid)
		return actuate.Permanent(fmt.Errorf("decision %s: %w", d.ID, err))
	}
	log := h.log.With("decision_id", d.ID, "service", d.Service)
	for _, cmd := range cmds {
		act, err := h.resolve(ctx, cmd.Service)
		if err != nil {
			msg.Metadata.Set(HeaderCommandID, cmd.ID)
			return h.classify(msg, fmt.Errorf("decision %s: actuators of %s: %w", d.ID, cmd.Service, err))
		}
		err = act.Actuate(ctx, cmd)
		if h.observe != nil {
			h.observe(cmd, err)
		}
		if err != nil {
			msg.Metadata.Set(HeaderCommandID, cmd.ID)
			log.Debug("command failed", "command_id", cmd.ID, "target", cmd.Target(), "permanent", actuate.IsPermanent(err), "err", err)
			return h.classify(msg, fmt.Errorf("decision %s: command %s (%s %s %s→%s): %w", d.ID, cmd.ID, cmd.Action,
				cmd.Target(), cmd.FromVersion, cmd.ToVersion, err))
		}
		log.Info("command carried out", "command_id", cmd.ID, "action", cmd.Action, "target", cmd.Target(),
			"from", cmd.FromVersion, "to", cmd.ToVersion)
	}
	return nil
}

// classify records the failure class where the poison queue will find it, and keeps the error's
// own class (unclassified errors are retryable).
func (h *Handoff) classify(msg *message.Message, err error) error {
	if actuate.IsPermanent(err) {
		msg.Metadata.Set(reject.HeaderClass, ClassPermanent)
		return err
	}
	msg.Metadata.Set(reject.HeaderClass, ClassRetriesExhausted)
	var ae *actuate.ActuateError
	if errors.As(err, &ae) {
		return err
	}
	return actuate.Retryable(err)
}

// decisionKey dedupes by decision id; a message that is not a decision falls back to its UUID.
func decisionKey(msg *message.Message) (string, error) {
	var p probe
	if json.Unmarshal(msg.Payload, &p) == nil && p.ID != nil && *p.ID != "" {
		return *p.ID, nil
	}
	return "uuid:" + msg.UUID, nil
}
