package replay

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
	"github.com/scalpel-dev/scalpel/internal/reject"
	"github.com/scalpel-dev/scalpel/schemas"
)

// Options configures Run.
type Options struct {
	// Config is the configuration to replay with: its detect and decide sections and the subject
	// prefix. The config that was live reproduces the recorded anomalies and decisions; another one
	// shows what it would have changed.
	Config config.Config
	// Since and Until bound, in event time, what the timeline reports (anomalies, decisions, charts,
	// the diff). Everything the source yields is still fed to detect and decide, so state built
	// before Since (baselines, open incidents) is the same as live. Zero means unbounded.
	Since, Until time.Time
	// Component, when set, restricts what the timeline reports to that component (and decisions
	// that target it). The input is not filtered: the detector's watermark and decide's guards see
	// every series, as they did live.
	Component string
	// Charts collects per-second series (requests, errors, p50/p99 latency) for the report. It costs
	// memory per component and second of the range; leave it off when only the timeline is wanted.
	Charts bool
	// Logger receives the stages' logs (state changes at Info); default discard.
	Logger *slog.Logger
	// Progress, when set, is called about every ProgressEvery (default 1s) of wall time and once at
	// the end.
	Progress      func(Progress)
	ProgressEvery time.Duration
	// AdvanceEvery is how many telemetry messages are observed between detector advances (default
	// 512). The detector's output does not depend on it; it trades calls for latency of nothing.
	AdvanceEvery int
}

// Progress reports how far a replay is.
type Progress struct {
	Messages     int64         `json:"messages"`
	Events       int64         `json:"events"`
	EventsPerSec float64       `json:"events_per_sec"`
	Fraction     float64       `json:"fraction"` // of the source read, -1 when unknown
	Elapsed      time.Duration `json:"elapsed_ns"`
	Done         bool          `json:"done"`
}

// Stats describes the input of a replay.
type Stats struct {
	Messages int64 `json:"messages"`
	Events   int64 `json:"events"`
	// ClockTicks counts the events of them that were clock ticks (schemas.ClockTick): serve
	// published them while no telemetry came in, and they moved event time on as live.
	ClockTicks int64 `json:"clock_ticks,omitempty"`
	// Rejected counts telemetry messages live ingest would have rejected, by class.
	Rejected map[string]int64 `json:"rejected,omitempty"`
	Late     uint64           `json:"late_events"`
	Invalid  uint64           `json:"invalid_events"`
	// OverLimit counts events not detected on because their series would have exceeded
	// max_series.
	OverLimit    uint64        `json:"series_limit_events,omitempty"`
	FirstEvent   time.Time     `json:"first_event,omitzero"`
	LastEvent    time.Time     `json:"last_event,omitzero"`
	Watermark    time.Time     `json:"watermark,omitzero"`
	Elapsed      time.Duration `json:"elapsed_ns"`
	EventsPerSec float64       `json:"events_per_sec"`
	// Errors are anomalies the engine could not decide (they would have been retried live).
	Errors []string `json:"errors,omitempty"`
}

// Recorded holds what was recorded live in the range, for the diff and the report.
type Recorded struct {
	Anomalies []schemas.Anomaly     `json:"anomalies"`
	Decisions []schemas.Decision    `json:"decisions"`
	Acks      []schemas.RollbackAck `json:"acks"`
	// Approvals are people's answers to recommendations; the replayed engine gets them too.
	Approvals []schemas.Approval `json:"approvals,omitempty"`
	// ActuationFailures are decisions actuate gave up on; the replayed engine gets them too.
	ActuationFailures []ActuationFailure `json:"actuation_failures,omitempty"`
}

