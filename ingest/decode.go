package ingest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/scalpel-dev/scalpel/schemas"
)

// DefaultMaxMessageBytes is the largest telemetry message the decoder accepts unless configured
// otherwise: 1 MiB, NATS's default max payload.
const DefaultMaxMessageBytes = 1 << 20

// ErrRejected matches every *RejectError with errors.Is: the input was bad, retrying cannot help.
var ErrRejected = errors.New("rejected")

// Reject classes: the low-cardinality label of scalpel_rejected_total{reason_class}. The reason text
// says exactly what was wrong; the class says which kind of wrong, for dashboards and alerts.
const (
	// ClassEmpty: the message held no JSON value at all.
	ClassEmpty = "empty"
	// ClassOversize: the message exceeded MaxMessageBytes.
	ClassOversize = "oversize"
	// ClassMalformed: the bytes are not valid JSON.
	ClassMalformed = "malformed_json"
	// ClassWrongType: valid JSON, but a field (or the message) has the wrong JSON type.
	ClassWrongType = "wrong_type"
	// ClassInvalid: well-typed, but a value breaks the schema (negative latency, unknown error
	// category, a name that is not token-safe, a missing required field).
	ClassInvalid = "invalid_value"
	// ClassSubject: the subject is not telemetry.<svc>.<comp>, or its tokens disagree with the body.
	ClassSubject = "subject_mismatch"
	// ClassUnknownField: a field the schema does not define (often a typo: "latency_msec").
	ClassUnknownField = "unknown_field"
	// ClassFuture: an event's ts is further ahead of when the server stored the message than
	// MaxClockAhead allows: the producer's clock runs ahead.
	ClassFuture = "future_timestamp"
)

// DefaultMaxClockAhead is how far an event's ts may be ahead of the time the server stored its
// message: detect's default allowed_lateness. An event further ahead would move the detector's
// event-time watermark past every other producer's events, which would then all arrive late.
const DefaultMaxClockAhead = 2 * time.Second

// RejectError says why a message was rejected. Reason is short and meant for people: it travels in
// the Scalpel-Reject-Reason header next to the original bytes.
type RejectError struct {
	// Class is one of the Class* constants.
	Class string
	// Reason is the human-readable cause, e.g. `event 2: latency_ms: must be >= 0, got -3`.
	Reason string
	// Err is the underlying error when there is one (e.g. a *schemas.ValidationError).
	Err error
}

func (e *RejectError) Error() string { return e.Reason }

// Unwrap returns the underlying error, so errors.As finds a *schemas.ValidationError.
func (e *RejectError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrRejected) true for every RejectError.
func (e *RejectError) Is(target error) bool { return target == ErrRejected }

func rejectf(class, format string, a ...any) *RejectError {
	return &RejectError{Class: class, Reason: fmt.Sprintf(format, a...)}
}

// DecoderConfig configures a Decoder.
type DecoderConfig struct {
	// MaxMessageBytes is the largest message accepted; larger ones are rejected as oversize before
	// any parsing (default 1 MiB). It bounds the work one message can cause.
	MaxMessageBytes int `json:"max_message_bytes" yaml:"max_message_bytes"`
	// AllowUnknownFields skips fields the schema does not define instead of rejecting the message.
	// The schema (telemetry_event.json) forbids them, because a typo such as "latency_msec" would
	// otherwise silently drop the latency; allow them only while rolling out producers that send a
	// field this version does not know yet.
	AllowUnknownFields bool `json:"allow_unknown_fields" yaml:"allow_unknown_fields"`
	// Subjects carries the subject prefix telemetry is published under, so the decoder can check
	// that the subject's <svc>.<comp> tokens agree with the body.
	Subjects schemas.Subjects `json:"-" yaml:"-"`
	// MaxClockAhead bounds how far an event's ts may be ahead of the time the server stored its
	// message (DecodeStored); a message with an event further ahead is rejected. Zero means
	// DefaultMaxClockAhead; a negative value turns the check off.
	MaxClockAhead time.Duration `json:"-" yaml:"-"`
	// Partitions is how many partitions the telemetry stream is cut into (Config.Partitions). A
	// subject with a fourth token, telemetry.<svc>.<comp>.<p>, is telemetry stored in partition
	// p, and p must be Partition(svc, Partitions): a producer that publishes to a partition's
	// subject itself cannot put a service's telemetry where its detector does not read it. With
	// 0, p is only checked to be a number (a replay that was not told how the stream was cut).
	Partitions int `json:"-" yaml:"-"`
}

