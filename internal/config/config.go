// Package config loads scalpel's configuration file: one struct with a section per stage, defaults
// for everything, strict loading (unknown fields are errors) and Validate. `scalpel serve
// --check-config` runs exactly this and exits.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"gopkg.in/yaml.v3"

	"github.com/scalpel-dev/scalpel/actuate/exec"
	"github.com/scalpel-dev/scalpel/actuate/handoff"
	"github.com/scalpel-dev/scalpel/actuate/webhook"
	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/schemas"
)

// Config is the whole of scalpel's configuration. Its zero value is not useful: start from Default.
type Config struct {
	NATS     NATS                  `yaml:"nats" json:"nats"`
	HTTP     HTTP                  `yaml:"http" json:"http"`
	Topology ingest.TopologyConfig `yaml:"topology" json:"topology"`
	Ingest   ingest.Config         `yaml:"ingest" json:"ingest"`
	Detect   detect.Config         `yaml:"detect" json:"detect"`
	Decide   decide.Config         `yaml:"decide" json:"decide"`
	Actuate  Actuate               `yaml:"actuate" json:"actuate"`
	// DetectCheckpoint is how often (wall clock) serve writes the detector's whole state to the
	// object "detect" of the scalpel_state object store, with the telemetry stream sequence it
	// reached. On start the detector is restored from it and only the telemetry acknowledged after
	// it is run through again, so state older than any replay window survives a restart: a sparse
	// series' history, a series' own long-run profile, throughput averages. A checkpoint is also
	// written when serve stops cleanly. Each one copies the state under the detector's lock (the
	// write itself is off the hot path), so a very short interval costs throughput. Default 1m;
	// 0 disables checkpoints, written and read, and every start uses detect_restore.
	DetectCheckpoint schemas.Duration `yaml:"detect_checkpoint" json:"detect_checkpoint"`
	// DetectCheckpointHistory is how far apart, in event time, serve keeps dated copies of the
	// checkpoint ("detect@<watermark>" next to "detect") for `scalpel replay`: a replay of an older
	// range starts from the newest dated checkpoint before --since, so it reproduces what no
	// warm-up can (a series' own long-run profile, a line's throughput average) and reads no
	// warm-up. Each copy is as large as the checkpoint (about 4 KB per series). Default 1h; 0
	// keeps none.
	DetectCheckpointHistory schemas.Duration `yaml:"detect_checkpoint_history" json:"detect_checkpoint_history"`
	// DetectCheckpointKeep is how many dated checkpoints serve keeps; the oldest go first. Keep
	// them within the telemetry stream's retention (topology.telemetry_max_age): a replay can only
	// start from one whose later telemetry the stream still holds. Default 24.
	DetectCheckpointKeep int `yaml:"detect_checkpoint_keep" json:"detect_checkpoint_keep"`
	// DetectRestore is the fallback when there is no usable checkpoint (none yet, checkpoints
	// disabled, or one taken under another detect config or build): how much event time of
	// already-acknowledged telemetry is run back through the detector when serve starts, so that a
	// restart or a crash keeps its recent state (open buckets, frozen baselines, running tests). It
	// should cover detect.history_epoch twice. Default 10m; 0 starts the detector empty.
	DetectRestore schemas.Duration `yaml:"detect_restore" json:"detect_restore"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level" json:"log_level"`
	// Role is what the process takes on among the serve processes sharing a server: "all"
	// (ingest and detect, and decide when it holds the decide lease), "detect" (ingest and
	// detect, never decide: the partition workers of a deployment that keeps deciding to
	// processes of its own) or "decide" (decide when it holds the lease, on the event time the
	// consumers share in scalpel_state, and consume no telemetry). Every process carries out
	// commands. Default all.
	Role string `yaml:"role" json:"role"`
}

// Values of Config.Role.
const (
	RoleAll    = "all"
	RoleDetect = "detect"
	RoleDecide = "decide"
)

// Decides reports whether the process may take the decide lease (Role).
func (c *Config) Decides() bool { return c.Role != RoleDetect }

// Ingests reports whether the process consumes telemetry and detects (Role).
func (c *Config) Ingests() bool { return c.Role != RoleDecide }

// NATS says which server to use: an embedded one (URL empty) or an existing one.
type NATS struct {
	// URL of an existing NATS server or cluster. Empty (the default) embeds a server.
	URL string `yaml:"url" json:"url"`
	// Creds is a NATS credentials file for URL.
	Creds string `yaml:"creds" json:"creds"`
	// Listen is the embedded server's client address. Default 127.0.0.1:4222.
	Listen string `yaml:"listen" json:"listen"`
	// DataDir holds the embedded server's JetStream store. Default ./data.
	DataDir string `yaml:"data_dir" json:"data_dir"`
	// SubjectPrefix is prepended to every subject ("acme" → acme.telemetry.<svc>.<comp>). Default none.
	SubjectPrefix string `yaml:"subject_prefix" json:"subject_prefix"`
}

