package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// checkpointObject is the detector checkpoint of the default ingest consumer.
const checkpointObject = "detect"

// logBuffer keeps what a pipeline logs, for tests that check which restore path it took.
type logBuffer = pipeline.LogBuffer

// startLogged starts a pipeline as startPipeline does, also logging into logs.
func startLogged(t *testing.T, cfg config.Config, js jetstream.JetStream, logs *logBuffer) *pipeline.Pipeline {
	t.Helper()
	return startWith(t, cfg, js, logs, prometheus.NewRegistry())
}

// startWith starts a pipeline logging into logs, with its metrics on reg.
func startWith(t *testing.T, cfg config.Config, js jetstream.JetStream, logs *logBuffer, reg *prometheus.Registry) *pipeline.Pipeline {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, logs), &slog.HandlerOptions{Level: slog.LevelInfo}))
	return startOpts(t, pipeline.Options{Config: cfg, JS: js, Registry: reg, Logger: log})
}

// serveVersion1 starts a pipeline on a new server, has it watch version 1.0 of the simulated
// checkout service (seeded by seed) for d of event time, and stops it: the state a restart must
// keep. The harness still points at the stopped pipeline.
func serveVersion1(t *testing.T, cfg config.Config, seed uint64, d time.Duration) (*harness, *sim.Service, time.Time) {
	t.Helper()
	_, nc, js := natstest.Connect(t)
	first := startPipeline(t, cfg, js)
	applyCheckout(t, first)
	h := &harness{t: t, nc: nc, js: js, p: first, cfg: cfg}
	svc := sim.Checkout(seed)
	t0 := eventStart()
	h.publishDeploy(sim.CheckoutDeploy("d-1.0", t0, "1.0"))
	h.publishJS(svc.Traffic(t0, d))
	h.idle()
	first.Stop()
	return h, svc, t0
}

// checkpointConfig is the default config with a checkpoint interval and no replay window: only a
// checkpoint carries the detector's state across a restart.
func checkpointConfig(every time.Duration) config.Config {
	cfg := config.Default()
	cfg.DetectCheckpoint = schemas.Duration(every)
	cfg.DetectRestore = 0
	return cfg
}

// readCheckpoint returns the checkpoint object's bytes and metadata.
func readCheckpoint(t *testing.T, js jetstream.JetStream) ([]byte, map[string]string) {
	t.Helper()
	ctx := context.Background()
	obj, err := js.ObjectStore(ctx, schemas.ObjectState)
	if err != nil {
		t.Fatal(err)
	}
	info, err := obj.GetInfo(ctx, checkpointObject)
	if err != nil {
		t.Fatalf("no detector checkpoint: %v", err)
	}
	b, err := obj.GetBytes(ctx, checkpointObject)
	if err != nil {
		t.Fatal(err)
	}
	return b, info.Metadata
}

