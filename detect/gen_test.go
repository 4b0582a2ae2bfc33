package detect

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// t0 is the event time every generated scenario starts at.
var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// phase is a stretch of traffic of one version.
type phase struct {
	version  string
	secs     int
	rate     float64            // requests per second (Poisson)
	errRate  map[string]float64 // block → exception rate ("" = every block)
	latMed   float64            // median latency in ms (lognormal)
	latSigma float64
	tailP    float64 // probability of a tail request, whose latency is multiplied by tailMul
	tailMul  float64
	mem      float64
	cpu      float64 // cpu share reported by one request in ten (0: none)
}

// genScenario produces a reproducible event stream: a seeded generator, phases in sequence,
// events sorted by time.
func genScenario(seed uint64, phases ...phase) []schemas.TelemetryEvent {
	rng := rand.New(rand.NewPCG(seed, seed^0x5ca1))
	blocks := []string{"rate-lookup", "round", "format"}
	var out []schemas.TelemetryEvent
	start := t0
	for _, p := range phases {
		for sec := range p.secs {
			base := start.Add(time.Duration(sec) * time.Second)
			n := poisson(rng, p.rate)
			for range n {
				ts := base.Add(time.Duration(rng.Int64N(int64(time.Second)))).Truncate(time.Millisecond)
				blk := blocks[rng.IntN(len(blocks))]
				lat := p.latMed * math.Exp(p.latSigma*rng.NormFloat64())
				if rng.Float64() < p.tailP {
					lat *= p.tailMul
				}
				lat = math.Round(lat*100) / 100
				ev := schemas.TelemetryEvent{
					TS: ts, Service: "checkout", Component: "tax-calc", Block: blk,
					Version: p.version, LatencyMS: &lat,
				}
				er, ok := p.errRate[blk]
				if !ok {
					er = p.errRate[""]
				}
				if rng.Float64() < er {
					ev.Error = schemas.ErrException
					ev.ErrorSite = "tax/calc.go:" + map[string]string{"rate-lookup": "57", "round": "92", "format": "120"}[blk]
				}
				if rng.Float64() < 0.01 {
					ev.Error = schemas.ErrInvalidInput // client noise, never a regression
				}
				if p.mem > 0 && rng.Float64() < 0.1 {
					m := math.Round(p.mem * (1 + 0.02*rng.NormFloat64()))
					ev.MemMB = &m
				}
				if p.cpu > 0 && rng.Float64() < 0.1 {
					c := p.cpu * (1 + 0.05*rng.NormFloat64())
					ev.CPU = &c
				}
				out = append(out, ev)
			}
		}
		start = start.Add(time.Duration(p.secs) * time.Second)
	}
	slices.SortStableFunc(out, func(a, b schemas.TelemetryEvent) int { return a.TS.Compare(b.TS) })
	for i := range out {
		out[i].ID = schemas.DeriveID("event", out[i].TS.Format(time.RFC3339Nano), out[i].Version, out[i].Block, string(rune('a'+i%26)))
	}
	return out
}

func poisson(rng *rand.Rand, lambda float64) int {
	if lambda > 30 {
		return max(0, int(math.Round(lambda+math.Sqrt(lambda)*rng.NormFloat64())))
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// healthy is the baseline behaviour every scenario starts from.
func healthy(version string, secs int, rate float64) phase {
	return phase{version: version, secs: secs, rate: rate, errRate: map[string]float64{"": 0.02},
		latMed: 20, latSigma: 0.5, tailP: 0.01, tailMul: 4, mem: 200}
}

// goldenCases are the fixtures under testdata/<name>/events.jsonl.
var goldenCases = map[string]func() []schemas.TelemetryEvent{
	"aa_no_change": func() []schemas.TelemetryEvent {
		return genScenario(1, healthy("1.0.0", 300, 20), healthy("1.1.0", 180, 20))
	},
	"error_x5": func() []schemas.TelemetryEvent {
		bad := healthy("1.1.0", 60, 20)
		bad.errRate = map[string]float64{"": 0.02, "rate-lookup": 0.26} // component ≈ 10 %: ×5
		return genScenario(2, healthy("1.0.0", 300, 20), bad)
	},
	"latency_x2": func() []schemas.TelemetryEvent {
		bad := healthy("1.1.0", 60, 20)
		bad.latMed *= 2
		return genScenario(3, healthy("1.0.0", 300, 20), bad)
	},
	"sparse_traffic": func() []schemas.TelemetryEvent {
		return genScenario(4, healthy("1.0.0", 600, 0.5), healthy("1.1.0", 600, 0.5))
	},
	"empty_window": func() []schemas.TelemetryEvent {
		quiet := healthy("1.1.0", 120, 0.02) // a version that appears with almost no traffic
		quiet.errRate = map[string]float64{"": 0.5}
		return genScenario(5, healthy("1.0.0", 300, 20), phase{version: "1.0.0", secs: 60}, quiet)
	},
	// A canary at half the traffic failing five times as often as its baseline cohort.
	"canary_error_x5": func() []schemas.TelemetryEvent {
		bad := healthy("1.1.0", 60, 20)
		bad.errRate = map[string]float64{"": 0.1}
		return cohorts(7, []phase{healthy("1.0.0", 360, 20)}, bad, 300)
	},
	// A shared dependency triples both cohorts' errors as a healthy canary starts: nothing to
	// report on the canary (the cohort is too young for an own profile).
	"canary_shared_failure": func() []schemas.TelemetryEvent {
		sick := healthy("1.0.0", 60, 20)
		sick.errRate = map[string]float64{"": 0.06}
		canary := healthy("1.1.0", 60, 20)
		canary.errRate = sick.errRate
		return cohorts(8, []phase{healthy("1.0.0", 300, 20), sick}, canary, 300)
	},
	"warm_up": func() []schemas.TelemetryEvent {
		bad := healthy("1.1.0", 120, 20)
		bad.errRate = map[string]float64{"": 0.1}
		return genScenario(6, healthy("1.0.0", 5, 20), bad) // the baseline never reached its minimum
	},
	// cpu half again the previous version's at the same load, in resource samples of their own
	// every 15 s as a scraper sends them, next to requests that carry none.
	"cpu_scraped_x1_5": func() []schemas.TelemetryEvent {
		events := genScenario(9, healthy("1.0.0", 300, 20), healthy("1.1.0", 120, 20))
		rng := rand.New(rand.NewPCG(9, 9))
		for sec := 0; sec < 420; sec += 15 {
			version, cpu := "1.0.0", 0.3
			if sec >= 300 {
				version, cpu = "1.1.0", 0.45
			}
			cpu += 0.005 * rng.NormFloat64()
			mem := 250 + rng.NormFloat64()
			events = append(events, schemas.TelemetryEvent{TS: t0.Add(time.Duration(sec)*time.Second + 7*time.Second),
				Service: "checkout", Component: "tax-calc", Version: version, CPU: &cpu, MemMB: &mem})
		}
		slices.SortStableFunc(events, func(a, b schemas.TelemetryEvent) int { return a.TS.Compare(b.TS) })
		return events
	},
}
