// Package single is a streaming anomaly detector for one univariate series (a throughput, cpu or
// memory gauge of one component): one point in, an anomaly score in [0, 1] and an alarm out.
//
// It keeps a few constant-size summaries of the series' recent past and scores each point by how
// surprising it is against them:
//   - value rarity: a decaying histogram of values on a grid learned in warm-up; a point in a seen
//     bin scores by the p-value of its bin — the share of mass lying in bins no more likely than its
//     own (both tails and holes are rare) — on a log scale, up to SeenCap at p ≤ 1e-4; a point in an
//     unseen bin scores from SeenCap up to 1 by its distance to the nearest seen bin;
//   - context novelty: the share of the pairs (level k points ago, level now), for k = 1, 2, 4, …,
//     that the decaying memory has not seen — a new shape made of ordinary values — scaled into
//     [0, SeenCap]: ordinary values in a new order rank with rare seen values, below far-out ones;
//   - level shift: a two-sided CUSUM of robustly standardised values against a slow EWMA baseline,
//     graded like value rarity: up to SeenCap at its limit h, then towards 1 as it runs past h;
//   - seasonal residual: a baseline per phase slot of a period of the timestamps (a week by
//     default: the same half hour of the same weekday), an EWMA over periods; a two-sided CUSUM
//     of the residuals against it, graded like the level shift, catches ordinary values at the
//     wrong time (a holiday that looks like a Sunday). It is gated on the series having a season
//     at all: it scores only while the residual scale is well below the plain scale.
//
// The score is the largest of them. After an alarm the detector rests for a while (scores are
// damped and recover linearly): an incident is one alarm, not a storm of them. A point clearly more
// surprising than anything since the alarm (RestMargin) is a new incident and passes undamped. Once
// the series is back to ordinary points the rest of value rarity and context novelty runs out
// faster (RestQuietSpeed), so a second incident soon after the first is seen; the level-shift score
// rests the full length, as its slow baseline echoes the first shift.
//
// Memory is bounded by the config (bins, ContextLags·(3·Levels)², a ring of 2^(ContextLags−1)
// levels, at most SeasonSlots seasonal slots of 9 bytes — 18 KiB at the defaults); each Step is
// O(bins + ContextLags) — a constant — and never reads the wall clock: the timestamps of the
// points are data, checked for order and used for the seasonal phase.
package single

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Config tunes the detector. The defaults were chosen on the NAB corpus as a whole (one setting for
// every file) and are frozen: changing them changes what the benchmark measures.
type Config struct {
	// Warmup is the number of points used to learn the value grid and baselines before any score
	// is emitted (scores are 0 meanwhile). NAB's probation is 15% of a file, at most 750 points.
	Warmup int `json:"warmup" yaml:"warmup"`
	// Bins is the number of histogram bins spanning the warm-up range of values; values outside it
	// fall in further bins of the same width (up to Bins more on each side, then clamped).
	Bins int `json:"bins" yaml:"bins"`
	// Levels is the number of coarse levels spanning the warm-up range, the alphabet of the
	// context pairs (Levels more on each side for values outside it, then clamped).
	Levels int `json:"levels" yaml:"levels"`
	// Memory is the horizon, in points, of the decaying histograms and the long-run statistics.
	Memory int `json:"memory" yaml:"memory"`
	// CUSUMDrift (k) and CUSUMLimit (h) are in robust standard deviations: the CUSUM accumulates
	// |z| − k; at h its contribution reaches SeenCap and beyond h it climbs towards 1 (tanh of
	// (CUSUM − h)/h), the CUSUM itself being bounded at 4·h.
	CUSUMDrift float64 `json:"cusum_drift" yaml:"cusum_drift"`
	CUSUMLimit float64 `json:"cusum_limit" yaml:"cusum_limit"`
	// AlarmThreshold is the score at or above which Step reports an alarm.
	AlarmThreshold float64 `json:"alarm_threshold" yaml:"alarm_threshold"`
	// Rest is the number of points after an alarm during which scores are damped, so one incident
	// raises one alarm.
	Rest int `json:"rest" yaml:"rest"`
	// ContextLags is the number of lags (1, 2, 4, … 2^(ContextLags−1) points) whose pairs
	// (level then, level now), on the Levels grid, form the context of a point; the context
	// novelty score is the share of those pairs not seen within Memory. It catches a changed
	// pattern made of ordinary values (a flat stretch in a daily cycle). It scores at most SeenCap:
	// scored up to 1 it tied with far-out values, and an alarm on a new shape started a rest that
	// hid the spike that followed. 0 disables it.
	ContextLags int `json:"context_lags" yaml:"context_lags"`
	// ContextSeen is the decayed count (in points) below which a context pair counts as unseen.
	ContextSeen float64 `json:"context_seen" yaml:"context_seen"`
	// SeenCap is the highest score a value in an already-seen bin can get: the p-value score of
	// seen values is scaled into [0, SeenCap], and values in unseen bins score from SeenCap up to 1
	// by their distance to the nearest seen bin, so that a far-out value outranks a merely new one
	// and the threshold optimiser can tell them apart (instead of both saturating at 1).
	SeenCap float64 `json:"seen_cap" yaml:"seen_cap"`
	// UnseenSpread is the distance, in bins, over which an unseen value's score climbs from
	// SeenCap towards 1 (tanh of distance / UnseenSpread).
	UnseenSpread float64 `json:"unseen_spread" yaml:"unseen_spread"`
	// RestMargin lets a new incident through the rest: a point whose tail (1 − score) is below
	// RestMargin times the tail of the highest score since the alarm (a clearly more surprising
	// point, not the same incident running on), right after an ordinary point (raw score at most
	// SeenCap), scores undamped and may alarm again, starting a new rest. Without it a rest hides
	// a second incident on a short series entirely. 0 disables it.
	RestMargin float64 `json:"rest_margin" yaml:"rest_margin"`
	// RestQuietSpeed shortens the rest of value rarity and context novelty once the incident is
	// over: each ordinary point in a rest (raw score at most SeenCap) counts as RestQuietSpeed
	// points of it, so about Rest/RestQuietSpeed ordinary points end it and a second incident
	// with new values soon after the first (two traffic jams an hour or two apart) alarms again.
	// The level-shift (CUSUM) score still rests the full Rest: its slow baseline keeps echoing
	// the first shift, and in spiky series most false alarms after an incident came from it.
	// 0 or 1 disables the shortening (one rest of Rest points for every score).
	RestQuietSpeed int `json:"rest_quiet_speed" yaml:"rest_quiet_speed"`
	// SeasonHours is the period, in hours of the points' own timestamps, of a seasonal baseline:
	// each point is compared with the typical value at the same phase of earlier periods (the
	// same half hour of the same weekday, for a week), and a CUSUM of the residuals, graded with
	// CUSUMDrift and CUSUMLimit, scores a pattern broken for hours (a holiday, a storm) that the
	// value and context scores miss: the values are ordinary, only their time is wrong. Its score
	// rests with value rarity. A week catches weekday/weekend patterns as well as daily ones; a
	// day (24) mixed weekdays with weekends and lost most of the gain. 0 disables it.
	SeasonHours float64 `json:"season_hours" yaml:"season_hours"`
	// SeasonSlots bounds the seasonal memory: the period is cut into slots of the sampling
	// interval (the median gap between warm-up timestamps), but never more than SeasonSlots of
	// them (a week of one-minute points shares a slot per five minutes).
	SeasonSlots int `json:"season_slots" yaml:"season_slots"`
	// SeasonRate is the weight of the latest period in a slot's baseline (an EWMA over periods):
	// ½ follows a pattern that drifts week to week while averaging out one week's noise. Each
	// update is clipped at 3 residual scales, so an incident barely moves the baseline and does
	// not come back as a false echo one period later.
	SeasonRate float64 `json:"season_rate" yaml:"season_rate"`
	// SeasonGate switches the seasonal score on only for series that have a season: while the
	// residual scale against the seasonal baseline is below SeasonGate times the plain scale of
	// the series (the pattern explains much of the variation). On spiky or aperiodic series the
	// residual is as wide as the series or wider and the score stays off; without the gate it
	// added false alarms on tweet and cloud series. The residual scale must also have a
	// warm-up's worth of residuals behind it.
	SeasonGate float64 `json:"season_gate" yaml:"season_gate"`
}

// DefaultConfig returns the frozen defaults.
func DefaultConfig() Config {
	return Config{
		Warmup:         300,
		Bins:           40,
		Levels:         12,
		Memory:         4000,
		CUSUMDrift:     2,
		CUSUMLimit:     25,
		AlarmThreshold: 0.95,
		Rest:           400,
		ContextLags:    7,
		ContextSeen:    0.5,
		SeenCap:        0.9,
		UnseenSpread:   4,
		RestMargin:     0.2,
		RestQuietSpeed: 7,
		SeasonHours:    168,
		SeasonSlots:    2048,
		SeasonRate:     0.5,
		SeasonGate:     0.6,
	}
}

// ErrInvalidConfig is wrapped by every Validate error.
var ErrInvalidConfig = errors.New("single: invalid config")

// Validate reports the first unusable parameter.
func (c Config) Validate() error {
	switch {
	case c.Warmup < 10:
		return fmt.Errorf("%w: warmup %d: need at least 10 points to learn a baseline", ErrInvalidConfig, c.Warmup)
	case c.Bins < 4 || c.Bins > 1000:
		return fmt.Errorf("%w: bins %d: want 4..1000", ErrInvalidConfig, c.Bins)
	case c.Levels < 2 || c.Levels > 100:
		return fmt.Errorf("%w: levels %d: want 2..100", ErrInvalidConfig, c.Levels)
	case c.Memory < c.Warmup:
		return fmt.Errorf("%w: memory %d shorter than warmup %d", ErrInvalidConfig, c.Memory, c.Warmup)
	case !(c.CUSUMDrift >= 0) || !(c.CUSUMLimit > 0):
		return fmt.Errorf("%w: cusum drift %v must be ≥ 0 and limit %v > 0", ErrInvalidConfig, c.CUSUMDrift, c.CUSUMLimit)
	case !(c.AlarmThreshold > 0 && c.AlarmThreshold <= 1):
		return fmt.Errorf("%w: alarm threshold %v: want (0, 1]", ErrInvalidConfig, c.AlarmThreshold)
	case c.Rest < 0:
		return fmt.Errorf("%w: rest %d must be ≥ 0", ErrInvalidConfig, c.Rest)
	case c.ContextLags < 0 || c.ContextLags > 12:
		return fmt.Errorf("%w: context lags %d: want 0..12 (the longest lag is 2^(lags−1) points)", ErrInvalidConfig, c.ContextLags)
	case !(c.ContextSeen > 0):
		return fmt.Errorf("%w: context seen %v must be > 0", ErrInvalidConfig, c.ContextSeen)
	case !(c.SeenCap > 0 && c.SeenCap < 1):
		return fmt.Errorf("%w: seen cap %v: want (0, 1)", ErrInvalidConfig, c.SeenCap)
	case !(c.UnseenSpread > 0):
		return fmt.Errorf("%w: unseen spread %v must be > 0", ErrInvalidConfig, c.UnseenSpread)
	case !(c.RestMargin >= 0 && c.RestMargin < 1):
		return fmt.Errorf("%w: rest margin %v: want [0, 1)", ErrInvalidConfig, c.RestMargin)
	case c.RestQuietSpeed < 0:
		return fmt.Errorf("%w: rest quiet speed %d must be ≥ 0 (0 or 1: ordinary points do not shorten a rest)", ErrInvalidConfig, c.RestQuietSpeed)
	case !(c.SeasonHours >= 0 && c.SeasonHours <= 24*366):
		return fmt.Errorf("%w: season hours %v: want 0 (off) up to a year", ErrInvalidConfig, c.SeasonHours)
	case c.SeasonHours > 0 && c.SeasonHours*3600 < 1:
		return fmt.Errorf("%w: season hours %v: a period shorter than a second", ErrInvalidConfig, c.SeasonHours)
	case c.SeasonHours > 0 && (c.SeasonSlots < 2 || c.SeasonSlots > 1<<16):
		return fmt.Errorf("%w: season slots %d: want 2..65536", ErrInvalidConfig, c.SeasonSlots)
	case c.SeasonHours > 0 && !(c.SeasonRate > 0 && c.SeasonRate <= 1):
		return fmt.Errorf("%w: season rate %v: want (0, 1]", ErrInvalidConfig, c.SeasonRate)
	case c.SeasonHours > 0 && !(c.SeasonGate > 0):
		return fmt.Errorf("%w: season gate %v must be > 0", ErrInvalidConfig, c.SeasonGate)
	}
	return nil
}

// Detector is the streaming detector. It is not safe for concurrent use: one per series.
type Detector struct {
	cfg Config
	n   int
	// last timestamp seen; out-of-order points are scored 0 and do not update state.
	last time.Time

	warm  []float64   // first half of warm-up: values, dropped once the grid is set
	warmT []time.Time // and their timestamps, for the sampling interval

	// Seasonal baseline (nil sBase: off). Slot s covers phases [s·slotW, (s+1)·slotW) of the period.
	period, slotW int64     // in nanoseconds
	sBase         []float64 // per slot: EWMA over periods of the values in it
	sSeen         []bool    // per slot: has a value
	sRate         float64   // EWMA weight per point (SeasonRate shared by the points of a slot)
	sScale        float64   // robust scale of the residuals v − sBase
	sCount        int       // residuals behind sScale
	sHi, sLo      float64   // seasonal CUSUM
	slot          int       // the slot of the current point

	lo, width   float64 // grid: bin b covers [lo + b·width, lo + (b+1)·width)
	hist        []float64
	histTotal   float64
	lvlWidth    float64
	nLevels     int     // Levels below, inside and above the warm-up range
	decay       float64 // per-step multiplier of the histograms' weights
	weight      float64 // current weight of a new observation (grows instead of decaying all counts)
	mean, scale float64 // slow baseline for the CUSUM
	cusHi       float64
	cusLo       float64

	prevRaw   float64 // raw score of the previous scored point
	restPeak  float64 // highest raw score since the alarm that started the rest
	rest      int     // points left in the rest of value rarity and context novelty after an alarm
	restShift int     // points left in the rest of the level-shift score after an alarm

	ctx     []float64 // context pair counts: [lag][level then][level now]
	ring    []int     // last levels, ring buffer
	ringPos int
	filled  int
}

// New returns a detector; an invalid config is replaced by DefaultConfig (call Validate first to
// report it).
func New(cfg Config) *Detector {
	if cfg.Validate() != nil {
		cfg = DefaultConfig()
	}
	return &Detector{cfg: cfg, warm: make([]float64, 0, cfg.Warmup)}
}

// Config returns the configuration in use.
func (d *Detector) Config() Config { return d.cfg }

// Step scores one point. Points must come in time order (repeated timestamps are fine); a point
// before the previous one, or a NaN/Inf value, is ignored (score 0, no alarm) so bad input never
// corrupts the state.
func (d *Detector) Step(ts time.Time, v float64) (score float64, alarm bool) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	if d.n > 0 && ts.Before(d.last) {
		return 0, false
	}
	d.last = ts
	d.n++
	d.setSlot(ts)
	if d.hist == nil {
		d.warm = append(d.warm, v)
		d.warmT = append(d.warmT, ts)
		if len(d.warm) >= d.cfg.Warmup/2 {
			d.initGrid()
		}
		return 0, false
	}
	vs, ss := d.surprise(v)
	d.update(v)
	if d.n < d.cfg.Warmup { // second half of warm-up: the histograms fill before anything is scored
		return 0, false
	}
	raw := max(vs, ss)
	score = raw
	if d.rest > 0 || d.restShift > 0 {
		fv, fs := d.damp(&d.rest), d.damp(&d.restShift)
		// A point far more surprising than anything since the alarm is a new incident, not an echo
		// of the last one: its score passes undamped (tail 1 − score below RestMargin of the peak's).
		// It must also rise from an ordinary point (the previous raw score at most SeenCap): the
		// climbing edge of one spike is one incident, not an alarm per point.
		if d.cfg.RestMargin <= 0 || !(1-raw < d.cfg.RestMargin*(1-d.restPeak)) || d.prevRaw > d.cfg.SeenCap {
			score = max(vs*fv, ss*fs)
		}
		d.restPeak = max(d.restPeak, raw)
		// An ordinary point is a sign the incident is over: the value and context rest runs out
		// faster, while the shift rest runs its full length (see RestQuietSpeed).
		if raw <= d.cfg.SeenCap && d.cfg.RestQuietSpeed > 1 {
			d.rest = max(0, d.rest-(d.cfg.RestQuietSpeed-1))
		}
	}
	d.prevRaw = raw
	alarm = score >= d.cfg.AlarmThreshold
	if alarm {
		d.rest = d.cfg.Rest
		d.restShift = d.cfg.Rest
		d.restPeak = raw
	}
	return score, alarm
}

