package schemas_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/scalpel-dev/scalpel/schemas"
)

// compileSchemas compiles every embedded schema, asserting formats (date-time) as ingest does.
func compileSchemas(t testing.TB) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	for _, name := range schemas.Names() {
		b, err := schemas.Schema(name)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := c.AddResource(schemas.SchemaBaseURL+name+".json", doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	out := map[string]*jsonschema.Schema{}
	for _, name := range schemas.Names() {
		s, err := c.Compile(schemas.SchemaBaseURL + name + ".json")
		if err != nil {
			t.Fatalf("compile %s: %v", name, err)
		}
		out[name] = s
	}
	return out
}

// instances turns an example file into the JSON values the schema sees: one per YAML document
// (empty documents skipped) or one per manifest of a JSON array of manifests.
func instances(name, file string, b []byte) ([]any, error) {
	if strings.HasSuffix(file, ".yaml") {
		dec := yaml.NewDecoder(bytes.NewReader(b))
		var out []any
		for {
			var v any
			err := dec.Decode(&v)
			if err == io.EOF {
				return out, nil
			}
			if err != nil {
				return nil, err
			}
			if v == nil {
				continue
			}
			// Through JSON, so the validator sees the same types it sees for .json files.
			j, err := json.Marshal(v)
			if err != nil {
				return nil, err
			}
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
			if err != nil {
				return nil, err
			}
			out = append(out, inst)
		}
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	if arr, ok := v.([]any); ok && name == schemas.SchemaManifest {
		return arr, nil
	}
	return []any{v}, nil
}

// schemaCheck validates every instance of the file against the schema.
func schemaCheck(s *jsonschema.Schema, name, file string, b []byte) error {
	insts, err := instances(name, file, b)
	if err != nil {
		return err
	}
	if len(insts) == 0 {
		return errors.New("no instance")
	}
	for _, inst := range insts {
		if err := s.Validate(inst); err != nil {
			return err
		}
	}
	return nil
}

// goCheck is what the Go side of the project does with such bytes.
var goCheck = map[string]func([]byte) error{
	schemas.SchemaTelemetryEvent:  func(b []byte) error { _, err := schemas.DecodeTelemetryEvent(b); return err },
	schemas.SchemaDeployEvent:     func(b []byte) error { _, err := schemas.DecodeDeployEvent(b); return err },
	schemas.SchemaManifest:        func(b []byte) error { _, err := schemas.ParseManifests(b); return err },
	schemas.SchemaAnomaly:         func(b []byte) error { _, err := schemas.DecodeAnomaly(b); return err },
	schemas.SchemaDecision:        func(b []byte) error { _, err := schemas.DecodeDecision(b); return err },
	schemas.SchemaRollbackCommand: func(b []byte) error { _, err := schemas.DecodeRollbackCommand(b); return err },
	schemas.SchemaRollbackAck:     func(b []byte) error { _, err := schemas.DecodeAck(b); return err },
	schemas.SchemaApproval:        func(b []byte) error { _, err := schemas.DecodeApproval(b); return err },
}

// TestExamples holds the JSON Schema files and the Go validation to the same golden examples:
//   - valid/:    both accept;
//   - invalid/:  both reject;
//   - semantic/: the schema accepts, Go rejects with ErrInvalid — rules JSON Schema cannot express
//     (sums, ordering, uniqueness by key, non-zero time), each named in the schema's description.
func TestExamples(t *testing.T) {
	compiled := compileSchemas(t)
	for _, name := range schemas.Names() {
		counts := map[string]int{}
		for _, kind := range []string{"valid", "invalid", "semantic"} {
			files, err := filepath.Glob(filepath.Join("examples", name, kind, "*"))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range files {
				counts[kind]++
				t.Run(name+"/"+kind+"/"+filepath.Base(f), func(t *testing.T) {
					b, err := os.ReadFile(f)
					if err != nil {
						t.Fatal(err)
					}
					sErr := schemaCheck(compiled[name], name, f, b)
					gErr := goCheck[name](b)
					switch kind {
					case "valid":
						if sErr != nil {
							t.Errorf("schema rejects a valid example: %v", sErr)
						}
						if gErr != nil {
							t.Errorf("Go rejects a valid example: %v", gErr)
						}
					case "invalid":
						if sErr == nil {
							t.Errorf("schema accepts an invalid example")
						}
						if gErr == nil {
							t.Errorf("Go accepts an invalid example")
						} else if !errors.Is(gErr, schemas.ErrInvalid) && !errors.Is(gErr, schemas.ErrMalformed) {
							t.Errorf("Go error %v matches neither ErrInvalid nor ErrMalformed", gErr)
						}
					case "semantic":
						if sErr != nil {
							t.Errorf("schema rejects a semantic example (move it to invalid/): %v", sErr)
						}
						if !errors.Is(gErr, schemas.ErrInvalid) {
							t.Errorf("Go: got %v, want ErrInvalid", gErr)
						}
					}
					if gErr != nil {
						t.Logf("Go: %v", gErr)
					}
				})
			}
		}
		if counts["valid"] < 2 || counts["invalid"] < 2 {
			t.Errorf("%s: want at least 2 valid and 2 invalid examples, got %v", name, counts)
		}
	}
}

// TestRoundTrip: whatever Go reads from a valid example, it writes back in a form the schema
// accepts and reads back the same.
func TestRoundTrip(t *testing.T) {
	compiled := compileSchemas(t)
	decode := map[string]func([]byte) (any, error){
		schemas.SchemaTelemetryEvent:  func(b []byte) (any, error) { return schemas.DecodeTelemetryEvent(b) },
		schemas.SchemaDeployEvent:     func(b []byte) (any, error) { return schemas.DecodeDeployEvent(b) },
		schemas.SchemaAnomaly:         func(b []byte) (any, error) { return schemas.DecodeAnomaly(b) },
		schemas.SchemaDecision:        func(b []byte) (any, error) { return schemas.DecodeDecision(b) },
		schemas.SchemaRollbackCommand: func(b []byte) (any, error) { return schemas.DecodeRollbackCommand(b) },
		schemas.SchemaRollbackAck:     func(b []byte) (any, error) { return schemas.DecodeAck(b) },
		schemas.SchemaApproval:        func(b []byte) (any, error) { return schemas.DecodeApproval(b) },
		schemas.SchemaManifest:        func(b []byte) (any, error) { return schemas.ParseManifests(b) },
	}
	for _, name := range schemas.Names() {
		files, _ := filepath.Glob(filepath.Join("examples", name, "valid", "*"))
		for _, f := range files {
			t.Run(name+"/"+filepath.Base(f), func(t *testing.T) {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				v, err := decode[name](b)
				if err != nil {
					t.Fatal(err)
				}
				out, err := json.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				if err := schemaCheck(compiled[name], name, "out.json", out); err != nil {
					t.Fatalf("marshalled Go value breaks the schema: %v\n%s", err, out)
				}
				again, err := decode[name](out)
				if err != nil {
					t.Fatalf("re-decode: %v\n%s", err, out)
				}
				out2, _ := json.Marshal(again)
				if !bytes.Equal(out, out2) {
					t.Fatalf("not stable:\n%s\n%s", out, out2)
				}
			})
		}
	}
}

// TestSchemaEnumsMatchGo: the enums the schemas document are exactly those the Go code accepts.
func TestSchemaEnumsMatchGo(t *testing.T) {
	enum := func(schema string, path ...string) []string {
		b, err := schemas.Schema(schema)
		if err != nil {
			t.Fatal(err)
		}
		var n any
		if err := json.Unmarshal(b, &n); err != nil {
			t.Fatal(err)
		}
		for _, p := range path {
			n = n.(map[string]any)[p]
		}
		var out []string
		for _, v := range n.(map[string]any)["enum"].([]any) {
			if v != "" {
				out = append(out, v.(string))
			}
		}
		return out
	}
	tests := []struct {
		name   string
		values []string
		accept func(string) bool
	}{
		{"error", enum("telemetry_event", "properties", "error"), schemas.IsErrorCategory},
		{"errors keys", enum("telemetry_event", "properties", "errors", "propertyNames"), schemas.IsErrorCategory},
		{"decision action", enum("decision", "properties", "action"), schemas.IsAction},
		{"command action", enum("rollback_command", "properties", "action"), schemas.IsCommandAction},
		{"granularity", enum("rollback_command", "properties", "granularity"), schemas.IsGranularity},
	}
	for _, tt := range tests {
		for _, v := range tt.values {
			if !tt.accept(v) {
				t.Errorf("%s: schema allows %q, Go does not", tt.name, v)
			}
		}
	}
	if got := enum("telemetry_event", "properties", "error"); strings.Join(got, ",") != strings.Join(schemas.ErrorCategories, ",") {
		t.Errorf("error categories: schema %v, Go %v", got, schemas.ErrorCategories)
	}
	if n := len(enum("decision", "properties", "action")); n != 8 {
		t.Errorf("decision actions in schema: %d, want the 8 Action constants", n)
	}
}
