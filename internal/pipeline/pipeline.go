// Package pipeline wires the stages together over JetStream: ingest → detect → anomaly.<svc>.<comp>
// → decide → decision.<svc> → actuate. `scalpel serve` and `scalpel demo` run it; the stages never
// import each other, they meet here.
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/reject"
	"github.com/scalpel-dev/scalpel/schemas"
)

// Durable consumer names. Keeping them stable is what lets a restarted process continue where the
// last one stopped.
const (
	DurableDecideAnomalies = "scalpel-decide"
	DurableActuate         = "scalpel-actuate"
)

// Pipeline is a running set of stages. Stop it with Stop, which drains consumers so that no acked
// work is lost.
type Pipeline struct {
	cfg  config.Config
	js   jetstream.JetStream
	subj schemas.Subjects
	log  *slog.Logger
	reg  prometheus.Registerer

	detect  *DetectStage
	engine  *decide.Engine
	catalog *decide.Catalog

	// ckpt writes detector checkpoints (nil when detect_checkpoint is 0); detectSkip is the
	// sequence of the checkpoint the detector was restored from, which ingest must not hand over
	// again.
	ckpt       *checkpointer
	detectSkip uint64
	// ingest is the running ingest consumer: nil while another process holds the durable's lease.
	ingest *ingest.Consumer
	// stopTicks stops the clock ticks of the running ingest (ticks.go).
	stopTicks func()
	// ingestLease and decideLease are the stages' leases (set by startActive); the fences read
	// them from the stages' goroutines.
	ingestLease, decideLease atomic.Pointer[decide.Lease]
	// detectStream is when the telemetry stream the detector was restored on was created: a
	// stream made anew since holds other messages under the same sequences.
	detectStream time.Time

	decideMu sync.Mutex
	// decideWM is the event time the decide engine was last advanced to, and decideAt when
	// (wall clock); guarded by decideMu.
	decideWM, decideAt time.Time
	// bal shares the partitions out among the processes (Options.Balancer; nil: not shared).
	bal *Balancer
	// wmMu guards the watermark shareWatermark shares: when it last wrote it (wmShared), the
	// newest not yet written (wmLatest) and the timer that writes it (wmTimer, nil: none due).
	wmMu     sync.Mutex
	wmShared time.Time
	wmLatest time.Time
	wmTimer  *time.Timer

	actuators map[string]actuate.Actuator
	rejecter  *reject.Publisher

	// ctx lives from Start to Stop: handlers use it, not the caller's start-up context.
	ctx    context.Context
	cancel context.CancelFunc

	stops   []func()
	ready   atomic.Bool
	active  [len(stageNames)]atomic.Bool // see setActive
	deploys atomic.Int64

	m metrics
}

type metrics struct {
	active     *prometheus.GaugeVec
	anomalies  prometheus.Counter
	decisions  *prometheus.CounterVec
	commands   *prometheus.CounterVec
	series     prometheus.GaugeFunc
	actuateErr *prometheus.CounterVec
	ckpt       checkpointMetrics
	ticks      prometheus.Counter
}

// Options configures New.
type Options struct {
	Config   config.Config
	JS       jetstream.JetStream
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// Actuators, when set, replaces the configured actuators for every service (tests and the demo use
	// it to observe commands in-process). The configured ones still run when it is nil.
	Actuators map[string]actuate.Actuator
	// Balancer, when set, shares the partitions out among the processes (serve --partition
	// auto): the pipeline of partition ingest.partition takes its lease only within its
	// process's share.
	Balancer *Balancer
}

