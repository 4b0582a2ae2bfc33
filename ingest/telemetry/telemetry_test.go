package telemetry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/ingest/telemetry"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/schemas"
)

// stream creates a TELEMETRY stream and returns a function that reads every event stored so far,
// each checked by the schema's strict decoder.
func stream(t *testing.T, js jetstream.JetStream) func() []schemas.TelemetryEvent {
	t.Helper()
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: schemas.StreamTelemetry,
		Subjects: []string{schemas.Subjects{}.TelemetryAll()}, Duplicates: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return func() []schemas.TelemetryEvent {
		cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		var out []schemas.TelemetryEvent
		for {
			batch, err := cons.FetchNoWait(500)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for m := range batch.Messages() {
				n++
				var raws []json.RawMessage
				if err := json.Unmarshal(m.Data(), &raws); err != nil {
					t.Fatalf("message is not a JSON array: %v: %s", err, m.Data())
				}
				for _, r := range raws {
					ev, err := schemas.DecodeTelemetryEvent(r)
					if err != nil {
						t.Fatalf("event fails the schema: %v: %s", err, r)
					}
					if want := "telemetry." + ev.Service + "." + ev.Component; m.Subject() != want {
						t.Fatalf("event of %s on subject %s", want, m.Subject())
					}
					out = append(out, *ev)
				}
			}
			if n == 0 {
				return out
			}
		}
	}
}

type block struct{ comp, name, version string }

func (b block) Component() string { return b.comp }
func (b block) Block() string     { return b.name }
func (b block) Active() string    { return b.version }

type versionedHandler struct {
	http.Handler
	v string
}

func (h versionedHandler) Active() string { return h.v }