// ActuationFailure is a decision whose commands actuate could not deliver (it landed in
// rejected.actuate). Live decide takes it as a failed step and escalates; so does the replay.
type ActuationFailure struct {
	// TS is when decide learnt of it: the later of the decision's ts and the time the rejected
	// message was stored, as live decide uses.
	TS         time.Time `json:"ts"`
	DecisionID string    `json:"decision_id"`
	IncidentID string    `json:"incident_id,omitempty"`
	Service    string    `json:"service"`
	Component  string    `json:"component,omitempty"`
	Block      string    `json:"block,omitempty"`
	Action     string    `json:"action,omitempty"`
	// Reason is the Scalpel-Reject-Reason header; Class the reject class (permanent,
	// retries_exhausted, invalid); CommandID the command that failed, when one did.
	Reason    string `json:"reason"`
	Class     string `json:"class,omitempty"`
	CommandID string `json:"command_id,omitempty"`
}

// Timeline is the result of a replay.
type Timeline struct {
	Since     time.Time          `json:"since,omitzero"`
	Until     time.Time          `json:"until,omitzero"`
	Component string             `json:"component,omitempty"`
	Stats     Stats              `json:"stats"`
	Manifests []schemas.Manifest `json:"manifests"`
	// Deploys are every deploy the engine saw, in event-time order.
	Deploys []schemas.DeployEvent `json:"deploys"`
	// Anomalies and Decisions are what the replay produced in the range, in the order produced.
	Anomalies []schemas.Anomaly  `json:"anomalies"`
	Decisions []schemas.Decision `json:"decisions"`
	Recorded  Recorded           `json:"recorded"`
	// Events is the story in order: deploys, anomalies, decisions, recorded acks.
	Events []Entry `json:"events"`
	Diff   *Diff   `json:"diff,omitempty"`
	// Series holds per-second charts of the components anomalies were about (with Options.Charts).
	Series []Series `json:"series,omitempty"`
	// Checkpoint is the detector checkpoint the replay started from, when it did (its snapshot
	// bytes left out). Checkpoints are those its partitions' detectors started from, when it read
	// every partition of a cut stream from theirs.
	Checkpoint  *CheckpointRecord   `json:"checkpoint,omitempty"`
	Checkpoints []*CheckpointRecord `json:"checkpoints,omitempty"`
	// Warnings are problems with the input that did not stop the replay.
	Warnings []string `json:"warnings,omitempty"`
	// Interrupted is set when the replay was stopped before the source ended.
	Interrupted bool `json:"interrupted,omitempty"`
}

// Entry is one line of the story.
type Entry struct {
	TS        time.Time `json:"ts"`
	Kind      string    `json:"kind"` // deploy | anomaly | resolved | decision | approval | ack | actuation_failure
	Service   string    `json:"service"`
	Component string    `json:"component,omitempty"`
	Block     string    `json:"block,omitempty"`
	ID        string    `json:"id"`
	Summary   string    `json:"summary"`
}

// ErrNoInput is returned when the source held nothing to replay.
var ErrNoInput = errors.New("nothing to replay: no telemetry in the range")

// Order of the engine's inputs at equal event times: live decide's rebuild order (deploys,
// anomalies, approvals, acks, actuation failures), which replay follows too.
const (
	orderDeploy = iota
	orderAnomaly
	orderApproval
	orderAck
	orderFailure
	orderLast // Advance: after every input at its time
)

// input is a recorded input of the engine: anything but the anomalies, which the replay detects.
// Exactly one of the pointers is set.
type input struct {
	ts       time.Time
	order    int
	deploy   *schemas.DeployEvent
	approval *schemas.Approval
	ack      *schemas.RollbackAck
	failure  *ActuationFailure
}

