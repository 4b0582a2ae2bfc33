package eval

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// MarshalJSON writes a NaN normalised score (a group without windows) as null: JSON has no NaN.
func (s Scores) MarshalJSON() ([]byte, error) {
	type alias Scores
	out := struct {
		alias
		Normalized *float64 `json:"normalized"`
	}{alias: alias(s)}
	if !math.IsNaN(s.Normalized) {
		out.Normalized = &s.Normalized
	}
	return json.Marshal(out)
}

var profileShort = map[string]string{ProfileStandard: "standard", ProfileLowFP: "low-FP", ProfileLowFN: "low-FN"}

func shortName(p string) string {
	if s, ok := profileShort[p]; ok {
		return s
	}
	return p
}

// WriteTable prints the report: per category and in total, the normalised score of every detector
// under every profile, the windows detected (standard profile) and false positives.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "NAB score (null 0, perfect 100) on %d files\t\t", r.Files)
	for range r.Profiles {
		fmt.Fprint(tw, "\t")
	}
	fmt.Fprint(tw, "\t\t\n")
	fmt.Fprint(tw, "group\tdetector\t")
	for _, p := range r.Profiles {
		fmt.Fprintf(tw, "%s\t", shortName(p))
	}
	fmt.Fprint(tw, "detected\tFP\t\n")
	all := append(append([]*DetectorResult{}, r.Results...), r.HeldOut)
	for gi, g := range r.Results[0].Groups {
		for di, res := range all {
			if res == nil || (res == r.HeldOut && g.Name != "total") {
				continue
			}
			name := ""
			if di == 0 {
				name = fmt.Sprintf("%s (%d)", g.Name, g.Files)
			}
			fmt.Fprintf(tw, "%s\t%s\t", name, res.Detector)
			grp := res.Groups[gi]
			for _, p := range r.Profiles {
				fmt.Fprintf(tw, "%s\t", fmtScore(grp.By[p].Normalized))
			}
			std := grp.By[r.Profiles[0]]
			det := "-"
			if std.Detected >= 0 {
				det = fmt.Sprintf("%d/%d", std.Detected, std.Windows)
			}
			fmt.Fprintf(tw, "%s\t%d\t\n", det, std.FP)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, res := range r.Results {
		if len(res.Thresholds) == 0 {
			continue
		}
		var parts []string
		for _, p := range r.Profiles {
			parts = append(parts, fmt.Sprintf("%s %.6g", shortName(p), res.Thresholds[p]))
		}
		fmt.Fprintf(w, "thresholds %-26s %s\n", res.Detector+":", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w, "scalpel's thresholds are optimised on these files (as NAB does); \"own alarms\" scores its default")
	fmt.Fprintln(w, "alarm decisions; \"held-out threshold\" scores each category with thresholds optimised on the others.")
	fmt.Fprintln(w, "Published detectors: their per-file results (thresholds tuned on all 58 NAB files) restricted to these files.")
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "not compared: %s\n", s)
	}
	return nil
}

func fmtScore(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}
