package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/internal/reject"
	"github.com/scalpel-dev/scalpel/schemas"
)

// Handler receives decoded, validated telemetry, one call per fetched batch, in stream order.
//
// The events slice and its backing array are reused for the next batch: a handler that keeps events
// must copy the structs (their strings and pointers are never reused, so a struct copy is enough).
// An error means "not now": the same batch is offered again after a delay, in order, so a handler
// must return errors only for conditions that pass (a full buffer, a downstream outage) — bad data
// never reaches it.
type Handler interface {
	HandleTelemetry(ctx context.Context, events []schemas.TelemetryEvent) error
}

// batchSeqKey is the context key of the batch's last stream sequence.
type batchSeqKey struct{}

// BatchLastSeq returns the stream sequence of the last message of the batch a Handler is handling:
// the highest in the batch, rejected and skipped messages included. Once the handler returns nil,
// every message of the stream up to it has been accounted for (the consumer works in stream order),
// which is what a handler that checkpoints its state records next to the checkpoint. ok is false
// outside a handler call.
func BatchLastSeq(ctx context.Context) (seq uint64, ok bool) {
	seq, ok = ctx.Value(batchSeqKey{}).(uint64)
	return seq, ok
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, events []schemas.TelemetryEvent) error

// HandleTelemetry calls f.
func (f HandlerFunc) HandleTelemetry(ctx context.Context, events []schemas.TelemetryEvent) error {
	return f(ctx, events)
}

// StageName is the stage name ingest rejects under: rejected.ingest.
const StageName = "ingest"

// Config configures the ingest consumer. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// Durable is the durable consumer's name: letters, digits, '-' and '_' (default
	// "scalpel-ingest"). It keeps the position in the stream across restarts. The detect stage is
	// stateful, so serve processes sharing a durable do not share its work: the one that holds the
	// durable's lease consumes, and the others stand by (see the pipeline package).
	Durable string `json:"durable" yaml:"durable"`
	// Stream is the stream to consume (default TELEMETRY).
	Stream string `json:"stream" yaml:"stream"`
	// FilterSubject narrows the consumer, e.g. to some services' telemetry (default all
	// telemetry, telemetry.> under the subject prefix; with Partition, that partition's).
	FilterSubject string `json:"filter_subject" yaml:"filter_subject"`
	// Partitions cuts the telemetry stream into this many partitions by service, with the
	// server's subject-mapping partition function: telemetry.<svc>.<comp> is stored as
	// telemetry.<svc>.<comp>.<p>, p = Partition(svc, Partitions) (default 0: not cut). Every
	// process sharing the stream must say the same. Changing it is refused while a consumer of
	// the stream has messages it has not acknowledged: they would stay under the old subjects.
	// 0 leaves a stream that is cut as it is (remove its subject transform by hand to undo it).
	Partitions int `json:"partitions" yaml:"partitions"`
	// Partition is the one partition this process consumes (nil: all of the telemetry). It names
	// the durable (scalpel-ingest-p<Partition> where Durable is the default) and its filter
	// (telemetry.*.*.<Partition>), so processes that each take one partition share the work, and
	// the processes that name the same one stand by for it; one of all of them decides.
	Partition *int `json:"partition,omitempty" yaml:"partition,omitempty"`
	// BatchSize is the most messages handed to the handler in one call (default 1000). Larger batches
	// amortise acks and handler overhead; a batch is also cut as soon as the backlog is empty, so
	// size never adds latency.
	BatchSize int `json:"batch_size" yaml:"batch_size"`
	// MaxWait bounds how long a partial batch waits for more messages before it is handled anyway
	// (default 100ms). Normally the batch is cut earlier, when the server says nothing is pending.
	MaxWait schemas.Duration `json:"max_wait" yaml:"max_wait"`
	// MaxMessageBytes is the largest message decoded; larger ones are rejected (default 1 MiB).
	MaxMessageBytes int `json:"max_message_bytes" yaml:"max_message_bytes"`
	// AllowUnknownFields accepts events with fields the schema does not define (default false:
	// they are rejected, as the schema says; see DecoderConfig.AllowUnknownFields).
	AllowUnknownFields bool `json:"allow_unknown_fields" yaml:"allow_unknown_fields"`
	// MaxClockAhead is how far an event's ts may be ahead of the time the server stored its
	// message (default 2s, detect's default allowed_lateness; negative turns the check off). A
	// message with an event further ahead is rejected (future_timestamp): the producer's clock
	// runs ahead, and the event would move the detector's watermark past every other producer's
	// events, which would all be dropped as late. Keep it at most detect.allowed_lateness.
	MaxClockAhead schemas.Duration `json:"max_clock_ahead" yaml:"max_clock_ahead"`
	// TickAfter is how long serve waits, with no telemetry coming in, before it publishes clock
	// ticks (schemas.ClockTick on telemetry._scalpel.clock), one a second (after five minutes,
	// one every 10 s) until telemetry comes again (default 10s; negative turns them off).
	// Detection runs on event time, which moves only with events: without ticks, a service that
	// falls silent while no other producer publishes is never found silent, and decide's verify
	// periods and approval timeouts stand still. A tick carries the newest event time heard moved on by the wall-clock time since,
	// less TickAfter, so it stays TickAfter behind what a producer that kept publishing would
	// stamp, and a producer that publishes less often than that has its events dropped as late.
	// A consumer that reads only part of the telemetry (FilterSubject) publishes its ticks on
	// telemetry._scalpel.<Durable> and reads them back with its part (TickSubject, Filters).
	TickAfter schemas.Duration `json:"tick_after" yaml:"tick_after"`
	// AckWait is how long the server waits for an ack before redelivering (default 30s). While a
	// batch is being retried, ingest keeps extending it, so it only matters after a crash.
	AckWait schemas.Duration `json:"ack_wait" yaml:"ack_wait"`
	// MaxDeliver caps redeliveries of one message (default -1, unlimited: telemetry is never
	// dropped because the pipeline was down; bad input is rejected, not redelivered).
	MaxDeliver int `json:"max_deliver" yaml:"max_deliver"`
	// MaxAckPending caps delivered-but-unacked messages (default 8 × BatchSize), which bounds the
	// read-ahead that keeps the pipeline busy while a batch is handled.
	MaxAckPending int `json:"max_ack_pending" yaml:"max_ack_pending"`
	// RetryDelay is the first delay before a failed batch (handler error, reject not stored) is
	// retried; it doubles up to MaxRetryDelay (defaults 250ms and 10s).
	RetryDelay    schemas.Duration `json:"retry_delay" yaml:"retry_delay"`
	MaxRetryDelay schemas.Duration `json:"max_retry_delay" yaml:"max_retry_delay"`
}

