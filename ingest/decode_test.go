package ingest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

const good = `{"id":"4f1c9a9e-2b7d-4c59-9f3e-1a2b3c4d5e6f","ts":"2026-11-26T10:00:00.123Z","service":"checkout","component":"tax-calc","block":"rate-lookup","version":"2.4.0","cohort":"canary","latency_ms":12.5,"error":"timeout","count":1,"cpu":0.31,"mem_mb":212}`

func f64(v float64) *float64 { return &v }

func TestDecode(t *testing.T) {
	ts := time.Date(2026, 11, 26, 10, 0, 0, 123e6, time.UTC)
	want := schemas.TelemetryEvent{ID: "4f1c9a9e-2b7d-4c59-9f3e-1a2b3c4d5e6f", TS: ts, Service: "checkout",
		Component: "tax-calc", Block: "rate-lookup", Version: "2.4.0", Cohort: "canary", LatencyMS: f64(12.5),
		Error: "timeout", Count: 1, CPU: f64(0.31), MemMB: f64(212)}
	min := `{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1"}`
	minEv := schemas.TelemetryEvent{TS: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC), Service: "a", Component: "b", Version: "1"}
	tests := []struct {
		name      string
		subject   string
		lenient   bool // AllowUnknownFields
		in        string
		want      []schemas.TelemetryEvent
		wantClass string
		wantIn    string // substring of the reason
	}{
		{name: "single object", subject: "telemetry.checkout.tax-calc", in: good, want: []schemas.TelemetryEvent{want}},
		{name: "no subject check", in: good, want: []schemas.TelemetryEvent{want}},
		{name: "array", in: "[" + min + " , " + min + "]", want: []schemas.TelemetryEvent{minEv, minEv}},
		{name: "empty array", in: " [ ] ", want: nil},
		{name: "ndjson", in: min + "\n" + min + "\n", want: []schemas.TelemetryEvent{minEv, minEv}},
		{name: "ndjson crlf", in: min + "\r\n" + min + "\r\n", want: []schemas.TelemetryEvent{minEv, minEv}},
		{name: "unknown fields skipped when allowed", lenient: true, in: `{"x":{"y":[1,2,{"z":null}],"w":"\u00e9"},"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","more":-1.5e3}`, want: []schemas.TelemetryEvent{minEv}},
		{name: "case-insensitive keys", in: `{"TS":"2026-11-26T10:00:00Z","Service":"a","COMPONENT":"b","version":"1"}`, want: []schemas.TelemetryEvent{minEv}},
		{name: "escaped key and value", in: `{"ts":"2026-11-26T10:00:00Z","serv\u0069ce":"a","component":"b","version":"\u0031"}`, want: []schemas.TelemetryEvent{minEv}},
		{name: "null leaves unset", in: `{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","latency_ms":null,"block":null,"errors":null,"attrs":null}`, want: []schemas.TelemetryEvent{minEv}},
		{name: "aggregate", in: `{"ts":"2026-11-26T10:00:00+01:00","service":"a","component":"b","version":"1","count":10,"errors":{"timeout":2,"exception":1},"latency":{"p50":3,"p99":9.5,"sum":40},"attrs":{"k":"v","n":2}}`,
			want: []schemas.TelemetryEvent{{TS: time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC), Service: "a", Component: "b", Version: "1", Count: 10,
				Errors:  map[string]int64{"timeout": 2, "exception": 1},
				Latency: &schemas.LatencySummary{P50: 3, P99: 9.5, Sum: 40}, Attrs: map[string]any{"k": "v", "n": 2.0}}}},

		{name: "empty", in: " \n ", wantClass: ClassEmpty, wantIn: "empty message"},
		{name: "unknown field", in: `{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","latency_msec":12}`, wantClass: ClassUnknownField, wantIn: `unknown field "latency_msec"`},
		{name: "unknown latency field", in: `{"latency":{"p95":3}}`, wantClass: ClassUnknownField, wantIn: `unknown field "latency.p95"`},
		{name: "syntax error beats unknown field", in: `{"x":[1,}`, wantClass: ClassMalformed},
		{name: "malformed", in: `{"ts":"2026-11-26T10:00:00Z","service":"a" "component":"b"}`, wantClass: ClassMalformed, wantIn: "malformed JSON at offset 43: invalid character '\"' after object key:value pair"},
		{name: "truncated", in: `{"ts":"2026-11-26T10:00:00Z","serv`, wantClass: ClassMalformed, wantIn: "unexpected end of input"},
		{name: "bad escape", in: `{"service":"a\x"}`, wantClass: ClassMalformed, wantIn: "in string escape code"},
		{name: "bad literal in unknown field", in: `{"x":tru,"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1"}`, wantClass: ClassMalformed, wantIn: "in literal true"},
		{name: "trailing garbage", in: min + "x", wantClass: ClassMalformed, wantIn: "after top-level value"},
		{name: "not an object", in: `"hello"`, wantClass: ClassWrongType, wantIn: "got string"},
		{name: "array of numbers", in: `[1]`, wantClass: ClassWrongType, wantIn: "event 0: want a JSON object, got number"},
		{name: "latency as string", in: `{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","latency_ms":"12"}`, wantClass: ClassWrongType, wantIn: "latency_ms: want number, got string"},
		{name: "service as number", in: `{"service":5}`, wantClass: ClassWrongType, wantIn: "service: want string, got number"},
		{name: "count fraction", in: `{"count":1.5}`, wantClass: ClassWrongType, wantIn: "count: want integer, got 1.5"},
		{name: "ts as number", in: `{"ts":1764151200123,"service":"a","component":"b","version":"1"}`, wantClass: ClassWrongType, wantIn: "ts: want RFC 3339 time string, got number"},
		{name: "ts not a time", in: `{"ts":"yesterday","service":"a","component":"b","version":"1"}`, wantClass: ClassInvalid, wantIn: `ts: "yesterday" is not an RFC 3339 time`},
		{name: "negative latency", in: `{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","latency_ms":-3}`, wantClass: ClassInvalid, wantIn: "latency_ms: must be a finite number >= 0, got -3"},
		{name: "unknown error category", in: `{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","error":"boom"}`, wantClass: ClassInvalid, wantIn: `error: "boom"`},
		{name: "missing version", in: `{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b"}`, wantClass: ClassInvalid, wantIn: "version: required"},
		{name: "bad name", in: `{"ts":"2026-11-26T10:00:00Z","service":"a.b","component":"b","version":"1"}`, wantClass: ClassInvalid, wantIn: "service"},
		{name: "one bad event rejects the batch", in: "[" + min + "," + strings.Replace(min, `"1"}`, `"1","latency_ms":-1}`, 1) + "]", wantClass: ClassInvalid, wantIn: "event 1: latency_ms"},
		{name: "one bad ndjson line", in: min + "\n" + `{"ts":"x"}` + "\n", wantClass: ClassInvalid, wantIn: "event 1: ts"},
		{name: "subject service mismatch", subject: "telemetry.other.tax-calc", in: good, wantClass: ClassSubject, wantIn: `subject telemetry.other.tax-calc does not match body service "checkout"`},
		{name: "subject component mismatch", subject: "telemetry.checkout.x", in: good, wantClass: ClassSubject, wantIn: `does not match body component "tax-calc"`},
		{name: "subject too long", subject: "telemetry.checkout.tax-calc.extra", in: good, wantClass: ClassSubject, wantIn: "is not telemetry.<service>.<component>"},
		{name: "subject wrong root", subject: "deploy.checkout", in: good, wantClass: ClassSubject},
	}
	strict, lenient := NewDecoder(DecoderConfig{}), NewDecoder(DecoderConfig{AllowUnknownFields: true})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := strict
			if tt.lenient {
				d = lenient
			}
			got, err := d.Decode(tt.subject, []byte(tt.in), nil)
			if tt.wantClass != "" {
				var re *RejectError
				if !errors.As(err, &re) {
					t.Fatalf("err = %v, want a RejectError of class %s", err, tt.wantClass)
				}
				if !errors.Is(err, ErrRejected) {
					t.Errorf("errors.Is(err, ErrRejected) = false")
				}
				if re.Class != tt.wantClass || !strings.Contains(re.Reason, tt.wantIn) {
					t.Errorf("reject = %s %q, want %s containing %q", re.Class, re.Reason, tt.wantClass, tt.wantIn)
				}
				if len(got) != 0 {
					t.Errorf("rejected message still appended %d events", len(got))
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			assertSameEvents(t, got, tt.want)
		})
	}
}

