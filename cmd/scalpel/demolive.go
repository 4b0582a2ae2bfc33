package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/deployments/examples/shop/shop"
	"github.com/scalpel-dev/scalpel/schemas"
)

// liveBaseline is the default time 1.0 serves before 2.0 goes out in --live mode: enough for
// detect's baseline (MinBaselineRequests per block) at the demo's request rate.
const liveBaseline = 20 * time.Second

// liveRPS is the load generator's request rate in --live mode.
const liveRPS = 150

// runDemoLive is `scalpel demo --live`: the real thing instead of a simulation. It runs every
// stage on an embedded server, starts the example shop service (deployments/examples/shop) on a
// loopback HTTP port — it publishes telemetry with the telemetry SDK and obeys commands with the
// deployer SDK over its own NATS connection — drives it with a load generator over HTTP, deploys
// 2.0, and prints the story in wall-clock time, ending with what the shop itself answers.
func runDemoLive(ctx context.Context, out io.Writer, o demoOptions) error {
	env, err := startDemoScalpel(ctx, o, shop.Manifest)
	if err != nil {
		return err
	}
	defer env.close()
	cfg, log, nc, js, srv := env.cfg, env.log, env.nc, env.js, env.srv

	// The shop connects over TCP, as a separate process would.
	snc, err := nats.Connect(srv.ClientURL(), nats.Name("shop-1"), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer snc.Close()
	s, err := shop.New(snc, shop.Options{Aggregate: time.Second, Logger: log.With("service", "shop")})
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		return err
	}
	defer s.Close(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("shop http", "err", err)
		}
	}()
	defer hs.Close()
	base := "http://" + ln.Addr().String()

	start := time.Now().UTC()
	st := &liveStory{out: out, subj: cfg.Subjects(), start: start}
	sub, err := st.follow(nc)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()

	fmt.Fprintf(out, "scalpel demo --live — the example service \"shop\" at %s, NATS at %s\n", base, srv.ClientURL())
	fmt.Fprintf(out, "  GET /quote runs pricing blocks discount and tax; GET /products is the catalog endpoint.\n")
	fmt.Fprintf(out, "  Release 2.0 changes discount (with a bug), tax (fine) and catalog (fine).\n")
	fmt.Fprintf(out, "  A load generator sends %d req/s over HTTP; the shop says in every answer which versions produced it.\n\n", liveRPS)

	publishDeploy := func(id, v string) error {
		ev := shop.DeployEvent(id, time.Now().UTC(), v)
		b, _ := json.Marshal(ev)
		_, err := js.Publish(ctx, cfg.Subjects().Deploy(shop.Service), b, jetstream.WithMsgID(id))
		return err
	}
	run := time.Now().UTC().Format("150405")
	if err := publishDeploy("shop-live-"+run+"-1.0", shop.V1); err != nil {
		return err
	}
	load := shop.NewLoad(base)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	go load.Run(loadCtx, liveRPS)

	baseline := o.baseline
	if baseline <= 0 {
		baseline = liveBaseline
	}
	deployAt := start.Add(baseline)
	deadline := deployAt.Add(120 * time.Second)
	deployed := false
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	lastTraffic := start
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(out, "interrupted")
			return nil
		case <-ticker.C:
		}
		now := time.Now().UTC()
		if !deployed && !now.Before(deployAt) {
			deployed = true
			if err := s.Release(shop.V2); err != nil {
				return err
			}
			if err := publishDeploy("shop-live-"+run+"-2.0", shop.V2); err != nil {
				return err
			}
		}
		if now.Sub(lastTraffic) >= 5*time.Second {
			st.printf(now, "HTTP      %s", describeLoad(load.Take(), now.Sub(lastTraffic)))
			lastTraffic = now
		}
		if st.finished(now, 60*time.Second) || now.After(deadline) {
			break
		}
	}
	stopLoad()
	st.printf(time.Now().UTC(), "HTTP      %s", describeLoad(load.Take(), time.Since(lastTraffic)))

	fmt.Fprintln(out)
	st.mu.Lock()
	fmt.Fprintf(out, "outcome: %d anomaly(ies), %d rollback command(s).\n", st.anomalies, st.commands)
	st.mu.Unlock()
	fmt.Fprintf(out, "the shop answers now: pricing/discount %s, pricing/tax %s, catalog %s, quote %s\n",
		s.Discount.Active(), s.Tax.Active(), s.Catalog.Active(), s.Quote.Active())
	ts := s.Telemetry.Stats()
	fmt.Fprintf(out, "telemetry SDK: %d requests recorded, sent as %d aggregate events in %d messages, %d dropped\n",
		ts.Recorded, ts.Events, ts.Messages, ts.Dropped)
	if s.Discount.Active() != shop.V1 {
		fmt.Fprintln(out, "the discount block was not rolled back: rerun with --verbose to see what scalpel logged.")
	}
	return nil
}

