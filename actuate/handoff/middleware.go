package handoff

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/scalpel-dev/scalpel/internal/reject"
	"github.com/scalpel-dev/scalpel/schemas"
)

// handled is the Deduplicator's repository. watermill's own marks a key as seen when it is first
// checked, so a decision whose handling failed without reaching the poison queue (the reject could
// not be stored, the process is stopping) would be dropped on redelivery. Here IsDuplicate only
// looks; remember records the key once the rest of the chain returned without error — carried
// out, skipped or rejected.
type handled struct {
	window time.Duration
	now    func() time.Time
	mu     sync.Mutex
	seen   map[string]time.Time // key → expiry
	sweep  time.Time
}

var _ middleware.ExpiringKeyRepository = (*handled)(nil)

func newHandled(window time.Duration) *handled {
	return &handled{window: window, now: time.Now, seen: map[string]time.Time{}}
}

// IsDuplicate reports whether key was handled within the window.
func (r *handled) IsDuplicate(_ context.Context, key string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	exp, ok := r.seen[key]
	return ok && r.now().Before(exp), nil
}

func (r *handled) add(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.seen[key] = now.Add(r.window)
	// Sweep expired keys at most once per window: the map stays bounded by one window of
	// decisions without a goroutine to stop.
	if now.Sub(r.sweep) >= r.window {
		for k, exp := range r.seen {
			if !now.Before(exp) {
				delete(r.seen, k)
			}
		}
		r.sweep = now
	}
}

// remember is the middleware that records a key after success.
func (r *handled) remember(key middleware.MessageHasher) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err == nil {
				if k, kerr := key(msg); kerr == nil {
					r.add(k)
				}
			}
			return out, err
		}
	}
}

// poisonPublisher turns watermill's poison metadata into scalpel's reject headers before the
// message reaches the real publisher, so that whatever carries rejected.actuate — gochannel in
// tests, JetStream in serve — sees one convention.
type poisonPublisher struct {
	next     message.Publisher
	onReject func(*message.Message)
}

func (p *poisonPublisher) Publish(topic string, msgs ...*message.Message) error {
	out := make([]*message.Message, 0, len(msgs))
	for _, m := range msgs {
		c := m.Copy()
		c.SetContext(m.Context())
		md := c.Metadata
		md.Set(schemas.HeaderRejectReason, md.Get(middleware.ReasonForPoisonedKey))
		subject := md.Get(metaSubject)
		if subject == "" {
			subject = md.Get(middleware.PoisonedTopicKey)
		}
		md.Set(schemas.HeaderRejectSubject, subject)
		md.Set(reject.HeaderStage, RejectStage)
		if md.Get(reject.HeaderClass) == "" {
			md.Set(reject.HeaderClass, ClassRetriesExhausted)
		}
		if o := md.Get(metaOrigin); o != "" {
			md.Set(reject.HeaderOrigin, o)
		}
		for _, k := range []string{middleware.ReasonForPoisonedKey, middleware.PoisonedTopicKey,
			middleware.PoisonedHandlerKey, middleware.PoisonedSubscriberKey, metaSubject, metaOrigin} {
			delete(md, k)
		}
		out = append(out, c)
	}
	if err := p.next.Publish(topic, out...); err != nil {
		return err
	}
	if p.onReject != nil {
		for _, m := range out {
			p.onReject(m)
		}
	}
	return nil
}

func (p *poisonPublisher) Close() error { return nil }

// wmLogger adapts slog for watermill, one level down: watermill logs every message at Info, which
// is Debug in scalpel's terms.
func wmLogger(l *slog.Logger) watermill.LoggerAdapter {
	return watermill.NewSlogLoggerWithLevelMapping(l.With("component", "watermill"), map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug,
	})
}
