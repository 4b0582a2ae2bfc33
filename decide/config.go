package decide

import (
	"errors"
	"fmt"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Config configures the decision engine. Every field has a working default (DefaultConfig); a
// manifest's own settings (rollback_window, dry_run, granularity) take precedence for its service.
type Config struct {
	// DefaultRollbackWindow is how long after a deploy an anomaly may roll the change back without a
	// person approving it, for services whose manifest sets no rollback_window. After it, decisions
	// are `recommend`. Default 15m.
	DefaultRollbackWindow schemas.Duration `json:"default_rollback_window" yaml:"default_rollback_window"`

	// DryRun marks every decision as a dry run: recorded and published on decision.<svc>, never
	// actuated. A manifest's dry_run: true does the same for one service. Default false.
	DryRun bool `json:"dry_run" yaml:"dry_run"`

	// DefaultGranularity applies to a component that telemetry reports but the service's manifest
	// does not list: fine, medium or coarse. Default medium (the component's previous version), the
	// smallest granularity that needs no block map.
	DefaultGranularity string `json:"default_granularity" yaml:"default_granularity"`

	// RollbackOnInvalidInput lets an error-rate anomaly of category invalid_input (client errors) roll
	// back. Default false: a burst of bad requests is not a regression of the code, and rolling back
	// would not stop it.
	RollbackOnInvalidInput bool `json:"rollback_on_invalid_input" yaml:"rollback_on_invalid_input"`

	// IncidentQuietPeriod closes an incident that received no anomaly for this long (event time); a
	// later anomaly of the same target and deploy opens a new incident with a new decision. Until
	// then further anomalies of the burst are attached to the incident quietly. Default 30m.
	IncidentQuietPeriod schemas.Duration `json:"incident_quiet_period" yaml:"incident_quiet_period"`

	// MaxDeploysPerService bounds the deploys remembered per service for attribution (the newest
	// are kept). Version history is kept separately and is not bounded by this. Default 32.
	MaxDeploysPerService int `json:"max_deploys_per_service" yaml:"max_deploys_per_service"`
}

// DefaultConfig returns the configuration scalpel runs with when nothing is configured.
func DefaultConfig() Config {
	return Config{
		DefaultRollbackWindow: schemas.Duration(15 * time.Minute),
		DefaultGranularity:    schemas.GranularityMedium,
		IncidentQuietPeriod:   schemas.Duration(30 * time.Minute),
		MaxDeploysPerService:  32,
	}
}

// ErrInvalidConfig is wrapped by every error Config.Validate returns.
var ErrInvalidConfig = errors.New("invalid decide config")

// Validate reports the first problem of the configuration, in words that say how to fix it.
func (c Config) Validate() error {
	var errs []error
	if c.DefaultRollbackWindow <= 0 {
		errs = append(errs, fmt.Errorf("default_rollback_window must be a positive duration such as \"15m\", got %q", time.Duration(c.DefaultRollbackWindow)))
	}
	if !validGranularity(c.DefaultGranularity) {
		errs = append(errs, fmt.Errorf("default_granularity must be fine, medium or coarse, got %q", c.DefaultGranularity))
	}
	if c.IncidentQuietPeriod <= 0 {
		errs = append(errs, fmt.Errorf("incident_quiet_period must be a positive duration such as \"30m\", got %q", time.Duration(c.IncidentQuietPeriod)))
	}
	if c.MaxDeploysPerService < 1 {
		errs = append(errs, fmt.Errorf("max_deploys_per_service must be at least 1, got %d", c.MaxDeploysPerService))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return nil
}

func validGranularity(g string) bool {
	switch g {
	case schemas.GranularityFine, schemas.GranularityMedium, schemas.GranularityCoarse:
		return true
	}
	return false
}
