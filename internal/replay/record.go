package replay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Record kinds: the `kind` field of every bundle line.
const (
	KindTelemetry = "telemetry"
	KindDeploy    = "deploy"
	KindManifest  = "manifest"
	KindDecision  = "decision"
	KindAck       = "ack"
	KindAnomaly   = "anomaly"
	// KindApproval is a person's answer to a recommendation (approval.<svc> in DECISIONS).
	KindApproval = "approval"
	// KindActuationFailure is a decision actuate gave up on (rejected.actuate in REJECTED); its
	// Headers carry the reject reason, and its Time, the time it was stored, is when decide learnt
	// of the failure.
	KindActuationFailure = "actuation_failure"
	// KindCheckpoint is a detector checkpoint the replay starts from (see CheckpointRecord); the
	// telemetry that follows it is what the stream stored after the checkpoint's sequence.
	KindCheckpoint = "checkpoint"
)

// CheckpointRecord is the data of a checkpoint record.
type CheckpointRecord struct {
	// Object is the checkpoint's name in scalpel_state, Seq the telemetry stream sequence through
	// which it holds the detector's state, Watermark the detector's watermark then.
	Object    string    `json:"object"`
	Seq       uint64    `json:"seq"`
	Watermark time.Time `json:"watermark"`
	// Service, when set, is the only service the replay reads; the snapshot was cut down to its
	// series (detect.Detector.KeepService) before it was written here.
	Service string `json:"service,omitempty"`
	// Partition, when set, is the partition of a cut telemetry stream whose consumer kept the
	// checkpoint: in a replay of every partition, that partition's detector starts from it.
	Partition *int `json:"partition,omitempty"`
	// Snapshot is detect.Snapshot's bytes (base64 in the bundle).
	Snapshot []byte `json:"snapshot,omitempty"`
}

// shown is cp without its snapshot's bytes, as a timeline shows it.
func (cp *CheckpointRecord) shown() *CheckpointRecord {
	c := *cp
	c.Snapshot = nil
	return &c
}

// ErrBadRecord is wrapped when a bundle line cannot be read.
var ErrBadRecord = errors.New("bad record")

// Record is one raw event of an incident bundle: one NDJSON line. Data holds the message body as it
// was stored, so replaying a bundle runs the same decoder on the same bytes as live ingest did.
type Record struct {
	Kind string `json:"kind"`
	// Subject the message was stored under (telemetry, deploy, anomaly, decision, ack, approval,
	// actuation failure).
	Subject string `json:"subject,omitempty"`
	// Headers are the message headers replay needs (the Scalpel-* headers of an actuation
	// failure: reject reason, class, decision and command ids); nil for the other kinds.
	Headers map[string]string `json:"headers,omitempty"`
	// Seq is the stream sequence, Time the time the server stored it; both are informational.
	Seq  uint64    `json:"seq,omitempty"`
	Time time.Time `json:"time,omitzero"`
	// Data is the body when it is one JSON value.
	Data json.RawMessage `json:"data,omitempty"`
	// Raw is the body when it is not one JSON value (NDJSON batches, malformed input that live ingest
	// rejected): replay must see it too, or the counts would differ.
	Raw *string `json:"raw,omitempty"`

	// pre is a telemetry record as the prefetch decoded it, valid until the prefetch's next Next:
	// its events live in a slab that is then reused. Zero for the other kinds.
	pre predecoded
}

// predecoded is a telemetry record's decoder output, computed ahead of the run.
type predecoded struct {
	events []schemas.TelemetryEvent
	err    error
	// part is the partition its subject names, when cut says it names one (ingest's
	// Decoder.PartitionOf).
	part int
	cut  bool
}

// Body returns the message bytes.
func (r *Record) Body() []byte {
	if r.Raw != nil {
		return []byte(*r.Raw)
	}
	return r.Data
}

// AppendNDJSON appends the record as one line, newline included. Bodies that are one JSON value are
// embedded compacted (a bundle stays greppable with jq); anything else goes into raw as a string.
func (r *Record) AppendNDJSON(dst []byte) []byte {
	dst = append(dst, `{"kind":`...)
	dst = strconv.AppendQuote(dst, r.Kind)
	if r.Subject != "" {
		dst = append(dst, `,"subject":`...)
		dst = strconv.AppendQuote(dst, r.Subject)
	}
	if r.Seq != 0 {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, r.Seq, 10)
	}
	if !r.Time.IsZero() {
		dst = append(dst, `,"time":"`...)
		dst = r.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	if len(r.Headers) > 0 {
		keys := make([]string, 0, len(r.Headers))
		for k := range r.Headers {
			keys = append(keys, k)
		}
		slices.Sort(keys) // one bundle, one byte sequence
		dst = append(dst, `,"headers":{`...)
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendJSONString(dst, r.Headers[k])
		}
		dst = append(dst, '}')
	}
	body := r.Body()
	if r.Raw == nil && json.Valid(body) {
		dst = append(dst, `,"data":`...)
		var buf bytes.Buffer
		if bytes.IndexByte(body, '\n') < 0 && bytes.IndexByte(body, '\r') < 0 {
			dst = append(dst, bytes.TrimSpace(body)...)
		} else if err := json.Compact(&buf, body); err == nil {
			dst = append(dst, buf.Bytes()...)
		}
	} else {
		b, _ := json.Marshal(string(body)) // escapes invalid UTF-8 as U+FFFD, as any JSON writer must
		dst = append(dst, `,"raw":`...)
		dst = append(dst, b...)
	}
	return append(dst, '}', '\n')
}

// appendJSONString appends s as a JSON string (invalid UTF-8 becomes U+FFFD).
func appendJSONString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s)
	return append(dst, b...)
}

// ParseRecord reads one bundle line.
func ParseRecord(line []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	switch r.Kind {
	case KindTelemetry, KindDeploy, KindManifest, KindDecision, KindAck, KindAnomaly, KindApproval, KindActuationFailure, KindCheckpoint:
	case "":
		return Record{}, fmt.Errorf("%w: no kind", ErrBadRecord)
	default:
		return Record{}, fmt.Errorf("%w: unknown kind %q (want telemetry, deploy, manifest, decision, ack, anomaly, approval, actuation_failure or checkpoint)", ErrBadRecord, r.Kind)
	}
	if len(r.Data) == 0 && r.Raw == nil {
		return Record{}, fmt.Errorf("%w: %s record without data", ErrBadRecord, r.Kind)
	}
	return r, nil
}