func TestDecodeOversize(t *testing.T) {
	d := NewDecoder(DecoderConfig{MaxMessageBytes: 1 << 20})
	_, err := d.Decode("", make([]byte, 2000000), nil)
	var re *RejectError
	if !errors.As(err, &re) || re.Class != ClassOversize || re.Reason != "message of 2000000 bytes exceeds max 1048576" {
		t.Fatalf("err = %v", err)
	}
}

func TestDecodeValidationErrorUnwraps(t *testing.T) {
	d := NewDecoder(DecoderConfig{})
	_, err := d.Decode("", []byte(`{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","latency_ms":-3}`), nil)
	var ve *schemas.ValidationError
	if !errors.As(err, &ve) || ve.Field != "latency_ms" {
		t.Fatalf("err = %v, want a wrapped ValidationError on latency_ms", err)
	}
}

func TestDecodeAppendsAndKeepsDstOnReject(t *testing.T) {
	d := NewDecoder(DecoderConfig{})
	dst, err := d.Decode("", []byte(good), nil)
	if err != nil {
		t.Fatal(err)
	}
	dst, err = d.Decode("", []byte(good+"\n"+`{"ts":1}`), dst)
	if err == nil || len(dst) != 1 {
		t.Fatalf("len = %d, err = %v; want the first event only and an error", len(dst), err)
	}
	dst, err = d.Decode("", []byte(good), dst)
	if err != nil || len(dst) != 2 {
		t.Fatalf("len = %d, err = %v", len(dst), err)
	}
}

