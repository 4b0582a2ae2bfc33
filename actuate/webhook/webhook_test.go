package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/actuate/actuatortest"
	"github.com/scalpel-dev/scalpel/actuate/webhook"
	"github.com/scalpel-dev/scalpel/schemas"
)

const secret = "s3cret"

// receiver is a webhook endpoint that verifies every request and answers with the statuses of
// script in turn (200 once the script is exhausted).
type receiver struct {
	t      *testing.T
	mu     sync.Mutex
	script []int
	calls  int
	ids    []string // Idempotency-Key of every accepted request
	events []webhook.Event
	hang   chan struct{} // when non-nil, requests block until it is closed
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.hang != nil {
		select {
		case <-r.hang:
		case <-req.Context().Done():
			return
		}
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		r.t.Error(err)
		return
	}
	if !webhook.Verify([]byte(secret), body, req.Header.Get(webhook.HeaderSignature)) {
		r.t.Errorf("bad signature %q", req.Header.Get(webhook.HeaderSignature))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != webhook.ContentType {
		r.t.Errorf("content-type %q", ct)
	}
	if req.Header.Get(webhook.HeaderTimestamp) == "" {
		r.t.Error("no timestamp header")
	}
	var ev webhook.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		r.t.Errorf("body is not a CloudEvent: %v", err)
	}
	if key := req.Header.Get(webhook.HeaderIdempotencyKey); key != ev.ID || ev.ID != ev.Data.ID {
		r.t.Errorf("idempotency key %q, event id %q, command id %q: want all equal", key, ev.ID, ev.Data.ID)
	}
	r.mu.Lock()
	status := http.StatusOK
	if r.calls < len(r.script) {
		status = r.script[r.calls]
	}
	r.calls++
	if status/100 == 2 {
		r.ids = append(r.ids, ev.ID)
		r.events = append(r.events, ev)
	}
	r.mu.Unlock()
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "0")
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(http.StatusText(status)))
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

func newReceiver(t *testing.T, script ...int) (*receiver, *httptest.Server) {
	r := &receiver{t: t, script: script}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv
}

// fast is a config whose backoff keeps tests quick.
func fast(url string) webhook.Config {
	return webhook.Config{URL: url, Secret: secret, Timeout: schemas.Duration(2 * time.Second),
		MaxElapsed: schemas.Duration(3 * time.Second), InitialBackoff: schemas.Duration(time.Millisecond),
		MaxBackoff: schemas.Duration(5 * time.Millisecond)}
}

func newActuator(t *testing.T, cfg webhook.Config, opts ...webhook.Option) *webhook.Actuator {
	t.Helper()
	a, err := webhook.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestConformance(t *testing.T) {
	actuatortest.Run(t, func(t *testing.T) actuatortest.Harness {
		r, srv := newReceiver(t)
		return actuatortest.Harness{
			Actuator: newActuator(t, fast(srv.URL)),
			Effects: func(context.Context) ([]string, error) {
				r.mu.Lock()
				defer r.mu.Unlock()
				return append([]string(nil), r.ids...), nil
			},
			// A lost response makes the sender post again; receivers dedupe by Idempotency-Key.
			AtLeastOnce: true,
		}
	})
}

func TestStatusClasses(t *testing.T) {
	tests := []struct {
		name          string
		script        []int
		wantErr       bool
		wantPermanent bool
		wantCalls     int
	}{
		{"ok", []int{200}, false, false, 1},
		{"accepted", []int{202}, false, false, 1},
		{"503 twice then ok", []int{503, 503, 200}, false, false, 3},
		{"429 then ok", []int{429, 204}, false, false, 2},
		{"408 then ok", []int{408, 200}, false, false, 2},
		{"400 is permanent", []int{400}, true, true, 1},
		{"404 is permanent", []int{404, 200}, true, true, 1},
		{"422 after a 500 is permanent", []int{500, 422}, true, true, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, srv := newReceiver(t, tt.script...)
			err := newActuator(t, fast(srv.URL)).Actuate(context.Background(), actuatortest.Command(t, 1))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && actuate.IsPermanent(err) != tt.wantPermanent {
				t.Errorf("IsPermanent(%v) = %v, want %v", err, actuate.IsPermanent(err), tt.wantPermanent)
			}
			if err != nil && !errors.Is(err, webhook.ErrStatus) {
				t.Errorf("err %v does not match ErrStatus", err)
			}
			if got := r.count(); got != tt.wantCalls {
				t.Errorf("%d requests, want %d", got, tt.wantCalls)
			}
		})
	}
}

func TestKeepsFailingGivesUpRetryable(t *testing.T) {
	r, srv := newReceiver(t, 500, 500, 500, 500, 500, 500, 500, 500, 500, 500, 500, 500, 500, 500, 500, 500, 500, 500, 500, 500)
	cfg := fast(srv.URL)
	cfg.MaxElapsed = schemas.Duration(50 * time.Millisecond)
	cfg.InitialBackoff, cfg.MaxBackoff = schemas.Duration(10*time.Millisecond), schemas.Duration(10*time.Millisecond)
	err := newActuator(t, cfg).Actuate(context.Background(), actuatortest.Command(t, 1))
	if err == nil || actuate.IsPermanent(err) || !errors.Is(err, webhook.ErrStatus) {
		t.Fatalf("err = %v, want a retryable ErrStatus", err)
	}
	if n := r.count(); n < 2 || n > 10 {
		t.Errorf("%d requests in a 50ms budget with 5-10ms waits, want a few", n)
	}
}