// writeCheckpoint replaces the checkpoint object, as a crash or a damaged store would leave it.
func writeCheckpoint(t *testing.T, js jetstream.JetStream, b []byte, meta map[string]string) {
	t.Helper()
	ctx := context.Background()
	obj, err := js.ObjectStore(ctx, schemas.ObjectState)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obj.Put(ctx, jetstream.ObjectMeta{Name: checkpointObject, Metadata: meta}, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

// TestRestartKeepsBaseline: version 1.0 serves long enough to become the baseline and scalpel
// stops. With a checkpoint and no replay window (detect_restore 0) only the checkpoint carries 1.0's
// history across the restart: the bad 2.0 block is rolled back and the anomaly names 1.0 as its
// baseline. Without either the baseline is lost and nothing is found — which is what makes the first
// case a test of the checkpoint. The replay window alone, the fallback, still covers this story.
func TestRestartKeepsBaseline(t *testing.T) {
	tests := []struct {
		name         string
		checkpoint   time.Duration
		restore      time.Duration
		wantPath     string
		wantRollback bool
	}{
		// An interval longer than the test: the checkpoint written on stop carries the state.
		{name: "checkpoint", checkpoint: time.Hour, wantPath: "detector restored from checkpoint", wantRollback: true},
		{name: "neither", checkpoint: 0},
		{name: "replay window", restore: 10 * time.Minute, wantPath: "detector restored from acknowledged telemetry", wantRollback: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := checkpointConfig(tt.checkpoint)
			cfg.DetectRestore = schemas.Duration(tt.restore)
			h, svc, t0 := serveVersion1(t, cfg, 4, 120*time.Second)
			js := h.js

			logs := &logBuffer{}
			second := startLogged(t, cfg, js, logs)
			t.Cleanup(second.Stop)
			h.p = second
			if tt.wantPath != "" && !strings.Contains(logs.String(), tt.wantPath) {
				t.Fatalf("restart did not log %q", tt.wantPath)
			}
			t1 := t0.Add(120 * time.Second)
			h.publishDeploy(sim.CheckoutDeploy("d-2.0", t1, "2.0"))
			svc.SetVersion("2.0")
			h.publishJS(svc.Traffic(t1, 60*time.Second))
			h.idle()

			if !tt.wantRollback {
				if cmds := h.commands(); len(cmds) != 0 {
					t.Fatalf("without a checkpoint or replay window the baseline should be lost, yet %d command(s) were issued", len(cmds))
				}
				return
			}
			checkOneBlockRollback(t, h.commands())
			var named bool
			for _, a := range h.anomalies() {
				if a.Component == "tax-calc" && a.Version == "2.0" {
					if a.BaselineVersion != "1.0" {
						t.Errorf("anomaly %s compares 2.0 with %q, want the pre-restart baseline 1.0", a.ID, a.BaselineVersion)
					}
					named = true
				}
			}
			if !named {
				t.Fatal("no anomaly of tax-calc 2.0")
			}
		})
	}
}

// TestRestartReplaysTelemetryAfterCheckpoint: a process stops without writing its last checkpoint
// (as in a crash, the checkpoint in the store is older than the ack floor). The next one restores
// the older checkpoint, runs the telemetry acknowledged after it through the detector, and ends up
// in exactly the state the stopped process had: its own checkpoint is byte for byte the one the
// stopped process would have written.
func TestRestartReplaysTelemetryAfterCheckpoint(t *testing.T) {
	cfg := checkpointConfig(time.Hour)
	h, svc, t0 := serveVersion1(t, cfg, 5, 60*time.Second)
	js := h.js
	older, olderMeta := readCheckpoint(t, js)

	second := startPipeline(t, cfg, js)
	h.p = second
	h.publishJS(svc.Traffic(t0.Add(60*time.Second), 60*time.Second))
	h.idle()
	second.Stop()
	want, wantMeta := readCheckpoint(t, js)
	if wantMeta["telemetry-seq"] == olderMeta["telemetry-seq"] {
		t.Fatalf("the second checkpoint reaches sequence %s like the first", wantMeta["telemetry-seq"])
	}

	writeCheckpoint(t, js, older, olderMeta) // the second process "crashed" before its last checkpoint
	logs := &logBuffer{}
	third := startLogged(t, cfg, js, logs)
	if !strings.Contains(logs.String(), "detector restored from checkpoint") || strings.Contains(logs.String(), "replayed=0 ") {
		t.Fatalf("the restart did not restore from the checkpoint and replay what followed it:\n%s", logs)
	}
	third.Stop()
	got, gotMeta := readCheckpoint(t, js)
	if gotMeta["telemetry-seq"] != wantMeta["telemetry-seq"] {
		t.Fatalf("restored detector reaches sequence %s, want %s", gotMeta["telemetry-seq"], wantMeta["telemetry-seq"])
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("detector restored from an older checkpoint plus replay differs from the one that handled the telemetry live (%d vs %d bytes)", len(got), len(want))
	}
}

// TestUnusableCheckpointFallsBack: a checkpoint that cannot be used — damaged bytes, another detect
// config, a telemetry stream made anew — is refused with a log line saying why; serve starts with
// the replay window, keeps working, and writes a good checkpoint over the bad one when it stops.
func TestUnusableCheckpointFallsBack(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(b []byte, meta map[string]string) ([]byte, map[string]string)
		reconf  func(*config.Config)
		wantLog string
	}{
		{name: "garbage bytes", wantLog: "level=WARN msg=\"restore detector: checkpoint unusable",
			damage: func(_ []byte, meta map[string]string) ([]byte, map[string]string) {
				return []byte("not a detector snapshot"), meta
			}},
		{name: "truncated snapshot", wantLog: "level=WARN msg=\"restore detector: checkpoint unusable",
			damage: func(b []byte, meta map[string]string) ([]byte, map[string]string) { return b[:len(b)/2], meta }},
		{name: "sequence beyond the stream", wantLog: "beyond the stream's last",
			damage: func(b []byte, meta map[string]string) ([]byte, map[string]string) {
				meta["telemetry-seq"] = "999999999"
				return b, meta
			}},
		{name: "another stream", wantLog: "telemetry-stream-created",
			damage: func(b []byte, meta map[string]string) ([]byte, map[string]string) {
				meta["telemetry-stream-created"] = "2020-01-01T00:00:00Z"
				return b, meta
			}},
		{name: "detect config changed", wantLog: "level=INFO msg=\"restore detector: the checkpoint was taken under another detect config",
			reconf: func(c *config.Config) { c.Detect.IdleTTL = schemas.Duration(31 * time.Minute) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := checkpointConfig(time.Hour)
			cfg.DetectRestore = schemas.Duration(10 * time.Minute)
			h, svc, t0 := serveVersion1(t, cfg, 6, 30*time.Second)
			js := h.js
			if tt.damage != nil {
				b, meta := tt.damage(readCheckpoint(t, js))
				writeCheckpoint(t, js, b, meta)
			}
			if tt.reconf != nil {
				tt.reconf(&cfg)
			}

			logs := &logBuffer{}
			second := startLogged(t, cfg, js, logs)
			h.p, h.cfg = second, cfg
			for _, want := range []string{tt.wantLog, "detector restored from acknowledged telemetry"} {
				if !strings.Contains(logs.String(), want) {
					t.Fatalf("restart did not log %q:\n%s", want, logs)
				}
			}
			h.publishJS(svc.Traffic(t0.Add(30*time.Second), 10*time.Second))
			h.idle()
			second.Stop()
			b, _ := readCheckpoint(t, js)
			if _, err := detect.Restore(cfg.Detect, b); err != nil {
				t.Fatalf("the checkpoint written after the fallback does not restore: %v", err)
			}
		})
	}
}

