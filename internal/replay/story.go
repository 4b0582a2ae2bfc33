package replay

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/scalpel-dev/scalpel/schemas"
)

// The story: one sentence per event, written for the person who was woken.

func target(svc, comp, block string) string {
	s := svc
	if comp != "" {
		s += "/" + comp
	}
	if block != "" {
		s += "/" + block
	}
	return s
}

func deploySummary(d *schemas.DeployEvent) string {
	var parts []string
	for _, c := range d.Components {
		parts = append(parts, c.Component+"@"+c.Version)
	}
	s := fmt.Sprintf("%s deployed %s (deploy %s)", d.Service, d.AppVersion, d.ID)
	if len(parts) > 0 {
		s += ": " + strings.Join(parts, ", ")
	}
	if d.Actor != "" {
		s += " by " + d.Actor
	}
	return s
}

// metricValue formats an observation of metric for people.
func metricValue(metric string, v float64) string {
	switch metric {
	case schemas.MetricErrorRate:
		return fmt.Sprintf("%.2f%%", 100*v)
	case schemas.MetricLatency:
		return fmt.Sprintf("%.1f ms", v)
	case schemas.MetricThroughput:
		return fmt.Sprintf("%.1f req/s", v)
	case schemas.MetricCPU:
		return fmt.Sprintf("%.2f cpu", v)
	case schemas.MetricMem:
		return fmt.Sprintf("%.0f MiB", v)
	}
	return fmt.Sprintf("%g", v)
}

func metricName(a *schemas.Anomaly) string {
	m := strings.ReplaceAll(a.Metric, "_", " ")
	if a.ErrorCategory != "" {
		m += " (" + a.ErrorCategory + ")"
	}
	return m
}

func anomalySummary(a *schemas.Anomaly) string {
	who := target(a.Service, a.Component, a.Block) + "@" + a.Version
	if a.Cohort != "" {
		who += " [" + a.Cohort + "]"
	}
	if a.IsResolved() {
		s := fmt.Sprintf("%s of %s is back to normal", metricName(a), who)
		if a.Resolution != "" {
			s += ": " + a.Resolution
		}
		return s
	}
	base := metricValue(a.Metric, a.Baseline)
	if a.BaselineVersion != "" {
		base += " on " + a.BaselineVersion
	}
	s := fmt.Sprintf("%s of %s rose to %s against %s (%d requests vs %d", metricName(a), who,
		metricValue(a.Metric, a.Observed), base, a.Samples.Observed, a.Samples.Baseline)
	switch {
	case a.PValue != nil:
		s += fmt.Sprintf(", p=%.2g", *a.PValue)
	case a.Score != nil:
		s += fmt.Sprintf(", score %.3g", *a.Score)
	}
	s += ")"
	if b := topBlock(a.Evidence.Blocks); b != "" && a.Block == "" {
		s += "; errors concentrate in block " + b
	}
	return s
}

// topBlock is the block with the most errors, "" when none.
func topBlock(m map[string]int64) string {
	best, n := "", int64(0)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if m[k] > n {
			best, n = k, m[k]
		}
	}
	return best
}

func targetsText(ts []schemas.DecisionTarget) string {
	var parts []string
	for _, t := range ts {
		s := target(t.Service, t.Component, t.Block)
		if t.FromVersion != "" || t.ToVersion != "" {
			s += " " + t.FromVersion + " → " + t.ToVersion
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func decisionSummary(d *schemas.Decision) string {
	s := d.Action
	if d.Granularity != "" {
		s += " (" + d.Granularity + ")"
	}
	if t := targetsText(d.Targets); t != "" {
		s += " of " + t
	} else {
		s += " for " + d.Service
	}
	if d.DryRun {
		s += " [dry run]"
	}
	if d.Reason != "" {
		s += ": " + d.Reason
	}
	if len(d.Policy.GuardsHit) > 0 {
		s += " (guards: " + strings.Join(d.Policy.GuardsHit, ", ") + ")"
	}
	return s
}

func ackSummary(a *schemas.RollbackAck) string {
	s := fmt.Sprintf("%s instance %s %s command %s, now on %s", a.Service, a.Instance, a.Status, a.CommandID, a.ActiveVersion)
	if a.Error != "" {
		s += ": " + a.Error
	}
	return s
}

func approvalSummary(ap *schemas.Approval, rec *schemas.Decision) string {
	verb := "rejected"
	if ap.Approve {
		verb = "approved"
	}
	s := fmt.Sprintf("%s %s recommendation %s", cmp.Or(ap.Actor, "someone"), verb, ap.DecisionID)
	if rec != nil {
		if t := targetsText(rec.Targets); t != "" {
			s += " (" + rec.Action + " of " + t + ")"
		}
	}
	if ap.Reason != "" {
		s += ": " + ap.Reason
	}
	return s
}

func failureSummary(f *ActuationFailure) string {
	s := "actuation failed"
	if f.Class != "" {
		s += " (" + f.Class + ")"
	}
	s += " for " + cmp.Or(f.Action, "decision") + " " + f.DecisionID
	if f.Component != "" {
		s += " of " + target(f.Service, f.Component, f.Block)
	}
	if f.Reason != "" {
		s += ": " + f.Reason
	}
	return s
}