// DefaultTickAfter is how long serve waits with no telemetry before it publishes clock ticks
// (Config.TickAfter).
const DefaultTickAfter = 10 * time.Second

// Ticks returns after how long without telemetry clock ticks start (Config.TickAfter, its
// default when zero), and false when they are off: TickAfter is negative, or the consumer reads
// part of the telemetry under a durable name no subject token can carry (TickSubject).
func (c Config) Ticks(subj schemas.Subjects) (after time.Duration, on bool) {
	after = cmp.Or(time.Duration(c.TickAfter), DefaultTickAfter)
	if after < 0 || !c.ReadsAll(subj) && !schemas.IsName(c.durable()) {
		return 0, false
	}
	return after, true
}

// TickSubject is the subject the consumer's clock ticks go out on and are read back from (the
// tick's component is its last token): telemetry._scalpel.clock when the consumer reads all
// telemetry, and telemetry._scalpel.<Durable> when it reads a part (FilterSubject). Each group of
// processes that shares the telemetry out then moves its own event time: a group's ticks say
// how long it has heard nothing, which another group's telemetry does not say.
func (c Config) TickSubject(subj schemas.Subjects) (subject, component string) {
	component = schemas.ClockComponent
	if !c.ReadsAll(subj) {
		component = c.durable()
	}
	subject = subj.Telemetry(schemas.ClockService, component)
	if c.Partition != nil {
		// Four tokens, which the stream's partitioning (three) leaves as they are: in the
		// partition's own subjects, whatever partition _scalpel hashes to.
		subject += "." + strconv.Itoa(*c.Partition)
	}
	return subject, component
}

// Filters are the subjects the consumer reads: FilterSubject (all telemetry when unset), and its
// clock ticks' subject when ticks are on and the filter does not cover it.
func (c Config) Filters(subj schemas.Subjects) []string {
	filter := c.filter(subj)
	if _, on := c.Ticks(subj); on {
		if tick, _ := c.TickSubject(subj); !SubjectCovers(filter, tick) {
			return []string{filter, tick}
		}
	}
	return []string{filter}
}

// ReadsAll reports whether the consumer reads all of the telemetry: neither a partition of it nor
// a filter that narrows it.
func (c Config) ReadsAll(subj schemas.Subjects) bool {
	return c.Partition == nil && (c.FilterSubject == "" || c.FilterSubject == subj.TelemetryAll())
}