func (d *Detector) initGrid() {
	mn, mx := d.warm[0], d.warm[0]
	sum := 0.0
	for _, x := range d.warm {
		mn, mx = math.Min(mn, x), math.Max(mx, x)
		sum += x
	}
	span := mx - mn
	if span == 0 {
		span = math.Max(math.Abs(mx)*0.01, 1e-9)
		mn -= span / 2
	}
	b := d.cfg.Bins
	d.width = span / float64(b)
	d.lo = mn - float64(b)*d.width // b extra bins below, b inside, b above
	d.hist = make([]float64, 3*b)
	d.lvlWidth = span / float64(d.cfg.Levels)
	L := 3 * d.cfg.Levels
	d.nLevels = L
	d.decay = 1 - 1/float64(d.cfg.Memory)
	d.weight = 1
	d.mean = sum / float64(len(d.warm))
	for _, x := range d.warm {
		d.scale += math.Abs(x - d.mean)
	}
	d.scale = math.Max(d.scale/float64(len(d.warm))*1.25, span*1e-3)
	if d.cfg.ContextLags > 0 {
		d.ctx = make([]float64, d.cfg.ContextLags*L*L)
		d.ring = make([]int, 1<<(d.cfg.ContextLags-1)+1)
	}
	d.initSeason()
	for i, x := range d.warm {
		d.setSlot(d.warmT[i])
		d.update(x)
	}
	d.warm, d.warmT = nil, nil
}

