package deployer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Sentinel errors callers branch on.
var (
	// ErrBadName: a service, component or block name is not a NATS-token-safe name.
	ErrBadName = errors.New("name must match [A-Za-z0-9_-]{1,64}")
	// ErrDuplicateTarget: two targets were registered under the same component/block.
	ErrDuplicateTarget = errors.New("target registered twice")
	// ErrStarted: registration after Start, which would race with commands being applied.
	ErrStarted = errors.New("deployer already started")
)

var tokenRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// AppRollbackFunc is called for a coarse command (the whole application goes to cmd.ToVersion). It
// does what only the service knows how to do — re-exec an older binary, ask the orchestrator for
// the previous release — and returns an error when it could not.
type AppRollbackFunc func(ctx context.Context, cmd schemas.RollbackCommand) error

// Defaults of the options.
const (
	// DefaultAckTimeout bounds one ack publish; a failed ack is retried (see DefaultAckAttempts).
	DefaultAckTimeout = 5 * time.Second
	// DefaultAckAttempts is how often an ack publish is tried before it is given up and logged.
	DefaultAckAttempts = 5
	// rememberCommands bounds the command ids remembered for idempotency: commands are rare, and
	// one that comes back after this many others is also caught by the per-target timestamp.
	rememberCommands = 1024
)

// Option configures a Deployer.
type Option func(*Deployer) error

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(d *Deployer) error {
		if l == nil {
			return errors.New("deployer: nil logger")
		}
		d.log = l
		return nil
	}
}

// WithInstance names this instance in acks (default: the host name and process id).
func WithInstance(name string) Option {
	return func(d *Deployer) error {
		if name == "" {
			return errors.New("deployer: empty instance name")
		}
		d.instance = name
		return nil
	}
}

// WithSubjects sets the subject prefix scalpel runs with (default: none).
func WithSubjects(s schemas.Subjects) Option {
	return func(d *Deployer) error { d.subj = s; return nil }
}

// WithClock sets the clock that decides whether a command has expired and stamps acks
// (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(d *Deployer) error {
		if now == nil {
			return errors.New("deployer: nil clock")
		}
		d.now = now
		return nil
	}
}

// WithAckTimeout bounds one ack publish (default DefaultAckTimeout).
func WithAckTimeout(t time.Duration) Option {
	return func(d *Deployer) error {
		if t <= 0 {
			return fmt.Errorf("deployer: ack timeout must be > 0, got %v", t)
		}
		d.ackTimeout = t
		return nil
	}
}

// Deployer applies scalpel's commands to the targets a service registered. Create it with New,
// register targets and hooks, then Start; Stop when the service exits.
type Deployer struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	service    string
	instance   string
	subj       schemas.Subjects
	log        *slog.Logger
	now        func() time.Time
	ackTimeout time.Duration

	mu       sync.Mutex // guards everything below
	started  bool
	targets  map[string]Target // by schemas.ActiveKey
	hooks    []AppRollbackFunc
	seen     map[string]seenCommand // command id → how it was applied and the ack it got
	seenFIFO []string
	lastTS   map[string]time.Time // target key → issued_at of the command that set it

	cmds    chan incoming
	acks    chan schemas.RollbackAck
	sub     *nats.Subscription
	watcher jetstream.KeyWatcher
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	ackHook func(schemas.RollbackAck) // tests observe acks as they are sent
}

// seenCommand remembers an applied command.
type seenCommand struct {
	ack schemas.RollbackAck
	src string
}

// incoming is a command to apply, with where it came from.
type incoming struct {
	cmd schemas.RollbackCommand
	// ack is false for the desired state read at start-up: nobody is waiting for an answer to a
	// command applied before this instance existed.
	ack bool
	src string
}

