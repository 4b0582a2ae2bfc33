package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestDefaultIsValid(t *testing.T) {
	cfg := Default()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.Listen != "127.0.0.1:4222" || cfg.HTTP.Listen != "127.0.0.1:8080" || cfg.NATS.DataDir != "./data" {
		t.Fatalf("unexpected defaults: %+v %+v", cfg.NATS, cfg.HTTP)
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		wantErr []string // substrings the error must contain
	}{
		{name: "good", file: "good.yaml"},
		{name: "unknown field", file: "bad_unknown_field.yaml", wantErr: []string{"lisen"}},
		{name: "bad values", file: "bad_values.yaml", wantErr: []string{"nats.listen", "subject_prefix", "http.listen", "carrier-pigeon", "log_level"}},
		{name: "missing file", file: "nope.yaml", wantErr: []string{"read config"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(filepath.Join("testdata", tt.file))
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("loaded %+v, want an error", cfg)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestGoodOverridesDefaults(t *testing.T) {
	cfg, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.SubjectPrefix != "acme" || cfg.Subjects().Telemetry("a", "b") != "acme.telemetry.a.b" {
		t.Fatalf("prefix not applied: %q", cfg.Subjects().Telemetry("a", "b"))
	}
	if time.Duration(cfg.Actuate.CommandTTL) != 5*time.Minute {
		t.Fatalf("command_ttl = %v", time.Duration(cfg.Actuate.CommandTTL))
	}
	if got := cfg.ActuatorsFor("checkout"); len(got) != 2 {
		t.Fatalf("ActuatorsFor(checkout) = %v", got)
	}
	// Sections the file does not mention keep their defaults.
	if !reflect.DeepEqual(cfg.Detect, Default().Detect) {
		t.Fatal("detect section changed although the file does not mention it")
	}
}

// TestPrintedDefaultsRoundTrip: what `serve --print-config` prints loads back to the same config.
func TestPrintedDefaultsRoundTrip(t *testing.T) {
	b, err := yaml.Marshal(Default())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(b)
	if err != nil {
		t.Fatalf("printed defaults do not parse: %v\n%s", err, b)
	}
	b2, _ := yaml.Marshal(cfg)
	if string(b) != string(b2) {
		t.Fatalf("round trip changed the config:\n%s\n---\n%s", b, b2)
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	path := filepath.Join("..", "..", "deployments", "scalpel.example.yaml")
	if _, err := os.Stat(path); err != nil {
		t.Skip("no example config")
	}
	if _, err := Load(path); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"good.yaml", "bad_unknown_field.yaml", "bad_values.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("{}"))
	f.Add([]byte("nats: [1, 2"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := Parse(b)
		if err == nil {
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("Parse accepted a config that does not validate: %v", verr)
			}
		}
	})
}

func TestDetectCheckpoint(t *testing.T) {
	type want struct {
		every, history time.Duration
		keep           int
	}
	tests := []struct {
		name    string
		yaml    string
		want    want
		wantErr string
	}{
		{name: "default", yaml: "", want: want{time.Minute, time.Hour, 24}},
		{name: "set", yaml: "detect_checkpoint: 30s", want: want{30 * time.Second, time.Hour, 24}},
		{name: "disabled", yaml: "detect_checkpoint: 0s", want: want{0, time.Hour, 24}},
		{name: "negative", yaml: "detect_checkpoint: -1s", wantErr: "detect_checkpoint"},
		{name: "not a duration", yaml: "detect_checkpoint: often", wantErr: "often"},
		{name: "history set", yaml: "detect_checkpoint_history: 15m\ndetect_checkpoint_keep: 96", want: want{time.Minute, 15 * time.Minute, 96}},
		{name: "no history", yaml: "detect_checkpoint_history: 0s\ndetect_checkpoint_keep: 0", want: want{time.Minute, 0, 0}},
		{name: "negative history", yaml: "detect_checkpoint_history: -1h", wantErr: "detect_checkpoint_history"},
		{name: "history below a second", yaml: "detect_checkpoint_history: 500ms", wantErr: "at least 1s"},
		{name: "history kept nowhere", yaml: "detect_checkpoint_keep: 0", wantErr: "detect_checkpoint_keep"},
		{name: "negative keep", yaml: "detect_checkpoint_history: 0s\ndetect_checkpoint_keep: -1", wantErr: "detect_checkpoint_keep"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) = %v, want an error mentioning %q", tt.yaml, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := want{time.Duration(cfg.DetectCheckpoint), time.Duration(cfg.DetectCheckpointHistory), cfg.DetectCheckpointKeep}
			if got != tt.want {
				t.Fatalf("checkpoint settings %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestDetectServices: detect.services sets parameters for the services it names, reads them in
// the config's own units, names the service whose entry is out of range, and refuses a field
// it does not know, as every other section does.
func TestDetectServices(t *testing.T) {
	cfg, err := Parse([]byte(`
detect:
  latency_warmup: 0s
  services:
    checkout: {latency_warmup: 45s, latency_excursion_max: 1m}
    search: {invalid_input_triggers: true, throughput_min_drop: 0.8}
`))
	if err != nil {
		t.Fatal(err)
	}
	co, se := cfg.Detect.For("checkout"), cfg.Detect.For("search")
	if time.Duration(co.LatencyWarmup) != 45*time.Second || time.Duration(co.LatencyExcursionMax) != time.Minute || co.InvalidInputTriggers {
		t.Errorf("checkout: warm-up %s, excursions %s, invalid input %v", time.Duration(co.LatencyWarmup), time.Duration(co.LatencyExcursionMax), co.InvalidInputTriggers)
	}
	if !se.InvalidInputTriggers || se.ThroughputMinDrop != 0.8 || se.LatencyWarmup != 0 {
		t.Errorf("search: invalid input %v, min drop %g, warm-up %s", se.InvalidInputTriggers, se.ThroughputMinDrop, time.Duration(se.LatencyWarmup))
	}
	for _, tt := range []struct{ yaml, want string }{
		{"detect: {services: {checkout: {latency_warmup: 1h}}}", "services.checkout: latency_warmup must be in [0, 10m0s]"},
		{"detect: {services: {checkout: {latency_warmpu: 30s}}}", "latency_warmpu"},
		{"detect: {services: {check.out: {}}}", `"check.out" is not a service name`},
	} {
		if _, err := Parse([]byte(tt.yaml)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one saying %q", tt.yaml, err, tt.want)
		}
	}
}
