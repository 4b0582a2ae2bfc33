package detect

import (
	"math"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// test runs every test of s on its just-closed bucket and appends the anomalies that opened an
// episode.
func (d *Detector) test(s *series, out []schemas.Anomaly) []schemas.Anomaly {
	b := &s.closed
	r := s.ref

	// Memory: against the baseline version's reference when there is one, else the series' own
	// warm-up. CPU follows load (daily cycles), so it is only compared across a change.
	var baseMem, baseCPU *robustRef
	if r != nil {
		baseMem, baseCPU = &r.memRef, &r.cpuRef
	}
	if a, ok := d.testResource(s, &s.memRef, &s.memC, b.memSum, b.memN, baseMem, schemas.MetricMem, true); ok {
		out = append(out, a)
	}
	if a, ok := d.testResource(s, &s.cpuRef, &s.cpuC, b.cpuSum, b.cpuN, baseCPU, schemas.MetricCPU, false); ok {
		out = append(out, a)
	}

	if r == nil || !r.ok {
		return out // no baseline, or too small a one: inconclusive
	}
	var pb *bucket
	if r.paired != nil && r.paired.current != nil {
		if c := &r.paired.current.closed; c.idx == b.idx && c.n > 0 {
			pb = c
		}
	}
	rho := [alternatives]float64{1 + d.cfg.ErrorMinEffect, d.cfg.ErrorGrossFactor}
	for c := range s.errT {
		if !d.tested[c] {
			continue
		}
		t := &s.errT[c]
		var v rateVerdict
		if pb != nil {
			v = t.updatePaired(rho, b.errs[c], b.n, pb.errs[c], pb.n, b.idx, &d.th)
		} else {
			v = t.updateFixed(&r.errP[c], b.errs[c], b.n, b.idx, &d.th)
		}
		switch v {
		case verdictFired:
			out = append(out, d.errorAnomaly(s, c, pb != nil))
		case verdictRecovered:
			d.log.Info("error rate recovered", "series", s.key.String(), "category", categoryName(c), "at", d.clock.end(b.idx))
		}
	}
	if r.latOK && b.latN > 0 {
		anyFiring := false
		for q := range d.cfg.LatencyQuantiles {
			t := &s.latT[q]
			v := t.updateFixed(&r.latP[q], b.exceed[q], b.latN, b.idx, &d.th)
			if v == verdictFired && !s.latEp {
				s.latEp = true // one anomaly per latency episode, from the quantile that fired first
				out = append(out, d.latencyAnomaly(s, q))
			}
			anyFiring = anyFiring || t.firing
		}
		if s.latEp && !anyFiring {
			s.latEp = false
			d.log.Info("latency recovered", "series", s.key.String(), "at", d.clock.end(b.idx))
		}
	}
	return out
}

// testResource runs the CUSUM of a cpu or memory series. The reference is the baseline version's
// when it has one, otherwise (only when ownProfile) the series' own median/MAD after warm-up.
func (d *Detector) testResource(s *series, own *robustRef, c *cusum, sum, cnt float64, base *robustRef, metric string, ownProfile bool) (schemas.Anomaly, bool) {
	if cnt == 0 {
		return schemas.Anomaly{}, false
	}
	x := sum / cnt
	own.add(x, d.cfg.ResourceWarmupBuckets, d.cfg.ResourceMinEffect)
	ref := own
	if base != nil && base.ready {
		ref = base
	} else if !ownProfile {
		return schemas.Anomaly{}, false
	}
	if !ref.ready {
		return schemas.Anomaly{}, false
	}
	z := (x - ref.center) / ref.scale
	switch c.update(z, d.cfg.CUSUMSlack, d.cfg.CUSUMThreshold, s.closed.idx) {
	case verdictFired:
		return d.cusumAnomaly(s.key, metric, c, x, ref.center, s.closed.idx, "cusum-median-mad", refLabel(s)), true
	case verdictRecovered:
		d.log.Info(metric+" recovered", "series", s.key.String(), "at", d.clock.end(s.closed.idx))
	}
	return schemas.Anomaly{}, false
}

// testThroughput tests a line's request rate in the bucket it just accumulated against its EWMA:
// a one-sided CUSUM of how far the count falls below (1 - ThroughputMinDrop/2) of the usual rate,
// in Poisson standard deviations. Spikes push the CUSUM down, never up; the EWMA follows daily
// cycles, and is frozen during an excursion so a real drop is not absorbed.
func (d *Detector) testThroughput(ln *line, out []schemas.Anomaly) []schemas.Anomaly {
	// Only buckets with data are tested: an empty window is inconclusive, never a drop. A line
	// that goes completely silent is therefore not reported here; that is a liveness problem.
	// The CUSUM also restarts after a gap, so traffic that turns sparse (buckets with a request
	// here and there) never accumulates into a "drop": it is too little data to conclude.
	b := ln.accB
	if ln.lastB != b-1 && !ln.tputC.firing {
		ln.tputC.s = 0
	}
	ln.lastB = b
	return d.throughputStep(ln, ln.accN, b, out)
}

// throughputWarmup is how many buckets the rate EWMA needs before it is trusted.
const throughputWarmup = 60

func (d *Detector) throughputStep(ln *line, x float64, b int64, out []schemas.Anomaly) []schemas.Anomaly {
	perBucket := d.cfg.ThroughputMinRate * time.Duration(d.cfg.BucketWidth).Seconds()
	m := ln.tput.mean
	if ln.tput.ready && m >= perBucket && ln.current != nil {
		z := (m*(1-d.cfg.ThroughputMinDrop/2) - x) / math.Sqrt(m)
		if ln.tputC.s == 0 {
			ln.tputBL = m
		}
		switch ln.tputC.update(z, 0, d.cfg.CUSUMThreshold, b) {
		case verdictFired:
			secs := time.Duration(d.cfg.BucketWidth).Seconds()
			a := d.cusumAnomaly(ln.current.key, schemas.MetricThroughput, &ln.tputC, x/secs, ln.tputBL/secs, b, "cusum-ewma-poisson", "")
			a.Evidence.Notes = append(a.Evidence.Notes, "throughput of the line across versions, in requests per second")
			out = append(out, a)
		case verdictRecovered:
			d.log.Info("throughput recovered", "line", ln.current.key.String(), "at", d.clock.end(b))
		}
	}
	if ln.tputC.s == 0 {
		ln.tput.add(x, d.tputAlpha, throughputWarmup)
	}
	return out
}

func refLabel(s *series) string {
	if s.ref != nil {
		return s.ref.label
	}
	return ""
}
