package detect

import (
	"math"
	"slices"

	"github.com/DataDog/sketches-go/ddsketch"
)

// Drift: how much a series' latency exceedances vary from one epoch to the next.
//
// Why: a traffic mix wanders. The share of heavy customers, large carts or uncached queries
// drifts over minutes, and with it the share of requests above the tail's thresholds. Every
// version serves the same mix, so after a deploy the new version's p99 share may stand at 1.8
// times the baseline's for minutes without any change of the code's: with the slow path's
// share times a log-normal factor of σ 0.6 that wanders with a time constant of a minute, 24
// of 100 healthy deploys of a version that had served an hour were rolled back at 50 req/s,
// and a series no deploy touched paged in 10 of 100 runs, on the tail's tests. Neither the
// latency dispersion (a second's requests varying together) nor the excursions (a run of
// seconds standing four deviations out) see it: it never stands out in any one second, and it
// lasts longer than any window. What tells it from a regression is only the baseline's own
// history over minutes: its share above a threshold moved between epochs many times as far as
// sampling would move it.
//
// So each series measures, at the end of every epoch, the Pearson residuals of the epoch's
// latencies above each tested quantile's threshold (the latency dispersion's, read at each
// bucket's load) against the share the epoch the thresholds came from held above them, and
// against the share the epoch before that one held above the same thresholds, each allowing
// for that share's own sampling error; the epoch's residual is their mean. Independent
// latencies in a steady mix give 1 on average (each a χ² of one degree of freedom, the two
// correlated by the epoch's own count); a mix that wanders gives about 1 + m·v for m latencies
// expected above the threshold in an epoch and v the variance of the mix's factor between
// epochs. Two epochs back sees a wander slower than an epoch, which has moved less between
// neighbours than it moves between a baseline and the minutes after a deploy (with a time
// constant of five minutes, epochs two apart differ with 1.8 times the variance of
// neighbours); and two residuals an epoch estimate the drift of a few latencies above the
// threshold (60 an epoch at p99 and 20 req/s) with less noise. Over the last driftMemory
// completed epochs, the mean residual without the largest 40 % (driftTrimmed, driftTrim),
// read as a multiple of what independent latencies give, 1 up to what they exceed once in
// twenty series and shrunk towards 1 by that margin above it (driftOf), is the variance of an
// epoch's count beyond independent requests': the latency dispersion (latencyDispersion) is
// the larger of it and the per-second one, and the latency tests divide their evidence by it,
// as by the per-second one. That is the quasi-likelihood's evidence at the epoch's time
// scale: a regression must then stand out against how far the mix itself wanders, which for a
// tail-only regression on such a service takes minutes, and not seconds.
//
// The epochs' exceedances are counted whether or not a test of the series fires (unlike the
// per-second dispersion's): which of its tests fire depends on history older than any replay's
// warm-up (its own profile's), and the drift is read by every baseline frozen from it. Leaving
// out the largest residuals is what keeps an incident, or a regression no deploy made, from
// passing for a wandering mix for the next 50 minutes.
const (
	// driftMemory is how many completed epochs the drift remembers: 50 minutes at the default
	// epoch, which a replay that warms up 65 minutes sees whole, with the two epochs the oldest
	// one is compared with (Config.ReplayWarmup). Five epochs, whose mean residual of a
	// wandering mix came out at a fifth of its worth in one series in five, left 6 of 40
	// healthy deploys rolled back at 20 req/s.
	driftMemory = 10
	// driftMinEpochs is how many measured epochs the drift needs before it is read.
	driftMinEpochs = 3
	// driftMinExpected is how many latencies an epoch must be expected to hold above a
	// quantile's threshold for its residual there to be measured: p99.9 from about 70 req/s
	// on, p99.5 from about 13 (a threshold is a sketch bin's edge, a little above its quantile:
	// 0.083 % of latencies lie above p99.9's, 0.97 % above p99's, about 0.45 % above p99.5's),
	// though below about 33 req/s p99.5 is measured at a substitute (driftSubstituteCount).
	// Fewer tell a drift from chance too poorly to be worth an incident's price (readDrift):
	// with the margin of the time (one steady series in ninety, driftTrim), p99.9 measured on
	// 15 latencies an epoch at 50 req/s read above 1 in 109 of 300 steady series half an hour
	// after a four-minute incident, and in 7 of 300 without one. Such a quantile takes the drift
	// of the quantile below it, scaled to its share, or where that one lies far below it (p90
	// under p99.5), is measured at a substitute threshold that holds enough (placeSubstitute).
	// It was 30 while p99 was tested (p99 from about 10 req/s). With
	// p99.5, at 30 the wander at 20 req/s rolled back 50 of 1 000 healthy deploys, at 25 21 of
	// 1 000 but 43 at 15 req/s, at 18 22 at 15 req/s (docs/design-notes.md).
	driftMinExpected = 18
	// driftSubstituteCount is how many latencies an epoch must hold above a quantile's
	// threshold for a quantile above it to be measured at a substitute (placeSubstitute), and
	// how many the completed epoch held above the substitute: two and a half times
	// driftMinExpected, 45. The drift is read off ten residuals, one an epoch, and how well
	// each measures a wander grows with the latencies it counts: on a wandering mix at 15 and
	// 20 req/s (20 and 27 latencies an epoch above p99.5's threshold), p99.5's own drift read
	// under 1.2 in 9 of 40 series, and measured at a substitute that holds 45, in 3 of 40.
	// Healthy deploys rolled back on the wander, of 1 000 (seed 1): at 15 and 20 req/s 20 and
	// 14 with p99.5 measured at its own threshold, 9 and 8 at a substitute; at 10 and 5 req/s,
	// 12 and 6 with a substitute that holds 22 (a quarter more than driftMinExpected, which
	// the next epoch, counted against it, must hold), 12 and 8 with one that holds 45.
	driftSubstituteCount = 2.5 * driftMinExpected
	// driftSubstituteShare is how far a quantile's share must lie below the measured quantile's
	// under it to be measured at a substitute (placeSubstitute) rather than take that one's
	// drift scaled: a tenth. p99.9 above a measured p99.5 (a fifth) takes p99.5's, as it did:
	// measured at a substitute on 22 latencies an epoch at 50 req/s, half an hour after a
	// four-minute incident that raises its share fifteenfold it read drifts up to 2.6, where
	// TestDriftSurvivesAnIncident allows 1.2. p99.5 above p90 (a twentieth) is measured at one
	// below about 33 req/s, where its own threshold holds fewer than driftSubstituteCount.
	driftSubstituteShare = 0.1
	// driftScale codes a residual in a byte as log2(1 + chi)·driftScale, and a drift as
	// log2(φ)·driftScale: within 2.2 %, up to 65 535.
	driftScale = 16
)

