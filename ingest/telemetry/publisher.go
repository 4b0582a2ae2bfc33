package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/schemas"
)

// ErrBadName: a service, component or block name is not a NATS-token-safe name.
var ErrBadName = errors.New("name must match [A-Za-z0-9_-]{1,64}")

var tokenRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Defaults of the options.
const (
	// DefaultBufferSize bounds the observations held between flushes in raw mode, and the series
	// held per interval in aggregate mode. Beyond it observations are dropped and counted.
	DefaultBufferSize = 8192
	// DefaultFlushInterval is how often raw observations are published.
	DefaultFlushInterval = 200 * time.Millisecond
	// DefaultMaxBatchBytes bounds one published message (a JSON array of events); ingest accepts
	// 1 MiB by default.
	DefaultMaxBatchBytes = 256 << 10
	// DefaultMaxPending bounds publishes awaiting their JetStream ack.
	DefaultMaxPending = 256
)

// Observation is one request or block execution.
type Observation struct {
	// Component is the function or endpoint; Block the region inside it (optional).
	Component, Block string
	// Version that ran; empty means the publisher's version source decides.
	Version string
	// Latency of the request.
	Latency time.Duration
	// Error is the category of a failure (schemas.ErrTimeout, ...); empty for success.
	Error string
	// ErrorSite is "file:line" of a failure, when known (raw mode only).
	ErrorSite string
	// TS is when it happened; zero means now.
	TS time.Time
}

// Stats counts what the publisher did with observations.
type Stats struct {
	// Recorded observations accepted into the buffer or an aggregate.
	Recorded uint64
	// Dropped observations, for any reason: buffer full when recorded, NATS disconnected at
	// flush, publish refused. (An aggregate dropped at flush counts the requests it stood for.)
	Dropped uint64
	// Events published (an aggregate counts once) and messages (batches) they travelled in.
	Events, Messages uint64
	// Failed publishes (no JetStream ack); their events are lost.
	Failed uint64
}

// Option configures a Publisher.
type Option func(*Publisher) error

// WithVersion sets the version events carry when nothing more specific is known (default "unknown").
func WithVersion(v string) Option {
	return func(p *Publisher) error {
		if v == "" {
			return errors.New("telemetry: empty version")
		}
		p.version = v
		return nil
	}
}

// WithVersionSource sets where the active version of a component or block comes from — e.g. a
// deployer's Version method — so that after a rollback events carry the version that really ran.
// An empty answer falls back to WithVersion.
func WithVersionSource(f func(component, block string) string) Option {
	return func(p *Publisher) error { p.versionOf = f; return nil }
}

// WithCohort tags every event with a cohort (e.g. "canary").
func WithCohort(c string) Option {
	return func(p *Publisher) error { p.cohort = c; return nil }
}

// WithInstance names the process in every event (OpenTelemetry's service.instance.id: the pod
// name, or host and pid). With it, detect.latency_warmup counts each instance's warm-up from its
// own first request, so the instances a rolling update starts one after another each warm up
// uncompared; without it, only the version's first do. At most 128 characters, no control
// characters.
func WithInstance(id string) Option {
	return func(p *Publisher) error {
		if !schemas.IsVersion(id) {
			return fmt.Errorf("telemetry: instance %q: must be 1-%d characters without control characters", id, schemas.MaxVersionLen)
		}
		p.named = id
		return nil
	}
}

// WithAggregation publishes one event per component, block and version per interval (count,
// errors by category, latency summary) instead of one per request. 0 turns it off (default).
func WithAggregation(interval time.Duration) Option {
	return func(p *Publisher) error {
		if interval < 0 {
			return fmt.Errorf("telemetry: aggregation interval must be >= 0, got %v", interval)
		}
		p.aggInterval = interval
		return nil
	}
}

// WithBufferSize bounds what is held between flushes (default DefaultBufferSize).
func WithBufferSize(n int) Option {
	return func(p *Publisher) error {
		if n < 1 {
			return fmt.Errorf("telemetry: buffer size must be >= 1, got %d", n)
		}
		p.bufSize = n
		return nil
	}
}

