package schemas_test

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

func f64(v float64) *float64 { return &v }

var ts0 = time.Date(2026, 11, 26, 10, 0, 0, 123e6, time.UTC)

func goodEvent() schemas.TelemetryEvent {
	return schemas.TelemetryEvent{
		TS: ts0, Service: "checkout", Component: "tax-calc", Block: "rate-lookup", Version: "2.4.0",
		Cohort: "canary", LatencyMS: f64(12.5), Error: "timeout", Count: 1,
		Errors: map[string]int64{"timeout": 1, "exception": 0, "invalid_input": 0},
		CPU:    f64(0.31), MemMB: f64(212),
	}
}

// checkErr compares a Validate result with the wanted field ("" = valid) and reason fragment.
func checkErr(t *testing.T, err error, wantField, wantIn string) {
	t.Helper()
	if wantField == "" {
		if err != nil {
			t.Fatalf("want valid, got %v", err)
		}
		return
	}
	if !errors.Is(err, schemas.ErrInvalid) {
		t.Fatalf("want ErrInvalid on %s, got %v", wantField, err)
	}
	var ve *schemas.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want *ValidationError, got %T", err)
	}
	if ve.Field != wantField {
		t.Fatalf("field: got %q, want %q (%v)", ve.Field, wantField, err)
	}
	if !strings.Contains(err.Error(), wantIn) {
		t.Fatalf("message %q does not contain %q", err.Error(), wantIn)
	}
}