// durable is the durable's name, defaults filled in. A partition's durable is the default name
// with -p<Partition> when the name is the default: each partition keeps its own position, lease
// and checkpoint.
func (c Config) durable() string {
	d := DefaultConfig().Durable
	if c.Partition != nil && (c.Durable == "" || c.Durable == d) {
		return d + "-p" + strconv.Itoa(*c.Partition)
	}
	return cmp.Or(c.Durable, d)
}

// filter is the filter subject, defaults filled in.
func (c Config) filter(subj schemas.Subjects) string {
	if c.FilterSubject == "" && c.Partition != nil {
		return subj.Telemetry("*", "*") + "." + strconv.Itoa(*c.Partition)
	}
	return cmp.Or(c.FilterSubject, subj.TelemetryAll())
}

// Consumes names what the consumer reads, defaults filled in: its durable and its filter
// subject (without its clock ticks' subject, see Filters).
func (c Config) Consumes(subj schemas.Subjects) (durable, filter string) {
	return c.durable(), c.filter(subj)
}

// SubjectCovers reports whether every subject that subject (a subject or a pattern) matches,
// filter matches too.
func SubjectCovers(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, t := range f {
		switch {
		case t == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case t != "*" && t != s[i]:
			return false
		}
	}
	return len(f) == len(s)
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Durable:         "scalpel-ingest",
		Stream:          schemas.StreamTelemetry,
		BatchSize:       1000,
		MaxWait:         schemas.Duration(100 * time.Millisecond),
		MaxMessageBytes: DefaultMaxMessageBytes,
		MaxClockAhead:   schemas.Duration(DefaultMaxClockAhead),
		TickAfter:       schemas.Duration(DefaultTickAfter),
		AckWait:         schemas.Duration(30 * time.Second),
		MaxDeliver:      -1,
		RetryDelay:      schemas.Duration(250 * time.Millisecond),
		MaxRetryDelay:   schemas.Duration(10 * time.Second),
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults(subj schemas.Subjects) Config {
	d := DefaultConfig()
	c.Durable, c.FilterSubject = c.Consumes(subj)
	if c.Stream == "" {
		c.Stream = d.Stream
	}
	if c.BatchSize == 0 {
		c.BatchSize = d.BatchSize
	}
	if c.MaxWait == 0 {
		c.MaxWait = d.MaxWait
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = d.MaxMessageBytes
	}
	if c.MaxClockAhead == 0 {
		c.MaxClockAhead = d.MaxClockAhead
	}
	if c.TickAfter == 0 {
		c.TickAfter = d.TickAfter
	}
	if c.AckWait == 0 {
		c.AckWait = d.AckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = d.MaxDeliver
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 8 * c.BatchSize
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = d.RetryDelay
	}
	if c.MaxRetryDelay == 0 {
		c.MaxRetryDelay = d.MaxRetryDelay
	}
	return c
}

// DecoderConfig is the configuration of the decoder the consumer runs; a restore or a replay of
// the same telemetry decodes with it too, so it accepts and rejects what the consumer did.
func (c Config) DecoderConfig(subj schemas.Subjects) DecoderConfig {
	return DecoderConfig{MaxMessageBytes: c.MaxMessageBytes, AllowUnknownFields: c.AllowUnknownFields,
		Subjects: subj, MaxClockAhead: time.Duration(c.MaxClockAhead), Partitions: c.Partitions}
}

// Validate reports the first bad field. Zero fields are valid: they mean the default.
func (c Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: ingest: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	switch {
	case strings.IndexFunc(c.Durable, func(r rune) bool { return !durableRune(r) }) >= 0:
		return bad("durable %q may hold only letters, digits, '-' and '_'", c.Durable)
	case c.BatchSize < 0 || c.BatchSize > 100_000:
		return bad("batch_size must be 1..100000, got %d", c.BatchSize)
	case c.MaxWait < 0:
		return bad("max_wait must be > 0, got %s", time.Duration(c.MaxWait))
	case c.MaxMessageBytes < 0:
		return bad("max_message_bytes must be > 0, got %d", c.MaxMessageBytes)
	case c.AckWait < 0 || (c.AckWait > 0 && time.Duration(c.AckWait) < time.Second):
		return bad("ack_wait must be >= 1s, got %s", time.Duration(c.AckWait))
	case c.MaxDeliver < -1:
		return bad("max_deliver must be -1 (unlimited) or > 0, got %d", c.MaxDeliver)
	case c.MaxAckPending < 0 || (c.MaxAckPending > 0 && c.MaxAckPending < c.BatchSize):
		return bad("max_ack_pending (%d) must be at least batch_size (%d), or the consumer stalls", c.MaxAckPending, c.BatchSize)
	case c.RetryDelay < 0 || c.MaxRetryDelay < 0 || (c.MaxRetryDelay > 0 && c.MaxRetryDelay < c.RetryDelay):
		return bad("retry delays must be > 0 with max_retry_delay >= retry_delay")
	case c.Partitions < 0 || c.Partitions > MaxPartitions:
		return bad("partitions must be 0 (the stream is not cut) to %d, got %d", MaxPartitions, c.Partitions)
	case c.Partition != nil && c.Partitions == 0:
		return bad("partition %d names a partition, but partitions is 0: set partitions to how many the stream is cut into", *c.Partition)
	case c.Partition != nil && (*c.Partition < 0 || *c.Partition >= c.Partitions):
		return bad("partition must be 0 to %d (partitions is %d), got %d", c.Partitions-1, c.Partitions, *c.Partition)
	case c.Partition != nil && c.FilterSubject != "":
		return bad("partition and filter_subject both choose what this process reads; set one of them")
	}
	return nil
}

// durableRune reports whether r may appear in a durable's name: what NATS allows in a consumer
// name and a KV key both (the durable names its lease and its checkpoint).
func durableRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}