// Decoder turns telemetry messages into validated TelemetryEvents. It is the hot path of ingest and
// avoids encoding/json: a hand-written scanner reads the known fields, rejects (or, when allowed,
// skips after syntax-checking) unknown ones, and parses `attrs` generically only when present. Its answers agree with
// encoding/json followed by TelemetryEvent.Validate, with two deliberate differences listed on
// Decode.
//
// A Decoder reuses internal buffers and interns repeated names, so it is not safe for concurrent
// use: give each goroutine its own.
type Decoder struct {
	max    int
	ahead  time.Duration // MaxClockAhead; negative: no check
	strict bool          // reject unknown fields
	prefix string        // "<prefix>.telemetry." or "telemetry."
	parts  int           // Partitions
	names  *intern
	floats []float64 // slab that *float64 fields point into, to save an allocation per field
	arena  []byte    // bytes of the strings not interned (ids, error sites); see keep
}

// NewDecoder returns a Decoder; a zero MaxMessageBytes means DefaultMaxMessageBytes.
func NewDecoder(cfg DecoderConfig) *Decoder {
	max := cfg.MaxMessageBytes
	if max <= 0 {
		max = DefaultMaxMessageBytes
	}
	ahead := cfg.MaxClockAhead
	if ahead == 0 {
		ahead = DefaultMaxClockAhead
	}
	return &Decoder{
		max:    max,
		ahead:  ahead,
		strict: !cfg.AllowUnknownFields,
		prefix: strings.TrimSuffix(cfg.Subjects.TelemetryAll(), ">"),
		parts:  cfg.Partitions,
		names:  new(intern),
	}
}

// Decode appends the events of one message to dst and returns the extended slice. The message body
// is a single JSON object, a JSON array of objects, or NDJSON (objects separated by whitespace,
// usually newlines).
//
// A message is all or nothing: if any event in it is bad, Decode returns dst unchanged and a
// *RejectError, and the whole message is rejected. Splitting a batch would mean publishing part of
// it to rejected.ingest and part downstream, and a producer that sends one bad event in a batch has
// a bug worth seeing whole.
//
// When subject is not empty it must be <prefix>.telemetry.<svc>.<comp>, or with the partition a
// cut stream stores it under, <prefix>.telemetry.<svc>.<comp>.<p> (DecoderConfig.Partitions), and
// every event's service and component must equal those tokens.
//
// It accepts exactly what encoding/json (with DisallowUnknownFields unless AllowUnknownFields)
// followed by Validate accepts, and decodes to the same events (FuzzDecodeTelemetry checks this):
// keys match case-insensitively, null leaves a field unset, and `ts` must be an RFC 3339
// string. A number for `ts` (unix millis) is refused, as encoding/json refuses it: the schema says
// string, and a second accepted spelling would be one more way for readers of the stream to disagree.
//
// The events' strings and pointers do not alias data, so the caller may reuse data afterwards.
func (d *Decoder) Decode(subject string, data []byte, dst []schemas.TelemetryEvent) ([]schemas.TelemetryEvent, error) {
	if len(data) > d.max {
		return dst, rejectf(ClassOversize, "message of %d bytes exceeds max %d", len(data), d.max)
	}
	var svc, comp string
	if subject != "" {
		var ok bool
		if svc, comp, ok = d.splitSubject(subject); !ok {
			return dst, rejectf(ClassSubject, "subject %s is not %s<service>.<component>", subject, d.prefix)
		}
		if err := d.checkPartition(subject, svc); err != nil {
			return dst, err
		}
	}
	start := len(dst)
	s := scanner{b: data}
	s.skipWS()
	if s.i >= len(s.b) {
		return dst, rejectf(ClassEmpty, "empty message: want a JSON object, an array of objects or NDJSON")
	}
	batch := false
	var err *RejectError
	switch s.b[s.i] {
	case '[':
		batch = true
		s.i++
		s.skipWS()
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			break
		}
		for n := 0; ; n++ {
			s.skipWS()
			if s.i >= len(s.b) {
				return dst[:start], s.eof()
			}
			if s.b[s.i] != '{' {
				if err := s.skipValue(0); err != nil {
					return dst[:start], err
				}
				return dst[:start], rejectf(ClassWrongType, "event %d: want a JSON object, got %s", n, kindOf(s.b[s.lastStart]))
			}
			if dst, err = d.event(&s, dst, n, true, svc, comp, subject); err != nil {
				return dst[:start], err
			}
			s.skipWS()
			if s.i >= len(s.b) {
				return dst[:start], s.eof()
			}
			if c := s.b[s.i]; c == ']' {
				s.i++
				break
			} else if c != ',' {
				return dst[:start], s.syntax(c, "after array element")
			}
			s.i++
		}
	case '{':
		for n := 0; ; n++ {
			if dst, err = d.event(&s, dst, n, batch, svc, comp, subject); err != nil {
				return dst[:start], err
			}
			s.skipWS()
			if s.i >= len(s.b) {
				break
			}
			if s.b[s.i] != '{' {
				return dst[:start], s.syntax(s.b[s.i], "after top-level value")
			}
			batch = true // a second object: this is NDJSON, so reasons name the failing event from now on
		}
	default:
		if err := s.skipValue(0); err != nil {
			return dst[:start], err
		}
		return dst[:start], rejectf(ClassWrongType, "want a JSON object, an array of objects or NDJSON, got %s", kindOf(data[s.lastStart]))
	}
	s.skipWS()
	if s.i < len(s.b) {
		return dst[:start], s.syntax(s.b[s.i], "after top-level value")
	}
	return dst, nil
}

