package schemas

// The wire format of a rollback command: a CloudEvent in binary content mode over NATS headers, and
// the desired-state record actuate writes to scalpel_active. Both are read by the deployer SDK that
// other people's services embed, so this file uses the standard library only.

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/url"
	"strings"
	"time"
)

// CloudEvent attribute headers of the binary content mode over NATS (the CloudEvents NATS protocol
// binding, as the sdk-go nats_jetstream binding writes it): every context attribute travels as a
// "ce-<name>" header, except datacontenttype, which is the message's "content-type".
const (
	HeaderCESpecVersion = "ce-specversion"
	HeaderCEID          = "ce-id"
	HeaderCESource      = "ce-source"
	HeaderCEType        = "ce-type"
	HeaderCESubject     = "ce-subject"
	HeaderCETime        = "ce-time"
	HeaderContentType   = "content-type"
	// HeaderMsgID is JetStream's de-duplication header: the command id, so a retried publish within
	// the stream's Duplicates window is dropped by the server instead of becoming a second rollback.
	HeaderMsgID = "Nats-Msg-Id"
)

// CloudEventSpecVersion is the only CloudEvents version scalpel writes and accepts.
const CloudEventSpecVersion = "1.0"

// CommandContentType is the content type of a command's data.
const CommandContentType = "application/json"

// DefaultCommandSource is the ce-source of commands when none is configured. It names the scalpel
// deployment rather than the process: CloudEvents identifies an event by (source, id), so the same
// command re-published by a second instance after a fail-over must keep the same source to stay the
// same event.
const DefaultCommandSource = "scalpel://scalpel"

// ErrCommandEvent is wrapped by every error EncodeCommandEvent and DecodeCommandEvent return for
// bad input, so callers can tell a malformed command (drop it, never retry) from an I/O failure.
// An event whose data breaks the RollbackCommand schema matches ErrInvalid (or ErrMalformed) too.
var ErrCommandEvent = errors.New("invalid rollback command event")

func ceErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCommandEvent, fmt.Sprintf(format, args...))
}

// ceValidate runs the command's schema validation and tags a failure as a bad command event.
func ceValidate(c *RollbackCommand) error {
	if c == nil {
		return ceErrorf("nil command")
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%w: command %s: %w", ErrCommandEvent, c.ID, err)
	}
	return nil
}

// EncodeCommandEvent maps a command onto NATS message headers and data as a binary-mode CloudEvent:
// ce-specversion 1.0, ce-id = command id, ce-source = source (DefaultCommandSource when empty),
// ce-type = RollbackCommandType, ce-subject = cmd.Target(), ce-time = issued_at, content-type
// application/json, and Nats-Msg-Id = command id. The data is the command as JSON.
func EncodeCommandEvent(cmd *RollbackCommand, source string) (hdr map[string][]string, data []byte, err error) {
	if err := ceValidate(cmd); err != nil {
		return nil, nil, err
	}
	if source == "" {
		source = DefaultCommandSource
	}
	if _, err := url.Parse(source); err != nil {
		return nil, nil, ceErrorf("source %q is not a URI-reference: %v", source, err)
	}
	data, err = json.Marshal(cmd)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: marshal command %s: %v", ErrCommandEvent, cmd.ID, err)
	}
	hdr = map[string][]string{
		HeaderCESpecVersion: {CloudEventSpecVersion},
		HeaderCEID:          {cmd.ID},
		HeaderCESource:      {ceEncodeValue(source)},
		HeaderCEType:        {RollbackCommandType},
		HeaderCESubject:     {cmd.Target()},
		HeaderCETime:        {cmd.IssuedAt.UTC().Format(time.RFC3339Nano)},
		HeaderContentType:   {CommandContentType},
		HeaderMsgID:         {cmd.ID},
	}
	return hdr, data, nil
}