func TestMiddlewareCategories(t *testing.T) {
	_, nc, js := natstest.Connect(t)
	read := stream(t, js)
	p, err := telemetry.NewPublisher(nc, "shop", telemetry.WithVersion("2.0"), telemetry.WithFlushInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ok", p.Middleware("ok", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "fine") })))
	mux.Handle("/bad", p.Middleware("bad", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no", http.StatusBadRequest)
	})))
	mux.Handle("/boom", p.Middleware("boom", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })))
	mux.Handle("/fail", p.Middleware("fail", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	})))
	// The deadline is the request's: the middleware runs inside the server's timeout.
	mux.Handle("/slow", http.TimeoutHandler(p.Middleware("slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})), 10*time.Millisecond, "too slow"))
	mux.Handle("/v", p.Middleware("versioned", versionedHandler{http.NotFoundHandler(), "1.0"}))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the /boom panic is expected
	srv.Start()
	defer srv.Close()
	for _, path := range []string{"/ok", "/bad", "/boom", "/fail", "/slow", "/v"} {
		resp, err := http.Get(srv.URL + path)
		if err == nil {
			resp.Body.Close()
		}
	}
	if err := p.Observe(block{"pricing", "discount", "1.0"}, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	_ = p.Observe(block{"pricing", "tax", "2.0"}, func() error { return telemetry.InvalidInput(errors.New("qty < 0")) })
	_ = p.Observe(block{"pricing", "tax", "2.0"}, func() error { return context.DeadlineExceeded })

	want := map[string]string{
		"ok@2.0": "", "bad@2.0": schemas.ErrInvalidInput, "boom@2.0": schemas.ErrException, "fail@2.0": schemas.ErrException,
		"slow@2.0": schemas.ErrTimeout, "versioned@1.0": schemas.ErrInvalidInput,
		"pricing/discount@1.0": "", "pricing/tax@2.0": schemas.ErrInvalidInput + "," + schemas.ErrTimeout,
	}
	natstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		got := map[string]string{}
		for _, ev := range read() {
			k := ev.Component
			if ev.Block != "" {
				k += "/" + ev.Block
			}
			k += "@" + ev.Version
			if old, ok := got[k]; ok {
				got[k] = old + "," + ev.Error
			} else {
				got[k] = ev.Error
			}
			if ev.LatencyMS == nil {
				return fmt.Errorf("%s has no latency", k)
			}
		}
		for k, w := range want {
			if got[k] != w {
				return fmt.Errorf("%s: error %q, want %q (all: %v)", k, got[k], w, got)
			}
		}
		return nil
	})
	if s := p.Stats(); s.Dropped != 0 || s.Failed != 0 || s.Recorded != 9 {
		t.Fatalf("stats %+v", s)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// discountOnOne is a version source under which the discount block runs 1.0 and the rest 2.0.
func discountOnOne(_, block string) string {
	if block == "discount" {
		return "1.0"
	}
	return "2.0"
}

func TestAggregationSendsOneEventPerSeriesPerInterval(t *testing.T) {
	_, nc, js := natstest.Connect(t)
	read := stream(t, js)
	p, err := telemetry.NewPublisher(nc, "shop", telemetry.WithAggregation(100*time.Millisecond),
		telemetry.WithVersionSource(discountOnOne))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 250 {
				o := telemetry.Observation{Component: "pricing", Block: []string{"discount", "tax"}[i%2], Latency: time.Duration(1+i%10) * time.Millisecond}
				if i%10 == g {
					o.Error = schemas.ErrException
				}
				p.Record(o)
			}
		}()
	}
	wg.Wait()
	recorded := time.Now()
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs := read()
	// An aggregate is stamped when its interval ended, as the schema says: the last one's
	// interval ends at Close, after every request was recorded. Stamped with its start, it
	// would reach ingest an interval behind other producers' events.
	if last := evs[len(evs)-1].TS; last.Before(recorded) {
		t.Fatalf("the last aggregate is stamped %v, before its requests were recorded (%v)", last, recorded)
	}
	counts := map[string]int64{}
	errs := map[string]int64{}
	for _, ev := range evs {
		if ev.Count < 1 || ev.Latency == nil || ev.Latency.P99 < ev.Latency.P50 || ev.Latency.Max > 10.5 {
			t.Fatalf("bad aggregate %+v", ev)
		}
		counts[ev.Block+"@"+ev.Version] += ev.Count
		errs[ev.Block] += ev.Errors[schemas.ErrException]
	}
	if len(evs) > 2*12 { // two series, a handful of intervals at most
		t.Fatalf("%d events for 1000 requests: aggregation did not aggregate", len(evs))
	}
	if counts["discount@1.0"] != 500 || counts["tax@2.0"] != 500 || errs["discount"]+errs["tax"] != 100 {
		t.Fatalf("counts %v errors %v", counts, errs)
	}
}

func TestNeverBlocksWithoutNATS(t *testing.T) {
	s, nc, _ := natstest.Connect(t)
	p, err := telemetry.NewPublisher(nc, "shop", telemetry.WithBufferSize(100), telemetry.WithFlushInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	s.Shutdown() // NATS goes away under the service
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if nc.IsConnected() {
			return errors.New("still connected")
		}
		return nil
	})
	start := time.Now()
	for range 10_000 {
		p.Record(telemetry.Observation{Component: "pricing", Latency: time.Millisecond})
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("recording 10k observations without NATS took %v", d)
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		// Everything recorded is dropped at flush, the rest when the buffer was full: all of it lost
		// and counted, none of it waited for.
		if st := p.Stats(); st.Dropped != 10_000 || st.Events != 0 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = p.Close(ctx)
}

func TestPanicIsRecordedAndReraised(t *testing.T) {
	p, _ := telemetry.NewPublisher(nil, "shop")
	defer p.Close(context.Background())
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic swallowed")
			}
		}()
		_ = p.Observe(block{"pricing", "discount", "2.0"}, func() error { panic("bug") })
	}()
	if p.Stats().Recorded != 1 {
		t.Fatalf("stats %+v", p.Stats())
	}
}

func TestBenchTelemetryOverhead(t *testing.T) {
	if testing.Short() {
		t.Skip("measures")
	}
	nsAgg, allocAgg, nsRaw, allocRaw := telemetry.BenchTelemetryOverhead()
	t.Logf("middleware overhead: aggregated %.0f ns/req %.2f allocs/req; raw %.0f ns/req %.2f allocs/req", nsAgg, allocAgg, nsRaw, allocRaw)
	if allocAgg > 1 {
		t.Errorf("aggregated path allocates %.2f per request", allocAgg)
	}
}

