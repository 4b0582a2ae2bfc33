package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/metricstest"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/schemas"
)

// TestClusterStatus: with the telemetry cut into three partitions and processes given two of
// them, the status says how the stream is cut, who decides, who consumes each partition and how
// far its event time has come, and warns of the partition no process was given. Once one
// process stops and telemetry comes for its partition, it warns that those messages wait.
func TestClusterStatus(t *testing.T) {
	_, _, js := natstest.Connect(t)
	cfg := config.Default()
	cfg.Ingest.Partitions = 3
	ps := map[int]*pipeline.Pipeline{}
	for _, k := range []int{0, 1} {
		c := cfg
		c.Ingest.Partition = &k
		p := startOpts(t, pipeline.Options{Config: c, JS: js, Registry: prometheus.NewRegistry(), Logger: testLogger(t).With("partition", k)})
		t.Cleanup(p.Stop)
		ps[k] = p
	}
	ctx := context.Background()
	publish := func(svc string, n int) {
		lat := 10.0
		for i := range n {
			ev := schemas.TelemetryEvent{ID: fmt.Sprintf("%s-%d-%d", svc, time.Now().UnixNano(), i), TS: time.Now().UTC().Add(-time.Second),
				Service: svc, Component: "api", Version: "1", LatencyMS: &lat}
			b, _ := json.Marshal(ev)
			if _, err := js.Publish(ctx, cfg.Subjects().Telemetry(svc, "api"), b); err != nil {
				t.Fatal(err)
			}
		}
	}
	svcOf := map[int]string{}
	for _, svc := range []string{"search", "cart", "billing", "profile", "ledger", "catalog", "checkout", "orders"} {
		if k := ingest.Partition(svc, 3); svcOf[k] == "" {
			svcOf[k] = svc
		}
	}
	publish(svcOf[0], 5)
	publish(svcOf[1], 5)

	var st *pipeline.ClusterStatus
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var err error
		if st, err = pipeline.ReadClusterStatus(ctx, js, cfg.Subjects()); err != nil {
			return err
		}
		for _, c := range st.Consumers {
			if c.Watermark.IsZero() || c.Pending > 0 {
				return fmt.Errorf("%s: pending %d, event time %s", c.Name, c.Pending, c.Watermark)
			}
		}
		return nil
	})
	if st.Telemetry.Partitions != 3 || st.Telemetry.Messages < 10 || !st.Decide.HeldAt(time.Now()) {
		t.Errorf("telemetry %+v, decide %+v", st.Telemetry, st.Decide)
	}
	if len(st.Consumers) != 2 {
		t.Fatalf("consumers %+v, want partitions 0 and 1's", st.Consumers)
	}
	for k, c := range st.Consumers {
		if c.Name != fmt.Sprintf("scalpel-ingest-p%d", k) || c.Partition == nil || *c.Partition != k || !c.Lease.HeldAt(time.Now()) {
			t.Errorf("consumer %d: %+v", k, c)
		}
	}
	if len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "partition 2 has no consumer") {
		t.Errorf("warnings %q, want one of partition 2", st.Warnings)
	}

	reg := prometheus.NewRegistry()
	cc := pipeline.NewClusterCollector(js, cfg.Subjects(), 50*time.Millisecond, testLogger(t))
	t.Cleanup(cc.Stop)
	reg.MustRegister(cc)
	gauges := func() string {
		var out []string
		for _, name := range []string{"scalpel_cluster_partitions_unconsumed", "scalpel_cluster_unconsumed_messages", "scalpel_cluster_deciding"} {
			v, _ := metricstest.Value(t, reg, name, nil)
			out = append(out, fmt.Sprint(v))
		}
		return strings.Join(out, " ")
	}
	if g := gauges(); g != "1 0 1" {
		t.Errorf("unconsumed partitions, waiting messages, deciding: %s, want 1 0 1", g)
	}

	ps[1].Stop()
	publish(svcOf[1], 7)
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var err error
		if st, err = pipeline.ReadClusterStatus(ctx, js, cfg.Subjects()); err != nil {
			return err
		}
		if !slices.ContainsFunc(st.Warnings, func(w string) bool {
			return strings.Contains(w, "scalpel-ingest-p1: no process consumes it, and 7 messages wait")
		}) {
			return fmt.Errorf("warnings %q", st.Warnings)
		}
		return nil
	})
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if g := gauges(); g != "1 7 1" {
			return fmt.Errorf("unconsumed partitions, waiting messages, deciding: %s, want 1 7 1", g)
		}
		return nil
	})
	// The stream is not there: say what to do.
	_, _, empty := natstest.Connect(t)
	if _, err := pipeline.ReadClusterStatus(ctx, empty, cfg.Subjects()); err == nil || !strings.Contains(err.Error(), "start `scalpel serve` once") {
		t.Errorf("without the topology: %v", err)
	}
}