func TestDecodeSubjectPrefix(t *testing.T) {
	d := NewDecoder(DecoderConfig{Subjects: schemas.Subjects{Prefix: "acme"}})
	if _, err := d.Decode("acme.telemetry.checkout.tax-calc", []byte(good), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Decode("telemetry.checkout.tax-calc", []byte(good), nil); err == nil {
		t.Fatal("unprefixed subject accepted under a prefix")
	}
}

// TestDecodeAgreesWithEncodingJSON runs every golden example through the decoder and through
// encoding/json + Validate: they must accept the same inputs and produce the same events, valid/
// examples must be accepted and invalid/ and semantic/ ones rejected.
func TestDecodeAgreesWithEncodingJSON(t *testing.T) {
	files, _ := filepath.Glob("../schemas/examples/telemetry_event/*/*")
	if len(files) == 0 {
		t.Fatal("no golden examples under schemas/examples/telemetry_event")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		kind := filepath.Base(filepath.Dir(f))
		t.Run(kind+"/"+filepath.Base(f), func(t *testing.T) {
			err := compareWithReference(t, b, false)
			if (err == nil) != (kind == "valid") {
				t.Errorf("%s example: Decode err = %v", kind, err)
			}
			compareWithReference(t, b, true)
		})
	}
	for _, s := range decodeSeeds {
		compareWithReference(t, []byte(s), false)
		compareWithReference(t, []byte(s), true)
	}
}

// reference decodes like Decode but with encoding/json: an array, or a stream of objects.
func reference(data []byte, lenient bool) ([]schemas.TelemetryEvent, error) {
	trim := bytes.TrimLeft(data, " \t\r\n")
	var evs []schemas.TelemetryEvent
	if len(trim) == 0 {
		return nil, errors.New("empty")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if !lenient {
		dec.DisallowUnknownFields()
	}
	switch trim[0] {
	case '[':
		if err := dec.Decode(&evs); err != nil {
			return nil, err
		}
		var extra json.RawMessage
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			return nil, errors.New("data after the array")
		}
	case '{':
		for {
			var e schemas.TelemetryEvent
			if err := dec.Decode(&e); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, err
			}
			evs = append(evs, e)
		}
	default:
		return nil, errors.New("not an object or array")
	}
	for i := range evs {
		if err := evs[i].Validate(); err != nil {
			return nil, err
		}
	}
	return evs, nil
}

func compareWithReference(t *testing.T, data []byte, lenient bool) error {
	t.Helper()
	got, err := NewDecoder(DecoderConfig{AllowUnknownFields: lenient}).Decode("", data, nil)
	want, rerr := reference(data, lenient)
	if (err == nil) != (rerr == nil) {
		t.Fatalf("input %q (lenient %v): decoder err = %v, encoding/json+Validate err = %v", data, lenient, err, rerr)
	}
	if err == nil {
		assertSameEvents(t, got, want)
	}
	return err
}

