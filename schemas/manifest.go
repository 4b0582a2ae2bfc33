package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Defaults of a manifest's optional enums, filled in by ApplyDefaults (and so by ParseManifest).
const (
	// DefaultKind: most components scalpel watches are functions; endpoints say so.
	DefaultKind = "function"
	// DefaultGranularity: roll back the component's previous version. Block-level (fine) rollback
	// needs the service to register block implementations, so it is opt-in; coarse is the last resort.
	DefaultGranularity = GranularityMedium
	// DefaultOnRollback: when a dependency is rolled back, its dependent follows, because it was
	// most likely deployed against the dependency's new behaviour; keeping the pair consistent is
	// the conservative choice. Say "ignore" for edges that do not care about versions.
	DefaultOnRollback = OnRollbackCascade
)

// Component kinds.
const (
	KindFunction = "function"
	KindEndpoint = "endpoint"
)

// MaxManifestSize bounds the bytes ParseManifests reads: a catalog file is a few KiB, and a YAML
// parser fed megabytes of aliases is a denial of service.
const MaxManifestSize = 1 << 20

// ParseManifest reads one manifest, YAML or JSON, strictly (unknown fields are errors), validates
// it and fills in defaults (see ApplyDefaults). Input holding several manifests is an error; use
// ParseManifests for that.
func ParseManifest(b []byte) (*Manifest, error) {
	ms, err := ParseManifests(b)
	if err != nil {
		return nil, err
	}
	if len(ms) != 1 {
		return nil, fmt.Errorf("%w: want exactly one manifest, got %d", ErrMalformed, len(ms))
	}
	return ms[0], nil
}

// ParseManifests reads one or more manifests: a YAML stream of documents separated by "---"
// (empty documents are skipped), a JSON object, or a JSON array of objects. Decoding is strict:
// unknown fields and wrong types are ErrMalformed. Every manifest is validated (ErrInvalid, with
// "document N: " before the path when there are several), service names must be unique in the
// input, and defaults are filled in. At least one manifest is required.
func ParseManifests(b []byte) (ms []*Manifest, err error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest input is %d bytes, limit %d", ErrTooLarge, len(b), MaxManifestSize)
	}
	// A parser bug must not take down `serve` or `catalog apply`: turn a panic into an error.
	defer func() {
		if r := recover(); r != nil {
			ms, err = nil, fmt.Errorf("%w: manifest parser failed: %v", ErrMalformed, r)
		}
	}()
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		ms, err = decodeManifestsJSON(trimmed)
	} else {
		ms, err = decodeManifestsYAML(b)
	}
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("%w: no manifest in input", ErrMalformed)
	}
	seen := make(map[string]int, len(ms))
	for i, m := range ms {
		if err := m.Validate(); err != nil {
			if len(ms) > 1 {
				return nil, fmt.Errorf("document %d: %w", i+1, err)
			}
			return nil, err
		}
		if j, dup := seen[m.Service]; dup {
			return nil, fmt.Errorf("document %d: %w", i+1, &ValidationError{Field: "service",
				Reason: fmt.Sprintf("%q: also defined by document %d", m.Service, j+1)})
		}
		seen[m.Service] = i
		m.ApplyDefaults()
	}
	return ms, nil
}

func decodeManifestsJSON(b []byte) ([]*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var ms []*Manifest
	if b[0] == '[' {
		if err := dec.Decode(&ms); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		for i, m := range ms {
			if m == nil {
				return nil, fmt.Errorf("%w: [%d]: null is not a manifest", ErrMalformed, i)
			}
		}
	} else {
		var m Manifest
		if err := dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		ms = []*Manifest{&m}
	}
	if err := expectEOF(dec); err != nil {
		return nil, err
	}
	return ms, nil
}

func expectEOF(dec *json.Decoder) error {
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: unexpected data after the JSON value", ErrMalformed)
	}
	return nil
}

func decodeManifestsYAML(b []byte) ([]*Manifest, error) {
	// yaml.v3 only checks unknown fields when decoding straight from a Decoder, not from a Node, so
	// a first loose pass finds the empty documents ("---" at the end, comment-only files) and a
	// second strict pass decodes the others, keeping the original line numbers in errors.
	var empty []bool
	loose := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var n yaml.Node
		err := loose.Decode(&n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		empty = append(empty, isEmptyYAML(&n))
	}
	strict := yaml.NewDecoder(bytes.NewReader(b))
	strict.KnownFields(true)
	var ms []*Manifest
	for i, skip := range empty {
		if skip {
			var n yaml.Node
			if err := strict.Decode(&n); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
			}
			continue
		}
		var m Manifest
		if err := strict.Decode(&m); err != nil {
			if len(empty) > 1 {
				return nil, fmt.Errorf("%w: document %d: %v", ErrMalformed, i+1, err)
			}
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		ms = append(ms, &m)
	}
	return ms, nil
}

