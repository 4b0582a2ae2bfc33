// Package logactuator is the built-in `log` actuator: it writes each command, with all its fields,
// to an injected *slog.Logger and does nothing else. It is the actuator of dry runs, demos and
// services whose rollbacks a person carries out, and an audit trail beside another actuator (with
// actuate.Multi).
package logactuator

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/schemas"
)

// Message is the log message of an actuated command, for whoever greps for it.
const Message = "rollback command"

// DefaultRemember is how many recent command ids the actuator remembers to log a repeat at Debug
// rather than as a second command at Info.
const DefaultRemember = 1024

// Actuator is the log actuator. It is safe for concurrent use.
//
// Logging itself never fails, so the log actuator is never the reason a command is retried. It does
// refuse what every other actuator refuses — an invalid or expired command (permanent) and a
// cancelled ctx (retryable) — so a pipeline tried out with it behaves as it will in production.
type Actuator struct {
	log *slog.Logger
	now func() time.Time

	mu    sync.Mutex
	seen  map[string]struct{}
	order []string // ring of remembered ids, oldest at next
	next  int
}

var _ actuate.Actuator = (*Actuator)(nil)

// Option configures an Actuator.
type Option func(*Actuator)

// WithClock sets the clock that decides whether a command has expired (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(a *Actuator) {
		if now != nil {
			a.now = now
		}
	}
}

// WithRemember sets how many recent command ids are remembered (default DefaultRemember; at least 1).
func WithRemember(n int) Option {
	return func(a *Actuator) {
		if n >= 1 {
			a.order = make([]string, n)
		}
	}
}

// New returns a log actuator writing to log (nil: discard).
func New(log *slog.Logger, opts ...Option) *Actuator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Actuator{log: log, now: time.Now, seen: map[string]struct{}{}, order: make([]string, DefaultRemember)}
	for _, o := range opts {
		o(a)
	}
	return a
}

// Actuate logs the command at Info, once per command id; a repeat is logged at Debug.
func (a *Actuator) Actuate(ctx context.Context, cmd schemas.RollbackCommand) error {
	if err := actuate.ContextErr(ctx); err != nil {
		return err
	}
	if err := actuate.Check(&cmd, a.now()); err != nil {
		a.log.LogAttrs(ctx, slog.LevelWarn, "rollback command refused", slog.String("command_id", cmd.ID),
			slog.String("target", cmd.Target()), slog.String("error", err.Error()))
		return err
	}
	level := slog.LevelInfo
	if !a.remember(cmd.ID) {
		level = slog.LevelDebug
	}
	attrs := []slog.Attr{
		slog.String("command_id", cmd.ID),
		slog.String("decision_id", cmd.DecisionID),
		slog.String("incident_id", cmd.IncidentID),
		slog.String("action", cmd.Action),
		slog.String("granularity", cmd.Granularity),
		slog.String("target", cmd.Target()),
		slog.String("service", cmd.Service),
		slog.String("component", cmd.Component),
		slog.String("block", cmd.Block),
		slog.String("from_version", cmd.FromVersion),
		slog.String("to_version", cmd.ToVersion),
		slog.String("reason", cmd.Reason),
		slog.Time("issued_at", cmd.IssuedAt),
	}
	if cmd.ExpiresAt != nil {
		attrs = append(attrs, slog.Time("expires_at", *cmd.ExpiresAt))
	}
	if level == slog.LevelDebug {
		attrs = append(attrs, slog.Bool("repeat", true))
	}
	a.log.LogAttrs(ctx, level, Message, attrs...)
	return nil
}

// remember records id and reports whether it is new.
func (a *Actuator) remember(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.seen[id]; ok {
		return false
	}
	if old := a.order[a.next]; old != "" {
		delete(a.seen, old)
	}
	a.order[a.next] = id
	a.next = (a.next + 1) % len(a.order)
	a.seen[id] = struct{}{}
	return true
}