// liveStory prints the loop's messages for the shop in wall-clock time since start.
type liveStory struct {
	out   io.Writer
	subj  schemas.Subjects
	start time.Time

	mu        sync.Mutex
	ackAt     time.Time
	commands  int
	anomalies int
	// mitigatedAt is when the decision engine said the rollback fixed it (verified recovery).
	mitigatedAt time.Time
	// printed is the stamp of the last line printed.
	printed time.Time
}

// printf prints a line stamped at, or at the previous line's stamp if that is later: lines come
// from the traffic ticker and from the subscription, each stamped when it was taken, and the
// story must not read as going back in time.
func (s *liveStory) printf(at time.Time, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at.Before(s.printed) {
		at = s.printed
	}
	s.printed = at
	fmt.Fprintf(s.out, "[t+%3.0fs] %s\n", at.Sub(s.start).Seconds(), fmt.Sprintf(format, args...))
}

// finished reports whether the story has shown its end: the decision engine marked the incident
// mitigated (and a few seconds passed), or `after` went by since the first ack without it.
func (s *liveStory) finished(now time.Time, after time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.mitigatedAt.IsZero() {
		return now.Sub(s.mitigatedAt) >= 3*time.Second
	}
	return !s.ackAt.IsZero() && now.Sub(s.ackAt) >= after
}

// follow prints deploys, anomalies, decisions, commands and acks of the shop, in the order the
// server delivered them (one subscription).
func (s *liveStory) follow(nc *nats.Conn) (*nats.Subscription, error) {
	is := func(subject, pattern string) bool {
		return strings.HasPrefix(subject, strings.TrimSuffix(pattern, ">"))
	}
	return nc.Subscribe(">", func(m *nats.Msg) {
		if strings.HasPrefix(m.Reply, "$JS.ACK.") { // a consumer's copy, not the publish
			return
		}
		now := time.Now()
		switch {
		case is(m.Subject, s.subj.DeployAll()):
			var d schemas.DeployEvent
			if json.Unmarshal(m.Data, &d) != nil {
				return
			}
			var parts []string
			for _, c := range d.Components {
				parts = append(parts, c.Component+" "+c.Version)
			}
			s.printf(now, "DEPLOY    %s %s (%s)", d.Service, d.AppVersion, strings.Join(parts, ", "))
		case is(m.Subject, s.subj.AnomalyAll()):
			var a schemas.Anomaly
			if json.Unmarshal(m.Data, &a) != nil {
				return
			}
			if a.IsResolved() {
				s.printf(now, "RESOLVED  %s %s: %s", anomalyTarget(&a), a.Version, a.Resolution)
				return
			}
			s.mu.Lock()
			s.anomalies++
			s.mu.Unlock()
			s.printf(now, "ANOMALY   %s", describeAnomaly(&a))
		case is(m.Subject, s.subj.DecisionAll()):
			var d schemas.Decision
			if json.Unmarshal(m.Data, &d) != nil || d.ID == "" {
				return
			}
			s.printf(now, "DECISION  %s (%s): %s", strings.ToUpper(d.Action), d.Granularity, d.Reason)
			if d.Action == schemas.ActionNone && strings.Contains(d.Reason, "Mitigated") {
				s.mu.Lock()
				s.mitigatedAt = now
				s.mu.Unlock()
			}
		case m.Subject == s.subj.RollbackCmd(shop.Service):
			cmd, err := schemas.DecodeCommandEvent(m.Header, m.Data)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.commands++
			s.mu.Unlock()
			s.printf(now, "COMMAND   %s %s %s → %s (command %s, CloudEvent on %s)", cmd.Action, cmd.Target(), cmd.FromVersion, cmd.ToVersion, shortID(cmd.ID), m.Subject)
		case m.Subject == s.subj.RollbackAck(shop.Service):
			var a schemas.RollbackAck
			if json.Unmarshal(m.Data, &a) != nil {
				return
			}
			s.mu.Lock()
			if s.ackAt.IsZero() {
				s.ackAt = now
			}
			s.mu.Unlock()
			s.printf(now, "ACK       %s by %s: %s now active %s", a.Status, a.Instance, shortID(a.CommandID), a.ActiveVersion)
		}
	})
}

// describeLoad summarises one window of the load generator: requests per second and error rate
// per answering version.
func describeLoad(o shop.Observed, window time.Duration) string {
	keys := make([]string, 0, len(o.Requests))
	for k := range o.Requests {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		n := o.Requests[k]
		parts = append(parts, fmt.Sprintf("%s %.0f/s %.0f%% err", strings.Replace(k, "=", "@", 1),
			float64(n)/window.Seconds(), 100*float64(o.Errors[k])/float64(max(n, 1))))
	}
	if len(parts) == 0 {
		return "no answers"
	}
	return strings.Join(parts, " | ")
}
