package schemas

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed *.json
var schemaFiles embed.FS

// ErrUnknownSchema is returned by Schema for a name that Names does not list.
var ErrUnknownSchema = errors.New("unknown schema")

// SchemaBaseURL is the prefix of every schema's $id: SchemaBaseURL + name + ".json".
const SchemaBaseURL = "https://scalpel.dev/schemas/"

// Schema names, as Names returns them and Schema accepts them.
const (
	SchemaTelemetryEvent  = "telemetry_event"
	SchemaDeployEvent     = "deploy_event"
	SchemaManifest        = "manifest"
	SchemaAnomaly         = "anomaly"
	SchemaDecision        = "decision"
	SchemaRollbackCommand = "rollback_command"
	SchemaRollbackAck     = "rollback_ack"
	SchemaApproval        = "approval"
)

// Names lists the JSON Schema files this package embeds, without ".json", sorted.
func Names() []string {
	entries, err := fs.ReadDir(schemaFiles, ".")
	if err != nil { // cannot happen: the directory is embedded
		panic(err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".json"))
	}
	sort.Strings(names)
	return names
}

// Schema returns the JSON Schema (draft 2020-12) of a message or manifest by name, with or
// without ".json" ("telemetry_event", "manifest.json"). The bytes are a copy the caller may keep.
func Schema(name string) ([]byte, error) {
	name = strings.TrimSuffix(name, ".json")
	if name == "" || strings.ContainsAny(name, "/\\.") {
		return nil, fmt.Errorf("%w: %q", ErrUnknownSchema, name)
	}
	b, err := schemaFiles.ReadFile(name + ".json")
	if err != nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownSchema, name)
	}
	return b, nil
}
