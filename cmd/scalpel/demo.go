package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

func init() { register(newDemoCmd) }

// demoStallWait is how long the demo's telemetry waits for the embedded server's acks when too
// many are outstanding: the default 200 ms ended the demo on a loaded machine.
const demoStallWait = 10 * time.Second

type demoOptions struct {
	speed    float64
	seed     uint64
	baseline time.Duration
	verbose  bool
	dataDir  string
	live     bool
}

func newDemoCmd() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Watch scalpel roll back one bad code block, in one process with no setup",
		Long: `demo starts an embedded NATS server and every scalpel stage in this process, then simulates a
service "checkout" with three components (tax-calc with two blocks, cart, payment). It sends normal
traffic for version 1.0, deploys 2.0 in which one block (tax-calc/rate-lookup) starts failing, and
prints the story as it happens: the deploy, the anomaly and its evidence, the decision, the rollback
command for that block only, the simulated service switching the block back, and recovery — while
the rest of 2.0 stays live.

Time in the story is event time; --speed runs it faster than the wall clock.

With --live nothing is simulated: the example service deployments/examples/shop runs on a loopback
HTTP port with the telemetry and deployer SDKs, a load generator calls it over HTTP, and the story
ends with what the shop itself answers — its discount block back on 1.0, tax and catalog still 2.0.
It runs in wall-clock time (about a minute).`,
		Example: `  scalpel demo
  scalpel demo --live
  scalpel demo --speed 10 --seed 7`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.live {
				if !cmd.Flags().Changed("baseline") {
					o.baseline = 0 // the live default
				}
				return runDemoLive(cmd.Context(), cmd.OutOrStdout(), o)
			}
			if o.speed <= 0 || o.speed > 100 {
				return fmt.Errorf("--speed %v: want a factor between 0 and 100", o.speed)
			}
			return runDemo(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.Float64Var(&o.speed, "speed", 6, "event seconds simulated per wall-clock second")
	f.Uint64Var(&o.seed, "seed", 1, "seed of the simulated traffic")
	f.DurationVar(&o.baseline, "baseline", 60*time.Second, "event time of healthy 1.0 traffic before the deploy")
	f.BoolVar(&o.verbose, "verbose", false, "also print scalpel's own logs")
	f.BoolVar(&o.live, "live", false, "run the real example service over HTTP instead of a simulation (wall-clock time)")
	f.StringVar(&o.dataDir, "data-dir", "", "JetStream store of the demo's embedded server (default: a temporary directory, removed at exit)")
	return cmd
}

// demoService is the simulated checkout service and its deployer: it obeys rollback commands by
// switching the block's active version, and acks them. Its broken rate-lookup fails a quarter of
// its requests, a little more than the tests' fixture, so the story's figures stand out.
func demoService(seed uint64) *sim.Service {
	svc := sim.Checkout(seed)
	svc.Block("tax-calc", "rate-lookup").Versions["2.0"] = sim.Behaviour{ErrorRate: 0.25, ErrorCategory: schemas.ErrException,
		ErrorSite: "tax/calc.go:57", LatencyMedianMS: 22, LatencySigma: 0.35}
	return svc
}

func demoDeploy(id string, ts time.Time, v string) schemas.DeployEvent {
	ev := sim.CheckoutDeploy(id, ts, v)
	ev.Actor = "demo"
	return ev
}

// demoEnv is scalpel running in-process for a demo: an embedded server in a temporary directory
// (unless --data-dir), every stage, and the demo service's manifest applied.
type demoEnv struct {
	cfg   config.Config
	log   *slog.Logger
	nc    *nats.Conn
	js    jetstream.JetStream
	srv   *server.Server
	close func()
}

