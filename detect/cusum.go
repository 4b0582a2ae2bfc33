package detect

import (
	"math"
	"slices"
)

// warmupCap bounds how many bucket values a robust reference collects before it freezes; it is
// a fixed array so a series' memory does not grow, allocated on the first value and released
// once the reference is frozen: most series never report cpu or memory, and a frozen reference
// needs only its center and scale.
const warmupCap = 32

// robustRef is a median/MAD reference frozen after a warm-up. Frozen on purpose: a reference that
// kept adapting would follow a slow memory leak and never see it.
type robustRef struct {
	vals          *[warmupCap]float32 // nil before the first value and once ready
	k             uint8
	ready         bool
	center, scale float64
}

// add feeds one bucket value until need values are in, then freezes the reference. The scale is
// 1.4826·MAD (the normal-consistent MAD), floored at minRel·|center| so a perfectly flat warm-up
// does not make every later wiggle enormous.
func (r *robustRef) add(v float64, need int, minRel float64) {
	if r.ready {
		return
	}
	if r.vals == nil {
		r.vals = new([warmupCap]float32)
	}
	r.vals[r.k] = float32(v)
	r.k++
	if int(r.k) < need {
		return
	}
	vals := make([]float64, r.k)
	for i := range vals {
		vals[i] = float64(r.vals[i])
	}
	r.center = median(vals)
	for i := range vals {
		vals[i] = math.Abs(vals[i] - r.center)
	}
	r.scale = math.Max(1.4826*median(vals), math.Max(minRel*math.Abs(r.center), 1e-9))
	r.ready, r.vals = true, nil
}

func median(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// cusum is a one-sided CUSUM of standardised deviations: s = max(0, s + z - k), firing at h.
// While firing, s is capped at h so that recovery (s back to 0) takes a bounded time.
type cusum struct {
	s      float64
	firing bool
	start  int64 // first bucket of the current excursion (s left 0)
}

func (c *cusum) update(z, k, h float64, b int64) rateVerdict {
	if c.s == 0 {
		c.start = b
	}
	c.s = math.Max(0, c.s+z-k)
	switch {
	case !c.firing && c.s >= h:
		c.firing = true
		c.s = h
		return verdictFired
	case c.firing && c.s == 0:
		c.firing = false
		return verdictRecovered
	case c.firing:
		c.s = math.Min(c.s, h)
	}
	return verdictNone
}

// ewma tracks a slowly moving mean (a line's request rate), following daily cycles while a
// sudden drop stands out against it. With a trend (Holt's linear method) it follows a slope too:
// a plain EWMA lags a rate that falls steadily, the evening side of a daily cycle, by its slope
// times its time constant, and the lag reads as a drop.
type ewma struct {
	mean  float64 // the level, after the last value
	trend float64 // per value; 0 without a trend
	n     int
	ready bool
}

// forecast is the expected next value: the level moved on by the trend.
func (e *ewma) forecast() float64 {
	return e.mean + e.trend
}

// add folds v in. Until 1/alpha values are in, the weight is 1/n (a plain running mean), so the
// first bucket does not dominate the estimate for a whole half-life. beta smooths the trend (0:
// none); it is learnt once the level is ready, from the level's moves.
func (e *ewma) add(v, alpha, beta float64, warmup int) {
	e.n++
	prev := e.mean
	if e.ready {
		e.mean = e.forecast()
	}
	e.mean += max(alpha, 1/float64(e.n)) * (v - e.mean)
	if e.ready {
		e.trend += beta * (e.mean - prev - e.trend)
	}
	if e.n >= warmup {
		e.ready = true
	}
}