// Option configures a Consumer.
type Option func(*Consumer)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(c *Consumer) { c.log = l } }

// WithRegisterer registers the consumer's metrics on reg (never the global registry by default).
func WithRegisterer(reg prometheus.Registerer) Option { return func(c *Consumer) { c.reg = reg } }

// WithRejecter sets where rejected messages go (default: a reject.Publisher on the same JetStream,
// counting on the consumer's registerer).
func WithRejecter(p *reject.Publisher) Option { return func(c *Consumer) { c.rejecter = p } }

// Consumer is ingest's durable pull consumer: it fetches telemetry in batches, decodes and validates
// it, sends bad messages to rejected.ingest, hands the good events to the Handler and acknowledges.
//
// Every message is acknowledged explicitly, after the handler returned for its batch (rejected
// messages are terminated once their copy is stored in REJECTED). AckAll would save the server an
// ack per message, but it acknowledges every earlier delivery too — including one that went to a
// pull request of a stopped instance and was never handled — so it can lose telemetry; explicit
// acks cannot. A batch that fails is retried in place, in order, with its ack deadline extended,
// rather than negatively acknowledged, so the next stage sees events in stream order. After a
// crash, unacknowledged messages are redelivered after AckWait.
type Consumer struct {
	js       jetstream.JetStream
	cfg      Config
	filters  []string // what it reads (Config.Filters)
	h        Handler
	log      *slog.Logger
	reg      prometheus.Registerer
	rejecter *reject.Publisher
	dec      *Decoder
	m        metrics

	// mu guards the batch being filled, shared by the delivery callback and the idle flusher.
	mu      sync.Mutex
	batch   []jetstream.Msg // messages waiting to be cut into a batch, in delivery order
	first   time.Time       // arrival of the batch's first message
	stopped atomic.Bool     // Stop was called: no more handling or retries, nak what is left
	skip    atomic.Uint64   // messages at or below this stream sequence are acked unhandled

	// work carries cut batches, in order, to the one worker that decodes, hands over and acks
	// them. Its capacity of one lets the next batch be received while one is being handled — the
	// two cores of a small machine then work at once — and makes delivery wait when the worker is
	// behind, so memory stays bounded.
	work          chan []jetstream.Msg
	workerDone    chan struct{}
	flusherEnd    chan struct{}
	flusherCancel context.CancelFunc
	events        []schemas.TelemetryEvent // worker only
	abandoned     []jetstream.Msg          // worker only until it exits: unhandled after Stop

	cc       jetstream.ConsumeContext
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

type metrics struct {
	events, messages, batches prometheus.Counter
	lag                       prometheus.Gauge
	handle                    prometheus.Histogram
	retries                   prometheus.Counter
	skipped                   prometheus.Counter
}

// NewConsumer checks cfg and prepares a consumer; Start creates the durable and begins consuming.
func NewConsumer(js jetstream.JetStream, subj schemas.Subjects, cfg Config, h Handler, opts ...Option) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("%w: ingest: nil handler", ErrInvalidConfig)
	}
	c := &Consumer{js: js, cfg: cfg.withDefaults(subj), filters: cfg.Filters(subj), h: h, done: make(chan struct{})}
	for _, o := range opts {
		o(c)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("stage", StageName, "durable", c.cfg.Durable)
	if c.rejecter == nil {
		p, err := reject.NewPublisher(js, subj, c.reg)
		if err != nil {
			return nil, err
		}
		c.rejecter = p
	}
	c.dec = NewDecoder(c.cfg.DecoderConfig(subj))
	c.m = metrics{
		events:   prometheus.NewCounter(prometheus.CounterOpts{Name: "scalpel_ingest_events_total", Help: "Telemetry events decoded and handed to the next stage."}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{Name: "scalpel_ingest_messages_total", Help: "Telemetry messages consumed, good or rejected."}),
		batches:  prometheus.NewCounter(prometheus.CounterOpts{Name: "scalpel_ingest_batches_total", Help: "Batches handed to the next stage and acknowledged."}),
		lag:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "scalpel_ingest_lag", Help: "Messages in the stream not yet delivered to the ingest consumer, as of the last delivery."}),
		handle:   prometheus.NewHistogram(prometheus.HistogramOpts{Name: "scalpel_ingest_batch_seconds", Help: "Time to decode, hand over and acknowledge one batch.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9)}),
		retries:  prometheus.NewCounter(prometheus.CounterOpts{Name: "scalpel_ingest_retries_total", Help: "Batches retried after a handler error or a failed reject."}),
		skipped:  prometheus.NewCounter(prometheus.CounterOpts{Name: "scalpel_ingest_skipped_total", Help: "Messages acknowledged without handling because they were handled already: the next stage restored them from a checkpoint (SkipThrough), or they were caught up on in order after an instance stopped without acknowledging them."}),
	}
	if c.reg != nil {
		// A consumer started again on the same registry (a process that takes the durable's lease
		// back) counts on in the metrics the first one registered.
		err := errors.Join(register(c.reg, &c.m.events), register(c.reg, &c.m.messages), register(c.reg, &c.m.batches),
			register(c.reg, &c.m.lag), register(c.reg, &c.m.handle), register(c.reg, &c.m.retries), register(c.reg, &c.m.skipped))
		if err != nil {
			return nil, fmt.Errorf("ingest: register metrics: %w", err)
		}
	}
	c.batch = make([]jetstream.Msg, 0, c.cfg.BatchSize)
	c.work = make(chan []jetstream.Msg, 1)
	c.workerDone = make(chan struct{})
	c.flusherEnd = make(chan struct{})
	return c, nil
}

