package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/schemas"
)

func TestReplayListCheckpoints(t *testing.T) {
	s, _, js := natstest.Connect(t)
	ctx := context.Background()
	cfg := config.Default()
	if err := ingest.EnsureTopology(ctx, js, cfg.Subjects(), cfg.Topology); err != nil {
		t.Fatal(err)
	}
	if out := runCLI(t, "--server", s.ClientURL(), "replay", "--list-checkpoints"); !strings.Contains(out, "no detector checkpoints") {
		t.Fatalf("with none stored: %s", out)
	}
	str, err := js.Stream(ctx, schemas.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := js.ObjectStore(ctx, schemas.ObjectState)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := detect.New(cfg.Detect).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	meta := map[string]string{"telemetry-stream": schemas.StreamTelemetry,
		"telemetry-stream-created": str.CachedInfo().Created.UTC().Format(time.RFC3339Nano),
		"telemetry-seq":            "0", "durable": ingest.DefaultConfig().Durable, "filter": cfg.Subjects().TelemetryAll(),
		"watermark": "2026-11-26T10:00:00Z", "series": "3"}
	if _, err := obj.Put(ctx, jetstream.ObjectMeta{Name: "detect@20261126T100000Z", Metadata: meta}, bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	out := runCLI(t, "--server", s.ClientURL(), "replay", "--list-checkpoints")
	for _, want := range []string{"detect@20261126T100000Z", "yes", "--since after 2026-11-26T10:00:02Z"} {
		if !strings.Contains(out, want) {
			t.Errorf("listing lacks %q:\n%s", want, out)
		}
	}
	if out := runCLI(t, "--server", s.ClientURL(), "-o", "json", "replay", "--list-checkpoints"); !strings.Contains(out, `"series": 3`) {
		t.Errorf("JSON listing: %s", out)
	}
}

// TestReplayReadsTheCutFromTheStream: on a telemetry stream cut into partitions, a replay without
// ingest.partitions in --config runs a detector per partition all the same, as serve did, and
// --partition needs no --config either.
func TestReplayReadsTheCutFromTheStream(t *testing.T) {
	s, _, js := natstest.Connect(t)
	ctx := context.Background()
	cfg := config.Default()
	cfg.Topology.TelemetryPartitions = 2
	if err := ingest.EnsureTopology(ctx, js, cfg.Subjects(), cfg.Topology); err != nil {
		t.Fatal(err)
	}
	lat := 10.0
	b, _ := json.Marshal(schemas.TelemetryEvent{TS: time.Now().UTC().Add(-time.Minute), Service: "checkout", Component: "cart", Version: "1", LatencyMS: &lat})
	if _, err := js.Publish(ctx, "telemetry.checkout.cart", b); err != nil {
		t.Fatal(err)
	}
	out := runCLI(t, "--server", s.ClientURL(), "replay")
	if !strings.Contains(out, "the telemetry stream is cut into 2 partitions") || !strings.Contains(out, "replay: 1 events") {
		t.Errorf("replay of a cut stream without --config:\n%s", out)
	}
	k := strconv.Itoa(ingest.Partition("checkout", 2))
	if out := runCLI(t, "--server", s.ClientURL(), "replay", "--partition", k); !strings.Contains(out, "replay: 1 events") {
		t.Errorf("replay --partition %s without --config:\n%s", k, out)
	}
}
