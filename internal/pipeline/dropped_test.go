package pipeline_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/metricstest"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// TestDroppedEventsAreCounted: the events the detector does not detect on are on /metrics, by
// reason, so an operator sees a late producer or a series explosion without reading logs; and
// the README's table of metrics names every metric the pipeline exposes.
func TestDroppedEventsAreCounted(t *testing.T) {
	_, nc, js := natstest.Connect(t)
	cfg := config.Default()
	cfg.Detect.MaxSeries = 2
	reg := prometheus.NewRegistry()
	p := startOpts(t, pipeline.Options{Config: cfg, JS: js, Registry: reg, Logger: testLogger(t)})
	t.Cleanup(p.Stop)
	h := &harness{t: t, nc: nc, js: js, p: p, cfg: cfg}
	start := eventStart()
	lat := 10.0
	event := func(at time.Duration, comp string) schemas.TelemetryEvent {
		return schemas.TelemetryEvent{ID: uuid.NewString(), TS: start.Add(at), Service: "checkout", Component: comp,
			Version: "1.0", LatencyMS: &lat}
	}
	var evs []schemas.TelemetryEvent
	for i := range 20 {
		evs = append(evs, event(time.Duration(i)*time.Second, "tax-calc"), event(time.Duration(i)*time.Second, "cart"))
	}
	evs = append(evs,
		event(20*time.Second, "search"), event(20*time.Second, "search"), // a third component: over the limit
		event(time.Second, "tax-calc")) // its bucket closed long ago: late
	h.publishJS(evs)
	h.idle()
	want := map[string]float64{"late": 1, "invalid": 0, "series_limit": 2}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		mfs, err := reg.Gather()
		if err != nil {
			return err
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != "scalpel_detect_dropped_events_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "reason" {
						got[l.GetValue()] = m.GetCounter().GetValue()
					}
				}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("scalpel_detect_dropped_events_total = %v, want %v", got, want)
		}
		return nil
	})

	// The README's metrics table names every metric serve exposes.
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		name := mf.GetName()
		if strings.HasPrefix(name, "scalpel_detect_checkpoint") {
			name = "scalpel_detect_checkpoint_*"
		}
		if !strings.Contains(string(readme), "`"+name+"`") && !strings.Contains(string(readme), "`"+name+"{") {
			t.Errorf("README's metrics table does not name %s", mf.GetName())
		}
	}
}

// TestProducerAheadDoesNotBlindTheDetector: one event stamped an hour ahead, from a producer
// whose clock runs ahead, used to move the detector's watermark an hour on, and every other
// producer's events for that hour were dropped as late. Ingest now rejects it, with a reason, and
// the others' events are detected on.
func TestProducerAheadDoesNotBlindTheDetector(t *testing.T) {
	_, nc, js := natstest.Connect(t)
	cfg := config.Default()
	reg := prometheus.NewRegistry()
	p := startOpts(t, pipeline.Options{Config: cfg, JS: js, Registry: reg, Logger: testLogger(t)})
	t.Cleanup(p.Stop)
	h := &harness{t: t, nc: nc, js: js, p: p, cfg: cfg}
	lat := 5.0
	ahead := schemas.TelemetryEvent{ID: uuid.NewString(), TS: time.Now().Add(time.Hour), Service: "billing", Component: "invoice",
		Version: "1.0", LatencyMS: &lat}
	evs := append([]schemas.TelemetryEvent{ahead}, sim.Checkout(4).Traffic(eventStart(), 60*time.Second)...)
	h.publishJS(evs)
	h.idle()
	if n, _ := metricstest.Value(t, reg, "scalpel_ingest_events_total", nil); n != float64(len(evs)-1) {
		t.Errorf("handed %v events to detect, want the %d on time", n, len(evs)-1)
	}
	if n, _ := metricstest.Value(t, reg, "scalpel_detect_dropped_events_total", map[string]string{"reason": "late"}); n != 0 {
		t.Errorf("the detector dropped %v events as late", n)
	}
	if n, _ := metricstest.Value(t, reg, "scalpel_rejected_total", map[string]string{"stage": "ingest", "reason_class": ingest.ClassFuture}); n != 1 {
		t.Errorf("rejected %v messages as %s, want 1", n, ingest.ClassFuture)
	}
	newest := evs[1].TS
	for _, ev := range evs[1:] {
		if ev.TS.After(newest) {
			newest = ev.TS
		}
	}
	want := newest.Add(-time.Duration(cfg.Detect.AllowedLateness))
	if wm, _ := metricstest.Value(t, reg, "scalpel_detect_watermark_seconds", nil); math.Abs(wm-float64(want.UnixNano())/1e9) > 1e-3 {
		t.Errorf("scalpel_detect_watermark_seconds = %v, want %v (%s): the newest event on time less allowed_lateness", wm, float64(want.UnixNano())/1e9, want)
	}
}