// part is one detector of a replay and what it read. A replay runs one detector over the whole
// telemetry, unless the stream is cut into partitions (ingest.partitions) and the replay reads
// every one of them: it then runs one per partition (key K), and one for what the stream stored
// before it was cut (key -1, three-token subjects), as the serve processes that consumed each did.
// One detector over all of them would drop as late the events of a partition whose producers lag
// another's by more than allowed_lateness, which its own detector kept.
type part struct {
	key int
	det *detect.Detector
	// after is the telemetry sequence through which the checkpoint the part's detector was
	// restored from holds it: the part skips what it already holds.
	after uint64
	// stored is when the server stored the last telemetry message the part read: a part that has
	// read nothing stored in the last pipeline.WatermarkStale no longer holds decide back, as a
	// consumer whose shared watermark is that old no longer does live. read says it read any
	// (a record without its storage time, as a test's may be, never goes stale).
	stored time.Time
	read   bool
}

// run is the state of one replay.
type run struct {
	o   Options
	tl  *Timeline
	eng *decide.Engine
	// parts are the replay's detectors by key; split says there is one per partition.
	parts  []*part
	split  bool
	charts *charts

	// inputs are the recorded inputs sorted by (ts, order); next is the first not yet handed over.
	inputs []input
	next   int
	// cps are the checkpoint records the detectors start from: none to start empty, one, or,
	// split, one per partition (CheckpointRecord.Partition).
	cps []*CheckpointRecord

	anomalySeen  map[string]bool
	decisionSeen map[string]bool
}

// Run replays src through detect and decide in dry-run and returns the timeline. It never
// publishes or actuates. When ctx is cancelled it stops, and returns what it has so far with
// Interrupted set and ctx's error.
func Run(ctx context.Context, src Source, o Options) (*Timeline, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.AdvanceEvery <= 0 {
		o.AdvanceEvery = 512
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = time.Second
	}
	r := &run{
		o:            o,
		tl:           &Timeline{Since: o.Since, Until: o.Until, Component: o.Component},
		anomalySeen:  map[string]bool{},
		decisionSeen: map[string]bool{},
	}
	if o.Charts {
		r.charts = newCharts()
	}
	pf := newPrefetch(ctx, src, ingest.NewDecoder(o.Config.Ingest.DecoderConfig(o.Config.Subjects())))
	defer pf.Close()
	src = pf
	start := time.Now()
	lastProgress := start
	var manifests []*schemas.Manifest
	report := func(done bool) {
		if o.Progress == nil {
			return
		}
		el := time.Since(start)
		o.Progress(Progress{Messages: r.tl.Stats.Messages, Events: r.tl.Stats.Events, Elapsed: el, Done: done,
			EventsPerSec: float64(r.tl.Stats.Events) / max(el.Seconds(), 1e-9), Fraction: src.Progress()})
	}
	var runErr error
	sinceAdvance := 0
	for {
		rec, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				r.tl.Interrupted = true
			}
			runErr = err
			break
		}
		if rec.Kind != KindTelemetry {
			if r.parts != nil && (rec.Kind == KindDeploy || rec.Kind == KindManifest) {
				r.warn("%s record after telemetry started (seq %d): bundles list them first; it may be handed over late", rec.Kind, rec.Seq)
			}
			if m := r.meta(rec); m != nil {
				manifests = append(manifests, m)
			}
			if r.parts != nil {
				r.sortPending()
			}
			continue
		}
		if r.parts == nil {
			r.prepare(manifests)
		}
		r.telemetry(&rec)
		sinceAdvance++
		if sinceAdvance >= o.AdvanceEvery {
			sinceAdvance = 0
			if err := r.advance(ctx); err != nil {
				runErr = err
				break
			}
			if o.Progress != nil && time.Since(lastProgress) >= o.ProgressEvery {
				lastProgress = time.Now()
				report(false)
			}
		}
	}
	if r.parts == nil {
		r.prepare(manifests)
	}
	if runErr == nil {
		runErr = r.advance(ctx)
	}
	if runErr == nil {
		runErr = r.flush(ctx, time.Time{}, orderLast)
	}
	r.tl.Stats.Elapsed = time.Since(start)
	r.tl.Stats.EventsPerSec = float64(r.tl.Stats.Events) / max(r.tl.Stats.Elapsed.Seconds(), 1e-9)
	for _, p := range r.parts {
		r.tl.Stats.Late += p.det.LateEvents()
		r.tl.Stats.Invalid += p.det.InvalidEvents()
		r.tl.Stats.OverLimit += p.det.OverLimitEvents()
	}
	r.tl.Stats.Watermark = r.watermark()
	report(true)
	r.finish()
	if runErr != nil {
		return r.tl, runErr
	}
	if r.tl.Stats.Messages == 0 && len(r.tl.Recorded.Decisions) == 0 {
		return r.tl, ErrNoInput
	}
	return r.tl, nil
}