func TestTelemetryEventValidate(t *testing.T) {
	tests := []struct {
		name      string
		mod       func(e *schemas.TelemetryEvent)
		wantField string
		wantIn    string
	}{
		{name: "valid", mod: func(e *schemas.TelemetryEvent) {}},
		{name: "required only", mod: func(e *schemas.TelemetryEvent) {
			*e = schemas.TelemetryEvent{TS: ts0, Service: "s", Component: "c", Version: "v"}
		}},
		{name: "zero latency", mod: func(e *schemas.TelemetryEvent) { e.LatencyMS = f64(0) }},
		{name: "negative latency", mod: func(e *schemas.TelemetryEvent) { e.LatencyMS = f64(-3) },
			wantField: "latency_ms", wantIn: "latency_ms: must be a finite number >= 0, got -3"},
		{name: "NaN latency", mod: func(e *schemas.TelemetryEvent) { e.LatencyMS = f64(math.NaN()) },
			wantField: "latency_ms", wantIn: "got NaN"},
		{name: "+Inf latency", mod: func(e *schemas.TelemetryEvent) { e.LatencyMS = f64(math.Inf(1)) },
			wantField: "latency_ms", wantIn: "got +Inf"},
		{name: "NaN p99", mod: func(e *schemas.TelemetryEvent) { e.Latency = &schemas.LatencySummary{P99: math.NaN()} },
			wantField: "latency.p99", wantIn: "NaN"},
		{name: "zero ts", mod: func(e *schemas.TelemetryEvent) { e.TS = time.Time{} }, wantField: "ts", wantIn: "required"},
		{name: "no service", mod: func(e *schemas.TelemetryEvent) { e.Service = "" }, wantField: "service", wantIn: "required"},
		{name: "dotted service", mod: func(e *schemas.TelemetryEvent) { e.Service = "a.b" }, wantField: "service", wantIn: `"a.b"`},
		{name: "wildcard component", mod: func(e *schemas.TelemetryEvent) { e.Component = "*" }, wantField: "component", wantIn: "must match"},
		{name: "64-char component", mod: func(e *schemas.TelemetryEvent) { e.Component = strings.Repeat("c", 64) }},
		{name: "65-char component", mod: func(e *schemas.TelemetryEvent) { e.Component = strings.Repeat("c", 65) }, wantField: "component", wantIn: "must match"},
		{name: "bad block", mod: func(e *schemas.TelemetryEvent) { e.Block = "a b" }, wantField: "block", wantIn: "must match"},
		{name: "bad cohort", mod: func(e *schemas.TelemetryEvent) { e.Cohort = "canary>" }, wantField: "cohort", wantIn: "must match"},
		{name: "no version", mod: func(e *schemas.TelemetryEvent) { e.Version = "" }, wantField: "version", wantIn: "required"},
		{name: "unicode version", mod: func(e *schemas.TelemetryEvent) { e.Version = "v2 «été»" }},
		{name: "128-char version", mod: func(e *schemas.TelemetryEvent) { e.Version = strings.Repeat("é", 128) }},
		{name: "129-char version", mod: func(e *schemas.TelemetryEvent) { e.Version = strings.Repeat("v", 129) }, wantField: "version", wantIn: "1-128"},
		{name: "tab in version", mod: func(e *schemas.TelemetryEvent) { e.Version = "2.4\t0" }, wantField: "version", wantIn: "control"},
		{name: "C1 control in version", mod: func(e *schemas.TelemetryEvent) { e.Version = "2.4\u00850" }, wantField: "version", wantIn: "control"},
		{name: "invalid UTF-8 version", mod: func(e *schemas.TelemetryEvent) { e.Version = "2.4\xff" }, wantField: "version", wantIn: "control"},
		{name: "bad id", mod: func(e *schemas.TelemetryEvent) { e.ID = "a\nb" }, wantField: "id", wantIn: "control"},
		{name: "unknown category", mod: func(e *schemas.TelemetryEvent) { e.Error = "crash" }, wantField: "error", wantIn: `"crash"`},
		{name: "each category", mod: func(e *schemas.TelemetryEvent) { e.Error = "other" }},
		{name: "unknown errors key", mod: func(e *schemas.TelemetryEvent) { e.Errors = map[string]int64{"boom": 0} },
			wantField: "errors.boom", wantIn: "unknown error category"},
		{name: "negative errors value", mod: func(e *schemas.TelemetryEvent) { e.Errors = map[string]int64{"other": -1} },
			wantField: "errors.other", wantIn: "got -1"},
		{name: "errors sum over count", mod: func(e *schemas.TelemetryEvent) {
			e.Count = 3
			e.Errors = map[string]int64{"timeout": 2, "other": 2}
		}, wantField: "errors", wantIn: "sum 4 exceeds the request count 3"},
		{name: "errors sum overflow", mod: func(e *schemas.TelemetryEvent) {
			e.Count = math.MaxInt64
			e.Errors = map[string]int64{"timeout": math.MaxInt64, "other": math.MaxInt64}
		}, wantField: "errors", wantIn: "overflow"},
		{name: "errors sum equals count", mod: func(e *schemas.TelemetryEvent) {
			e.Count = 4
			e.Errors = map[string]int64{"timeout": 2, "other": 2}
		}},
		{name: "count zero means one", mod: func(e *schemas.TelemetryEvent) { e.Count = 0 }},
		{name: "negative count", mod: func(e *schemas.TelemetryEvent) { e.Count = -1 }, wantField: "count", wantIn: "got -1"},
		{name: "error_site 1024 chars", mod: func(e *schemas.TelemetryEvent) { e.ErrorSite = strings.Repeat("ü", 1024) }},
		{name: "error_site too long", mod: func(e *schemas.TelemetryEvent) { e.ErrorSite = strings.Repeat("x", 1025) },
			wantField: "error_site", wantIn: "at most 1024"},
		{name: "error_site invalid UTF-8", mod: func(e *schemas.TelemetryEvent) { e.ErrorSite = "a.go:1\xff" },
			wantField: "error_site", wantIn: "UTF-8"},
		{name: "negative cpu", mod: func(e *schemas.TelemetryEvent) { e.CPU = f64(-0.5) }, wantField: "cpu", wantIn: "got -0.5"},
		{name: "process_rps with cpu", mod: func(e *schemas.TelemetryEvent) { e.CPU, e.ProcessRPS = f64(0.3), f64(120) }},
		{name: "process_rps without cpu", mod: func(e *schemas.TelemetryEvent) { e.CPU, e.ProcessRPS = nil, f64(120) },
			wantField: "process_rps", wantIn: "without cpu"},
		{name: "NaN process_rps", mod: func(e *schemas.TelemetryEvent) { e.CPU, e.ProcessRPS = f64(0.3), f64(math.NaN()) },
			wantField: "process_rps", wantIn: "NaN"},
		{name: "negative process_rps", mod: func(e *schemas.TelemetryEvent) { e.CPU, e.ProcessRPS = f64(0.3), f64(-1) },
			wantField: "process_rps", wantIn: "got -1"},
		{name: "Inf mem", mod: func(e *schemas.TelemetryEvent) { e.MemMB = f64(math.Inf(-1)) }, wantField: "mem_mb", wantIn: "-Inf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := goodEvent()
			tt.mod(&e)
			checkErr(t, e.Validate(), tt.wantField, tt.wantIn)
		})
	}
}

