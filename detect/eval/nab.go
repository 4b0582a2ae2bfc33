// Package eval scores detectors against labelled benchmarks, so that a change to the detection stage is
// judged by numbers that can be compared with published results rather than by eye.
//
// The NAB part (files nab*.go) implements the Numenta Anomaly Benchmark's scoring as its specification
// describes it: every labelled anomaly window is worth the scaled sigmoid of the relative position of
// the first detection inside it (earlier is better), a window without a detection costs the profile's
// false-negative weight, detections outside windows cost the profile's false-positive weight scaled by
// how far they fall after the preceding window, and the first 15% of each file (at most 750 rows) is a
// probationary period that is not scored. Scores are normalised so that a detector that never fires
// scores 0 and a perfect one 100. The package only scores: it never reads the wall clock, and the
// detector under test is any function from a stream of points to anomaly scores.
package eval

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"
)

// ErrBadInput is wrapped by every error caused by malformed benchmark data or arguments.
var ErrBadInput = errors.New("nab: bad input")

// Profile is one NAB application profile: the weights given to true positives, false positives and
// false negatives. TN carries no score in NAB; it is kept for completeness of the published files.
type Profile struct {
	Name     string  `json:"name"`
	TPWeight float64 `json:"tpWeight"`
	FPWeight float64 `json:"fpWeight"`
	FNWeight float64 `json:"fnWeight"`
	TNWeight float64 `json:"tnWeight"`
}

// NAB profile names, in the order reports print them.
const (
	ProfileStandard = "standard"
	ProfileLowFP    = "reward_low_FP_rate"
	ProfileLowFN    = "reward_low_FN_rate"
)

// DefaultProfiles are NAB's three published profiles (config/profiles.json of NAB v1.1).
func DefaultProfiles() []Profile {
	return []Profile{
		{Name: ProfileStandard, TPWeight: 1, FPWeight: 0.11, FNWeight: 1, TNWeight: 1},
		{Name: ProfileLowFP, TPWeight: 1, FPWeight: 0.22, FNWeight: 1, TNWeight: 1},
		{Name: ProfileLowFN, TPWeight: 1, FPWeight: 0.11, FNWeight: 2, TNWeight: 1},
	}
}

// ProbationPercent is the share of each file that NAB leaves unscored so detectors can learn.
const ProbationPercent = 0.15

// ProbationaryLength is the number of leading rows of a file of n rows that are not scored:
// floor(0.15·n), but never more than 0.15·5000 = 750 rows.
func ProbationaryLength(n int) int {
	p := int(math.Floor(ProbationPercent * float64(n)))
	return min(p, int(ProbationPercent*5000))
}

// ScaledSigmoid maps a relative position to a score in [-1, 1]: 2·σ(-5x) − 1, and −1 beyond x > 3.
// Inside a window x runs from −1 (first row) to just below 0 (last row), so early detections score
// close to +1; after a window x is the distance past it in window widths, so false positives right
// after a window cost little and those far away cost the full weight.
func ScaledSigmoid(x float64) float64 {
	if x > 3 {
		return -1
	}
	return 2/(1+math.Exp(5*x)) - 1
}

// maxTP is the score of a detection on a window's first row; TP scores are divided by it so that a
// perfect detection is worth exactly TPWeight.
var maxTP = ScaledSigmoid(-1)

// Window is one labelled anomaly window, both ends inclusive.
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// rowWindows maps windows onto row indices of ts: [left, right] inclusive, the first row at or after
// Start and the last row at or before End. Windows must be ordered, not overlap and cover a row.
// Timestamps must not decrease; repeated ones are allowed, as NAB's data has them.
func rowWindows(ts []time.Time, windows []Window) ([][2]int, error) {
	out := make([][2]int, 0, len(windows))
	prevRight := -1
	for k, w := range windows {
		if w.End.Before(w.Start) {
			return nil, fmt.Errorf("%w: window %d ends (%s) before it starts (%s)", ErrBadInput, k, w.End, w.Start)
		}
		l := sort.Search(len(ts), func(i int) bool { return !ts[i].Before(w.Start) })
		// The right end is the first row at End (NAB data repeats timestamps across DST changes).
		r := sort.Search(len(ts), func(i int) bool { return !ts[i].Before(w.End) })
		if r == len(ts) || !ts[r].Equal(w.End) {
			r--
		}
		if l > r {
			return nil, fmt.Errorf("%w: window %d [%s, %s] covers no row", ErrBadInput, k, w.Start, w.End)
		}
		if l <= prevRight {
			return nil, fmt.Errorf("%w: window %d overlaps the one before it or is out of order", ErrBadInput, k)
		}
		out = append(out, [2]int{l, r})
		prevRight = r
	}
	return out, nil
}

