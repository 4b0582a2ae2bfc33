// Package natsactuator is the built-in `nats` actuator: it records the desired version of a target
// in the scalpel_active bucket with compare-and-set, then publishes the command as a CloudEvent on
// rollback.cmd.<svc> with the command id as Nats-Msg-Id.
//
// It owns no topology: the ROLLBACKS stream (with a Duplicates window) and the bucket are created
// by ingest and handed in.
package natsactuator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/schemas"
)

// ErrConflict: the key kept changing under us for every compare-and-set attempt. Retryable: the
// writers racing us finish, and a later attempt sees a settled key.
var ErrConflict = errors.New("scalpel_active: compare-and-set conflict")

// Defaults of the options.
const (
	// DefaultTimeout bounds one Actuate call when the caller's ctx has no deadline.
	DefaultTimeout = 10 * time.Second
	// DefaultCASAttempts is how often a conflicting write is re-read and retried: enough for a
	// handful of concurrent writers to the same key, which is already unusual.
	DefaultCASAttempts = 5
)

// Actuator is the nats actuator. It is safe for concurrent use.
type Actuator struct {
	js          jetstream.JetStream
	kv          jetstream.KeyValue
	subj        schemas.Subjects
	log         *slog.Logger
	source      string
	timeout     time.Duration
	casAttempts int
	now         func() time.Time
}

var _ actuate.Actuator = (*Actuator)(nil)

// Option configures an Actuator.
type Option func(*Actuator) error

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(a *Actuator) error {
		if l == nil {
			return errors.New("natsactuator: nil logger")
		}
		a.log = l
		return nil
	}
}

// WithSource sets the CloudEvent source of commands (default schemas.DefaultCommandSource). Name the
// scalpel deployment (scalpel://prod-eu), not the process, so that the same command re-published by
// another instance stays the same event.
func WithSource(source string) Option {
	return func(a *Actuator) error {
		if source == "" {
			return errors.New("natsactuator: empty source")
		}
		a.source = source
		return nil
	}
}

// WithTimeout bounds one Actuate call when the caller's ctx carries no deadline (default
// DefaultTimeout).
func WithTimeout(d time.Duration) Option {
	return func(a *Actuator) error {
		if d <= 0 {
			return fmt.Errorf("natsactuator: timeout must be > 0, got %v", d)
		}
		a.timeout = d
		return nil
	}
}

// WithCASAttempts sets how many times a compare-and-set conflict is re-read and retried before
// Actuate gives up with ErrConflict (default DefaultCASAttempts).
func WithCASAttempts(n int) Option {
	return func(a *Actuator) error {
		if n < 1 {
			return fmt.Errorf("natsactuator: CAS attempts must be >= 1, got %d", n)
		}
		a.casAttempts = n
		return nil
	}
}

// WithClock sets the clock that decides whether a command has expired (default time.Now). Actuation
// happens in real time, unlike detection: an expired command must not reach a deployer.
func WithClock(now func() time.Time) Option {
	return func(a *Actuator) error {
		if now == nil {
			return errors.New("natsactuator: nil clock")
		}
		a.now = now
		return nil
	}
}