// DecodeStored decodes as Decode does a message the server stored at stored, and also rejects it
// when one of its events' ts is more than MaxClockAhead ahead of stored: the producer's clock is
// ahead, and the event would carry the detector's watermark past every other producer's events.
// The stored time travels with the message, so a replay decides as live ingest did. A zero stored
// time (unknown) skips the check.
func (d *Decoder) DecodeStored(subject string, data []byte, stored time.Time, dst []schemas.TelemetryEvent) ([]schemas.TelemetryEvent, error) {
	start := len(dst)
	dst, err := d.Decode(subject, data, dst)
	if err != nil || d.ahead < 0 || stored.IsZero() {
		return dst, err
	}
	limit := stored.Add(d.ahead)
	for i := start; i < len(dst); i++ {
		if ts := dst[i].TS; ts.After(limit) {
			where := ""
			if len(dst)-start > 1 {
				where = fmt.Sprintf("event %d: ", i-start)
			}
			return dst[:start], rejectf(ClassFuture, "%sts %s is %s ahead of when the server stored the message (%s; ingest.max_clock_ahead %s): the producer's clock runs ahead",
				where, ts.UTC().Format(time.RFC3339Nano), ts.Sub(stored).Round(time.Millisecond), stored.UTC().Format(time.RFC3339Nano), d.ahead)
		}
	}
	return dst, nil
}

// splitSubject returns the <svc> and <comp> tokens of a telemetry subject: <prefix><svc>.<comp>,
// or <prefix><svc>.<comp>.<p> as a cut stream stores it (checkPartition).
func (d *Decoder) splitSubject(subject string) (svc, comp string, ok bool) {
	rest, found := strings.CutPrefix(subject, d.prefix)
	if !found {
		return "", "", false
	}
	svc, comp, found = strings.Cut(rest, ".")
	if !found || svc == "" || comp == "" {
		return "", "", false
	}
	if comp, p, cut := strings.Cut(comp, "."); cut {
		if comp == "" || !isPartitionToken(p) {
			return "", "", false
		}
		return svc, comp, true
	}
	return svc, comp, true
}

// Partitions is how many partitions the decoder was told the stream is cut into (0: not cut, or
// not told).
func (d *Decoder) Partitions() int { return d.parts }

// PartitionOf returns the partition token of a telemetry subject as a cut stream stores it,
// <prefix><svc>.<comp>.<p>, and false for a subject of three tokens (stored before the stream was
// cut, or in a stream that is not) or one that is not telemetry. Clock ticks of a partition's
// consumer carry their partition the same way (Config.TickSubject).
func (d *Decoder) PartitionOf(subject string) (int, bool) {
	rest, found := strings.CutPrefix(subject, d.prefix)
	if !found {
		return 0, false
	}
	_, rest, _ = strings.Cut(rest, ".")
	_, p, cut := strings.Cut(rest, ".")
	if !cut || !isPartitionToken(p) {
		return 0, false
	}
	k, err := strconv.Atoi(p)
	return k, err == nil
}

// isPartitionToken reports whether t is a partition number as the server writes one.
func isPartitionToken(t string) bool {
	if t == "" || len(t) > 4 || (len(t) > 1 && t[0] == '0') {
		return false
	}
	for i := range len(t) {
		if t[i] < '0' || t[i] > '9' {
			return false
		}
	}
	return true
}

// checkPartition rejects a subject whose partition token (splitSubject) is not svc's, when the
// decoder knows how the stream is cut. Clock ticks are the partition's own (Config.TickSubject).
func (d *Decoder) checkPartition(subject, svc string) *RejectError {
	_, p, cut := strings.Cut(subject[len(d.prefix)+len(svc)+1:], ".")
	if !cut || d.parts == 0 || svc == schemas.ClockService {
		return nil
	}
	if want := Partition(svc, d.parts); p != strconv.Itoa(want) {
		return rejectf(ClassSubject, "subject %s is partition %s, but service %s is stored in partition %d of %d", subject, p, svc, want, d.parts)
	}
	return nil
}

// event parses one object into a new element of dst, checks it against the subject and validates it.
func (d *Decoder) event(s *scanner, dst []schemas.TelemetryEvent, n int, batch bool, svc, comp, subject string) ([]schemas.TelemetryEvent, *RejectError) {
	dst = append(dst, schemas.TelemetryEvent{})
	e := &dst[len(dst)-1]
	if err := d.object(s, e); err != nil {
		if batch && err.Class != ClassMalformed {
			err.Reason = "event " + strconv.Itoa(n) + ": " + err.Reason
		}
		return dst, err
	}
	var err *RejectError
	if subject != "" && (e.Service != svc || e.Component != comp) {
		if e.Service != svc {
			err = rejectf(ClassSubject, "subject %s does not match body service %q", subject, e.Service)
		} else {
			err = rejectf(ClassSubject, "subject %s does not match body component %q", subject, e.Component)
		}
	} else if verr := e.Validate(); verr != nil {
		err = &RejectError{Class: ClassInvalid, Reason: verr.Error(), Err: verr}
	}
	if err != nil && batch {
		err.Reason = "event " + strconv.Itoa(n) + ": " + err.Reason
	}
	return dst, err
}

