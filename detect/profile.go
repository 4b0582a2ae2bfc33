package detect

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"

	"github.com/scalpel-dev/scalpel/schemas"
)

// ownProfile is a series' own long-run profile: its error counts and latency sketch, decayed
// exponentially with a long half-life (OwnProfileHalfLife). It is the third kind of baseline,
// for regressions no deploy explains (a dependency broke, a flag flipped, a database got slow):
// the version and cohort baselines cannot see them, since nothing about the version changed.
//
// It starts once the series has served for OwnProfileWarmup, seeded from the series' recent
// history, then absorbs each closed bucket. It is frozen while the series fires (any error or
// latency test, against any baseline), so a regression does not teach itself to the reference;
// while frozen it does not decay either, so the reference stays what the series was before.
// The profile follows slow change (a daily cycle moves it by a few per cent an hour) and the
// sequential tests see fast change against it.
type ownProfile struct {
	lastB int64   // last bucket absorbed
	n     float64 // decayed requests
	// loadN and loadSvcN are the decayed requests of the series' component and of its service in
	// the buckets whose latencies the profile absorbed, and loadW those buckets, decayed:
	// loadN/loadW and loadSvcN/loadW are the loads the profile's latencies were served at
	// (usualLoads).
	loadN, loadSvcN, loadW float64
	errs                   [numCategories]float64
	sk                     *ddsketch.DDSketch // decayed latencies (counts are decayed request weights)

	// The last absorbed bucket's own counts, so a test compares a bucket with the profile as it
	// was before that bucket.
	bn    float64
	berrs [numCategories]float64

	latB int64 // bucket the latency thresholds were last set
	quantileTests
	exceed [maxQuantiles]float64 // the last closed bucket's requests above each threshold

	errT  [numCategories]rateTest
	latT  [maxQuantiles]rateTest
	latEp bool
}

// ownLatencyRefresh is how many buckets the latency thresholds of an own profile are kept
// between refreshes: the profile moves over an hour, so reading four quantiles off it every
// bucket would cost without changing anything.
const ownLatencyRefresh = 60

// Episode slots of the own-profile tests, after the version baseline's (series.eps).
const (
	epOwnError   = numCategories + 3
	epOwnLatency = epOwnError + numCategories
)

// ownTestName marks the anomaly IDs of own-profile tests, so an own-profile episode and a
// version-baseline episode of the same metric that start in the same bucket stay distinct.
const ownTestName = "own-profile"

// ownLabel is what Anomaly.BaselineVersion says for the own profile, e.g. "own profile (1h)".
func (d *Detector) ownLabel() string {
	return schemas.BaselineOwnProfile + " (" + shortDuration(time.Duration(d.cfg.OwnProfileHalfLife)) + ")"
}