// New returns a nats actuator publishing through js to the subjects of subj and writing desired
// state to active (the scalpel_active bucket).
func New(js jetstream.JetStream, active jetstream.KeyValue, subj schemas.Subjects, opts ...Option) (*Actuator, error) {
	if js == nil {
		return nil, errors.New("natsactuator: nil JetStream")
	}
	if active == nil {
		return nil, errors.New("natsactuator: nil scalpel_active bucket")
	}
	a := &Actuator{
		js:          js,
		kv:          active,
		subj:        subj,
		log:         slog.New(slog.DiscardHandler),
		source:      schemas.DefaultCommandSource,
		timeout:     DefaultTimeout,
		casAttempts: DefaultCASAttempts,
		now:         time.Now,
	}
	for _, o := range opts {
		if err := o(a); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Actuate writes the desired state, then publishes the command.
//
// The order is KV first, then the command, because the bucket is the source of truth for
// deployers: one starting up or reconnecting reads its desired version from scalpel_active, and the
// command only tells running ones to look now. Written the other way, a crash between the two steps
// would leave a published command whose desired state no newcomer can see, and a deployer acting on
// the command could be undone by the stale value it reads on its next start. With KV first, a crash
// in between leaves correct desired state and no command; the retry finds its own command id in the
// key, skips the write, and publishes — and Nats-Msg-Id makes that publish a no-op if the first one
// did land. Either way: one KV revision and one message per command, provided the retry comes
// within the stream's Duplicates window; a retry after it may publish the command a second time,
// which deployers absorb because they dedupe by command id and the desired state is unchanged.
func (a *Actuator) Actuate(ctx context.Context, cmd schemas.RollbackCommand) error {
	if err := actuate.ContextErr(ctx); err != nil {
		return err
	}
	if err := actuate.Check(&cmd, a.now()); err != nil {
		return err
	}
	hdr, data, err := schemas.EncodeCommandEvent(&cmd, a.source)
	if err != nil {
		return actuate.Permanent(err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.timeout)
		defer cancel()
	}
	log := a.log.With("command_id", cmd.ID, "target", cmd.Target(), "action", cmd.Action)

	rev, written, err := a.writeDesired(ctx, &cmd)
	if err != nil {
		return err
	}

	subject := a.subj.RollbackCmd(cmd.Service)
	msg := &nats.Msg{Subject: subject, Header: nats.Header(hdr), Data: data}
	ack, err := a.js.PublishMsg(ctx, msg, jetstream.WithMsgID(cmd.ID))
	if err != nil {
		return classify(fmt.Errorf("publish command %s on %s: %w", cmd.ID, subject, err))
	}
	if ack.Duplicate {
		log.Debug("command already published; the stream dropped the repeat", "stream_seq", ack.Sequence)
		return nil
	}
	if written {
		log.Info("rollback command issued",
			"decision_id", cmd.DecisionID, "incident_id", cmd.IncidentID, "from", cmd.FromVersion,
			"to", cmd.ToVersion, "kv_revision", rev, "stream_seq", ack.Sequence)
	} else {
		log.Info("rollback command published after an earlier attempt wrote desired state",
			"kv_revision", rev, "stream_seq", ack.Sequence)
	}
	return nil
}

// writeDesired sets the target's key in scalpel_active to the command's desired state with
// compare-and-set. It returns the key's revision and whether this call wrote it (false when the
// key already holds this command).
func (a *Actuator) writeDesired(ctx context.Context, cmd *schemas.RollbackCommand) (uint64, bool, error) {
	key := schemas.ActiveKey(cmd.Service, cmd.Component, cmd.Block)
	val, err := json.Marshal(schemas.ActiveVersionOf(cmd))
	if err != nil {
		return 0, false, actuate.Permanent(fmt.Errorf("encode desired state of %s: %w", key, err))
	}
	for attempt := 1; attempt <= a.casAttempts; attempt++ {
		var rev uint64
		entry, err := a.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// Missing or deleted: Create handles both (it writes over a delete marker).
		case err != nil:
			return 0, false, classify(fmt.Errorf("read %s/%s: %w", schemas.BucketActive, key, err))
		default:
			rev = entry.Revision()
			var cur schemas.ActiveVersion
			if jerr := json.Unmarshal(entry.Value(), &cur); jerr != nil {
				// Someone wrote garbage; the desired state we are about to write is the repair.
				a.log.Warn("scalpel_active holds an unreadable value; overwriting it", "key", key,
					"revision", rev, "error", jerr)
			} else {
				if cur.CommandID == cmd.ID {
					return rev, false, nil
				}
				if cur.TS.After(cmd.IssuedAt) {
					return 0, false, actuate.Permanent(fmt.Errorf("%s: command %s issued %s, key holds command %s issued %s: %w",
						key, cmd.ID, cmd.IssuedAt.UTC().Format(time.RFC3339Nano), cur.CommandID,
						cur.TS.UTC().Format(time.RFC3339Nano), actuate.ErrSuperseded))
				}
			}
		}

		var newRev uint64
		if rev == 0 {
			newRev, err = a.kv.Create(ctx, key, val)
		} else {
			newRev, err = a.kv.Update(ctx, key, val, rev)
		}
		if err == nil {
			return newRev, true, nil
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			a.log.Debug("scalpel_active compare-and-set conflict; re-reading", "key", key,
				"attempt", attempt, "revision", rev)
			continue
		}
		return 0, false, classify(fmt.Errorf("write %s/%s: %w", schemas.BucketActive, key, err))
	}
	return 0, false, actuate.Retryable(fmt.Errorf("%s after %d attempts: %w", key, a.casAttempts, ErrConflict))
}

// classify sorts a NATS failure: a bad key or header can never succeed (permanent); everything else
// — timeouts, no responders while the stream's leader moves, a cancelled ctx, a missing stream or
// bucket that topology may yet create — is worth retrying with backoff.
func classify(err error) error {
	switch {
	case errors.Is(err, jetstream.ErrInvalidKey),
		errors.Is(err, nats.ErrBadSubject),
		errors.Is(err, nats.ErrMaxPayload),
		errors.Is(err, nats.ErrBadHeaderMsg):
		return actuate.Permanent(err)
	}
	return actuate.Retryable(err)
}