// New returns a Deployer for service on nc. Nothing is read or subscribed before Start.
func New(nc *nats.Conn, service string, opts ...Option) (*Deployer, error) {
	if nc == nil {
		return nil, errors.New("deployer: nil NATS connection")
	}
	if !tokenRe.MatchString(service) {
		return nil, fmt.Errorf("deployer: service %q: %w", service, ErrBadName)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("deployer: %w", err)
	}
	host, _ := os.Hostname()
	d := &Deployer{
		nc:         nc,
		js:         js,
		service:    service,
		instance:   fmt.Sprintf("%s-%d", host, os.Getpid()),
		log:        slog.New(slog.DiscardHandler),
		now:        time.Now,
		ackTimeout: DefaultAckTimeout,
		targets:    map[string]Target{},
		seen:       map[string]seenCommand{},
		lastTS:     map[string]time.Time{},
		cmds:       make(chan incoming, 256),
		acks:       make(chan schemas.RollbackAck, 256),
	}
	for _, o := range opts {
		if err := o(d); err != nil {
			return nil, err
		}
	}
	d.log = d.log.With("service", service, "instance", d.instance)
	return d, nil
}

// Service is the service this deployer obeys for.
func (d *Deployer) Service() string { return d.service }

// Instance is the name this deployer acks with.
func (d *Deployer) Instance() string { return d.instance }

// Register adds targets. Names must be token-safe and each component/block registered once.
func (d *Deployer) Register(targets ...Target) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return ErrStarted
	}
	for _, t := range targets {
		if !tokenRe.MatchString(t.Component()) {
			return fmt.Errorf("deployer: component %q: %w", t.Component(), ErrBadName)
		}
		if t.Block() != "" && !tokenRe.MatchString(t.Block()) {
			return fmt.Errorf("deployer: block %q: %w", t.Block(), ErrBadName)
		}
		k := schemas.ActiveKey(d.service, t.Component(), t.Block())
		if _, dup := d.targets[k]; dup {
			return fmt.Errorf("deployer: %s: %w", k, ErrDuplicateTarget)
		}
		d.targets[k] = t
	}
	return nil
}

// OnAppRollback registers a hook for coarse commands. Hooks run in registration order; the first
// error fails the command.
func (d *Deployer) OnAppRollback(fn AppRollbackFunc) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return ErrStarted
	}
	if fn == nil {
		return errors.New("deployer: nil hook")
	}
	d.hooks = append(d.hooks, fn)
	return nil
}

// Version returns the active version of a registered target, or "" when there is none — handy as
// the telemetry publisher's version source, so events carry what actually ran.
func (d *Deployer) Version(component, block string) string {
	d.mu.Lock()
	t, ok := d.targets[schemas.ActiveKey(d.service, component, block)]
	d.mu.Unlock()
	if !ok {
		return ""
	}
	return t.Active()
}

// Start reads the desired state of every registered target from scalpel_active and applies it,
// then follows the bucket and rollback.cmd.<svc> until Stop. It returns once the start-up state is
// in place. A missing bucket (scalpel not installed yet) is an error: call Start again later.
//
// Both sources lead to the same place. The bucket is the truth — actuate writes it before it
// publishes — and its watcher, an ordered consumer, resumes after a reconnect, so a command
// published while this instance was cut off still reaches it. The command subject is the fast
// path and carries what the bucket does not: the expiry and the reason.
func (d *Deployer) Start(ctx context.Context) error {
	d.mu.Lock()
	if d.started {
		d.mu.Unlock()
		return ErrStarted
	}
	d.started = true
	d.mu.Unlock()

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	runCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	fail := func(err error) error {
		cancel()
		d.mu.Lock()
		d.started = false
		d.mu.Unlock()
		return err
	}

	kv, err := d.js.KeyValue(ctx, schemas.BucketActive)
	if err != nil {
		return fail(fmt.Errorf("deployer: open %s: %w", schemas.BucketActive, err))
	}
	w, err := kv.WatchFiltered(runCtx, []string{d.service, d.service + ".>"})
	if err != nil {
		return fail(fmt.Errorf("deployer: watch %s: %w", schemas.BucketActive, err))
	}
	// Start-up state: everything up to the watcher's nil marker.
	var initial []incoming
initialLoop:
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				_ = w.Stop()
				return fail(errors.New("deployer: scalpel_active watcher closed during start-up"))
			}
			if e == nil {
				break initialLoop
			}
			if in, ok := d.fromEntry(e, false); ok {
				initial = append(initial, in)
			}
		case <-ctx.Done():
			_ = w.Stop()
			return fail(fmt.Errorf("deployer: reading desired state: %w", ctx.Err()))
		}
	}
	for _, in := range initial {
		d.apply(runCtx, in)
	}
	d.watcher = w

	sub, err := d.nc.Subscribe(d.subj.RollbackCmd(d.service), d.onCommand)
	if err != nil {
		_ = w.Stop()
		return fail(fmt.Errorf("deployer: subscribe %s: %w", d.subj.RollbackCmd(d.service), err))
	}
	d.sub = sub
	// Once Start returns, the subscription is registered with the server: a command published
	// after that reaches this instance.
	if err := d.nc.FlushWithContext(ctx); err != nil {
		_ = sub.Unsubscribe()
		_ = w.Stop()
		return fail(fmt.Errorf("deployer: subscribe %s: %w", d.subj.RollbackCmd(d.service), err))
	}

	d.wg.Add(3)
	go func() { defer d.wg.Done(); d.watch(runCtx, w) }()
	go func() { defer d.wg.Done(); d.applyLoop(runCtx) }()
	go func() { defer d.wg.Done(); d.ackLoop(runCtx) }()
	d.log.Info("deployer started", "targets", len(d.targets), "desired_states_applied", len(initial))
	return nil
}

