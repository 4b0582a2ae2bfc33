package watermillact_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/actuate/actuatortest"
	"github.com/scalpel-dev/scalpel/actuate/watermillact"
	"github.com/scalpel-dev/scalpel/schemas"
)

// bus is a gochannel pub/sub with one subscriber recording what it receives. Publish returns only
// after the subscriber acked, so an effect is visible as soon as Actuate returns.
type bus struct {
	pub  *gochannel.GoChannel
	mu   sync.Mutex
	msgs []*message.Message
}

func newBus(t *testing.T, topic string) *bus {
	t.Helper()
	b := &bus{pub: gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)}
	t.Cleanup(func() { _ = b.pub.Close() })
	ch, err := b.pub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for m := range ch {
			b.mu.Lock()
			b.msgs = append(b.msgs, m)
			b.mu.Unlock()
			m.Ack()
		}
	}()
	return b
}

func (b *bus) received() []*message.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*message.Message(nil), b.msgs...)
}

func TestConformance(t *testing.T) {
	actuatortest.Run(t, func(t *testing.T) actuatortest.Harness {
		b := newBus(t, "rollback.cmd.checkout")
		a, err := watermillact.New(b.pub)
		if err != nil {
			t.Fatal(err)
		}
		return actuatortest.Harness{
			Actuator: a,
			Effects: func(context.Context) ([]string, error) {
				var ids []string
				for _, m := range b.received() {
					ids = append(ids, m.UUID)
				}
				return ids, nil
			},
			// gochannel, like Kafka or AMQP, has no broker-side deduplication.
			AtLeastOnce: true,
		}
	})
}

func TestMessageIsTheCloudEvent(t *testing.T) {
	b := newBus(t, "acme.rollback.cmd.checkout")
	a, err := watermillact.New(b.pub, watermillact.WithSubjects(schemas.Subjects{Prefix: "acme"}), watermillact.WithSource("scalpel://prod-eu"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := actuatortest.Command(t, 1)
	if err := a.Actuate(context.Background(), cmd); err != nil {
		t.Fatal(err)
	}
	msgs := b.received()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	m := msgs[0]
	hdr := map[string][]string{}
	for k, v := range m.Metadata {
		hdr[k] = []string{v}
	}
	got, err := schemas.DecodeCommandEvent(hdr, m.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, cmd) {
		t.Errorf("decoded %+v, want %+v", *got, cmd)
	}
	if m.Metadata.Get(schemas.HeaderMsgID) != cmd.ID || m.UUID != cmd.ID {
		t.Errorf("message id %s / Nats-Msg-Id %s, want the command id", m.UUID, m.Metadata.Get(schemas.HeaderMsgID))
	}
	if src, _ := schemas.CommandEventSource(hdr); src != "scalpel://prod-eu" {
		t.Errorf("source %q", src)
	}
}

type failingPublisher struct{ err error }

func (f failingPublisher) Publish(string, ...*message.Message) error { return f.err }
func (f failingPublisher) Close() error                              { return nil }

func TestPublishErrorIsRetryable(t *testing.T) {
	boom := errors.New("broker down")
	a, err := watermillact.New(failingPublisher{boom}, watermillact.WithTopic(func(*schemas.RollbackCommand) string { return "rollbacks" }))
	if err != nil {
		t.Fatal(err)
	}
	err = a.Actuate(context.Background(), actuatortest.Command(t, 1))
	if !errors.Is(err, boom) || actuate.IsPermanent(err) {
		t.Fatalf("err = %v, want a retryable wrap of the publisher's error", err)
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	if _, err := watermillact.New(nil); err == nil {
		t.Error("nil publisher accepted")
	}
	p := failingPublisher{}
	for name, o := range map[string]watermillact.Option{
		"nil topic": watermillact.WithTopic(nil), "nil logger": watermillact.WithLogger(nil),
		"empty source": watermillact.WithSource(""), "nil clock": watermillact.WithClock(nil),
	} {
		if _, err := watermillact.New(p, o); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