// DecodeCommandEvent reads a command from a binary-mode CloudEvent's headers and data, checking that
// the event is a scalpel rollback command and that its attributes agree with its data. Header names
// are matched case-insensitively and values percent-decoded, as the binding allows producers to
// write them either way.
func DecodeCommandEvent(hdr map[string][]string, data []byte) (*RollbackCommand, error) {
	get := func(name string, required bool) (string, error) {
		v, ok, err := ceHeader(hdr, name)
		if err != nil {
			return "", err
		}
		if !ok && required {
			return "", ceErrorf("header %s is missing (not a binary-mode CloudEvent?)", name)
		}
		return v, nil
	}
	specVersion, err := get(HeaderCESpecVersion, true)
	if err != nil {
		return nil, err
	}
	if specVersion != CloudEventSpecVersion {
		return nil, ceErrorf("%s is %q, want %q", HeaderCESpecVersion, specVersion, CloudEventSpecVersion)
	}
	typ, err := get(HeaderCEType, true)
	if err != nil {
		return nil, err
	}
	if typ != RollbackCommandType {
		return nil, ceErrorf("%s is %q, want %q", HeaderCEType, typ, RollbackCommandType)
	}
	id, err := get(HeaderCEID, true)
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, ceErrorf("%s is empty", HeaderCEID)
	}
	source, err := get(HeaderCESource, true)
	if err != nil {
		return nil, err
	}
	if source == "" {
		return nil, ceErrorf("%s is empty", HeaderCESource)
	}
	if _, err := url.Parse(source); err != nil {
		return nil, ceErrorf("%s %q is not a URI-reference: %v", HeaderCESource, source, err)
	}
	ct, err := get(HeaderContentType, false)
	if err != nil {
		return nil, err
	}
	if ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != CommandContentType {
			return nil, ceErrorf("%s is %q, want %q", HeaderContentType, ct, CommandContentType)
		}
	}
	if len(data) == 0 {
		return nil, ceErrorf("event %s has no data", id)
	}
	// Unknown fields are allowed here, unlike DecodeRollbackCommand: the deployer SDK that calls
	// this runs inside other people's services and may be older than the scalpel that sent the
	// command; a field added later must not make it drop a rollback.
	var cmd RollbackCommand
	if err := json.Unmarshal(data, &cmd); err != nil {
		return nil, fmt.Errorf("%w: event %s: data is not a RollbackCommand: %w", ErrCommandEvent, id, fmt.Errorf("%w: %v", ErrMalformed, err))
	}
	// The id lives in both places; the header is what dedupes and what consumers index, so the data
	// may omit it but never contradict it.
	switch {
	case cmd.ID == "":
		cmd.ID = id
	case cmd.ID != id:
		return nil, ceErrorf("%s %q disagrees with data id %q", HeaderCEID, id, cmd.ID)
	}
	subject, err := get(HeaderCESubject, false)
	if err != nil {
		return nil, err
	}
	if subject != "" && subject != cmd.Target() {
		return nil, ceErrorf("event %s: %s %q disagrees with the data's target %q", id, HeaderCESubject, subject, cmd.Target())
	}
	ts, err := get(HeaderCETime, false)
	if err != nil {
		return nil, err
	}
	if ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return nil, ceErrorf("event %s: %s %q is not an RFC 3339 time", id, HeaderCETime, ts)
		}
		if cmd.IssuedAt.IsZero() {
			cmd.IssuedAt = t
		}
	}
	if msgID, ok, _ := ceHeader(hdr, HeaderMsgID); ok && msgID != id {
		return nil, ceErrorf("%s %q disagrees with %s %q", HeaderMsgID, msgID, HeaderCEID, id)
	}
	if err := ceValidate(&cmd); err != nil {
		return nil, err
	}
	return &cmd, nil
}

// CommandEventSource returns the ce-source of a command event, for consumers that log or route on
// who issued it.
func CommandEventSource(hdr map[string][]string) (string, error) {
	v, ok, err := ceHeader(hdr, HeaderCESource)
	if err == nil && !ok {
		err = ceErrorf("header %s is missing", HeaderCESource)
	}
	return v, err
}

// ceEncodeValue percent-encodes what the binding says a header value must not carry raw: space,
// '"', '%', control and non-ASCII bytes. The other attributes scalpel writes never contain them.
func ceEncodeValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// ceHeader returns the single value of a header, matching its name case-insensitively.
func ceHeader(hdr map[string][]string, name string) (string, bool, error) {
	var (
		val   string
		found bool
	)
	for k, vs := range hdr {
		if !strings.EqualFold(k, name) || len(vs) == 0 {
			continue
		}
		for _, v := range vs {
			if found && v != val {
				return "", false, ceErrorf("header %s has conflicting values %q and %q", name, val, v)
			}
			val, found = v, true
		}
	}
	if !found {
		return "", false, nil
	}
	if strings.Contains(val, "%") {
		d, err := url.PathUnescape(val)
		if err != nil {
			return "", false, ceErrorf("header %s: bad percent-encoding in %q", name, val)
		}
		val = d
	}
	return val, true, nil
}

// ActiveVersion is the value of a scalpel_active key (ActiveKey(svc, comp, block)): the desired
// state of one target, written by actuate with compare-and-set before the command is published.
// Deployers watch the bucket, so one that starts (or reconnects) after a command was published still
// converges to the desired version.
type ActiveVersion struct {
	// Version is the version the target should run; empty for a disable of what is there.
	Version string `json:"version"`
	// FromVersion is the version the command moved away from, for the audit trail.
	FromVersion string `json:"from_version,omitempty"`
	// CommandID is the command that set this state; a retried command finding its own id is a no-op.
	CommandID  string `json:"command_id"`
	DecisionID string `json:"decision_id"`
	IncidentID string `json:"incident_id,omitempty"`
	// Action is the command's action: rollback, disable, enable or restore.
	Action string `json:"action"`
	// TS is the command's issued_at (event time), used to refuse a stale command that arrives after
	// a newer one for the same target.
	TS time.Time `json:"ts"`
}

// ActiveVersionOf is the desired state a command asks for.
func ActiveVersionOf(c *RollbackCommand) ActiveVersion {
	return ActiveVersion{
		Version:     c.ToVersion,
		FromVersion: c.FromVersion,
		CommandID:   c.ID,
		DecisionID:  c.DecisionID,
		IncidentID:  c.IncidentID,
		Action:      c.Action,
		TS:          c.IssuedAt,
	}
}