// sweepRow is one scored (post-probation) row: the detector's score, the window it falls in (−1 when
// outside every window) and the weighted score it contributes if it is the first detection of its
// window (TP) or a detection outside windows (FP).
type sweepRow struct {
	row      int
	score    float64
	window   int
	weighted float64
}

// fileSweep is a file prepared for scoring under one profile.
type fileSweep struct {
	n          int        // rows in the file
	rows       []sweepRow // scored rows, in time order
	numWindows int        // windows with at least one scored row
	firstRow   []int      // per window: index into rows of its first scored row, or −1
	perfect    float64    // best achievable score: every window detected on its first scored row
}

// sweep computes the weighted score of every scored row of one file, as NAB's sweeper does: inside a
// window the relative position is −(right − i + 1)/width; outside, the distance past the previous
// window is |prevRight − i|/(prevWidth − 1), and a row before the first window scores −1.
func sweep(ts []time.Time, scores []float64, windows []Window, p Profile) (*fileSweep, error) {
	if len(ts) != len(scores) {
		return nil, fmt.Errorf("%w: %d timestamps but %d scores", ErrBadInput, len(ts), len(scores))
	}
	for i := 1; i < len(ts); i++ {
		if ts[i].Before(ts[i-1]) {
			return nil, fmt.Errorf("%w: timestamps go back in time at row %d (%s)", ErrBadInput, i, ts[i])
		}
	}
	for i, s := range scores {
		if math.IsNaN(s) {
			return nil, fmt.Errorf("%w: anomaly score of row %d is NaN", ErrBadInput, i)
		}
	}
	wins, err := rowWindows(ts, windows)
	if err != nil {
		return nil, err
	}
	probation := ProbationaryLength(len(ts))
	fs := &fileSweep{n: len(ts), firstRow: make([]int, len(wins))}
	for k := range fs.firstRow {
		fs.firstRow[k] = -1
	}
	cur, prevRight, prevWidth := 0, -1, 0
	for i := range ts {
		r := sweepRow{row: i, score: scores[i], window: -1}
		if cur < len(wins) && i >= wins[cur][0] && i <= wins[cur][1] {
			left, right := wins[cur][0], wins[cur][1]
			width := float64(right - left + 1)
			r.window = cur
			r.weighted = ScaledSigmoid(-float64(right-i+1)/width) * p.TPWeight / maxTP
		} else {
			u := -1.0
			if prevRight >= 0 && prevWidth > 1 {
				u = ScaledSigmoid(math.Abs(float64(prevRight-i)) / float64(prevWidth-1))
			}
			r.weighted = u * p.FPWeight
		}
		if i >= probation {
			if r.window >= 0 && fs.firstRow[r.window] < 0 {
				fs.firstRow[r.window] = len(fs.rows)
				fs.numWindows++
				fs.perfect += r.weighted
			}
			fs.rows = append(fs.rows, r)
		}
		if cur < len(wins) && i == wins[cur][1] {
			prevRight, prevWidth = i, wins[cur][1]-wins[cur][0]+1
			cur++
		}
	}
	return fs, nil
}

// FileScore is the result of scoring one file at one threshold. Counts are of scored rows, as in
// NAB's published tables: TP/FN are rows inside windows at/above or below the threshold, FP/TN rows
// outside windows; Total counts every row of the file, probation included.
type FileScore struct {
	Threshold float64 `json:"threshold"`
	Score     float64 `json:"score"`
	TP        int     `json:"tp"`
	TN        int     `json:"tn"`
	FP        int     `json:"fp"`
	FN        int     `json:"fn"`
	Total     int     `json:"total"`
	// Windows is the number of scored windows; Null and Perfect are the scores of a detector that
	// never fires and of one that fires on every window's first scored row, the normalisation bounds.
	Windows  int     `json:"windows"`
	Detected int     `json:"detected"` // windows with at least one detection
	Null     float64 `json:"null"`
	Perfect  float64 `json:"perfect"`
	// RowScores holds, per row of the file, its contribution S(t): the window's score on the window's
	// first scored row (the TP score of its first detection, or −FNWeight when missed), the FP score on
	// every detection outside windows, and 0 elsewhere — the S(t)_<profile> column of NAB's results.
	RowScores []float64 `json:"-"`
}

