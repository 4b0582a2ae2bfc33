// Package actuate owns the last stage: turning an actionable Decision into RollbackCommands and
// carrying each one out through an Actuator — the nats command publisher (natsactuator), the log
// (logactuator), and the plug-ins a service is configured with. actuatortest is the conformance kit
// every actuator runs through.
//
// It imports schemas and nothing of the other stages: decide hands it decisions through the wiring,
// and deployers hear from it only through subjects and the scalpel_active bucket.
package actuate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Actuator carries out one rollback command.
//
// Contract (checked by actuatortest.Run):
//   - Actuate is idempotent per command id: the same command twice has one visible effect, since the
//     hand-off retries and a crashed decider re-emits the same ids;
//   - a nil error means the effect is in place (or was already);
//   - an error is classified with Permanent or Retryable; an unclassified error counts as
//     retryable, and callers retry with backoff before giving up to rejected.actuate;
//   - an invalid or expired command is a permanent error with no effect;
//   - a cancelled or expired ctx stops the work and returns a retryable error.
type Actuator interface {
	Actuate(ctx context.Context, cmd schemas.RollbackCommand) error
}

// ActuatorFunc adapts a function to an Actuator.
type ActuatorFunc func(ctx context.Context, cmd schemas.RollbackCommand) error

// Actuate calls f.
func (f ActuatorFunc) Actuate(ctx context.Context, cmd schemas.RollbackCommand) error {
	return f(ctx, cmd)
}

// Sentinel errors callers branch on.
var (
	// ErrExpired: the command's expires_at has passed; the situation it was decided for is gone.
	ErrExpired = errors.New("command expired")
	// ErrSuperseded: a newer command for the same target has already taken effect; carrying out
	// this older one would undo it.
	ErrSuperseded = errors.New("command superseded by a newer one")
)

// ActuateError classifies a failure for the retry decision: Permanent errors are never retried
// (JetStream: TermWithReason, then rejected.actuate), retryable ones are (NakWithDelay).
type ActuateError struct {
	// Permanent is true when retrying cannot help: a bad command, a refused request.
	Permanent bool
	// Err is the underlying failure.
	Err error
}

// Error prefixes the cause with its class, so a log line says whether it will be retried.
func (e *ActuateError) Error() string {
	class := "retryable"
	if e.Permanent {
		class = "permanent"
	}
	if e.Err == nil {
		return class + " actuate error"
	}
	return class + ": " + e.Err.Error()
}

// Unwrap returns the cause, so errors.Is sees sentinels through the classification.
func (e *ActuateError) Unwrap() error { return e.Err }

// Permanent marks err as not worth retrying. It returns nil for nil; it reclassifies an error that
// was already classified (the outermost classification wins).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &ActuateError{Permanent: true, Err: err}
}

// Retryable marks err as worth retrying. It returns nil for nil.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return &ActuateError{Permanent: false, Err: err}
}

// IsPermanent reports whether err was classified permanent. Unclassified errors are retryable: the
// retry budget and the poison queue bound the cost of being wrong, whereas dropping a rollback
// because of a transient failure nobody classified would leave a bad version serving.
func IsPermanent(err error) bool {
	var ae *ActuateError
	if errors.As(err, &ae) {
		return ae.Permanent
	}
	return false
}

// Check reports, as a permanent error, what makes a command unfit to actuate at now: a schema
// violation (matching schemas.ErrInvalid) or an expiry (ErrExpired). Actuators call it first so that
// every plug-in refuses the same commands.
func Check(cmd *schemas.RollbackCommand, now time.Time) error {
	if err := cmd.Validate(); err != nil {
		return Permanent(fmt.Errorf("command %s: %w", cmd.ID, err))
	}
	if cmd.ExpiresAt != nil && !now.Before(*cmd.ExpiresAt) {
		return Permanent(fmt.Errorf("command %s for %s: %w at %s (now %s)", cmd.ID, cmd.Target(), ErrExpired,
			cmd.ExpiresAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)))
	}
	return nil
}

// ContextErr returns ctx's error as a retryable ActuateError, or nil while ctx is live. A caller
// that gave up is no verdict on the command, so it may be retried.
func ContextErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return Retryable(err)
	}
	return nil
}

// Multi runs every actuator in order, even after one fails, and succeeds only when all do. A
// failure joins every error; it is permanent only when every failure is, because a retry re-runs
// all of them — safe, since each is idempotent — and one retryable failure deserves that retry.
func Multi(actuators ...Actuator) Actuator {
	list := append([]Actuator(nil), actuators...)
	return ActuatorFunc(func(ctx context.Context, cmd schemas.RollbackCommand) error {
		var (
			errs      []error
			permanent = true
		)
		for i, a := range list {
			if a == nil {
				continue
			}
			if err := a.Actuate(ctx, cmd); err != nil {
				errs = append(errs, fmt.Errorf("actuator %d: %w", i, err))
				permanent = permanent && IsPermanent(err)
			}
		}
		if len(errs) == 0 {
			return nil
		}
		joined := errors.Join(errs...)
		if permanent {
			return Permanent(joined)
		}
		return Retryable(joined)
	})
}