// register registers *col on reg, or points *col at the collector of the same description that is
// registered there already.
func register[C prometheus.Collector](reg prometheus.Registerer, col *C) error {
	err := reg.Register(*col)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			*col = existing
			return nil
		}
	}
	return err
}

// SkipThrough makes the consumer acknowledge, without decoding or handling, every message whose
// stream sequence is at most seq. Call it before Start.
//
// It is for a handler restored from a checkpoint taken at seq: the durable consumer may redeliver
// messages up to seq that the previous process handled but whose ack never reached the server (it
// crashed between the two), and handing them over again would count them twice. Such redeliveries
// arrive after AckWait, behind newer messages, so every message is checked, not only the first.
func (c *Consumer) SkipThrough(seq uint64) { c.skip.Store(seq) }

// Config returns the effective configuration, defaults filled in.
func (c *Consumer) Config() Config { return c.cfg }

// Start creates or updates the durable consumer and starts consuming. Cancelling ctx stops the
// consumer as Stop does.
//
// Before it consumes, it hands over the messages an earlier instance was delivered and never
// acknowledged (see catchUp). So no other instance may be consuming the durable meanwhile: one
// would get its messages handled twice. The pipeline runs one consumer per durable (a lease).
func (c *Consumer) Start(ctx context.Context) error {
	if c.ctx != nil {
		return errors.New("ingest: consumer already started")
	}
	cctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	conf := jetstream.ConsumerConfig{
		Durable:       c.cfg.Durable,
		Description:   "scalpel ingest: telemetry decode, validate, hand-off",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Duration(c.cfg.AckWait),
		MaxDeliver:    c.cfg.MaxDeliver,
		MaxAckPending: c.cfg.MaxAckPending,
	}
	// One filter as FilterSubject, as the durable was always created: an update that only
	// moved it to FilterSubjects would still be an update.
	if conf.FilterSubject = c.filters[0]; len(c.filters) > 1 {
		conf.FilterSubject, conf.FilterSubjects = "", c.filters
	}
	cons, err := c.js.CreateOrUpdateConsumer(cctx, c.cfg.Stream, conf)
	if err != nil {
		return fmt.Errorf("ingest: create consumer %s on %s: %w", c.cfg.Durable, c.cfg.Stream, err)
	}
	c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if err := c.catchUp(cctx, cons); err != nil {
		c.cancel()
		return fmt.Errorf("ingest: %s: %w", c.cfg.Durable, err)
	}
	var fctx context.Context
	fctx, c.flusherCancel = context.WithCancel(c.ctx)
	cc, err := cons.Consume(c.onMsg,
		// Read ahead two batches so the next one is already here when the handler returns.
		jetstream.PullMaxMessages(2*c.cfg.BatchSize),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			c.log.Warn("consume", "err", err)
		}))
	if err != nil {
		c.cancel()
		return fmt.Errorf("ingest: consume %s: %w", c.cfg.Durable, err)
	}
	c.cc = cc
	go c.worker()
	go c.flusher(fctx)
	go func() {
		select {
		case <-ctx.Done():
			c.Stop()
		case <-c.done:
		}
	}()
	c.log.Info("consuming", "stream", c.cfg.Stream, "filter", strings.Join(c.filters, " "), "batch", c.cfg.BatchSize)
	return nil
}