// field names of TelemetryEvent, for the case-insensitive fallback encoding/json applies to keys.
var eventFields = []string{"id", "ts", "service", "component", "block", "version", "cohort",
	"latency_ms", "latency", "error", "error_site", "count", "errors", "cpu", "process_rps", "mem_mb", "attrs", "instance"}

// object parses one JSON object (s at '{') into e.
func (d *Decoder) object(s *scanner, e *schemas.TelemetryEvent) *RejectError {
	s.i++ // '{'
	s.skipWS()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		key, err := s.key()
		if err != nil {
			return err
		}
		if err := d.field(s, e, key); err != nil {
			return err
		}
		s.skipWS()
		if s.i >= len(s.b) {
			return s.eof()
		}
		switch c := s.b[s.i]; c {
		case ',':
			s.i++
			s.skipWS()
			continue
		case '}':
			s.i++
			return nil
		default:
			return s.syntax(c, "after object key:value pair")
		}
	}
}

// field parses the value of key into e (s just after the ':').
func (d *Decoder) field(s *scanner, e *schemas.TelemetryEvent, key []byte) *RejectError {
	s.skipWS()
	if s.i >= len(s.b) {
		return s.eof()
	}
	var err *RejectError
	switch string(key) {
	case "id":
		err = d.str(s, "id", &e.ID, false)
	case "ts":
		err = d.ts(s, e)
	case "service":
		err = d.str(s, "service", &e.Service, true)
	case "component":
		err = d.str(s, "component", &e.Component, true)
	case "block":
		err = d.str(s, "block", &e.Block, true)
	case "version":
		err = d.str(s, "version", &e.Version, true)
	case "cohort":
		err = d.str(s, "cohort", &e.Cohort, true)
	case "instance":
		err = d.str(s, "instance", &e.Instance, true)
	case "latency_ms":
		err = d.floatPtr(s, "latency_ms", &e.LatencyMS)
	case "latency":
		err = d.latency(s, e)
	case "error":
		err = d.str(s, "error", &e.Error, true)
	case "error_site":
		err = d.str(s, "error_site", &e.ErrorSite, false)
	case "count":
		err = d.int(s, "count", &e.Count)
	case "errors":
		err = d.errorsMap(s, e)
	case "cpu":
		err = d.floatPtr(s, "cpu", &e.CPU)
	case "process_rps":
		err = d.floatPtr(s, "process_rps", &e.ProcessRPS)
	case "mem_mb":
		err = d.floatPtr(s, "mem_mb", &e.MemMB)
	case "attrs":
		err = d.attrs(s, e)
	default:
		// encoding/json matches keys case-insensitively; do the same, off the fast path.
		if f := fold(key, eventFields); !bytes.Equal(f, key) {
			return d.field(s, e, f)
		}
		if d.strict {
			if err := s.skipValue(0); err != nil {
				return err // a syntax error further in is the more useful reason
			}
			return rejectf(ClassUnknownField, "unknown field %q", key)
		}
		return s.skipValue(0)
	}
	return err
}

// str reads a string or null (null leaves *dst unchanged, as encoding/json does). Names that repeat
// from event to event are interned, which saves an allocation per field and per event.
func (d *Decoder) str(s *scanner, name string, dst *string, intern bool) *RejectError {
	if s.b[s.i] != '"' {
		return s.nullOr(name, "string")
	}
	raw, simple, err := s.str()
	if err != nil {
		return err
	}
	switch {
	case !simple:
		v, err := unquote(raw)
		if err != nil {
			return s.malformedAt(s.lastStart, err)
		}
		*dst = v
	case intern:
		*dst = d.names.get(raw[1 : len(raw)-1])
	default:
		*dst = d.keep(raw[1 : len(raw)-1])
	}
	return nil
}

// arenaSize is the size of the blocks keep copies strings into: about seventy event ids.
const arenaSize = 4096

// keep returns b as a string that does not alias the message: copied into the decoder's arena,
// so that the id every event carries costs one allocation per few kilobytes instead of one per
// event (the largest remaining allocation of decoding). Bytes once written to an arena are never
// written again — a full arena is left to the strings that point into it and a new one begun —
// which is what makes handing them out as strings sound.
func (d *Decoder) keep(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > arenaSize/8 {
		return string(b)
	}
	if cap(d.arena)-len(d.arena) < len(b) {
		d.arena = make([]byte, 0, arenaSize)
	}
	start := len(d.arena)
	d.arena = append(d.arena, b...)
	return unsafe.String(&d.arena[start], len(b))
}

