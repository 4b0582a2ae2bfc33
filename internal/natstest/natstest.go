// Package natstest starts an embedded nats-server with JetStream for tests: random port, a
// t.TempDir() store, shut down in t.Cleanup. Tests need no external services.
package natstest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Run starts a JetStream-enabled server on a random loopback port and returns it.
func Run(t testing.TB) *server.Server {
	t.Helper()
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		NoLog:     true,
		NoSigs:    true,
		JetStream: true,
		StoreDir:  t.TempDir(),
		// Generous payload so oversize tests exercise our own limit, not the server's.
		MaxPayload: 8 << 20,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("natstest: new server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("natstest: server not ready for connections within 10s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect runs a server (see Run) and returns a connection and a JetStream context on it, closed in
// t.Cleanup.
func Connect(t testing.TB) (*server.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := Run(t)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return s, nc, js
}

// CheckFor polls fn every interval until it returns nil or total elapses, then fails with fn's last
// error. Use it instead of sleeping for asynchronous results.
func CheckFor(t testing.TB, total, interval time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for {
		if err = fn(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: condition not met within %v: %v", total, err)
		}
		time.Sleep(interval)
	}
}

// Idle returns nil when the durable consumer name on stream has delivered and had acknowledged
// every message stored so far that it reads, and an error saying what is left otherwise.
//
// The consumer's own NumPending is not enough: the server counts a stored message into it from a
// goroutine of its own, after the publisher has its ack, so for a moment after a burst of
// publishes a consumer that has caught up with what it was told of reads 0 pending with
// messages still ahead of it. Idle counts those from the store: an ephemeral consumer with the
// durable's filters, starting after the last message the durable was given, has its pending
// count computed from the stream when it is created.
func Idle(ctx context.Context, js jetstream.JetStream, stream, name string) error {
	cons, err := js.Consumer(ctx, stream, name)
	if err != nil {
		return err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	if info.NumPending > 0 || info.NumAckPending > 0 {
		return fmt.Errorf("%s/%s: %d pending, %d unacked", stream, name, info.NumPending, info.NumAckPending)
	}
	probe, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       info.Delivered.Stream + 1,
		FilterSubject:     info.Config.FilterSubject,
		FilterSubjects:    info.Config.FilterSubjects,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("%s/%s: probe what is stored after it: %w", stream, name, err)
	}
	pi := probe.CachedInfo()
	_ = js.DeleteConsumer(ctx, stream, pi.Name)
	if pi.NumPending > 0 {
		return fmt.Errorf("%s/%s: %d stored after the last it was given (its own count has not caught up)",
			stream, name, pi.NumPending)
	}
	return nil
}