// drift is a series' epoch-to-epoch variation of its latency exceedances (see above).
type drift struct {
	// share is the share of the epoch the thresholds latThr were read from above each (0: not
	// placed), and n how many latencies that epoch held: what the current epoch's exceedances
	// are expected at, and how well that share is known. share2 and n2 are the same of the
	// epoch before it, above the same thresholds (n2 0: the series did not serve it).
	share, share2 [maxQuantiles]float32
	n, n2         float32
	// x counts the current epoch's latencies above each threshold, of xn latencies.
	x  [maxQuantiles]float32
	xn float32
	// chi is, newest first, each remembered completed epoch's coded residual per quantile (see
	// driftScale); bit q of on says it was measured, and bit 4 + q that it was measured at the
	// quantile's substitute (placeSubstitute).
	chi [driftMemory][maxQuantiles]uint8
	on  [driftMemory]uint8
	// phi is each quantile's drift as the remembered epochs give it (driftDispersion), coded
	// as log2(φ)·driftScale and set when they change: the latency tests read it as every
	// bucket closes. Bytes: with float32s the series would outgrow its allocation size.
	phi [maxQuantiles]uint8
	// sub says which quantile's slot measures its drift at a substitute threshold
	// (placeSubstitute): bits 0–2 are 1 + that quantile (0: none), bits 4–5 the quantile whose
	// threshold the substitute is subOff sketch bins above.
	sub, subOff uint8
}

