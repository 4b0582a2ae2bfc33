package replay_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/replay"
)

// TestBenchReplay checks that BenchReplay runs; it asserts nothing about speed. Set
// SCALPEL_BENCH_REPLAY_N for a real measurement (the result is logged).
func TestBenchReplay(t *testing.T) {
	n := 5_000
	if v, err := strconv.Atoi(os.Getenv("SCALPEL_BENCH_REPLAY_N")); err == nil && v > 0 {
		n = v
	}
	_, _, js := natstest.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCHREPLAY", Subjects: []string{"b.telemetry.>"}}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		comp := "c" + strconv.Itoa(i%10)
		body := fmt.Appendf(nil, `{"id":"%012d","ts":%q,"service":"shop","component":%q,"block":"b%d","version":"1.4.2","cohort":"baseline","latency_ms":%.2f,"cpu":0.31,"mem_mb":212}`,
			i, t0.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano), comp, i%100/10, 5+float64(i%37))
		if _, err := js.PublishAsync("b.telemetry.shop."+comp, body); err != nil {
			t.Fatal(err)
		}
		if js.PublishAsyncPending() > 1000 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	replayRate, orderedRate, ratio, err := replay.BenchReplay(ctx, js, "BENCHREPLAY", n, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d messages: replay %.0f msg/s, ordered consumer %.0f msg/s, ratio %.2f", n, replayRate, orderedRate, ratio)
}