// normalise makes events comparable: instants, not locations; empty maps as nil (omitempty drops
// them on re-encoding).
func normalise(evs []schemas.TelemetryEvent) []schemas.TelemetryEvent {
	out := make([]schemas.TelemetryEvent, len(evs))
	for i, e := range evs {
		e.TS = e.TS.UTC()
		if len(e.Errors) == 0 {
			e.Errors = nil
		}
		if len(e.Attrs) == 0 {
			e.Attrs = nil
		}
		if e.Latency != nil && *e.Latency == (schemas.LatencySummary{}) {
			e.Latency = nil
		}
		out[i] = e
	}
	return out
}

func assertSameEvents(t testing.TB, got, want []schemas.TelemetryEvent) {
	t.Helper()
	g, w := normalise(got), normalise(want)
	if !reflect.DeepEqual(g, w) {
		gj, _ := json.Marshal(g)
		wj, _ := json.Marshal(w)
		t.Fatalf("events differ:\n got %s\nwant %s", gj, wj)
	}
}

var decodeSeeds = []string{
	good,
	"[" + good + "," + good + "]",
	good + "\n" + good,
	`{"ts":"2026-11-26T10:00:00.5+05:30","service":"a","component":"b","version":"v\u00e9","error_site":"a.go:1;b.go:2","count":3,"errors":{"other":1},"latency":{"P50":1,"max":2},"attrs":{"x":[1,{"y":null}]}}`,
	`{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","latency_ms":1e2,"cpu":0,"mem_mb":0.5}`,
	`{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","errors":{"timeout":2}}`,
	`{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","cpu":0.5,"Process_RPS":120}`,
	`{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","process_rps":120}`,
	`{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","instance":"pod-1","Instance":"pod-2"}`,
	`{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","count":-1}`,
	`{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","latency_ms":-0}`,
	`{"ts":"2026-11-26T10:00:00Z","ſervice":"a","component":"b","version":"1"}`,
	`{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","version":"2"}`,
	`{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"\ud800"}`,
	`{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","latency_ms":1e999}`,
	`{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1","count":99999999999999999999}`,
	`[{"ts":"2026-11-26T10:00:00Z","service":"a","component":"b","version":"1"},null]`,
	`{}`, `[]`, `null`, `{"a":[[[[]]]]}`, "{\"service\":\"a\x01\"}",
}

func FuzzDecodeTelemetry(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	if files, _ := filepath.Glob("../schemas/examples/telemetry_event/*/*.json"); len(files) > 0 {
		for _, p := range files {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, lenient := range []bool{false, true} {
			d := NewDecoder(DecoderConfig{AllowUnknownFields: lenient})
			got, err := d.Decode("", data, nil)
			want, rerr := reference(data, lenient)
			if (err == nil) != (rerr == nil) {
				t.Fatalf("input %q (lenient %v): decoder err = %v, encoding/json+Validate err = %v", data, lenient, err, rerr)
			}
			if err != nil {
				var re *RejectError
				if !errors.As(err, &re) || re.Reason == "" {
					t.Fatalf("error %v is not a RejectError with a reason", err)
				}
				continue
			}
			assertSameEvents(t, got, want)
			// Stored at the example events' time, a message is accepted as Decode accepts it
			// unless an event is more than the default bound ahead.
			stored := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
			ahead := false
			for i := range got {
				ahead = ahead || got[i].TS.After(stored.Add(DefaultMaxClockAhead))
			}
			if sgot, serr := d.DecodeStored("", data, stored, nil); (serr != nil) != ahead || (serr == nil && len(sgot) != len(got)) {
				t.Fatalf("input %q: DecodeStored err = %v with an event ahead %v", data, serr, ahead)
			}
			// Anything accepted re-encodes to an event that decodes to the same thing.
			for i := range got {
				b, merr := json.Marshal(&got[i])
				if merr != nil {
					t.Fatalf("re-encode: %v", merr)
				}
				again, err := d.Decode("", b, nil)
				if err != nil {
					t.Fatalf("re-encoded %s rejected: %v", b, err)
				}
				assertSameEvents(t, again, got[i:i+1])
			}
		}
	})
}

// event256 is a typical single request observation of about 256 bytes.
var event256 = []byte(`{"id":"4f1c9a9e-2b7d-4c59-9f3e-1a2b3c4d5e6f","ts":"2026-11-26T10:00:00.123Z","service":"checkout","component":"tax-calc","block":"rate-lookup","version":"2.4.0","cohort":"canary","latency_ms":12.5,"error":"timeout","count":1,"cpu":0.31,"mem_mb":212.5}`)