// substitute is the quantile whose drift s measures at a substitute threshold, and that
// threshold's bin index (ok false: none).
func (s *series) substitute() (q, idx int, ok bool) {
	if s.drift.sub&7 == 0 {
		return 0, 0, false
	}
	return int(s.drift.sub&7) - 1, int(s.latThr[s.drift.sub>>4&3]) + int(s.drift.subOff), true
}

// add adds a closed bucket of n latencies, x above each threshold of the quantiles on says
// (and above the substitute's, in its quantile's slot), to the current epoch of s's drift.
func (dr *drift) add(x *[maxQuantiles]float64, n float64, on uint8) {
	if dr.sub&7 > 0 {
		on |= 1 << (dr.sub&7 - 1)
	}
	if on == 0 {
		return
	}
	for q := range dr.x {
		if on&(1<<q) != 0 {
			dr.x[q] += float32(x[q])
		}
	}
	dr.xn += float32(n)
}

// endDrift ends the current epoch of s's drift, elapsed epochs before the one starting: its
// residuals are remembered elapsed-1 epochs back, and the epochs between, which s did not
// serve in, are unmeasured. Called before the thresholds are read off the epoch that completed
// (rotateDispersion).
func (d *Detector) endDrift(s *series, elapsed int64) {
	d.rememberDrift(s, elapsed)
	d.setDrift(s)
}

// rememberDrift is endDrift's change to the remembered epochs.
func (d *Detector) rememberDrift(s *series, elapsed int64) {
	dr := &s.drift
	k := int(min(max(elapsed, 1), driftMemory))
	copy(dr.chi[k:], dr.chi[:driftMemory-k])
	copy(dr.on[k:], dr.on[:driftMemory-k])
	for i := range k {
		dr.chi[i], dr.on[i] = [maxQuantiles]uint8{}, 0
	}
	n := float64(dr.xn)
	x := dr.x
	dr.x, dr.xn = [maxQuantiles]float32{}, 0
	if elapsed > driftMemory || n <= 0 || dr.n <= 0 {
		return
	}
	if dr.n2 <= 0 {
		return // no epoch two back: not measured, as every remembered residual is a pair's mean
	}
	i := k - 1
	for q := range d.cfg.LatencyQuantiles {
		p := float64(dr.share[q])
		sub := dr.sub&7 == uint8(q)+1
		if (s.latOn&(1<<q) == 0 && !sub) || p <= 0 || p >= 1 || n*p < driftMinExpected {
			continue
		}
		xq := float64(x[q])
		chi := (residual(xq, n, p, float64(dr.n)) + residual(xq, n, float64(dr.share2[q]), float64(dr.n2))) / 2
		dr.chi[i][q] = uint8(min(math.Round(math.Log2(1+chi)*driftScale), math.MaxUint8))
		dr.on[i] |= 1 << q
		if sub {
			dr.on[i] |= 1 << (4 + q)
		}
	}
}

// residual is the squared Pearson residual of x of n latencies above a threshold against the
// share p that m latencies of an earlier epoch held above it, the two compared as samples: the
// share is itself off by about √(p(1−p)/m), so the variance of the difference is the count's
// times 1 + n/m, at the share of both epochs together (which keeps a share that came out low by
// chance, on a few latencies at p99.9, from making a chance count look many deviations away).
// 0 when neither holds any.
func residual(x, n, p, m float64) float64 {
	pool := (x + m*p) / (n + m)
	if pool <= 0 || pool >= 1 {
		return 0
	}
	dv := x - n*p
	return dv * dv / (n * pool * (1 - pool) * (1 + n/m))
}

