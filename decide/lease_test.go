package decide

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/schemas"
)

func TestLeaseFailoverAndPublishedOnce(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketState})
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	clock := func() time.Time { return now }
	a, b := NewLease(kv, LeaseKey, 10*time.Second), NewLease(kv, LeaseKey, 10*time.Second)
	a.now, b.now = clock, clock
	if err := a.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Acquire(ctx); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("standby acquired a held lease: %v", err)
	}
	if !a.Held() || b.Held() {
		t.Fatalf("Held: holder %v, standby %v", a.Held(), b.Held())
	}
	if got, want := a.ValidUntil(), t0.Add(10*time.Second); !got.Equal(want) || !b.ValidUntil().IsZero() {
		t.Fatalf("ValidUntil: holder %v (want %v), standby %v (want zero)", got, want, b.ValidUntil())
	}
	now = now.Add(5 * time.Second)
	if err := a.Acquire(ctx); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if got, want := a.ValidUntil(), t0.Add(15*time.Second); !got.Equal(want) {
		t.Fatalf("ValidUntil after a renewal: %v, want %v", got, want)
	}
	now = now.Add(11 * time.Second) // a stopped renewing
	if err := b.Acquire(ctx); err != nil {
		t.Fatalf("takeover: %v", err)
	}
	if err := a.Acquire(ctx); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("old holder renewed after takeover: %v", err)
	}
	if a.Held() || !a.ValidUntil().IsZero() {
		t.Fatalf("the old holder still reads as holding the lease, until %v", a.ValidUntil())
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if b.Held() || !b.ValidUntil().IsZero() {
		t.Fatalf("a released lease still reads as held, until %v", b.ValidUntil())
	}
	if err := a.Acquire(ctx); err != nil {
		t.Fatalf("acquire after release: %v", err)
	}

	first, err := Published(ctx, kv, "d-1")
	if err != nil || !first {
		t.Fatalf("first publish record = %v %v", first, err)
	}
	if again, err := Published(ctx, kv, "d-1"); err != nil || again {
		t.Fatalf("second publish record = %v %v", again, err)
	}
	if ok, _ := WasPublished(ctx, kv, "d-1"); !ok {
		t.Error("WasPublished = false")
	}
}

func TestBlockStore(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	os, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: schemas.ObjectBlocks})
	if err != nil {
		t.Fatal(err)
	}
	bs := NewBlockStore(os)
	ref, hash, err := bs.Put(ctx, "checkout", "tax-calc", "rate-lookup", "r2", strings.NewReader("func lookup() {}"))
	if err != nil {
		t.Fatal(err)
	}
	if ref != "checkout/tax-calc/rate-lookup@r2" || !strings.HasPrefix(hash, "sha256:") || len(hash) != 71 {
		t.Errorf("ref %q hash %q", ref, hash)
	}
	b, err := bs.Get(ctx, "checkout", "tax-calc", "rate-lookup", "r2")
	if err != nil || string(b) != "func lookup() {}" {
		t.Errorf("get = %q %v", b, err)
	}
}