func (r *run) warn(format string, a ...any) {
	if len(r.tl.Warnings) < 100 {
		r.tl.Warnings = append(r.tl.Warnings, fmt.Sprintf(format, a...))
	}
}

// meta takes in a record that is not telemetry.
func (r *run) meta(rec Record) *schemas.Manifest {
	body := rec.Body()
	switch rec.Kind {
	case KindManifest:
		m, err := schemas.ParseManifest(body)
		if err != nil {
			r.warn("manifest %s: %v", rec.Subject, err)
			return nil
		}
		r.tl.Manifests = append(r.tl.Manifests, *m)
		return m
	case KindCheckpoint:
		var cp CheckpointRecord
		if err := json.Unmarshal(body, &cp); err != nil {
			r.warn("checkpoint record (seq %d) skipped, the detector starts empty: %v", rec.Seq, err)
			return nil
		}
		r.cps = append(r.cps, &cp)
	case KindDeploy:
		ev, err := schemas.DecodeDeployEvent(body)
		if err != nil {
			// Live decide skips it too (after rejecting it once).
			r.warn("deploy (seq %d) skipped: %v", rec.Seq, err)
			return nil
		}
		r.inputs = append(r.inputs, input{ts: ev.TS, order: orderDeploy, deploy: ev})
	case KindAnomaly:
		var a schemas.Anomaly
		if err := json.Unmarshal(body, &a); err != nil {
			r.warn("recorded anomaly (seq %d): %v", rec.Seq, err)
			return nil
		}
		if r.inRange(a.TSDetected) && r.about(a.Component) {
			r.tl.Recorded.Anomalies = append(r.tl.Recorded.Anomalies, a)
		}
	case KindDecision:
		var d schemas.Decision
		if err := json.Unmarshal(body, &d); err != nil {
			r.warn("recorded decision (seq %d): %v", rec.Seq, err)
			return nil
		}
		if r.inRange(d.TS) && r.targets(&d) {
			r.tl.Recorded.Decisions = append(r.tl.Recorded.Decisions, d)
		}
	case KindAck:
		ack, err := schemas.DecodeAck(body)
		if err != nil {
			r.warn("recorded ack (seq %d): %v", rec.Seq, err)
			return nil
		}
		r.inputs = append(r.inputs, input{ts: ack.TS, order: orderAck, ack: ack})
		if r.inRange(ack.TS) {
			r.tl.Recorded.Acks = append(r.tl.Recorded.Acks, *ack)
		}
	case KindApproval:
		ap, err := schemas.DecodeApproval(body)
		if err != nil {
			// Live decide rejects it and goes on.
			r.warn("recorded approval (seq %d) skipped: %v", rec.Seq, err)
			return nil
		}
		r.inputs = append(r.inputs, input{ts: ap.TS, order: orderApproval, approval: ap})
		if r.inRange(ap.TS) {
			r.tl.Recorded.Approvals = append(r.tl.Recorded.Approvals, *ap)
		}
	case KindActuationFailure:
		d, err := schemas.DecodeDecision(body)
		if err != nil {
			return nil // not a decision: live decide skips it too (actuate rejects only decisions)
		}
		f := &ActuationFailure{TS: d.TS, DecisionID: d.ID, IncidentID: d.IncidentID, Service: d.Service, Action: d.Action,
			Reason: rec.Headers[schemas.HeaderRejectReason], Class: rec.Headers[reject.HeaderClass], CommandID: rec.Headers[schemas.HeaderCommandID]}
		if len(d.Targets) > 0 {
			f.Component, f.Block = d.Targets[0].Component, d.Targets[0].Block
		}
		if rec.Time.After(f.TS) { // as live: decide learns of it when it is stored, never before the decision
			f.TS = rec.Time
		}
		r.inputs = append(r.inputs, input{ts: f.TS, order: orderFailure, failure: f})
		if r.inRange(f.TS) && r.targets(d) {
			r.tl.Recorded.ActuationFailures = append(r.tl.Recorded.ActuationFailures, *f)
		}
	}
	return nil
}

