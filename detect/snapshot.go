package detect

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/store"

	"github.com/scalpel-dev/scalpel/schemas"
)

// ErrSnapshotConfig is returned by Restore when the snapshot was taken under another detect
// config: the state (bucket indexes, epochs, thresholds) only means something under its own.
var ErrSnapshotConfig = errors.New("detect snapshot was taken under a different config")

// ErrSnapshotCorrupt is returned by Restore when the bytes are not a snapshot this version wrote.
var ErrSnapshotCorrupt = errors.New("detect snapshot is corrupt or of an unknown format")

// snapshotMagic opens every snapshot; the byte after it is the format version.
const (
	snapshotMagic = "scalpel-detect\x00"
	// 2: open buckets say what the tests that fired within them counted; 3: and what a canary's
	// paired error test counted of the baseline cohort's bucket, and a line's throughput trend;
	// 4: a canary's concurrent check (series.gate), and its concurrent cohort is looked up, not
	// stored; 5: a series' cpu line (loadFit) and its reference's; 6: the same for memory, whose
	// reference's warm-up level it replaces; 7: a line says how long a test against it stays
	// inconclusive after a load beyond its reach and whether its resource has levelled off, a
	// series' own cpu is tested against its line, and a line says when another version served;
	// 8: a line counts the buckets its samples cover, and a series the requests since its last
	// cpu sample and that sample, a robust reference its spread before the floor, and a memory
	// level keeps six blocks; 9: a bucket adds up its cpu samples' process_rps, and a series
	// and a reference say whether their cpu line's loads were the process's; 10: a series keeps
	// its errors' dispersion, and a reference the one it was frozen with; 11: a line how much its
	// unit's counts vary beyond Poisson's; 12: the instances a latency warm-up follows; 13: a
	// reference's share of alpha among the series of its deploy; 14: a rate test says whether it
	// fires on its deploy-long evidence; 15: and how many series the reference's share is among;
	// 16: a bucket how far its latency thresholds rose at its load, a reference its component's
	// usual load, a line its component's requests in its newest two buckets, and an own profile
	// the load its latencies were served at; 17: a reference its service's usual load too, and
	// an own profile the service's load its latencies were served at; 18: a series how much its
	// latency exceedances vary, against which thresholds, and a reference how much its did; 19:
	// a series its latencies' excursions and its open episodes only when it has one, a service's
	// line its excursions, and a reference the longest excursion its tests respect; 20: a series
	// how much its latency exceedances drift between epochs, and a reference whether its
	// latency dispersion is that drift; 21: a series' drift the shares of the epoch two back;
	// 22: the detector how many events MaxSeries kept out; 23: a line where its run of buckets
	// with requests began, and the detector which units' silence it reads; 24: a series' drift
	// where it measures a quantile too sparse for its own threshold; 25: a reference the
	// hypotheses of its tail quantiles' excess, and a bucket the excess its tests read of it;
	// 26: a reference's excess without its cap, which follows from the config.
	snapshotVersion = 26
)

// Snapshot returns the detector's whole state: every series with its open buckets, history,
// baseline, running tests, own profile and open episodes, every line's throughput state, and the
// watermark. Restore(cfg, snap) gives a detector that, fed the events after the snapshot, emits
// exactly what this one would have: a restart resumes from a checkpoint instead of re-reading
// telemetry, and keeps state that no bounded replay could rebuild (a long-lived own profile, a
// sparse series' history). The bytes are deterministic: the same state gives the same bytes.
//
// Caches and free lists are not state and are not written. Snapshot is not read-only: it
// rebuilds each latency sketch from its bins (see codec.sketchFrom), which changes nothing
// but the last bits of a decayed total, so that this detector and its restored copy stay
// identical from here on. Call it where Observe and Advance would be called, not beside them.
func (d *Detector) Snapshot() ([]byte, error) {
	// About 3.6 KiB a series in steady state (scalpel bench): one allocation, not a dozen.
	c := &codec{sk: d.sk, buf: make([]byte, 0, 4096*len(d.series)+256)}
	c.buf = append(c.buf, snapshotMagic...)
	c.buf = append(c.buf, snapshotVersion)
	fp, err := configFingerprint(d.cfg)
	if err != nil {
		return nil, err
	}
	c.buf = append(c.buf, fp[:]...)
	if err := d.xfer(c); err != nil {
		return nil, err
	}
	return c.buf, nil
}

