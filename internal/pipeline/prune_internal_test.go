package pipeline

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/internal/natstest"
)

// prune keeps the newest dated copies of its own checkpoint and touches nothing else: not the
// checkpoint a restart reads, not another consumer's copies.
func TestPruneKeepsTheNewestDatedCheckpoints(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	obj, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "state"})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	names := []string{"detect", "detect.p1@20261126T090000Z", "detect@notatime"}
	for h := range 5 {
		names = append(names, datedCheckpointName("detect", t0.Add(time.Duration(h)*time.Hour)))
	}
	for _, n := range names {
		if _, err := obj.Put(ctx, jetstream.ObjectMeta{Name: n}, bytes.NewReader([]byte("x"))); err != nil {
			t.Fatal(err)
		}
	}
	c := &checkpointer{obj: obj, name: "detect", keep: 2, log: slog.New(slog.DiscardHandler)}
	c.prune(ctx)
	all, err := obj.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range all {
		got = append(got, o.Name)
	}
	slices.Sort(got)
	want := []string{"detect", "detect.p1@20261126T090000Z", "detect@20261126T120000Z", "detect@20261126T130000Z", "detect@notatime"}
	if !slices.Equal(got, want) {
		t.Fatalf("after prune: %v\nwant %v", got, want)
	}
}
