// Package sim simulates a service's request traffic in event time: per component and block, a
// request rate, an error probability per category and a latency distribution that depend on the
// version running. The demo and the end-to-end tests drive scalpel with it; a seed makes it
// reproducible.
package sim

import (
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Behaviour is how one block (or a component without blocks) behaves at one version.
type Behaviour struct {
	// ErrorRate is the probability that a request fails with ErrorCategory.
	ErrorRate     float64
	ErrorCategory string
	// ErrorSite is put on failed requests (file:line) when set.
	ErrorSite string
	// LatencyMedianMS and LatencySigma describe a log-normal latency.
	LatencyMedianMS float64
	LatencySigma    float64
}

// Healthy is a typical healthy behaviour: 0.5 % exceptions, ~20 ms median latency.
var Healthy = Behaviour{ErrorRate: 0.005, ErrorCategory: schemas.ErrException, LatencyMedianMS: 20, LatencySigma: 0.35}

// Block is a block inside a component; a component without blocks has one Block with an empty name.
type Block struct {
	Name string
	// Share of the component's requests that go through this block.
	Share float64
	// Versions maps a version to its behaviour. A version missing here behaves as Healthy.
	Versions map[string]Behaviour
	// Active is the version running now. The simulated deployer changes it on commands.
	Active string
}

// Component is one function or endpoint with its request rate.
type Component struct {
	Name   string
	RPS    float64
	Blocks []*Block
}

// Service is a simulated service.
type Service struct {
	Name       string
	Cohort     string
	Components []*Component
	rng        *rand.Rand
	seq        uint64
}

// New returns a service whose randomness comes from seed.
func New(name string, seed uint64, comps ...*Component) *Service {
	return &Service{Name: name, Components: comps, rng: rand.New(rand.NewPCG(seed, seed^0x5ca1be1))}
}

// Component returns the named component, or nil.
func (s *Service) Component(name string) *Component {
	for _, c := range s.Components {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Block returns the named block of the named component, or nil.
func (s *Service) Block(comp, block string) *Block {
	c := s.Component(comp)
	if c == nil {
		return nil
	}
	for _, b := range c.Blocks {
		if b.Name == block {
			return b
		}
	}
	return nil
}

// SetVersion switches every block of every component to version (a whole-application deploy).
func (s *Service) SetVersion(v string) {
	for _, c := range s.Components {
		for _, b := range c.Blocks {
			b.Active = v
		}
	}
}

// Tick generates the requests of the event-time interval [from, from+d) and appends them to dst.
// The count per component is Poisson-distributed around RPS·d.
func (s *Service) Tick(dst []schemas.TelemetryEvent, from time.Time, d time.Duration) []schemas.TelemetryEvent {
	for _, c := range s.Components {
		n := poisson(s.rng, c.RPS*d.Seconds())
		for i := 0; i < n; i++ {
			b := pick(s.rng, c.Blocks)
			beh, ok := b.Versions[b.Active]
			if !ok {
				beh = Healthy
			}
			ts := from.Add(time.Duration(s.rng.Int64N(int64(d))))
			lat := beh.LatencyMedianMS * math.Exp(beh.LatencySigma*s.rng.NormFloat64())
			s.seq++
			ev := schemas.TelemetryEvent{
				ID:        s.Name + "-" + strconv.FormatUint(s.seq, 36),
				TS:        ts.UTC(),
				Service:   s.Name,
				Component: c.Name,
				Block:     b.Name,
				Version:   b.Active,
				Cohort:    s.Cohort,
				LatencyMS: &lat,
			}
			if s.rng.Float64() < beh.ErrorRate {
				ev.Error = beh.ErrorCategory
				if ev.Error == "" {
					ev.Error = schemas.ErrException
				}
				ev.ErrorSite = beh.ErrorSite
			}
			dst = append(dst, ev)
		}
	}
	return dst
}

func pick(r *rand.Rand, bs []*Block) *Block {
	if len(bs) == 1 {
		return bs[0]
	}
	u := r.Float64()
	total := 0.0
	for _, b := range bs {
		total += b.Share
	}
	for _, b := range bs {
		u -= b.Share / total
		if u < 0 {
			return b
		}
	}
	return bs[len(bs)-1]
}

// poisson draws from a Poisson distribution (Knuth for small means, a normal approximation above 50).
func poisson(r *rand.Rand, mean float64) int {
	if mean <= 0 {
		return 0
	}
	if mean > 50 {
		n := int(math.Round(mean + math.Sqrt(mean)*r.NormFloat64()))
		return max(n, 0)
	}
	l := math.Exp(-mean)
	k, p := 0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// Traffic generates the requests of the event-time interval [from, from+d) in 100 ms ticks.
func (s *Service) Traffic(from time.Time, d time.Duration) []schemas.TelemetryEvent {
	var evs []schemas.TelemetryEvent
	for t := from; t.Before(from.Add(d)); t = t.Add(100 * time.Millisecond) {
		evs = s.Tick(evs, t, 100*time.Millisecond)
	}
	return evs
}
