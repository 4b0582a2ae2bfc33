package webhook

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Defaults of Config.
const (
	DefaultTimeout        = 5 * time.Second
	DefaultMaxElapsed     = 30 * time.Second
	DefaultInitialBackoff = 200 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
)

// Config says where and how one service's commands are posted.
type Config struct {
	// URL receives the POSTs (http or https). Required.
	URL string `json:"url" yaml:"url"`
	// Secret is the HMAC-SHA256 key the receiver verifies X-Scalpel-Signature with. Prefer
	// SecretEnv: a config file is read by more people than a secret should be.
	Secret string `json:"secret,omitempty" yaml:"secret,omitempty"`
	// SecretEnv names an environment variable holding the secret; it wins over Secret when set.
	// One of Secret or SecretEnv is required: an unsigned rollback request is one anybody could
	// forge.
	SecretEnv string `json:"secret_env,omitempty" yaml:"secret_env,omitempty"`
	// Timeout bounds one attempt (connect, send, response headers and the first KiB of the body).
	// Default 5s.
	Timeout schemas.Duration `json:"timeout" yaml:"timeout"`
	// MaxElapsed bounds every attempt of one Actuate call together, backoff included; when it runs
	// out the last failure is returned (retryable) and the hand-off decides whether to try again.
	// Default 30s.
	MaxElapsed schemas.Duration `json:"max_elapsed" yaml:"max_elapsed"`
	// InitialBackoff is the wait after the first failed attempt; it doubles up to MaxBackoff, and
	// each wait is drawn uniformly from [wait/2, wait] (jitter, so that receivers recovering from an
	// outage are not hit by every sender in the same instant). Default 200ms.
	InitialBackoff schemas.Duration `json:"initial_backoff" yaml:"initial_backoff"`
	// MaxBackoff caps a single wait. A receiver's Retry-After is honoured up to this cap. Default 5s.
	MaxBackoff schemas.Duration `json:"max_backoff" yaml:"max_backoff"`
}

// DefaultConfig returns a Config with every default and no URL or secret.
func DefaultConfig() Config {
	return Config{
		Timeout:        schemas.Duration(DefaultTimeout),
		MaxElapsed:     schemas.Duration(DefaultMaxElapsed),
		InitialBackoff: schemas.Duration(DefaultInitialBackoff),
		MaxBackoff:     schemas.Duration(DefaultMaxBackoff),
	}
}

// Inherit returns c with every unset field taken from def, so that a per-service entry only
// states what differs from the default one (typically the URL).
func (c Config) Inherit(def Config) Config {
	if c.URL == "" {
		c.URL = def.URL
	}
	if c.Secret == "" && c.SecretEnv == "" {
		c.Secret, c.SecretEnv = def.Secret, def.SecretEnv
	}
	for _, f := range []struct{ dst, src *schemas.Duration }{
		{&c.Timeout, &def.Timeout}, {&c.MaxElapsed, &def.MaxElapsed},
		{&c.InitialBackoff, &def.InitialBackoff}, {&c.MaxBackoff, &def.MaxBackoff},
	} {
		if *f.dst == 0 {
			*f.dst = *f.src
		}
	}
	return c
}

// Validate reports every problem of c, joined. It does not read SecretEnv's variable: the file may
// be checked on a machine that does not hold the secret.
func (c Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("url: required"))
	} else if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("url %q: want an absolute http or https URL", c.URL))
	}
	if c.Secret == "" && c.SecretEnv == "" {
		errs = append(errs, errors.New("secret or secret_env: required (requests are signed)"))
	}
	for _, f := range []struct {
		name string
		d    schemas.Duration
	}{{"timeout", c.Timeout}, {"max_elapsed", c.MaxElapsed}, {"initial_backoff", c.InitialBackoff}, {"max_backoff", c.MaxBackoff}} {
		if f.d <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be > 0, got %s", f.name, time.Duration(f.d)))
		}
	}
	if c.InitialBackoff > c.MaxBackoff {
		errs = append(errs, fmt.Errorf("initial_backoff %s: must be <= max_backoff %s",
			time.Duration(c.InitialBackoff), time.Duration(c.MaxBackoff)))
	}
	return errors.Join(errs...)
}

// secret resolves the signing key.
func (c Config) secret() (string, error) {
	if c.SecretEnv != "" {
		s := os.Getenv(c.SecretEnv)
		if s == "" {
			return "", fmt.Errorf("secret_env %s: variable unset or empty", c.SecretEnv)
		}
		return s, nil
	}
	if c.Secret == "" {
		return "", errors.New("no secret configured")
	}
	return c.Secret, nil
}