// TestCheckpointWrittenWhileServing: with a short interval, checkpoints are written while telemetry
// flows, not only on stop.
func TestCheckpointWrittenWhileServing(t *testing.T) {
	_, nc, js := natstest.Connect(t)
	cfg := checkpointConfig(time.Millisecond)
	p := startPipeline(t, cfg, js)
	t.Cleanup(p.Stop)
	applyCheckout(t, p)
	h := &harness{t: t, nc: nc, js: js, p: p, cfg: cfg}
	svc := sim.Checkout(8)
	t0 := eventStart()
	h.publishJS(svc.Traffic(t0, 20*time.Second))
	h.idle()
	ctx := context.Background()
	obj, err := js.ObjectStore(ctx, schemas.ObjectState)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, schemas.StreamTelemetry, "scalpel-ingest")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A batch that finds a put in flight takes no snapshot, so the last one may wait for the next
	// batch or the stop; but some are written while serving.
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		info, err := obj.GetInfo(ctx, checkpointObject)
		if err != nil {
			return err
		}
		seq, err := strconv.ParseUint(info.Metadata["telemetry-seq"], 10, 64)
		if err != nil || seq == 0 || seq > ci.AckFloor.Stream {
			return fmt.Errorf("checkpoint through sequence %q, want 1..%d", info.Metadata["telemetry-seq"], ci.AckFloor.Stream)
		}
		return nil
	})
}

// TestRestoredTelemetryIsNotHandledAgain: the ingest consumer is gone (deleted, or never
// acknowledged what the checkpoint holds), so the server delivers telemetry the checkpoint already
// holds. The restored process acknowledges it without handing it to the detector.
func TestRestoredTelemetryIsNotHandledAgain(t *testing.T) {
	_, nc, js := natstest.Connect(t)
	cfg := checkpointConfig(time.Hour)
	first := startPipeline(t, cfg, js)
	applyCheckout(t, first)
	h := &harness{t: t, nc: nc, js: js, p: first, cfg: cfg}
	svc := sim.Checkout(9)
	h.publishJS(svc.Traffic(eventStart(), 30*time.Second))
	h.idle()
	first.Stop()
	_, meta := readCheckpoint(t, js)
	seq, err := strconv.ParseUint(meta["telemetry-seq"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteConsumer(context.Background(), schemas.StreamTelemetry, "scalpel-ingest"); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	second := startWith(t, cfg, js, &logBuffer{}, reg)
	t.Cleanup(second.Stop)
	h.p = second
	h.idle()
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		mfs, err := reg.Gather()
		if err != nil {
			return err
		}
		for _, mf := range mfs {
			if mf.GetName() == "scalpel_ingest_skipped_total" {
				if got := mf.GetMetric()[0].GetCounter().GetValue(); got != float64(seq) {
					return fmt.Errorf("skipped %v messages, want all %d the checkpoint holds", got, seq)
				}
				return nil
			}
		}
		return fmt.Errorf("no scalpel_ingest_skipped_total")
	})
}