func (r *run) inRange(t time.Time) bool {
	return (r.o.Since.IsZero() || !t.Before(r.o.Since)) && (r.o.Until.IsZero() || !t.After(r.o.Until))
}

func (r *run) about(component string) bool { return r.o.Component == "" || component == r.o.Component }

// targets reports whether a decision is about the component the timeline is restricted to.
func (r *run) targets(d *schemas.Decision) bool {
	if r.o.Component == "" {
		return true
	}
	for _, t := range d.Targets {
		if t.Component == r.o.Component {
			return true
		}
	}
	for _, p := range d.Plan {
		if p.Component == r.o.Component {
			return true
		}
	}
	return false
}

// prepare builds the stages once every manifest and deploy is known.
func (r *run) prepare(manifests []*schemas.Manifest) {
	cat := decide.NewStaticCatalog(manifests...)
	in := r.o.Config.Ingest
	r.split = in.Partitions > 0 && in.Partition == nil
	if !r.split {
		var cp *CheckpointRecord
		if len(r.cps) > 0 {
			cp = r.cps[0]
		}
		if cp != nil && cp.Partition != nil {
			// One detector cannot start from one partition's state and read every partition.
			r.warn("the source holds the checkpoints of %d partitions, but the config does not cut the stream: the detector starts empty (replay with the config's ingest.partitions)", len(r.cps))
			cp = nil
		}
		r.parts = []*part{r.restored(-1, cp)}
		if p := r.parts[0]; p.after > 0 {
			r.tl.Checkpoint = r.cps[0].shown()
		}
	} else {
		// A partition's checkpoint is its part's; one of no partition is the consumer's that
		// read the whole stream, before it was cut. The other parts start with their telemetry.
		r.parts = []*part{}
		for _, cp := range r.cps {
			key := -1
			if cp.Partition != nil {
				key = *cp.Partition
			}
			if slices.ContainsFunc(r.parts, func(p *part) bool { return p.key == key }) {
				r.warn("checkpoint %s skipped: its partition's detector already starts from another", cp.Object)
				continue
			}
			if p := r.restored(key, cp); p.after > 0 {
				r.parts = append(r.parts, p)
				r.tl.Checkpoints = append(r.tl.Checkpoints, cp.shown())
			}
		}
		slices.SortFunc(r.parts, func(a, b *part) int { return cmp.Compare(a.key, b.key) })
	}
	r.eng = pipeline.NewEngine(r.o.Config, cat, r.o.Logger)
	r.sortPending()
}

// partOf is the part that reads telemetry record rec: the only one, or, split, the one of the
// partition its subject names (a part is added the first time one is named).
func (r *run) partOf(rec *Record) *part {
	if !r.split {
		return r.parts[0]
	}
	key := -1
	if rec.pre.cut && rec.pre.part < r.o.Config.Ingest.Partitions {
		key = rec.pre.part // beyond the cut, no partition's consumer would have read it
	}
	i, found := slices.BinarySearchFunc(r.parts, key, func(p *part, k int) int { return cmp.Compare(p.key, k) })
	if !found {
		r.parts = slices.Insert(r.parts, i, &part{key: key, det: pipeline.NewDetector(r.o.Config, r.o.Logger)})
	}
	return r.parts[i]
}