// initSeason sizes the seasonal slots from the sampling interval seen in warm-up.
func (d *Detector) initSeason() {
	if d.cfg.SeasonHours <= 0 || len(d.warmT) < 3 {
		return
	}
	gaps := make([]time.Duration, 0, len(d.warmT)-1)
	for i := 1; i < len(d.warmT); i++ {
		gaps = append(gaps, d.warmT[i].Sub(d.warmT[i-1]))
	}
	slices.Sort(gaps)
	dt := max(int64(gaps[len(gaps)/2]), 1)
	period := int64(d.cfg.SeasonHours*3600) * int64(time.Second) // whole seconds: see setSlot
	slotW := max(dt, (period+int64(d.cfg.SeasonSlots)-1)/int64(d.cfg.SeasonSlots))
	n := (period + slotW - 1) / slotW
	if n < 2 { // sampled more coarsely than the period: no phase to compare
		return
	}
	d.period, d.slotW = period, slotW
	d.sBase = make([]float64, n)
	d.sSeen = make([]bool, n)
	d.sRate = d.cfg.SeasonRate * math.Min(1, float64(dt)/float64(slotW))
	// The plain scale stands in for the residual scale until residuals come, weighted as half a
	// warm-up of them: a seasonal score never starts from a scale fitted to a handful of points.
	d.sScale = d.scale
}