// startDrift starts an epoch of s's drift against the thresholds just read off sk, the epoch
// that completed: their share of sk above each (on: those placed), and of before, the epoch
// before it (nil: s did not serve it).
func (d *Detector) startDrift(s *series, sk *ddsketch.DDSketch, on uint8, before *history) {
	dr := &s.drift
	dr.share, dr.n = [maxQuantiles]float32{}, float32(sk.GetCount())
	dr.share2, dr.n2 = [maxQuantiles]float32{}, 0
	dr.sub = 0
	if on == 0 || dr.n <= 0 {
		return
	}
	d.sharesAbove(s, sk, on, &dr.share)
	d.placeSubstitute(s, sk, on)
	if before == nil || before.n <= 0 {
		return
	}
	// Once an epoch, per series: the completed epoch's sketch is kept encoded. Decoded, it may
	// span more bins than a bucket's, so it is left to the collector rather than pooled for
	// the buckets (8 153 → 8 192 B per series in TestBenchFigures when it was).
	b := d.sk.new()
	before.mergeSketchInto(d.sk, b)
	if dr.n2 = float32(b.GetCount()); dr.n2 > 0 {
		d.sharesAbove(s, b, on, &dr.share2)
		if q, idx, ok := s.substitute(); ok {
			dr.share2[q] = float32(fractionAbove(b, idx))
		}
	}
}

// placeSubstitute places, for the epoch starting, a substitute threshold for the lowest tested
// quantile above the highest one whose epoch held driftSubstituteCount latencies above it, when
// its share is under a tenth of that one's (driftSubstituteShare): the highest bin edge of sk,
// the epoch that completed, above which it held driftSubstituteCount latencies. The quantile's
// slot of the drift then measures its residuals there, flagged as a substitute's, and driftAt
// scales their drift to its share. Its own threshold is not measured meanwhile.
//
// Why: a quantile measured on too few latencies an epoch took the drift of the one below it,
// scaled to its share, the bound that holds when the share above the higher quantile wanders no
// more, relatively, than the share above the lower. Where the lower one is far below, that
// bound is all but 1: at 10 req/s p99.5 (13 latencies above it an epoch) took p90's, and on a
// mix whose 2 % slow path wanders, p90's share moves with a twenty-fifth of the slow share's
// relative variance, so the test at p99.5 was all but untempered and rolled back 34 of 1 000
// healthy deploys. The substitute (about p98.5 there, within the slow path) is measured on as
// many latencies as a drift needs to be read well, and lies as near the quantile as they
// allow. Where it falls below the wandering tail's start (p97 at 5 req/s, where the generated
// slow path is the top 2 %), it reads less than the wander, as the quantile below would.
func (d *Detector) placeSubstitute(s *series, sk *ddsketch.DDSketch, on uint8) {
	dr := &s.drift
	n := float64(dr.n)
	qs := d.cfg.LatencyQuantiles
	below := -1
	for q := range qs {
		if on&(1<<q) != 0 && n*float64(dr.share[q]) >= driftSubstituteCount && (below < 0 || qs[q] > qs[below]) {
			below = q
		}
	}
	if below < 0 {
		return
	}
	q := -1
	for j := range qs {
		if qs[j] > qs[below] && (q < 0 || qs[j] < qs[q]) {
			q = j
		}
	}
	if q < 0 || 1-qs[q] >= driftSubstituteShare*(1-qs[below]) {
		return
	}
	bs := bins(sk)
	idx, above := math.MinInt, 0.0
	for i := len(bs) - 1; i > 0; i-- {
		if above += bs[i].count; above >= driftSubstituteCount {
			idx = bs[i-1].index
			break
		}
	}
	base := int(s.latThr[below])
	if idx == math.MinInt || idx <= base {
		return
	}
	idx = min(idx, base+math.MaxUint8)
	dr.sub, dr.subOff = uint8(q)+1|uint8(below)<<4, uint8(idx-base)
	dr.share[q] = float32(fractionAbove(sk, idx))
}