func TestTelemetryValidateAllocs(t *testing.T) {
	e := goodEvent()
	e.Latency = &schemas.LatencySummary{P50: 1, P90: 2, P99: 3, Max: 4, Sum: 5}
	e.ErrorSite = "tax/calc.go:57"
	e.ID = "0b8e7c52-5b1e-4a55-8d0b-3f3f6f1f7a01"
	if n := testing.AllocsPerRun(1000, func() {
		if err := e.Validate(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Validate allocates %v times on a valid event, want 0", n)
	}
}

func BenchmarkValidateTelemetry(b *testing.B) {
	single := goodEvent()
	single.Errors = nil
	agg := goodEvent()
	agg.Count = 240
	agg.Errors = map[string]int64{"timeout": 3, "exception": 9, "invalid_input": 2, "other": 0}
	agg.Latency = &schemas.LatencySummary{P50: 11, P90: 21.5, P99: 48, Max: 97.3, Sum: 3408}
	for _, bc := range []struct {
		name string
		e    schemas.TelemetryEvent
	}{{"single", single}, {"aggregate", agg}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.e.Validate(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestDeployEventValidate(t *testing.T) {
	good := func() schemas.DeployEvent {
		return schemas.DeployEvent{ID: "d-42", TS: ts0, Service: "checkout", AppVersion: "2.4.0",
			Components: []schemas.DeployComponent{{Component: "tax-calc", Version: "2.4.0",
				Blocks: []schemas.DeployBlock{{Block: "rate-lookup", Version: "2.4.0", Hash: "sha256:ab"}}}}}
	}
	tests := []struct {
		name            string
		mod             func(d *schemas.DeployEvent)
		wantField, want string
	}{
		{"valid", func(d *schemas.DeployEvent) {}, "", ""},
		{"no id", func(d *schemas.DeployEvent) { d.ID = "" }, "id", "required"},
		{"zero ts", func(d *schemas.DeployEvent) { d.TS = time.Time{} }, "ts", "required"},
		{"no app version", func(d *schemas.DeployEvent) { d.AppVersion = "" }, "app_version", "required"},
		{"bad component", func(d *schemas.DeployEvent) { d.Components[0].Component = "a.b" }, "components[0].component", "must match"},
		{"duplicate component", func(d *schemas.DeployEvent) {
			d.Components = append(d.Components, schemas.DeployComponent{Component: "tax-calc", Version: "1"})
		}, "components[1].component", "duplicate of components[0]"},
		{"block without version", func(d *schemas.DeployEvent) { d.Components[0].Blocks[0].Version = "" }, "components[0].blocks[0].version", "required"},
		{"bad hash", func(d *schemas.DeployEvent) { d.Components[0].Blocks[0].Hash = "a\x00" }, "components[0].blocks[0].hash", "control"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := good()
			tt.mod(&d)
			checkErr(t, d.Validate(), tt.wantField, tt.want)
		})
	}
}

func goodAnomaly() schemas.Anomaly {
	return schemas.Anomaly{ID: "a-1", TSDetected: ts0, Window: schemas.Window{From: ts0.Add(-time.Minute), To: ts0},
		Service: "checkout", Component: "tax-calc", Version: "2.4.0", Metric: schemas.MetricErrorRate,
		Observed: 0.11, Baseline: 0.02, Effect: 4.5, Statistic: 14, PValue: f64(0.001),
		Samples:  schemas.Samples{Observed: 400, Baseline: 9000},
		Evidence: schemas.Evidence{Blocks: map[string]int64{"rate-lookup": 44}}}
}

func TestAnomalyValidate(t *testing.T) {
	tests := []struct {
		name            string
		mod             func(a *schemas.Anomaly)
		wantField, want string
	}{
		{"valid", func(a *schemas.Anomaly) {}, "", ""},
		{"score instead of p", func(a *schemas.Anomaly) { a.PValue, a.Score = nil, f64(9.3) }, "", ""},
		{"neither", func(a *schemas.Anomaly) { a.PValue = nil }, "p_value", "one of p_value or score"},
		{"p above 1", func(a *schemas.Anomaly) { a.PValue = f64(1.01) }, "p_value", "[0, 1]"},
		{"NaN observed", func(a *schemas.Anomaly) { a.Observed = math.NaN() }, "observed", "finite"},
		{"Inf score", func(a *schemas.Anomaly) { a.Score = f64(math.Inf(1)) }, "score", "finite"},
		{"bad metric", func(a *schemas.Anomaly) { a.Metric = "errors" }, "metric", `"errors"`},
		{"window reversed", func(a *schemas.Anomaly) { a.Window.From, a.Window.To = a.Window.To, a.Window.From }, "window", "after"},
		{"bad category", func(a *schemas.Anomaly) { a.ErrorCategory = "boom" }, "error_category", `"boom"`},
		{"bad evidence block", func(a *schemas.Anomaly) { a.Evidence.Blocks = map[string]int64{"a b": 1} }, "evidence.blocks", "must match"},
		{"negative baseline block", func(a *schemas.Anomaly) { a.Evidence.BaselineBlocks = map[string]float64{"x": -1} }, "evidence.baseline_blocks.x", ">= 0"},
		{"negative samples", func(a *schemas.Anomaly) { a.Samples.Baseline = -1 }, "samples.baseline", ">= 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := goodAnomaly()
			tt.mod(&a)
			checkErr(t, a.Validate(), tt.wantField, tt.want)
		})
	}
}

func goodDecision() schemas.Decision {
	return schemas.Decision{ID: "d-1", TS: ts0, IncidentID: "i-1", AnomalyIDs: []string{"a-1"},
		Service: "checkout", Action: schemas.ActionRollback, Granularity: schemas.GranularityFine,
		Targets: []schemas.DecisionTarget{{Service: "checkout", Component: "tax-calc", Block: "rate-lookup",
			FromVersion: "2.4.0", ToVersion: "2.3.1", Step: 1}},
		Reason: "error rate up", Policy: schemas.PolicyInfo{WindowOpen: true},
		Plan: []schemas.PlanStep{{Step: 1, Action: schemas.ActionRollback, Service: "checkout", Component: "tax-calc", Block: "rate-lookup"},
			{Step: 2, Action: schemas.ActionRollback, Service: "checkout", Component: "invoice", Edge: "invoice depends_on tax-calc: cascade"}}}
}

func TestDecisionValidate(t *testing.T) {
	tests := []struct {
		name            string
		mod             func(d *schemas.Decision)
		wantField, want string
	}{
		{"valid", func(d *schemas.Decision) {}, "", ""},
		{"hold, nothing else", func(d *schemas.Decision) {
			d.Action, d.Granularity, d.Targets, d.Plan, d.AnomalyIDs = schemas.ActionHold, "", nil, nil, nil
		}, "", ""},
		{"bad action", func(d *schemas.Decision) { d.Action = "revert" }, "action", `"revert"`},
		{"bad granularity", func(d *schemas.Decision) { d.Granularity = "tiny" }, "granularity", `"tiny"`},
		{"block without component", func(d *schemas.Decision) { d.Targets[0].Component = "" }, "targets[0].component", "required when block is set"},
		{"step 0", func(d *schemas.Decision) { d.Targets[0].Step = 0 }, "targets[0].step", ">= 1"},
		{"no reason", func(d *schemas.Decision) { d.Reason = "" }, "reason", "required"},
		{"steps out of order", func(d *schemas.Decision) { d.Plan[1].Step = 1 }, "plan[1].step", "must increase"},
		{"NaN threshold", func(d *schemas.Decision) { d.Policy.Thresholds = map[string]float64{"error_rate": math.NaN()} }, "policy.thresholds.error_rate", "finite"},
		{"bad plan action", func(d *schemas.Decision) { d.Plan[0].Action = "undo" }, "plan[0].action", `"undo"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := goodDecision()
			tt.mod(&d)
			checkErr(t, d.Validate(), tt.wantField, tt.want)
		})
	}
}

func goodCommand() schemas.RollbackCommand {
	exp := ts0.Add(5 * time.Minute)
	return schemas.RollbackCommand{ID: "c-1", DecisionID: "d-1", IncidentID: "i-1", Granularity: schemas.GranularityFine,
		Action: schemas.ActionRollback, Service: "checkout", Component: "tax-calc", Block: "rate-lookup",
		FromVersion: "2.4.0", ToVersion: "2.3.1", Reason: "error rate up", IssuedAt: ts0, ExpiresAt: &exp}
}

func TestRollbackCommandValidate(t *testing.T) {
	tests := []struct {
		name            string
		mod             func(c *schemas.RollbackCommand)
		wantField, want string
	}{
		{"valid", func(c *schemas.RollbackCommand) {}, "", ""},
		{"coarse", func(c *schemas.RollbackCommand) { c.Granularity, c.Component, c.Block = "coarse", "", "" }, "", ""},
		{"escalate is not a command", func(c *schemas.RollbackCommand) { c.Action = "escalate" }, "action", `"escalate"`},
		{"no granularity", func(c *schemas.RollbackCommand) { c.Granularity = "" }, "granularity", "required"},
		{"block without component", func(c *schemas.RollbackCommand) { c.Component = "" }, "component", "required when block is set"},
		{"expired at issue", func(c *schemas.RollbackCommand) { c.ExpiresAt = &c.IssuedAt }, "expires_at", "after issued_at"},
		{"no to_version", func(c *schemas.RollbackCommand) { c.ToVersion = "" }, "to_version", "required"},
		{"zero issued_at", func(c *schemas.RollbackCommand) { c.IssuedAt = time.Time{}; c.ExpiresAt = nil }, "issued_at", "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := goodCommand()
			tt.mod(&c)
			checkErr(t, c.Validate(), tt.wantField, tt.want)
		})
	}
}

func TestRollbackAckValidate(t *testing.T) {
	good := func() schemas.RollbackAck {
		return schemas.RollbackAck{CommandID: "c-1", Service: "checkout", Instance: "checkout-7d9f8-x2x4q",
			Status: schemas.AckApplied, ActiveVersion: "2.3.1", TS: ts0}
	}
	tests := []struct {
		name            string
		mod             func(a *schemas.RollbackAck)
		wantField, want string
	}{
		{"valid", func(a *schemas.RollbackAck) {}, "", ""},
		{"failed with error", func(a *schemas.RollbackAck) { a.Status, a.Error = schemas.AckFailed, "no such version" }, "", ""},
		{"failed without error", func(a *schemas.RollbackAck) { a.Status = schemas.AckFailed }, "error", "required when status is failed"},
		{"bad status", func(a *schemas.RollbackAck) { a.Status = "ok" }, "status", `"ok"`},
		{"no instance", func(a *schemas.RollbackAck) { a.Instance = "" }, "instance", "required"},
		{"zero ts", func(a *schemas.RollbackAck) { a.TS = time.Time{} }, "ts", "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := good()
			tt.mod(&a)
			checkErr(t, a.Validate(), tt.wantField, tt.want)
		})
	}
}

// TestGoValuesMatchSchemas: values built in Go (as the stages build them) marshal to JSON the
// schemas accept — including a Decision whose slices were left nil.
func TestGoValuesMatchSchemas(t *testing.T) {
	compiled := compileSchemas(t)
	hold := goodDecision()
	hold.Action, hold.Granularity, hold.Targets, hold.Plan, hold.AnomalyIDs = schemas.ActionHold, "", nil, nil, nil
	ev := goodEvent()
	ev.Attrs = map[string]any{"http.route": "/tax", "n": 3}
	ev.Latency = &schemas.LatencySummary{P50: 1, Max: 2}
	cmd := goodCommand()
	ack := schemas.RollbackAck{CommandID: "c-1", Service: "checkout", Instance: "i-1", Status: schemas.AckFailed,
		ActiveVersion: "2.4.0", Error: "boom", TS: ts0}
	dep := schemas.DeployEvent{ID: "d-1", TS: ts0, Service: "checkout", AppVersion: "2.4.0"}
	an := goodAnomaly()
	an.Evidence = schemas.Evidence{}
	m := schemas.Manifest{Service: "checkout", RollbackWindow: schemas.Duration(15 * time.Minute),
		Components: []schemas.ManifestComponent{{Component: "tax-calc", Thresholds: &schemas.Thresholds{ErrorRate: f64(0.02)}}}}
	cases := []struct {
		schema string
		v      interface{ Validate() error }
	}{
		{schemas.SchemaTelemetryEvent, &ev},
		{schemas.SchemaDecision, &hold},
		{schemas.SchemaRollbackCommand, &cmd},
		{schemas.SchemaRollbackAck, &ack},
		{schemas.SchemaDeployEvent, &dep},
		{schemas.SchemaAnomaly, &an},
		{schemas.SchemaManifest, &m},
	}
	for _, c := range cases {
		t.Run(c.schema, func(t *testing.T) {
			if err := c.v.Validate(); err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(c.v)
			if err != nil {
				t.Fatal(err)
			}
			if err := schemaCheck(compiled[c.schema], c.schema, "v.json", b); err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			if err := goCheck[c.schema](b); err != nil {
				t.Fatalf("Go rejects its own output: %v\n%s", err, b)
			}
		})
	}
}

func TestIsVersionIsName(t *testing.T) {
	for _, s := range []string{"a", "A-z_0", strings.Repeat("x", 64)} {
		if !schemas.IsName(s) {
			t.Errorf("IsName(%q) = false", s)
		}
	}
	for _, s := range []string{"", "a.b", "a*", "a>", "a b", "é", strings.Repeat("x", 65)} {
		if schemas.IsName(s) {
			t.Errorf("IsName(%q) = true", s)
		}
	}
	for _, s := range []string{"2.4.0", "9f1c2e7", "v1 (beta)", "é", strings.Repeat("é", 128)} {
		if !schemas.IsVersion(s) {
			t.Errorf("IsVersion(%q) = false", s)
		}
	}
	for _, s := range []string{"", "a\x00", "a\x7f", "a\u0090", "\xc3", strings.Repeat("v", 129)} {
		if schemas.IsVersion(s) {
			t.Errorf("IsVersion(%q) = true", s)
		}
	}
}