func startDemoScalpel(ctx context.Context, o demoOptions, manifest string) (*demoEnv, error) {
	var cleanups []func()
	closeAll := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	dir := o.dataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "scalpel-demo-")
		if err != nil {
			return nil, err
		}
		cleanups = append(cleanups, func() { os.RemoveAll(d) })
		dir = d
	}
	cfg := config.Default()
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.NATS.DataDir = dir
	logLevel := "error"
	if o.verbose {
		logLevel = "info"
	}
	log := newLogger(logLevel)
	nc, js, srv, cleanup, err := connectServer(cfg, log)
	if err != nil {
		closeAll()
		return nil, err
	}
	cleanups = append(cleanups, cleanup)
	p, err := pipeline.New(pipeline.Options{Config: cfg, JS: js, Logger: log, Registry: prometheus.NewRegistry()})
	if err == nil {
		err = p.Start(ctx)
	}
	if err != nil {
		closeAll()
		return nil, err
	}
	cleanups = append(cleanups, p.Stop)
	m, err := schemas.ParseManifest([]byte(manifest))
	if err == nil {
		_, err = p.Catalog().Apply(ctx, m)
	}
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("demo manifest: %w", err)
	}
	return &demoEnv{cfg: cfg, log: log, nc: nc, js: js, srv: srv, close: closeAll}, nil
}

// demoStory is the longest the story runs after the deploy, in event time.
const demoStory = 3 * time.Minute

func runDemo(ctx context.Context, out io.Writer, o demoOptions) error {
	env, err := startDemoScalpel(ctx, o, sim.CheckoutManifest)
	if err != nil {
		return err
	}
	defer env.close()
	cfg, nc, js := env.cfg, env.nc, env.js

	st := &story{out: out, subj: cfg.Subjects()}
	svc := demoService(o.seed)
	// Event time runs faster than the wall clock, and ingest rejects an event stamped ahead of
	// when the server stored it (ingest.max_clock_ahead): the story starts far enough in the past
	// that its event time stays behind the wall clock to its end.
	start := time.Now().UTC().Add(-(o.baseline + demoStory)).Truncate(time.Second)
	st.start = start
	subs, err := st.follow(nc)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	// The simulated service's deployer: obey commands, ack them.
	var svcMu sync.Mutex
	cmdSub, err := nc.Subscribe(cfg.Subjects().RollbackCmd("checkout"), func(msg *nats.Msg) {
		cmd, err := schemas.DecodeCommandEvent(msg.Header, msg.Data)
		ack := schemas.RollbackAck{Service: "checkout", Instance: "checkout-1", Status: schemas.AckApplied, TS: st.now()}
		if err != nil {
			ack.Status, ack.Error = schemas.AckFailed, err.Error()
		} else {
			ack.CommandID = cmd.ID
			svcMu.Lock()
			ack.ActiveVersion = applyDemoCommand(svc, cmd)
			svcMu.Unlock()
		}
		b, _ := json.Marshal(ack)
		_, _ = js.Publish(ctx, cfg.Subjects().RollbackAck("checkout"), b, jetstream.WithMsgID("ack-"+ack.CommandID+"-checkout-1"))
	})
	if err != nil {
		return err
	}
	defer cmdSub.Unsubscribe()

	fmt.Fprintf(out, "scalpel demo — service \"checkout\": tax-calc (blocks rate-lookup, rounding; granularity fine), cart, payment\n")
	fmt.Fprintf(out, "event time runs at %gx; every line is stamped with event time since start\n\n", o.speed)

	publishDeploy := func(id string, ts time.Time, v string) error {
		ev := demoDeploy(id, ts, v)
		b, _ := json.Marshal(ev)
		_, err := js.Publish(ctx, cfg.Subjects().Deploy("checkout"), b, jetstream.WithMsgID(ev.ID))
		return err
	}
	if err := publishDeploy("demo-deploy-1.0", start, "1.0"); err != nil {
		return err
	}

	const tick = 100 * time.Millisecond
	evTick := time.Duration(float64(tick) * o.speed)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	deployAt := start.Add(o.baseline)
	deployed := false
	var events []schemas.TelemetryEvent
	stats := newBlockStats()
	deadline := deployAt.Add(demoStory)
	for evNow := start; ; evNow = evNow.Add(evTick) {
		select {
		case <-ctx.Done():
			fmt.Fprintln(out, "interrupted")
			return nil
		case <-ticker.C:
		}
		st.setNow(evNow)
		if !deployed && !evNow.Before(deployAt) {
			deployed = true
			svcMu.Lock()
			svc.SetVersion("2.0")
			svcMu.Unlock()
			if err := publishDeploy("demo-deploy-2.0", evNow, "2.0"); err != nil {
				return err
			}
		}
		svcMu.Lock()
		events = svc.Tick(events[:0], evNow, evTick)
		svcMu.Unlock()
		for i := range events {
			stats.add(&events[i])
			b, _ := json.Marshal(&events[i])
			// A machine too busy to ack as fast as the story runs slows it down (demoStallWait)
			// rather than ending it.
			if _, err := js.PublishAsync(cfg.Subjects().Telemetry("checkout", events[i].Component), b,
				jetstream.WithMsgID(events[i].ID), jetstream.WithStallWait(demoStallWait)); err != nil {
				return fmt.Errorf("publish telemetry: %w", err)
			}
		}
		st.checkRecovery(evNow, events)
		if stats.due(evNow, 10*time.Second) {
			st.printf(evNow, "traffic   %s", stats.flush())
		}
		if st.finished(evNow) || evNow.After(deadline) && !st.awaitingCommand() {
			break
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Second):
	}
	st.summary(svc)
	return nil
}