// watermark is the event time decide has reached: the detector's watermark, or, split, the
// earliest of the parts' that read telemetry stored within pipeline.WatermarkStale of the newest
// (live, the decider follows the earliest watermark the partitions' consumers shared within it).
func (r *run) watermark() time.Time {
	if !r.split {
		return r.parts[0].det.Watermark()
	}
	var newest, low time.Time
	for _, p := range r.parts {
		if p.stored.After(newest) {
			newest = p.stored
		}
	}
	for _, p := range r.parts {
		wm := p.det.Watermark()
		if !p.read || wm.IsZero() || !p.stored.IsZero() && newest.Sub(p.stored) >= pipeline.WatermarkStale {
			continue
		}
		if low.IsZero() || wm.Before(low) {
			low = wm
		}
	}
	return low
}

// restored is a part with its detector restored from checkpoint record cp, or new when cp is nil
// or cannot be restored (its after then 0).
func (r *run) restored(key int, cp *CheckpointRecord) *part {
	p := &part{key: key, det: pipeline.NewDetector(r.o.Config, r.o.Logger)}
	if cp == nil {
		return p
	}
	det, err := pipeline.RestoreDetector(r.o.Config, cp.Snapshot, r.o.Logger)
	if err != nil {
		// The telemetry that follows starts after the checkpoint: without it the detector has no
		// baselines for a while, and says less than live did.
		r.warn("checkpoint %s not restored, the detector starts empty at its sequence %d: %v", cp.Object, cp.Seq, err)
		return p
	}
	p.det, p.after = det, cp.Seq
	return p
}

// sortPending puts the inputs not yet handed over in event-time order, kinds at equal times in
// live decide's rebuild order; stable, so inputs of one kind with equal times keep stream order, as
// live. It also places an input that arrived after telemetry started.
func (r *run) sortPending() {
	slices.SortStableFunc(r.inputs[r.next:], func(a, b input) int { return cmp.Or(a.ts.Compare(b.ts), cmp.Compare(a.order, b.order)) })
}

func (r *run) telemetry(rec *Record) {
	p := r.partOf(rec)
	if rec.Seq != 0 && rec.Seq <= p.after {
		return // held by the checkpoint the part's detector started from
	}
	r.tl.Stats.Messages++
	p.read = true
	if rec.Time.After(p.stored) {
		p.stored = rec.Time
	}
	events, err := rec.pre.events, rec.pre.err // decoded on the prefetch goroutine
	if err != nil {
		var re *ingest.RejectError
		class := ingest.ClassMalformed
		if errors.As(err, &re) {
			class = re.Class
		}
		if r.tl.Stats.Rejected == nil {
			r.tl.Stats.Rejected = map[string]int64{}
		}
		r.tl.Stats.Rejected[class]++
		return
	}
	for i := range events {
		ev := &events[i]
		if r.tl.Stats.FirstEvent.IsZero() || ev.TS.Before(r.tl.Stats.FirstEvent) {
			r.tl.Stats.FirstEvent = ev.TS
		}
		if ev.TS.After(r.tl.Stats.LastEvent) {
			r.tl.Stats.LastEvent = ev.TS
		}
		p.det.Observe(ev)
		if ev.IsClockTick() {
			r.tl.Stats.ClockTicks++
		} else if r.charts != nil {
			r.charts.add(ev)
		}
	}
	r.tl.Stats.Events += int64(len(events))
}

