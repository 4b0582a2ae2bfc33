package schemas_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/scalpel-dev/scalpel/schemas"
)

func testCommand() schemas.RollbackCommand {
	exp := time.Date(2026, 11, 26, 10, 15, 0, 0, time.UTC)
	return schemas.RollbackCommand{
		ID:          schemas.DeriveID("command", "d1", "checkout.tax-calc.rate-lookup"),
		DecisionID:  "d1",
		IncidentID:  "i1",
		Granularity: schemas.GranularityFine,
		Action:      schemas.ActionRollback,
		Service:     "checkout",
		Component:   "tax-calc",
		Block:       "rate-lookup",
		FromVersion: "2.4.0",
		ToVersion:   "2.3.9",
		Reason:      "error rate 11% vs 2% baseline",
		IssuedAt:    time.Date(2026, 11, 26, 10, 0, 0, 123000000, time.UTC),
		ExpiresAt:   &exp,
	}
}

// natsSpecs mirrors the sdk-go NATS/JetStream binary binding: ce-<attr> headers, datacontenttype as
// content-type.
var natsSpecs = spec.WithPrefixMatchExact(func(s string) string {
	if s == "datacontenttype" {
		return "content-type"
	}
	return "ce-" + s
}, "ce-")

// headerMessage is a binding.MessageReader over NATS-style headers, so that sdk-go itself turns our
// headers into an event (rather than the test re-implementing the mapping it is meant to check).
type headerMessage struct {
	hdr  map[string][]string
	data []byte
}

func (m headerMessage) ReadEncoding() binding.Encoding { return binding.EncodingBinary }

func (m headerMessage) ReadStructured(context.Context, binding.StructuredWriter) error {
	return binding.ErrNotStructured
}

func (m headerMessage) ReadBinary(ctx context.Context, w binding.BinaryWriter) error {
	v := natsSpecs.Version(m.hdr[natsSpecs.PrefixedSpecVersionName()][0])
	if v == nil {
		return errors.New("unknown spec version")
	}
	for k, vs := range m.hdr {
		if a := v.Attribute(k); a != nil {
			if err := w.SetAttribute(a, vs[0]); err != nil {
				return err
			}
		} else if strings.HasPrefix(k, "ce-") {
			if err := w.SetExtension(strings.TrimPrefix(k, "ce-"), vs[0]); err != nil {
				return err
			}
		}
	}
	return w.SetData(bytes.NewReader(m.data))
}

func (m headerMessage) Finish(error) error { return nil }

func (m headerMessage) GetAttribute(k spec.Kind) (spec.Attribute, any) {
	a := natsSpecs.Version(m.hdr[natsSpecs.PrefixedSpecVersionName()][0]).AttributeFromKind(k)
	if a == nil {
		return nil, nil
	}
	name := a.PrefixedName()
	if k == spec.DataContentType {
		name = "content-type"
	}
	if v := m.hdr[name]; v != nil {
		return a, v[0]
	}
	return a, nil
}

func (m headerMessage) GetExtension(name string) any {
	if v := m.hdr["ce-"+name]; v != nil {
		return v[0]
	}
	return nil
}

// headerWriter is a binding.BinaryWriter that writes an sdk-go event into NATS-style headers.
type headerWriter struct {
	hdr  map[string][]string
	data []byte
}

func (w *headerWriter) Start(context.Context) error { return nil }
func (w *headerWriter) End(context.Context) error   { return nil }

func (w *headerWriter) SetAttribute(a spec.Attribute, value any) error {
	s, err := types.Format(value)
	if err != nil {
		return err
	}
	if a.Kind() == spec.DataContentType {
		w.hdr["content-type"] = []string{s}
		return nil
	}
	w.hdr["ce-"+a.Name()] = []string{s}
	return nil
}

func (w *headerWriter) SetExtension(name string, value any) error {
	s, err := types.Format(value)
	if err != nil {
		return err
	}
	w.hdr["ce-"+name] = []string{s}
	return nil
}

func (w *headerWriter) SetData(r io.Reader) (err error) {
	w.data, err = io.ReadAll(r)
	return err
}

func TestEncodeCommandEventIsValidCloudEvent(t *testing.T) {
	cmd := testCommand()
	hdr, data, err := schemas.EncodeCommandEvent(&cmd, "")
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"ce-specversion": "1.0",
		"ce-id":          cmd.ID,
		"ce-source":      schemas.DefaultCommandSource,
		"ce-type":        "io.scalpel.rollback.v1",
		"ce-subject":     "checkout/tax-calc/rate-lookup",
		"ce-time":        "2026-11-26T10:00:00.123Z",
		"content-type":   "application/json",
		"Nats-Msg-Id":    cmd.ID,
	} {
		if got := hdr[k]; len(got) != 1 || got[0] != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}

	ev, err := binding.ToEvent(context.Background(), headerMessage{hdr: hdr, data: data})
	if err != nil {
		t.Fatalf("sdk-go reading our headers: %v", err)
	}
	if err := ev.Validate(); err != nil {
		t.Fatalf("sdk-go says the event is invalid: %v", err)
	}
	if ev.ID() != cmd.ID || ev.Type() != schemas.RollbackCommandType || ev.Subject() != cmd.Target() ||
		!ev.Time().Equal(cmd.IssuedAt) || ev.DataContentType() != "application/json" {
		t.Errorf("sdk-go event = %s", ev)
	}
	var got schemas.RollbackCommand
	if err := ev.DataAs(&got); err != nil {
		t.Fatal(err)
	}
	if got.Target() != cmd.Target() || got.ToVersion != cmd.ToVersion {
		t.Errorf("data = %+v", got)
	}

	back, err := schemas.DecodeCommandEvent(hdr, data)
	if err != nil {
		t.Fatal(err)
	}
	if back.ID != cmd.ID || !back.IssuedAt.Equal(cmd.IssuedAt) || !back.ExpiresAt.Equal(*cmd.ExpiresAt) ||
		back.Target() != cmd.Target() || back.Reason != cmd.Reason {
		t.Errorf("round trip = %+v, want %+v", back, cmd)
	}
}