// applyDemoCommand switches the simulated service as a deployer would and returns the now-active version.
func applyDemoCommand(svc *sim.Service, cmd *schemas.RollbackCommand) string {
	switch {
	case cmd.Block != "":
		if b := svc.Block(cmd.Component, cmd.Block); b != nil {
			b.Active = cmd.ToVersion
		}
	case cmd.Component != "":
		if c := svc.Component(cmd.Component); c != nil {
			for _, b := range c.Blocks {
				b.Active = cmd.ToVersion
			}
		}
	default:
		svc.SetVersion(cmd.ToVersion)
	}
	return cmd.ToVersion
}

// story prints what happens, as it happens.
type story struct {
	out   io.Writer
	subj  schemas.Subjects
	start time.Time

	mu          sync.Mutex
	evNow       time.Time
	ackAt       time.Time
	commands    int
	anomalies   int
	rolledBack  []string
	recovered   bool
	mitigatedAt time.Time
	// decidedAt is when (wall clock) the first rollback decision came, zero before: the story
	// waits for its command beyond its event-time end (awaitingCommand).
	decidedAt time.Time
	recReqs   int
	recErrs   int
}

func (s *story) setNow(t time.Time) { s.mu.Lock(); s.evNow = t; s.mu.Unlock() }
func (s *story) now() time.Time     { s.mu.Lock(); defer s.mu.Unlock(); return s.evNow }

func (s *story) printf(at time.Time, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.out, "[t+%3.0fs] %s\n", at.Sub(s.start).Seconds(), fmt.Sprintf(format, args...))
}

// finished reports whether the story has shown its end: the decision engine verified the rollback
// (the incident is mitigated) a few seconds ago, or a minute of event time went by after the ack
// without that.
func (s *story) finished(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.mitigatedAt.IsZero() {
		return now.Sub(s.mitigatedAt) >= 5*time.Second
	}
	return !s.ackAt.IsZero() && now.Sub(s.ackAt) >= 3*time.Minute
}

// awaitingCommand reports whether a rollback was decided and its command has not come yet, for at
// most demoCommandWait of the wall clock: on a loaded machine the hand-off to actuate can take
// longer than the story's last simulated minutes do at its speed, and the story would end
// without the command it is there to show.
func (s *story) awaitingCommand() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.decidedAt.IsZero() && s.commands == 0 && time.Since(s.decidedAt) < demoCommandWait
}

// demoCommandWait bounds how long the story waits for a decided rollback's command.
const demoCommandWait = 30 * time.Second