// setSlot sets the seasonal slot of a point at ts. The phase is taken from whole seconds modulo
// the period, so any timestamp (even the zero time) maps without overflow.
func (d *Detector) setSlot(ts time.Time) {
	if d.period == 0 {
		return
	}
	ps := d.period / int64(time.Second)
	sec := ((ts.Unix() % ps) + ps) % ps
	ph := sec*int64(time.Second) + int64(ts.Nanosecond())
	d.slot = int(min(ph/d.slotW, int64(len(d.sBase)-1)))
}

func (d *Detector) bin(v float64) int {
	return clamp(int(math.Floor((v-d.lo)/d.width)), 0, len(d.hist)-1)
}

func (d *Detector) level(v float64) int {
	L := d.nLevels
	return clamp(int(math.Floor((v-d.lo)/d.lvlWidth))-2*d.cfg.Levels+L/3, 0, L-1)
}

// cusumRun bounds the CUSUM at cusumRun·CUSUMLimit, so that it forgets a shift it has already
// reported within a few limits' worth of points once the baseline catches up.
const cusumRun = 4

func clamp(x, lo, hi int) int { return max(lo, min(hi, x)) }

// surprise is the raw surprise of v in [0, 1] against the state before v.
func (d *Detector) surprise(v float64) (value, shift float64) {
	// Value rarity: mass in bins no more likely than v's own bin.
	c := d.hist[d.bin(v)]
	rare := 0.0
	for _, h := range d.hist {
		if h <= c {
			rare += h
		}
	}
	sv := math.Min(1, -math.Log10(math.Max(rare/d.histTotal, 1e-4))/4)
	sv *= d.cfg.SeenCap
	if c < 0.5*d.weight { // an (almost) unseen bin: graded by the distance to the seen values
		b := d.bin(v)
		dist := len(d.hist)
		for i, h := range d.hist {
			if h >= 0.5*d.weight {
				dist = min(dist, max(i-b, b-i))
			}
		}
		sv = d.cfg.SeenCap + (1-d.cfg.SeenCap)*math.Tanh(float64(dist)/d.cfg.UnseenSpread)
	}
	// Level shift: CUSUM of robust z against a slow baseline.
	z := (v - d.mean) / d.scale
	hi := math.Max(0, d.cusHi+z-d.cfg.CUSUMDrift)
	lo := math.Max(0, d.cusLo-z-d.cfg.CUSUMDrift)
	// The CUSUM may run on to cusumRun·h; below h it scores like a seen value (up to SeenCap), past h
	// it climbs towards 1 as unseen values do. A CUSUM that merely reached h (a long bump of an
	// ordinary cycle) so stays below a far larger shift, instead of both saturating at 1.
	h := d.cfg.CUSUMLimit
	d.cusHi, d.cusLo = math.Min(hi, cusumRun*h), math.Min(lo, cusumRun*h)
	cus := math.Max(d.cusHi, d.cusLo)
	sc := cus / h * d.cfg.SeenCap
	if cus >= h {
		sc = d.cfg.SeenCap + (1-d.cfg.SeenCap)*math.Tanh((cus-h)/h)
	}
	// Context novelty: the share of (level then, level now) pairs never seen.
	sn := 0.0
	if d.ctx != nil && d.filled > 0 {
		sn = d.novelty(v)
	}
	// The seasonal score rests with value rarity, not with the level shift: a broken pattern is
	// over when the series is back to ordinary points (scored in the shift rest it lost a third
	// of its gain to second incidents hidden by the long rest).
	return max(sv, sn, d.seasonal(v)), sc
}

