package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/replay"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// FuzzReplayBundle: a bundle is a file anyone can hand to `scalpel replay --from-file`, and it may
// carry a detector checkpoint. Whatever its bytes, the replay returns an error or a timeline; it
// never panics or hangs.
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
	f.Add([]byte(`{"kind":"checkpoint","data":{"object":"detect","snapshot":"c2NhbHBlbC1kZXRlY3QA"}}` + "\n"))
	f.Add([]byte(`{"kind":"telemetry","subject":"telemetry.checkout.cart","raw":"{\"ts\": 1"}` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = replay.Run(ctx, replay.NewFileSource(bytes.NewReader(b), int64(len(b))), replay.Options{Config: cfg})
		if ctx.Err() != nil {
			t.Fatalf("replay of a %d-byte bundle did not finish in 10 s", len(b))
		}
	})
}
