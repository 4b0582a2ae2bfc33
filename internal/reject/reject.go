// Package reject routes bad input of any stage to rejected.<stage>: the original bytes and headers,
// plus why and where from, so that a person can see exactly what a producer sent and replay it once
// fixed. It owns the scalpel_rejected_total counter. It decides nothing about what is bad; stages do.
package reject

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Extra headers set on every rejected message, next to schemas.HeaderRejectReason and
// schemas.HeaderRejectSubject.
const (
	// HeaderClass is the reason's class (the counter's reason_class label).
	HeaderClass = "Scalpel-Reject-Class"
	// HeaderStage is the stage that rejected the message.
	HeaderStage = "Scalpel-Reject-Stage"
	// HeaderOrigin identifies the original message: "<stream>:<seq>" or its Nats-Msg-Id.
	HeaderOrigin = "Scalpel-Reject-Origin"
	// HeaderTruncated carries the original size when the body had to be cut to fit max payload.
	HeaderTruncated = "Scalpel-Reject-Truncated"
	// originalPrefix renames the original's JetStream control headers (Nats-Msg-Id, Nats-Expected-*,
	// Nats-TTL, ...), which would otherwise act on the REJECTED stream.
	originalPrefix = "Scalpel-Original-"
)

// maxReasonLen bounds the reason header; reasons are short, but they may quote input.
const maxReasonLen = 512

// ErrPublish wraps failures to store a rejected message; the caller should retry rather than drop
// the original.
var ErrPublish = errors.New("publish rejected message")

// Message is the rejected input as it arrived.
type Message struct {
	Subject string
	Data    []byte
	Header  nats.Header
	// Origin identifies the original for deduplication: "<stream>:<seq>" for a JetStream message,
	// else its Nats-Msg-Id. When empty, a hash of subject and body stands in.
	Origin string
}

// FromJetStream describes a message delivered by a JetStream consumer; its origin is the stream
// sequence, so every redelivery of it maps to the same rejected message.
func FromJetStream(msg jetstream.Msg) Message {
	m := Message{Subject: msg.Subject(), Data: msg.Data(), Header: msg.Headers()}
	if md, err := msg.Metadata(); err == nil {
		m.Origin = md.Stream + ":" + strconv.FormatUint(md.Sequence.Stream, 10)
	} else if id := msg.Headers().Get(jetstream.MsgIDHeader); id != "" {
		m.Origin = id
	}
	return m
}

// Publisher publishes rejected messages. It is safe for concurrent use.
type Publisher struct {
	js      jetstream.JetStream
	subj    schemas.Subjects
	counter *prometheus.CounterVec
	maxBody int64 // body limit; 0 = the connection's max payload less room for headers
}

// NewPublisher returns a Publisher that counts rejections on reg (the process registry, never the
// global one; nil registers nothing). Several publishers may share one registry: they share the
// counter.
func NewPublisher(js jetstream.JetStream, subj schemas.Subjects, reg prometheus.Registerer) (*Publisher, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "scalpel_rejected_total",
		Help: "Messages rejected by a stage and published to rejected.<stage>, by stage and reason class.",
	}, []string{"stage", "reason_class"})
	if reg != nil {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("register scalpel_rejected_total: %w", err)
			}
			existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
			if !ok {
				return nil, fmt.Errorf("register scalpel_rejected_total: %w", err)
			}
			c = existing
		}
	}
	return &Publisher{js: js, subj: subj, counter: c}, nil
}

// Reject publishes m to rejected.<stage> with its reason and counts it. The Nats-Msg-Id is derived
// from the stage and m.Origin, so a redelivered bad message is stored — and counted — once within
// the REJECTED stream's duplicate window. An error means nothing was stored: do not acknowledge
// the original.
func (p *Publisher) Reject(ctx context.Context, stage string, m Message, class, reason string) error {
	out := nats.NewMsg(p.subj.Rejected(stage))
	for k, vs := range m.Header {
		if strings.HasPrefix(k, "Nats-") {
			k = originalPrefix + k
		}
		out.Header[k] = append([]string(nil), vs...)
	}
	origin := m.Origin
	if origin == "" {
		origin = schemas.DeriveID("reject-body", m.Subject, string(m.Data))
	}
	out.Header.Set(schemas.HeaderRejectReason, headerValue(reason))
	out.Header.Set(schemas.HeaderRejectSubject, m.Subject)
	out.Header.Set(HeaderClass, class)
	out.Header.Set(HeaderStage, stage)
	out.Header.Set(HeaderOrigin, headerValue(origin))
	out.Data = m.Data
	// Headers add a few hundred bytes; an original at the size limit must still be kept, so cut the
	// body rather than lose the evidence.
	limit := p.maxBody
	if limit == 0 {
		limit = p.js.Conn().MaxPayload() - 8<<10
	}
	if limit > 0 && int64(len(out.Data)) > limit {
		out.Header.Set(HeaderTruncated, strconv.Itoa(len(out.Data)))
		out.Data = out.Data[:limit]
	}
	id := schemas.DeriveID("reject", stage, origin)
	ack, err := p.js.PublishMsg(ctx, out, jetstream.WithMsgID(id))
	if err != nil {
		return fmt.Errorf("%w to %s: %w", ErrPublish, out.Subject, err)
	}
	if !ack.Duplicate {
		p.counter.WithLabelValues(stage, class).Inc()
	}
	return nil
}

// headerValue makes s safe as a header value: one line, bounded.
func headerValue(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(s)
	}
	if len(s) > maxReasonLen {
		cut := maxReasonLen
		for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}
