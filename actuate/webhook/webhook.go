// Package webhook is the built-in `webhook` actuator: it POSTs each command to a service's URL as a
// structured-mode CloudEvent (content-type application/cloudevents+json), signed with HMAC-SHA256,
// and retries transient failures with exponential backoff and jitter inside a bounded time.
//
// A receiver verifies X-Scalpel-Signature (sha256=<hex HMAC of the raw body>) with the shared
// secret — Verify does it for Go receivers — and dedupes by the Idempotency-Key header, which is
// the command id: a retry after a lost response sends the same command again, so delivery is at
// least once. X-Scalpel-Timestamp says when the attempt was sent; it is not signed, so receivers
// must not rely on it for replay protection — the command's id and expires_at are what is signed.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/schemas"
)

// Request headers.
const (
	HeaderSignature = "X-Scalpel-Signature"
	HeaderTimestamp = "X-Scalpel-Timestamp"
	// HeaderIdempotencyKey carries the command id (the IETF Idempotency-Key header).
	HeaderIdempotencyKey = "Idempotency-Key"
	// ContentType is the structured content mode of CloudEvents over HTTP.
	ContentType = "application/cloudevents+json"
	// signaturePrefix names the algorithm, so that it can change without breaking receivers.
	signaturePrefix = "sha256="
	// maxErrorBody is how much of a refusal's body is quoted in the error.
	maxErrorBody = 1 << 10
)

// ErrStatus is wrapped by every error caused by a non-2xx response.
var ErrStatus = errors.New("webhook: unexpected status")

// Event is the structured-mode CloudEvent a webhook receives. Data is the RollbackCommand.
type Event struct {
	SpecVersion     string                  `json:"specversion"`
	ID              string                  `json:"id"`
	Source          string                  `json:"source"`
	Type            string                  `json:"type"`
	Subject         string                  `json:"subject"`
	Time            time.Time               `json:"time"`
	DataContentType string                  `json:"datacontenttype"`
	Data            schemas.RollbackCommand `json:"data"`
}

// Sign returns the X-Scalpel-Signature value of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return signaturePrefix + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether header is a valid X-Scalpel-Signature of body under secret, in constant
// time.
func Verify(secret, body []byte, header string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(header))
}

// Actuator is the webhook actuator of one URL. It is safe for concurrent use.
type Actuator struct {
	cfg    Config
	secret []byte
	client *http.Client
	log    *slog.Logger
	source string
	now    func() time.Time
}

var _ actuate.Actuator = (*Actuator)(nil)

// Option configures an Actuator.
type Option func(*Actuator) error

// WithClient sets the HTTP client (default: a client with no overall timeout; Config.Timeout
// bounds each attempt). Use it for TLS settings or a proxy.
func WithClient(c *http.Client) Option {
	return func(a *Actuator) error {
		if c == nil {
			return errors.New("webhook: nil http client")
		}
		a.client = c
		return nil
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(a *Actuator) error {
		if l == nil {
			return errors.New("webhook: nil logger")
		}
		a.log = l
		return nil
	}
}

// WithSource sets the CloudEvent source (default schemas.DefaultCommandSource); name the scalpel
// deployment, as for the nats actuator, so one command is one event wherever it is sent from.
func WithSource(source string) Option {
	return func(a *Actuator) error {
		if source == "" {
			return errors.New("webhook: empty source")
		}
		a.source = source
		return nil
	}
}

// WithClock sets the clock of expiry checks and X-Scalpel-Timestamp (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(a *Actuator) error {
		if now == nil {
			return errors.New("webhook: nil clock")
		}
		a.now = now
		return nil
	}
}

