package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/metricstest"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/replay"
	"github.com/scalpel-dev/scalpel/internal/sim"
	"github.com/scalpel-dev/scalpel/schemas"
)

// TestPartitionedProcessesShareTheTelemetry: the telemetry stream is cut into two partitions by
// service (ingest.partitions), and each of two processes consumes one (ingest.partition). The
// process that decides is the one whose partition checkout is not in (the other, started first,
// has role detect): checkout's detector runs
// in the other, its anomaly reaches the decider through the anomaly stream, and the bad block is
// rolled back once. The stream stores checkout's telemetry under its partition's subjects, and
// the process of the other partition tracks none of it.
func TestPartitionedProcessesShareTheTelemetry(t *testing.T) {
	_, nc, js := natstest.Connect(t)
	mine := ingest.Partition("checkout", 2)
	cfg := config.Default()
	cfg.Ingest.Partitions = 2
	startPart := func(k int, role string) (*pipeline.Pipeline, *prometheus.Registry) {
		c := cfg
		c.Ingest.Partition, c.Role = &k, role
		reg := prometheus.NewRegistry()
		p := startOpts(t, pipeline.Options{Config: c, JS: js, Registry: reg, Logger: testLogger(t).With("partition", k)})
		t.Cleanup(p.Stop)
		return p, reg
	}
	// Checkout's process starts first, but with --role detect it leaves deciding to the other.
	mineP, mineReg := startPart(mine, config.RoleDetect)
	other, otherReg := startPart(1-mine, config.RoleAll)
	if mineP.Leading() || !other.Leading() {
		t.Fatalf("deciding: checkout's process (role detect) %v, the other (role all) %v", mineP.Leading(), other.Leading())
	}
	applyCheckout(t, other)
	h := &harness{t: t, nc: nc, js: js, p: other, cfg: cfg}

	svc := sim.Checkout(1)
	h.publishVersion2(svc, 60*time.Second, nil)
	h.idleOn(60*time.Second,
		durable{schemas.StreamTelemetry, "scalpel-ingest-p" + strconv.Itoa(mine)},
		durable{schemas.StreamAnomalies, pipeline.DurableDecideAnomalies},
		durable{schemas.StreamDecisions, pipeline.DurableActuate})
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if len(h.commands()) == 0 {
			return errNoCommandYet
		}
		return nil
	})
	checkOneBlockRollback(t, h.commands())

	if n, _ := metricstest.Value(t, mineReg, "scalpel_detect_series", nil); n == 0 {
		t.Errorf("the process of checkout's partition %d tracks no series", mine)
	}
	if n, _ := metricstest.Value(t, otherReg, "scalpel_detect_series", nil); n != 0 {
		t.Errorf("the process of partition %d tracks %v series, want none of checkout's", 1-mine, n)
	}
	str, err := js.Stream(context.Background(), schemas.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	m, err := str.GetLastMsgForSubject(context.Background(), "telemetry.checkout.>")
	if err != nil {
		t.Fatal(err)
	}
	if want := "." + strconv.Itoa(mine); !strings.HasSuffix(m.Subject, want) || strings.Count(m.Subject, ".") != 3 {
		t.Errorf("checkout's telemetry is stored as %s, want telemetry.checkout.<component>%s", m.Subject, want)
	}

	// A replay of checkout's partition reads what its process read, and finds what it found, as
	// does one of checkout alone (whose telemetry's subjects now have four tokens); one of the
	// other partition reads no telemetry at all.
	live := h.anomalies()
	mineP.Stop()
	other.Stop()
	for _, k := range []int{mine, 1 - mine, -1} {
		c := cfg
		o := replay.ServerOptions{Subjects: c.Subjects(), Service: "checkout"}
		if k >= 0 {
			c.Ingest.Partition = &k
			o = replay.ServerOptions{Subjects: c.Subjects(), Partition: &k, Partitions: 2, TelemetryFilters: c.Ingest.Filters(c.Subjects())}
		}
		src, err := replay.NewServerSource(context.Background(), js, o)
		if err != nil {
			t.Fatal(err)
		}
		tl, err := replay.Run(context.Background(), src, replay.Options{Config: c})
		src.Close()
		if k == 1-mine {
			if err == nil || !strings.Contains(err.Error(), "no telemetry") {
				t.Errorf("replay of partition %d: %v, want nothing to replay", k, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(live) == 0 || len(tl.Anomalies) != len(live) {
			t.Fatalf("replay of partition %d: %d anomalies, serve published %d", k, len(tl.Anomalies), len(live))
		}
		for i, a := range live {
			if b := tl.Anomalies[i]; a.ID != b.ID || !a.TSDetected.Equal(b.TSDetected) {
				t.Errorf("anomaly %d: serve %s at %s, replay %s at %s", i, a.ID, a.TSDetected, b.ID, b.TSDetected)
			}
		}
	}
}

var errNoCommandYet = errors.New("no rollback command yet")

// TestDecideOnlyProcessFollowsTheConsumersEventTime: a process with role decide consumes no
// telemetry, so it has no detector whose watermark moves its verify periods. The consumers
// share theirs in scalpel_state, and it follows the earliest of the live ones: after the bad
// block is rolled back, the verify period ends in event time that only checkout's partition,
// ticking through the quiet, moves on, and the incident takes its next step.
func TestDecideOnlyProcessFollowsTheConsumersEventTime(t *testing.T) {
	_, nc, js := natstest.Connect(t)
	cfg := config.Default()
	cfg.Ingest.Partitions = 2
	cfg.Ingest.TickAfter = schemas.Duration(time.Second)
	cfg.Decide.VerifyPeriod = schemas.Duration(10 * time.Second)
	start := func(role string, k *int) *pipeline.Pipeline {
		c := cfg
		c.Role, c.Ingest.Partition = role, k
		p := startOpts(t, pipeline.Options{Config: c, JS: js, Registry: prometheus.NewRegistry(), Logger: testLogger(t).With("role", role)})
		t.Cleanup(p.Stop)
		return p
	}
	decider := start(config.RoleDecide, nil)
	if !decider.Leading() {
		t.Fatal("the decide-only process does not decide")
	}
	if ingest, _ := decider.Active(); ingest {
		t.Fatal("the decide-only process consumes telemetry")
	}
	for k := range 2 {
		start(config.RoleDetect, &k)
	}
	applyCheckout(t, decider)
	h := &harness{t: t, nc: nc, js: js, p: decider, cfg: cfg}
	h.publishVersion2(sim.Checkout(1), 60*time.Second, nil)

	var steps []string
	natstest.CheckFor(t, 40*time.Second, 50*time.Millisecond, func() error {
		steps = steps[:0]
		incident := ""
		for _, d := range h.decisions() {
			if incident == "" && d.Action == schemas.ActionRollback {
				incident = d.IncidentID
			}
			if incident != "" && d.IncidentID == incident {
				steps = append(steps, d.Action+"/"+d.Granularity)
			}
		}
		if len(steps) < 2 {
			return fmt.Errorf("the incident's steps so far: %v", steps)
		}
		return nil
	})
	if steps[0] != "rollback/fine" {
		t.Errorf("the incident's steps: %v, want a fine rollback first", steps)
	}
}

// TestDecidingPartitionWaitsForTheOthers: the process that decides consumes one partition, and
// its event time runs minutes ahead of checkout's partition (whose producers publish late, or
// whose consumer has a backlog). Checkout's anomaly names version 2.0 before any deploy announced
// it, so it waits deploy_skew (1m) of event time for its deploy. Decided on the deciding
// partition's event time, it would be decided at once, as no deploy's; on the earliest event time
// the partitions share, it is still waiting when the deploy comes, and the deploy explains it. The
// rollback's verify period then ends on checkout's partition's event time, and the incident
// climbs the ladder (nothing carries out the command here).
func TestDecidingPartitionWaitsForTheOthers(t *testing.T) {
	_, nc, js := natstest.Connect(t)
	mine := ingest.Partition("checkout", 2)
	other := otherPartitionsService(t, mine, 2)
	cfg := config.Default()
	cfg.Ingest.Partitions = 2
	cfg.Ingest.TickAfter = schemas.Duration(-1) // event time moves only with what is published here
	cfg.Decide.VerifyPeriod = schemas.Duration(10 * time.Second)
	start := func(k int, role string) *pipeline.Pipeline {
		c := cfg
		c.Ingest.Partition, c.Role = &k, role
		p := startOpts(t, pipeline.Options{Config: c, JS: js, Registry: prometheus.NewRegistry(), Logger: testLogger(t).With("partition", k)})
		t.Cleanup(p.Stop)
		return p
	}
	start(mine, config.RoleDetect)
	decider := start(1-mine, config.RoleAll)
	if !decider.Leading() {
		t.Fatal("the process of the other partition does not decide")
	}
	applyCheckout(t, decider)
	h := &harness{t: t, nc: nc, js: js, p: decider, cfg: cfg}

	svc := sim.Checkout(1)
	t0 := eventStart()
	h.publishDeploy(sim.CheckoutDeploy("d-1.0", t0, "1.0"))
	h.publishJS(svc.Traffic(t0, 120*time.Second))
	t1 := t0.Add(120 * time.Second)
	svc.SetVersion("2.0")
	h.publishJS(svc.Traffic(t1, 30*time.Second)) // 2.0 serves; its deploy is not announced yet
	natstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if len(h.anomalies()) == 0 {
			return errors.New("no anomaly of checkout 2.0 yet")
		}
		return nil
	})
	h.idleOn(30*time.Second, durable{schemas.StreamAnomalies, pipeline.DurableDecideAnomalies})

	// The deciding process's own partition moves on to now, two minutes past checkout's.
	now := time.Now().UTC()
	lat := 12.0
	var evs []schemas.TelemetryEvent
	for i := range 20 {
		evs = append(evs, schemas.TelemetryEvent{ID: fmt.Sprintf("%s-%d", other, i), TS: now.Add(time.Duration(i-20) * 100 * time.Millisecond),
			Service: other, Component: "api", Version: "1.0", LatencyMS: &lat})
	}
	h.publishJS(evs)
	h.idleOn(30*time.Second, durable{schemas.StreamTelemetry, "scalpel-ingest-p" + strconv.Itoa(1-mine)})
	handled := time.Now()
	// Decide has advanced since, with the deciding partition at now: on the earliest event time
	// the partitions share, that is checkout's partition's, still short of the deadline.
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if wm, at := decider.DecideWatermark(); !at.After(handled) || wm.IsZero() {
			return fmt.Errorf("decide last advanced to %s at %s", wm, at)
		}
		return nil
	})
	if wm, _ := decider.DecideWatermark(); wm.After(t1.Add(time.Minute)) {
		t.Errorf("decide advanced to %s, past checkout's partition's event time (its traffic ends at %s)", wm, t1.Add(30*time.Second))
	}
	if ds := h.decisions(); len(ds) != 0 {
		t.Fatalf("decided before checkout's partition reached the anomaly's deadline for its deploy: %s: %s", ds[0].Action, ds[0].Reason)
	}

	h.publishDeploy(sim.CheckoutDeploy("d-2.0", t1, "2.0"))
	var ds []schemas.Decision
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if ds = h.decisions(); len(ds) < 2 {
			return fmt.Errorf("%d decisions, want the rollback and the verify period's escalation", len(ds))
		}
		return nil
	})
	if d := ds[0]; d.Action != schemas.ActionRollback || d.Granularity != schemas.GranularityFine || d.DeployID != "d-2.0" {
		t.Errorf("first decision: %s/%s of deploy %q, want a fine rollback of d-2.0: %s", d.Action, d.Granularity, d.DeployID, d.Reason)
	}
	if d := ds[1]; d.IncidentID != ds[0].IncidentID || d.Granularity == schemas.GranularityFine {
		t.Errorf("second decision: %s/%s, want the incident's next step: %s", d.Action, d.Granularity, d.Reason)
	}
}