// New prepares a pipeline; Start runs it.
func New(o Options) (*Pipeline, error) {
	if o.JS == nil {
		return nil, errors.New("pipeline: a JetStream context is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Balancer != nil && o.Config.Ingest.Partition == nil {
		return nil, errors.New("pipeline: a balanced pipeline consumes one partition: set ingest.partition")
	}
	p := &Pipeline{
		cfg:  o.Config,
		js:   o.JS,
		subj: o.Config.Subjects(),
		log:  o.Logger,
		reg:  o.Registry,
		bal:  o.Balancer,
	}
	p.m = metrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scalpel_stage_active",
			Help: "1 while this process is the active one of a stage (it holds the stage's lease), 0 while it stands by: ingest (the durable's consumer and the detector) and decide."},
			[]string{"stage"}),
		anomalies: prometheus.NewCounter(prometheus.CounterOpts{Name: "scalpel_anomalies_total", Help: "Anomalies detect published."}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scalpel_decisions_total", Help: "Decisions decide published, by action."}, []string{"action"}),
		commands:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scalpel_commands_total", Help: "Rollback commands actuated, by actuator set outcome."}, []string{"outcome"}),
		actuateErr: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scalpel_actuate_errors_total", Help: "Actuation failures, by class."},
			[]string{"class"}),
		ckpt: newCheckpointMetrics(),
		ticks: prometheus.NewCounter(prometheus.CounterOpts{Name: "scalpel_ingest_clock_ticks_total",
			Help: "Clock ticks published because no telemetry came in for ingest.tick_after: they move event time on."}),
	}
	for _, stage := range stageNames {
		p.m.active.WithLabelValues(stage) // 0 until this process takes the stage's lease
	}
	p.detect = NewDetectStage(NewDetector(o.Config, o.Logger), p.publishAnomalies)
	p.detect.afterBatch = func(ctx context.Context, wm time.Time) {
		if !p.followsShared() {
			p.AdvanceDecide(ctx, wm)
		}
		p.shareWatermark(ctx, wm)
	}
	p.m.series = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "scalpel_detect_series", Help: "Series the detector tracks."},
		func() float64 { return float64(p.detect.SeriesCount()) })
	// Event time moves only with events: when it stalls while the wall clock runs on, no test can
	// see anything, not even a unit falling silent. This is what an operator alerts on.
	watermark := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "scalpel_detect_watermark_seconds",
		Help: "The detector's event-time watermark, in Unix seconds (0 before any event): the newest event time seen less allowed_lateness. It stands still while no telemetry comes in."},
		func() float64 {
			if wm := p.detect.Watermark(); !wm.IsZero() {
				return float64(wm.UnixNano()) / 1e9
			}
			return 0
		})
	collectors := []prometheus.Collector{p.m.active, p.m.anomalies, p.m.decisions, p.m.commands, p.m.series, p.m.actuateErr,
		newDroppedCollector(p.detect), watermark, p.m.ticks}
	for _, c := range append(collectors, p.m.ckpt.collectors()...) {
		if err := o.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("pipeline: register metrics: %w", err)
		}
	}
	if o.Actuators != nil {
		p.actuators = o.Actuators
	}
	rej, err := reject.NewPublisher(p.js, p.subj, p.reg)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	p.rejecter = rej
	return p, nil
}

// Ready reports whether the pipeline has started: each stage consumes, or stands by while another
// process runs it (see Active).
func (p *Pipeline) Ready() bool { return p.ready.Load() }

// Ingests reports whether the pipeline consumes telemetry at all (config role, not decide).
func (p *Pipeline) Ingests() bool { return p.cfg.Ingests() }

// Partition is the partition of the telemetry the pipeline consumes (ingest.partition), nil for
// all of it.
func (p *Pipeline) Partition() *int { return p.cfg.Ingest.Partition }

// DeploysRecorded counts the deploy events the decide stage has recorded since Start.
func (p *Pipeline) DeploysRecorded() int64 { return p.deploys.Load() }

// Watermark is the detector's event-time watermark (zero before any event, and in a process that
// consumes no telemetry).
func (p *Pipeline) Watermark() time.Time { return p.detect.Watermark() }

// SeriesCount is how many series the detector tracks.
func (p *Pipeline) SeriesCount() int { return p.detect.SeriesCount() }

// Catalog returns the KV-backed catalog (valid after Start).
func (p *Pipeline) Catalog() *decide.Catalog { return p.catalog }

// Start creates the topology (idempotently) and starts every stage.
func (p *Pipeline) Start(startCtx context.Context) error {
	p.ctx, p.cancel = context.WithCancel(context.WithoutCancel(startCtx))
	if err := p.start(startCtx); err != nil {
		p.Stop()
		return err
	}
	p.ready.Store(true)
	return nil
}

func (p *Pipeline) start(ctx context.Context) error {
	topo := p.cfg.Topology
	topo.TelemetryPartitions = p.cfg.Ingest.Partitions
	if err := ingest.EnsureTopology(ctx, p.js, p.subj, topo); err != nil {
		return fmt.Errorf("create JetStream topology: %w", err)
	}
	catKV, err := p.js.KeyValue(ctx, schemas.BucketCatalog)
	if err != nil {
		return fmt.Errorf("open catalog bucket: %w", err)
	}
	p.catalog = decide.NewCatalog(catKV)
	p.engine = NewEngine(p.cfg, p.catalog, p.log)

	if err := p.startActuate(ctx); err != nil {
		return err
	}
	return p.startActive(ctx)
}

// Stop drains every stage, upstream first, so in-flight work finishes and is acked before exit.
func (p *Pipeline) Stop() {
	p.ready.Store(false)
	for i := len(p.stops) - 1; i >= 0; i-- {
		p.stops[i]()
	}
	p.stops = nil
	if p.cancel != nil {
		p.cancel()
	}
}

// ---- ingest → detect ----