// HTTP configures the health, readiness and metrics endpoints and the JSON API.
type HTTP struct {
	// Listen address of /healthz, /readyz, /metrics and /api/v1/. Default 127.0.0.1:8080; empty
	// string disables.
	Listen string `yaml:"listen" json:"listen"`
	// WebConfigFile turns on TLS and basic authentication for every endpoint, with the web
	// configuration file Prometheus and its exporters read (github.com/prometheus/exporter-toolkit:
	// tls_server_config, basic_auth_users with bcrypt hashes, http_server_config). Certificates
	// and users are read again on each connection, so they change without a restart. Default
	// none: plain HTTP, no authentication.
	WebConfigFile string `yaml:"web_config_file" json:"web_config_file"`
}

// Actuate chooses which actuators carry a decision's commands, and how the hand-off retries.
type Actuate struct {
	// Default actuators for services without an entry in Services (or an `actuators` list in their
	// manifest, which wins over both). Known: nats, log, webhook, exec. Default [nats, log].
	Default []string `yaml:"default" json:"default"`
	// Services maps a service to its actuators, overriding Default.
	Services map[string][]string `yaml:"services" json:"services"`
	// CommandTTL is how long a command stays valid for a deployer (expires_at = issued_at + TTL).
	// Default 10m; 0 means commands never expire.
	CommandTTL schemas.Duration `yaml:"command_ttl" json:"command_ttl"`
	// HandOff is the decision → actuator hand-off: retries with backoff of a failing decision
	// before it goes to rejected.actuate, and the de-duplication window of decision ids.
	HandOff handoff.Config `yaml:"handoff" json:"handoff"`
	// Webhook configures the webhook actuator: where each service's commands are POSTed.
	Webhook WebhookActuators `yaml:"webhook" json:"webhook"`
	// Exec configures the exec actuator: which program carries out each service's commands.
	Exec ExecActuators `yaml:"exec" json:"exec"`
}

// WebhookActuators holds the webhook settings of every service. A service's entry inherits each
// field it leaves unset from Default, so a shared secret and timeouts are written once.
type WebhookActuators struct {
	// Default applies to services without an entry in Services (and fills their unset fields).
	Default webhook.Config `yaml:"default" json:"default"`
	// Services maps a service to its webhook settings (typically just its url).
	Services map[string]webhook.Config `yaml:"services" json:"services"`
}

// For returns the webhook settings of service.
func (w WebhookActuators) For(service string) webhook.Config {
	if c, ok := w.Services[service]; ok {
		return c.Inherit(w.Default).Inherit(webhook.DefaultConfig())
	}
	return w.Default.Inherit(webhook.DefaultConfig())
}

// ExecActuators holds the exec settings of every service, inheriting as WebhookActuators does.
type ExecActuators struct {
	// Default applies to services without an entry in Services (and fills their unset fields).
	Default exec.Config `yaml:"default" json:"default"`
	// Services maps a service to its exec settings (typically just its argv).
	Services map[string]exec.Config `yaml:"services" json:"services"`
}

// For returns the exec settings of service.
func (e ExecActuators) For(service string) exec.Config {
	if c, ok := e.Services[service]; ok {
		return c.Inherit(e.Default).Inherit(exec.DefaultConfig())
	}
	return e.Default.Inherit(exec.DefaultConfig())
}

// KnownActuators lists the actuator names the configuration accepts. (The watermill actuator
// needs a Publisher built in code, so it is wired by programs embedding scalpel, not by name.)
var KnownActuators = []string{"nats", "log", "webhook", "exec"}

// Default returns the configuration `scalpel serve` runs with when given no file.
func Default() Config {
	return Config{
		NATS:     NATS{Listen: "127.0.0.1:4222", DataDir: "./data"},
		HTTP:     HTTP{Listen: "127.0.0.1:8080"},
		Topology: ingest.DefaultTopologyConfig(),
		Ingest:   ingest.DefaultConfig(),
		Detect:   detect.DefaultConfig(),
		Decide:   decide.DefaultConfig(),
		Actuate: Actuate{
			Default:    []string{"nats", "log"},
			CommandTTL: schemas.Duration(10 * time.Minute),
			HandOff:    handoff.DefaultConfig(),
		},
		DetectCheckpoint:        schemas.Duration(time.Minute),
		DetectCheckpointHistory: schemas.Duration(time.Hour),
		DetectCheckpointKeep:    24,
		DetectRestore:           schemas.Duration(10 * time.Minute),
		LogLevel:                "info",
		Role:                    RoleAll,
	}
}