const (
	// seasonFloor bounds the residual scale below, relative to the plain scale: an exactly
	// repeating pattern does not make a rounding-sized deviation infinitely surprising.
	seasonFloor = 0.05
	// seasonClip bounds a baseline update, in residual scales (see SeasonRate).
	seasonClip = 3
)

// seasonal runs the seasonal CUSUM on v's residual against its slot's baseline and grades it.
func (d *Detector) seasonal(v float64) float64 {
	if d.sBase == nil || !d.sSeen[d.slot] {
		return 0
	}
	if d.sCount < d.cfg.Warmup || d.sScale >= d.cfg.SeasonGate*d.scale {
		d.sHi, d.sLo = 0, 0
		return 0
	}
	z := (v - d.sBase[d.slot]) / math.Max(d.sScale, seasonFloor*d.scale)
	k, h := d.cfg.CUSUMDrift, d.cfg.CUSUMLimit
	d.sHi = math.Min(math.Max(0, d.sHi+z-k), cusumRun*h)
	d.sLo = math.Min(math.Max(0, d.sLo-z-k), cusumRun*h)
	cus := math.Max(d.sHi, d.sLo)
	if cus < h {
		return cus / h * d.cfg.SeenCap
	}
	return d.cfg.SeenCap + (1-d.cfg.SeenCap)*math.Tanh((cus-h)/h)
}