func isEmptyYAML(n *yaml.Node) bool {
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return true
		}
		n = n.Content[0]
	}
	return n.Kind == 0 || n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// ApplyDefaults fills in the optional enums left empty: kind = function, granularity = medium,
// on_rollback = cascade (see DefaultKind, DefaultGranularity, DefaultOnRollback).
func (m *Manifest) ApplyDefaults() {
	for i := range m.Components {
		c := &m.Components[i]
		if c.Kind == "" {
			c.Kind = DefaultKind
		}
		if c.Granularity == "" {
			c.Granularity = DefaultGranularity
		}
		for j := range c.DependsOn {
			if c.DependsOn[j].OnRollback == "" {
				c.DependsOn[j].OnRollback = DefaultOnRollback
			}
		}
	}
}

// Component returns the named component of the manifest.
func (m *Manifest) Component(name string) (*ManifestComponent, bool) {
	for i := range m.Components {
		if m.Components[i].Component == name {
			return &m.Components[i], true
		}
	}
	return nil, false
}

// Validate checks a Manifest against manifest.json, plus what the schema cannot say: component
// names unique, block names unique within a component, a block's line range with start <= end,
// finite thresholds. Empty kind, granularity and on_rollback are valid (they take the defaults).
func (m *Manifest) Validate() error {
	if err := checkName("service", m.Service); err != nil {
		return err
	}
	if m.RollbackWindow < 0 {
		return invalid("rollback_window", "must be >= 0, got %s", time.Duration(m.RollbackWindow))
	}
	for i, a := range m.Actuators {
		p := "actuators[" + strconv.Itoa(i) + "]"
		if err := checkName(p, a); err != nil {
			return err
		}
		for j := range i {
			if m.Actuators[j] == a {
				return invalid(p, "%q: duplicate of actuators[%d]", a, j)
			}
		}
	}
	if len(m.Components) == 0 {
		return invalid("components", "at least one component is required")
	}
	for i := range m.Components {
		c := &m.Components[i]
		p := "components[" + strconv.Itoa(i) + "]"
		if err := c.validate(); err != nil {
			return prefixed(p, err)
		}
		for j := range i {
			if m.Components[j].Component == c.Component {
				return invalid(p+".component", "%q: duplicate of components[%d]", c.Component, j)
			}
		}
	}
	return nil
}

func (c *ManifestComponent) validate() error {
	if err := checkName("component", c.Component); err != nil {
		return err
	}
	switch c.Kind {
	case "", KindFunction, KindEndpoint:
	default:
		return invalid("kind", "%q: must be function or endpoint", clip(c.Kind))
	}
	if c.Granularity != "" && !IsGranularity(c.Granularity) {
		return invalid("granularity", "%q: must be one of fine, medium, coarse", clip(c.Granularity))
	}
	for i := range c.DependsOn {
		d := &c.DependsOn[i]
		p := "depends_on[" + strconv.Itoa(i) + "]"
		if err := checkName(p+".service", d.Service); err != nil {
			return err
		}
		if err := checkName(p+".component", d.Component); err != nil {
			return err
		}
		switch d.OnRollback {
		case "", OnRollbackCascade, OnRollbackDisable, OnRollbackIgnore:
		default:
			return invalid(p+".on_rollback", "%q: must be one of cascade, disable, ignore", clip(d.OnRollback))
		}
	}
	for i := range c.Blocks {
		b := &c.Blocks[i]
		p := "blocks[" + strconv.Itoa(i) + "]"
		if err := checkName(p+".block", b.Block); err != nil {
			return err
		}
		for j := range i {
			if c.Blocks[j].Block == b.Block {
				return invalid(p+".block", "%q: duplicate of blocks[%d]", b.Block, j)
			}
		}
		if b.File != "" && !isPath(b.File) {
			return invalid(p+".file", "%q: must be 1-%d characters without control characters", clip(b.File), MaxPathLen)
		}
		if b.Lines != "" {
			if b.File == "" {
				return invalid(p+".file", "required when lines is set")
			}
			start, end, ok := parseLines(b.Lines)
			if !ok {
				return invalid(p+".lines", "%q: must be \"START-END\" with line numbers from 1", clip(b.Lines))
			}
			if start > end {
				return invalid(p+".lines", "%q: start after end", b.Lines)
			}
		}
	}
	if t := c.Thresholds; t != nil {
		if r := t.ErrorRate; r != nil && !(finite(*r) && *r >= 0 && *r <= 1) {
			return invalid("thresholds.error_rate", "must be in [0, 1], got %s", fmtFloat(*r))
		}
		if err := checkOptNonNeg("thresholds.latency_increase", t.LatencyIncrease); err != nil {
			return err
		}
	}
	return nil
}