// shortDuration renders 1h0m0s as 1h and 10m0s as 10m.
func shortDuration(v time.Duration) string {
	s := v.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// frozen reports whether any error or latency test of s is firing: the own profile then keeps
// what the series was before the episode.
func (s *series) frozen() bool {
	return anyFiring(s.errT[:], s.latT[:]) || s.own != nil && anyFiring(s.own.errT[:], s.own.latT[:])
}

// anyFiring reports whether any test of any group is firing.
func anyFiring(groups ...[]rateTest) bool {
	for _, ts := range groups {
		for i := range ts {
			if ts[i].firing {
				return true
			}
		}
	}
	return false
}

// ownClose runs when bucket b of s closes, before b joins the history: it starts the profile when
// the series has served long enough, counts b's latencies above the profile's thresholds and
// absorbs b (unless frozen).
func (d *Detector) ownClose(s *series, b *bucket) {
	if d.ownWarmup <= 0 {
		return
	}
	o := s.own
	if o == nil {
		if s.firstB == math.MaxInt64 || b.idx-s.firstB < d.ownWarmup {
			return
		}
		o = d.seedOwn(s, b.idx)
		s.own = o
	}
	frozen := s.frozen()
	if o.latOK && !frozen && b.idx-o.latB >= ownLatencyRefresh {
		d.ownThresholds(s, o, b.idx)
	}
	o.exceed = [maxQuantiles]float64{}
	if b.sk != nil && o.latOK {
		aboveEach(b.sk, &o.thr, len(d.cfg.LatencyQuantiles), d.bucketShift(s, b.idx, o.usualLoads(), true), &o.exceed)
		for q := range d.cfg.LatencyQuantiles {
			if !o.latQ[q] {
				o.exceed[q] = 0
			}
		}
	}
	o.bn, o.berrs = 0, [numCategories]float64{}
	if frozen {
		return
	}
	if gap := b.idx - o.lastB; gap > 0 {
		f := math.Exp2(-float64(gap) / d.ownHalfLife)
		o.n *= f
		for c := range o.errs {
			o.errs[c] *= f
		}
		if o.sk.GetCount() > 0 {
			_ = o.sk.Reweight(f) // f > 0: cannot fail
		}
		o.loadN *= f
		o.loadSvcN *= f
		o.loadW *= f
	}
	o.lastB = b.idx
	o.n += b.n
	o.bn = b.n
	for c := range o.errs {
		o.errs[c] += b.errs[c]
		o.berrs[c] = b.errs[c]
	}
	if b.sk != nil {
		d.sk.merge(o.sk, b.sk)
		o.loadN += s.load.closedN(b.idx)
		o.loadSvcN += s.svc.closedN(b.idx)
		o.loadW++
	}
}

// seedOwn starts a series' profile from its recent history (every epoch it keeps), so the
// own tests need not wait another warm-up to have a reference.
func (d *Detector) seedOwn(s *series, b int64) *ownProfile {
	o := &ownProfile{lastB: b - 1, sk: d.sk.new()}
	hs := s.epochs()
	// The component's and the service's loads over that history are not known bucket by bucket:
	// their usual rates stand for them, with the weight of the buckets the history spans, as its
	// latencies have theirs. Before the component's rate is known (a component too quiet to have
	// one yet) the profile's buckets alone make its loads; the service's is known by then (it
	// has had requests in every bucket the component has).
	if u := s.usualLoads(); u.comp > 0 {
		o.loadW = float64(max(b-max(s.firstB, hs[0].start), 1))
		o.loadN = u.comp * o.loadW
		o.loadSvcN = u.svc * o.loadW
	}
	for _, h := range hs {
		o.n += h.n
		for c := range o.errs {
			o.errs[c] += h.errs[c]
		}
		h.mergeSketchInto(d.sk, o.sk)
	}
	d.ownThresholds(s, o, b)
	return o
}

// ownThresholds reads the tested quantiles off s's profile o and sets the latency tests'
// hypotheses, as freeze does for a version baseline.
func (d *Detector) ownThresholds(s *series, o *ownProfile, b int64) {
	o.latB = b
	tn := d.tune(s.key.Service)
	if d.setQuantiles(tn, &o.quantileTests, o.sk, tn.latencyTolerance(refOwnProfile)); o.latOK {
		d.driftBaseline(&o.quantileTests, nil, s)
	}
}

// testOwn runs the own-profile tests of s on its just-closed bucket: the same sequential
// two-sample tests as against a version baseline, with the profile as the baseline side.
func (d *Detector) testOwn(s *series, out []schemas.Anomaly) []schemas.Anomaly {
	o := s.own
	if o == nil {
		return out
	}
	b := &s.closed
	tn := d.tune(s.key.Service)
	if n := o.n - o.bn; n >= float64(d.cfg.MinBaselineRequests) && b.n > 0 {
		for c := range o.errT {
			if !tn.tested[c] {
				continue
			}
			t := &o.errT[c]
			rp := d.errorParams(tn, o.errs[c]-o.berrs[c], n)
			// H0's rate pools only the current run with the profile: the profile already holds
			// every earlier bucket, and counting them twice would overstate what it knows.
			t.cn, t.cx = t.n, t.x
			// Tempered by the series' own dispersion, as a version baseline's tests are by the
			// baseline's (errorDispersion): without it, errors in clumps of five fired the own
			// test in 50 of 50 runs of a healthy series. The sums it reads stop while the series
			// fires (addDispersion), so a regression does not temper its own test.
			th := d.th
			th.temper = temperBy(d.errorDispersion(s, c))
			switch t.updateBaseline(&rp, b.errs[c], b.n, b.idx, &th) {
			case verdictFired:
				out = d.open(s, epOwnError+c, d.ownErrorAnomaly(s, c, &rp, n), out)
			case verdictRecovered:
				out = d.resolve(s, epOwnError+c, b.idx, fmt.Sprintf("%s error rate back within the series' own profile for %s",
					categoryName(c), d.quietFor(int(t.quietRun))), out)
			}
		}
	}
	if o.latOK && b.latN > 0 {
		anyFiring := false
		// A bucket of an excursion no longer than the series' own longest is inconclusive
		// (see excursion.go).
		aside := setAside(d.ownExcursion(s), s.exc.run) || d.serviceAside(s)
		for q := range d.cfg.LatencyQuantiles {
			if !o.latQ[q] || aside {
				anyFiring = anyFiring || o.latT[q].firing
				continue
			}
			t := &o.latT[q]
			t.cn, t.cx = t.n, t.x
			// Tempered by the series' own latency dispersion, as its error tests are by its
			// errors' (latencyDispersion). Once that is measured it is what holds back a stall's
			// requests, and the default cap on one update's evidence is lifted: the cap made
			// the own profile's test, whose runs are never the first, wait for a second bucket
			// (every latency ×2 at 20 req/s: 3.2 s on average with it, 1.5 s without).
			th := d.latTh
			phi, measured := d.latencyDispersionMeasured(s, q)
			th.temper = temperBy(phi)
			if measured && d.cfg.LatencyBucketCap == 0 {
				th.bucketCap = 0
			}
			v := t.updateBaseline(&o.latP[q], o.exceed[q], b.latN, b.idx, &th)
			if (v == verdictFired || t.firing) && !o.latEp {
				if a := d.ownLatencyAnomaly(s, q); a.Effect >= latencyGate(tn, refOwnProfile) {
					o.latEp = true
					out = d.open(s, epOwnLatency, a, out)
				}
			}
			anyFiring = anyFiring || t.firing
		}
		if o.latEp && !anyFiring {
			o.latEp = false
			out = d.resolve(s, epOwnLatency, b.idx, "latency back within the series' own profile", out)
		}
	}
	return out
}

// resetOwn ends every own-profile run of s (its traffic moved away).
func (s *series) resetOwn() {
	if o := s.own; o != nil {
		for c := range o.errT {
			o.errT[c].reset()
		}
		for q := range o.latT {
			o.latT[q].reset()
		}
		o.latEp = false
	}
}

// ownNote explains an own-profile anomaly.
func (d *Detector) ownNote() string {
	return fmt.Sprintf("no deploy changed this series: it is compared with its own profile, its history decayed with a half-life of %s and frozen while the series fires; a regression here comes from outside the version (a dependency, configuration, data or load)",
		shortDuration(time.Duration(d.cfg.OwnProfileHalfLife)))
}

func (d *Detector) ownErrorAnomaly(s *series, c int, rp *rateParams, n float64) schemas.Anomaly {
	t := &s.own.errT[c]
	a := d.baseAnomaly(s.key, schemas.MetricErrorRate, categoryName(c), t.runStart, s.closed.idx)
	a.ID = anomalyID(s.key, schemas.MetricErrorRate+"/"+ownTestName, categoryName(c), a.Window.From)
	a.ErrorCategory = categoryName(c)
	a.BaselineVersion = d.ownLabel()
	a.Test = "msprt-two-sample-" + ownTestName
	a.Observed = t.x / t.n
	a.Baseline = rp.rate()
	score, p, seqNote := t.evidence(&d.th)
	a.Statistic = score
	a.Score = ptr(score)
	a.PValue = p
	a.Samples = schemas.Samples{Observed: int64(t.n), Baseline: int64(n)}
	a.Effect = relEffect(a.Observed, a.Baseline, 1/math.Max(n, 1))
	// Which blocks the errors fall on, over the recent history; the profile keeps no per-block
	// counts, and each block series runs its own-profile test too.
	ev := d.errorEvidence(s, c, false)
	ev.BaselineBlocks = nil
	a.Evidence = withNotes(ev, a.Evidence.Notes)
	a.Evidence.Notes = append(a.Evidence.Notes, d.ownNote(),
		fmt.Sprintf("%s; H0: rate at most the profile's (%.4g errors in %.4g decayed requests), H1: ×%.3g, ×%.3g or ×%.3g",
			seqNote, rp.xb, rp.nb, rp.r[0], rp.r[1], rp.r[2]),
		fmt.Sprintf("%g errors in %g requests since %s", t.x, t.n, a.Window.From.Format(time.RFC3339)))
	if phi := d.errorDispersion(s, c); phi > 1 {
		a.Evidence.Notes = append(a.Evidence.Notes, clumpNote("the series'", c, phi))
	}
	return a
}

// ownLatencyAnomaly reports a latency regression against the own profile. The observed quantile
// is inferred from the run's exceedance rate (the latency at which the profile is exceeded as
// often as the run exceeded the threshold), not read off the recent history: that history also
// holds the minutes before the regression started, which would hide the shift for minutes.
func (d *Detector) ownLatencyAnomaly(s *series, q int) schemas.Anomaly {
	o := s.own
	t := &o.latT[q]
	label := quantileLabel(d.cfg.LatencyQuantiles[q])
	a := d.baseAnomaly(s.key, schemas.MetricLatency, label, t.runStart, s.closed.idx)
	a.ID = anomalyID(s.key, schemas.MetricLatency+"/"+ownTestName, label, a.Window.From)
	a.BaselineVersion = d.ownLabel()
	// No Mann-Whitney shift here: the recent history it would compare is mostly the minutes
	// before the regression, and would show no shift.
	a.Test = "msprt-exceedance-" + label + "-" + ownTestName
	score, p, seqNote := t.evidence(&d.th)
	a.Statistic = score
	a.Score = ptr(score)
	a.PValue = p
	a.Baseline = round3(o.qv[q])
	if frac := t.x / math.Max(t.n, 1); frac > 0 {
		if v, err := o.sk.GetValueAtQuantile(clamp(1-frac, 0, 1)); err == nil && v > 0 {
			a.Observed = round3(o.qv[q] * o.qv[q] / v)
		}
	}
	a.Effect = relEffect(a.Observed, a.Baseline, 1e-3)
	a.Samples = schemas.Samples{Observed: int64(t.n), Baseline: int64(o.sk.GetCount())}
	a.Evidence.Notes = append(a.Evidence.Notes, d.ownNote(),
		fmt.Sprintf("%s: %.4g of %g requests exceeded the profile's %s of %.4g ms (profile rate within the tolerance %.4g, H1 ×%.3g, ×%.3g or ×%.3g); observed %s inferred from that share",
			label, t.x/t.n, t.n, label, o.qv[q], o.latP[q].rate(), o.latP[q].r[0], o.latP[q].r[1], o.latP[q].r[2], label),
		seqNote)
	if phi := d.latencyDispersion(s, q); phi > 1 {
		a.Evidence.Notes = append(a.Evidence.Notes, latencyDispersionNote("the series'", label, phi, d.driftDispersion(s, q) >= phi, 0))
	}
	a.Evidence.Notes = d.excursionNotes(s, "the series'", d.ownExcursion(s), a.Evidence.Notes)
	if note := d.loadNote(o.usualLoads(), s); note != "" {
		a.Evidence.Notes = append(a.Evidence.Notes, note)
	}
	return a
}
