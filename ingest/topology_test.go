package ingest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/schemas"
)

func TestEnsureTopologyIsIdempotent(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	for _, subj := range []schemas.Subjects{{}, {Prefix: "acme"}} {
		if subj.Prefix != "" {
			// A second prefix on the same server would collide on stream names; use a fresh server.
			_, _, js = natstest.Connect(t)
		}
		cfg := DefaultTopologyConfig()
		for run := range 2 {
			if err := EnsureTopology(ctx, js, subj, cfg); err != nil {
				t.Fatalf("prefix %q run %d: %v", subj.Prefix, run, err)
			}
		}
		for _, want := range cfg.Streams(subj) {
			st, err := js.Stream(ctx, want.Name)
			if err != nil {
				t.Fatalf("stream %s: %v", want.Name, err)
			}
			got := st.CachedInfo().Config
			if got.Subjects[0] != want.Subjects[0] || got.Duplicates != 2*time.Minute || got.MaxAge != want.MaxAge {
				t.Errorf("stream %s: subjects %v dup %v maxAge %v", want.Name, got.Subjects, got.Duplicates, got.MaxAge)
			}
		}
		active, err := js.KeyValue(ctx, schemas.BucketActive)
		if err != nil {
			t.Fatal(err)
		}
		st, err := active.Status(ctx)
		if err != nil || st.History() < 10 {
			t.Fatalf("scalpel_active history = %d, err %v; want >= 10", st.History(), err)
		}
		for _, b := range []string{schemas.BucketCatalog, schemas.BucketState} {
			if _, err := js.KeyValue(ctx, b); err != nil {
				t.Errorf("kv %s: %v", b, err)
			}
		}
		for _, b := range []string{schemas.ObjectBlocks, schemas.ObjectState} {
			if _, err := js.ObjectStore(ctx, b); err != nil {
				t.Errorf("object store %s: %v", b, err)
			}
		}
		// The object store and the KV bucket of the same name live side by side.
		for _, name := range []string{"KV_" + schemas.BucketState, "OBJ_" + schemas.ObjectState} {
			if _, err := js.Stream(ctx, name); err != nil {
				t.Errorf("stream %s: %v", name, err)
			}
		}
		if _, err := js.Publish(ctx, subj.Telemetry("a", "b"), []byte("{}")); err != nil {
			t.Errorf("publish to %s: %v", subj.Telemetry("a", "b"), err)
		}
	}
}

func TestEnsureTopologyAppliesChangedLimits(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	cfg := DefaultTopologyConfig()
	if err := EnsureTopology(ctx, js, schemas.Subjects{}, cfg); err != nil {
		t.Fatal(err)
	}
	cfg.TelemetryMaxAge = schemas.Duration(Day)
	if err := EnsureTopology(ctx, js, schemas.Subjects{}, cfg); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, schemas.StreamTelemetry)
	if err != nil || st.CachedInfo().Config.MaxAge != Day {
		t.Fatalf("max age not updated: %v", err)
	}
}

func TestTopologyConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*TopologyConfig)
		ok   bool
	}{
		{"defaults", func(*TopologyConfig) {}, true},
		{"replicas 0", func(c *TopologyConfig) { c.Replicas = 0 }, false},
		{"no duplicates window", func(c *TopologyConfig) { c.Duplicates = 0 }, false},
		{"history below 10", func(c *TopologyConfig) { c.ActiveHistory = 5 }, false},
		{"window longer than retention", func(c *TopologyConfig) { c.RejectedMaxAge = schemas.Duration(time.Minute) }, false},
		{"negative bytes", func(c *TopologyConfig) { c.TelemetryMaxBytes = -1 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultTopologyConfig()
			tt.mod(&c)
			err := c.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}
