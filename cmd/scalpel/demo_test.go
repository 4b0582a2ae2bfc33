package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemoRollsBackTheBadBlock runs `scalpel demo` as a user would, faster: the bad block, and
// only it, is rolled back. Its event time runs ahead of the wall clock, so the story has to start
// in the past, or ingest would reject its events as stamped ahead of the server's clock.
func TestDemoRollsBackTheBadBlock(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo's story")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := runDemo(ctx, &out, demoOptions{speed: 60, seed: 1, baseline: 60 * time.Second}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"1 rollback command(s)",
		"now running: tax-calc/rate-lookup 1.0, tax-calc/rounding 2.0, cart 2.0, payment 2.0",
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("the demo's story lacks %q:\n%s", want, out.String())
		}
	}
}