func (d *Decoder) ts(s *scanner, e *schemas.TelemetryEvent) *RejectError {
	if s.b[s.i] != '"' {
		return s.nullOr("ts", "RFC 3339 time string")
	}
	raw, simple, err := s.str()
	if err != nil {
		return err
	}
	if !simple {
		// time.Time.UnmarshalJSON does not unescape either; an escape cannot be part of a valid time.
		return rejectf(ClassInvalid, "ts: %s is not an RFC 3339 time", raw)
	}
	if t, ok := fastTime(raw[1 : len(raw)-1]); ok {
		e.TS = t
		return nil
	}
	if perr := e.TS.UnmarshalJSON(raw); perr != nil {
		return &RejectError{Class: ClassInvalid, Reason: fmt.Sprintf("ts: %s is not an RFC 3339 time", raw), Err: perr}
	}
	return nil
}

// fastTime parses the one shape producers almost always send, "2006-01-02T15:04:05[.frac]Z", to
// the same UTC time.Time time.Time.UnmarshalJSON returns, without its generic machinery. Anything
// else (offsets, odd spellings, invalid dates) reports !ok and takes the standard path.
func fastTime(b []byte) (time.Time, bool) {
	if len(b) < 20 || b[len(b)-1] != 'Z' || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	num := func(b []byte) int {
		n := 0
		for _, c := range b {
			if c < '0' || c > '9' {
				return -1
			}
			n = n*10 + int(c-'0')
		}
		return n
	}
	year, month, day := num(b[0:4]), num(b[5:7]), num(b[8:10])
	hour, min, sec := num(b[11:13]), num(b[14:16]), num(b[17:19])
	if year < 0 || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour < 0 || hour > 23 || min < 0 || min > 59 || sec < 0 || sec > 59 {
		return time.Time{}, false
	}
	nsec := 0
	if frac := b[19 : len(b)-1]; len(frac) > 0 {
		if len(frac) < 2 || frac[0] != '.' || len(frac) > 10 {
			return time.Time{}, false
		}
		n := num(frac[1:])
		if n < 0 {
			return time.Time{}, false
		}
		nsec = n * int(pow10[10-len(frac)])
	}
	return time.Date(year, time.Month(month), day, hour, min, sec, nsec, time.UTC), true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

func (d *Decoder) floatPtr(s *scanner, name string, dst **float64) *RejectError {
	if s.b[s.i] == 'n' {
		if err := s.null(name, "number"); err != nil {
			return err
		}
		*dst = nil
		return nil
	}
	v, err := s.float(name)
	if err != nil {
		return err
	}
	if len(d.floats) == cap(d.floats) {
		// A fresh slab; the old one stays alive as long as events point into it.
		d.floats = make([]float64, 0, 64)
	}
	d.floats = append(d.floats, v)
	*dst = &d.floats[len(d.floats)-1]
	return nil
}

func (d *Decoder) int(s *scanner, name string, dst *int64) *RejectError {
	if s.b[s.i] == 'n' {
		return s.null(name, "integer")
	}
	v, err := s.int(name)
	if err != nil {
		return err
	}
	*dst = v
	return nil
}

var latencyFields = []string{"p50", "p90", "p99", "max", "sum"}

func (d *Decoder) latency(s *scanner, e *schemas.TelemetryEvent) *RejectError {
	if null, err := s.objectOrNull("latency"); err != nil {
		return err
	} else if null {
		e.Latency = nil
		return nil
	}
	if e.Latency == nil {
		e.Latency = new(schemas.LatencySummary)
	}
	l := e.Latency
	return s.object(func(key []byte) *RejectError {
		var dst *float64
		switch string(fold(key, latencyFields)) {
		case "p50":
			dst = &l.P50
		case "p90":
			dst = &l.P90
		case "p99":
			dst = &l.P99
		case "max":
			dst = &l.Max
		case "sum":
			dst = &l.Sum
		default:
			if d.strict {
				if err := s.skipValue(1); err != nil {
					return err
				}
				return rejectf(ClassUnknownField, "unknown field \"latency.%s\"", key)
			}
			return s.skipValue(1)
		}
		if s.b[s.i] == 'n' {
			return s.null("latency."+string(key), "number")
		}
		v, err := s.float("latency." + string(key))
		if err != nil {
			return err
		}
		*dst = v
		return nil
	})
}

// objectOrNull checks that the value of the field name is an object or null; for null it reads
// it and reports null (the caller clears the field, as encoding/json does), for an object it
// leaves s at the '{'.
func (s *scanner) objectOrNull(name string) (null bool, err *RejectError) {
	switch s.b[s.i] {
	case '{':
		return false, nil
	case 'n':
		return true, s.null(name, "object")
	}
	return false, s.typeErr(name, "object")
}

// fold returns the field name key matches case-insensitively (encoding/json's rule for keys), or key.
func fold(key []byte, fields []string) []byte {
	for _, f := range fields {
		if string(key) != f && bytes.EqualFold(key, []byte(f)) {
			return []byte(f)
		}
	}
	return key
}

func (d *Decoder) errorsMap(s *scanner, e *schemas.TelemetryEvent) *RejectError {
	if null, err := s.objectOrNull("errors"); err != nil {
		return err
	} else if null {
		e.Errors = nil
		return nil
	}
	if e.Errors == nil {
		e.Errors = make(map[string]int64, 4)
	}
	return s.object(func(key []byte) *RejectError {
		k := d.names.get(key)
		if s.b[s.i] == 'n' {
			if err := s.null("errors."+k, "integer"); err != nil {
				return err
			}
			e.Errors[k] = 0
			return nil
		}
		v, err := s.int("errors." + k)
		if err != nil {
			return err
		}
		e.Errors[k] = v
		return nil
	})
}

// attrs is free-form and rare; it is syntax-checked by the scanner and then handed to encoding/json.
func (d *Decoder) attrs(s *scanner, e *schemas.TelemetryEvent) *RejectError {
	c := s.b[s.i]
	if c != '{' && c != 'n' {
		return s.typeErr("attrs", "object")
	}
	start := s.i
	if err := s.skipValue(1); err != nil {
		return err
	}
	if c == 'n' {
		e.Attrs = nil
		return nil
	}
	if err := json.Unmarshal(s.b[start:s.i], &e.Attrs); err != nil {
		return &RejectError{Class: ClassWrongType, Reason: "attrs: " + err.Error(), Err: err}
	}
	return nil
}

// unquote decodes a JSON string literal with escapes or non-ASCII bytes exactly as encoding/json does
// (invalid UTF-8 becomes U+FFFD). It is off the fast path.
func unquote(raw []byte) (string, error) {
	var v string
	err := json.Unmarshal(raw, &v)
	return v, err
}

// kindOf names the JSON type that starts with c, for type errors.
func kindOf(c byte) string {
	switch c {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// intern returns one shared string per distinct name, so the handful of services, components,
// versions and cohorts in a stream cost one allocation each instead of one per event. It is a
// direct-mapped cache: a slot holds the last name that hashed to it, and a collision simply
// replaces it (an allocation, never a wrong answer), so memory stays bounded whatever the input.
type intern struct {
	slots [internSlots]string
}

const (
	internBits  = 12
	internSlots = 1 << internBits
)

func (t *intern) get(b []byte) string {
	if len(b) > 128 {
		return string(b) // long strings are unlikely to repeat; do not let them evict names
	}
	// Hash the first and last eight bytes and the length: constant time, and names that share a
	// prefix (checkout-1, checkout-2) still differ at the end.
	var a, z uint64
	if len(b) >= 8 {
		a, z = binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[len(b)-8:])
	} else {
		for _, c := range b {
			a = a<<8 | uint64(c)
		}
	}
	h := (a*0x9E3779B97F4A7C15 ^ z*0xC2B2AE3D27D4EB4F ^ uint64(len(b))) * 0x165667B19E3779F9
	slot := &t.slots[h>>(64-internBits)]
	if *slot == string(b) { // no allocation: the compiler compares without converting
		return *slot
	}
	v := string(b)
	*slot = v
	return v
}

// scanner is a minimal JSON scanner over one message. Positions are byte offsets into b, reported
// in malformed-JSON reasons.
type scanner struct {
	b         []byte
	i         int
	lastStart int // start of the last value skipValue or str read
}

func (s *scanner) skipWS() {
	if s.i < len(s.b) && s.b[s.i] > ' ' {
		return // compact JSON: nothing to skip, and this much inlines
	}
	s.skipWSSlow()
}

func (s *scanner) skipWSSlow() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eof() *RejectError {
	return rejectf(ClassMalformed, "malformed JSON at offset %d: unexpected end of input", s.i)
}

func (s *scanner) syntax(c byte, context string) *RejectError {
	return rejectf(ClassMalformed, "malformed JSON at offset %d: invalid character %s %s", s.i, quoteChar(c), context)
}

func (s *scanner) malformedAt(off int, err error) *RejectError {
	return &RejectError{Class: ClassMalformed, Reason: fmt.Sprintf("malformed JSON at offset %d: %v", off, err), Err: err}
}

func quoteChar(c byte) string {
	switch {
	case c == '\'':
		return `'\''`
	case c == '"':
		return `'"'`
	case c < 0x20 || c >= 0x7f:
		return fmt.Sprintf("%q", rune(c))
	}
	return "'" + string(c) + "'"
}

// typeErr reports a field of the wrong JSON type, after checking the value is at least valid JSON
// (a syntax error further in is the more useful reason).
func (s *scanner) typeErr(name, want string) *RejectError {
	if err := s.skipValue(1); err != nil {
		return err
	}
	return rejectf(ClassWrongType, "%s: want %s, got %s", name, want, kindOf(s.b[s.lastStart]))
}

// nullOr accepts a null (leaving the field unchanged) or reports a type error.
func (s *scanner) nullOr(name, want string) *RejectError {
	if s.b[s.i] == 'n' {
		return s.null(name, want)
	}
	return s.typeErr(name, want)
}

// null consumes the literal null at s.i.
func (s *scanner) null(name, want string) *RejectError {
	if !bytes.HasPrefix(s.b[s.i:], []byte("null")) {
		return s.typeErr(name, want)
	}
	s.i += 4
	return nil
}

// key reads an object key and the ':' after it (s at the key's opening quote).
func (s *scanner) key() ([]byte, *RejectError) {
	if s.i >= len(s.b) {
		return nil, s.eof()
	}
	if s.b[s.i] != '"' {
		return nil, s.syntax(s.b[s.i], "looking for beginning of object key string")
	}
	raw, simple, err := s.str()
	if err != nil {
		return nil, err
	}
	key := raw[1 : len(raw)-1]
	if !simple {
		v, uerr := unquote(raw)
		if uerr != nil {
			return nil, s.malformedAt(s.lastStart, uerr)
		}
		key = []byte(v)
	}
	s.skipWS()
	if s.i >= len(s.b) {
		return nil, s.eof()
	}
	if s.b[s.i] != ':' {
		return nil, s.syntax(s.b[s.i], "after object key")
	}
	s.i++
	s.skipWS()
	return key, nil
}

// object walks an object's members (s at '{'), calling fn with s at each value.
func (s *scanner) object(fn func(key []byte) *RejectError) *RejectError {
	s.i++
	s.skipWS()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		key, err := s.key()
		if err != nil {
			return err
		}
		if s.i >= len(s.b) {
			return s.eof()
		}
		if err := fn(key); err != nil {
			return err
		}
		s.skipWS()
		if s.i >= len(s.b) {
			return s.eof()
		}
		switch c := s.b[s.i]; c {
		case ',':
			s.i++
			s.skipWS()
		case '}':
			s.i++
			return nil
		default:
			return s.syntax(c, "after object key:value pair")
		}
	}
}

// str reads a string literal (s at the opening quote) and returns it with its quotes. simple means
// the bytes between the quotes are the string's value: no escapes and valid UTF-8.
func (s *scanner) str() (raw []byte, simple bool, err *RejectError) {
	start := s.i
	s.lastStart = start
	i := s.i + 1
	simple = true
	ascii := true
	b := s.b
	for i < len(b) {
		// The common bytes first: eight at a time while none needs a look, then one at a time.
		for i+8 <= len(b) && !special8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			s.i = i + 1
			if !ascii && simple && !utf8.Valid(s.b[start+1:i]) {
				simple = false
			}
			return s.b[start:s.i], simple, nil
		case c == '\\':
			simple = false
			i++
			if i >= len(s.b) {
				s.i = i
				return nil, false, s.eof()
			}
			switch s.b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				for k := 1; k <= 4; k++ {
					if i+k >= len(s.b) {
						s.i = len(s.b)
						return nil, false, s.eof()
					}
					if !isHex(s.b[i+k]) {
						s.i = i + k
						return nil, false, s.syntax(s.b[i+k], "in \\u hexadecimal character escape")
					}
				}
				i += 5
			default:
				s.i = i
				return nil, false, s.syntax(s.b[i], "in string escape code")
			}
		case c < 0x20:
			s.i = i
			return nil, false, s.syntax(c, "in string literal")
		case c >= 0x80:
			ascii = false
			i++
		default:
			i++
		}
	}
	s.i = i
	return nil, false, s.eof()
}

