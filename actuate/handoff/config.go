package handoff

import (
	"errors"
	"fmt"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Config of the hand-off: how long a failing decision is retried before it is rejected, and how
// long a handled decision id is remembered.
type Config struct {
	// MaxRetries is how many times a decision whose commands failed with a retryable error is run
	// again, in process and with backoff, before it goes to rejected.actuate. Permanent failures
	// are never retried. Default 5.
	MaxRetries int `json:"max_retries" yaml:"max_retries"`
	// InitialInterval is the wait before the first retry; it doubles up to MaxInterval, with ±50 %
	// jitter. Default 500ms.
	InitialInterval schemas.Duration `json:"initial_interval" yaml:"initial_interval"`
	// MaxInterval caps one wait between retries. Default 10s.
	MaxInterval schemas.Duration `json:"max_interval" yaml:"max_interval"`
	// MaxElapsed bounds the retries of one decision: no retry starts after it (the attempt running
	// then may still finish). Default 2m.
	MaxElapsed schemas.Duration `json:"max_elapsed" yaml:"max_elapsed"`
	// DedupeWindow is how long a decision id that was handled (carried out, skipped or rejected)
	// is remembered, so a redelivery or a re-made decision is not actuated again. The actuators
	// are idempotent anyway; this spares the receivers the repeat. Default 10m.
	DedupeWindow schemas.Duration `json:"dedupe_window" yaml:"dedupe_window"`
	// AckWait is how long the broker waits for the verdict on one decision before delivering it
	// again; it must cover MaxElapsed plus the slowest actuator attempt. Default 5m.
	AckWait schemas.Duration `json:"ack_wait" yaml:"ack_wait"`
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		MaxRetries:      5,
		InitialInterval: schemas.Duration(500 * time.Millisecond),
		MaxInterval:     schemas.Duration(10 * time.Second),
		MaxElapsed:      schemas.Duration(2 * time.Minute),
		DedupeWindow:    schemas.Duration(10 * time.Minute),
		AckWait:         schemas.Duration(5 * time.Minute),
	}
}

// Validate reports every problem of c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.MaxRetries < 0 {
		errs = append(errs, fmt.Errorf("max_retries: must be >= 0, got %d", c.MaxRetries))
	}
	for _, f := range []struct {
		name string
		d    schemas.Duration
	}{{"initial_interval", c.InitialInterval}, {"max_interval", c.MaxInterval}, {"max_elapsed", c.MaxElapsed},
		{"dedupe_window", c.DedupeWindow}, {"ack_wait", c.AckWait}} {
		if f.d <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be > 0, got %s", f.name, time.Duration(f.d)))
		}
	}
	if c.InitialInterval > c.MaxInterval {
		errs = append(errs, fmt.Errorf("initial_interval %s: must be <= max_interval %s",
			time.Duration(c.InitialInterval), time.Duration(c.MaxInterval)))
	}
	if c.AckWait <= c.MaxElapsed {
		errs = append(errs, fmt.Errorf("ack_wait %s: must exceed max_elapsed %s, or the broker redelivers a decision still being retried",
			time.Duration(c.AckWait), time.Duration(c.MaxElapsed)))
	}
	return errors.Join(errs...)
}
