package replay

import (
	"cmp"
	"slices"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Series is one component's per-second chart data.
type Series struct {
	Service   string  `json:"service"`
	Component string  `json:"component"`
	Points    []Point `json:"points"`
	// Band is the normal range before the incident (10th–90th percentile of the per-second values in
	// the baseline window: before the deploy that preceded the first anomaly).
	ErrorBand   [2]float64 `json:"error_band"`
	LatencyBand [2]float64 `json:"latency_band"`
	// Truncated is set when the series hit the point cap and later seconds were dropped.
	Truncated bool `json:"truncated,omitempty"`
}

// Point is one second of a component.
type Point struct {
	T        time.Time `json:"t"`
	Requests int64     `json:"requests"`
	Errors   int64     `json:"errors"`
	P50      float64   `json:"p50_ms"`
	P99      float64   `json:"p99_ms"`
	// Version is the version that served most requests in the second.
	Version string `json:"version,omitempty"`
}

// ErrorRate is Errors / Requests.
func (p *Point) ErrorRate() float64 {
	if p.Requests == 0 {
		return 0
	}
	return float64(p.Errors) / float64(p.Requests)
}

// maxPoints caps one series (two hours at one point a second).
const maxPoints = 7200

// closeAfter is how far behind a component's newest second a second is closed (its latencies
// summarised and dropped); later events still count requests and errors.
const closeAfter = 10

type compKey struct{ svc, comp string }

type second struct {
	t        int64
	req, err int64
	lat      []float64
	versions map[string]int64
	p50, p99 float64
	closed   bool
}

type compSeries struct {
	secs      []*second // by t, ascending
	truncated bool
}

type charts struct {
	comps map[compKey]*compSeries
}

func newCharts() *charts { return &charts{comps: map[compKey]*compSeries{}} }

func (c *charts) add(ev *schemas.TelemetryEvent) {
	k := compKey{ev.Service, ev.Component}
	cs := c.comps[k]
	if cs == nil {
		cs = &compSeries{}
		c.comps[k] = cs
	}
	t := ev.TS.Unix()
	s := cs.find(t)
	if s == nil {
		return
	}
	n := ev.Requests()
	s.req += n
	if ev.Count > 1 {
		for _, v := range ev.Errors {
			s.err += v
		}
	} else if ev.Error != "" {
		s.err++
	}
	if s.versions == nil {
		s.versions = map[string]int64{}
	}
	s.versions[ev.Version] += n
	if !s.closed {
		switch {
		case ev.Latency != nil && ev.Latency.P99 > 0:
			s.lat = append(s.lat, ev.Latency.P99)
		case ev.LatencyMS != nil:
			s.lat = append(s.lat, *ev.LatencyMS)
		}
	}
}

// find returns the second t, creating it (and closing old ones) as needed; nil past the cap.
func (cs *compSeries) find(t int64) *second {
	n := len(cs.secs)
	if n > 0 && cs.secs[n-1].t == t {
		return cs.secs[n-1]
	}
	i, ok := slices.BinarySearchFunc(cs.secs, t, func(s *second, t int64) int { return cmp.Compare(s.t, t) })
	if ok {
		return cs.secs[i]
	}
	if n >= maxPoints {
		cs.truncated = true
		return nil
	}
	s := &second{t: t}
	cs.secs = slices.Insert(cs.secs, i, s)
	if i == len(cs.secs)-1 {
		for j := i - 1; j >= 0 && !cs.secs[j].closed; j-- {
			if cs.secs[j].t <= t-closeAfter {
				cs.secs[j].close()
			}
		}
	}
	return s
}

func (s *second) close() {
	if s.closed {
		return
	}
	s.closed = true
	if len(s.lat) > 0 {
		slices.Sort(s.lat)
		s.p50 = quantile(s.lat, 0.5)
		s.p99 = quantile(s.lat, 0.99)
	}
	s.lat = nil
}

// quantile of sorted xs, nearest rank.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(q*float64(len(xs))+0.5) - 1
	return xs[max(0, min(len(xs)-1, i))]
}

// build returns the series of the components the timeline's anomalies and decisions are about.
func (c *charts) build(tl *Timeline, only string) []Series {
	type want struct {
		first  time.Time
		deploy time.Time
	}
	affected := map[compKey]*want{}
	note := func(svc, comp string, t time.Time) {
		if comp == "" || (only != "" && comp != only) {
			return
		}
		k := compKey{svc, comp}
		if w := affected[k]; w == nil || t.Before(w.first) {
			affected[k] = &want{first: t}
		}
	}
	for i := range tl.Anomalies {
		note(tl.Anomalies[i].Service, tl.Anomalies[i].Component, tl.Anomalies[i].TSDetected)
	}
	for i := range tl.Recorded.Anomalies {
		note(tl.Recorded.Anomalies[i].Service, tl.Recorded.Anomalies[i].Component, tl.Recorded.Anomalies[i].TSDetected)
	}
	for i := range tl.Decisions {
		for _, t := range tl.Decisions[i].Targets {
			note(t.Service, t.Component, tl.Decisions[i].TS)
		}
	}
	var out []Series
	for k, w := range affected {
		cs := c.comps[k]
		if cs == nil {
			continue
		}
		// The baseline window ends at the last deploy of the service before the first anomaly.
		for i := range tl.Deploys {
			d := &tl.Deploys[i]
			if d.Service == k.svc && !d.TS.After(w.first) {
				w.deploy = d.TS
			}
		}
		s := Series{Service: k.svc, Component: k.comp, Truncated: cs.truncated}
		var errs, lats []float64
		for _, sec := range cs.secs {
			sec.close()
			t := time.Unix(sec.t, 0).UTC()
			if (!tl.Since.IsZero() && t.Before(tl.Since.Add(-5*time.Minute))) || (!tl.Until.IsZero() && t.After(tl.Until)) {
				continue
			}
			p := Point{T: t, Requests: sec.req, Errors: sec.err, P50: sec.p50, P99: sec.p99, Version: majority(sec.versions)}
			s.Points = append(s.Points, p)
			end := w.deploy
			if end.IsZero() {
				end = w.first
			}
			if t.Before(end) && p.Requests > 0 {
				errs = append(errs, p.ErrorRate())
				if p.P99 > 0 {
					lats = append(lats, p.P99)
				}
			}
		}
		s.ErrorBand = band(errs)
		s.LatencyBand = band(lats)
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Series) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Component, b.Component))
	})
	return out
}

func majority(m map[string]int64) string {
	best, n := "", int64(-1)
	for v, c := range m {
		if c > n || (c == n && v < best) {
			best, n = v, c
		}
	}
	return best
}

func band(xs []float64) [2]float64 {
	if len(xs) == 0 {
		return [2]float64{}
	}
	slices.Sort(xs)
	return [2]float64{quantile(xs, 0.1), quantile(xs, 0.9)}
}
