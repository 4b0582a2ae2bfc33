package eval

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Stepper is a streaming detector under test: one point in, an anomaly score and an alarm out.
// The score is what NAB's threshold optimiser sweeps; the alarm is the detector's own decision with
// its default configuration, scored as a fixed threshold.
type Stepper interface {
	Step(ts time.Time, v float64) (score float64, alarm bool)
}

// CorpusFile is one data file of a NAB-layout corpus with its labelled windows.
type CorpusFile struct {
	Name     string // relative to the data directory, e.g. "realKnownCause/nyc_taxi.csv"
	Category string // its directory, e.g. "realKnownCause"
	Points   []Point
	Windows  []Window
}

// LoadCorpus reads every *.csv under dataDir (NAB layout: <category>/<file>.csv) and its windows from
// the labels file. A data file without an entry in the labels is an error: scoring it as "no anomaly"
// would silently reward a detector that stays quiet.
func LoadCorpus(dataDir, labelsPath string) ([]CorpusFile, error) {
	windows, err := LoadWindows(labelsPath)
	if err != nil {
		return nil, err
	}
	var out []CorpusFile
	err = filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".csv") {
			return nil
		}
		rel, err := filepath.Rel(dataDir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		ws, ok := windows[rel]
		if !ok {
			return fmt.Errorf("%w: %s has no entry in %s", ErrBadInput, rel, labelsPath)
		}
		pts, err := ReadSeries(path)
		if err != nil {
			return err
		}
		out = append(out, CorpusFile{Name: rel, Category: filepath.Dir(filepath.FromSlash(rel)), Points: pts, Windows: ws})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no *.csv file under %s", ErrBadInput, dataDir)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Scores are the NAB scores of one detector over a group of files under one profile.
type Scores struct {
	Raw        float64 `json:"raw"`
	Null       float64 `json:"null"`
	Perfect    float64 `json:"perfect"`
	Normalized float64 `json:"normalized"` // NaN (null in JSON: see MarshalJSON) when the group has no window
	TP         int     `json:"tp"`
	FP         int     `json:"fp"`
	FN         int     `json:"fn"`
	// Detected is the number of windows with at least one detection, out of Windows; negative when
	// unknown (published tables do not say).
	Detected int `json:"detected"`
	Windows  int `json:"windows"`
}

func (s *Scores) add(f FileScore) {
	s.Raw += f.Score
	s.Null += f.Null
	s.Perfect += f.Perfect
	s.TP += f.TP
	s.FP += f.FP
	s.FN += f.FN
	s.Windows += f.Windows
}

func (s *Scores) finish() {
	s.Normalized = Normalize(s.Raw, s.Null, s.Perfect)
	if s.Detected < 0 {
		s.Detected = -1
	}
}

// Group is the scores of one group of files (a category, or "total") per profile.
type Group struct {
	Name  string             `json:"name"`
	Files int                `json:"files"`
	By    map[string]*Scores `json:"by_profile"`
}

// DetectorResult is a detector's scores on the corpus: per category and in total, per profile.
type DetectorResult struct {
	Detector string `json:"detector"`
	// Thresholds per profile: for scalpel the optimum found on this corpus, for published detectors
	// the thresholds NAB tuned on the whole benchmark (the ones their per-file tables were made with).
	Thresholds map[string]float64 `json:"thresholds,omitempty"`
	Groups     []*Group           `json:"groups"` // categories in name order, then "total"
}

// Total returns the "total" group.
func (r *DetectorResult) Total() *Group { return r.Groups[len(r.Groups)-1] }

// Report is the outcome of running a detector over a NAB corpus next to the published detectors.
type Report struct {
	Files    int               `json:"files"`
	Profiles []string          `json:"profiles"`
	Results  []*DetectorResult `json:"results"`
	// HeldOut is a leave-one-category-out check of the threshold choice: each category is scored with
	// the thresholds optimised on all the other categories; totals are summed over categories.
	HeldOut *DetectorResult `json:"held_out_threshold"`
	// Skipped lists published detectors whose tables were missing or did not cover every file.
	Skipped []string `json:"skipped,omitempty"`
}

// NABOptions configure RunNAB.
type NABOptions struct {
	Name     string         // name of the detector under test in the report, e.g. "scalpel"
	New      func() Stepper // a fresh detector per file
	Profiles []Profile      // DefaultProfiles() when empty
	Results  string         // NAB results directory with published score tables; "" skips them
	Compare  []string       // published detectors to show; default numenta, windowedGaussian, null
	Progress func(done, total int, file string, took time.Duration)
}

// RunNAB streams every file of the corpus through a fresh detector, optimises one threshold per
// profile over all files, and scores the detector (optimised and with its own alarms) per category
// and in total, next to the published detectors' per-file results restricted to the same files.
func RunNAB(ctx context.Context, corpus []CorpusFile, o NABOptions) (*Report, error) {
	if o.New == nil {
		return nil, fmt.Errorf("%w: no detector", ErrBadInput)
	}
	if o.Name == "" {
		o.Name = "detector"
	}
	if len(o.Profiles) == 0 {
		o.Profiles = DefaultProfiles()
	}
	if o.Compare == nil {
		o.Compare = []string{"numenta", "windowedGaussian", "null"}
	}
	files := make([]File, len(corpus))
	alarms := make([]File, len(corpus))
	for i, cf := range corpus {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		start := time.Now()
		det := o.New()
		f := File{Name: cf.Name, Windows: cf.Windows, Timestamps: make([]time.Time, len(cf.Points)), Scores: make([]float64, len(cf.Points))}
		a := File{Name: cf.Name, Windows: cf.Windows, Timestamps: f.Timestamps, Scores: make([]float64, len(cf.Points))}
		for k, p := range cf.Points {
			s, alarm := det.Step(p.T, p.V)
			if math.IsNaN(s) {
				return nil, fmt.Errorf("%s row %d: detector returned a NaN score", cf.Name, k)
			}
			f.Timestamps[k], f.Scores[k] = p.T, s
			if alarm {
				a.Scores[k] = 1
			}
		}
		files[i], alarms[i] = f, a
		if o.Progress != nil {
			o.Progress(i+1, len(corpus), cf.Name, time.Since(start))
		}
	}
	rep := &Report{Files: len(corpus)}
	for _, p := range o.Profiles {
		rep.Profiles = append(rep.Profiles, p.Name)
	}

	opt := &DetectorResult{Detector: o.Name, Thresholds: map[string]float64{}}
	fixed := &DetectorResult{Detector: o.Name + " (own alarms)", Thresholds: map[string]float64{}}
	held := &DetectorResult{Detector: o.Name + " (held-out threshold)"}
	perFile := map[string]map[string]FileScore{}  // profile → file → optimised
	perFixed := map[string]map[string]FileScore{} // profile → file → own alarms
	perHeld := map[string]map[string]FileScore{}
	for _, p := range o.Profiles {
		best, err := OptimizeThreshold(files, p)
		if err != nil {
			return nil, err
		}
		opt.Thresholds[p.Name] = best.Threshold
		fixed.Thresholds[p.Name] = 0.5
		perFile[p.Name], perFixed[p.Name], perHeld[p.Name] = map[string]FileScore{}, map[string]FileScore{}, map[string]FileScore{}
		for i, f := range files {
			if perFile[p.Name][f.Name], err = ScoreFile(f.Timestamps, f.Scores, f.Windows, p, best.Threshold); err != nil {
				return nil, err
			}
			if perFixed[p.Name][f.Name], err = ScoreFile(f.Timestamps, alarms[i].Scores, f.Windows, p, 0.5); err != nil {
				return nil, err
			}
		}
		for _, cat := range categories(corpus) {
			var train []File
			for i, cf := range corpus {
				if cf.Category != cat {
					train = append(train, files[i])
				}
			}
			tb, err := OptimizeThreshold(train, p)
			if err != nil {
				return nil, err
			}
			for i, cf := range corpus {
				if cf.Category == cat {
					if perHeld[p.Name][cf.Name], err = ScoreFile(files[i].Timestamps, files[i].Scores, files[i].Windows, p, tb.Threshold); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	opt.Groups = group(corpus, o.Profiles, perFile)
	fixed.Groups = group(corpus, o.Profiles, perFixed)
	held.Groups = group(corpus, o.Profiles, perHeld)
	rep.Results = append(rep.Results, opt, fixed)
	rep.HeldOut = held

	if o.Results != "" {
		for _, det := range o.Compare {
			res, err := published(o.Results, det, corpus, o.Profiles, perFile)
			if err != nil {
				rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s: %v", det, err))
				continue
			}
			rep.Results = append(rep.Results, res)
		}
	}
	return rep, nil
}

// published builds a published detector's result from its per-file tables, restricted to the corpus
// files; null and perfect bounds come from our own scoring of the same windows (ours), which the
// tests prove equal to NAB's.
func published(dir, det string, corpus []CorpusFile, profiles []Profile, ours map[string]map[string]FileScore) (*DetectorResult, error) {
	per := map[string]map[string]FileScore{}
	res := &DetectorResult{Detector: det, Thresholds: map[string]float64{}}
	for _, p := range profiles {
		table, err := LoadPublishedScores(PublishedScoresPath(dir, det, p.Name))
		if err != nil {
			return nil, err
		}
		per[p.Name] = map[string]FileScore{}
		for _, cf := range corpus {
			fsc, ok := table[cf.Name]
			if !ok {
				return nil, fmt.Errorf("%w: no published score for %s", errMissing, cf.Name)
			}
			o := ours[p.Name][cf.Name]
			fsc.Null, fsc.Perfect, fsc.Windows = o.Null, o.Perfect, o.Windows
			fsc.Detected = -1 // not in the published tables
			per[p.Name][cf.Name] = fsc
			res.Thresholds[p.Name] = fsc.Threshold
		}
	}
	res.Groups = group(corpus, profiles, per)
	return res, nil
}

var errMissing = errors.New("missing")

func categories(corpus []CorpusFile) []string {
	seen := map[string]bool{}
	var out []string
	for _, cf := range corpus {
		if !seen[cf.Category] {
			seen[cf.Category] = true
			out = append(out, cf.Category)
		}
	}
	sort.Strings(out)
	return out
}

func group(corpus []CorpusFile, profiles []Profile, per map[string]map[string]FileScore) []*Group {
	var out []*Group
	total := &Group{Name: "total", By: map[string]*Scores{}}
	for _, cat := range categories(corpus) {
		g := &Group{Name: cat, By: map[string]*Scores{}}
		for _, p := range profiles {
			g.By[p.Name] = &Scores{}
			if total.By[p.Name] == nil {
				total.By[p.Name] = &Scores{}
			}
		}
		for _, cf := range corpus {
			if cf.Category != cat {
				continue
			}
			g.Files++
			total.Files++
			for _, p := range profiles {
				fsc := per[p.Name][cf.Name]
				g.By[p.Name].add(fsc)
				total.By[p.Name].add(fsc)
				g.By[p.Name].Detected += fsc.Detected
				total.By[p.Name].Detected += fsc.Detected
			}
		}
		out = append(out, g)
	}
	out = append(out, total)
	for _, g := range out {
		for _, s := range g.By {
			s.finish()
		}
	}
	return out
}
