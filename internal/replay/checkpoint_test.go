package replay_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/replay"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// A replay of a range that starts minutes into the streams reproduces, from serve's dated detector
// checkpoint, an anomaly only a series' own long-run profile finds: a regression without a deploy.
// A warm-up shorter than the own profile's cannot, which is what the checkpoint is for.
func TestReplayFromDatedCheckpointMatchesLive(t *testing.T) {
	cfg := config.Default()
	cfg.DetectCheckpoint = schemas.Duration(10 * time.Millisecond)
	cfg.DetectCheckpointHistory = schemas.Duration(30 * time.Second)
	cfg.DetectCheckpointKeep = 6
	cfg.Detect.OwnProfileWarmup = schemas.Duration(2 * time.Minute)
	l := startLive(t, cfg, sim.CheckoutManifest)
	svc := sim.Checkout(11)
	t0 := time.Now().UTC().Add(-10 * time.Minute).Truncate(time.Minute)
	since := t0.Add(3*time.Minute + 30*time.Second)
	l.publishDeploy(sim.CheckoutDeploy("d-1.0", t0, "1.0"))
	l.publish(svc.Traffic(t0, 200*time.Second))
	l.idle(durIngest)
	l.publish(svc.Traffic(t0.Add(200*time.Second), 10*time.Second)) // batches after the interval: a checkpoint
	l.idle(durIngest)
	var cp *pipeline.StoredCheckpoint
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		var why string
		var err error
		if cp, why, err = pipeline.FindCheckpoint(l.ctx, l.js, cfg, since); err != nil {
			return err
		}
		if cp == nil || cp.Watermark.Before(t0.Add(3*time.Minute)) {
			return fmt.Errorf("no dated checkpoint after 3m yet: %v %s", cp, why)
		}
		return nil
	})
	// cart starts failing at the same version: no deploy explains it.
	cart := svc.Block("cart", "")
	l.publish(svc.Traffic(t0.Add(210*time.Second), 30*time.Second))
	cart.Versions = map[string]sim.Behaviour{"1.0": {ErrorRate: 0.1, ErrorCategory: schemas.ErrException, LatencyMedianMS: 20, LatencySigma: 0.35}}
	l.publish(svc.Traffic(t0.Add(4*time.Minute), time.Minute))
	l.idle(durIngest, durDecide)

	var live [][]byte
	for _, b := range readStream(t, l.js, schemas.StreamAnomalies, l.subj.AnomalyAll()) {
		var a schemas.Anomaly
		if err := json.Unmarshal(b, &a); err != nil {
			t.Fatal(err)
		}
		if !a.TSDetected.Before(since) {
			live = append(live, b)
		}
	}
	own := false
	for _, b := range live {
		own = own || bytes.Contains(b, []byte(`"baseline_version":"own profile`))
	}
	if !own {
		t.Fatalf("live found no own-profile anomaly after %s: %d anomalies", since, len(live))
	}

	open := func(checkpoints bool) *replay.ServerSource {
		o := replay.ServerOptions{Subjects: cfg.Subjects(), Since: since, Warmup: 10 * time.Second}
		if checkpoints {
			o.Checkpoints = &cfg
		}
		src, err := replay.NewServerSource(l.ctx, l.js, o)
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	src := open(true)
	used, why := src.Checkpoint()
	if used == nil || !used.Watermark.Before(since) {
		t.Fatalf("replay did not start from a checkpoint before %s: %v (%s)", since, used, why)
	}
	tl, err := replay.Run(l.ctx, src, replay.Options{Config: cfg, Since: since})
	_ = src.Close()
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "anomaly", marshalAll(t, tl.Anomalies), live)
	if len(tl.Decisions) == 0 || tl.Diff == nil || !tl.Diff.Identical {
		t.Fatalf("decide on the replayed anomalies: %d decisions, diff against the recording %v", len(tl.Decisions), tl.Diff)
	}
	if tl.Checkpoint == nil || tl.Checkpoint.Object != used.Object || len(tl.Checkpoint.Snapshot) != 0 {
		t.Errorf("timeline checkpoint = %+v, want %s without its bytes", tl.Checkpoint, used.Object)
	}
	var page bytes.Buffer
	if err := replay.WriteReport(&page, tl, replay.ReportOptions{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), "started from the checkpoint "+used.Object) {
		t.Error("the report does not say which checkpoint the detector started from")
	}

	t.Run("bundle", func(t *testing.T) {
		bundle, recs := exportBundle(t, l.ctx, open(true))
		if !hasKind(recs, replay.KindCheckpoint) {
			t.Fatalf("bundle holds no checkpoint record")
		}
		ftl, err := replay.Run(l.ctx, replay.NewFileSource(bytes.NewReader(bundle), int64(len(bundle))), replay.Options{Config: cfg, Since: since})
		if err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "anomaly from the bundle", marshalAll(t, ftl.Anomalies), live)
	})

	t.Run("same telemetry without the checkpoint", func(t *testing.T) {
		if cp, why := open(false).Checkpoint(); cp != nil || why == "" {
			t.Fatalf("Checkpoint() without Checkpoints = %v, %q; want none, and why", cp, why)
		}
		// The records the replay read, less the checkpoint: the telemetry after its sequence is
		// less than the own profile's warm-up, so only the checkpoint's state can find the
		// regression.
		_, recs := exportBundle(t, l.ctx, open(true))
		kept := recs[:0]
		for _, r := range recs {
			if r.Kind != replay.KindCheckpoint {
				kept = append(kept, r)
			}
		}
		wtl, err := replay.Run(l.ctx, replay.NewSliceSource(kept), replay.Options{Config: cfg, Since: since})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range wtl.Anomalies {
			if strings.HasPrefix(a.BaselineVersion, "own profile") {
				t.Fatalf("found without the checkpoint: %+v", a)
			}
		}
	})

	t.Run("one service", func(t *testing.T) {
		o := replay.ServerOptions{Subjects: cfg.Subjects(), Since: since, Service: "checkout", Checkpoints: &cfg}
		src, err := replay.NewServerSource(l.ctx, l.js, o)
		if err != nil {
			t.Fatal(err)
		}
		if cp, why := src.Checkpoint(); cp == nil || cp.Service != "checkout" {
			t.Fatalf("Checkpoint() = %v, %q; want one for checkout", cp, why)
		}
		stl, err := replay.Run(l.ctx, src, replay.Options{Config: cfg, Since: since})
		_ = src.Close()
		if err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "anomaly of checkout", marshalAll(t, stl.Anomalies), live)
	})

	t.Run("other detect config", func(t *testing.T) {
		other := cfg
		other.Detect.Alpha /= 2
		cp, why, err := pipeline.FindCheckpoint(l.ctx, l.js, other, since)
		if err != nil || cp != nil || !strings.Contains(why, "another detect config") {
			t.Fatalf("FindCheckpoint under another detect config = %v, %q, %v", cp, why, err)
		}
	})

	t.Run("pruned", func(t *testing.T) {
		obj, err := l.js.ObjectStore(l.ctx, schemas.ObjectState)
		if err != nil {
			t.Fatal(err)
		}
		all, err := obj.List(l.ctx)
		if err != nil {
			t.Fatal(err)
		}
		dated := 0
		for _, o := range all {
			if strings.HasPrefix(o.Name, "detect@") {
				dated++
			}
		}
		if dated == 0 || dated > cfg.DetectCheckpointKeep {
			t.Fatalf("%d dated checkpoints kept, want 1 to %d", dated, cfg.DetectCheckpointKeep)
		}
	})
}

func hasKind(recs []replay.Record, kind string) bool {
	for _, r := range recs {
		if r.Kind == kind {
			return true
		}
	}
	return false
}