// New returns a webhook actuator for cfg, whose unset fields take DefaultConfig's values.
func New(cfg Config, opts ...Option) (*Actuator, error) {
	cfg = cfg.Inherit(DefaultConfig())
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	secret, err := cfg.secret()
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	a := &Actuator{
		cfg:    cfg,
		secret: []byte(secret),
		client: &http.Client{},
		log:    slog.New(slog.DiscardHandler),
		source: schemas.DefaultCommandSource,
		now:    time.Now,
	}
	for _, o := range opts {
		if err := o(a); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Encode returns the body the actuator posts for cmd: the structured-mode CloudEvent.
func Encode(cmd *schemas.RollbackCommand, source string) ([]byte, error) {
	// The binary-mode encoder validates the command and the source, so both modes refuse alike.
	if _, _, err := schemas.EncodeCommandEvent(cmd, source); err != nil {
		return nil, err
	}
	if source == "" {
		source = schemas.DefaultCommandSource
	}
	return json.Marshal(Event{
		SpecVersion:     schemas.CloudEventSpecVersion,
		ID:              cmd.ID,
		Source:          source,
		Type:            schemas.RollbackCommandType,
		Subject:         cmd.Target(),
		Time:            cmd.IssuedAt.UTC(),
		DataContentType: schemas.CommandContentType,
		Data:            *cmd,
	})
}

// Actuate posts cmd until the receiver accepts it (2xx), refuses it for good (4xx other than 408
// and 429: permanent), or MaxElapsed runs out (the last failure, retryable).
func (a *Actuator) Actuate(ctx context.Context, cmd schemas.RollbackCommand) error {
	if err := actuate.ContextErr(ctx); err != nil {
		return err
	}
	if err := actuate.Check(&cmd, a.now()); err != nil {
		return err
	}
	body, err := Encode(&cmd, a.source)
	if err != nil {
		return actuate.Permanent(err)
	}
	sig := Sign(a.secret, body)
	log := a.log.With("command_id", cmd.ID, "target", cmd.Target(), "url", a.cfg.URL)

	deadline := a.now().Add(time.Duration(a.cfg.MaxElapsed))
	wait := time.Duration(a.cfg.InitialBackoff)
	for attempt := 1; ; attempt++ {
		retryAfter, err := a.post(ctx, &cmd, body, sig)
		if err == nil {
			log.Debug("webhook accepted the command", "attempt", attempt)
			return nil
		}
		if actuate.IsPermanent(err) {
			return err
		}
		if cerr := actuate.ContextErr(ctx); cerr != nil {
			return actuate.Retryable(fmt.Errorf("command %s to %s after %d attempt(s): %w (last: %v)", cmd.ID, a.cfg.URL, attempt, ctx.Err(), err))
		}
		sleep := jitter(wait)
		if retryAfter > sleep {
			sleep = min(retryAfter, time.Duration(a.cfg.MaxBackoff))
		}
		if a.now().Add(sleep).After(deadline) {
			return actuate.Retryable(fmt.Errorf("command %s to %s: gave up after %d attempt(s) in %s: %w",
				cmd.ID, a.cfg.URL, attempt, time.Duration(a.cfg.MaxElapsed), err))
		}
		log.Debug("webhook attempt failed; retrying", "attempt", attempt, "wait", sleep, "err", err)
		t := time.NewTimer(sleep)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return actuate.Retryable(fmt.Errorf("command %s to %s after %d attempt(s): %w (last: %v)", cmd.ID, a.cfg.URL, attempt, ctx.Err(), err))
		}
		wait = min(2*wait, time.Duration(a.cfg.MaxBackoff))
	}
}

// jitter draws a wait uniformly from [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d-d/2+1)
}

// post makes one attempt. It returns the receiver's Retry-After, if any, with a classified error.
func (a *Actuator) post(ctx context.Context, cmd *schemas.RollbackCommand, body []byte, sig string) (time.Duration, error) {
	actx, cancel := context.WithTimeout(ctx, time.Duration(a.cfg.Timeout))
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, a.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, actuate.Permanent(fmt.Errorf("webhook request to %s: %w", a.cfg.URL, err))
	}
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set(HeaderSignature, sig)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(a.now().Unix(), 10))
	req.Header.Set(HeaderIdempotencyKey, cmd.ID)
	req.Header.Set("User-Agent", "scalpel-webhook")
	resp, err := a.client.Do(req)
	if err != nil {
		// Network failures, timeouts, refused connections: the receiver may be back soon.
		return 0, actuate.Retryable(fmt.Errorf("webhook POST %s: %w", a.cfg.URL, err))
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	// Drain a little more so the connection can be reused, without reading an unbounded body.
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return 0, nil
	}
	err = fmt.Errorf("%w %d from %s: %s", ErrStatus, resp.StatusCode, a.cfg.URL, strings.TrimSpace(string(snippet)))
	switch {
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout:
		return retryAfter(resp.Header.Get("Retry-After"), a.now()), actuate.Retryable(err)
	default:
		// Other 4xx (bad signature, unknown service, rejected command) and unfollowed 3xx: the
		// same request will get the same answer.
		return 0, actuate.Permanent(err)
	}
}

// retryAfter parses a Retry-After header (seconds or an HTTP date); 0 when absent or unreadable.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