// Restore builds a detector from a snapshot that Snapshot wrote under the same cfg. It fails with
// ErrSnapshotConfig when cfg differs from the snapshot's (after an upgrade or a config change the
// caller rebuilds state another way), and with ErrSnapshotCorrupt on bytes it cannot read; it never
// panics on bad input.
func Restore(cfg Config, snap []byte, opts ...Option) (d *Detector, err error) {
	if err := CheckSnapshot(cfg, snap); err != nil {
		return nil, err
	}
	d = New(cfg, opts...)
	c := &codec{sk: d.sk, reading: true, buf: snap[SnapshotHeaderLen:], pool: &d.pool}
	if err := d.xfer(c); err != nil {
		return nil, err
	}
	if len(c.buf) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the end", ErrSnapshotCorrupt, len(c.buf))
	}
	return d, nil
}

// SnapshotHeaderLen is how many bytes of a snapshot CheckSnapshot reads.
const SnapshotHeaderLen = len(snapshotMagic) + 1 + sha256.Size

// CheckSnapshot reads only a snapshot's header: it returns what Restore would return for a snapshot
// of another format or config (ErrSnapshotCorrupt, ErrSnapshotConfig, or cfg's own error), without
// restoring it. A caller choosing among stored checkpoints uses it to skip those it cannot use.
func CheckSnapshot(cfg Config, snap []byte) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if len(snap) < SnapshotHeaderLen || string(snap[:len(snapshotMagic)]) != snapshotMagic {
		return fmt.Errorf("%w: no snapshot header", ErrSnapshotCorrupt)
	}
	if v := snap[len(snapshotMagic)]; v != snapshotVersion {
		return fmt.Errorf("%w: format version %d, this build reads %d", ErrSnapshotCorrupt, v, snapshotVersion)
	}
	fp, err := configFingerprint(cfg)
	if err != nil {
		return err
	}
	if !bytes.Equal(snap[len(snapshotMagic)+1:][:sha256.Size], fp[:]) {
		return ErrSnapshotConfig
	}
	return nil
}

// configFingerprint identifies a config by the hash of its JSON form.
func configFingerprint(cfg Config) ([sha256.Size]byte, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("detect snapshot: encode config: %w", err)
	}
	return sha256.Sum256(b), nil
}

// xfer writes or reads (c.reading) the detector's state. One function for both directions keeps
// the two in step: a field added to one is added to the other.
func (d *Detector) xfer(c *codec) error {
	var ts int64
	if d.seen {
		ts = d.maxTS.UnixNano()
	}
	c.bool(&d.seen)
	c.i64(&ts)
	if c.reading && d.seen {
		d.maxTS = time.Unix(0, ts).UTC()
	}
	c.i64(&d.closed)
	c.i64(&d.nextSweep)
	c.u64(&d.late)
	d.lateLogN = d.late // a restored detector's first warning counts from here
	c.u64(&d.invalid)
	c.u64(&d.overLimit)

	// Lines first: series point at them.
	lkeys := slices.SortedFunc(maps.Keys(d.lines), compareLineKeys)
	n := c.count(len(lkeys))
	for i := range n {
		var ln *line
		if c.reading {
			ln = &line{}
		} else {
			ln = d.lines[lkeys[i]]
		}
		ln.xfer(c)
		if c.reading {
			if c.err == nil && d.lines[ln.key] != nil {
				c.fail("line %v twice", ln.key)
			}
			d.lines[ln.key] = ln
		}
	}
	if c.reading { // each line's unit is the line of its unit without a cohort, written too
		for _, ln := range d.lines {
			uk := ln.key
			uk.Cohort = ""
			if ln.unit = d.lines[uk]; ln.unit == nil && c.err == nil {
				c.fail("line %v without its unit's line", ln.key)
			}
		}
	}

	skeys := slices.SortedFunc(maps.Keys(d.series), compareKeys)
	n = c.count(len(skeys))
	for i := range n {
		var s *series
		var k SeriesKey
		if !c.reading {
			s, k = d.series[skeys[i]], skeys[i]
		}
		c.seriesKey(&k)
		if c.reading {
			if c.err == nil && d.series[k] != nil {
				c.fail("series %s twice", k)
			}
			s = &series{key: k, aggregate: k.Block == ""}
			if s.line = d.lines[k.line()]; s.line == nil && c.err == nil {
				c.fail("series %s without its line", k)
			}
			if s.load = d.lines[k.loadLine()]; s.load == nil && c.err == nil {
				c.fail("series %s without its component's line", k)
			}
			if s.svc = d.lines[k.serviceLine()]; s.svc == nil && c.err == nil {
				c.fail("series %s without its service's line", k)
			}
			d.series[k] = s
			d.link(s)
		}
		d.xferSeries(c, s)
		if c.err != nil {
			return c.err
		}
	}

	// Who each line runs now, and the order of the active and firing lists (the order tests run
	// and anomalies are produced in).
	for _, ln := range sortedLines(d) {
		var k SeriesKey
		has := ln.current != nil
		if has {
			k = ln.current.key
		}
		c.bool(&has)
		if has {
			c.seriesKey(&k)
			if c.reading {
				ln.current = c.lookup(d, k)
			}
		}
	}
	d.active = xferSeriesList(c, d, d.active)
	d.firing = xferSeriesList(c, d, d.firing)
	d.quiet = xferLineList(c, d, d.quiet)
	d.xferInstances(c)
	// What the tests found since Advance last returned (empty between batches).
	n = c.count(len(d.out))
	if c.reading {
		d.out = make([]schemas.Anomaly, 0, n)
	}
	for i := range n {
		var a *schemas.Anomaly
		if !c.reading {
			a = &d.out[i]
		}
		c.anomaly(&a)
		if c.reading && a != nil {
			d.out = append(d.out, *a)
		}
	}
	return c.err
}

