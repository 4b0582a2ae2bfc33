package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/internal/api"
	"github.com/scalpel-dev/scalpel/internal/audit"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// TestAPI runs checkout's story on an embedded server (1.0 for two minutes, 2.0 whose rate-lookup
// block fails) and reads it back through the API of the process that decided and of one that
// stands by: the decision and its reason, the anomaly, the incident (the engine's, and as the trail
// tells it) and its story, the block's versions, the catalog and the process's status; bad parameters, unknown ids and writes get a
// JSON error that says what to do.
func TestAPI(t *testing.T) {
	_, _, js := natstest.Connect(t)
	cfg := config.Default()
	start := func() *pipeline.Pipeline {
		p, err := pipeline.New(pipeline.Options{Config: cfg, JS: js, Registry: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Stop)
		return p
	}
	active, standby := start(), start()
	serve := func(p *pipeline.Pipeline) *httptest.Server {
		srv := httptest.NewServer(api.Handler(api.Options{Reader: audit.Reader{JS: js, Subjects: cfg.Subjects()}, Pipelines: []*pipeline.Pipeline{p}, Version: "v-test"}))
		t.Cleanup(srv.Close)
		return srv
	}
	srv, other := serve(active), serve(standby)

	m, err := schemas.ParseManifest([]byte(sim.CheckoutManifest))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := active.Catalog().Apply(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	svc := sim.Checkout(1)
	t0 := time.Now().UTC().Add(-4 * time.Minute).Truncate(time.Second)
	t1 := t0.Add(2 * time.Minute)
	publishDeploy(t, js, cfg, sim.CheckoutDeploy("d-1.0", t0, "1.0"))
	publish(t, js, cfg, svc.Traffic(t0, 2*time.Minute))
	publishDeploy(t, js, cfg, sim.CheckoutDeploy("d-2.0", t1, "2.0"))
	svc.SetVersion("2.0")
	publish(t, js, cfg, svc.Traffic(t1, time.Minute))

	var ds []schemas.Decision
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if get(t, srv, "/api/v1/decisions?service=checkout&since=1h", &ds); len(ds) == 0 {
			return errors.New("no decision yet")
		}
		return nil
	})
	d := ds[0]
	if d.Action != schemas.ActionRollback || d.Granularity != schemas.GranularityFine || !strings.Contains(d.Reason, "rate-lookup") {
		t.Fatalf("decision %s/%s: %s; want the fine rollback of rate-lookup", d.Action, d.Granularity, d.Reason)
	}

	var as []schemas.Anomaly
	if get(t, srv, "/api/v1/anomalies?service=checkout&last=1", &as); len(as) != 1 || as[0].Service != "checkout" || as[0].Block != "rate-lookup" {
		t.Errorf("anomalies, the last one: %+v", as)
	}
	var incs []decide.Incident
	if get(t, srv, "/api/v1/decide/incidents", &incs); len(incs) != 1 || incs[0].ID != d.IncidentID || incs[0].State != decide.IncidentMitigating {
		t.Errorf("the engine's incidents: %+v, want the one of decision %s, mitigating", incs, d.ID)
	}
	var stories []decide.Story
	if get(t, other, "/api/v1/incidents?service=checkout", &stories); len(stories) != 1 || stories[0].IncidentID != d.IncidentID || stories[0].State != decide.IncidentMitigating {
		t.Errorf("incidents from the trail, on the standby: %+v, want the one of decision %s, mitigating", stories, d.ID)
	}
	var story decide.Story
	if get(t, srv, "/api/v1/incidents/"+d.IncidentID, &story); len(story.Steps) == 0 || story.Steps[0].Decision.ID != d.ID {
		t.Errorf("story of %s: %+v", d.IncidentID, story)
	}
	var versions struct {
		Target  string               `json:"target"`
		History []decide.VersionSpan `json:"history"`
	}
	if get(t, srv, "/api/v1/versions/checkout/tax-calc/rate-lookup", &versions); versions.Target != "checkout/tax-calc/rate-lookup" || len(versions.History) < 3 {
		t.Errorf("versions of rate-lookup: %+v, want 1.0, 2.0 and the rollback to 1.0", versions)
	}
	var cat struct {
		Services []string `json:"services"`
	}
	if get(t, srv, "/api/v1/catalog", &cat); len(cat.Services) != 1 || cat.Services[0] != "checkout" {
		t.Errorf("catalog: %+v", cat)
	}
	var manifest struct {
		Revision uint64            `json:"revision"`
		Manifest *schemas.Manifest `json:"manifest"`
	}
	if get(t, srv, "/api/v1/catalog/checkout", &manifest); manifest.Revision == 0 || manifest.Manifest == nil || manifest.Manifest.Service != "checkout" {
		t.Errorf("checkout's manifest: %+v", manifest)
	}
	var st api.Status
	get(t, srv, "/api/v1/status", &st)
	if p := st.Pipelines; st.Version != "v-test" || len(p) != 1 || !p[0].Ingesting || !p[0].Deciding || p[0].Series == 0 || p[0].Watermark.IsZero() {
		t.Errorf("status of the active process: %+v", st)
	}
	var cl pipeline.ClusterStatus
	if get(t, other, "/api/v1/cluster", &cl); !cl.Decide.HeldAt(time.Now()) || len(cl.Consumers) != 1 || cl.Consumers[0].Name != "scalpel-ingest" || len(cl.Warnings) != 0 {
		t.Errorf("cluster, from the standby: %+v", cl)
	}
	get(t, other, "/api/v1/status", &st)
	if p := st.Pipelines; len(p) != 1 || p[0].Ingesting || p[0].Deciding {
		t.Errorf("status of the standby: %+v", st)
	}
	// The standby reads the streams as well as the active process, but has no incidents to show.
	if get(t, other, "/api/v1/decisions?service=checkout", &ds); len(ds) == 0 {
		t.Error("the standby reads no decisions")
	}

	for _, tt := range []struct {
		method, path string
		code         int
		says         string
	}{
		{"GET", "/api/v1/decisions?service=check.out", http.StatusBadRequest, "not a service name"},
		{"GET", "/api/v1/decisions?since=yesterday", http.StatusBadRequest, "give a positive duration"},
		{"GET", "/api/v1/anomalies?last=-1", http.StatusBadRequest, "give a count"},
		{"GET", "/api/v1/incidents?since=-2h", http.StatusBadRequest, "give a positive duration"},
		{"GET", "/api/v1/incidents/no-such-incident", http.StatusNotFound, "no decisions of incident no-such-incident"},
		{"GET", "/api/v1/versions/a/b/c/d", http.StatusBadRequest, "svc/comp/block"},
		{"GET", "/api/v1/catalog/no-such-service", http.StatusNotFound, "scalpel catalog apply"},
		{"GET", "/api/v1/nothing-here", http.StatusNotFound, "/api/v1/decisions"},
		{"POST", "/api/v1/decisions", http.StatusMethodNotAllowed, "scalpel approve"},
	} {
		code, body := do(t, srv, tt.method, tt.path)
		var e map[string]any
		if err := json.Unmarshal([]byte(body), &e); err != nil || code != tt.code || !strings.Contains(body, tt.says) {
			t.Errorf("%s %s: %d %s; want %d, JSON saying %q", tt.method, tt.path, code, body, tt.code, tt.says)
		}
	}
	if code, body := do(t, other, "GET", "/api/v1/decide/incidents"); code != http.StatusServiceUnavailable || !strings.Contains(body, "deciding true") {
		t.Errorf("the engine's incidents on the standby: %d %s", code, body)
	}
	if code, body := do(t, srv, "GET", "/api/v1/"); code != http.StatusOK || !strings.Contains(body, "/api/v1/incidents/{id}") {
		t.Errorf("index: %d %s", code, body)
	}
}

func get(t *testing.T, srv *httptest.Server, path string, v any) {
	t.Helper()
	code, body := do(t, srv, "GET", path)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

func do(t *testing.T, srv *httptest.Server, method, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return res.StatusCode, string(b)
}

func publishDeploy(t *testing.T, js jetstream.JetStream, cfg config.Config, ev schemas.DeployEvent) {
	t.Helper()
	b, _ := json.Marshal(ev)
	if _, err := js.Publish(context.Background(), cfg.Subjects().Deploy(ev.Service), b, jetstream.WithMsgID(ev.ID)); err != nil {
		t.Fatal(err)
	}
}

func publish(t *testing.T, js jetstream.JetStream, cfg config.Config, evs []schemas.TelemetryEvent) {
	t.Helper()
	for i := range evs {
		b, _ := json.Marshal(&evs[i])
		if _, err := js.PublishAsync(cfg.Subjects().Telemetry(evs[i].Service, evs[i].Component), b); err != nil {
			t.Fatal(err)
		}
		if js.PublishAsyncPending() >= 1000 {
			waitPublished(t, js)
		}
	}
	waitPublished(t, js)
}

func waitPublished(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal(fmt.Errorf("telemetry publish did not complete"))
	}
}
