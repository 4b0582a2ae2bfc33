package decide

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/schemas"
)

func TestCatalog(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketCatalog, History: 8})
	if err != nil {
		t.Fatal(err)
	}
	cat := NewCatalog(kv)

	if _, err := cat.Manifest(ctx, "checkout"); !errors.Is(err, ErrUnknownService) {
		t.Fatalf("empty catalog: err = %v, want ErrUnknownService", err)
	}
	if got, err := cat.List(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty list = %v, %v", got, err)
	}

	m := testManifest()
	rev1, err := cat.Apply(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cat.Manifest(ctx, "checkout")
	if err != nil {
		t.Fatal(err)
	}
	if !equalJSON(got, m) {
		t.Errorf("read back %+v, want %+v", got, m)
	}

	m.DryRun = true
	rev2, err := cat.Apply(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if rev2 <= rev1 {
		t.Errorf("re-apply revision %d, want > %d", rev2, rev1)
	}
	got, rev, err := cat.Get(ctx, "checkout")
	if err != nil || !got.DryRun || rev != rev2 {
		t.Errorf("after re-apply: dry_run=%v rev=%d err=%v", got != nil && got.DryRun, rev, err)
	}

	other := &schemas.Manifest{Service: "pricing", Components: []schemas.ManifestComponent{{Component: "rates"}}}
	if _, err := cat.Apply(ctx, other); err != nil {
		t.Fatal(err)
	}
	if names, err := cat.List(ctx); err != nil || !slices.Equal(names, []string{"checkout", "pricing"}) {
		t.Errorf("list = %v, %v", names, err)
	}

	bad := []*schemas.Manifest{
		nil,
		{Service: "no components"},
		{Service: "x", Components: []schemas.ManifestComponent{{Component: "a"}, {Component: "a"}}},
	}
	for _, b := range bad {
		if _, err := cat.Apply(ctx, b); !errors.Is(err, ErrInvalidManifest) {
			t.Errorf("apply %+v: err = %v, want ErrInvalidManifest", b, err)
		}
	}
	if _, err := cat.Manifest(ctx, "bad name!"); !errors.Is(err, ErrUnknownService) {
		t.Errorf("invalid key: err = %v, want ErrUnknownService", err)
	}

	if err := cat.Delete(ctx, "pricing"); err != nil {
		t.Fatal(err)
	}
	if _, err := cat.Manifest(ctx, "pricing"); !errors.Is(err, ErrUnknownService) {
		t.Errorf("deleted: err = %v, want ErrUnknownService", err)
	}
	if names, _ := cat.List(ctx); !slices.Equal(names, []string{"checkout"}) {
		t.Errorf("list after delete = %v", names)
	}

	// The engine reads the same catalog.
	e := New(DefaultConfig(), cat)
	for _, d := range []*schemas.DeployEvent{d0, d1} {
		if _, err := e.HandleDeploy(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := e.HandleAnomaly(ctx, anomaly("a1", "cart", "3.1", 1e9))
	if err != nil || len(ds) != 1 || ds[0].Action != schemas.ActionRollback || !ds[0].DryRun {
		t.Fatalf("decision from KV catalog = %+v, %v", ds, err)
	}
}

func TestStaticCatalog(t *testing.T) {
	s := NewStaticCatalog(testManifest(), nil)
	if _, err := s.Manifest(context.Background(), "checkout"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Manifest(context.Background(), "nope"); !errors.Is(err, ErrUnknownService) {
		t.Fatalf("err = %v", err)
	}
}