// Stop unsubscribes and waits for the deployer's goroutines. Acks not yet sent are dropped: the
// desired state is in the bucket, so nothing is lost that scalpel cannot see.
func (d *Deployer) Stop() {
	if d.cancel == nil {
		return
	}
	if d.sub != nil {
		_ = d.sub.Unsubscribe()
	}
	if d.watcher != nil {
		_ = d.watcher.Stop()
	}
	d.cancel()
	d.wg.Wait()
}

func (d *Deployer) watch(ctx context.Context, w jetstream.KeyWatcher) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				continue
			}
			if in, ok := d.fromEntry(e, true); ok {
				d.enqueue(ctx, in)
			}
		}
	}
}

// onCommand decodes a command message. A malformed one is acked failed when it names an id, so
// scalpel hears that this instance could not read it.
func (d *Deployer) onCommand(m *nats.Msg) {
	cmd, err := schemas.DecodeCommandEvent(m.Header, m.Data)
	if err != nil {
		d.log.Warn("unreadable rollback command", "subject", m.Subject, "err", err)
		if id := m.Header.Get(schemas.HeaderCEID); id != "" {
			d.sendAck(context.Background(), schemas.RollbackAck{CommandID: id, Status: schemas.AckFailed,
				Error: "unreadable command: " + err.Error()})
		}
		return
	}
	if cmd.Service != d.service {
		d.log.Debug("command for another service", "target", cmd.Target())
		return
	}
	d.enqueue(context.Background(), incoming{cmd: *cmd, ack: true, src: "command"})
}

func (d *Deployer) enqueue(ctx context.Context, in incoming) {
	select {
	case d.cmds <- in:
	case <-ctx.Done():
	}
}

// fromEntry turns a scalpel_active entry into the command it records.
func (d *Deployer) fromEntry(e jetstream.KeyValueEntry, live bool) (incoming, bool) {
	if e.Operation() != jetstream.KeyValuePut {
		return incoming{}, false
	}
	var av schemas.ActiveVersion
	if err := json.Unmarshal(e.Value(), &av); err != nil {
		d.log.Warn("unreadable desired state; ignoring it", "key", e.Key(), "revision", e.Revision(), "err", err)
		return incoming{}, false
	}
	parts := strings.Split(e.Key(), ".")
	cmd := schemas.RollbackCommand{
		ID: av.CommandID, DecisionID: av.DecisionID, IncidentID: av.IncidentID, Action: av.Action,
		Service: parts[0], FromVersion: av.FromVersion, ToVersion: av.Version, IssuedAt: av.TS,
		Granularity: schemas.GranularityCoarse,
	}
	if len(parts) > 1 {
		cmd.Component, cmd.Granularity = parts[1], schemas.GranularityMedium
	}
	if len(parts) > 2 {
		cmd.Block, cmd.Granularity = parts[2], schemas.GranularityFine
	}
	if cmd.ID == "" || cmd.Service != d.service {
		return incoming{}, false
	}
	return incoming{cmd: cmd, ack: live, src: "scalpel_active"}, true
}