// Stop stops consuming now. The batch being handled finishes (or, if it is being retried, is
// abandoned unacknowledged); messages fetched but not yet handled are negatively acknowledged, in
// stream order, so another instance gets them at once. Nothing acknowledged is handled twice.
// The order in which the server redelivers them is its own (it may put a message whose deadline
// was extended last), so the next instance may see them slightly out of order: the watermark of
// event-time processing absorbs that.
func (c *Consumer) Stop() { c.shutdown(false) }

// Drain stops fetching, hands every message already fetched to the handler, acknowledges, then
// stops. Done closes when it has finished.
func (c *Consumer) Drain() { c.shutdown(true) }

// Done is closed when the consumer has fully stopped.
func (c *Consumer) Done() <-chan struct{} { return c.done }

func (c *Consumer) shutdown(drain bool) {
	if c.cc == nil {
		return
	}
	c.stopOnce.Do(func() {
		if !drain {
			c.stopped.Store(true)
			c.cancel() // abort a batch stuck in retries
		}
		go func() {
			if drain {
				c.cc.Drain()
			} else {
				c.cc.Stop()
			}
			<-c.cc.Closed() // no more deliveries: onMsg will not run again
			c.stopFlusher()
			c.mu.Lock()
			last := c.batch
			c.batch = nil
			c.mu.Unlock()
			if len(last) > 0 {
				c.work <- last // handled when draining, naked in order when stopping
			}
			close(c.work)
			<-c.workerDone
			// The subscription is closed: hand back what was not handled, in stream order, so
			// another instance gets it at once.
			for _, m := range c.abandoned {
				_ = m.Nak()
			}
			c.abandoned = nil
			// Make sure the last ack reached the server before anyone restarts from this durable.
			if err := c.js.Conn().FlushTimeout(5 * time.Second); err != nil {
				c.log.Warn("flush acks", "err", err)
			}
			c.cancel()
			close(c.done)
			c.log.Info("stopped", "drained", drain)
		}()
	})
}

// catchUp hands over, in stream order, the messages the durable delivered to an instance that
// stopped without acknowledging them (it crashed, or another process takes its place): those
// after the ack floor, up to the last delivered, and after SkipThrough's sequence. The server
// would redeliver them only after AckWait, behind the newer messages this consumer is about to
// receive, and a stateful handler would then get them late (the detector drops an event whose
// bucket has closed). They are read with an ordered consumer instead, handled as the durable's
// messages are (rejects stored with the same ids), and not acknowledged; SkipThrough then covers
// them, so their redeliveries are acknowledged unhandled.
func (c *Consumer) catchUp(ctx context.Context, cons jetstream.Consumer) error {
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read consumer info: %w", err)
	}
	from, through := max(info.AckFloor.Stream, c.skip.Load())+1, info.Delivered.Stream
	if info.NumAckPending == 0 || through < from {
		return nil
	}
	began := time.Now()
	oc, err := c.js.OrderedConsumer(ctx, c.cfg.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: c.filters,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		return fmt.Errorf("catch up on unacknowledged messages: %w", err)
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(c.cfg.BatchSize))
	if err != nil {
		return fmt.Errorf("catch up on unacknowledged messages: %w", err)
	}
	defer it.Stop()
	var (
		batch []jetstream.Msg
		n     int
	)
	flush := func() error {
		if len(batch) > 0 && !c.handle(batch, false) {
			return errors.New("catch up on unacknowledged messages: stopped")
		}
		n += len(batch)
		batch = batch[:0]
		return nil
	}
	for {
		m, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
		if err != nil {
			// Nothing more within the wait: the last delivered message is gone from the stream.
			c.log.Warn("catch up: stopped early", "handled", n+len(batch), "through", through, "err", err)
			break
		}
		seq, ok := streamSeq(m.Reply())
		if !ok || seq > through {
			break
		}
		batch = append(batch, m)
		if len(batch) == c.cfg.BatchSize {
			if err := flush(); err != nil {
				return err
			}
		}
		if seq == through {
			break
		}
	}
	if err := flush(); err != nil {
		return err
	}
	c.skip.Store(max(c.skip.Load(), through))
	c.log.Info("caught up on messages delivered but never acknowledged", "messages", n, "from", from, "through", through,
		"took", time.Since(began).Round(time.Millisecond))
	return nil
}