// plain marks the bytes that stand for themselves inside a JSON string and need no further look:
// printable ASCII other than '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// special8 reports whether any of the eight bytes in x is one a string scan must stop at: a quote,
// a backslash, a control character or a non-ASCII byte (SWAR: the classic has-zero-byte and
// has-less-than tricks, no false negatives; a rare false positive only sends the scan to the
// byte-wise loop).
func special8(x uint64) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	q := x ^ (lo * '"')
	bs := x ^ (lo * '\\')
	return (x|(x-lo*0x20)|((q-lo)&^q)|((bs-lo)&^bs))&hi != 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// number scans a JSON number (s at its first byte) and returns its text; isInt when it has no
// fraction or exponent.
func (s *scanner) number() (text []byte, isInt bool, err *RejectError) {
	start := s.i
	s.lastStart = start
	i := s.i
	b := s.b
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i >= len(b) {
		s.i = i
		return nil, false, s.eof()
	}
	switch {
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		for i++; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
		}
	default:
		s.i = i
		return nil, false, s.syntax(b[i], "in numeric literal")
	}
	isInt = true
	if i < len(b) && b[i] == '.' {
		isInt = false
		i++
		if i >= len(b) {
			s.i = i
			return nil, false, s.eof()
		}
		if b[i] < '0' || b[i] > '9' {
			s.i = i
			return nil, false, s.syntax(b[i], "after decimal point in numeric literal")
		}
		for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		isInt = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) {
			s.i = i
			return nil, false, s.eof()
		}
		if b[i] < '0' || b[i] > '9' {
			s.i = i
			return nil, false, s.syntax(b[i], "in exponent of numeric literal")
		}
		for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
		}
	}
	s.i = i
	return b[start:i], isInt, nil
}