// TestResourceSampling publishes the process's cpu and memory as resource samples of the
// component named, one per version of it that sent telemetry in the interval, as a scraper
// would; the samples pass the schema and count no request. Another component gets none: a
// process's cpu cannot be split among the components it serves.
func TestResourceSampling(t *testing.T) {
	_, nc, js := natstest.Connect(t)
	read := stream(t, js)
	p, err := telemetry.NewPublisher(nc, "shop", telemetry.WithAggregation(50*time.Millisecond),
		telemetry.WithResourceSampling(200*time.Millisecond, "pricing"),
		telemetry.WithVersionSource(discountOnOne))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(700 * time.Millisecond)
	recorded := 0
	for time.Now().Before(deadline) {
		for _, o := range []telemetry.Observation{{Component: "pricing", Block: "discount"}, {Component: "pricing", Block: "tax"}, {Component: "cart"}} {
			o.Latency = time.Millisecond
			p.Record(o)
			recorded++
		}
		spin := time.Now()
		for time.Since(spin) < 2*time.Millisecond { // some cpu to measure
		}
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	samples := map[string]int{}
	var requests int64
	// The process's load over each interval: every component's requests, cart's too, at about
	// the mean rate of the whole run (the loop records at a steady pace).
	mean := float64(recorded) / time.Since(deadline.Add(-700*time.Millisecond)).Seconds()
	for _, ev := range read() {
		if !ev.IsResourceSample() {
			requests += ev.Requests()
			continue
		}
		if ev.CPU == nil || *ev.CPU <= 0 || *ev.CPU > 64 || ev.MemMB == nil || *ev.MemMB <= 1 || ev.Block != "" {
			t.Errorf("implausible resource sample: cpu %v, mem_mb %v, block %q", ev.CPU, ev.MemMB, ev.Block)
		}
		if l := ev.ProcessRPS; l == nil || *l < mean/4 || *l > 4*mean {
			t.Errorf("resource sample's process_rps %v, want about the %.0f req/s every component was recorded at", l, mean)
		}
		samples[ev.Component+"@"+ev.Version]++
	}
	if requests != int64(recorded) {
		t.Errorf("%d requests published, %d recorded", requests, recorded)
	}
	for _, k := range []string{"pricing@1.0", "pricing@2.0"} {
		if samples[k] < 2 || samples[k] > 4 {
			t.Errorf("%d resource samples of %s in 700 ms at one per 200 ms (all: %v)", samples[k], k, samples)
		}
	}
	if len(samples) != 2 {
		t.Errorf("resource samples of %v, want pricing@1.0 and pricing@2.0", samples)
	}
	if _, err := telemetry.NewPublisher(nil, "shop", telemetry.WithResourceSampling(time.Second, "")); !errors.Is(err, telemetry.ErrBadName) {
		t.Errorf("resource sampling without a component: %v, want ErrBadName", err)
	}
}

// TestInstance: WithInstance names the process in every event, request or aggregate, so the
// detector can count each instance's warm-up from its own start; a bad name is refused.
func TestInstance(t *testing.T) {
	if _, err := telemetry.NewPublisher(nil, "shop", telemetry.WithInstance("pod\n1")); err == nil {
		t.Fatal("an instance with a newline was accepted")
	}
	for _, agg := range []time.Duration{0, 50 * time.Millisecond} {
		_, nc, js := natstest.Connect(t)
		read := stream(t, js)
		p, err := telemetry.NewPublisher(nc, "shop", telemetry.WithInstance("checkout-7d9f8c6b5-x2k4q"), telemetry.WithAggregation(agg))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			p.Record(telemetry.Observation{Component: "pricing", Latency: time.Duration(1+i) * time.Millisecond})
		}
		if err := p.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		evs := read()
		if len(evs) == 0 {
			t.Fatalf("aggregation %s: no events", agg)
		}
		for _, ev := range evs {
			if ev.Instance != "checkout-7d9f8c6b5-x2k4q" {
				t.Fatalf("aggregation %s: event without its instance: %+v", agg, ev)
			}
		}
	}
}
