// Package exec is the built-in `exec` actuator: it runs a configured program (kubectl rollout undo,
// a deploy script) once per command, with the command's fields in SCALPEL_* environment variables
// and the command as JSON on stdin.
//
// Exit 0 is success; an exit code listed in Config.PermanentExitCodes is a permanent failure; any
// other failure — another exit code, a timeout, a signal — is retryable. The tail of stderr is
// quoted in the error, so the reason a rollback failed reaches rejected.actuate. A program cannot
// tell whether it already ran for a command, so delivery is at least once: scripts should be
// idempotent (kubectl rollout undo to a named revision is) or dedupe by SCALPEL_COMMAND_ID.
package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	osexec "os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/schemas"
)

// ErrExit is wrapped by the error of a run that exited non-zero.
var ErrExit = errors.New("exec: command failed")

// Actuator is the exec actuator of one program. It is safe for concurrent use.
type Actuator struct {
	cfg Config
	log *slog.Logger
	now func() time.Time
}

var _ actuate.Actuator = (*Actuator)(nil)

// Option configures an Actuator.
type Option func(*Actuator) error

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(a *Actuator) error {
		if l == nil {
			return errors.New("exec: nil logger")
		}
		a.log = l
		return nil
	}
}

// WithClock sets the clock of expiry checks (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(a *Actuator) error {
		if now == nil {
			return errors.New("exec: nil clock")
		}
		a.now = now
		return nil
	}
}

// New returns an exec actuator for cfg, whose unset fields take DefaultConfig's values.
func New(cfg Config, opts ...Option) (*Actuator, error) {
	cfg = cfg.Inherit(DefaultConfig())
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	a := &Actuator{cfg: cfg, log: slog.New(slog.DiscardHandler), now: time.Now}
	for _, o := range opts {
		if err := o(a); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Env returns the SCALPEL_* variables a command is run with, as KEY=VALUE.
func Env(cmd *schemas.RollbackCommand) []string {
	return []string{
		"SCALPEL_COMMAND_ID=" + cmd.ID,
		"SCALPEL_ACTION=" + cmd.Action,
		"SCALPEL_SERVICE=" + cmd.Service,
		"SCALPEL_COMPONENT=" + cmd.Component,
		"SCALPEL_BLOCK=" + cmd.Block,
		"SCALPEL_FROM_VERSION=" + cmd.FromVersion,
		"SCALPEL_TO_VERSION=" + cmd.ToVersion,
		"SCALPEL_GRANULARITY=" + cmd.Granularity,
		"SCALPEL_REASON=" + cmd.Reason,
		"SCALPEL_DECISION_ID=" + cmd.DecisionID,
		"SCALPEL_INCIDENT_ID=" + cmd.IncidentID,
		"SCALPEL_TARGET=" + cmd.Target(),
	}
}

// Actuate runs the program once for cmd.
func (a *Actuator) Actuate(ctx context.Context, cmd schemas.RollbackCommand) error {
	if err := actuate.ContextErr(ctx); err != nil {
		return err
	}
	if err := actuate.Check(&cmd, a.now()); err != nil {
		return err
	}
	stdin, err := json.Marshal(&cmd)
	if err != nil {
		return actuate.Permanent(fmt.Errorf("encode command %s: %w", cmd.ID, err))
	}
	rctx, cancel := context.WithTimeout(ctx, time.Duration(a.cfg.Timeout))
	defer cancel()

	c := osexec.CommandContext(rctx, a.cfg.Argv[0], a.cfg.Argv[1:]...)
	c.Dir = a.cfg.Dir
	c.Env = append(append(os.Environ(), a.cfg.Env...), Env(&cmd)...)
	c.Stdin = bytes.NewReader(stdin)
	stderr := &tail{max: a.cfg.MaxStderr}
	stdout := &tail{max: a.cfg.MaxStderr}
	c.Stderr, c.Stdout = stderr, stdout
	killGroup(c)
	// A child that outlives the program (a backgrounded sleep) may hold the pipes open; do not
	// wait for it past the kill.
	c.WaitDelay = time.Second

	log := a.log.With("command_id", cmd.ID, "target", cmd.Target(), "program", a.cfg.Argv[0])
	start := time.Now()
	err = c.Run()
	log.Debug("exec actuator ran", "took", time.Since(start), "err", err, "stdout", stdout.String())
	if err == nil {
		return nil
	}
	where := fmt.Sprintf("command %s: %s", cmd.ID, strings.Join(a.cfg.Argv, " "))
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		where += ": stderr: " + msg
	}
	if cerr := ctx.Err(); cerr != nil {
		return actuate.Retryable(fmt.Errorf("%s: %w", where, cerr))
	}
	if errors.Is(rctx.Err(), context.DeadlineExceeded) {
		return actuate.Retryable(fmt.Errorf("%s: killed after %s: %w", where, time.Duration(a.cfg.Timeout), context.DeadlineExceeded))
	}
	var exitErr *osexec.ExitError
	if errors.As(err, &exitErr) {
		code := exitErr.ExitCode()
		if code > 0 && slices.Contains(a.cfg.PermanentExitCodes, code) {
			return actuate.Permanent(fmt.Errorf("%s: %w: exit %d", where, ErrExit, code))
		}
		return actuate.Retryable(fmt.Errorf("%s: %w: %v", where, ErrExit, exitErr))
	}
	// The program could not be started: missing, not executable, bad directory. A configuration
	// error, which retrying does not repair.
	return actuate.Permanent(fmt.Errorf("%s: %w", where, err))
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
	cut bool
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if t.max <= 0 {
		t.cut = t.cut || n > 0
		return n, nil
	}
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.cut = true
	}
	return n, nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cut {
		return "..." + string(t.buf)
	}
	return string(t.buf)
}
