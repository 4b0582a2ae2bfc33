package exec

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Defaults of Config.
const (
	DefaultTimeout   = time.Minute
	DefaultMaxStderr = 4 << 10
)

// DefaultPermanentExitCodes: 2 is the conventional "usage error" exit of shells and most CLIs
// (kubectl included): the command was called wrongly and will be called wrongly again.
var DefaultPermanentExitCodes = []int{2}

// Config says which command carries out one service's rollbacks.
type Config struct {
	// Argv is the program and its arguments, run directly (no shell: the command's fields reach it
	// through the environment, never through string interpolation). Required. Example:
	// [kubectl, rollout, undo, deployment/checkout].
	Argv []string `json:"argv" yaml:"argv"`
	// Timeout bounds one run; the process group is killed when it runs out (a retryable failure).
	// Default 1m.
	Timeout schemas.Duration `json:"timeout" yaml:"timeout"`
	// PermanentExitCodes are exit codes that mean "retrying will not help"; any other non-zero exit
	// is retryable. Default [2].
	PermanentExitCodes []int `json:"permanent_exit_codes" yaml:"permanent_exit_codes"`
	// Dir is the working directory (default: scalpel's).
	Dir string `json:"dir,omitempty" yaml:"dir,omitempty"`
	// Env adds KEY=VALUE entries to the environment the command inherits from scalpel; the
	// SCALPEL_* variables of the command are set after them and win.
	Env []string `json:"env,omitempty" yaml:"env,omitempty"`
	// MaxStderr bounds how many bytes of stderr (the last ones) are kept for the error. Default 4096.
	MaxStderr int `json:"max_stderr" yaml:"max_stderr"`
}

// DefaultConfig returns a Config with every default and no Argv.
func DefaultConfig() Config {
	return Config{
		Timeout:            schemas.Duration(DefaultTimeout),
		PermanentExitCodes: append([]int(nil), DefaultPermanentExitCodes...),
		MaxStderr:          DefaultMaxStderr,
	}
}

// Inherit returns c with every unset field taken from def, so a per-service entry only states
// what differs (typically Argv).
func (c Config) Inherit(def Config) Config {
	if len(c.Argv) == 0 {
		c.Argv = append([]string(nil), def.Argv...)
	}
	if c.Timeout == 0 {
		c.Timeout = def.Timeout
	}
	if c.PermanentExitCodes == nil {
		c.PermanentExitCodes = append([]int(nil), def.PermanentExitCodes...)
	}
	if c.Dir == "" {
		c.Dir = def.Dir
	}
	if c.Env == nil {
		c.Env = append([]string(nil), def.Env...)
	}
	if c.MaxStderr == 0 {
		c.MaxStderr = def.MaxStderr
	}
	return c
}

// Validate reports every problem of c, joined.
func (c Config) Validate() error {
	var errs []error
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		errs = append(errs, errors.New("argv: required (program and arguments)"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("timeout: must be > 0, got %s", time.Duration(c.Timeout)))
	}
	for _, code := range c.PermanentExitCodes {
		if code < 1 || code > 255 {
			errs = append(errs, fmt.Errorf("permanent_exit_codes: %d is not a failing exit code (1-255)", code))
		}
	}
	for _, kv := range c.Env {
		if strings.IndexByte(kv, '=') < 1 {
			errs = append(errs, fmt.Errorf("env %q: want KEY=VALUE", kv))
		}
	}
	if c.MaxStderr < 0 {
		errs = append(errs, fmt.Errorf("max_stderr: must be >= 0, got %d", c.MaxStderr))
	}
	return errors.Join(errs...)
}
