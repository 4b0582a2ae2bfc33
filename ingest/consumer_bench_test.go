package ingest

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/schemas"
)

// benchMessages is how many 256-byte events each consume benchmark reads; run with -benchtime=1x.
const benchMessages = 200_000

func preload(b *testing.B) jetstream.JetStream {
	b.Helper()
	js := connectWithTopology(b)
	for i := 0; i < benchMessages; i++ {
		if _, err := js.PublishAsync("telemetry.checkout.tax-calc", event256); err != nil {
			b.Fatal(err)
		}
		if i%10_000 == 0 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	return js
}

// BenchmarkConsumeRaw is the yardstick: a durable pull consumer that acks every message and does
// nothing else, as `nats bench js consume` does.
func BenchmarkConsumeRaw(b *testing.B) {
	js := preload(b)
	for b.Loop() {
		cons, err := js.CreateConsumer(context.Background(), schemas.StreamTelemetry, jetstream.ConsumerConfig{
			Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 8000})
		if err != nil {
			b.Fatal(err)
		}
		var n atomic.Int64
		done := make(chan struct{})
		start := time.Now()
		cc, err := cons.Consume(func(m jetstream.Msg) {
			_ = m.Ack()
			if n.Add(1) == benchMessages {
				close(done)
			}
		}, jetstream.PullMaxMessages(2000))
		if err != nil {
			b.Fatal(err)
		}
		<-done
		el := time.Since(start)
		cc.Stop()
		b.ReportMetric(float64(benchMessages)/el.Seconds(), "msgs/s")
		_ = js.DeleteConsumer(context.Background(), schemas.StreamTelemetry, "raw")
	}
}

// BenchmarkConsume runs the ingest consumer (decode, validate, batch hand-off, ack) with a handler
// that only counts.
func BenchmarkConsume(b *testing.B) {
	js := preload(b)
	for b.Loop() {
		var n atomic.Int64
		done := make(chan struct{})
		h := HandlerFunc(func(_ context.Context, evs []schemas.TelemetryEvent) error {
			if n.Add(int64(len(evs))) == benchMessages {
				close(done)
			}
			return nil
		})
		c, err := NewConsumer(js, schemas.Subjects{}, Config{Durable: "bench"}, h)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := c.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		<-done
		el := time.Since(start)
		c.Stop()
		<-c.Done()
		b.ReportMetric(float64(benchMessages)/el.Seconds(), "events/s")
		_ = js.DeleteConsumer(context.Background(), schemas.StreamTelemetry, "bench")
	}
}