// sharesAbove sets share to sk's share above each of s's thresholds that on says are placed.
func (d *Detector) sharesAbove(s *series, sk *ddsketch.DDSketch, on uint8, share *[maxQuantiles]float32) {
	var x [maxQuantiles]float64
	d.aboveThresholds(s, sk, 0, &x)
	n := sk.GetCount()
	for q := range d.cfg.LatencyQuantiles {
		if on&(1<<q) != 0 {
			share[q] = float32(x[q] / n)
		}
	}
}

// driftDispersion is s's drift at quantile q, as its remembered epochs last set it (readDrift).
func (d *Detector) driftDispersion(s *series, q int) float64 {
	return math.Exp2(float64(s.drift.phi[q]) / driftScale)
}

// setDrift sets s.drift.phi from the remembered epochs, after they changed.
func (d *Detector) setDrift(s *series) {
	for q := range d.cfg.LatencyQuantiles {
		s.drift.phi[q] = uint8(min(math.Round(math.Log2(d.readDrift(s, q))*driftScale), math.MaxUint8))
	}
}

// readDrift is how many times the variance of s's exceedances of quantile q over an epoch
// exceeds what independent latencies in a steady mix give (driftAt), and at least the drift of
// the nearest quantile below it that was measured, scaled to q's share: φ − 1 is an epoch's
// expected count above the threshold times the relative variance of the share, and the share
// above a higher quantile is the wandering tail's at least as much as the share above a lower
// one. That bound is what p99.9 takes where its epochs hold too few latencies above it
// (driftMinExpected: p99.9 holds 15 at 50 req/s, too few to tell a drift of 3 from chance),
// and a quantile far above the one below it is measured at a substitute instead
// (placeSubstitute). 1 when none was measured.
func (d *Detector) readDrift(s *series, q int) float64 {
	phi, _ := d.driftAt(s, q)
	qs := d.cfg.LatencyQuantiles
	below, belowPhi := -1, 1.0
	for j := range qs {
		if qs[j] < qs[q] && (below < 0 || qs[j] > qs[below]) {
			if p, ok := d.driftAt(s, j); ok {
				below, belowPhi = j, p
			}
		}
	}
	if below < 0 {
		return phi
	}
	return max(phi, 1+(belowPhi-1)*(1-qs[q])/(1-qs[below]))
}

// driftAt is quantile q's drift from its own epochs' residuals, or where fewer than
// driftMinEpochs were measured at its threshold, from those measured at its substitute
// (placeSubstitute), scaled to its share: φ − 1 times its share over the substitute's, as
// readDrift scales a lower quantile's. That bound assumes the share above q wanders, relatively,
// as the share above the substitute; where the substitute lies below the wandering tail's start,
// the share above it wanders less and the bound is low, as a lower quantile's is. The
// substitute's share is the latest one placed, or where none is placed now (a version that
// inherited its epochs, or a series whose traffic rose), what driftSubstituteCount makes it
// (none before the series has completed an epoch: the drift is then read unscaled, a little
// high, until it has). Whether driftMinEpochs were measured either way.
func (d *Detector) driftAt(s *series, q int) (float64, bool) {
	if phi, ok := d.driftMeasured(s, q, false); ok {
		return phi, true
	}
	phi, ok := d.driftMeasured(s, q, true)
	if !ok {
		return 1, false
	}
	dr := &s.drift
	share, r := 1-d.cfg.LatencyQuantiles[q], 1.0
	if dr.sub&7 == uint8(q)+1 && dr.share[q] > 0 {
		r = share / float64(dr.share[q])
	} else if dr.n > 0 {
		r = share * float64(dr.n) / driftSubstituteCount
	}
	return 1 + (phi-1)*min(r, 1), true
}