// onMsg runs on the consume goroutine for every delivered message.
func (c *Consumer) onMsg(msg jetstream.Msg) {
	c.mu.Lock()
	if len(c.batch) == 0 {
		c.first = time.Now()
	}
	c.batch = append(c.batch, msg)
	pending, ok := numPending(msg.Reply())
	if ok {
		c.m.lag.Set(float64(pending))
	}
	// Cut the batch when it is full or when nothing more is waiting: batching must never add latency.
	var cut []jetstream.Msg
	if len(c.batch) >= c.cfg.BatchSize || (ok && pending == 0) {
		cut = c.batch
		c.batch = make([]jetstream.Msg, 0, c.cfg.BatchSize)
	}
	c.mu.Unlock()
	if cut != nil {
		c.work <- cut // waits while the worker is a batch behind: back-pressure, not buffering
	}
}

// flusher hands over a partial batch that waited MaxWait, should the server's pending count not
// have said the backlog was empty (it is advisory).
func (c *Consumer) flusher(ctx context.Context) {
	defer close(c.flusherEnd)
	t := time.NewTicker(time.Duration(c.cfg.MaxWait) / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.mu.Lock()
			var cut []jetstream.Msg
			if len(c.batch) > 0 && time.Since(c.first) >= time.Duration(c.cfg.MaxWait) {
				cut = c.batch
				c.batch = make([]jetstream.Msg, 0, c.cfg.BatchSize)
			}
			c.mu.Unlock()
			if cut != nil {
				select {
				case c.work <- cut:
				case <-ctx.Done():
					c.mu.Lock() // stopping: put it back in front for shutdown to pass on in order
					c.batch = append(cut, c.batch...)
					c.mu.Unlock()
					return
				}
			}
		}
	}
}

// stopFlusher ends the flusher before the work channel closes.
func (c *Consumer) stopFlusher() {
	select {
	case <-c.flusherEnd:
		return
	default:
	}
	c.flusherCancel()
	<-c.flusherEnd
}

// worker handles batches one at a time, in the order they were cut. After Stop it keeps what is
// left, unacknowledged, for shutdown to negatively acknowledge once the subscription is closed: a
// nak while it is still open would be redelivered to this very subscription and lose its place.
func (c *Consumer) worker() {
	defer close(c.workerDone)
	for batch := range c.work {
		if c.stopped.Load() || !c.handle(batch, true) {
			c.abandoned = append(c.abandoned, batch...)
		}
	}
}

// handle decodes the batch, stores rejects, hands the events over and, for the durable's own
// messages (own), acknowledges. It returns false when the consumer stopped before the batch was
// acknowledged.
func (c *Consumer) handle(batch []jetstream.Msg, own bool) bool {
	start := time.Now()
	c.events = c.events[:0]
	skip := c.skip.Load()
	var last, skipped uint64
	for _, msg := range batch {
		seq, stored := ackMeta(msg.Reply())
		last = max(last, seq)
		if skip > 0 && seq > 0 && seq <= skip {
			skipped++ // acknowledged below with the rest: the handler already holds it
			continue
		}
		var err error
		c.events, err = c.dec.DecodeStored(msg.Subject(), msg.Data(), stored, c.events)
		if err != nil {
			var re *RejectError
			if !errors.As(err, &re) {
				re = &RejectError{Class: ClassMalformed, Reason: err.Error(), Err: err}
			}
			c.log.Debug("reject", "subject", msg.Subject(), "class", re.Class, "reason", re.Reason)
			rm := reject.FromJetStream(msg)
			if !c.retry(batch, own, "reject", func(ctx context.Context) error {
				return c.rejecter.Reject(ctx, StageName, rm, re.Class, re.Reason)
			}) {
				return false
			}
			if !own {
				continue
			}
			// Stored in REJECTED: never redeliver it. The reason shows in the server's advisory too.
			if err := msg.TermWithReason(re.Class); err != nil {
				c.log.Warn("term rejected message", "err", err)
			}
		}
	}
	if len(c.events) > 0 {
		if !c.retry(batch, own, "handler", func(ctx context.Context) error {
			if last > 0 {
				ctx = context.WithValue(ctx, batchSeqKey{}, last)
			}
			return c.h.HandleTelemetry(ctx, c.events)
		}) {
			return false
		}
	}
	// Rejected messages were terminated above; acking them again is refused locally by nats.go,
	// which is cheaper than remembering which they were.
	var ackErr error
	for _, msg := range batch {
		if !own {
			break
		}
		if err := msg.Ack(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) && ackErr == nil {
			ackErr = err
		}
	}
	if ackErr != nil {
		c.log.Warn("ack batch", "err", ackErr, "messages", len(batch))
	}
	if skipped > 0 {
		c.m.skipped.Add(float64(skipped))
		c.log.Debug("skipped messages restored from a checkpoint", "messages", skipped, "through", skip)
	}
	c.m.messages.Add(float64(len(batch)))
	c.m.events.Add(float64(len(c.events)))
	c.m.batches.Inc()
	c.m.handle.Observe(time.Since(start).Seconds())
	return true
}

