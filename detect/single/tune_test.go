package single

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scalpel-dev/scalpel/detect/eval"
)

// TestTune scores config variants given as a JSON list of partial configs in SCALPEL_TUNE (each
// merged onto the defaults); with SCALPEL_TUNE_DETAIL it lists each file's window and false-alarm
// contributions. It is a measuring tool, skipped unless asked for.
func TestTune(t *testing.T) {
	spec := os.Getenv("SCALPEL_TUNE")
	if spec == "" {
		t.Skip("set SCALPEL_TUNE to a JSON list of partial configs")
	}
	var variants []json.RawMessage
	if err := json.Unmarshal([]byte(spec), &variants); err != nil {
		t.Fatal(err)
	}
	dir := nabDir(t)
	corpus, err := eval.LoadCorpus(filepath.Join(dir, "data"), filepath.Join(dir, "labels", "combined_windows.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range variants {
		cfg := DefaultConfig()
		if err := json.Unmarshal(v, &cfg); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		rep, err := eval.RunNAB(context.Background(), corpus, eval.NABOptions{Name: "s", New: func() eval.Stepper { return New(cfg) }})
		if err != nil {
			t.Fatal(err)
		}
		res := rep.Results[0]
		var b strings.Builder
		for _, g := range res.Groups {
			s := g.By[eval.ProfileStandard]
			if s.Windows == 0 {
				continue
			}
			fmt.Fprintf(&b, " %s=%.1f", g.Name[:min(len(g.Name), 8)], s.Normalized)
		}
		tot := res.Total().By[eval.ProfileStandard]
		own := rep.Results[1].Total().By[eval.ProfileStandard]
		held := rep.HeldOut.Total().By[eval.ProfileStandard]
		fmt.Printf("%s\n  total %.1f own %.1f held %.1f det %d/%d fp %d thr %.4f |%s\n", v, tot.Normalized, own.Normalized, held.Normalized, tot.Detected, tot.Windows, tot.FP, res.Thresholds[eval.ProfileStandard], b.String())
		if os.Getenv("SCALPEL_TUNE_DETAIL") == "" {
			continue
		}
		var p eval.Profile
		for _, q := range eval.DefaultProfiles() {
			if q.Name == eval.ProfileStandard {
				p = q
			}
		}
		for _, cf := range corpus {
			det := New(cfg)
			f := eval.File{Name: cf.Name, Windows: cf.Windows}
			for _, pt := range cf.Points {
				s, _ := det.Step(pt.T, pt.V)
				f.Timestamps = append(f.Timestamps, pt.T)
				f.Scores = append(f.Scores, s)
			}
			fsc, err := eval.ScoreFile(f.Timestamps, f.Scores, f.Windows, p, res.Thresholds[eval.ProfileStandard])
			if err != nil {
				t.Fatal(err)
			}
			var ev []string
			for i, r := range fsc.RowScores {
				if r != 0 {
					ev = append(ev, fmt.Sprintf("%d:%+.2f", i, r))
				}
			}
			for _, w := range cf.Windows {
				l, r, mx, first := -1, -1, 0.0, -1
				for i, ts := range f.Timestamps {
					if !ts.Before(w.Start) && !ts.After(w.End) {
						if l < 0 {
							l = i
						}
						r = i
						if f.Scores[i] > mx {
							mx = f.Scores[i]
						}
						if first < 0 && f.Scores[i] >= res.Thresholds[eval.ProfileStandard] {
							first = i
						}
					}
				}
				ev = append(ev, fmt.Sprintf("W[%d,%d]first=%d max=%.3f", l, r, first, mx))
			}
			fmt.Printf("    %-50s n=%d prob=%d %.2f [%s]\n", cf.Name, len(cf.Points), eval.ProbationaryLength(len(cf.Points)), fsc.Score, strings.Join(ev, " "))
		}
	}
}