// WithFlushInterval sets how often raw observations are published (default DefaultFlushInterval).
func WithFlushInterval(d time.Duration) Option {
	return func(p *Publisher) error {
		if d <= 0 {
			return fmt.Errorf("telemetry: flush interval must be > 0, got %v", d)
		}
		p.flushEvery = d
		return nil
	}
}

// WithSubjects sets the subject prefix scalpel runs with (default: none).
func WithSubjects(s schemas.Subjects) Option {
	return func(p *Publisher) error { p.subj = s; return nil }
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(p *Publisher) error {
		if l == nil {
			return errors.New("telemetry: nil logger")
		}
		p.log = l
		return nil
	}
}

// Publisher records observations and publishes them in the background. It is safe for concurrent
// use; create it with NewPublisher and Close it on shutdown.
type Publisher struct {
	nc          *nats.Conn
	js          jetstream.JetStream
	service     string
	version     string
	cohort      string
	versionOf   func(component, block string) string
	aggInterval time.Duration
	bufSize     int
	flushEvery  time.Duration
	subj        schemas.Subjects
	log         *slog.Logger
	instance    string // names the publisher's message ids
	named       string // WithInstance: the instance events carry
	resEvery    time.Duration
	resComp     string // the component resource samples are sent as

	// Owned by the loop goroutine: the versions of resComp flushed since the last resource
	// sample (resource sampling only), and the sampler.
	resSeen map[string]struct{}
	res     resourceSampler
	resReqs uint64 // requests recorded (and dropped) up to the last resource sample

	mu    sync.Mutex
	raw   []Observation
	spare []Observation
	agg   map[aggKey]*aggState

	seq                                         atomic.Uint64
	recorded, dropped, events, messages, failed atomic.Uint64

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// NewPublisher returns a running publisher for service. nc may be nil: observations are then
// recorded, aggregated and counted but go nowhere (for tests and for measuring the SDK's cost).
func NewPublisher(nc *nats.Conn, service string, opts ...Option) (*Publisher, error) {
	if !tokenRe.MatchString(service) {
		return nil, fmt.Errorf("telemetry: service %q: %w", service, ErrBadName)
	}
	p := &Publisher{
		nc: nc, service: service, version: "unknown",
		bufSize: DefaultBufferSize, flushEvery: DefaultFlushInterval,
		log: slog.New(slog.DiscardHandler), agg: map[aggKey]*aggState{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	for _, o := range opts {
		if err := o(p); err != nil {
			return nil, err
		}
	}
	host, _ := os.Hostname()
	p.instance = fmt.Sprintf("%s-%d-%d", host, os.Getpid(), time.Now().UnixNano())
	if nc != nil {
		js, err := jetstream.New(nc,
			jetstream.WithPublishAsyncMaxPending(DefaultMaxPending),
			jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
				p.failed.Add(1)
				p.log.Debug("telemetry publish failed", "subject", m.Subject, "err", err)
			}))
		if err != nil {
			return nil, fmt.Errorf("telemetry: %w", err)
		}
		p.js = js
	}
	p.raw = make([]Observation, 0, min(p.bufSize, 1024))
	every := p.flushEvery
	if p.aggInterval > 0 {
		every = p.aggInterval
	}
	if p.resEvery > 0 {
		p.resSeen = map[string]struct{}{}
		p.res.sample(time.Now())
		p.resReqs = p.served()
	}
	go p.loop(every)
	return p, nil
}

// Service is the service the events are published for.
func (p *Publisher) Service() string { return p.service }

// Stats returns the counters.
func (p *Publisher) Stats() Stats {
	return Stats{Recorded: p.recorded.Load(), Dropped: p.dropped.Load(), Events: p.events.Load(),
		Messages: p.messages.Load(), Failed: p.failed.Load()}
}

// versionFor resolves the version an observation carries.
func (p *Publisher) versionFor(component, block string) string {
	if p.versionOf != nil {
		if v := p.versionOf(component, block); v != "" {
			return v
		}
	}
	return p.version
}

// Record accepts one observation. It never blocks on NATS: when the buffer is full the
// observation is dropped and counted.
func (p *Publisher) Record(o Observation) {
	if o.Version == "" {
		o.Version = p.versionFor(o.Component, o.Block)
	}
	if p.aggInterval > 0 {
		p.recordAgg(&o)
		return
	}
	if o.TS.IsZero() {
		o.TS = time.Now()
	}
	p.mu.Lock()
	if len(p.raw) >= p.bufSize {
		p.mu.Unlock()
		p.dropped.Add(1)
		return
	}
	p.raw = append(p.raw, o)
	p.mu.Unlock()
	p.recorded.Add(1)
}

// Close publishes what is buffered and waits (bounded by ctx) for the JetStream acks.
func (p *Publisher) Close(ctx context.Context) error {
	p.once.Do(func() { close(p.stop) })
	select {
	case <-p.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if p.js == nil {
		return nil
	}
	select {
	case <-p.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Publisher) loop(every time.Duration) {
	defer close(p.done)
	t := time.NewTicker(every)
	defer t.Stop()
	var res <-chan time.Time // nil without resource sampling: never ready
	if p.resEvery > 0 {
		rt := time.NewTicker(p.resEvery)
		defer rt.Stop()
		res = rt.C
	}
	var buf []byte
	for {
		select {
		case <-p.stop:
			p.flush(&buf)
			return
		case <-t.C:
			p.flush(&buf)
		case now := <-res:
			p.flush(&buf) // what ran up to now says which versions are sampled
			p.sampleResources(&buf, now)
		}
	}
}

// sampleResources publishes one resource sample per version of resComp flushed since the last
// one (two while a version change is under way).
func (p *Publisher) sampleResources(buf *[]byte, now time.Time) {
	since := p.res.wall
	cores, memMB, cpuOK := p.res.sample(now)
	served := p.served()
	rps := 0.0
	if d := now.Sub(since).Seconds(); d > 0 {
		rps = float64(served-p.resReqs) / d
	}
	p.resReqs = served
	versions := slices.Sorted(maps.Keys(p.resSeen))
	clear(p.resSeen)
	if len(versions) == 0 || (!cpuOK && memMB <= 0) {
		return
	}
	b := append((*buf)[:0], '[')
	for i, v := range versions {
		if i > 0 {
			b = append(b, ',')
		}
		b = p.appendResource(b, now, p.resComp, v, cores, rps, memMB, cpuOK)
	}
	b = append(b, ']')
	*buf = b
	switch {
	case p.js == nil:
		p.events.Add(uint64(len(versions)))
	case p.nc.IsConnected(): // when not, a sample is no request: nothing to count as dropped
		p.publish(p.resComp, b, len(versions), 0)
	}
}

// served is how many requests the process recorded, every component's, including those dropped
// for a full buffer: they were served all the same.
func (p *Publisher) served() uint64 {
	return p.recorded.Load() + p.dropped.Load()
}

// flush publishes what accumulated since the last flush, one message (a JSON array) per
// component and batch size.
func (p *Publisher) flush(buf *[]byte) {
	var obs []Observation
	var aggs []aggSnapshot
	if p.aggInterval > 0 {
		aggs = p.snapshotAgg()
	} else {
		p.mu.Lock()
		obs, p.raw, p.spare = p.raw, p.spare[:0], nil
		p.mu.Unlock()
	}
	if p.resSeen != nil {
		for i := range obs {
			if obs[i].Component == p.resComp {
				p.resSeen[obs[i].Version] = struct{}{}
			}
		}
		for i := range aggs {
			if aggs[i].key.component == p.resComp {
				p.resSeen[aggs[i].key.version] = struct{}{}
			}
		}
	}
	n := len(obs) + len(aggs)
	if n == 0 {
		p.recycle(obs)
		return
	}
	if p.js == nil {
		p.events.Add(uint64(n))
		p.recycle(obs)
		return
	}
	if !p.nc.IsConnected() {
		reqs := uint64(len(obs))
		for i := range aggs {
			reqs += uint64(aggs[i].st.count)
		}
		p.dropped.Add(reqs)
		p.recycle(obs)
		return
	}
	// Group by component: a subject names one component.
	byComp := map[string][]int{}
	var order []string
	for i := range obs {
		c := obs[i].Component
		if _, ok := byComp[c]; !ok {
			order = append(order, c)
		}
		byComp[c] = append(byComp[c], i)
	}
	for i := range aggs {
		c := aggs[i].key.component
		if _, ok := byComp[c]; !ok {
			order = append(order, c)
		}
		byComp[c] = append(byComp[c], len(obs)+i)
	}
	for _, comp := range order {
		b := (*buf)[:0]
		count, reqs := 0, uint64(0)
		send := func() {
			if count == 0 {
				return
			}
			b = append(b, ']')
			p.publish(comp, b, count, reqs)
			b, count, reqs = b[:0], 0, 0
		}
		for _, i := range byComp[comp] {
			start := len(b)
			if count == 0 {
				b = append(b, '[')
			} else {
				b = append(b, ',')
			}
			w := uint64(1)
			if i < len(obs) {
				b = p.appendObservation(b, &obs[i])
			} else {
				b = p.appendAggregate(b, &aggs[i-len(obs)])
				w = uint64(aggs[i-len(obs)].st.count)
			}
			count++
			reqs += w
			if len(b) > DefaultMaxBatchBytes && count > 1 {
				// Close the batch before this event and start a new one with it.
				ev := append([]byte(nil), b[start+1:]...)
				b, count, reqs = b[:start], count-1, reqs-w
				send()
				b = append(append(b, '['), ev...)
				count, reqs = 1, w
			}
		}
		send()
		*buf = b
	}
	p.recycle(obs)
}

func (p *Publisher) recycle(obs []Observation) {
	if obs == nil {
		return
	}
	clear(obs)
	p.mu.Lock()
	if p.spare == nil && cap(obs) <= p.bufSize {
		p.spare = obs[:0]
	}
	p.mu.Unlock()
}

func (p *Publisher) publish(comp string, b []byte, events int, reqs uint64) {
	id := p.instance + "-" + strconv.FormatUint(p.seq.Add(1), 10)
	msg := &nats.Msg{Subject: p.subj.Telemetry(p.service, comp), Data: append([]byte(nil), b...)}
	// PublishAsync waits (briefly) only when DefaultMaxPending acks are outstanding; that happens
	// on the flush goroutine, never on a request.
	if _, err := p.js.PublishMsgAsync(msg, jetstream.WithMsgID(id)); err != nil {
		p.dropped.Add(reqs)
		p.log.Debug("telemetry batch dropped", "component", comp, "events", events, "err", err)
		return
	}
	p.events.Add(uint64(events))
	p.messages.Add(1)
}

// appendObservation writes one raw event as JSON.
func (p *Publisher) appendObservation(b []byte, o *Observation) []byte {
	b = p.appendHead(b, o.TS, o.Component, o.Block, o.Version)
	b = append(b, `,"latency_ms":`...)
	b = appendFloat(b, float64(o.Latency)/float64(time.Millisecond))
	if o.Error != "" {
		b = append(b, `,"error":`...)
		b = appendString(b, o.Error)
		if o.ErrorSite != "" {
			b = append(b, `,"error_site":`...)
			b = appendString(b, o.ErrorSite)
		}
	}
	return append(b, '}')
}

func (p *Publisher) appendHead(b []byte, ts time.Time, comp, block, version string) []byte {
	b = append(b, `{"ts":"`...)
	b = ts.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","service":`...)
	b = appendString(b, p.service)
	b = append(b, `,"component":`...)
	b = appendString(b, comp)
	if block != "" {
		b = append(b, `,"block":`...)
		b = appendString(b, block)
	}
	b = append(b, `,"version":`...)
	b = appendString(b, version)
	if p.cohort != "" {
		b = append(b, `,"cohort":`...)
		b = appendString(b, p.cohort)
	}
	if p.named != "" {
		b = append(b, `,"instance":`...)
		b = appendString(b, p.named)
	}
	return b
}

func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		f = 0
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

// appendString writes s as a JSON string. Names are token-safe; versions and error sites are free
// text, so quotes, backslashes and control bytes are escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, `\u00`...)
			b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
