// Package api is serve's JSON API under /api/v1/ (DESIGN §5): what the process is doing, and the
// audit trail the streams hold, for dashboards and scripts that would rather speak HTTP than NATS.
// It only reads. Approving or rejecting a recommendation stays with `scalpel approve` and `scalpel
// reject`, which publish with the NATS credentials that say who may: the API has no credentials of
// its own to check, and listens on 127.0.0.1 by default.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/internal/audit"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/schemas"
)

// Prefix is where the API is served.
const Prefix = "/api/v1/"

// Options configures Handler.
type Options struct {
	// Reader reads the streams (decisions, anomalies, incidents' stories, version histories).
	Reader audit.Reader
	// Pipelines are the process's pipelines, one per partition it consumes: their state for
	// /status, the decide engine's incidents for /incidents, and the catalog.
	Pipelines []*pipeline.Pipeline
	// Version is scalpel's version, for /status.
	Version string
}

// endpoints lists what the API serves, for its index and for a path it does not know.
var endpoints = []endpoint{
	{"GET /api/v1/status", "this process: its version, and per partition it consumes whether it ingests and decides, its event time and series"},
	{"GET /api/v1/cluster", "every serve process on the server: how the telemetry is cut, who decides, who consumes each partition and how far behind, and what needs a person (as scalpel status)"},
	{"GET /api/v1/decisions?service=S&since=1h&last=20", "recent decisions with their reasons (DECISIONS), oldest first; last=0 for all"},
	{"GET /api/v1/anomalies?service=S&since=1h&last=100", "recent anomalies, firing and resolved (ANOMALIES), oldest first"},
	{"GET /api/v1/incidents?service=S&since=24h&last=20", "the incidents with a decision since, in the order they opened, each told whole with its state (as scalpel incidents)"},
	{"GET /api/v1/incidents/{id}", "an incident's whole story: each step, the commands it sent, the deployers' acks and the approvals"},
	{"GET /api/v1/decide/incidents", "the decide engine's live incidents: state, firing anomalies, verify and approval deadlines (only the process that decides has them)"},
	{"GET /api/v1/versions/{service}[/{component}[/{block}]]", "which version was active when, and why (DEPLOYS and DECISIONS)"},
	{"GET /api/v1/catalog", "the services in the catalog"},
	{"GET /api/v1/catalog/{service}", "a service's manifest and its revision"},
}

type endpoint struct {
	Path        string `json:"path"`
	Description string `json:"description"`
}

// Handler serves the API. Mount it at Prefix.
func Handler(o Options) http.Handler {
	h := &handler{o: o}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/{$}", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"endpoints": endpoints})
	})
	mux.HandleFunc("GET /api/v1/status", h.status)
	mux.HandleFunc("GET /api/v1/cluster", h.cluster)
	rd := o.Reader
	mux.HandleFunc("GET /api/v1/decisions", listed(time.Hour, 20, func(ctx context.Context, svc string, since time.Time, last int) ([]schemas.Decision, error) {
		return rd.Decisions(ctx, svc, since, last, "")
	}))
	mux.HandleFunc("GET /api/v1/anomalies", listed(time.Hour, 100, rd.Anomalies))
	mux.HandleFunc("GET /api/v1/incidents", listed(24*time.Hour, 20, rd.Incidents))
	mux.HandleFunc("GET /api/v1/incidents/{id}", h.story)
	mux.HandleFunc("GET /api/v1/decide/incidents", h.engineIncidents)
	mux.HandleFunc("GET /api/v1/versions/{target...}", h.versions)
	mux.HandleFunc("GET /api/v1/catalog", h.catalogList)
	mux.HandleFunc("GET /api/v1/catalog/{service}", h.catalogGet)
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			writeError(w, http.StatusMethodNotAllowed, fmt.Errorf("the API only reads: %s %s is not served (approve or reject with `scalpel approve` and `scalpel reject`)", r.Method, r.URL.Path))
			return
		}
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "no such endpoint: " + r.URL.Path, "endpoints": endpoints})
	})
	return mux
}

type handler struct{ o Options }

// Status is what /status says of the process.
type Status struct {
	Version   string           `json:"version"`
	Pipelines []PipelineStatus `json:"pipelines"`
}

// PipelineStatus is one pipeline's part of Status.
type PipelineStatus struct {
	// Partition is the partition of the telemetry it consumes, absent for all of it.
	Partition *int `json:"partition,omitempty"`
	Ready     bool `json:"ready"`
	// Ingests says it may consume telemetry (its role); Ingesting and Deciding that it holds the
	// leases and does now.
	Ingests   bool      `json:"ingests"`
	Ingesting bool      `json:"ingesting"`
	Deciding  bool      `json:"deciding"`
	Watermark time.Time `json:"watermark,omitzero"`
	Series    int       `json:"series"`
	// DecideWatermark is the event time decide has reached, when this pipeline decides: its
	// detector's, or, with partitions, the earliest the consumers share.
	DecideWatermark time.Time `json:"decide_watermark,omitzero"`
}