// startIngest gives the stage a fresh detector, restores it (see restoreDetector) and starts the
// ingest consumer. It runs when this process takes the ingest durable's lease: at start, or when
// it takes over from another process.
func (p *Pipeline) startIngest(ctx context.Context) error {
	if p.detectCurrent(ctx) {
		// This process stood by for a while (it lost the lease in a NATS outage, say) and nobody
		// has acknowledged telemetry past what its detector holds: it resumes where it was.
		p.detectSkip = p.detect.seq
		p.log.Info("detector current: resuming without a restore", "stage", "detect", "seq", p.detectSkip)
	} else {
		// A detector this process held before is outdated by what another one handled since.
		p.detect.reset(NewDetector(p.cfg, p.log), 0)
		p.detect.ckpt, p.ckpt, p.detectSkip = nil, nil, 0
		if err := p.restoreDetector(ctx); err != nil {
			return err
		}
	}
	c, err := ingest.NewConsumer(p.js, p.subj, p.cfg.Ingest, p.detect,
		ingest.WithLogger(p.log), ingest.WithRejecter(p.rejecter), ingest.WithRegisterer(p.reg))
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	c.SkipThrough(p.detectSkip)
	p.detect.ckpt = p.ckpt
	p.detect.fence = p.ingestFence
	// The consumer lives until Stop or until the lease is lost, not until the start-up context
	// ends.
	if err := c.Start(p.ctx); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	p.ingest = c
	p.stopTicks = p.startTicks()
	return nil
}

// errLeaseLapsed fails a batch that arrives after the ingest lease expired unrenewed.
var errLeaseLapsed = errors.New("the ingest lease lapsed without a renewal: holding telemetry until it is renewed or another process takes over")

// errDecideLeaseLapsed fails a publication of decisions after the decide lease expired unrenewed.
var errDecideLeaseLapsed = errors.New("the decide lease lapsed without a renewal: holding decisions until it is renewed or another process takes over")

// leaseValid reports whether l is held and, by this process's clock, not yet expired.
func leaseValid(l *decide.Lease) bool { return l != nil && time.Now().Before(l.ValidUntil()) }

// ingestFence lets the detector handle a batch only while the ingest lease is valid by this
// process's clock. A process paused past its lease (a stopped VM, a long stall) may still hold
// a batch or be delivered more before its next renewal finds that another process took over;
// handling and acknowledging them would take them from the new holder's detector. Fenced, the
// batch is retried until the lease is renewed, or handed back when the process stands by.
func (p *Pipeline) ingestFence() error {
	if !leaseValid(p.ingestLease.Load()) {
		return errLeaseLapsed
	}
	return nil
}

// detectCurrent reports whether the stage's detector holds everything the durable's consumers
// have acknowledged: it handled every message of this stream through its sequence, with its
// anomalies stored, and the ack floor is no further. Only a process that ingested before and
// stood by can have such a detector.
func (p *Pipeline) detectCurrent(ctx context.Context) bool {
	p.detect.mu.Lock()
	seq, clean := p.detect.seq, p.detect.unsent == nil && !p.detect.failed
	p.detect.mu.Unlock()
	if seq == 0 || !clean || p.detectStream.IsZero() {
		return false
	}
	src, err := p.restoreSource(ctx)
	if err != nil {
		return false // restoreDetector reports it
	}
	return src.info.Created.Equal(p.detectStream) && src.floor <= seq
}

// stopIngest stops the ingest consumer. With drain (Stop), every fetched message is handled and
// acknowledged and the state it left is checkpointed, for whoever consumes next. Without (the
// lease was lost, so another process may be consuming already), fetched messages are handed back
// unhandled and no checkpoint is written over the new holder's.
func (p *Pipeline) stopIngest(drain bool) {
	c := p.ingest
	if c == nil {
		return
	}
	p.ingest = nil
	p.stopTicks()
	defer p.stopSharingWatermark(drain)
	if drain {
		c.Drain()
	} else {
		c.Stop()
	}
	<-c.Done()
	if p.ckpt == nil {
		return
	}
	if drain {
		p.ckpt.final(context.WithoutCancel(p.ctx), p.detect)
	} else {
		p.ckpt.wg.Wait() // a put in flight finishes before anything else touches the store
	}
	p.detect.mu.Lock()
	p.detect.ckpt = nil
	p.detect.mu.Unlock()
}

// publishAnomalies publishes anomalies and waits until the stream has stored them all.
func (p *Pipeline) publishAnomalies(ctx context.Context, anomalies []schemas.Anomaly) error {
	futures := make([]jetstream.PubAckFuture, 0, len(anomalies))
	for i := range anomalies {
		a := &anomalies[i]
		b, err := json.Marshal(a)
		if err != nil {
			return fmt.Errorf("encode anomaly: %w", err)
		}
		f, err := p.js.PublishAsync(p.subj.Anomaly(a.Service, a.Component), b, jetstream.WithMsgID(a.MsgID()))
		if err != nil {
			return fmt.Errorf("publish anomaly: %w", err)
		}
		futures = append(futures, f)
		p.log.Info("anomaly", "stage", "detect", "status", a.Status, "service", a.Service, "component", a.Component, "block", a.Block,
			"version", a.Version, "metric", a.Metric, "category", a.ErrorCategory, "observed", a.Observed,
			"baseline", a.Baseline, "baseline_version", a.BaselineVersion, "id", a.ID)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
			p.m.anomalies.Inc()
		case err := <-f.Err():
			return fmt.Errorf("publish anomaly: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
