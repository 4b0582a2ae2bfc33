package config

import (
	"strings"
	"testing"
	"time"
)

func TestActuateSection(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string // substring; "" for valid
	}{
		{"defaults", ``, ""},
		{"webhook per service", `
actuate:
  services: {checkout: [nats, webhook]}
  webhook:
    default: {secret_env: SCALPEL_WEBHOOK_SECRET, timeout: 2s}
    services: {checkout: {url: "https://deployer.internal/rollback"}}
`, ""},
		{"exec default", `
actuate:
  default: [exec, log]
  exec:
    default: {argv: [kubectl, rollout, undo], timeout: 90s, permanent_exit_codes: [2, 3]}
`, ""},
		{"unknown actuator", `
actuate: {default: [carrier-pigeon]}
`, `unknown actuator "carrier-pigeon"`},
		{"webhook without url", `
actuate:
  services: {checkout: [webhook]}
`, "uses webhook"},
		{"webhook without secret", `
actuate:
  webhook: {services: {checkout: {url: "https://x/hook"}}}
`, "secret"},
		{"exec default without argv", `
actuate: {default: [exec]}
`, "actuate.exec.default: argv"},
		{"bad handoff", `
actuate: {handoff: {max_retries: -1}}
`, "actuate.handoff: max_retries"},
		{"unknown field", `
actuate: {webhook: {default: {uri: "https://x"}}}
`, "uri"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse error %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestActuateInheritance(t *testing.T) {
	cfg, err := Parse([]byte(`
actuate:
  webhook:
    default: {url: "https://default/hook", secret: s, timeout: 3s}
    services: {checkout: {url: "https://checkout/hook"}}
  exec:
    default: {argv: [deploy.sh], timeout: 30s}
    services: {pricing: {argv: [pricing-undo.sh]}}
`))
	if err != nil {
		t.Fatal(err)
	}
	w := cfg.Actuate.Webhook.For("checkout")
	if w.URL != "https://checkout/hook" || w.Secret != "s" || time.Duration(w.Timeout) != 3*time.Second || w.MaxElapsed == 0 {
		t.Errorf("webhook for checkout = %+v", w)
	}
	if got := cfg.Actuate.Webhook.For("cart").URL; got != "https://default/hook" {
		t.Errorf("webhook for cart = %s", got)
	}
	e := cfg.Actuate.Exec.For("pricing")
	if e.Argv[0] != "pricing-undo.sh" || time.Duration(e.Timeout) != 30*time.Second || len(e.PermanentExitCodes) != 1 {
		t.Errorf("exec for pricing = %+v", e)
	}
}
