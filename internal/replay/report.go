package replay

import (
	_ "embed"
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

//go:embed report.html.tmpl
var reportTemplate string

// ReportOptions adds context to a report.
type ReportOptions struct {
	// Title heads the page (default "Incident replay").
	Title string
	// ConfigNote says which config the replay ran with (e.g. the file name).
	ConfigNote string
	// Generated is printed as the report's date; zero omits it (keeps reports reproducible).
	Generated time.Time
}

// WriteReport writes tl as one self-contained HTML page: inline CSS and SVG, no scripts, no external
// assets, so it can be attached to a ticket and opened anywhere.
func WriteReport(w io.Writer, tl *Timeline, o ReportOptions) error {
	if o.Title == "" {
		o.Title = "Incident replay"
	}
	t, err := template.New("report").Funcs(template.FuncMap{
		"ts":       func(t time.Time) string { return t.UTC().Format("15:04:05.000") },
		"day":      func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 MST") },
		"value":    metricValue,
		"metric":   metricName,
		"targets":  targetsText,
		"decision": decisionSummary,
		"pct":      func(f float64) string { return fmt.Sprintf("%.0f%%", 100*f) },
		"join":     strings.Join,
		"blocks":   blocksText,
		"pvalue": func(a *schemas.Anomaly) string {
			switch {
			case a.PValue != nil:
				return fmt.Sprintf("p=%.2g", *a.PValue)
			case a.Score != nil:
				return fmt.Sprintf("score %.3g", *a.Score)
			}
			return ""
		},
		"target": target,
	}).Parse(reportTemplate)
	if err != nil {
		return fmt.Errorf("report template: %w", err)
	}
	data := struct {
		O      ReportOptions
		TL     *Timeline
		Charts []chartView
		Diff   []string
	}{O: o, TL: tl}
	for i := range tl.Series {
		data.Charts = append(data.Charts, chartsFor(tl, &tl.Series[i]))
	}
	if tl.Diff != nil {
		data.Diff = tl.Diff.Lines()
	}
	if err := t.Execute(w, data); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func blocksText(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

type chartView struct {
	Title   string
	Error   template.HTML
	Latency template.HTML
	Note    string
}

// mark is a vertical line on a chart.
type mark struct {
	t     time.Time
	kind  string
	label string
}

var markStyle = map[string]struct{ color, dash string }{
	"deploy":   {"#1f6feb", "6 4"},
	"anomaly":  {"#d1242f", ""},
	"resolved": {"#1a7f37", "2 3"},
	"decision": {"#8250df", ""},
	"ack":      {"#bc4c00", "4 2"},
	// A person's answer and a failed actuation turn an incident: solid, in colours of their own.
	"approval":          {"#0a7ea4", ""},
	"actuation_failure": {"#9a6700", "1 2"},
}

func chartsFor(tl *Timeline, s *Series) chartView {
	var marks []mark
	for i := range tl.Deploys {
		d := &tl.Deploys[i]
		if d.Service == s.Service {
			marks = append(marks, mark{d.TS, "deploy", "deploy " + d.AppVersion})
		}
	}
	for _, e := range tl.Events {
		if e.Service != s.Service || e.Kind == "deploy" {
			continue
		}
		if e.Component != "" && e.Component != s.Component {
			continue
		}
		label := e.Kind
		switch e.Kind {
		case "decision":
			label = strings.SplitN(e.Summary, " ", 2)[0]
		case "actuation_failure":
			label = "actuation failed"
		}
		marks = append(marks, mark{e.TS, e.Kind, label})
	}
	v := chartView{Title: s.Service + "/" + s.Component}
	v.Error = svgChart("error rate per second", s, marks, func(p *Point) (float64, bool) { return p.ErrorRate(), p.Requests > 0 },
		s.ErrorBand, func(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) })
	v.Latency = svgChart("p99 latency per second", s, marks, func(p *Point) (float64, bool) { return p.P99, p.P99 > 0 },
		s.LatencyBand, func(f float64) string { return fmt.Sprintf("%.0f ms", f) })
	if s.Truncated {
		v.Note = "this series hit the point cap; later seconds are not drawn"
	}
	return v
}

const (
	chartW, chartH           = 1100, 230
	padL, padR, padT, padB   = 70, 20, 34, 30
	plotW, plotH             = chartW - padL - padR, chartH - padT - padB
	observedColor, bandColor = "#24292f", "#2da44e"
)

// svgChart draws one metric of a series: the observed line, the baseline band and the marks.
func svgChart(title string, s *Series, marks []mark, y func(*Point) (float64, bool), bnd [2]float64, fmtY func(float64) string) template.HTML {
	if len(s.Points) == 0 {
		return ""
	}
	t0, t1 := s.Points[0].T, s.Points[len(s.Points)-1].T
	for _, m := range marks {
		if m.t.Before(t0) {
			t0 = m.t
		}
		if m.t.After(t1) {
			t1 = m.t
		}
	}
	span := t1.Sub(t0).Seconds()
	if span <= 0 {
		span = 1
	}
	ymax := bnd[1]
	for i := range s.Points {
		if v, ok := y(&s.Points[i]); ok && v > ymax {
			ymax = v
		}
	}
	if ymax <= 0 {
		ymax = 1
	}
	ymax *= 1.1
	x := func(t time.Time) float64 { return padL + plotW*t.Sub(t0).Seconds()/span }
	yy := func(v float64) float64 { return padT + plotH*(1-v/ymax) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="100%%" role="img" aria-label="%s">`, chartW, chartH, html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="%d" y="16" class="ct">%s</text>`, padL, html.EscapeString(title))
	// Axes and grid.
	for i := 0; i <= 4; i++ {
		v := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="grid"/><text x="%d" y="%.1f" class="yl">%s</text>`,
			padL, chartW-padR, yy(v), yy(v), padL-6, yy(v)+4, html.EscapeString(fmtY(v)))
	}
	ticks := 6
	for i := 0; i <= ticks; i++ {
		t := t0.Add(time.Duration(float64(t1.Sub(t0)) * float64(i) / float64(ticks)))
		anchor := "middle"
		if i == ticks {
			anchor = "end" // keep the last label inside the frame
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="xl" text-anchor="%s">%s</text>`, x(t), chartH-8, anchor, t.UTC().Format("15:04:05"))
	}
	// Baseline band.
	if bnd[1] > 0 || bnd[0] > 0 {
		h := math.Max(yy(bnd[0])-yy(bnd[1]), 1.5)
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s" fill-opacity="0.18"><title>baseline band %s – %s</title></rect>`,
			padL, yy(bnd[1]), plotW, h, bandColor, html.EscapeString(fmtY(bnd[0])), html.EscapeString(fmtY(bnd[1])))
	}
	// Observed line, broken where a second had no data.
	var path strings.Builder
	pen := false
	var prev time.Time
	for i := range s.Points {
		p := &s.Points[i]
		v, ok := y(p)
		if !ok || (pen && p.T.Sub(prev) > 2*time.Second) {
			pen = false
		}
		if !ok {
			continue
		}
		if pen {
			fmt.Fprintf(&path, "L%.1f %.1f", x(p.T), yy(v))
		} else {
			fmt.Fprintf(&path, "M%.1f %.1f", x(p.T), yy(v))
			pen = true
		}
		prev = p.T
	}
	fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="1.3"/>`, path.String(), observedColor)
	// Marks; the labels of marks within a few pixels of each other are merged ("2× anomaly"), and
	// label rows are staggered so neighbours do not overwrite each other.
	type group struct {
		x      float64
		labels []string
		counts map[string]int
		colors map[string]string
	}
	var groups []*group
	for _, m := range marks {
		st := markStyle[m.kind]
		mx := x(m.t)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s" stroke-width="1.5" stroke-dasharray="%s"><title>%s %s</title></line>`,
			mx, mx, padT, padT+plotH, st.color, st.dash, html.EscapeString(m.label), m.t.UTC().Format("15:04:05.000"))
		var g *group
		for _, h := range groups {
			if math.Abs(h.x-mx) < 4 {
				g = h
			}
		}
		if g == nil {
			g = &group{x: mx, counts: map[string]int{}, colors: map[string]string{}}
			groups = append(groups, g)
		}
		if g.counts[m.label] == 0 {
			g.labels = append(g.labels, m.label)
			g.colors[m.label] = st.color
		}
		g.counts[m.label]++
	}
	sort.SliceStable(groups, func(i, j int) bool { return groups[i].x < groups[j].x })
	lastX := map[int]float64{}
	for _, g := range groups {
		row := 0
		for ; row < 4; row++ {
			if lx, ok := lastX[row]; !ok || g.x-lx > 150 {
				break
			}
		}
		if row == 4 {
			continue
		}
		lastX[row] = g.x
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="ml">`, g.x+3, padT+12+12*row)
		for i, l := range g.labels {
			text := l
			if n := g.counts[l]; n > 1 {
				text = fmt.Sprintf("%d× %s", n, l)
			}
			if i > 0 {
				text = ", " + text
			}
			fmt.Fprintf(&b, `<tspan fill="%s">%s</tspan>`, g.colors[l], html.EscapeString(text))
		}
		b.WriteString(`</text>`)
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#d0d7de"/>`, padL, padT, plotW, plotH)
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // every interpolated string above is escaped
}