// Subjects returns the subject builder for the configured prefix.
func (c *Config) Subjects() schemas.Subjects { return schemas.Subjects{Prefix: c.NATS.SubjectPrefix} }

// ActuatorsFor returns the actuator names configured for a service.
func (c *Config) ActuatorsFor(service string) []string {
	if a, ok := c.Actuate.Services[service]; ok {
		return a
	}
	return c.Actuate.Default
}

// Validate checks every section and returns all problems found, joined.
func (c *Config) Validate() error {
	var errs []error
	if c.NATS.URL == "" {
		if _, _, err := net.SplitHostPort(c.NATS.Listen); err != nil {
			errs = append(errs, fmt.Errorf("nats.listen %q: want HOST:PORT", c.NATS.Listen))
		}
		if c.NATS.DataDir == "" {
			errs = append(errs, errors.New("nats.data_dir: required when nats.url is empty (embedded server)"))
		}
	}
	if c.HTTP.Listen != "" {
		if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			errs = append(errs, fmt.Errorf("http.listen %q: want HOST:PORT", c.HTTP.Listen))
		}
		if f := c.HTTP.WebConfigFile; f != "" {
			if err := web.Validate(f); err != nil {
				errs = append(errs, fmt.Errorf("http.web_config_file %q: %w (the format: https://prometheus.io/docs/prometheus/latest/configuration/https/)", f, err))
			}
		}
	}
	if p := c.NATS.SubjectPrefix; p != "" {
		if err := validPrefix(p); err != nil {
			errs = append(errs, fmt.Errorf("nats.subject_prefix %q: %w", p, err))
		}
	}
	if err := c.Topology.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("topology: %w", err))
	}
	if err := c.Ingest.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("ingest: %w", err))
	} else if err := c.Ingest.CheckFilter(c.Subjects()); err != nil {
		errs = append(errs, fmt.Errorf("ingest: %w", err))
	}
	if err := c.Detect.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("detect: %w", err))
	}
	if err := c.Decide.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("decide: %w", err))
	}
	errs = append(errs, c.Actuate.validate()...)
	if c.DetectCheckpoint < 0 {
		errs = append(errs, errors.New("detect_checkpoint: must be >= 0 (0 disables checkpoints)"))
	}
	if c.DetectCheckpointHistory < 0 || (c.DetectCheckpointHistory > 0 && c.DetectCheckpointHistory < schemas.Duration(time.Second)) {
		errs = append(errs, errors.New("detect_checkpoint_history: must be 0 (keep no dated checkpoints) or at least 1s, the precision of their names"))
	}
	if c.DetectCheckpointKeep < 0 || (c.DetectCheckpointHistory > 0 && c.DetectCheckpointKeep == 0) {
		errs = append(errs, errors.New("detect_checkpoint_keep: must be >= 1 while detect_checkpoint_history is set (set that to 0 to keep none)"))
	}
	if c.DetectRestore < 0 {
		errs = append(errs, errors.New("detect_restore: must be >= 0 (0 starts the detector empty)"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel))
	}
	switch c.Role {
	case RoleDecide:
		if c.Ingest.Partition != nil {
			errs = append(errs, fmt.Errorf("role decide consumes no telemetry, so it takes no partition (ingest.partition %d, --partition)", *c.Ingest.Partition))
		}
	case RoleAll, RoleDetect:
	default:
		errs = append(errs, fmt.Errorf("role %q: want %s (ingest, detect, and decide when this process holds the lease), %s (never decide) or %s (decide only)", c.Role, RoleAll, RoleDetect, RoleDecide))
	}
	return errors.Join(errs...)
}

func validPrefix(p string) error {
	if p[0] == '.' || p[len(p)-1] == '.' {
		return errors.New("must not start or end with a dot")
	}
	for _, r := range p {
		switch {
		case r == '*' || r == '>' || r == ' ' || r == '\t':
			return fmt.Errorf("must not contain %q", r)
		}
	}
	return nil
}

// Parse reads a YAML (or JSON, which is YAML) configuration over the defaults. Unknown fields are
// errors, so a typo never silently falls back to a default.
func Parse(b []byte) (Config, error) {
	cfg := Default()
	if len(bytes.TrimSpace(b)) == 0 {
		return cfg, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, fmt.Errorf("parse config: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); err == nil {
		return Config{}, errors.New("parse config: more than one YAML document; put everything in one")
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("invalid config:\n%w", err)
	}
	return cfg, nil
}

// Load reads and validates a configuration file. An empty path returns the validated defaults.
func Load(path string) (Config, error) {
	if path == "" {
		cfg := Default()
		return cfg, cfg.Validate()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}