// ScoreFile scores one file under profile p: a row is a detection when its score is ≥ threshold.
func ScoreFile(ts []time.Time, scores []float64, windows []Window, p Profile, threshold float64) (FileScore, error) {
	fs, err := sweep(ts, scores, windows, p)
	if err != nil {
		return FileScore{}, err
	}
	return fs.score(threshold, p), nil
}

func (fs *fileSweep) score(threshold float64, p Profile) FileScore {
	out := FileScore{
		Threshold: threshold, Total: fs.n, Windows: fs.numWindows,
		Null:    -p.FNWeight * float64(fs.numWindows),
		Perfect: fs.perfect, RowScores: make([]float64, fs.n),
	}
	detected := make([]bool, len(fs.firstRow))
	for _, r := range fs.rows {
		hit := r.score >= threshold
		switch {
		case r.window < 0 && hit:
			out.FP++
			out.Score += r.weighted
			out.RowScores[r.row] = r.weighted
		case r.window < 0:
			out.TN++
		case hit:
			out.TP++
			if !detected[r.window] {
				detected[r.window] = true
				out.Detected++
				out.Score += r.weighted
				out.RowScores[fs.rows[fs.firstRow[r.window]].row] = r.weighted
			}
		default:
			out.FN++
		}
	}
	for k, first := range fs.firstRow {
		if first >= 0 && !detected[k] {
			out.Score -= p.FNWeight
			out.RowScores[fs.rows[first].row] = -p.FNWeight
		}
	}
	return out
}

// File is one benchmark file with a detector's scores, the unit the threshold optimiser works on.
type File struct {
	Name       string
	Timestamps []time.Time
	Scores     []float64
	Windows    []Window
}

// Optimum is the threshold that maximises the summed raw score of a set of files under one profile.
type Optimum struct {
	Profile   string  `json:"profile"`
	Threshold float64 `json:"threshold"`
	Score     float64 `json:"score"`
}

// OptimizeThreshold finds, as NAB's optimiser does, the single threshold that maximises the raw score
// summed over files: it sweeps every distinct anomaly score from the highest down, adding one group of
// equal scores at a time, so the optimum is exact rather than searched. Ties keep the higher
// threshold. If no threshold beats never firing, the threshold returned is just above every score.
func OptimizeThreshold(files []File, p Profile) (Optimum, error) {
	type ev struct {
		score, weighted float64
		window          int // global window id, −1 outside windows
	}
	var evs []ev
	base, nWin := 0.0, 0
	maxScore := math.Inf(-1)
	for _, f := range files {
		fs, err := sweep(f.Timestamps, f.Scores, f.Windows, p)
		if err != nil {
			return Optimum{}, fmt.Errorf("%s: %w", f.Name, err)
		}
		for _, r := range fs.rows {
			w := -1
			if r.window >= 0 {
				w = nWin + r.window
			}
			evs = append(evs, ev{r.score, r.weighted, w})
			maxScore = math.Max(maxScore, r.score)
		}
		nWin += len(fs.firstRow)
		base -= p.FNWeight * float64(fs.numWindows)
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].score > evs[j].score })
	best := Optimum{Profile: p.Name, Score: base, Threshold: math.Nextafter(maxScore, math.Inf(1))}
	if len(evs) == 0 {
		best.Threshold = 1
		return best, nil
	}
	winBest := make([]float64, nWin)
	for k := range winBest {
		winBest[k] = -p.FNWeight
	}
	cur := base
	for i, e := range evs {
		if e.window < 0 {
			cur += e.weighted
		} else if e.weighted > winBest[e.window] {
			cur += e.weighted - winBest[e.window]
			winBest[e.window] = e.weighted
		}
		if (i == len(evs)-1 || evs[i+1].score != e.score) && cur > best.Score {
			best.Score, best.Threshold = cur, e.score
		}
	}
	return best, nil
}

// Normalize maps a raw score onto NAB's scale: 0 for the null detector, 100 for a perfect one.
// It is NaN when the files hold no window (null and perfect coincide).
func Normalize(raw, null, perfect float64) float64 {
	if perfect == null {
		return math.NaN()
	}
	return 100 * (raw - null) / (perfect - null)
}
