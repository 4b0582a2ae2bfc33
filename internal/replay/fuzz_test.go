package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/replay"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// FuzzReplayBundle: a bundle is a file anyone can hand to `scalpel replay --from-file`, and it may
// carry a detector checkpoint, or one per partition of a cut stream. Whatever its bytes, the replay
// returns an error or a timeline, with the config's stream cut or not; it never panics or hangs.
func FuzzReplayBundle(f *testing.F) {
	cfg := config.Default()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	svc := sim.Checkout(1)
	var bundle []byte
	rec := func(kind, subject string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		r := replay.Record{Kind: kind, Subject: subject, Data: b}
		bundle = r.AppendNDJSON(bundle)
	}
	m, err := schemas.ParseManifest([]byte(sim.CheckoutManifest))
	if err != nil {
		f.Fatal(err)
	}
	rec(replay.KindManifest, "checkout", m)
	rec(replay.KindDeploy, cfg.Subjects().Deploy("checkout"), sim.CheckoutDeploy("d-1.0", t0, "1.0"))
	det := detect.New(cfg.Detect)
	evs := svc.Traffic(t0, 5*time.Second)
	for i := range evs {
		det.Observe(&evs[i])
	}
	det.Advance(det.Watermark())
	snap, err := det.Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	rec(replay.KindCheckpoint, "scalpel_state/detect", replay.CheckpointRecord{Object: "detect", Seq: 3, Watermark: det.Watermark(), Service: "checkout", Snapshot: snap})
	for i := range evs[:20] {
		rec(replay.KindTelemetry, cfg.Subjects().Telemetry(evs[i].Service, evs[i].Component), &evs[i])
	}
	// The seed must reach the restore, or the fuzzer starts far from it.
	tl, err := replay.Run(context.Background(), replay.NewFileSource(bytes.NewReader(bundle), int64(len(bundle))), replay.Options{Config: cfg})
	if err != nil || tl.Checkpoint == nil || tl.Stats.Events == 0 {
		f.Fatalf("seed bundle: err %v, checkpoint %v, %d events", err, tl.Checkpoint, tl.Stats.Events)
	}
	f.Add(bundle)
	// The same of a stream cut into four partitions, which a replay under cut (below) reads with a
	// detector per partition, from its partition's checkpoint.
	bundle = nil
	rec(replay.KindManifest, "checkout", m)
	k := ingest.Partition("checkout", 4)
	rec(replay.KindCheckpoint, "scalpel_state/detect.scalpel-ingest-p"+strconv.Itoa(k), replay.CheckpointRecord{Object: "detect.scalpel-ingest-p" + strconv.Itoa(k), Seq: 3, Watermark: det.Watermark(), Partition: &k, Snapshot: snap})
	for i := range evs[:20] {
		rec(replay.KindTelemetry, cfg.Subjects().Telemetry(evs[i].Service, evs[i].Component)+"."+strconv.Itoa(k), &evs[i])
	}
	rec(replay.KindTelemetry, "telemetry._scalpel.scalpel-ingest-p9.9", map[string]any{"ts": t0, "service": "_scalpel", "component": "scalpel-ingest-p9", "version": "1"})
	cut := cfg
	cut.Ingest.Partitions = 4
	if tl, err := replay.Run(context.Background(), replay.NewFileSource(bytes.NewReader(bundle), int64(len(bundle))), replay.Options{Config: cut}); err != nil || len(tl.Checkpoints) != 1 || tl.Stats.Events == 0 {
		f.Fatalf("seed bundle of a cut stream: err %v, checkpoints %v, %d events", err, tl.Checkpoints, tl.Stats.Events)
	}
	f.Add(bundle)
	f.Add([]byte(`{"kind":"checkpoint","data":{"object":"detect","snapshot":"c2NhbHBlbC1kZXRlY3QA"}}` + "\n"))
	f.Add([]byte(`{"kind":"telemetry","subject":"telemetry.checkout.cart","raw":"{\"ts\": 1"}` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, c := range []config.Config{cfg, cut} {
			_, _ = replay.Run(ctx, replay.NewFileSource(bytes.NewReader(b), int64(len(b))), replay.Options{Config: c})
			if ctx.Err() != nil {
				t.Fatalf("replay of a %d-byte bundle (%d partitions) did not finish in 10 s", len(b), c.Ingest.Partitions)
			}
		}
	})
}
