package detect

import (
	"fmt"
	"strings"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// tuning is what a service's series are detected with (Config.Services): the configuration
// with the service's entry applied, and what the detector derives from it.
type tuning struct {
	cfg Config
	// note is what an anomaly of the service says of its entry in Config.Services ("" for none).
	note         string
	latWarmup    int64 // buckets of a version's start its latency is not compared in (Config.LatencyWarmup)
	watch        int64 // buckets a version is compared with the version before it (Config.DeployWatch; 0: forever)
	maxExcursion uint8 // the longest excursion a latency test respects, in buckets (Config.LatencyExcursionMax)
	tested       [numCategories]bool
}

func newTuning(cfg Config) *tuning {
	width := time.Duration(cfg.BucketWidth)
	t := &tuning{
		cfg:          cfg,
		latWarmup:    int64((time.Duration(cfg.LatencyWarmup) + width - 1) / width),
		watch:        int64(time.Duration(cfg.DeployWatch) / width),
		maxExcursion: uint8(time.Duration(cfg.LatencyExcursionMax) / width),
	}
	for c := range t.tested {
		t.tested[c] = c != categoryInvalidInput || cfg.InvalidInputTriggers
	}
	return t
}

// setTunings derives the detector's tunings from cfg: one for every service Config.Services
// names, and one for all the others.
func (d *Detector) setTunings(cfg Config) {
	d.base = newTuning(cfg.For(""))
	d.anyWarmup = d.base.latWarmup > 0
	d.tunings = nil
	for svc := range cfg.Services {
		if d.tunings == nil {
			d.tunings = make(map[string]*tuning, len(cfg.Services))
		}
		t := newTuning(cfg.For(svc))
		if set := cfg.Services[svc].describe(); set != "" {
			t.note = "detected with the service's own parameters (detect.services." + svc + "): " + set
		}
		d.tunings[svc] = t
		d.anyWarmup = d.anyWarmup || t.latWarmup > 0
	}
}

// tune is what service's series are detected with.
func (d *Detector) tune(service string) *tuning {
	if d.tunings != nil {
		if t, ok := d.tunings[service]; ok {
			return t
		}
	}
	return d.base
}

// describe lists the parameters o sets, as the configuration names them.
func (o ServiceConfig) describe() string {
	var set []string
	dur := func(name string, v *schemas.Duration) {
		if v != nil {
			set = append(set, name+" "+time.Duration(*v).String())
		}
	}
	num := func(name string, v *float64) {
		if v != nil {
			set = append(set, fmt.Sprintf("%s %g", name, *v))
		}
	}
	dur("deploy_watch", o.DeployWatch)
	dur("latency_warmup", o.LatencyWarmup)
	dur("latency_excursion_max", o.LatencyExcursionMax)
	if o.InvalidInputTriggers != nil {
		set = append(set, fmt.Sprintf("invalid_input_triggers %v", *o.InvalidInputTriggers))
	}
	num("error_min_effect", o.ErrorMinEffect)
	num("error_min_abs_effect", o.ErrorMinAbsEffect)
	num("error_gross_factor", o.ErrorGrossFactor)
	num("latency_min_effect", o.LatencyMinEffect)
	num("latency_tolerance", o.LatencyTolerance)
	num("latency_profile_tolerance", o.LatencyProfileTolerance)
	num("latency_gross_factor", o.LatencyGrossFactor)
	num("throughput_min_drop", o.ThroughputMinDrop)
	return strings.Join(set, ", ")
}

// latencyTolerance is the slowdown the latency tests against a baseline of this kind accept
// under H0 (refPreviousVersion, refBaselineCohort or refOwnProfile): LatencyTolerance against a
// previous version, LatencyProfileTolerance against anything else.
func (tn *tuning) latencyTolerance(kind string) float64 {
	if kind == refPreviousVersion {
		return tn.cfg.LatencyTolerance
	}
	return tn.cfg.LatencyProfileTolerance
}