func (d *Deployer) applyLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case in := <-d.cmds:
			d.apply(ctx, in)
		}
	}
}

// apply carries out one command once and queues its ack.
func (d *Deployer) apply(ctx context.Context, in incoming) {
	ack := d.decide(ctx, in)
	if ack == nil {
		return
	}
	if in.ack {
		d.sendAck(ctx, *ack)
	}
}

// decide applies the command unless it was applied before, has expired or was superseded, and
// returns the ack to send (nil when a repeat needs none).
func (d *Deployer) decide(ctx context.Context, in incoming) *schemas.RollbackAck {
	cmd := in.cmd
	log := d.log.With("command_id", cmd.ID, "target", cmd.Target(), "action", cmd.Action, "source", in.src)
	d.mu.Lock()
	prev, seen := d.seen[cmd.ID]
	d.mu.Unlock()
	if seen {
		// Already applied. Repeat the ack only for a command delivered twice on the command subject
		// (a sender's retry, which may have missed the first ack; its Nats-Msg-Id makes the repeat
		// free). The usual pair — the bucket's update, then the command — is acked once.
		log.Debug("command already applied", "first_source", prev.src)
		if in.src == "command" && prev.src == "command" {
			return &prev.ack
		}
		return nil
	}
	ack := schemas.RollbackAck{CommandID: cmd.ID}
	key := schemas.ActiveKey(cmd.Service, cmd.Component, cmd.Block)
	d.mu.Lock()
	last := d.lastTS[key]
	d.mu.Unlock()
	switch {
	case in.src == "command" && cmd.ExpiresAt != nil && !d.now().Before(*cmd.ExpiresAt):
		ack.Status, ack.Error = schemas.AckIgnored, "command expired at "+cmd.ExpiresAt.UTC().Format(time.RFC3339)
	case !last.IsZero() && last.After(cmd.IssuedAt):
		ack.Status, ack.Error = schemas.AckIgnored, "superseded by a newer command for "+cmd.Target()
	default:
		ack.Status, ack.ActiveVersion, ack.Error = d.carryOut(ctx, &cmd)
	}
	if ack.ActiveVersion == "" && ack.Status != schemas.AckApplied {
		ack.ActiveVersion = d.activeOf(&cmd)
	}
	if ack.Status == schemas.AckApplied {
		d.mu.Lock()
		d.lastTS[key] = cmd.IssuedAt
		d.mu.Unlock()
	}
	d.remember(cmd.ID, seenCommand{ack: ack, src: in.src})
	lvl := slog.LevelInfo
	if ack.Status == schemas.AckFailed {
		lvl = slog.LevelWarn
	}
	log.Log(ctx, lvl, "rollback command "+ack.Status, "from", cmd.FromVersion, "to", cmd.ToVersion,
		"active", ack.ActiveVersion, "error", ack.Error)
	return &ack
}

func (d *Deployer) remember(id string, sc seenCommand) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen[id] = sc
	d.seenFIFO = append(d.seenFIFO, id)
	if len(d.seenFIFO) > rememberCommands {
		delete(d.seen, d.seenFIFO[0])
		d.seenFIFO = d.seenFIFO[1:]
	}
}