func BenchmarkDecode(b *testing.B) {
	d := NewDecoder(DecoderConfig{})
	dst := make([]schemas.TelemetryEvent, 0, 1)
	b.SetBytes(int64(len(event256)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = d.Decode("telemetry.checkout.tax-calc", event256, dst[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeNDJSON100(b *testing.B) {
	var buf bytes.Buffer
	for range 100 {
		buf.Write(event256)
		buf.WriteByte('\n')
	}
	d := NewDecoder(DecoderConfig{})
	dst := make([]schemas.TelemetryEvent, 0, 100)
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = d.Decode("telemetry.checkout.tax-calc", buf.Bytes(), dst[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEncodingJSON is the baseline the hand-written decoder replaces.
func BenchmarkDecodeEncodingJSON(b *testing.B) {
	b.SetBytes(int64(len(event256)))
	b.ReportAllocs()
	for b.Loop() {
		var e schemas.TelemetryEvent
		if err := json.Unmarshal(event256, &e); err != nil {
			b.Fatal(err)
		}
		if err := e.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSpecial8NoFalseNegatives checks the eight-bytes-at-a-time string scan against the byte table:
// any byte the table does not call plain must stop the fast scan, wherever it sits.
func TestSpecial8NoFalseNegatives(t *testing.T) {
	for c := range 256 {
		for pos := range 8 {
			for _, fill := range []byte{'a', ' ', '~', '#', ']'} {
				w := bytes.Repeat([]byte{fill}, 8)
				w[pos] = byte(c)
				if x := binary.LittleEndian.Uint64(w); !plain[c] && !special8(x) {
					t.Fatalf("byte %#x at %d (fill %q) not flagged", c, pos, fill)
				}
			}
		}
	}
	if special8(binary.LittleEndian.Uint64([]byte("checkout"))) {
		t.Error("plain ASCII flagged")
	}
}

// TestDecodeStoredRejectsTimestampsAheadOfTheServer: an event further ahead of when the server
// stored its message than MaxClockAhead is rejected, with the whole message; within it, or with
// no stored time, or with the check off, it is accepted.
func TestDecodeStoredRejectsTimestampsAheadOfTheServer(t *testing.T) {
	stored := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	event := func(ts time.Time) string {
		return `{"ts":"` + ts.Format(time.RFC3339Nano) + `","service":"checkout","component":"tax-calc","version":"1","latency_ms":5}`
	}
	tests := []struct {
		name   string
		ahead  time.Duration
		stored time.Time
		body   string
		reason string // empty: accepted
	}{
		{"behind", 0, stored, event(stored.Add(-time.Hour)), ""},
		{"ahead within the default", 0, stored, event(stored.Add(2 * time.Second)), ""},
		{"ahead past the default", 0, stored, event(stored.Add(time.Hour)),
			"ts 2026-11-26T11:00:00Z is 1h0m0s ahead of when the server stored the message (2026-11-26T10:00:00Z; ingest.max_clock_ahead 2s): the producer's clock runs ahead"},
		{"one of a batch", 0, stored, event(stored) + "\n" + event(stored.Add(3*time.Second)),
			"event 1: ts 2026-11-26T10:00:03Z is 3s ahead of when the server stored the message (2026-11-26T10:00:00Z; ingest.max_clock_ahead 2s): the producer's clock runs ahead"},
		{"a wider bound", time.Minute, stored, event(stored.Add(30 * time.Second)), ""},
		{"the check off", -1, stored, event(stored.Add(time.Hour)), ""},
		{"no stored time", 0, time.Time{}, event(stored.Add(time.Hour)), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(DecoderConfig{MaxClockAhead: tt.ahead})
			dst, err := d.DecodeStored("telemetry.checkout.tax-calc", []byte(tt.body), tt.stored, nil)
			if tt.reason == "" {
				if err != nil || len(dst) == 0 {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			var re *RejectError
			if !errors.As(err, &re) || re.Class != ClassFuture || re.Reason != tt.reason || len(dst) != 0 {
				t.Fatalf("got %d events, err %v; want none and %s: %s", len(dst), err, ClassFuture, tt.reason)
			}
		})
	}
}