// advance closes the buckets the watermark passed and decides their anomalies, as the live detect
// stage does after each batch. Split, the parts' anomalies are decided in the order of the time
// they count at, as they reach a live decider from the partitions as each finds them.
func (r *run) advance(ctx context.Context) error {
	if r.parts == nil {
		return nil
	}
	var found []schemas.Anomaly
	for _, p := range r.parts {
		found = append(found, p.det.Advance(p.det.Watermark())...)
	}
	if len(r.parts) > 1 {
		slices.SortStableFunc(found, func(a, b schemas.Anomaly) int { return countsAt(&a).Compare(countsAt(&b)) })
	}
	for _, a := range found {
		// Live publishes anomalies with a.MsgID() as Nats-Msg-Id, so the stream drops a repeat
		// (within its Duplicates window) and decide never sees it.
		key := a.MsgID()
		if r.anomalySeen[key] {
			continue
		}
		r.anomalySeen[key] = true
		if err := r.flush(ctx, countsAt(&a), orderAnomaly); err != nil {
			return err
		}
		if r.inRange(a.TSDetected) && r.about(a.Component) {
			r.tl.Anomalies = append(r.tl.Anomalies, a)
		}
		ds, err := r.eng.HandleAnomaly(ctx, &a)
		if err != nil {
			r.tl.Stats.Errors = append(r.tl.Stats.Errors, err.Error())
			continue
		}
		r.decisions(ds)
	}
	if wm := r.watermark(); !wm.IsZero() {
		if err := r.flush(ctx, wm, orderLast); err != nil {
			return err
		}
		ds, err := r.eng.Advance(wm)
		if err != nil {
			return fmt.Errorf("advance decide to %s: %w", wm.Format(time.RFC3339), err)
		}
		r.decisions(ds)
	}
	return ctx.Err()
}

// countsAt is when decide counts anomaly a: its detection, or, resolved, the time it was resolved,
// as live decide's rebuild orders it.
func countsAt(a *schemas.Anomaly) time.Time {
	if a.IsResolved() && a.ResolvedAt != nil {
		return *a.ResolvedAt
	}
	return a.TSDetected
}

// flush hands the engine every recorded input before (t, order): those earlier than t, and those
// at t that come before an input of that order; every input when t is zero.
func (r *run) flush(ctx context.Context, t time.Time, order int) error {
	for r.next < len(r.inputs) {
		in := &r.inputs[r.next]
		if !t.IsZero() {
			if c := in.ts.Compare(t); c > 0 || (c == 0 && in.order >= order) {
				return nil
			}
		}
		r.next++
		var (
			ds  []schemas.Decision
			err error
		)
		switch {
		case in.deploy != nil:
			ev := in.deploy
			r.tl.Deploys = append(r.tl.Deploys, *ev)
			if ds, err = r.eng.HandleDeploy(ctx, ev); err != nil {
				r.warn("deploy %s not recorded: %v", ev.ID, err)
				continue
			}
		case in.approval != nil:
			ap := in.approval
			if ds, err = r.eng.HandleApproval(ctx, ap); err != nil {
				// Live decide rejects bad ones and skips answers to decisions it does not know;
				// here the usual cause is a range or service filter that left the recommendation out.
				r.warn("approval %s of decision %s not handled: %v", ap.ID, ap.DecisionID, err)
				continue
			}
		case in.ack != nil:
			ack := in.ack
			if ds, err = r.eng.HandleAck(ctx, ack); err != nil {
				r.warn("ack of %s not handled: %v", ack.CommandID, err)
				continue
			}
		case in.failure != nil:
			f := in.failure
			if ds, err = r.eng.HandleActuationFailure(ctx, f.DecisionID, f.Reason, f.TS); err != nil {
				r.warn("actuation failure of decision %s not handled: %v", f.DecisionID, err)
				continue
			}
		}
		r.decisions(ds)
	}
	return ctx.Err()
}

func (r *run) decisions(ds []schemas.Decision) {
	for _, d := range ds {
		if r.decisionSeen[d.ID] { // Nats-Msg-Id dedupe, as live
			continue
		}
		r.decisionSeen[d.ID] = true
		if r.inRange(d.TS) && r.targets(&d) {
			r.tl.Decisions = append(r.tl.Decisions, d)
		}
	}
}