func isNumberStart(c byte) bool { return c == '-' || '0' <= c && c <= '9' }

// float reads a JSON number as float64.
func (s *scanner) float(name string) (float64, *RejectError) {
	if !isNumberStart(s.b[s.i]) {
		return 0, s.typeErr(name, "number")
	}
	text, _, err := s.number()
	if err != nil {
		return 0, err
	}
	if v, ok := fastFloat(text); ok {
		return v, nil
	}
	v, perr := strconv.ParseFloat(unsafe.String(unsafe.SliceData(text), len(text)), 64)
	if perr != nil {
		return 0, rejectf(ClassWrongType, "%s: number %s out of range", name, text)
	}
	return v, nil
}

// pow10 holds the powers of ten that are exact in float64.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
	1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// fastFloat converts the plain decimals telemetry is made of ("12.5", "-0.31", "212") without
// strconv. With at most 15 significant digits the mantissa is exact in float64 and so is the power
// of ten, so one IEEE division is correctly rounded — the same result strconv.ParseFloat gives (it
// uses this very shortcut first). Anything else (exponents, long mantissas) reports !ok.
func fastFloat(text []byte) (float64, bool) {
	neg := false
	if text[0] == '-' {
		neg = true
		text = text[1:]
	}
	var mant uint64
	digits, frac := 0, -1
	for i, c := range text {
		switch {
		case '0' <= c && c <= '9':
			mant = mant*10 + uint64(c-'0')
			digits++
		case c == '.':
			frac = i
		default:
			return 0, false
		}
	}
	if digits > 15 {
		return 0, false
	}
	v := float64(mant)
	if frac >= 0 {
		v /= pow10[len(text)-frac-1]
	}
	if neg {
		v = -v
	}
	return v, true
}

