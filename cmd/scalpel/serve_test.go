package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
		srv := httptest.NewServer(httpHandler(reg, p))
		t.Cleanup(srv.Close)
		get := func(path string) string {
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
		bodies = append(bodies, get("/readyz"))
		metrics = append(metrics, get("/metrics"))
	}
	if !strings.HasPrefix(bodies[0], "ready: active (ingest, detect and decide)") || !strings.HasPrefix(bodies[1], "ready: standing by") {
		t.Fatalf("/readyz: first %q, second %q", bodies[0], bodies[1])
	}
	if !strings.Contains(metrics[0], `scalpel_stage_active{stage="ingest"} 1`) || !strings.Contains(metrics[1], `scalpel_stage_active{stage="ingest"} 0`) {
		t.Fatal("/metrics does not say which process consumes the telemetry")
	}
}