// finish builds the story, the diff and the charts.
func (r *run) finish() {
	tl := r.tl
	if tl.Anomalies == nil {
		tl.Anomalies = []schemas.Anomaly{}
	}
	if tl.Decisions == nil {
		tl.Decisions = []schemas.Decision{}
	}
	for i := range tl.Deploys {
		d := &tl.Deploys[i]
		if !r.inRange(d.TS) {
			continue
		}
		tl.Events = append(tl.Events, Entry{TS: d.TS, Kind: "deploy", Service: d.Service, ID: d.ID, Summary: deploySummary(d)})
	}
	for i := range tl.Anomalies {
		a := &tl.Anomalies[i]
		kind := "anomaly"
		ts := a.TSDetected
		if a.IsResolved() {
			kind = "resolved"
			if a.ResolvedAt != nil {
				ts = *a.ResolvedAt
			}
		}
		tl.Events = append(tl.Events, Entry{TS: ts, Kind: kind, Service: a.Service, Component: a.Component, Block: a.Block, ID: a.ID, Summary: anomalySummary(a)})
	}
	for i := range tl.Decisions {
		d := &tl.Decisions[i]
		e := Entry{TS: d.TS, Kind: "decision", Service: d.Service, ID: d.ID, Summary: decisionSummary(d)}
		if len(d.Targets) > 0 {
			e.Component, e.Block = d.Targets[0].Component, d.Targets[0].Block
		}
		tl.Events = append(tl.Events, e)
	}
	for i := range tl.Recorded.Acks {
		a := &tl.Recorded.Acks[i]
		tl.Events = append(tl.Events, Entry{TS: a.TS, Kind: "ack", Service: a.Service, ID: a.CommandID, Summary: ackSummary(a)})
	}
	byID := map[string]*schemas.Decision{}
	for _, ds := range [][]schemas.Decision{tl.Recorded.Decisions, tl.Decisions} {
		for i := range ds {
			byID[ds[i].ID] = &ds[i]
		}
	}
	approvals := tl.Recorded.Approvals[:0:0]
	for i := range tl.Recorded.Approvals {
		ap := &tl.Recorded.Approvals[i]
		e := Entry{TS: ap.TS, Kind: "approval", Service: ap.Service, ID: ap.ID, Summary: approvalSummary(ap, byID[ap.DecisionID])}
		if d := byID[ap.DecisionID]; d != nil {
			if !r.targets(d) {
				continue
			}
			if len(d.Targets) > 0 {
				e.Component, e.Block = d.Targets[0].Component, d.Targets[0].Block
			}
		} else if r.o.Component != "" {
			continue
		}
		approvals = append(approvals, *ap)
		tl.Events = append(tl.Events, e)
	}
	tl.Recorded.Approvals = approvals
	for i := range tl.Recorded.ActuationFailures {
		f := &tl.Recorded.ActuationFailures[i]
		tl.Events = append(tl.Events, Entry{TS: f.TS, Kind: "actuation_failure", Service: f.Service, Component: f.Component, Block: f.Block,
			ID: f.DecisionID, Summary: failureSummary(f)})
	}
	slices.SortStableFunc(tl.Events, func(a, b Entry) int {
		return cmp.Or(a.TS.Compare(b.TS), cmp.Compare(kindOrder(a.Kind), kindOrder(b.Kind)))
	})
	tl.Diff = Compare(tl.Decisions, tl.Recorded.Decisions, tl.Anomalies, tl.Recorded.Anomalies)
	if r.charts != nil {
		tl.Series = r.charts.build(tl, r.o.Component)
	}
}

func kindOrder(k string) int {
	switch k {
	case "deploy":
		return 0
	case "anomaly":
		return 1
	case "decision":
		return 2
	case "approval":
		return 3
	case "ack":
		return 4
	case "actuation_failure":
		return 5
	}
	return 6
}