// follow prints every message of the loop. One subscription for all subjects keeps them in the
// order the server delivered them: deploy, anomaly, decision, command, ack.
func (s *story) follow(nc *nats.Conn) ([]*nats.Subscription, error) {
	match := func(subject, pattern string) bool {
		return strings.HasPrefix(subject, strings.TrimSuffix(pattern, ">"))
	}
	sub, err := nc.Subscribe(">", func(m *nats.Msg) {
		// ">" also matches the inboxes JetStream consumers deliver to; those copies carry an ack
		// reply subject. Only the original publishes tell the story.
		if strings.HasPrefix(m.Reply, "$JS.ACK.") {
			return
		}
		switch {
		case match(m.Subject, s.subj.DeployAll()):
			var d schemas.DeployEvent
			if json.Unmarshal(m.Data, &d) != nil {
				return
			}
			var parts []string
			for _, c := range d.Components {
				parts = append(parts, c.Component+" "+c.Version)
			}
			s.printf(d.TS, "DEPLOY    %s %s (%s)", d.Service, d.AppVersion, strings.Join(parts, ", "))
		case match(m.Subject, s.subj.AnomalyAll()):
			var a schemas.Anomaly
			if json.Unmarshal(m.Data, &a) != nil {
				return
			}
			if a.IsResolved() {
				at := a.TSDetected
				if a.ResolvedAt != nil {
					at = *a.ResolvedAt
				}
				s.printf(at, "RESOLVED  %s %s: %s", anomalyTarget(&a), a.Version, a.Resolution)
				return
			}
			s.mu.Lock()
			s.anomalies++
			s.mu.Unlock()
			s.printf(a.TSDetected, "ANOMALY   %s", describeAnomaly(&a))
		case match(m.Subject, s.subj.DecisionAll()):
			var d schemas.Decision
			if json.Unmarshal(m.Data, &d) != nil || d.ID == "" {
				return
			}
			s.printf(d.TS, "DECISION  %s (%s): %s", strings.ToUpper(d.Action), d.Granularity, d.Reason)
			s.mu.Lock()
			if d.Action == schemas.ActionNone && strings.Contains(d.Reason, "Mitigated") {
				s.mitigatedAt = s.evNow
			}
			if d.Action == schemas.ActionRollback && s.decidedAt.IsZero() {
				s.decidedAt = time.Now() // the wall clock: how long the hand-off takes, not event time
			}
			s.mu.Unlock()
		case m.Subject == s.subj.RollbackAck("checkout"):
			var a schemas.RollbackAck
			if json.Unmarshal(m.Data, &a) != nil {
				return
			}
			s.mu.Lock()
			s.ackAt = s.evNow
			s.mu.Unlock()
			s.printf(s.now(), "ACK       %s by %s: %s now active %s", a.Status, a.Instance, shortID(a.CommandID), a.ActiveVersion)
		case m.Subject == s.subj.RollbackCmd("checkout"):
			cmd, err := schemas.DecodeCommandEvent(m.Header, m.Data)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.commands++
			s.rolledBack = append(s.rolledBack, cmd.Target())
			s.mu.Unlock()
			s.printf(cmd.IssuedAt, "COMMAND   %s %s %s → %s (command %s, CloudEvent on %s)", cmd.Action, cmd.Target(), cmd.FromVersion, cmd.ToVersion, shortID(cmd.ID), m.Subject)
		}
	})
	if err != nil {
		return nil, err
	}
	return []*nats.Subscription{sub}, nil
}

// checkRecovery prints, once, how the rolled-back targets behave in the 10 event-seconds after the ack,
// measured from the service's own traffic.
func (s *story) checkRecovery(now time.Time, events []schemas.TelemetryEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ackAt.IsZero() || s.recovered {
		return
	}
	for i := range events {
		ev := &events[i]
		t := ev.Service + "/" + ev.Component
		if ev.Block != "" {
			t += "/" + ev.Block
		}
		for _, rb := range s.rolledBack {
			if t == rb || strings.HasPrefix(t, rb+"/") || rb == ev.Service {
				s.recReqs++
				if ev.Error != "" {
					s.recErrs++
				}
			}
		}
	}
	if now.Sub(s.ackAt) < 10*time.Second || s.recReqs == 0 {
		return
	}
	s.recovered = true
	fmt.Fprintf(s.out, "[t+%3.0fs] RECOVERED %s: %.1f%% errors over the 10s after the rollback (%d requests)\n",
		now.Sub(s.start).Seconds(), strings.Join(s.rolledBack, ", "), 100*float64(s.recErrs)/float64(s.recReqs), s.recReqs)
}

