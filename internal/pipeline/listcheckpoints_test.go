package pipeline_test

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/schemas"
)

// ListCheckpoints says of each stored checkpoint whether a replay can start from it, and
// FindCheckpoint takes the newest usable one before a time, or says why there is none.
func TestListAndFindCheckpoints(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	cfg := config.Default()
	if err := ingest.EnsureTopology(ctx, js, cfg.Subjects(), cfg.Topology); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, cfg.Subjects().Telemetry("svc", "c"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	str, err := js.Stream(ctx, schemas.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	created := str.CachedInfo().Created.UTC().Format(time.RFC3339Nano)
	obj, err := js.ObjectStore(ctx, schemas.ObjectState)
	if err != nil {
		t.Fatal(err)
	}
	good, err := detect.New(cfg.Detect).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	other := cfg.Detect
	other.Alpha /= 2
	foreign, err := detect.New(other).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	put := func(name string, wm time.Time, seq int, streamCreated string, snap []byte) {
		t.Helper()
		meta := map[string]string{"telemetry-stream": schemas.StreamTelemetry, "telemetry-stream-created": streamCreated,
			"telemetry-seq": strconv.Itoa(seq), "durable": ingest.DefaultConfig().Durable, "filter": cfg.Subjects().TelemetryAll(),
			"watermark": wm.Format(time.RFC3339Nano), "series": "7"}
		if _, err := obj.Put(ctx, jetstream.ObjectMeta{Name: name, Metadata: meta}, bytes.NewReader(snap)); err != nil {
			t.Fatal(err)
		}
	}
	put("detect", t0.Add(3*time.Hour), 1, created, good)
	put("detect@20261126T110000Z", t0.Add(2*time.Hour), 1, created, foreign)
	put("detect@20261126T100000Z", t0.Add(time.Hour), 1, created, good)
	put("detect@20261126T090000Z", t0, 1, "2026-01-01T00:00:00Z", good)
	put("detect.p1@20261126T100000Z", t0.Add(time.Hour), 1, created, good) // another consumer's

	list, err := pipeline.ListCheckpoints(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range list {
		got = append(got, c.Object+" "+c.Problem)
	}
	want := []string{"detect ", "detect@20261126T110000Z taken under another detect config or build",
		"detect@20261126T100000Z ", "detect@20261126T090000Z of another telemetry stream, consumer or filter"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("ListCheckpoints:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if list[0].Series != 7 || list[0].Seq != 1 || list[0].Bytes != uint64(len(good)) {
		t.Errorf("latest checkpoint %+v: want 7 series, seq 1, %d bytes", list[0], len(good))
	}

	for _, tt := range []struct {
		at      time.Time
		want    string // the object found, or part of why none
		problem bool
	}{
		{at: t0.Add(4 * time.Hour), want: "detect"},
		{at: t0.Add(150 * time.Minute), want: "detect@20261126T100000Z"}, // the 11:00 copy is another config's
		// The 10:00 copy saw events up to its watermark plus allowed_lateness (2s), strictly
		// before a range that starts at it.
		{at: t0.Add(time.Hour + 2*time.Second + time.Nanosecond), want: "detect@20261126T100000Z"},
		{at: t0.Add(time.Hour + 2*time.Second), want: "(kept: 3 later; 1 of another telemetry stream", problem: true},
		{at: t0.Add(30 * time.Minute), want: "(kept: 3 later; 1 of another telemetry stream", problem: true},
	} {
		cp, why, err := pipeline.FindCheckpoint(ctx, js, cfg, tt.at)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case tt.problem && (cp != nil || !strings.Contains(why, tt.want)):
			t.Errorf("FindCheckpoint(%s) = %v, %q; want none, %q", tt.at, cp, why, tt.want)
		case !tt.problem && (cp == nil || cp.Object != tt.want || !bytes.Equal(cp.Snapshot, good)):
			t.Errorf("FindCheckpoint(%s) = %v, %q; want %s", tt.at, cp, why, tt.want)
		}
	}
}
