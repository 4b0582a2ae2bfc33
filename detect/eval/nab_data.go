package eval

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// timeLayouts are the timestamp forms found in NAB's data, label and result files (all UTC).
var timeLayouts = []string{
	"2006-01-02 15:04:05.999999",
	"2006-01-02 15:04:05",
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05",
}

// ParseTime parses a NAB timestamp ("2014-07-01 00:00:00", with or without fractional seconds) or an
// RFC 3339 one. Times without a zone are UTC.
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: timestamp %q is neither \"2006-01-02 15:04:05\" nor RFC 3339", ErrBadInput, s)
}

// Point is one row of a univariate series.
type Point struct {
	T time.Time
	V float64
}

// SeriesReader streams a `timestamp,value` CSV (NAB's data format) one row at a time, so a file of
// any length is read in constant memory. A header row is recognised and skipped.
type SeriesReader struct {
	r    *csv.Reader
	line int
}

// NewSeriesReader reads CSV rows of at least two fields: timestamp, value.
func NewSeriesReader(r io.Reader) *SeriesReader {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	return &SeriesReader{r: cr}
}

// Next returns the next point, or io.EOF after the last row. Errors name the line.
func (s *SeriesReader) Next() (Point, error) {
	for {
		rec, err := s.r.Read()
		if errors.Is(err, io.EOF) {
			return Point{}, io.EOF
		}
		s.line++
		if err != nil {
			return Point{}, fmt.Errorf("%w: line %d: %v", ErrBadInput, s.line, err)
		}
		if len(rec) < 2 {
			return Point{}, fmt.Errorf("%w: line %d: want timestamp,value, got %d field(s)", ErrBadInput, s.line, len(rec))
		}
		if s.line == 1 && strings.EqualFold(strings.TrimSpace(rec[0]), "timestamp") {
			continue
		}
		t, err := ParseTime(rec[0])
		if err != nil {
			return Point{}, fmt.Errorf("line %d: %w", s.line, err)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rec[1]), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return Point{}, fmt.Errorf("%w: line %d: value %q is not a finite number", ErrBadInput, s.line, rec[1])
		}
		return Point{T: t, V: v}, nil
	}
}

// ReadSeries reads a whole `timestamp,value` CSV file.
func ReadSeries(path string) ([]Point, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sr := NewSeriesReader(f)
	var out []Point
	for {
		p, err := sr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, p)
	}
}

// LoadWindows reads NAB's labels/combined_windows.json: file (relative to the data directory, e.g.
// "realKnownCause/nyc_taxi.csv") → ordered list of [start, end] windows.
func LoadWindows(path string) (map[string][]Window, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string][][]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadInput, path, err)
	}
	out := make(map[string][]Window, len(raw))
	for file, ws := range raw {
		out[file] = []Window{}
		for k, w := range ws {
			if len(w) != 2 {
				return nil, fmt.Errorf("%w: %s: %s window %d has %d ends, want 2", ErrBadInput, path, file, k, len(w))
			}
			s, err := ParseTime(w[0])
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", path, file, err)
			}
			e, err := ParseTime(w[1])
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", path, file, err)
			}
			out[file] = append(out[file], Window{Start: s, End: e})
		}
		sort.Slice(out[file], func(i, j int) bool { return out[file][i].Start.Before(out[file][j].Start) })
	}
	return out, nil
}

// LoadProfiles reads NAB's config/profiles.json ({"standard": {"CostMatrix": {"tpWeight": …}}}). The
// three NAB profiles come first in their usual order, any others after them by name.
func LoadProfiles(path string) ([]Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string]struct {
		CostMatrix struct {
			TPWeight *float64 `json:"tpWeight"`
			FPWeight *float64 `json:"fpWeight"`
			FNWeight *float64 `json:"fnWeight"`
			TNWeight *float64 `json:"tnWeight"`
		}
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadInput, path, err)
	}
	var out []Profile
	for name, p := range raw {
		c := p.CostMatrix
		if c.TPWeight == nil || c.FPWeight == nil || c.FNWeight == nil {
			return nil, fmt.Errorf("%w: %s: profile %q needs tpWeight, fpWeight and fnWeight", ErrBadInput, path, name)
		}
		pr := Profile{Name: name, TPWeight: *c.TPWeight, FPWeight: *c.FPWeight, FNWeight: *c.FNWeight}
		if c.TNWeight != nil {
			pr.TNWeight = *c.TNWeight
		}
		out = append(out, pr)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s: no profile", ErrBadInput, path)
	}
	sort.Slice(out, func(i, j int) bool {
		ri, rj := profileRank(out[i].Name), profileRank(out[j].Name)
		if ri != rj {
			return ri < rj
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

func profileRank(name string) int {
	switch name {
	case ProfileStandard:
		return 0
	case ProfileLowFP:
		return 1
	case ProfileLowFN:
		return 2
	}
	return 3
}

// LoadThresholds reads NAB's config/thresholds.json: detector → profile → tuned threshold and the
// raw score it reached on the whole benchmark.
func LoadThresholds(path string) (map[string]map[string]Optimum, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string]map[string]struct {
		Score     float64 `json:"score"`
		Threshold float64 `json:"threshold"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadInput, path, err)
	}
	out := make(map[string]map[string]Optimum, len(raw))
	for det, ps := range raw {
		out[det] = make(map[string]Optimum, len(ps))
		for prof, o := range ps {
			out[det][prof] = Optimum{Profile: prof, Threshold: o.Threshold, Score: o.Score}
		}
	}
	return out, nil
}

// PublishedScoresPath is where NAB keeps a detector's per-file score table for a profile.
func PublishedScoresPath(resultsDir, detector, profile string) string {
	return filepath.Join(resultsDir, detector, detector+"_"+profile+"_scores.csv")
}

// LoadPublishedScores reads a per-file score table (results/<det>/<det>_<profile>_scores.csv:
// Detector,Profile,File,Threshold,Score,TP,TN,FP,FN,Total_Count), keyed by file. The "Totals" row is
// skipped: totals are recomputed over whichever files are being compared.
func LoadPublishedScores(path string) (map[string]FileScore, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadInput, path, err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%w: %s: empty", ErrBadInput, path)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[strings.TrimSpace(h)] = i
	}
	for _, h := range []string{"File", "Threshold", "Score", "TP", "TN", "FP", "FN", "Total_Count"} {
		if _, ok := col[h]; !ok {
			return nil, fmt.Errorf("%w: %s: no %q column", ErrBadInput, path, h)
		}
	}
	out := map[string]FileScore{}
	for n, rec := range recs[1:] {
		file := rec[col["File"]]
		if file == "" || rec[0] == "Totals" {
			continue
		}
		var fsc FileScore
		var perr error
		num := func(h string) float64 {
			v, err := strconv.ParseFloat(rec[col[h]], 64)
			if err != nil && perr == nil {
				perr = fmt.Errorf("%w: %s: line %d: %s %q is not a number", ErrBadInput, path, n+2, h, rec[col[h]])
			}
			return v
		}
		fsc.Threshold, fsc.Score = num("Threshold"), num("Score")
		fsc.TP, fsc.TN, fsc.FP, fsc.FN = int(num("TP")), int(num("TN")), int(num("FP")), int(num("FN"))
		fsc.Total = int(num("Total_Count"))
		if perr != nil {
			return nil, perr
		}
		out[file] = fsc
	}
	return out, nil
}