func TestDecodeEventBuiltWithSDK(t *testing.T) {
	cmd := testCommand()
	cmd.Block = ""
	cmd.Granularity = schemas.GranularityMedium
	data := cmd
	data.ID = "" // the data may leave the id to the ce-id attribute

	ev := event.New()
	ev.SetID(cmd.ID)
	ev.SetSource("scalpel://prod-eu")
	ev.SetType(schemas.RollbackCommandType)
	ev.SetSubject(cmd.Target())
	ev.SetTime(cmd.IssuedAt)
	if err := ev.SetData(event.ApplicationJSON, data); err != nil {
		t.Fatal(err)
	}
	if err := ev.Validate(); err != nil {
		t.Fatal(err)
	}
	w := &headerWriter{hdr: map[string][]string{}}
	if _, err := binding.Write(context.Background(), binding.ToMessage(&ev), nil, w); err != nil {
		t.Fatal(err)
	}
	got, err := schemas.DecodeCommandEvent(w.hdr, w.data)
	if err != nil {
		t.Fatalf("decode sdk-go event (headers %v): %v", w.hdr, err)
	}
	if got.ID != cmd.ID || got.Target() != "checkout/tax-calc" || got.ToVersion != "2.3.9" {
		t.Errorf("decoded %+v", got)
	}
}

func TestDecodeCommandEventRejects(t *testing.T) {
	cmd := testCommand()
	goodHdr, goodData, err := schemas.EncodeCommandEvent(&cmd, "scalpel://test")
	if err != nil {
		t.Fatal(err)
	}
	with := func(k, v string) map[string][]string {
		h := map[string][]string{}
		for hk, hv := range goodHdr {
			h[hk] = hv
		}
		if v == "" {
			delete(h, k)
		} else {
			h[k] = []string{v}
		}
		return h
	}
	other := cmd
	other.Service = "billing"
	otherData, _ := jsonOf(t, other)
	noAction := cmd
	noAction.Action = "hold"
	noActionData, _ := jsonOf(t, noAction)

	tests := []struct {
		name    string
		hdr     map[string][]string
		data    []byte
		wantMsg string
		also    error // a schemas sentinel the error must match too, when the data is at fault
	}{
		{"no specversion", with("ce-specversion", ""), goodData, "ce-specversion is missing", nil},
		{"wrong specversion", with("ce-specversion", "0.3"), goodData, `want "1.0"`, nil},
		{"wrong type", with("ce-type", "io.other"), goodData, "ce-type", nil},
		{"no id", with("ce-id", ""), goodData, "ce-id is missing", nil},
		{"no source", with("ce-source", ""), goodData, "ce-source is missing", nil},
		{"xml", with("content-type", "application/xml"), goodData, "content-type", nil},
		{"bad time", with("ce-time", "yesterday"), goodData, "RFC 3339", nil},
		{"id mismatch", with("ce-id", "other"), goodData, "disagrees", nil},
		{"msg id mismatch", with("Nats-Msg-Id", "other"), goodData, "Nats-Msg-Id", nil},
		{"subject mismatch", goodHdr, otherData, "disagrees with the data's target", nil},
		{"no data", goodHdr, nil, "no data", nil},
		{"not json", goodHdr, []byte("{"), "not a RollbackCommand", schemas.ErrMalformed},
		{"decision action", goodHdr, noActionData, `"hold"`, schemas.ErrInvalid},
		{"nil headers", nil, goodData, "missing", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := schemas.DecodeCommandEvent(tt.hdr, tt.data)
			if !errors.Is(err, schemas.ErrCommandEvent) {
				t.Fatalf("err = %v, want ErrCommandEvent", err)
			}
			if tt.also != nil && !errors.Is(err, tt.also) {
				t.Errorf("err = %v, want it to match %v too", err, tt.also)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestDecodeCommandEventHeaderCase(t *testing.T) {
	cmd := testCommand()
	// A '%' in an attribute is percent-encoded on the wire, as the binding asks, and decoded back.
	const source = "scalpel://prod/eu%20west"
	hdr, data, err := schemas.EncodeCommandEvent(&cmd, source)
	if err != nil {
		t.Fatal(err)
	}
	if got := hdr["ce-source"][0]; got != "scalpel://prod/eu%2520west" {
		t.Errorf("ce-source on the wire = %q", got)
	}
	upper := map[string][]string{}
	for k, v := range hdr {
		upper[strings.ToUpper(k)] = v
	}
	if _, err := schemas.DecodeCommandEvent(upper, data); err != nil {
		t.Fatalf("upper-case headers: %v", err)
	}
	if got, err := schemas.CommandEventSource(upper); err != nil || got != source {
		t.Errorf("source = %q, %v; want %q", got, err, source)
	}
}

func jsonOf(t *testing.T, c schemas.RollbackCommand) ([]byte, error) {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b, nil
}
