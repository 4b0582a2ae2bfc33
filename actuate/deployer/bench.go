package deployer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/schemas"
)

// BenchService is the service name BenchCommandAck issues its commands to.
const BenchService = "scalpel-bench"

// BenchCommandAck measures, n times, the time from issuing a block rollback command to receiving
// the deployer's ack on rollback.ack.<svc>: the path a command takes in production — issue (the
// caller's actuator: KV write and CloudEvent publish), the deployer's watch or subscription, the
// atomic switch, the ack publish — on the server js is connected to. The ROLLBACKS stream and the
// scalpel_active bucket must exist (ingest's topology). issue is typically the nats actuator's
// Actuate method; it is a parameter so that this package, which services embed, stays free of
// scalpel's own stages.
func BenchCommandAck(ctx context.Context, js jetstream.JetStream, issue func(context.Context, schemas.RollbackCommand) error, n int) (p50, p99 time.Duration, err error) {
	if js == nil || issue == nil {
		return 0, 0, errors.New("bench: nil JetStream or issue func")
	}
	if n < 1 {
		return 0, 0, fmt.Errorf("bench: n must be >= 1, got %d", n)
	}
	nc := js.Conn()
	block := NewBlock[func() int]("bench", "switch").
		Register("1.0", func() int { return 1 }).
		Register("2.0", func() int { return 2 })
	d, err := New(nc, BenchService, WithInstance("bench-1"))
	if err != nil {
		return 0, 0, err
	}
	if err := d.Register(block); err != nil {
		return 0, 0, err
	}
	acks := make(chan string, 16)
	sub, err := nc.Subscribe(schemas.Subjects{}.RollbackAck(BenchService), func(m *nats.Msg) {
		var a schemas.RollbackAck
		if json.Unmarshal(m.Data, &a) == nil && a.Status == schemas.AckApplied {
			acks <- a.CommandID
		}
	})
	if err != nil {
		return 0, 0, err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return 0, 0, err
	}
	if err := d.Start(ctx); err != nil {
		return 0, 0, err
	}
	defer d.Stop()

	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	lat := make([]time.Duration, 0, n)
	for i := range n {
		to, from := "1.0", "2.0"
		if block.Active() == "1.0" {
			to, from = "2.0", "1.0"
		}
		now := time.Now().UTC()
		cmd := schemas.RollbackCommand{
			ID: schemas.DeriveID("bench-command", run, strconv.Itoa(i)), DecisionID: schemas.DeriveID("bench-decision", run, strconv.Itoa(i)),
			IncidentID: schemas.DeriveID("bench-incident", run), Granularity: schemas.GranularityFine, Action: schemas.ActionRollback,
			Service: BenchService, Component: "bench", Block: "switch", FromVersion: from, ToVersion: to,
			Reason: "bench", IssuedAt: now,
		}
		start := time.Now()
		if err := issue(ctx, cmd); err != nil {
			return 0, 0, fmt.Errorf("bench: issue command %d: %w", i, err)
		}
		timeout := time.After(10 * time.Second)
	wait:
		for {
			select {
			case id := <-acks:
				if id == cmd.ID {
					break wait
				}
			case <-timeout:
				return 0, 0, fmt.Errorf("bench: no ack for command %d within 10s", i)
			case <-ctx.Done():
				return 0, 0, ctx.Err()
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return q(0.5), q(0.99), nil
}