func TestNetworkErrorIsRetryable(t *testing.T) {
	_, srv := newReceiver(t)
	url := srv.URL
	srv.Close()
	cfg := fast(url)
	cfg.MaxElapsed = schemas.Duration(20 * time.Millisecond)
	err := newActuator(t, cfg).Actuate(context.Background(), actuatortest.Command(t, 1))
	if err == nil || actuate.IsPermanent(err) {
		t.Fatalf("err = %v, want retryable", err)
	}
}

func TestAttemptTimeoutIsRetryable(t *testing.T) {
	r, srv := newReceiver(t)
	r.hang = make(chan struct{})
	t.Cleanup(func() { close(r.hang) })
	cfg := fast(srv.URL)
	cfg.Timeout = schemas.Duration(20 * time.Millisecond)
	cfg.MaxElapsed = schemas.Duration(30 * time.Millisecond)
	err := newActuator(t, cfg).Actuate(context.Background(), actuatortest.Command(t, 1))
	if err == nil || actuate.IsPermanent(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a retryable deadline", err)
	}
}

func TestBodyIsStructuredCloudEvent(t *testing.T) {
	r, srv := newReceiver(t)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	cmd := actuatortest.Command(t, 3)
	cmd.ExpiresAt = &exp
	if err := newActuator(t, fast(srv.URL), webhook.WithSource("scalpel://prod-eu")).Actuate(context.Background(), cmd); err != nil {
		t.Fatal(err)
	}
	want := webhook.Event{SpecVersion: "1.0", ID: cmd.ID, Source: "scalpel://prod-eu", Type: schemas.RollbackCommandType,
		Subject: "checkout/tax-calc/block-3", Time: cmd.IssuedAt, DataContentType: "application/json", Data: cmd}
	if len(r.events) != 1 || !reflect.DeepEqual(r.events[0], want) {
		t.Fatalf("received %+v\nwant %+v", r.events, want)
	}
}

func TestSignature(t *testing.T) {
	body := []byte(`{"id":"x"}`)
	sig := webhook.Sign([]byte("k"), body)
	// echo -n '{"id":"x"}' | openssl dgst -sha256 -hmac k
	if want := "sha256=696b5110678d1f332918da752fc2089d305cf4caf658eb24939d7e1f0b0a7934"; sig != want {
		t.Errorf("Sign = %q, want %q", sig, want)
	}
	if !webhook.Verify([]byte("k"), body, sig) {
		t.Error("Verify rejects its own signature")
	}
	if webhook.Verify([]byte("other"), body, sig) || webhook.Verify([]byte("k"), []byte(`{"id":"y"}`), sig) {
		t.Error("Verify accepts a wrong key or body")
	}
}

func TestSecretEnv(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		got.Store(webhook.Verify([]byte("from-env"), body, req.Header.Get(webhook.HeaderSignature)))
	}))
	t.Cleanup(srv.Close)
	t.Setenv("SCALPEL_TEST_WEBHOOK_SECRET", "from-env")
	cfg := fast(srv.URL)
	cfg.Secret, cfg.SecretEnv = "", "SCALPEL_TEST_WEBHOOK_SECRET"
	if err := newActuator(t, cfg).Actuate(context.Background(), actuatortest.Command(t, 1)); err != nil {
		t.Fatal(err)
	}
	if ok, _ := got.Load().(bool); !ok {
		t.Error("request not signed with the secret from the environment")
	}
}

func TestConfigValidate(t *testing.T) {
	good := fast("https://deployer.example/hook")
	tests := []struct {
		name    string
		edit    func(c *webhook.Config)
		wantErr bool
	}{
		{"good", func(*webhook.Config) {}, false},
		{"no url", func(c *webhook.Config) { c.URL = "" }, true},
		{"relative url", func(c *webhook.Config) { c.URL = "/hook" }, true},
		{"ftp url", func(c *webhook.Config) { c.URL = "ftp://x/hook" }, true},
		{"no secret", func(c *webhook.Config) { c.Secret = "" }, true},
		{"secret env only", func(c *webhook.Config) { c.Secret, c.SecretEnv = "", "X" }, false},
		{"zero timeout", func(c *webhook.Config) { c.Timeout = 0 }, true},
		{"backoff inverted", func(c *webhook.Config) { c.InitialBackoff = c.MaxBackoff + 1 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			if err := c.Validate(); (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tt.wantErr)
			}
		})
	}
	if _, err := webhook.New(webhook.Config{URL: "https://x/h", SecretEnv: "SCALPEL_TEST_UNSET_VAR"}); err == nil {
		t.Error("New accepted a secret_env naming an unset variable")
	}
	inh := webhook.Config{URL: "https://svc/h"}.Inherit(good)
	if inh.URL != "https://svc/h" || inh.Secret != secret || inh.Timeout != good.Timeout {
		t.Errorf("Inherit = %+v", inh)
	}
}
