// Package audit reads scalpel's audit trail from the streams: the decisions with their reasons,
// the incidents' stories, the anomalies detect published, and the version history of a target.
// The CLI (scalpel decisions, incidents, versions, approve) and serve's JSON API read it the same
// way. Reading
// is passive: ordered consumers, nothing acknowledged or changed.
package audit

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/schemas"
)

// ErrNotFound is wrapped when what was asked for is not in the streams (an incident id with no
// decisions).
var ErrNotFound = errors.New("not found")

// Reader reads the streams of one scalpel installation.
type Reader struct {
	JS       jetstream.JetStream
	Subjects schemas.Subjects
	// Timeout bounds each request to the server, and how long a fetch waits for more before the
	// reader takes itself to be caught up (default 5s).
	Timeout time.Duration
}

func (r Reader) timeout() time.Duration {
	if r.Timeout <= 0 {
		return 5 * time.Second
	}
	return r.Timeout
}

// Each hands every message of stream on filter to f, from start (the zero time: the stream's
// start) until caught up with what the stream held when it began.
func (r Reader) Each(ctx context.Context, stream, filter string, start time.Time, f func(jetstream.Msg)) error {
	ictx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	s, err := r.JS.Stream(ictx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s does not exist: start `scalpel serve` once (it creates the topology), or point --server at scalpel's NATS", stream)
	}
	if err != nil {
		return fmt.Errorf("open stream %s: %w", stream, err)
	}
	occ := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}}
	if !start.IsZero() {
		occ.DeliverPolicy, occ.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cons, err := s.OrderedConsumer(ictx, occ)
	if err != nil {
		return fmt.Errorf("read %s: %w", filter, err)
	}
	info, err := cons.Info(ictx)
	if err != nil {
		return fmt.Errorf("read %s: %w", filter, err)
	}
	for pending := info.NumPending; pending > 0; {
		// No more than are pending: a fetch waits for its whole batch until its expiry.
		batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(r.timeout()))
		if err != nil {
			return fmt.Errorf("read %s: %w", filter, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
			f(m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("read %s: %w", filter, err)
		}
		if got == 0 {
			break // the server had nothing more within the timeout: caught up
		}
	}
	return nil
}

// Decisions reads the decisions of service (every service when empty) stored since start, and
// keeps the last n (all when n is 0), of incident only when it is set. Messages that are not
// decisions are skipped, not fatal: the audit trail must stay readable even if something else
// wrote into it.
func (r Reader) Decisions(ctx context.Context, service string, start time.Time, n int, incident string) ([]schemas.Decision, error) {
	filter := r.Subjects.DecisionAll()
	if service != "" {
		filter = r.Subjects.Decision(service)
	}
	var out []schemas.Decision
	err := r.Each(ctx, schemas.StreamDecisions, filter, start, func(m jetstream.Msg) {
		d, err := schemas.DecodeDecision(m.Data())
		if err != nil || (incident != "" && d.IncidentID != incident) {
			return
		}
		out = append(out, *d)
		if n > 0 && len(out) > n {
			out = out[1:]
		}
	})
	return out, err
}

// Anomalies reads the anomalies (firing and resolved) of service (every service when empty)
// stored since start, and keeps the last n (all when n is 0).
func (r Reader) Anomalies(ctx context.Context, service string, start time.Time, n int) ([]schemas.Anomaly, error) {
	svc := "*"
	if service != "" {
		svc = service
	}
	var out []schemas.Anomaly
	err := r.Each(ctx, schemas.StreamAnomalies, r.Subjects.Anomaly(svc, "*"), start, func(m jetstream.Msg) {
		a, err := schemas.DecodeAnomaly(m.Data())
		if err != nil {
			return
		}
		out = append(out, *a)
		if n > 0 && len(out) > n {
			out = out[1:]
		}
	})
	return out, err
}

// Story reads everything the streams hold about incident, of service (every service when empty):
// its decisions, the commands its steps sent with the deployers' acks, and the approvals people
// gave. An incident without decisions is ErrNotFound.
func (r Reader) Story(ctx context.Context, service, incident string) (*decide.Story, error) {
	ds, err := r.Decisions(ctx, service, time.Time{}, 0, incident)
	if err != nil {
		return nil, err
	}
	if len(ds) == 0 {
		return nil, fmt.Errorf("%w: no decisions of incident %s", ErrNotFound, incident)
	}
	t, err := r.aftermath(ctx, incident)
	if err != nil {
		return nil, err
	}
	s := decide.NewStory(incident, ds, t.cmds, t.acks, t.approvals)
	return &s, nil
}

// Incidents tells the story (Story) of each incident of service (every service when empty) with a
// decision stored since start, in the order they opened, and keeps the last n (all when n is 0).
// An incident that opened before start is told from its first decision since.
func (r Reader) Incidents(ctx context.Context, service string, start time.Time, n int) ([]decide.Story, error) {
	ds, err := r.Decisions(ctx, service, start, 0, "")
	if err != nil {
		return nil, err
	}
	var ids []string
	seen := map[string]bool{}
	for _, d := range ds {
		if d.IncidentID != "" && !seen[d.IncidentID] {
			seen[d.IncidentID] = true
			ids = append(ids, d.IncidentID)
		}
	}
	if n > 0 && len(ids) > n {
		ids = ids[len(ids)-n:]
	}
	if len(ids) == 0 {
		return nil, nil
	}
	t, err := r.aftermath(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make([]decide.Story, 0, len(ids))
	for _, id := range ids {
		out = append(out, decide.NewStory(id, ds, t.cmds, t.acks, t.approvals))
	}
	return out, nil
}

// trail is what followed decisions: the commands their steps sent, the deployers' acks, and the
// approvals people gave.
type trail struct {
	cmds      []schemas.RollbackCommand
	acks      []schemas.RollbackAck
	approvals []schemas.Approval
}

// aftermath reads the commands (of incident only, when it is set), every ack and every approval.
func (r Reader) aftermath(ctx context.Context, incident string) (trail, error) {
	var t trail
	ackPrefix := strings.TrimSuffix(r.Subjects.RollbackAck("x"), "x")
	if err := r.Each(ctx, schemas.StreamRollbacks, r.Subjects.RollbackAll(), time.Time{}, func(m jetstream.Msg) {
		if strings.HasPrefix(m.Subject(), ackPrefix) {
			if a, err := schemas.DecodeAck(m.Data()); err == nil {
				t.acks = append(t.acks, *a)
			}
			return
		}
		if c, err := schemas.DecodeCommandEvent(m.Headers(), m.Data()); err == nil && (incident == "" || c.IncidentID == incident) {
			t.cmds = append(t.cmds, *c)
		}
	}); err != nil {
		return t, err
	}
	err := r.Each(ctx, schemas.StreamDecisions, r.Subjects.ApprovalAll(), time.Time{}, func(m jetstream.Msg) {
		if ap, err := schemas.DecodeApproval(m.Data()); err == nil {
			t.approvals = append(t.approvals, *ap)
		}
	})
	return t, err
}

// Versions is target's version history: from the DEPLOYS stream (a version became active with a
// deploy) and the DECISIONS stream (a rollback, escalation, disable, restore or enable made another
// one active), with the sha256 of each version's source when scalpel_blocks holds it.
func (r Reader) Versions(ctx context.Context, target decide.Target) ([]decide.VersionSpan, error) {
	var deploys []schemas.DeployEvent
	if err := r.Each(ctx, schemas.StreamDeploys, r.Subjects.Deploy(target.Service), time.Time{}, func(m jetstream.Msg) {
		if ev, err := schemas.DecodeDeployEvent(m.Data()); err == nil {
			deploys = append(deploys, *ev)
		}
	}); err != nil {
		return nil, err
	}
	decisions, err := r.Decisions(ctx, "", time.Time{}, 0, "")
	if err != nil {
		return nil, err
	}
	spans := decide.VersionHistory(deploys, decisions, target)
	r.addDigests(ctx, target, spans)
	return spans, nil
}

// addDigests fills each span's sha256 from the scalpel_blocks object of its version, when one is
// stored. A missing store or object is not an error: most versions have no source uploaded.
func (r Reader) addDigests(ctx context.Context, target decide.Target, spans []decide.VersionSpan) {
	if target.Component == "" {
		return
	}
	ictx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	store, err := r.JS.ObjectStore(ictx, schemas.ObjectBlocks)
	if err != nil {
		return
	}
	for i := range spans {
		info, err := store.GetInfo(ictx, target.ObjectName(spans[i].Version))
		if err != nil {
			continue
		}
		spans[i].SHA256 = DigestHex(info.Digest)
	}
}

// DigestHex turns the object store's "SHA-256=<base64url>" into the "sha256:<hex>" deploys carry.
func DigestHex(d string) string {
	v, ok := strings.CutPrefix(d, "SHA-256=")
	if !ok {
		return d
	}
	b, err := base64.URLEncoding.DecodeString(v)
	if err != nil {
		return d
	}
	return "sha256:" + hex.EncodeToString(b)
}
