package schemas_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

func TestParseManifestDesign(t *testing.T) {
	for _, f := range []string{"design.yaml", "design.json"} {
		t.Run(f, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("examples", "manifest", "valid", f))
			if err != nil {
				t.Fatal(err)
			}
			m, err := schemas.ParseManifest(b)
			if err != nil {
				t.Fatal(err)
			}
			if m.Service != "checkout" || time.Duration(m.RollbackWindow) != 15*time.Minute {
				t.Fatalf("got %+v", m)
			}
			c, ok := m.Component("tax-calc")
			if !ok {
				t.Fatal("tax-calc missing")
			}
			if c.Kind != "function" || c.Granularity != "fine" || len(c.DependsOn) != 1 ||
				c.DependsOn[0].OnRollback != "cascade" || *c.Thresholds.ErrorRate != 0.02 || *c.Thresholds.LatencyIncrease != 0.25 {
				t.Fatalf("got %+v", c)
			}
			if b, ok := c.BlockAt("tax/calc.go", 57); !ok || b != "rate-lookup" {
				t.Fatalf("BlockAt = %q, %v", b, ok)
			}
			if _, ok := m.Component("nope"); ok {
				t.Fatal("found a component that does not exist")
			}
		})
	}
}

func TestParseManifestDefaults(t *testing.T) {
	m, err := schemas.ParseManifest([]byte("service: s\ncomponents:\n  - component: c\n    depends_on: [{service: t, component: d}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := m.Components[0]
	if c.Kind != schemas.DefaultKind || c.Granularity != schemas.DefaultGranularity || c.DependsOn[0].OnRollback != schemas.DefaultOnRollback {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if m.RollbackWindow != 0 {
		t.Fatalf("rollback_window = %v, want 0", m.RollbackWindow)
	}
}

func TestParseManifests(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     []string // services
		wantErr  error
		wantText string
	}{
		{name: "one yaml", in: "service: a\ncomponents: [{component: x}]\n", want: []string{"a"}},
		{name: "multi yaml with empty docs", in: "---\n# first\n---\nservice: a\ncomponents: [{component: x}]\n---\nservice: b\ncomponents: [{component: y}]\n---\n",
			want: []string{"a", "b"}},
		{name: "json object", in: ` {"service":"a","components":[{"component":"x"}]}`, want: []string{"a"}},
		{name: "json array", in: `[{"service":"a","components":[{"component":"x"}]},{"service":"b","components":[{"component":"x"}]}]`, want: []string{"a", "b"}},
		{name: "BOM", in: "\xef\xbb\xbfservice: a\ncomponents: [{component: x}]\n", want: []string{"a"}},
		{name: "empty", in: "", wantErr: schemas.ErrMalformed, wantText: "no manifest"},
		{name: "comments only", in: "# nothing\n", wantErr: schemas.ErrMalformed, wantText: "no manifest"},
		{name: "not yaml", in: "service: [a\n", wantErr: schemas.ErrMalformed},
		{name: "scalar", in: "hello\n", wantErr: schemas.ErrMalformed},
		{name: "unknown field", in: "service: a\nowner: me\ncomponents: [{component: x}]\n", wantErr: schemas.ErrMalformed, wantText: "owner"},
		{name: "json unknown field", in: `{"service":"a","owner":"me","components":[{"component":"x"}]}`, wantErr: schemas.ErrMalformed, wantText: "owner"},
		{name: "json trailing data", in: `{"service":"a","components":[{"component":"x"}]} {}`, wantErr: schemas.ErrMalformed, wantText: "after"},
		{name: "json null element", in: `[null]`, wantErr: schemas.ErrMalformed, wantText: "null"},
		{name: "duplicate yaml key", in: "service: a\nservice: b\ncomponents: [{component: x}]\n", wantErr: schemas.ErrMalformed},
		{name: "bad duration", in: "service: a\nrollback_window: soon\ncomponents: [{component: x}]\n", wantErr: schemas.ErrMalformed, wantText: "soon"},
		{name: "NaN threshold", in: "service: a\ncomponents: [{component: x, thresholds: {error_rate: .nan}}]\n", wantErr: schemas.ErrInvalid,
			wantText: "components[0].thresholds.error_rate: must be in [0, 1], got NaN"},
		{name: "Inf latency_increase", in: "service: a\ncomponents: [{component: x, thresholds: {latency_increase: .inf}}]\n", wantErr: schemas.ErrInvalid,
			wantText: "latency_increase"},
		{name: "start after end", in: "service: a\ncomponents: [{component: x}, {component: y}, {component: z, blocks: [{block: b, file: f.go, lines: \"88-40\"}]}]\n",
			wantErr: schemas.ErrInvalid, wantText: `components[2].blocks[0].lines: "88-40": start after end`},
		{name: "second doc invalid", in: "service: a\ncomponents: [{component: x}]\n---\nservice: b\ncomponents: [{component: x, kind: job}]\n",
			wantErr: schemas.ErrInvalid, wantText: `document 2: components[0].kind: "job"`},
		{name: "duplicate service", in: "service: a\ncomponents: [{component: x}]\n---\nservice: a\ncomponents: [{component: y}]\n",
			wantErr: schemas.ErrInvalid, wantText: "also defined by document 1"},
		{name: "too large", in: "service: a\n# " + strings.Repeat("x", schemas.MaxManifestSize) + "\n", wantErr: schemas.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := schemas.ParseManifests([]byte(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantText) {
					t.Fatalf("%q does not contain %q", err, tt.wantText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range ms {
				got = append(got, m.Service)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("services %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseManifestWantsOne(t *testing.T) {
	_, err := schemas.ParseManifest([]byte("service: a\ncomponents: [{component: x}]\n---\nservice: b\ncomponents: [{component: x}]\n"))
	if !errors.Is(err, schemas.ErrMalformed) || !strings.Contains(err.Error(), "exactly one") {
		t.Fatalf("got %v", err)
	}
}

func blocksComponent() *schemas.ManifestComponent {
	return &schemas.ManifestComponent{Component: "tax-calc", Blocks: []schemas.ManifestBlock{
		{Block: "rate-lookup", File: "tax/calc.go", Lines: "40-88"},
		{Block: "rate-cache", File: "./tax/calc.go", Lines: "52-60"},
		{Block: "rounding", File: "tax/round.go", Lines: "1-30"},
		{Block: "unmapped"},
	}}
}

func TestBlockAt(t *testing.T) {
	c := blocksComponent()
	tests := []struct {
		file      string
		line      int
		want      string
		wantFound bool
	}{
		{"tax/calc.go", 40, "rate-lookup", true},
		{"tax/calc.go", 88, "rate-lookup", true},
		{"tax/calc.go", 55, "rate-cache", true}, // nested: narrowest wins
		{"tax/calc.go", 89, "", false},
		{"tax/calc.go", 39, "", false},
		{"/src/checkout/tax/calc.go", 41, "rate-lookup", true},
		{"/src/checkout/xtax/calc.go", 41, "", false}, // suffix must start at a path segment
		{"calc.go", 41, "", false},
		{"tax/round.go", 1, "rounding", true},
		{"", 1, "", false},
	}
	for _, tt := range tests {
		got, ok := c.BlockAt(tt.file, tt.line)
		if got != tt.want || ok != tt.wantFound {
			t.Errorf("BlockAt(%q, %d) = %q, %v; want %q, %v", tt.file, tt.line, got, ok, tt.want, tt.wantFound)
		}
	}
}

func TestBlockForSite(t *testing.T) {
	c := blocksComponent()
	tests := []struct {
		site      string
		want      string
		wantFound bool
	}{
		{"tax/calc.go:57", "rate-cache", true},
		{"tax/calc.go:61", "rate-lookup", true},
		{"/src/checkout/tax/calc.go:61 +0x1d\n/src/checkout/tax/handler.go:120 +0x88", "rate-lookup", true},
		{"main.handler(...)\n\t/src/vendor/lib.go:10 +0x1\n\t/src/tax/round.go:12 +0x2", "rounding", true}, // innermost mapped frame wins
		{"lib.go:10;tax/round.go:3", "rounding", true},
		{"webpack:///tax/calc.go:45:17", "rate-lookup", true},
		{"tax/calc.go", "", false},
		{"tax/calc.go:abc", "", false},
		{"", "", false},
		{";;\n", "", false},
	}
	for _, tt := range tests {
		got, ok := c.BlockForSite(tt.site)
		if got != tt.want || ok != tt.wantFound {
			t.Errorf("BlockForSite(%q) = %q, %v; want %q, %v", tt.site, got, ok, tt.want, tt.wantFound)
		}
	}
}

func TestParseSiteFrame(t *testing.T) {
	tests := []struct {
		frame  string
		file   string
		line   int
		wantOK bool
	}{
		{"tax/calc.go:57", "tax/calc.go", 57, true},
		{"  /a/b.go:7 +0x1d ", "/a/b.go", 7, true},
		{`C:\src\a.go:12`, `C:\src\a.go`, 12, true},
		{"a.js:10:5", "a.js", 10, true},
		{"a.go:0", "", 0, false},
		{"a.go:", "", 0, false},
		{":12", "", 0, false},
		{"a.go:1234567890", "", 0, false},
		{"no location", "", 0, false},
	}
	for _, tt := range tests {
		file, line, ok := schemas.ParseSiteFrame(tt.frame)
		if file != tt.file || line != tt.line || ok != tt.wantOK {
			t.Errorf("ParseSiteFrame(%q) = %q, %d, %v; want %q, %d, %v", tt.frame, file, line, ok, tt.file, tt.line, tt.wantOK)
		}
	}
}

func FuzzParseManifest(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("examples", "manifest", "*", "*"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Add([]byte("service: a\ncomponents: [{component: x, blocks: [{block: b, file: f, lines: \"999999999-1\"}]}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := schemas.ParseManifests(b)
		if err != nil {
			if !errors.Is(err, schemas.ErrMalformed) && !errors.Is(err, schemas.ErrInvalid) && !errors.Is(err, schemas.ErrTooLarge) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		for _, m := range ms {
			// Whatever parses is valid with its defaults applied, and every accessor copes with it.
			if err := m.Validate(); err != nil {
				t.Fatalf("parsed manifest fails Validate: %v", err)
			}
			for i := range m.Components {
				c := &m.Components[i]
				c.BlockAt("f", 1)
				c.BlockForSite(string(b))
			}
		}
	})
}

func TestSchemaFiles(t *testing.T) {
	want := []string{"anomaly", "approval", "decision", "deploy_event", "manifest", "rollback_ack", "rollback_command", "telemetry_event"}
	if got := strings.Join(schemas.Names(), ","); got != strings.Join(want, ",") {
		t.Fatalf("Names() = %s", got)
	}
	for _, n := range []string{"telemetry_event", "manifest.json"} {
		b, err := schemas.Schema(n)
		if err != nil || !strings.Contains(string(b), schemas.SchemaBaseURL+strings.TrimSuffix(n, ".json")+".json") {
			t.Fatalf("Schema(%q): %v", n, err)
		}
	}
	for _, n := range []string{"", "nope", "../types.go", "examples/x"} {
		if _, err := schemas.Schema(n); !errors.Is(err, schemas.ErrUnknownSchema) {
			t.Fatalf("Schema(%q): got %v, want ErrUnknownSchema", n, err)
		}
	}
}