// driftMeasured is quantile q's drift from its own epochs' residuals measured at its threshold
// (sub false) or at its substitute (sub true), by driftOf, and whether driftMinEpochs of them
// were measured.
func (d *Detector) driftMeasured(s *series, q int, sub bool) (float64, bool) {
	if !d.cfg.LatencyDrift {
		return 1, false
	}
	var buf [driftMemory]float64
	chis := buf[:0]
	for i, on := range s.drift.on {
		if on&(1<<q) != 0 && (on&(1<<(4+q)) != 0) == sub {
			chis = append(chis, math.Exp2(float64(s.drift.chi[i][q])/driftScale)-1)
		}
	}
	if len(chis) < driftMinEpochs {
		return 1, false
	}
	return driftOf(chis), true
}

// driftOf is the drift that driftMinEpochs … driftMemory residuals give (driftMeasured): the
// mean of the k − driftTrimmed(k) smallest, as a multiple of its mean for independent
// latencies, x. It is 1 up to 1 + driftTrim's margin m, where one steady series in twenty
// reads it, and above that x − m²/(x − 1): 1 at the margin, rising twice as fast as x just past
// it, and within m²/(x − 1) of x beyond. It used to be x − m, at least 1, which reads every
// wandering series m low (at ten epochs 1.13: more than a third of a drift of 3), so its
// tail tests were tempered too little, the more so the fewer latencies its epochs hold above
// a threshold. The shrinkage keeps the steady series that read 1 at 1, and costs the few that
// cross the margin a drift about twice their excess over it. It sorts chis.
func driftOf(chis []float64) float64 {
	t := driftTrim[len(chis)-driftMinEpochs]
	x := trimmedMean(chis) / t.mean
	if x <= 1+t.margin {
		return 1
	}
	return x - t.margin*t.margin/(x-1)
}

// trimmedMean is the mean of the k − driftTrimmed(k) smallest of k residuals. It sorts chis.
func trimmedMean(chis []float64) float64 {
	slices.Sort(chis)
	kept := len(chis) - driftTrimmed(len(chis))
	var sum float64
	for _, chi := range chis[:kept] {
		sum += chi
	}
	return sum / float64(kept)
}

// driftTrimmed is how many of k residuals the drift leaves out, the largest: 40 % of them,
// rounded (four of nine or ten). An incident that spans an epoch's end raises the residuals of
// up to four epochs: the two it falls in, the one whose threshold it raised and the one
// compared with it two epochs back. Leaving out three, p99.9 (15 latencies above it an epoch
// at 50 req/s) still read up to 3.1 after a four-minute incident, and p99 ×2 half an hour
// after one missed 3 of 300 deploys within 5.5 minutes and took 62 s at p95; leaving out four,
// 300 of 300 at 9.3 s mean, 24 s p95. The price is on a wandering mix, whose drift reads
// higher: p99 ×2 there found in 285 of 300 instead of 290, 305 s p95 instead of 189 s.
func driftTrimmed(k int) int { return (2*k + 2) / 5 }