// int reads a JSON number as int64; like encoding/json it refuses fractions and exponents.
func (s *scanner) int(name string) (int64, *RejectError) {
	if !isNumberStart(s.b[s.i]) {
		return 0, s.typeErr(name, "integer")
	}
	text, isInt, err := s.number()
	if err != nil {
		return 0, err
	}
	if !isInt {
		return 0, rejectf(ClassWrongType, "%s: want integer, got %s", name, text)
	}
	// Fast path for the short counts that are the norm.
	if len(text) <= 18 {
		var v int64
		neg := text[0] == '-'
		digits := text
		if neg {
			digits = text[1:]
		}
		for _, c := range digits {
			v = v*10 + int64(c-'0')
		}
		if neg {
			v = -v
		}
		return v, nil
	}
	v, perr := strconv.ParseInt(string(text), 10, 64)
	if perr != nil {
		return 0, rejectf(ClassWrongType, "%s: integer %s out of range", name, text)
	}
	return v, nil
}

// maxDepth matches encoding/json's nesting limit.
const maxDepth = 10000

// skipValue checks and skips one JSON value of any type (s at its first byte).
func (s *scanner) skipValue(depth int) *RejectError {
	if s.i >= len(s.b) {
		return s.eof()
	}
	s.lastStart = s.i
	start := s.i
	switch c := s.b[s.i]; c {
	case '"':
		_, _, err := s.str()
		s.lastStart = start
		return err
	case '{', '[':
		if depth >= maxDepth {
			return rejectf(ClassMalformed, "malformed JSON at offset %d: exceeded max depth", s.i)
		}
		var err *RejectError
		if c == '{' {
			err = s.object(func([]byte) *RejectError { return s.skipValue(depth + 1) })
		} else {
			err = s.array(depth)
		}
		s.lastStart = start
		return err
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		if isNumberStart(c) {
			_, _, err := s.number()
			return err
		}
		return s.syntax(c, "looking for beginning of value")
	}
}

func (s *scanner) array(depth int) *RejectError {
	s.i++
	s.skipWS()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return nil
	}
	for {
		s.skipWS()
		if err := s.skipValue(depth + 1); err != nil {
			return err
		}
		s.skipWS()
		if s.i >= len(s.b) {
			return s.eof()
		}
		switch c := s.b[s.i]; c {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return s.syntax(c, "after array element")
		}
	}
}

func (s *scanner) literal(lit string) *RejectError {
	for k := 0; k < len(lit); k++ {
		if s.i+k >= len(s.b) {
			s.i += k
			return s.eof()
		}
		if s.b[s.i+k] != lit[k] {
			s.i += k
			return s.syntax(s.b[s.i], "in literal "+lit+" (expecting '"+lit[k:k+1]+"')")
		}
	}
	s.i += len(lit)
	return nil
}
