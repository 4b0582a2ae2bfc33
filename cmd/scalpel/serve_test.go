package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/internal/audit"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
)

// TestReadyzSaysWhichProcessIsActive: two serve processes on one server are both ready; /readyz
// says which one is active and which stands by, and /metrics carries the same as
// scalpel_stage_active.
func TestReadyzSaysWhichProcessIsActive(t *testing.T) {
	_, _, js := natstest.Connect(t)
	cfg := config.Default()
	var bodies, metrics []string
	for range 2 {
		reg := prometheus.NewRegistry()
		p, err := pipeline.New(pipeline.Options{Config: cfg, JS: js, Registry: reg})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = p.Start(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Stop)
		srv := httptest.NewServer(httpHandler(reg, audit.Reader{JS: js}, p))
		t.Cleanup(srv.Close)
		bodies = append(bodies, httpGet(t, srv, "/readyz"))
		metrics = append(metrics, httpGet(t, srv, "/metrics"))
	}
	if !strings.HasPrefix(bodies[0], "ready: active (ingest, detect and decide)") || !strings.HasPrefix(bodies[1], "ready: standing by") {
		t.Fatalf("/readyz: first %q, second %q", bodies[0], bodies[1])
	}
	if !strings.Contains(metrics[0], `scalpel_stage_active{stage="ingest"} 1`) || !strings.Contains(metrics[1], `scalpel_stage_active{stage="ingest"} 0`) {
		t.Fatal("/metrics does not say which process consumes the telemetry")
	}
}

// TestOneProcessConsumesSeveralPartitions: serve --partition 0,1 runs a pipeline per partition
// in one process. Both hold their partition's ingest lease, /readyz says so per partition, and
// /metrics tells the partitions apart by a label.
func TestOneProcessConsumesSeveralPartitions(t *testing.T) {
	_, _, js := natstest.Connect(t)
	cfg := config.Default()
	cfg.Ingest.Partitions = 3
	if _, err := perPartition(cfg, []int{0, 0}); err == nil || !strings.Contains(err.Error(), "names 0 twice") {
		t.Errorf("--partition 0,0: %v", err)
	}
	if _, err := perPartition(cfg, []int{0, 3}); err == nil || !strings.Contains(err.Error(), "partition 3") {
		t.Errorf("--partition 0,3 of 3: %v", err)
	}
	cfgs, err := perPartition(cfg, []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ps, err := startPipelines(context.Background(), cfgs, js, slog.New(slog.DiscardHandler), reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range ps {
			p.Stop()
		}
	})
	srv := httptest.NewServer(httpHandler(reg, audit.Reader{JS: js}, ps...))
	t.Cleanup(srv.Close)
	ready := httpGet(t, srv, "/readyz")
	if !strings.Contains(ready, "ready: partition 0 active (ingest, detect and decide)") ||
		!strings.Contains(ready, "ready: partition 1 active (ingest and detect; it does not decide)") {
		t.Errorf("/readyz: %q", ready)
	}
	metrics := httpGet(t, srv, "/metrics")
	for _, want := range []string{`scalpel_stage_active{partition="0",stage="ingest"} 1`, `scalpel_stage_active{partition="1",stage="ingest"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
}

// httpGet is the body of a GET of path from srv, which must answer 200.
func httpGet(t *testing.T, srv *httptest.Server, path string) string {
	t.Helper()
	res, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", path, res.Status, b)
	}
	return string(b)
}

// TestReadyzOfADecideOnlyProcess: a process with role decide says it decides and consumes no
// telemetry, and one that stands by for it says what for.
func TestReadyzOfADecideOnlyProcess(t *testing.T) {
	_, _, js := natstest.Connect(t)
	cfg := config.Default()
	cfg.Role = config.RoleDecide
	var bodies []string
	for range 2 {
		reg := prometheus.NewRegistry()
		ps, err := startPipelines(context.Background(), []config.Config{cfg}, js, slog.New(slog.DiscardHandler), reg, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ps[0].Stop)
		srv := httptest.NewServer(httpHandler(reg, audit.Reader{JS: js}, ps...))
		t.Cleanup(srv.Close)
		bodies = append(bodies, httpGet(t, srv, "/readyz"))
	}
	if !strings.HasPrefix(bodies[0], "ready: active (decide; other processes consume the telemetry)") ||
		!strings.HasPrefix(bodies[1], "ready: standing by for the process that holds the decide lease") {
		t.Errorf("/readyz: first %q, second %q", bodies[0], bodies[1])
	}
}

func TestParsePartitions(t *testing.T) {
	for _, tt := range []struct {
		flag   string
		n      int
		parts  string
		auto   bool
		errHas string
	}{
		{"", 4, "[]", false, ""},
		{"2", 4, "[2]", false, ""},
		{"0, 3", 4, "[0 3]", false, ""},
		{"auto", 3, "[0 1 2]", true, ""},
		{"auto", 0, "", false, "ingest.partitions is 0"},
		{"two", 4, "", false, "want partition numbers"},
	} {
		parts, auto, err := parsePartitions(tt.flag, tt.n)
		switch {
		case tt.errHas != "":
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("--partition %q: %v, want an error saying %q", tt.flag, err, tt.errHas)
			}
		case err != nil || fmt.Sprint(parts) != tt.parts || auto != tt.auto:
			t.Errorf("--partition %q of %d: %v %v %v", tt.flag, tt.n, parts, auto, err)
		}
	}
	cfg := config.Default()
	cfg.Role, cfg.Ingest.Partitions = config.RoleDecide, 2
	k := 1
	cfg.Ingest.Partition = &k
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "role decide consumes no telemetry") {
		t.Errorf("role decide with a partition: %v", err)
	}
}
