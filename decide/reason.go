package decide

import (
	"fmt"
	"strings"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// summarize writes the first sentence of a decision's reason: what degraded against which baseline,
// and what changed. It is read by a person woken at 3 a.m., so it names things and gives numbers.
func summarize(c *Case) string {
	a := c.Anomaly
	var b strings.Builder
	where := a.Service + "/" + a.Component
	if a.Block != "" {
		where += "/" + a.Block
	}
	fmt.Fprintf(&b, "%s %s is %s against a baseline of %s", where, metricName(a), metricValue(a.Metric, a.Observed), metricValue(a.Metric, a.Baseline))
	switch {
	case a.Version != "" && a.BaselineVersion != "":
		fmt.Fprintf(&b, " (version %s vs %s", a.Version, a.BaselineVersion)
	case a.Version != "":
		fmt.Fprintf(&b, " (version %s", a.Version)
	default:
		b.WriteString(" (")
	}
	if a.Samples.Observed > 0 {
		if a.Version != "" {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d vs %d samples", a.Samples.Observed, a.Samples.Baseline)
	}
	b.WriteString(")")
	s := strings.TrimSuffix(b.String(), " ()")

	att := c.Attribution
	d := att.Deploy
	switch {
	case d == nil:
		s += fmt.Sprintf("; no deploy of %s that changed %s is on record.", a.Service, a.Component)
	case att.WindowOpen && att.Changed:
		s += fmt.Sprintf("; deploy %s %s at %s, %s before detection, inside the %s rollback window.",
			d.ID, changeText(c), stamp(d.TS), age(a.TSDetected.Sub(d.TS)), age(c.Window))
	case att.WindowOpen:
		s += fmt.Sprintf("; the open deploy %s (app %s at %s) did not change %s.", d.ID, d.AppVersion, stamp(d.TS), a.Component)
	default:
		s += fmt.Sprintf("; the last change to %s was deploy %s (%s) at %s, %s before detection, outside the %s rollback window.",
			a.Component, d.ID, changeText(c), stamp(d.TS), age(a.TSDetected.Sub(d.TS)), age(c.Window))
	}
	return s
}

// changeText says what the attributed deploy did to the component: "changed tax-calc 2.4.0 → 2.5.0".
func changeText(c *Case) string {
	a, h, d := c.Anomaly, c.history, c.Attribution.Deploy
	to, _ := h.componentChange(d, a.Component)
	l := h.component(a.Component)
	if prev, ok := l.previous(l.find(to, d.TS)); ok {
		return fmt.Sprintf("changed %s %s → %s", a.Component, prev, to)
	}
	return fmt.Sprintf("set %s to %s", a.Component, to)
}

func metricName(a *schemas.Anomaly) string {
	switch a.Metric {
	case schemas.MetricErrorRate:
		if a.ErrorCategory != "" {
			return "error rate (" + a.ErrorCategory + ")"
		}
		return "error rate"
	case schemas.MetricLatency:
		return "latency"
	case schemas.MetricThroughput:
		return "throughput"
	case schemas.MetricCPU:
		return "CPU"
	case schemas.MetricMem:
		return "memory"
	}
	return a.Metric
}

func metricValue(metric string, v float64) string {
	switch metric {
	case schemas.MetricErrorRate:
		return pct(v)
	case schemas.MetricLatency:
		return trim(fmt.Sprintf("%.1f", v)) + " ms"
	case schemas.MetricThroughput:
		return trim(fmt.Sprintf("%.1f", v)) + " req/s"
	case schemas.MetricCPU:
		return trim(fmt.Sprintf("%.2f", v)) + " cores"
	case schemas.MetricMem:
		return trim(fmt.Sprintf("%.0f", v)) + " MB"
	}
	return trim(fmt.Sprintf("%.3g", v))
}

func pct(v float64) string { return trim(fmt.Sprintf("%.1f", 100*v)) + "%" }

func trim(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// stamp formats an event time the way operators read logs: UTC to the second.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") }

// age formats a duration for people: "4m12s", "15m", "2h".
func age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