// damp counts one point of a rest off *left and returns the factor on a score at that point: from
// about 0 right after the alarm up to ½ on its last point; 1 (undamped) once the rest is over.
func (d *Detector) damp(left *int) float64 {
	if *left <= 0 {
		return 1
	}
	*left--
	return 0.5 * (1 - float64(*left)/float64(d.cfg.Rest+1))
}

// update adds v to the decaying summaries.
func (d *Detector) update(v float64) {
	d.weight /= d.decay
	if d.weight > 1e100 { // renormalise before the growing weight overflows
		for i := range d.hist {
			d.hist[i] /= d.weight
		}
		for i := range d.ctx {
			d.ctx[i] /= d.weight
		}
		d.histTotal /= d.weight
		d.weight = 1
	}
	d.hist[d.bin(v)] += d.weight
	d.histTotal += d.weight
	d.addContext(d.level(v))
	a := 1 / float64(d.cfg.Memory)
	d.mean += a * (v - d.mean)
	d.scale += a * (math.Abs(v-d.mean)*1.25 - d.scale)
	if d.sBase != nil {
		d.updateSeason(v)
	}
}

// updateSeason moves v's slot baseline towards v and the residual scale towards |v − baseline|.
func (d *Detector) updateSeason(v float64) {
	s := d.slot
	if !d.sSeen[s] {
		d.sBase[s], d.sSeen[s] = v, true
		return
	}
	e := v - d.sBase[s]
	d.sCount++
	d.sScale += (math.Abs(e)*1.25 - d.sScale) / float64(min(d.sCount+d.cfg.Warmup/2, d.cfg.Memory))
	c := seasonClip * d.sScale
	d.sBase[s] += d.sRate * math.Max(-c, math.Min(c, e))
}

