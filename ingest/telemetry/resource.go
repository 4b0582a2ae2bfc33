package telemetry

import (
	"bytes"
	"fmt"
	"os"
	"runtime/metrics"
	"strconv"
	"time"
)

// WithResourceSampling publishes the process's cpu and resident memory every interval, as a
// metrics scraper would, as component's: one resource sample (cpu, process_rps, mem_mb and
// nothing of a request) per version of component the publisher sent telemetry for since the
// last one. cpu is in cores, the process's cpu time over the interval divided by its length;
// process_rps the requests the publisher recorded over the same interval, every component's, per
// second; mem_mb the resident set. 15 s is a scraper's usual interval; 0 turns it off (default).
//
// scalpel compares a component's cpu with its previous version's at the load the sample gives,
// the process's whole load, so a busier other component of the same process is not this one's
// regression. The cpu of a process that serves several components cannot be split among them:
// name the component whose version changes with the process's code (the entry point every
// request passes through, or the one the process runs), since a cpu regression is rolled back
// as that component's. Instrument every component the process serves with this publisher, or
// process_rps misses the load of those that are not.
func WithResourceSampling(interval time.Duration, component string) Option {
	return func(p *Publisher) error {
		if interval < 0 {
			return fmt.Errorf("telemetry: resource sampling interval must be >= 0, got %v", interval)
		}
		if interval > 0 && !tokenRe.MatchString(component) {
			return fmt.Errorf("telemetry: resource sampling component %q: %w", component, ErrBadName)
		}
		p.resEvery, p.resComp = interval, component
		return nil
	}
}

// resourceSampler turns the process's cumulative cpu time into cores over each interval.
type resourceSampler struct {
	cpu  time.Duration // cpu time at the last sample
	wall time.Time
	ok   bool
}

// sample returns the cores used since the previous sample (ok false for the first, and when the
// platform tells no cpu time) and the resident memory in MiB (0 when unknown).
func (r *resourceSampler) sample(now time.Time) (cores, memMB float64, ok bool) {
	c, cok := processCPU()
	if cok && r.ok && now.After(r.wall) {
		cores, ok = max(0, (c-r.cpu).Seconds()/now.Sub(r.wall).Seconds()), true
	}
	r.cpu, r.wall, r.ok = c, now, cok
	return cores, residentMB(), ok
}

// residentMB is the process's resident memory in MiB: /proc/self/statm where there is one (the
// resident set, as the kernel counts it), else what the Go runtime has mapped and not released.
func residentMB() float64 {
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := bytes.Fields(b); len(f) > 1 {
			if pages, err := strconv.ParseUint(string(f[1]), 10, 64); err == nil {
				return float64(pages) * float64(os.Getpagesize()) / (1 << 20)
			}
		}
	}
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return float64(s[0].Value.Uint64()-s[1].Value.Uint64()) / (1 << 20)
}

// appendResource writes one resource sample as JSON: cpu with the process's load it was
// measured at (process_rps), and memory.
func (p *Publisher) appendResource(b []byte, ts time.Time, comp, version string, cores, rps, memMB float64, cpuOK bool) []byte {
	b = p.appendHead(b, ts, comp, "", version)
	if cpuOK {
		b = append(b, `,"cpu":`...)
		b = appendFloat(b, cores)
		b = append(b, `,"process_rps":`...)
		b = appendFloat(b, rps)
	}
	if memMB > 0 {
		b = append(b, `,"mem_mb":`...)
		b = appendFloat(b, memMB)
	}
	return append(b, '}')
}