// carryOut switches what the command names and returns the ack's status, active version and error.
func (d *Deployer) carryOut(ctx context.Context, cmd *schemas.RollbackCommand) (status, active, errText string) {
	version := cmd.ToVersion
	switch cmd.Action {
	case schemas.ActionRollback, schemas.ActionRestore, schemas.ActionEnable:
	case schemas.ActionDisable:
		// A disable without a target version switches to the registered disabled implementation.
	default:
		return schemas.AckIgnored, "", fmt.Sprintf("action %q is not one this deployer knows", cmd.Action)
	}
	d.mu.Lock()
	var targets []Target
	for _, t := range d.targets {
		switch {
		case cmd.Component == "": // coarse: every target that has the version
			if t.Has(version) {
				targets = append(targets, t)
			}
		case cmd.Block == "": // medium: every target of the component
			if t.Component() == cmd.Component {
				targets = append(targets, t)
			}
		case t.Component() == cmd.Component && t.Block() == cmd.Block:
			targets = append(targets, t)
		}
	}
	hooks := append([]AppRollbackFunc(nil), d.hooks...)
	d.mu.Unlock()

	if cmd.Component == "" {
		for _, t := range targets {
			if err := t.Switch(version); err != nil {
				return schemas.AckFailed, "", err.Error()
			}
		}
		for _, h := range hooks {
			if err := h(ctx, *cmd); err != nil {
				return schemas.AckFailed, "", fmt.Sprintf("app rollback hook: %v", err)
			}
		}
		if len(targets) == 0 && len(hooks) == 0 {
			return schemas.AckIgnored, "", "no OnAppRollback hook and no target has version " + version
		}
		return schemas.AckApplied, version, ""
	}
	if len(targets) == 0 {
		return schemas.AckIgnored, "", cmd.Target() + " is not registered on this instance"
	}
	// Check every target first, so a component is never left half switched.
	for _, t := range targets {
		if !t.Has(version) {
			return schemas.AckFailed, "", fmt.Sprintf("%s: version %q: %v", nameOf(t), version, ErrUnknownVersion)
		}
	}
	for _, t := range targets {
		if err := t.Switch(version); err != nil {
			return schemas.AckFailed, "", err.Error()
		}
	}
	return schemas.AckApplied, version, ""
}

// activeOf is the version the command's target runs now, for acks that changed nothing.
func (d *Deployer) activeOf(cmd *schemas.RollbackCommand) string {
	if cmd.Component == "" {
		return ""
	}
	if cmd.Block != "" {
		return d.Version(cmd.Component, cmd.Block)
	}
	if v := d.Version(cmd.Component, ""); v != "" {
		return v
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, t := range d.targets {
		if t.Component() == cmd.Component {
			return t.Active()
		}
	}
	return ""
}

func nameOf(t Target) string {
	if t.Block() == "" {
		return t.Component()
	}
	return t.Component() + "/" + t.Block()
}

// sendAck queues an ack; the ack loop publishes it with retries.
func (d *Deployer) sendAck(ctx context.Context, ack schemas.RollbackAck) {
	ack.Service, ack.Instance, ack.TS = d.service, d.instance, d.now().UTC()
	select {
	case d.acks <- ack:
	case <-ctx.Done():
	default:
		d.log.Warn("ack queue full; dropping ack (the desired state is in scalpel_active)", "command_id", ack.CommandID)
	}
}

func (d *Deployer) ackLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ack := <-d.acks:
			d.publishAck(ctx, ack)
		}
	}
}

// publishAck publishes on rollback.ack.<svc> with a Nats-Msg-Id of command and instance, so a
// repeated ack is stored once. Failures (NATS away) are retried with backoff; the desired state is
// applied regardless, so a lost ack delays scalpel's knowledge, never the rollback.
func (d *Deployer) publishAck(ctx context.Context, ack schemas.RollbackAck) {
	b, err := json.Marshal(ack)
	if err != nil {
		d.log.Error("encode ack", "err", err)
		return
	}
	subject := d.subj.RollbackAck(d.service)
	msgID := "ack-" + ack.CommandID + "-" + d.instance
	backoff := 200 * time.Millisecond
	for attempt := 1; attempt <= DefaultAckAttempts; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, d.ackTimeout)
		_, err = d.js.Publish(pctx, subject, b, jetstream.WithMsgID(msgID))
		cancel()
		if err == nil {
			if d.ackHook != nil {
				d.ackHook(ack)
			}
			d.log.Debug("ack sent", "command_id", ack.CommandID, "status", ack.Status)
			return
		}
		if ctx.Err() != nil {
			return
		}
		d.log.Warn("ack publish failed; retrying", "command_id", ack.CommandID, "attempt", attempt, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff *= 2
	}
	d.log.Error("ack not delivered", "command_id", ack.CommandID, "err", err)
}