// retry runs fn until it succeeds, backing off and keeping the ack deadline of the durable's own
// batch alive, or until the consumer is stopped (false).
func (c *Consumer) retry(batch []jetstream.Msg, own bool, what string, fn func(ctx context.Context) error) bool {
	delay := time.Duration(c.cfg.RetryDelay)
	for attempt := 1; ; attempt++ {
		err := fn(c.ctx)
		if err == nil {
			return true
		}
		if c.stopped.Load() || c.ctx.Err() != nil {
			c.log.Warn("batch abandoned while stopping; it will be redelivered", "step", what, "err", err)
			return false
		}
		c.m.retries.Inc()
		c.log.Warn("batch failed; retrying", "step", what, "attempt", attempt, "delay", delay, "err", err)
		for _, m := range batch {
			if own {
				_ = m.InProgress()
			}
		}
		select {
		case <-time.After(delay):
		case <-c.ctx.Done():
		}
		delay = min(2*delay, time.Duration(c.cfg.MaxRetryDelay))
	}
}

// numPending reads the consumer's pending count from a JetStream ack subject without allocating:
// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> (9 tokens), or the newer
// $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>.<token>
// (12 tokens and more).
func numPending(reply string) (uint64, bool) { return ackToken(reply, 8, 10) }

// streamSeq reads a message's stream sequence from its ack subject without allocating, as
// numPending does: msg.Metadata() parses every token and allocates, once per message.
func streamSeq(reply string) (uint64, bool) {
	seq, _ := ackMeta(reply)
	return seq, seq > 0
}

// ackMeta reads a message's stream sequence and when the server stored it from its ack subject,
// in one pass and without allocating: 0 and the zero time for what the subject does not say (see
// ackToken for the two forms, where the stored time is two tokens after the sequence).
func ackMeta(reply string) (seq uint64, stored time.Time) {
	if !strings.HasPrefix(reply, "$JS.ACK.") {
		return 0, time.Time{}
	}
	var at int // the sequence's token
	switch tokens := strings.Count(reply, ".") + 1; {
	case tokens == 9:
		at = 5
	case tokens >= 12:
		at = 7
	default:
		return 0, time.Time{}
	}
	i := 0
	for range at {
		i += strings.IndexByte(reply[i:], '.') + 1 // the count above says the dots are there
	}
	seq, okSeq := digits(reply[i:])
	for range 2 { // past the stream and the consumer sequences
		i += strings.IndexByte(reply[i:], '.') + 1
	}
	ns, okTS := digits(reply[i:])
	if !okSeq {
		seq = 0
	}
	if okTS && ns > 0 && ns <= math.MaxInt64 {
		stored = time.Unix(0, int64(ns))
	}
	return seq, stored
}

// digits parses the decimal token s starts with, up to its dot; ok is false when the token is
// empty, holds anything but digits or overflows.
func digits(s string) (n uint64, ok bool) {
	i := 0
	for ; i < len(s) && s[i] != '.'; i++ {
		c := s[i]
		if c < '0' || c > '9' || n > (math.MaxUint64-9)/10 {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, i > 0
}

// ackToken parses the numeric token at index short of the 9-token ack subject, or at index long
// of the 12-token form.
func ackToken(reply string, short, long int) (uint64, bool) {
	if !strings.HasPrefix(reply, "$JS.ACK.") {
		return 0, false
	}
	tokens := strings.Count(reply, ".") + 1
	want := short
	if tokens >= 12 {
		want = long
	} else if tokens != 9 {
		return 0, false
	}
	start := 0
	for i := 0; i < want; i++ {
		j := strings.IndexByte(reply[start:], '.')
		if j < 0 {
			return 0, false
		}
		start += j + 1
	}
	end := strings.IndexByte(reply[start:], '.')
	if end < 0 {
		end = len(reply) - start
	}
	n, err := strconv.ParseUint(reply[start:start+end], 10, 64)
	return n, err == nil
}