func isPath(s string) bool {
	n := 0
	for _, r := range s {
		if r == utf8.RuneError || isControl(r) {
			return false
		}
		n++
	}
	return n > 0 && n <= MaxPathLen
}

// parseLines reads "START-END" with 1-9 digit line numbers, no leading zero, no spaces (the
// pattern manifest.json gives).
func parseLines(s string) (start, end int, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	if start, ok = parseLineNo(a); !ok {
		return 0, 0, false
	}
	if end, ok = parseLineNo(b); !ok {
		return 0, 0, false
	}
	return start, end, true
}

func parseLineNo(s string) (int, bool) {
	if len(s) == 0 || len(s) > 9 || s[0] == '0' {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// BlockAt maps a source location to the block of this component whose file and line range
// contain it. file matches a block's file when equal to it or ending in "/"+file, so an absolute
// path from a stack trace ("/src/app/tax/calc.go") matches the repository-relative path of the
// manifest ("tax/calc.go"). When ranges nest (a loop inside a branch), the narrowest wins: it is
// the most specific evidence.
func (c *ManifestComponent) BlockAt(file string, line int) (string, bool) {
	best, bestSpan := "", -1
	for i := range c.Blocks {
		b := &c.Blocks[i]
		if b.File == "" || b.Lines == "" || !sameFile(file, b.File) {
			continue
		}
		start, end, ok := parseLines(b.Lines)
		if !ok || line < start || line > end {
			continue
		}
		if span := end - start; bestSpan < 0 || span < bestSpan {
			best, bestSpan = b.Block, span
		}
	}
	return best, bestSpan >= 0
}

func sameFile(site, decl string) bool {
	decl = strings.TrimPrefix(decl, "./")
	if site == decl {
		return true
	}
	return len(site) > len(decl) && strings.HasSuffix(site, decl) && site[len(site)-len(decl)-1] == '/'
}

// BlockForSite maps a TelemetryEvent's error_site to a block: the site is "file:line" or a short
// stack of such frames separated by newlines or ';' (trailing ":column" or " +0x1d" are ignored,
// as are lines without a location, such as Go's function-name lines). Frames are tried in order —
// innermost first, as Go, Java and JavaScript print them — and the first that BlockAt maps wins.
func (c *ManifestComponent) BlockForSite(site string) (string, bool) {
	for site != "" {
		var frame string
		if i := strings.IndexAny(site, "\n;"); i >= 0 {
			frame, site = site[:i], site[i+1:]
		} else {
			frame, site = site, ""
		}
		file, line, ok := ParseSiteFrame(frame)
		if !ok {
			continue
		}
		if b, ok := c.BlockAt(file, line); ok {
			return b, true
		}
	}
	return "", false
}

// ParseSiteFrame reads one "file:line" frame of an error_site, tolerating surrounding spaces, a
// trailing ":column" or " +0x1d", and Windows drive letters ("C:\src\a.go:12").
func ParseSiteFrame(frame string) (file string, line int, ok bool) {
	frame = strings.TrimSpace(frame)
	for from := 0; from < len(frame); {
		i := strings.IndexByte(frame[from:], ':')
		if i < 0 {
			return "", 0, false
		}
		i += from
		from = i + 1
		if i <= 1 { // "" or a drive letter
			continue
		}
		j := i + 1
		for j < len(frame) && frame[j] >= '0' && frame[j] <= '9' {
			j++
		}
		if j == i+1 || j-i-1 > 9 {
			continue
		}
		n, err := strconv.Atoi(frame[i+1 : j])
		if err != nil || n < 1 {
			continue
		}
		return strings.TrimSpace(frame[:i]), n, true
	}
	return "", 0, false
}