// xferInstances writes or reads the instances a LatencyWarmup follows, in key order.
func (d *Detector) xferInstances(c *codec) {
	keys := slices.SortedFunc(maps.Keys(d.instances), func(a, b instanceKey) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Version, b.Version), cmp.Compare(a.Instance, b.Instance))
	})
	n := c.count(len(keys))
	for i := range n {
		var k instanceKey
		in := &instanceSeen{}
		if !c.reading {
			k, in = keys[i], d.instances[keys[i]]
		}
		c.str(&k.Service)
		c.str(&k.Version)
		c.str(&k.Instance)
		c.i64(&in.first)
		c.i64(&in.last)
		if c.reading {
			if c.err == nil && (d.instances[k] != nil || in.first > in.last) {
				c.fail("instance %v twice, or last seen before it started", k)
			}
			d.instances[k] = in
		}
	}
}

// sortedLines lists the lines in key order (the order xfer wrote them).
func sortedLines(d *Detector) []*line {
	keys := slices.SortedFunc(maps.Keys(d.lines), compareLineKeys)
	out := make([]*line, len(keys))
	for i, k := range keys {
		out[i] = d.lines[k]
	}
	return out
}

func xferSeriesList(c *codec, d *Detector, list []*series) []*series {
	return xferList(c, list, func(s *series) SeriesKey { return s.key }, c.seriesKey,
		func(k SeriesKey) *series { return c.lookup(d, k) })
}

func xferLineList(c *codec, d *Detector, list []*line) []*line {
	return xferList(c, list, func(ln *line) lineKey { return ln.key }, c.lineKey, func(k lineKey) *line {
		ln := d.lines[k]
		if ln == nil {
			c.fail("line %v listed but not written", k)
		}
		return ln
	})
}

// xferList writes or reads an ordered list of elements as their keys: key gives an element's,
// xk transfers one, and find looks a key read up (nil: none, and find says why to c).
func xferList[E any, K any](c *codec, list []*E, key func(*E) K, xk func(*K), find func(K) *E) []*E {
	n := c.count(len(list))
	if c.reading {
		list = make([]*E, 0, n)
	}
	for i := range n {
		var k K
		if !c.reading {
			k = key(list[i])
		}
		xk(&k)
		if c.reading {
			if e := find(k); e != nil {
				list = append(list, e)
			}
		}
	}
	return list
}

func compareLineKeys(a, b lineKey) int {
	return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Component, b.Component),
		cmp.Compare(a.Block, b.Block), cmp.Compare(a.Cohort, b.Cohort))
}

func (ln *line) xfer(c *codec) {
	c.lineKey(&ln.key)
	c.i64(&ln.accB)
	c.f64(&ln.accN)
	c.i64(&ln.runB)
	c.i64(&ln.lastB)
	ln.tput.xfer(c)
	c.f32(&ln.tputD)
	ln.tputC.xfer(c)
	c.f32(&ln.tputBL)
	c.anomaly(&ln.tputA)
	c.i64(&ln.otherB)
	c.i64(&ln.liveB)
	c.f32(&ln.liveN)
	c.f32(&ln.prevN)
	optional(c, &ln.exc, func(se *serviceExcursions) {
		se.exc.xfer(c)
		c.i64(&se.epoch)
	})
}

func (d *Detector) xferSeries(c *codec, s *series) {
	n := c.count(len(s.open))
	if c.reading {
		s.open = make([]bucket, n)
	}
	for i := range s.open {
		s.open[i].xfer(c)
	}
	s.closed.xfer(c)
	c.f64s(s.exceed[:])
	c.bool(&s.queued)
	c.i64(&s.firstB)
	c.i64(&s.lastB)
	c.history(&s.cur, false)
	c.history(&s.prev, true)
	n = c.count(len(s.older))
	if c.reading {
		s.older = make([]*history, n)
	}
	for i := range s.older {
		c.history(&s.older[i], true)
		if c.reading && s.older[i] == nil && c.err == nil {
			c.fail("series %s: an older epoch is missing", s.key)
		}
	}
	if c.reading && s.cur == nil && c.err == nil {
		c.fail("series %s without a current epoch", s.key)
	}
	optional(c, &s.ref, func(r *reference) { d.xferReference(c, r) })
	optional(c, &s.own, func(o *ownProfile) { o.xfer(c) })
	for i := range s.errT {
		s.errT[i].xfer(c)
	}
	optional(c, &s.gate, func(g *canaryGate) {
		for i := range g.err {
			g.err[i].xfer(c)
		}
		for i := range g.lat {
			g.lat[i].xfer(c)
		}
	})
	for i := range s.latT {
		s.latT[i].xfer(c)
	}
	c.bool(&s.latEp)
	c.bool(&s.cpuByProcess)
	c.f32(&s.cpuPend)
	c.f32(&s.cpuLast)
	s.cpuRef.xfer(c)
	s.memRef.xfer(c)
	optional(c, &s.cpuFit, func(f *loadFit) { f.xfer(c) })
	optional(c, &s.memFit, func(m *memLevel) { m.xfer(c) })
	s.cpuC.xfer(c)
	s.memC.xfer(c)
	optional(c, &s.eps, func(e *episodes) {
		for i := range e {
			c.anomaly(&e[i])
		}
	})
	if c.reading && s.eps != nil && *s.eps == (episodes{}) {
		s.eps = nil // none open: as a detector that resolved them holds it
	}
	c.bool(&s.inFiring)
	c.f64(&s.movedN)
	c.f64s(s.movedErrs[:])
	c.f32s(s.dispQ[:])
	c.f32s(s.dispE[:])
	c.f32(&s.dispB)
	for q := range s.latThr {
		c.i32(&s.latThr[q])
	}
	c.f32s(s.latX[:])
	c.f32s(s.latX2[:])
	c.f32s(s.latLastChi[:])
	c.f32s(s.latLastE[:])
	c.f32(&s.latN)
	c.f32(&s.latB)
	c.f32(&s.latLastB)
	c.u8(&s.latOn)
	c.u8(&s.latLastOn)
	c.u8(&s.excOn)
	c.u8(&s.excRef)
	s.exc.xfer(c)
	s.drift.xfer(c)
}

func (b *bucket) xfer(c *codec) {
	c.i64(&b.idx)
	c.f64(&b.n)
	c.f64s(b.errs[:])
	c.f64(&b.latN)
	c.f64(&b.cpuSum)
	c.f64(&b.memSum)
	c.u32(&b.cpuN)
	c.u32(&b.memN)
	c.u32(&b.loadN)
	c.f32(&b.loadSum)
	c.pooledSketch(&b.sk)
	c.blocks(&b.blocks)
	c.sites(&b.sites)
	optional(c, &b.used, func(u *bucketUse) {
		c.f64s(u.errs[:])
		c.f64s(u.n[:])
		c.f64s(u.refErrs[:])
		c.f64s(u.refN[:])
		for q := range u.lat {
			c.f64(&u.lat[q].n)
			c.f64(&u.lat[q].x)
			c.f64(&u.lat[q].xb)
			c.f64(&u.lat[q].ex.m)
			c.f64(&u.lat[q].ex.far)
		}
		c.i32(&u.latShift)
		if c.reading && (u.latShift < 0 || u.latShift > maxLoadShift) && c.err == nil {
			c.fail("bucket latency shift %d out of range", u.latShift)
		}
	})
}

func (d *Detector) xferReference(c *codec, r *reference) {
	c.str(&r.kind)
	c.str(&r.version)
	c.str(&r.label)
	c.bool(&r.ok)
	c.bool(&r.cpuByProcess)
	c.u8(&r.excursion)
	c.f32s(r.errPhi[:])
	c.f32s(r.latPhi[:])
	c.f32s(r.latDrift[:])
	c.i64(&r.from)
	c.i64(&r.to)
	c.f64(&r.n)
	c.f64s(r.errs[:])
	for i := range r.errP {
		r.errP[i].xfer(c)
	}
	c.blocks(&r.blocks)
	c.sketch(&r.sk)
	r.quantileTests.xfer(c)
	for q := range r.composite {
		c.bool(&r.composite[q])
		r.latS[q][0].xfer(c)
		r.latS[q][1].xfer(c)
		c.f64s(r.bodyP[q][:])
		ep := &r.excess[q]
		c.bool(&ep.on)
		c.f64s(ep.rho0[:])
		c.f64s(ep.rho[:])
		if c.reading && c.err == nil && !ep.valid() {
			c.fail("a reference's excess test of quantile %d: rho0 %v, rho %v", q, ep.rho0, ep.rho)
		}
	}
	c.i32(&r.bodyQ)
	if c.reading && c.err == nil && (r.bodyQ < -1 || r.bodyQ >= maxQuantiles || r.bodyQ < 0 && slices.Contains(r.composite[:], true)) {
		c.fail("a reference's body quantile %d", r.bodyQ)
	}
	r.cpuRef.xfer(c)
	r.cpuFit.xfer(c)
	r.memFit.xfer(c)
	c.f64(&r.family)
	c.i32(&r.familyN)
	c.f64(&r.usual.comp)
	c.f64(&r.usual.svc)
	if r.family < 0 || math.IsNaN(r.family) || r.familyN < 0 {
		c.fail("a reference's share of alpha of %g among %d series", r.family, r.familyN)
	}
}

func (f *loadFit) xfer(c *codec) {
	for _, v := range [...]*float64{&f.w, &f.mx, &f.my, &f.sxx, &f.sxy, &f.syy} {
		c.f64(v)
	}
	c.i64(&f.last)
	c.i64(&f.hold)
	c.u32(&f.n)
	c.u32(&f.cov)
}

func (m *memLevel) xfer(c *codec) {
	m.loadFit.xfer(c)
	l := &m.blocks
	c.f64(&l.sum)
	c.u32(&l.n)
	c.i64(&l.idx)
	for i := range l.m {
		c.f32(&l.m[i])
		c.i32(&l.i[i])
	}
	c.u8(&l.filled)
	c.u8(&l.back)
	if l.filled > uint8(len(l.m)) || l.back >= levelKeep {
		c.fail("a memory level with %d filled blocks, read %d back", l.filled, l.back)
	}
}

func (qt *quantileTests) xfer(c *codec) {
	c.bool(&qt.latOK)
	for q := range qt.latQ {
		c.bool(&qt.latQ[q])
		c.int(&qt.thr[q].index)
		c.f64(&qt.thr[q].above)
		c.f64(&qt.qv[q])
		qt.latP[q].xfer(c)
	}
}

func (o *ownProfile) xfer(c *codec) {
	c.i64(&o.lastB)
	c.f64(&o.n)
	c.f64(&o.loadN)
	c.f64(&o.loadSvcN)
	c.f64(&o.loadW)
	c.f64s(o.errs[:])
	c.sketch(&o.sk)
	if c.reading && o.sk == nil && c.err == nil {
		c.fail("own profile without a sketch")
	}
	c.f64(&o.bn)
	c.f64s(o.berrs[:])
	c.i64(&o.latB)
	o.quantileTests.xfer(c)
	c.f64s(o.exceed[:])
	for i := range o.errT {
		o.errT[i].xfer(c)
	}
	for i := range o.latT {
		o.latT[i].xfer(c)
	}
	c.bool(&o.latEp)
}

func (rp *rateParams) xfer(c *codec) {
	c.f64(&rp.xb)
	c.f64(&rp.nb)
	c.f64s(rp.r[:])
}

func (t *rateTest) xfer(c *codec) {
	c.f64s(t.llr[:])
	optional(c, &t.bank, func(b *secondBank) {
		c.f64s(b.llr[:])
		for i := range b.seg.llr {
			c.f64s(b.seg.llr[i][:])
		}
		c.f64(&b.seg.n)
	})
	c.i64(&t.runStart)
	c.f64(&t.n)
	c.f64(&t.x)
	c.f64(&t.steps)
	c.f64(&t.nr)
	c.f64(&t.xr)
	c.f64(&t.cn)
	c.f64(&t.cx)
	c.f64(&t.runs)
	c.f64(&t.bound)
	c.bool(&t.firing)
	c.bool(&t.long)
	c.bool(&t.twoBanks)
	for _, v := range []*int16{&t.quiet, &t.quietRun} {
		w := int32(*v)
		c.i32(&w)
		if w < 0 || w > math.MaxInt16 {
			c.fail("recovery count %d out of range", w)
		}
		*v = int16(w)
	}
}

func (r *robustRef) xfer(c *codec) {
	optional(c, &r.vals, func(vals *[warmupCap]float32) {
		for i := range vals {
			bits := math.Float32bits(vals[i])
			c.u32(&bits)
			vals[i] = math.Float32frombits(bits)
		}
	})
	k := uint32(r.k)
	c.u32(&k)
	if k > warmupCap && c.err == nil {
		c.fail("robust reference holds %d values, at most %d", k, warmupCap)
	}
	r.k = uint8(k)
	c.bool(&r.ready)
	c.f64(&r.center)
	c.f64(&r.scale)
	c.f32(&r.spread)
}

func (cs *cusum) xfer(c *codec) {
	c.f64(&cs.s)
	c.bool(&cs.firing)
	c.i64(&cs.start)
}

func (e *ewma) xfer(c *codec) {
	c.f64(&e.mean)
	c.f64(&e.trend)
	n := int(e.n)
	c.int(&n)
	if n < 0 || n > math.MaxInt32 {
		c.fail("an EWMA of %d values", n)
	}
	e.n = int32(n)
	c.bool(&e.ready)
}

// codec appends values to buf (writing) or consumes them from its front (reading). Reading
// stops at the first error: every later call is a no-op, and the caller checks err once. pool,
// set when reading, lends what open buckets borrow in a running detector.
type codec struct {
	buf     []byte
	reading bool
	err     error
	sk      *sketches
	pool    *pool
}

func (c *codec) fail(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("%w: %s", ErrSnapshotCorrupt, fmt.Sprintf(format, args...))
	}
}

// take consumes n bytes, or fails.
func (c *codec) take(n int) []byte {
	if c.err != nil {
		return nil
	}
	if n < 0 || len(c.buf) < n {
		c.fail("truncated")
		return nil
	}
	b := c.buf[:n]
	c.buf = c.buf[n:]
	return b
}

func (c *codec) u64(v *uint64) {
	if !c.reading {
		c.buf = binary.LittleEndian.AppendUint64(c.buf, *v)
		return
	}
	if b := c.take(8); b != nil {
		*v = binary.LittleEndian.Uint64(b)
	}
}

func (c *codec) u32(v *uint32) {
	if !c.reading {
		c.buf = binary.LittleEndian.AppendUint32(c.buf, *v)
		return
	}
	if b := c.take(4); b != nil {
		*v = binary.LittleEndian.Uint32(b)
	}
}

func (c *codec) u8(v *uint8) {
	if !c.reading {
		c.buf = append(c.buf, *v)
		return
	}
	if b := c.take(1); b != nil {
		*v = b[0]
	}
}

func (c *codec) i64(v *int64) {
	u := uint64(*v)
	c.u64(&u)
	*v = int64(u)
}

func (c *codec) i32(v *int32) {
	u := uint32(*v)
	c.u32(&u)
	*v = int32(u)
}

func (c *codec) int(v *int) {
	i := int64(*v)
	c.i64(&i)
	*v = int(i)
}

func (c *codec) f64(v *float64) {
	u := math.Float64bits(*v)
	c.u64(&u)
	*v = math.Float64frombits(u)
}

func (c *codec) f32(v *float32) {
	u := math.Float32bits(*v)
	c.u32(&u)
	*v = math.Float32frombits(u)
}

func (c *codec) f32s(vs []float32) {
	for i := range vs {
		c.f32(&vs[i])
	}
}

func (c *codec) f64s(vs []float64) {
	for i := range vs {
		c.f64(&vs[i])
	}
}

func (c *codec) bool(v *bool) {
	if !c.reading {
		b := byte(0)
		if *v {
			b = 1
		}
		c.buf = append(c.buf, b)
		return
	}
	if b := c.take(1); b != nil {
		if b[0] > 1 {
			c.fail("bad boolean %d", b[0])
		}
		*v = b[0] == 1
	}
}

// count writes n, or reads a length that the remaining bytes can hold (each element takes at
// least one byte), so a corrupt length cannot make Restore allocate without bound.
func (c *codec) count(n int) int {
	u := uint64(n)
	c.u64(&u)
	if c.reading && (c.err != nil || u > uint64(len(c.buf))) {
		c.fail("length %d beyond the %d bytes left", u, len(c.buf))
		return 0
	}
	return int(u)
}

func (c *codec) bytes(v *[]byte) {
	n := c.count(len(*v))
	if !c.reading {
		c.buf = append(c.buf, *v...)
		return
	}
	*v = c.take(n)
}

func (c *codec) str(v *string) {
	b := []byte(*v)
	c.bytes(&b)
	if c.reading {
		*v = string(b)
	}
}

func (c *codec) lineKey(k *lineKey) {
	c.str(&k.Service)
	c.str(&k.Component)
	c.str(&k.Block)
	c.str(&k.Cohort)
}

func (c *codec) seriesKey(k *SeriesKey) {
	c.str(&k.Service)
	c.str(&k.Component)
	c.str(&k.Block)
	c.str(&k.Version)
	c.str(&k.Cohort)
}

// lookup finds a series that an earlier part of the snapshot must have defined.
func (c *codec) lookup(d *Detector, k SeriesKey) *series {
	s := d.series[k]
	if s == nil && c.err == nil {
		c.fail("series %s referenced but not defined", k)
	}
	return s
}

// sketch writes a latency sketch (nil allowed) in DDSketch's own encoding; reading decodes it
// into a new sketch of the detector's mapping and stores, bin for bin.
func (c *codec) sketch(v **ddsketch.DDSketch) {
	c.sketchFrom(v, c.sk.new)
}

// pooledSketch is sketch for an open bucket's sketch, which is borrowed from the pool.
func (c *codec) pooledSketch(v **ddsketch.DDSketch) {
	c.sketchFrom(v, c.pool.sketch)
}

func (c *codec) sketchFrom(v **ddsketch.DDSketch, alloc func() *ddsketch.DDSketch) {
	has := *v != nil
	if c.bool(&has); !has {
		return
	}
	if !c.reading {
		// Encoded in place behind its length, which is filled in after.
		at := len(c.buf)
		c.buf = binary.LittleEndian.AppendUint64(c.buf, 0)
		(*v).Encode(&c.buf, true)
		enc := c.buf[at+8:]
		binary.LittleEndian.PutUint64(c.buf[at:], uint64(len(enc)))
		// The sketch's running total is a float sum in the order its weights came in (a decayed
		// own profile's is not the sum of its bins to the last bit), and the store's layout
		// depends on its past; a decoded sketch has the sum of its bins in bin order and a fresh
		// layout. Rebuilding this one the same way makes the detector that wrote the snapshot
		// and the one restored from it continue bit for bit alike.
		(*v).Clear()
		if err := (*v).DecodeAndMergeWith(enc); err != nil { // its own encoding: no check needed
			c.err = fmt.Errorf("detect snapshot: re-read latency sketch: %w", err)
		}
		return
	}
	var b []byte
	c.bytes(&b)
	if c.err != nil {
		return
	}
	sk := alloc()
	if err := c.sk.decodeChecked(sk, b); err != nil {
		c.fail("latency sketch: %v", err)
		return
	}
	*v = sk
}

// decodeChecked merges an encoded sketch into sk. The bytes are first read into a sparse store and
// every bin checked: an index outside the mapping's range would make the dense store walk or
// allocate the distance to it, and a count that is negative, NaN or infinite would poison every
// later sum. The decoder itself indexes with what it reads: a panic there is a corrupt snapshot,
// not a crash. A sketch whose bins span more than a compact one holds is widened first, as the
// detector that wrote it had widened its own (sketches.fit).
func (sks *sketches) decodeChecked(sk *ddsketch.DDSketch, b []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("undecodable: %v", r)
		}
	}()
	m := sk.IndexMapping
	probe, err := ddsketch.DecodeDDSketch(b, func() store.Store { return store.NewSparseStore() }, m)
	if err != nil {
		return err
	}
	lo, hi := m.Index(m.MinIndexableValue()), m.Index(m.MaxIndexableValue())
	check := func(i int, n float64) bool {
		if i < lo || i > hi || !(n >= 0) || math.IsInf(n, 0) {
			err = fmt.Errorf("bin %d holds %g (indexes run %d to %d)", i, n, lo, hi)
		}
		return err != nil
	}
	probe.GetPositiveValueStore().ForEach(check)
	if neg := probe.GetNegativeValueStore(); err == nil && !neg.IsEmpty() {
		err = fmt.Errorf("%g negative latencies (a latency is never negative)", neg.TotalCount())
	}
	if z := probe.GetZeroCount(); err == nil && (!(z >= 0) || math.IsInf(z, 0)) {
		err = fmt.Errorf("zero bin holds %g", z)
	}
	if err != nil {
		return err
	}
	if st := probe.GetPositiveValueStore(); !st.IsEmpty() {
		first, _ := st.MinIndex()
		last, _ := st.MaxIndex()
		sks.fit(sk, first, last)
	}
	return sk.DecodeAndMergeWith(b)
}

// history writes an epoch; a completed one (prev, older) holds its sketch packed.
func (c *codec) history(v **history, packed bool) {
	optional(c, v, func(h *history) { c.epoch(h, packed) })
}

func (c *codec) epoch(h *history, packed bool) {
	c.i64(&h.start)
	if packed {
		c.bytes(&h.packed)
		if c.reading && c.err == nil {
			h.packed = slices.Clone(h.packed) // not an alias of the snapshot's bytes
			if err := c.sk.decodeChecked(c.sk.new(), h.packed); err != nil {
				c.fail("older epoch's latency sketch: %v", err)
			}
		}
	} else {
		c.sketch(&h.sk)
		if c.reading && h.sk == nil && c.err == nil {
			c.fail("history without a sketch")
		}
	}
	c.f64(&h.n)
	c.f64s(h.errs[:])
	c.blocks(&h.blocks)
	c.sites(&h.sites)
}

// blocks writes a block map (see xferMap).
func (c *codec) blocks(m *map[string]blockTally) {
	xferMap(c, m, c.pool.blockMap, func(c *codec, t *blockTally) {
		c.f64(&t.n)
		c.f64s(t.errs[:])
	})
}

// sites writes an error-site map (see xferMap).
func (c *codec) sites(m *map[string]int64) {
	xferMap(c, m, c.pool.siteMap, (*codec).i64)
}

// optional writes whether *v is set and, if it is, what fill writes of it; reading allocates it.
func optional[T any](c *codec, v **T, fill func(*T)) {
	has := *v != nil
	if c.bool(&has); !has {
		return
	}
	if c.reading {
		*v = new(T)
	}
	fill(*v)
}

// xferMap writes a map in key order, each value by val. Nil and empty differ (a component
// aggregate's history always has its maps, a block's never), so presence is written too; fresh
// gives the map to read into.
func xferMap[V any](c *codec, m *map[string]V, fresh func() map[string]V, val func(*codec, *V)) {
	has := *m != nil
	if c.bool(&has); !has {
		return
	}
	keys := slices.Sorted(maps.Keys(*m))
	n := c.count(len(keys))
	if c.reading {
		*m = fresh()
	}
	for i := range n {
		var k string
		var v V
		if !c.reading {
			k, v = keys[i], (*m)[keys[i]]
		}
		c.str(&k)
		val(c, &v)
		if c.reading {
			(*m)[k] = v
		}
	}
}

// anomaly writes an open episode's anomaly as its JSON, the form it was published in.
func (c *codec) anomaly(v **schemas.Anomaly) {
	has := *v != nil
	if c.bool(&has); !has {
		return
	}
	var b []byte
	if !c.reading {
		var err error
		if b, err = json.Marshal(*v); err != nil {
			c.err = fmt.Errorf("detect snapshot: encode anomaly: %w", err)
			return
		}
	}
	c.bytes(&b)
	if !c.reading || c.err != nil {
		return
	}
	a := new(schemas.Anomaly)
	if err := json.Unmarshal(b, a); err != nil {
		c.fail("anomaly: %v", err)
		return
	}
	*v = a
}
