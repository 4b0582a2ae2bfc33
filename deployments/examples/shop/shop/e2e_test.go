package shop_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/deployments/examples/shop/shop"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/schemas"
)

// baseline is how long 1.0 serves before 2.0 goes out: the detector needs a baseline of at least
// detect's MinBaselineRequests per block, and decide a version that served healthy traffic.
const baseline = 20 * time.Second

// TestShopBlockRollback runs scalpel's whole pipeline on an embedded server, the shop over real
// HTTP with a load generator, deploys 2.0, and checks from the shop's own answers that the buggy
// discount block goes back to 1.0 within seconds while tax 2.0 and catalog 2.0 stay live.
func TestShopBlockRollback(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end over real time: runs about 30 s")
	}
	_, nc, js := natstest.Connect(t)
	cfg := config.Default()
	// The shop runs in wall-clock time on whatever else the machine runs, and `go test ./...`
	// runs other packages beside it. When they start during the test, every handler slows by
	// milliseconds of scheduling: catalog 2.0 was once 42 % slower than the 1.0 it was deployed
	// over, a real latency change to the detector, and it rolled catalog back. This test is
	// about the error path; latency regressions are tested in event time (pipeline, detect).
	// So here a latency regression must triple a quantile, and H0 accepts a doubling.
	cfg.Detect.LatencyTolerance, cfg.Detect.LatencyMinEffect, cfg.Detect.LatencyGrossFactor = 1, 2, 4
	p, err := pipeline.New(pipeline.Options{Config: cfg, JS: js, Registry: prometheus.NewRegistry(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	m, err := schemas.ParseManifest([]byte(shop.Manifest))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Catalog().Apply(ctx, m); err != nil {
		t.Fatal(err)
	}

	// The shop has its own connection, as a separate process would.
	snc, err := nats.Connect(nc.ConnectedUrl())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(snc.Close)
	s, err := shop.New(snc, shop.Options{Aggregate: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	deploy := func(id, v string) {
		t.Helper()
		want := p.DeploysRecorded() + 1
		b, _ := json.Marshal(shop.DeployEvent(id, time.Now().UTC(), v))
		if _, err := js.Publish(ctx, cfg.Subjects().Deploy(shop.Service), b, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
		natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if p.DeploysRecorded() < want {
				return fmt.Errorf("deploy %s not recorded yet", id)
			}
			return nil
		})
	}
	deploy("shop-deploy-1.0", shop.V1)

	load := shop.NewLoad(srv.URL)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	go load.Run(loadCtx, 150)

	start := time.Now()
	natstest.CheckFor(t, baseline+10*time.Second, 100*time.Millisecond, func() error {
		if time.Since(start) < baseline {
			return fmt.Errorf("baseline traffic on 1.0 for %v", baseline)
		}
		return nil
	})
	before := load.Take()
	t.Logf("1.0 baseline: %v (errors %v)", before.Requests, before.Errors)
	if before.Requests["pricing/discount=1.0"] < 200 {
		t.Fatalf("baseline too thin: %v", before.Requests)
	}

	if err := s.Release(shop.V2); err != nil {
		t.Fatal(err)
	}
	deployedAt := time.Now()
	deploy("shop-deploy-2.0", shop.V2)
	natstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if v := load.Latest("pricing/discount"); v != shop.V2 {
			return fmt.Errorf("discount answers %s", v)
		}
		return nil
	})
	// The buggy block goes back, seen by a client of the shop.
	natstest.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if v := load.Latest("pricing/discount"); v != shop.V1 {
			return fmt.Errorf("discount still answers %s", v)
		}
		return nil
	})
	rolledBack := time.Since(deployedAt)
	during := load.Take()
	t.Logf("deploy → discount back on 1.0 in the shop's answers: %v; meanwhile %v (errors %v)", rolledBack, during.Requests, during.Errors)

	// After the rollback: discount 1.0, the rest of 2.0 live, no errors.
	natstest.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		if time.Since(deployedAt) < rolledBack+2*time.Second {
			return fmt.Errorf("collecting answers after the rollback")
		}
		return nil
	})
	after := load.Take()
	// The load keeps running until the incident is mitigated: detect ends episodes on event
	// time, which only traffic moves. The rolled back block's old series serves nothing more and
	// ends once its line has served the restored version for traffic_moved_after.
	t.Logf("after: %v (errors %v; %d answers to requests sent before the rollback was seen left out)", after.Requests, after.Errors, after.Straddled)
	for _, k := range []string{"pricing/discount=1.0", "pricing/tax=2.0", "catalog=2.0", "quote=1.0"} {
		if after.Requests[k] == 0 {
			t.Errorf("after the rollback no answer came from %s: %v", k, after.Requests)
		}
	}
	for _, k := range []string{"pricing/discount=2.0", "pricing/tax=1.0", "catalog=1.0"} {
		if after.Requests[k] != 0 {
			t.Errorf("after the rollback %d answers came from %s", after.Requests[k], k)
		}
	}
	for k, n := range after.Errors {
		if n > 0 {
			t.Errorf("after the rollback %d errors from %s", n, k)
		}
	}

	// scalpel heard back: one command, for the discount block only, acked applied by the shop.
	cmds, acks := rollbacks(t, js)
	for _, c := range cmds {
		if c.Target() != "shop/pricing/discount" {
			t.Errorf("unexpected command %s %s %s→%s", c.Action, c.Target(), c.FromVersion, c.ToVersion)
		}
	}
	applied := false
	for _, a := range acks {
		t.Logf("ack %s by %s: active %s", a.Status, a.Instance, a.ActiveVersion)
		if a.Status == schemas.AckApplied && a.ActiveVersion == shop.V1 && a.Instance == "shop-1" {
			applied = true
		}
	}
	if len(cmds) == 0 || !applied {
		t.Fatalf("want a discount command acked applied with active 1.0; got %d command(s), acks %+v", len(cmds), acks)
	}
	if st := s.Telemetry.Stats(); st.Dropped != 0 || st.Failed != 0 {
		t.Errorf("telemetry lost events: %+v", st)
	}

	// The decision engine heard the ack, and sees the recovery: detect resolves the incident's
	// anomalies, and the incident is marked mitigated without climbing the ladder.
	natstest.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		incs := p.DecideIncidents()
		if len(incs) != 1 {
			return fmt.Errorf("%d incidents, want 1", len(incs))
		}
		inc := incs[0]
		if inc.Granularity != schemas.GranularityFine {
			return fmt.Errorf("incident at %s granularity, want fine (no escalation)", inc.Granularity)
		}
		if !slices.Contains(inc.AppliedBy, "shop-1: "+shop.V1) {
			return fmt.Errorf("engine has not heard shop-1's ack (applied by %v)", inc.AppliedBy)
		}
		if inc.State != decide.IncidentMitigated {
			return fmt.Errorf("incident %s, still firing %v", inc.State, inc.Firing)
		}
		return nil
	})
}

// rollbacks reads every command and ack in ROLLBACKS.
func rollbacks(t *testing.T, js jetstream.JetStream) ([]schemas.RollbackCommand, []schemas.RollbackAck) {
	t.Helper()
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, schemas.StreamRollbacks, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var cmds []schemas.RollbackCommand
	var acks []schemas.RollbackAck
	for {
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if strings.Contains(m.Subject(), ".ack.") {
				a, err := schemas.DecodeAck(m.Data())
				if err != nil {
					t.Fatalf("ack does not decode: %v", err)
				}
				acks = append(acks, *a)
				continue
			}
			c, err := schemas.DecodeCommandEvent(m.Headers(), m.Data())
			if err != nil {
				t.Fatalf("command does not decode: %v", err)
			}
			cmds = append(cmds, *c)
		}
		if n == 0 {
			return cmds, acks
		}
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