func (h *handler) status(w http.ResponseWriter, _ *http.Request) {
	st := Status{Version: h.o.Version, Pipelines: []PipelineStatus{}}
	for _, p := range h.o.Pipelines {
		ingesting, deciding := p.Active()
		dwm, _ := p.DecideWatermark()
		st.Pipelines = append(st.Pipelines, PipelineStatus{Partition: p.Partition(), Ready: p.Ready(), Ingests: p.Ingests(),
			Ingesting: ingesting, Deciding: deciding, Watermark: p.Watermark(), Series: p.SeriesCount(), DecideWatermark: dwm})
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *handler) cluster(w http.ResponseWriter, r *http.Request) {
	st, err := pipeline.ReadClusterStatus(r.Context(), h.o.Reader.JS, h.o.Reader.Subjects)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// listed serves a list read from the trail: ?service=&since=&last= with these defaults.
func listed[T any](defSince time.Duration, defLast int, read func(ctx context.Context, service string, since time.Time, last int) ([]T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := readQuery(r, defSince, defLast)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		xs, err := read(r.Context(), q.service, q.since, q.last)
		if err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, orEmpty(xs))
	}
}

func (h *handler) engineIncidents(w http.ResponseWriter, _ *http.Request) {
	for _, p := range h.o.Pipelines {
		if p.Leading() {
			writeJSON(w, http.StatusOK, orEmpty(p.DecideIncidents()))
			return
		}
	}
	writeError(w, http.StatusServiceUnavailable, errors.New("this process does not decide now, and only the one that does holds the engine's incidents: ask the process whose /api/v1/status has deciding true, or read them from the trail at /api/v1/incidents"))
}

func (h *handler) story(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	story, err := h.o.Reader.Story(r.Context(), "", id)
	if err != nil {
		writeError(w, statusOf(err), fmt.Errorf("%w: list recent ones at /api/v1/decisions", err))
		return
	}
	writeJSON(w, http.StatusOK, story)
}

func (h *handler) versions(w http.ResponseWriter, r *http.Request) {
	target, err := decide.ParseTarget(r.PathValue("target"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	spans, err := h.o.Reader.Versions(r.Context(), target)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"target": target.String(), "history": orEmpty(spans)})
}

func (h *handler) catalogList(w http.ResponseWriter, r *http.Request) {
	cat, ok := h.catalog(w)
	if !ok {
		return
	}
	names, err := cat.List(r.Context())
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		writeError(w, http.StatusBadGateway, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"services": orEmpty(names)})
}

func (h *handler) catalogGet(w http.ResponseWriter, r *http.Request) {
	cat, ok := h.catalog(w)
	if !ok {
		return
	}
	m, rev, err := cat.Get(r.Context(), r.PathValue("service"))
	switch {
	case errors.Is(err, decide.ErrUnknownService):
		writeError(w, http.StatusNotFound, fmt.Errorf("%w: apply its manifest with `scalpel catalog apply -f FILE`", err))
	case err != nil:
		writeError(w, http.StatusBadGateway, err)
	default:
		writeJSON(w, http.StatusOK, map[string]any{"revision": rev, "manifest": m})
	}
}

func (h *handler) catalog(w http.ResponseWriter) (*decide.Catalog, bool) {
	for _, p := range h.o.Pipelines {
		if c := p.Catalog(); c != nil {
			return c, true
		}
	}
	writeError(w, http.StatusServiceUnavailable, errors.New("the catalog is not open yet: the process is starting"))
	return nil, false
}

// query is the parameters /decisions, /anomalies and /incidents take.
type query struct {
	service string
	since   time.Time
	last    int
}

// readQuery reads service, since (a duration before now such as 1h, or an RFC 3339 time; default
// back) and last (a count, 0 for all; default last).
func readQuery(r *http.Request, back time.Duration, last int) (query, error) {
	v := r.URL.Query()
	q := query{service: v.Get("service"), since: time.Now().Add(-back), last: last}
	if q.service != "" && !schemas.IsName(q.service) {
		return q, fmt.Errorf("service %q is not a service name (letters, digits, '-' and '_')", q.service)
	}
	if s := v.Get("since"); s != "" {
		if d, err := time.ParseDuration(s); err == nil && d > 0 {
			q.since = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			q.since = t
		} else {
			return q, fmt.Errorf("since %q: give a positive duration such as 1h or 30m, or an RFC 3339 time", s)
		}
	}
	if s := v.Get("last"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, fmt.Errorf("last %q: give a count, or 0 for all", s)
		}
		q.last = n
	}
	return q, nil
}

// statusOf is the HTTP status for an error of the reader: not found, or the server out of reach.
func statusOf(err error) int {
	switch {
	case errors.Is(err, audit.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

func orEmpty[T any](xs []T) []T {
	if xs == nil {
		return []T{}
	}
	return xs
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