// TestReplayOfEveryPartitionIsLive: the producers of one partition run 10 s ahead of checkout's,
// five times allowed_lateness. Live, each partition's process detects on its own event time and
// keeps every event. A replay of the whole stream runs a detector per partition, as serve did, so
// it drops nothing and finds what serve found, with the same ids and times, and decides as serve
// decided, from the start of the streams or from each partition's own checkpoint; one detector
// over both partitions would drop checkout's events as late behind the other partition's.
func TestReplayOfEveryPartitionIsLive(t *testing.T) {
	_, nc, js := natstest.Connect(t)
	mine := ingest.Partition("checkout", 2)
	other := otherPartitionsService(t, mine, 2)
	cfg := config.Default()
	cfg.Ingest.Partitions = 2
	cfg.DetectCheckpoint = schemas.Duration(10 * time.Millisecond)
	cfg.DetectCheckpointHistory = schemas.Duration(30 * time.Second)
	var ps []*pipeline.Pipeline
	for _, k := range []int{mine, 1 - mine} {
		c := cfg
		c.Ingest.Partition = &k
		p := startOpts(t, pipeline.Options{Config: c, JS: js, Registry: prometheus.NewRegistry(), Logger: testLogger(t).With("partition", k)})
		t.Cleanup(p.Stop)
		ps = append(ps, p)
	}
	decider := ps[0]
	if !decider.Leading() {
		decider = ps[1]
	}
	applyCheckout(t, decider)
	h := &harness{t: t, nc: nc, js: js, p: decider, cfg: cfg}

	svc := sim.Checkout(1)
	ahead := func(evs []schemas.TelemetryEvent) []schemas.TelemetryEvent {
		var out []schemas.TelemetryEvent
		lat := 12.0
		for i, ev := range evs {
			out = append(out, ev)
			if i%20 == 0 {
				out = append(out, schemas.TelemetryEvent{ID: fmt.Sprintf("%s-%s", other, ev.ID), TS: ev.TS.Add(10 * time.Second),
					Service: other, Component: "api", Version: "1.0", LatencyMS: &lat})
			}
		}
		return out
	}
	t0 := eventStart()
	h.publishDeploy(sim.CheckoutDeploy("d-1.0", t0, "1.0"))
	h.publishJS(ahead(svc.Traffic(t0, 120*time.Second)))
	t1 := t0.Add(120 * time.Second)
	h.publishDeploy(sim.CheckoutDeploy("d-2.0", t1, "2.0"))
	svc.SetVersion("2.0")
	h.publishJS(ahead(svc.Traffic(t1, 60*time.Second)))
	h.idleOn(60*time.Second,
		durable{schemas.StreamTelemetry, "scalpel-ingest-p0"}, durable{schemas.StreamTelemetry, "scalpel-ingest-p1"},
		durable{schemas.StreamAnomalies, pipeline.DurableDecideAnomalies})
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if len(h.commands()) == 0 {
			return errNoCommandYet
		}
		return nil
	})
	live, decided := h.anomalies(), h.decisions()
	if len(live) == 0 {
		t.Fatal("serve found no anomaly")
	}
	for _, p := range ps {
		p.Stop()
	}

	// From the start of the streams; from the deploy on, each partition's detector starting from
	// its own process's dated checkpoint; checkout alone from its partition's; and, with
	// checkout's partition's checkpoints gone, the other from its checkpoint and checkout's from
	// the warm-up before it.
	for _, tt := range []struct {
		since   time.Time
		service string
		parts   []int
		drop    bool // checkout's partition's checkpoints removed first
	}{{time.Time{}, "", nil, false}, {t1, "", []int{0, 1}, false}, {t1, "checkout", []int{mine}, false}, {t1, "", []int{1 - mine}, true}} {
		since := tt.since
		if tt.drop {
			// Its detector warms up from the stream instead, from before the other's checkpoint.
			obj, err := js.ObjectStore(context.Background(), schemas.ObjectState)
			if err != nil {
				t.Fatal(err)
			}
			list, err := obj.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range list {
				if strings.HasPrefix(o.Name, fmt.Sprintf("detect.scalpel-ingest-p%d", mine)) {
					if err := obj.Delete(context.Background(), o.Name); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		o := replay.ServerOptions{Subjects: cfg.Subjects(), Since: since, Service: tt.service}
		if !since.IsZero() {
			o.Checkpoints = &cfg
		}
		src, err := replay.NewServerSource(context.Background(), js, o)
		if err != nil {
			t.Fatal(err)
		}
		cps, why := src.Checkpoints()
		var got []int
		for _, cp := range cps {
			if cp.Partition != nil {
				got = append(got, *cp.Partition)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.parts) || len(cps) != len(tt.parts) {
			t.Fatalf("since %v, service %q: checkpoints of partitions %v (%s), want %v", since, tt.service, got, why, tt.parts)
		}
		tl, err := replay.Run(context.Background(), src, replay.Options{Config: cfg, Since: since})
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
		if tt.drop && tl.Stats.FirstEvent.After(t0.Add(time.Second)) {
			t.Errorf("without its checkpoints, checkout's partition was read from %s, not from the warm-up before %s (the stream starts at %s)", tl.Stats.FirstEvent, since, t0)
		}
		if len(tl.Checkpoints) != len(tt.parts) {
			t.Errorf("since %v, service %q: the timeline names %d checkpoints, want %d", since, tt.service, len(tl.Checkpoints), len(tt.parts))
		}
		var page bytes.Buffer
		if err := replay.WriteReport(&page, tl, replay.ReportOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, k := range tt.parts {
			if want := fmt.Sprintf("Partition %d's detector started from the checkpoint detect.scalpel-ingest-p%d", k, k); !strings.Contains(page.String(), want) {
				t.Errorf("since %v, service %q: the report does not say %q", since, tt.service, want)
			}
		}
		if tl.Stats.Late != 0 {
			t.Errorf("since %v: the replay dropped %d events as late; serve dropped none", since, tl.Stats.Late)
		}
		if len(tl.Anomalies) != len(live) {
			for _, a := range live {
				t.Logf("live %s %s %s %s %s", a.ID, a.TSDetected, a.Metric, a.Status, a.Block)
			}
			for _, a := range tl.Anomalies {
				t.Logf("replay %s %s %s %s %s", a.ID, a.TSDetected, a.Metric, a.Status, a.Block)
			}
			t.Logf("stats %+v warnings %v", tl.Stats, tl.Warnings)
			t.Fatalf("since %v, service %q: replay: %d anomalies, serve published %d", since, tt.service, len(tl.Anomalies), len(live))
		}
		for i, a := range live {
			if b := tl.Anomalies[i]; a.ID != b.ID || !a.TSDetected.Equal(b.TSDetected) {
				t.Errorf("since %v: anomaly %d: serve %s at %s, replay %s at %s", since, i, a.ID, a.TSDetected, b.ID, b.TSDetected)
			}
		}
		if len(tl.Decisions) != len(decided) {
			t.Fatalf("since %v: replay: %d decisions, serve published %d", since, len(tl.Decisions), len(decided))
		}
		for i, d := range decided {
			if e := tl.Decisions[i]; d.ID != e.ID {
				t.Errorf("since %v: decision %d: serve %s (%s), replay %s (%s)", since, i, d.ID, d.Action, e.ID, e.Action)
			}
		}
	}
}

// otherPartitionsService is a service name stored in another partition than mine, of n.
func otherPartitionsService(t *testing.T, mine, n int) string {
	t.Helper()
	for _, svc := range []string{"search", "cart", "billing", "profile", "ledger", "catalog"} {
		if ingest.Partition(svc, n) != mine {
			return svc
		}
	}
	t.Fatalf("no service of the list is stored outside partition %d of %d", mine, n)
	return ""
}

// TestPartitionsAreSharedOut: processes that each run every partition with a Balancer (serve
// --partition auto) share them out. One alone holds all four; when a second joins, the first
// hands over its two highest and the second takes them; when the second stops, the first takes
// them back.
func TestPartitionsAreSharedOut(t *testing.T) {
	_, _, js := natstest.Connect(t)
	cfg := config.Default()
	cfg.Ingest.Partitions = 4
	cfg.Decide.LeaseTTL = schemas.Duration(2 * time.Second)
	type process struct {
		bal *pipeline.Balancer
		ps  []*pipeline.Pipeline
	}
	start := func(name string) *process {
		pr := &process{bal: pipeline.NewBalancer(4, 2*time.Second)}
		for k := range 4 {
			c := cfg
			c.Ingest.Partition = &k
			p := startOpts(t, pipeline.Options{Config: c, JS: js, Registry: prometheus.NewRegistry(), Balancer: pr.bal,
				Logger: testLogger(t).With("process", name, "partition", k)})
			t.Cleanup(p.Stop)
			pr.ps = append(pr.ps, p)
		}
		if err := pr.bal.Start(context.Background(), js); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pr.bal.Stop)
		return pr
	}
	consuming := func(pr *process) []int {
		var out []int
		for k, p := range pr.ps {
			if ingest, _ := p.Active(); ingest {
				out = append(out, k)
			}
		}
		return out
	}
	waitFor := func(what string, ok func() bool, pr ...*process) {
		t.Helper()
		natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			if !ok() {
				var got []string
				for _, x := range pr {
					got = append(got, fmt.Sprint(consuming(x)))
				}
				return fmt.Errorf("%s: the processes consume %v", what, got)
			}
			return nil
		})
	}
	a := start("a")
	waitFor("one process alone", func() bool { return len(consuming(a)) == 4 }, a)
	b := start("b")
	waitFor("two processes", func() bool {
		ca, cb := consuming(a), consuming(b)
		return len(ca) == 2 && len(cb) == 2 && fmt.Sprint(ca) == "[0 1]" && fmt.Sprint(cb) == "[2 3]"
	}, a, b)
	for _, p := range b.ps {
		p.Stop()
	}
	b.bal.Stop()
	waitFor("the second stopped", func() bool { return len(consuming(a)) == 4 }, a)
}