// lagged returns the level `lag` points back, or -1 if not yet known.
func (d *Detector) lagged(lag int) int {
	if lag > d.filled {
		return -1
	}
	n := len(d.ring)
	return d.ring[((d.ringPos-lag)%n+n)%n]
}

// novelty is the fraction of v's context pairs not seen (decayed count below ContextSeen).
func (d *Detector) novelty(v float64) float64 {
	L := d.nLevels
	l := d.level(v)
	unseen, n := 0, 0
	for k := 0; k < d.cfg.ContextLags; k++ {
		p := d.lagged(1 << k)
		if p < 0 {
			break
		}
		n++
		if d.ctx[(k*L+p)*L+l] < d.cfg.ContextSeen*d.weight {
			unseen++
		}
	}
	if n == 0 {
		return 0
	}
	return d.cfg.SeenCap * float64(unseen) / float64(n)
}

func (d *Detector) addContext(l int) {
	if d.ctx == nil {
		return
	}
	L := d.nLevels
	for k := 0; k < d.cfg.ContextLags; k++ {
		p := d.lagged(1 << k)
		if p < 0 {
			break
		}
		d.ctx[(k*L+p)*L+l] += d.weight
	}
	d.ringPos = (d.ringPos + 1) % len(d.ring)
	d.ring[d.ringPos] = l
	d.filled = min(d.filled+1, len(d.ring)-1)
}