// driftTrim is, for k = driftMinEpochs … driftMemory epochs of independent latencies in a
// steady mix, the mean of the k − driftTrimmed(k) smallest residuals, and the margin by which
// that mean over its own exceeds 1 in one series in twenty (TestDriftTrim derives both). Each
// residual is the mean of two χ² of one degree of freedom, and neighbouring epochs' residuals
// are correlated (0.3 one epoch apart, 0.2 two apart): an epoch's latencies are both counted
// and, through the thresholds read off them, what the next two epochs are counted against.
// The first two tables drew each epoch's residual apart from the others': their means were
// 9 % low, and their margins, said to be exceeded once in a thousand and once in a hundred,
// are exceeded once in ninety and once in 22.
//
// Why twenty: the margin keeps a steady series from reading a drift, which would slow its
// tail tests, and every wandering series' drift reads that much lower, which rolls back its
// healthy deploys. On the suite's four quiet wandering rows (seeds 1 and 3, 300 runs of each),
// 40 of 2 400 healthy deploys or untouched series fired within 5.5 minutes at one in ninety
// (a margin of 2.3 for nine epochs, the first table), 28 at one in 22 (1.5, the second) and
// 28 at one in twenty, which found p99 ×2 there sooner (at least 50.4 and 47.1 s mean
// instead of 54.2 and 52.3 s), as its mean is no longer low. The steady rows did not move.
// At one in ten, 21; but then one steady series in ten reads a drift, and its tail tests wait
// on it (p99 +50 % half an hour after a tail incident, 25.2 → 25.9 s mean; design-notes.md).
var driftTrim = [driftMemory - driftMinEpochs + 1]struct{ mean, margin float64 }{
	{0.6294, 1.806}, {0.4627, 1.777}, {0.5067, 1.525}, {0.5430, 1.363},
	{0.4427, 1.356}, {0.4740, 1.232}, {0.4061, 1.223}, {0.4343, 1.132},
}

// driftBaseline makes the latency tests' baseline qt (a version's history, with the composite
// H0s latS, or a series' own profile, nil), read off src's latencies, know each quantile's rate
// only as well as src's epochs agreed on it: where the share drifted (driftDispersion φ > 1), a
// baseline's share is off from the mix's usual by as much as the epochs it spans wandered, and
// its counts above each threshold are worth 1/φ of independent ones, whatever its length (over
// many epochs, the variance of a count stays φ times its mean). Its rate is unchanged. Without
// that, a baseline frozen while the mix ran light is an offset against every later request,
// which a test that divides only the new version's evidence by φ still finds, given minutes.
func (d *Detector) driftBaseline(qt *quantileTests, latS *[maxQuantiles][2]rateParams, src *series) {
	for q := range d.cfg.LatencyQuantiles {
		phi := d.driftDispersion(src, q)
		if phi <= 1 {
			continue
		}
		qt.latP[q].xb, qt.latP[q].nb = qt.latP[q].xb/phi, qt.latP[q].nb/phi
		if latS != nil {
			for l := range latS[q] {
				latS[q][l].xb, latS[q][l].nb = latS[q][l].xb/phi, latS[q][l].nb/phi
			}
		}
	}
}

// inheritDrift gives s, a new version's series whose current epoch has just started, the
// epochs of drift src (the previous version on its line) measured: the traffic mix is the
// service's, not a version's, and a new version would otherwise know nothing of it until it
// had served four epochs, its own profile paging at the mix's wander in between. Its own
// epochs push them out as it serves.
func (d *Detector) inheritDrift(s, src *series) {
	// src's newest remembered epoch is the one before its current epoch; s's is the one before
	// s's. Epochs src did not rotate through since (it served none of them) are unmeasured.
	k := (s.cur.start - src.cur.start) / d.epochBuckets
	if k < 0 || k >= driftMemory {
		return
	}
	copy(s.drift.chi[k:], src.drift.chi[:driftMemory-k])
	copy(s.drift.on[k:], src.drift.on[:driftMemory-k])
	d.setDrift(s)
}

func (dr *drift) xfer(c *codec) {
	c.f32s(dr.share[:])
	c.f32(&dr.n)
	c.f32s(dr.share2[:])
	c.f32(&dr.n2)
	c.f32s(dr.x[:])
	c.f32(&dr.xn)
	for i := range dr.chi {
		for q := range dr.chi[i] {
			c.u8(&dr.chi[i][q])
		}
		c.u8(&dr.on[i])
	}
	for q := range dr.phi {
		c.u8(&dr.phi[q])
	}
	c.u8(&dr.sub)
	c.u8(&dr.subOff)
	if c.reading && c.err == nil && (dr.sub&7 > maxQuantiles || dr.sub&^0x37 != 0) {
		c.fail("a drift's substitute %#x names no quantile", dr.sub)
	}
}
