package pipeline

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/schemas"
)

// TestRenewingKeepsLeasesThroughASlowTakeover: while a takeover restores the detector or rebuilds
// the decide engine, which can outlast the TTL, the leases it holds are renewed, so no other
// standby takes them meanwhile; once it stops renewing they lapse.
func TestRenewingKeepsLeasesThroughASlowTakeover(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketState})
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 300 * time.Millisecond
	held := decide.NewLease(kv, IngestLeaseKey("scalpel-ingest"), ttl)
	other := decide.NewLease(kv, IngestLeaseKey("scalpel-ingest"), ttl)
	notHeld := decide.NewLease(kv, decide.LeaseKey, ttl) // renewing leaves a lease it does not hold alone
	if err := held.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	stop := renewing(ctx, held, notHeld)
	time.Sleep(4 * ttl)
	if err := other.Acquire(ctx); !errors.Is(err, decide.ErrLeaseHeld) {
		stop()
		t.Fatalf("another process took the lease while it was being renewed: %v", err)
	}
	if other.Held() || notHeld.Held() {
		t.Fatal("a lease not taken reads as held")
	}
	stop()
	time.Sleep(ttl + ttl/2)
	if err := other.Acquire(ctx); err != nil {
		t.Fatalf("the lease did not lapse once renewals stopped: %v", err)
	}
	if !other.Held() {
		t.Fatal("the lease taken over does not read as held")
	}
	if _, err := kv.Get(ctx, decide.LeaseKey); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("renewing took a lease this process did not hold: %v", err)
	}
}
