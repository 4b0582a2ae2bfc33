package telemetry

import (
	"math"
	"strconv"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Latency histogram of an aggregate: log-spaced buckets, each 10 % wider than the last, from
// 10 µs; 192 buckets reach beyond 10 minutes. Quantiles read from it are within 5 % — the same
// order as the detector's own sketch, so nothing is lost that detection would use.
const (
	histBuckets = 192
	histMinMS   = 0.01
	histGrowth  = 1.1
)

var logGrowth = math.Log(histGrowth)

type aggKey struct{ component, block, version string }

type aggState struct {
	count int64
	errs  [4]int64 // by schemas.ErrorCategories order
	sumMS float64
	maxMS float64
	hist  [histBuckets]uint32
}

type aggSnapshot struct {
	key aggKey
	// end is when the interval ended: an aggregate's ts, as the schema says. Stamped with the
	// interval's start, it would reach ingest a whole interval behind the events of producers
	// that send each request, and be dropped as late by the time allowed_lateness has passed.
	end time.Time
	st  aggState
}

func categoryIndex(c string) int {
	switch c {
	case schemas.ErrTimeout:
		return 0
	case schemas.ErrException:
		return 1
	case schemas.ErrInvalidInput:
		return 2
	}
	return 3
}

func histIndex(ms float64) int {
	if ms <= histMinMS {
		return 0
	}
	i := int(math.Log(ms/histMinMS) / logGrowth)
	return min(i, histBuckets-1)
}

func (p *Publisher) recordAgg(o *Observation) {
	ms := float64(o.Latency) / float64(time.Millisecond)
	if ms < 0 || math.IsNaN(ms) {
		ms = 0
	}
	k := aggKey{o.Component, o.Block, o.Version}
	p.mu.Lock()
	st := p.agg[k]
	if st == nil {
		if len(p.agg) >= p.bufSize {
			p.mu.Unlock()
			p.dropped.Add(1)
			return
		}
		st = &aggState{}
		p.agg[k] = st
	}
	st.count++
	if o.Error != "" {
		st.errs[categoryIndex(o.Error)]++
	}
	st.sumMS += ms
	if ms > st.maxMS {
		st.maxMS = ms
	}
	st.hist[histIndex(ms)]++
	p.mu.Unlock()
	p.recorded.Add(1)
}

// snapshotAgg copies out and resets the interval's aggregates; a series idle for a whole interval
// is forgotten, so the map holds only what is live.
func (p *Publisher) snapshotAgg() []aggSnapshot {
	now := time.Now()
	p.mu.Lock()
	var out []aggSnapshot
	for k, st := range p.agg {
		if st.count == 0 {
			delete(p.agg, k)
			continue
		}
		out = append(out, aggSnapshot{key: k, end: now, st: *st})
		*st = aggState{}
	}
	p.mu.Unlock()
	return out
}

func (s *aggState) quantile(q float64) float64 {
	target := uint64(math.Ceil(q * float64(s.count)))
	var seen uint64
	for i, n := range s.hist {
		seen += uint64(n)
		if seen >= target && n > 0 {
			// Geometric middle of the bucket, capped by the largest latency seen.
			v := histMinMS * math.Pow(histGrowth, float64(i)+0.5)
			return math.Min(v, s.maxMS)
		}
	}
	return s.maxMS
}

// appendAggregate writes one aggregate event: count, errors by category, mean latency and summary.
func (p *Publisher) appendAggregate(b []byte, a *aggSnapshot) []byte {
	st := &a.st
	b = p.appendHead(b, a.end, a.key.component, a.key.block, a.key.version)
	b = append(b, `,"count":`...)
	b = appendInt(b, st.count)
	b = append(b, `,"latency_ms":`...)
	b = appendFloat(b, st.sumMS/float64(st.count))
	b = append(b, `,"latency":{"p50":`...)
	b = appendFloat(b, st.quantile(0.5))
	b = append(b, `,"p90":`...)
	b = appendFloat(b, st.quantile(0.9))
	b = append(b, `,"p99":`...)
	b = appendFloat(b, st.quantile(0.99))
	b = append(b, `,"max":`...)
	b = appendFloat(b, st.maxMS)
	b = append(b, `,"sum":`...)
	b = appendFloat(b, st.sumMS)
	b = append(b, '}')
	if st.errs != [4]int64{} {
		b = append(b, `,"errors":{`...)
		first := true
		for i, c := range schemas.ErrorCategories {
			if st.errs[i] == 0 {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendString(b, c)
			b = append(b, ':')
			b = appendInt(b, st.errs[i])
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

func appendInt(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }
