package detect

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// cpuWorld feeds versions of one component second by second. Each version's instances report
// their cpu on the first request of each second: a utilisation measured over a window (an EWMA,
// so it lags the load), of an idle share plus a cost per request per instance, times the
// version's factor, plus noise. A rolling deploy moves instances, and their requests, from one
// version to the next; each instance serves the same load.
type cpuWorld struct {
	f      feeder
	cpu    map[string]float64 // each version's cpu as measured, by version
	sec    int
	oldMul float64 // version "1"'s factor: a change no deploy made
	every  int     // > 1: each version reports its cpu every this many seconds (a scraper), not every second
	// neighbour is the req/s per instance that other components of the same processes serve, by
	// second (nil: none); their requests cost the process cpu as this component's do.
	neighbour func(int) float64
	sendLoad  bool // the samples carry process_rps, the process's whole load
}

func newCPUWorld(seed uint64) *cpuWorld {
	return newCPUWorldWith(seed, DefaultConfig())
}

func newCPUWorldWith(seed uint64, cfg Config) *cpuWorld {
	return &cpuWorld{f: feeder{d: New(cfg), rng: rand.New(rand.NewPCG(seed, seed))}, cpu: map[string]float64{}, oldMul: 1}
}

// serve runs secs seconds at rate req/s per instance over 10 instances, share of them (0 to 1,
// or a function of the second) of version "2" at factor mul, the rest of version "1".
func (w *cpuWorld) serve(secs int, rate float64, share func(int) float64, mul func(int) float64) {
	for range secs {
		ts := t0.Add(time.Duration(w.sec) * time.Second)
		sh := share(w.sec)
		for _, v := range [...]struct {
			version string
			share   float64
			mul     float64
		}{{"1", 1 - sh, w.oldMul}, {"2", sh, mul(w.sec)}} {
			n := poisson(w.f.rng, 10*rate*v.share)
			if n == 0 {
				continue
			}
			now, nb := v.mul*(0.05+0.005*rate), 0.0
			if w.neighbour != nil {
				nb = w.neighbour(w.sec)
				now += 0.005 * nb
			}
			c, ok := w.cpu[v.version]
			if !ok {
				c = now
			}
			c += 0.1 * (now - c)
			w.cpu[v.version] = c
			for i := range n {
				e := ev(ts.Add(time.Duration(i)*time.Second/time.Duration(n)), v.version, 10, "")
				if i == 0 && (w.every <= 1 || (w.sec+7*len(v.version))%w.every == 0) {
					m := c + 0.003*w.f.rng.NormFloat64()
					e.CPU = &m
					if w.sendLoad {
						l := rate + nb
						e.ProcessRPS = &l
					}
				}
				w.f.d.Observe(e)
			}
		}
		w.f.out = append(w.f.out, w.f.d.Advance(w.f.d.Watermark())...)
		w.sec++
	}
}

func (w *cpuWorld) cpuAnomalies() []schemas.Anomaly {
	var out []schemas.Anomaly
	for _, a := range w.f.out {
		if a.Metric == schemas.MetricCPU && !a.IsResolved() {
			out = append(out, a)
		}
	}
	return out
}

func constant(v float64) func(int) float64 { return func(int) float64 { return v } }

// cycling moves the load per instance between 3 and 6 req/s, 30 s at each step.
func (w *cpuWorld) cycling(secs int, share, mul func(int) float64) {
	for s := 0; s < secs; s += 30 {
		w.serve(min(30, secs-s), []float64{3, 4, 5, 6, 5, 4}[s/30%6], share, mul)
	}
}

// TestCPUComparedWithPreviousVersionAtItsLoad deploys a version whose cpu per request is the
// previous version's, or half again as much. The previous version served a load that moved
// between 3 and 6 req/s per instance. Healthy, the new version is deployed rolling, starts with
// a burst of cpu, serves at the top of the previous version's loads, and then through a spike
// of three times that: a level frozen from the previous version would call it a regression
// several times over, and the comparison at its load must not. Nor may a version deployed at a
// higher load than the previous version's steady one. CPU half again the previous
// version's at the same load is caught within a minute of the new version serving alone.
func TestCPUComparedWithPreviousVersionAtItsLoad(t *testing.T) {
	w := newCPUWorld(7)
	w.cycling(900, constant(0), constant(1))
	rolling := func(s int) float64 { return math.Min(1, float64(s-900+1)/60) }
	startup := func(s int) float64 {
		if s < 915 {
			return 2
		}
		return 1
	}
	w.serve(120, 6, rolling, startup)
	w.serve(60, 18, constant(1), constant(1))
	w.serve(120, 6, constant(1), constant(1))
	w.serve(120, 3, constant(1), constant(1))
	if a := w.cpuAnomalies(); len(a) > 0 {
		t.Fatalf("the same cpu per request raised %s on %s at %s: %q", a[0].Test, a[0].Version, a[0].TSDetected.Sub(t0), a[0].Evidence.Notes)
	}

	// A previous version that served one steady load: its requests a bucket vary by Poisson
	// noise alone, and a line fitted to them is nearly flat.
	w = newCPUWorld(9)
	w.serve(900, 3, constant(0), constant(1))
	w.serve(180, 4.2, constant(1), constant(1))
	if a := w.cpuAnomalies(); len(a) > 0 {
		t.Fatalf("the same cpu per request at a load above the previous version's steady one raised %s at %s: %q",
			a[0].Test, a[0].TSDetected.Sub(t0), a[0].Evidence.Notes)
	}

	w = newCPUWorld(8)
	w.cycling(900, constant(0), constant(1))
	w.serve(120, 4.5, constant(1), constant(1.5))
	hot := w.cpuAnomalies()
	if len(hot) == 0 {
		t.Fatal("cpu half again the previous version's at the same load raised no anomaly")
	}
	a := hot[0]
	if took := a.TSDetected.Sub(t0.Add(900 * time.Second)); took > time.Minute {
		t.Errorf("cpu ×1.5 took %s to detect, want within a minute", took)
	}
	if a.Version != "2" || a.Test != "cusum-load-fit" || a.BaselineVersion != "1" || a.Observed <= 1.3*a.Baseline ||
		!slices.ContainsFunc(a.Evidence.Notes, func(n string) bool { return strings.Contains(n, "per request") }) {
		t.Errorf("anomaly does not explain itself: version %s, test %s, baseline version %q, observed %g against %g, notes %q",
			a.Version, a.Test, a.BaselineVersion, a.Observed, a.Baseline, a.Evidence.Notes)
	}
}

// TestCPUComparedWithItsOwnLineWithoutADeploy runs one version for 20 minutes at a load that
// moves between 3 and 6 req/s per instance, then through a slow climb to 8 and back, as a
// daily cycle's, and a spike of three times the top of its range with a lagging utilisation:
// none of it is a cpu anomaly. Then its cpu per request rises by half, with no deploy (a
// dependency, a configuration flag): that is caught within a minute, against the series' own
// line, and stays caught while it lasts, because the line does not learn while the test fires.
// Back to normal, the episode ends.
func TestCPUComparedWithItsOwnLineWithoutADeploy(t *testing.T) {
	w := newCPUWorld(11)
	none := constant(0)
	w.cycling(1200, none, constant(1))
	for i := range 40 {
		w.serve(30, 3+5*math.Sin(math.Pi*float64(i)/40), none, constant(1))
	}
	w.serve(60, 18, none, constant(1))
	w.cycling(600, none, constant(1))
	if a := w.cpuAnomalies(); len(a) > 0 {
		t.Fatalf("the same cpu per request raised %s at %s: %q", a[0].Test, a[0].TSDetected.Sub(t0), a[0].Evidence.Notes)
	}

	from := t0.Add(time.Duration(w.sec) * time.Second)
	w.oldMul = 1.5
	w.cycling(1800, none, constant(1))
	hot := w.cpuAnomalies()
	if len(hot) == 0 {
		t.Fatal("cpu half again the series' own at the same load raised no anomaly")
	}
	a := hot[0]
	if took := a.TSDetected.Sub(from); took > time.Minute {
		t.Errorf("cpu ×1.5 without a deploy took %s to detect, want within a minute", took)
	}
	if a.Version != "1" || a.Test != "cusum-own-load-fit" || schemas.BaselineVersionOf(a.BaselineVersion) != "" ||
		!strings.HasPrefix(a.BaselineVersion, schemas.BaselineOwnProfile) || a.Observed <= 1.2*a.Baseline ||
		!slices.ContainsFunc(a.Evidence.Notes, func(n string) bool { return strings.Contains(n, "no deploy changed") }) {
		t.Errorf("anomaly does not explain itself: version %s, test %s, baseline version %q, observed %g against %g, notes %q",
			a.Version, a.Test, a.BaselineVersion, a.Observed, a.Baseline, a.Evidence.Notes)
	}
	resolved := func() bool {
		return slices.ContainsFunc(w.f.out, func(a schemas.Anomaly) bool { return a.Metric == schemas.MetricCPU && a.IsResolved() })
	}
	if len(hot) > 1 || resolved() {
		t.Fatalf("30 min of cpu ×1.5 became the series' normal: %d cpu anomalies, resolved %v", len(hot), resolved())
	}
	w.oldMul = 1
	w.cycling(300, none, constant(1))
	if !resolved() {
		t.Error("cpu back to normal did not end the episode")
	}

	cfg := DefaultConfig()
	cfg.OwnProfileWarmup = 0
	w = newCPUWorldWith(11, cfg)
	w.cycling(1200, none, constant(1))
	w.oldMul = 1.5
	w.cycling(300, none, constant(1))
	if a := w.cpuAnomalies(); len(a) > 0 {
		t.Errorf("own_profile_warmup 0 turns the own-profile tests off, but cpu raised %s", a[0].Test)
	}
}

// TestCPUOfAProcessThatServesSeveralComponents: the processes that serve this component serve
// others too, and their cpu is the process's. A new version of this component is deployed
// healthy, and a minute later another component's traffic triples. Read against this
// component's own requests, the cpu that the other component's requests cost is this
// version's regression; read against the process's whole load (process_rps), it is not. A real
// regression of the new version is still caught at the process's load, and a new version that
// is the first to send process_rps is not compared with a line fitted to the other kind of load.
func TestCPUOfAProcessThatServesSeveralComponents(t *testing.T) {
	busier := func(s int) float64 {
		if s >= 960 && s < 1080 {
			return 3 * 5
		}
		return 5 // req/s per instance of the other components
	}
	run := func(seed uint64, sendLoad bool, mul float64) *cpuWorld {
		w := newCPUWorld(seed)
		w.neighbour, w.sendLoad = busier, sendLoad
		w.cycling(900, constant(0), constant(1))
		w.serve(300, 4.5, constant(1), constant(mul))
		return w
	}
	if a := run(7, false, 1).cpuAnomalies(); len(a) == 0 {
		t.Error("without process_rps the other component's spike raised no cpu anomaly: the case below proves nothing")
	}
	if a := run(7, true, 1).cpuAnomalies(); len(a) > 0 {
		t.Errorf("the other component's spike, read at the process's load, raised %s on %s at %s: %q",
			a[0].Test, a[0].Version, a[0].TSDetected.Sub(t0), a[0].Evidence.Notes)
	}
	hot := run(8, true, 1.5).cpuAnomalies()
	if len(hot) == 0 {
		t.Fatal("cpu half again the previous version's, at the process's load, raised no anomaly")
	}
	a := hot[0]
	if took := a.TSDetected.Sub(t0.Add(900 * time.Second)); took > time.Minute || a.Version != "2" || a.Test != "cusum-load-fit" {
		t.Errorf("cpu ×1.5: %s on %s after %s, want cusum-load-fit on 2 within a minute", a.Test, a.Version, took)
	}
	if !slices.ContainsFunc(a.Evidence.Notes, func(n string) bool { return strings.Contains(n, "of the whole process (process_rps)") }) {
		t.Errorf("the anomaly does not say the load was the process's: %q", a.Evidence.Notes)
	}

	// Version 1 sent no process_rps, version 2 does: its cpu, half again as much, has no line of
	// its kind to be compared with, and is not a regression of version 1's at a load it never
	// measured.
	w := newCPUWorld(8)
	w.neighbour = busier
	w.cycling(900, constant(0), constant(1))
	w.sendLoad = true
	w.serve(300, 4.5, constant(1), constant(1.5))
	for _, a := range w.cpuAnomalies() {
		if a.Test == "cusum-load-fit" {
			t.Errorf("a line fitted to the component's requests was read at the process's load: %q", a.Evidence.Notes)
		}
	}
}
