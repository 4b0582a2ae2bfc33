package decide

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaseKey is the scalpel_state key of the single active decider's lease.
const LeaseKey = "decide.lease"

// ErrLeaseHeld is returned by Acquire while another holder's lease has not expired.
var ErrLeaseHeld = errors.New("lease held by another process")

// leaseValue is the lease record. Expiry is in the value, not a per-key TTL, because the bucket may
// not allow per-key TTLs; updates are compare-and-set on the key's revision, so two processes can
// never both believe they hold it.
type leaseValue struct {
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

// LeaseState is what a lease's record says: who holds it, and until when. A lease is held while
// Holder is set and Expires is in the future.
type LeaseState struct {
	Holder  string    `json:"holder,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
}

// HeldAt reports whether the lease is held at t.
func (s LeaseState) HeldAt(t time.Time) bool { return s.Holder != "" && t.Before(s.Expires) }

// ReadLease reads the lease under key in kv (the scalpel_state bucket) without taking part in it.
// A key never written, or given up (Release), reads as not held.
func ReadLease(ctx context.Context, kv jetstream.KeyValue, key string) (LeaseState, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return LeaseState{}, nil
	}
	if err != nil {
		return LeaseState{}, fmt.Errorf("read lease %s: %w", key, err)
	}
	var v leaseValue
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return LeaseState{}, fmt.Errorf("read lease %s: %w", key, err)
	}
	if v.Expires.IsZero() {
		return LeaseState{}, nil
	}
	return LeaseState{Holder: v.Holder, Expires: v.Expires}, nil
}

// Lease makes one process active among several serve processes: the decider (LeaseKey), or the
// consumer of one ingest durable and its detector. The lease is about processes, not events: it is
// the one place in decide that reads the wall clock (through now), and no decision depends on it.
type Lease struct {
	kv     jetstream.KeyValue
	key    string
	holder string
	ttl    time.Duration
	now    func() time.Time
	rev    uint64
	// until is the expiry (unix nanoseconds) this holder wrote with its last successful Acquire,
	// 0 when it does not hold the lease. Read by other goroutines (ValidUntil).
	until atomic.Int64
}

// NewLease returns the lease under key in the scalpel_state bucket (LeaseKey for the decider) for
// a holder named hostname+pid+random. ttl is how long a holder that stops renewing keeps it (renew
// at ttl/3).
func NewLease(kv jetstream.KeyValue, key string, ttl time.Duration) *Lease {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return &Lease{kv: kv, key: key, ttl: ttl, now: time.Now, holder: fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))}
}

// Key is the lease's key in the bucket.
func (l *Lease) Key() string { return l.key }

// Holder names this process in the lease.
func (l *Lease) Holder() string { return l.holder }

// TTL is the lease's time to live.
func (l *Lease) TTL() time.Duration { return l.ttl }

// Acquire takes or renews the lease. It returns ErrLeaseHeld when another holder's lease is still
// valid, and any other error when the bucket cannot be reached (the caller must then stop deciding
// once its own lease would have expired).
func (l *Lease) Acquire(ctx context.Context) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	expires := l.now().Add(l.ttl)
	val, err := json.Marshal(leaseValue{Holder: l.holder, Expires: expires})
	if err != nil {
		return err
	}
	e, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		rev, err := l.kv.Create(ctx, l.key, val)
		if errors.Is(err, jetstream.ErrKeyExists) {
			l.lost()
			return ErrLeaseHeld
		}
		if err != nil {
			return fmt.Errorf("create lease: %w", err)
		}
		l.rev = rev
		l.until.Store(expires.UnixNano())
		return nil
	}
	if err != nil {
		return fmt.Errorf("read lease: %w", err)
	}
	var cur leaseValue
	if json.Unmarshal(e.Value(), &cur) == nil && cur.Holder != l.holder && l.now().Before(cur.Expires) {
		l.lost()
		return ErrLeaseHeld
	}
	rev, err := l.kv.Update(ctx, l.key, val, e.Revision())
	if err != nil {
		l.lost()
		return fmt.Errorf("%w (lost the race to renew: %v)", ErrLeaseHeld, err)
	}
	l.rev = rev
	l.until.Store(expires.UnixNano())
	return nil
}

// lost records that another holder has the lease.
func (l *Lease) lost() {
	l.rev = 0
	l.until.Store(0)
}

// ValidUntil is when the lease this process holds expires unless renewed, by the expiry its last
// successful Acquire wrote; the zero time when it does not hold it. Safe to call from any
// goroutine. Work that only the holder may do checks it against the clock, so that a process
// paused past its lease (a stopped VM, a long stall) does not go on as if it still held it
// until its next renewal tells it otherwise.
func (l *Lease) ValidUntil() time.Time {
	if n := l.until.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Held reports whether the last Acquire took or renewed the lease (and Release has not given it
// up). Whether it is still valid depends on when that was: see Acquire.
func (l *Lease) Held() bool { return l.rev != 0 }

// Release gives the lease up if this process holds it, so a standby takes over at once.
func (l *Lease) Release(ctx context.Context) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	val, _ := json.Marshal(leaseValue{Holder: l.holder})
	if l.rev == 0 {
		return nil
	}
	l.until.Store(0) // before the update: the lease is given up whether or not it lands
	_, err := l.kv.Update(ctx, l.key, val, l.rev)
	l.rev = 0
	return err
}

// Published records in the scalpel_state bucket that decision id was published (key
// decision.<id>, created only if absent). It reports false when the key already existed: another
// decider, or this one before a restart, published it, and it must not be published again.
func Published(ctx context.Context, kv jetstream.KeyValue, id string) (bool, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := kv.Create(ctx, "decision."+id, nil)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("record decision %s: %w", id, err)
	}
	return true, nil
}

// WasPublished reports whether decision id is recorded as published.
func WasPublished(ctx context.Context, kv jetstream.KeyValue, id string) (bool, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := kv.Get(ctx, "decision."+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}