func (s *story) summary(svc *sim.Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintln(s.out)
	fmt.Fprintf(s.out, "outcome: %d anomaly(ies), %d rollback command(s).\n", s.anomalies, s.commands)
	var live []string
	for _, c := range svc.Components {
		for _, b := range c.Blocks {
			name := c.Name
			if b.Name != "" {
				name += "/" + b.Name
			}
			live = append(live, name+" "+b.Active)
		}
	}
	fmt.Fprintf(s.out, "now running: %s\n", strings.Join(live, ", "))
	if s.commands == 0 {
		fmt.Fprintln(s.out, "no rollback happened: rerun with --verbose to see what scalpel logged.")
	}
}

func anomalyTarget(a *schemas.Anomaly) string {
	target := a.Service + "/" + a.Component
	if a.Block != "" {
		target += "/" + a.Block
	}
	return target
}

func describeAnomaly(a *schemas.Anomaly) string {
	target := anomalyTarget(a)
	if a.Block == "" {
		target += " (all blocks)"
	}
	what := a.Metric
	if a.ErrorCategory != "" {
		what = a.ErrorCategory + " rate"
	}
	format := func(v float64) string {
		if a.Metric == schemas.MetricErrorRate {
			return fmt.Sprintf("%.1f%%", 100*v)
		}
		return fmt.Sprintf("%.3g", v)
	}
	sig := ""
	if a.PValue != nil {
		sig = fmt.Sprintf(", p=%.2g", *a.PValue)
	} else if a.Score != nil {
		sig = fmt.Sprintf(", score=%.3g", *a.Score)
	}
	s := fmt.Sprintf("%s %s: %s %s vs %s on %s (%s, n=%d vs %d%s)", target, a.Version, what, format(a.Observed), format(a.Baseline),
		a.BaselineVersion, a.Test, a.Samples.Observed, a.Samples.Baseline, sig)
	if len(a.Evidence.Blocks) > 0 {
		keys := make([]string, 0, len(a.Evidence.Blocks))
		for k := range a.Evidence.Blocks {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return a.Evidence.Blocks[keys[i]] > a.Evidence.Blocks[keys[j]] })
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %d", k, a.Evidence.Blocks[k]))
		}
		s += "; errors by block: " + strings.Join(parts, ", ")
	}
	return s
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// blockStats summarises the simulated traffic per component/block for the story's traffic lines.
type blockStats struct {
	last  time.Time
	reqs  map[string]int
	errs  map[string]int
	order []string
}

func newBlockStats() *blockStats {
	return &blockStats{reqs: map[string]int{}, errs: map[string]int{}}
}

func (b *blockStats) add(ev *schemas.TelemetryEvent) {
	k := ev.Component
	if ev.Block != "" {
		k += "/" + ev.Block
	}
	k += "@" + ev.Version
	if _, ok := b.reqs[k]; !ok {
		b.order = append(b.order, k)
		sort.Strings(b.order)
	}
	b.reqs[k]++
	if ev.Error != "" {
		b.errs[k]++
	}
}

func (b *blockStats) due(now time.Time, every time.Duration) bool {
	if b.last.IsZero() {
		b.last = now
	}
	return now.Sub(b.last) >= every
}

func (b *blockStats) flush() string {
	var parts []string
	for _, k := range b.order {
		if b.reqs[k] == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.1f%% err", k, 100*float64(b.errs[k])/float64(b.reqs[k])))
	}
	clear(b.reqs)
	clear(b.errs)
	b.order = b.order[:0]
	b.last = time.Time{}
	return strings.Join(parts, " | ")
}
