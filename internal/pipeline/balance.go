package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/schemas"
)

// memberPrefix starts the scalpel_state keys under which the processes that share partitions
// out (Balancer) say they are alive: the value is when that stops being true.
const memberPrefix = "members."

// Balancer shares the partitions of a cut telemetry stream out among the serve processes that run
// one (serve --partition auto): each runs a pipeline for every partition, and a pipeline takes its
// partition's lease only while its process holds fewer than its share, the partitions divided
// by the processes alive, rounded up. When a process joins, the others' shares shrink and each
// hands over its highest partitions beyond its share as a stopping process does (drained and
// checkpointed), for the newcomer to take over; when one leaves, its partitions' leases expire
// and the others take them up to their grown shares. Which processes are alive is what they
// say in scalpel_state (memberPrefix), renewed every third of the lease TTL.
//
// A pipeline calls mayTake before it tries for its lease, then taken or dropped as it got it or
// not (dropped too when it gives it up), and shouldRelease while it holds it.
type Balancer struct {
	n   int
	ttl time.Duration
	id  string

	mu sync.Mutex
	// held are the partitions whose leases the process holds, trying those its pipelines are
	// trying for now: both count against the share, only held ones are ever handed over.
	held, trying map[int]bool
	// deciding are the held partitions whose pipelines hold the decide lease, as they last said
	// (shouldRelease): handed over last, so a newcomer does not move the decider too.
	deciding map[int]bool
	members  int // processes alive at the last count (at least this one)

	kv       jetstream.KeyValue
	stop     func()
	stopOnce sync.Once
}

// NewBalancer shares n partitions out, with leases of ttl (decide.lease_ttl).
func NewBalancer(n int, ttl time.Duration) *Balancer {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return &Balancer{n: n, ttl: ttl, id: fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b)),
		held: map[int]bool{}, trying: map[int]bool{}, deciding: map[int]bool{}, members: 1}
}

// Start says this process is alive and counts the others, now and every third of the TTL, until
// Stop. Call it once the topology exists (after a pipeline started): until then the process
// counts itself alone.
func (b *Balancer) Start(ctx context.Context, js jetstream.JetStream) error {
	kv, err := js.KeyValue(ctx, schemas.BucketState)
	if err != nil {
		return fmt.Errorf("partition balance: open %s: %w", schemas.BucketState, err)
	}
	b.kv = kv
	if err := b.beat(ctx); err != nil {
		return err
	}
	b.stop = every(b.ttl/3, func() { _ = b.beat(ctx) })
	return nil
}

// Stop ends the heartbeat and says this process is gone. Stopping again does nothing.
func (b *Balancer) Stop() {
	b.stopOnce.Do(func() {
		if b.stop != nil {
			b.stop()
			_ = b.kv.Delete(context.Background(), memberPrefix+b.id)
		}
	})
}

// beat renews this process's entry and counts the live ones.
func (b *Balancer) beat(ctx context.Context) error {
	now := time.Now()
	if _, err := b.kv.Put(ctx, memberPrefix+b.id, []byte(now.Add(b.ttl).UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("partition balance: say this process is alive: %w", err)
	}
	alive, err := countMembers(ctx, b.kv, now)
	if err != nil {
		return fmt.Errorf("partition balance: %w", err)
	}
	b.mu.Lock()
	b.members = max(alive, 1)
	b.mu.Unlock()
	return nil
}

// share is how many partitions this process should hold: the partitions divided by the processes
// alive, rounded up. Called with mu held.
func (b *Balancer) share() int { return (b.n + b.members - 1) / b.members }

// mayTake reports whether partition k's pipeline may try for its lease, and counts it against the
// share while it tries if so.
func (b *Balancer) mayTake(k int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held[k] || b.trying[k] {
		return true
	}
	if len(b.held)+len(b.trying) >= b.share() {
		return false
	}
	b.trying[k] = true
	return true
}

// taken says partition k's pipeline holds its lease.
func (b *Balancer) taken(k int) {
	b.mu.Lock()
	delete(b.trying, k)
	b.held[k] = true
	b.mu.Unlock()
}

// dropped says partition k's pipeline did not get its lease, or gave it up.
func (b *Balancer) dropped(k int) {
	b.mu.Lock()
	delete(b.held, k)
	delete(b.trying, k)
	delete(b.deciding, k)
	b.mu.Unlock()
}

// shouldRelease reports whether partition k's pipeline, which holds its lease and the decide
// lease when deciding says so, should hand it over: the process holds more than its share, and k
// is among its highest partitions beyond it, those that decide counted lowest (handing one over
// gives up the decide lease too, and the process that takes it rebuilds decide's state from the
// streams, where one that does not decide moves nothing else). It counts k dropped if so.
func (b *Balancer) shouldRelease(k int, deciding bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if deciding {
		b.deciding[k] = true
	} else {
		delete(b.deciding, k)
	}
	over := len(b.held) + len(b.trying) - b.share()
	if over <= 0 || !b.held[k] {
		return false
	}
	over = min(over, len(b.held))
	var held []int
	for p := range b.held {
		held = append(held, p)
	}
	slices.SortFunc(held, func(x, y int) int {
		if dx, dy := b.deciding[x], b.deciding[y]; dx != dy {
			if dx {
				return -1
			}
			return 1
		}
		return x - y
	})
	if !slices.Contains(held[len(held)-over:], k) {
		return false
	}
	delete(b.held, k)
	delete(b.deciding, k)
	return true
}

// countMembers counts the processes that share partitions out and are alive at now, as they say
// under memberPrefix in kv (scalpel_state).
func countMembers(ctx context.Context, kv jetstream.KeyValue, now time.Time) (int, error) {
	keys, err := kv.ListKeysFiltered(ctx, memberPrefix+">") // a host name may hold dots
	if err != nil {
		return 0, fmt.Errorf("list processes: %w", err)
	}
	alive := 0
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", k, err)
		}
		if until, err := time.Parse(time.RFC3339Nano, string(e.Value())); err == nil && until.After(now) {
			alive++
		}
	}
	return alive, nil
}
