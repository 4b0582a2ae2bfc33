package decide

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/scalpel-dev/scalpel/schemas"
)

func TestGraphValidate(t *testing.T) {
	dep := func(svc, comp, on string) schemas.Dependency {
		return schemas.Dependency{Service: svc, Component: comp, OnRollback: on}
	}
	m := func(svc, comp string, deps ...schemas.Dependency) *schemas.Manifest {
		return &schemas.Manifest{Service: svc, Components: []schemas.ManifestComponent{{Component: comp, DependsOn: deps}}}
	}
	tests := []struct {
		name    string
		ms      []*schemas.Manifest
		wantErr error
		has     string
	}{
		{"valid", threeServices(), nil, ""},
		{"unknown reference", []*schemas.Manifest{m("a", "x", dep("b", "y", "cascade"))}, ErrUnknownReference, "a/x depends on b/y, which no manifest"},
		{"cycle", []*schemas.Manifest{m("a", "x", dep("b", "y", "cascade")), m("b", "y", dep("a", "x", "ignore"))}, ErrDependencyCycle, "a/x, b/y depend on each other"},
		{"self", []*schemas.Manifest{m("a", "x", dep("a", "x", "cascade"))}, ErrDependencyCycle, "a/x depend on each other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := BuildGraph(tt.ms).Validate()
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tt.has) {
				t.Errorf("err = %v, want it to say %q", err, tt.has)
			}
		})
	}
}

func TestGraphExpandAndRender(t *testing.T) {
	ms := threeServices()
	ms = append(ms, &schemas.Manifest{Service: "mail", Components: []schemas.ManifestComponent{{Component: "send",
		DependsOn: []schemas.Dependency{{Service: "web", Component: "page", OnRollback: schemas.OnRollbackCascade}}}}})
	g := BuildGraph(ms)
	imp, err := g.Expand(Ref{"checkout", "tax-calc"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range imp {
		got = append(got, x.Action+" "+x.Ref.String())
	}
	// mail/send depends on web/page, which depends on tax-calc: mail goes first.
	if want := "rollback mail/send,disable report/export,rollback web/page"; strings.Join(got, ",") != want {
		t.Errorf("expand = %v, want %s", got, want)
	}
	var txt, dot bytes.Buffer
	if err := g.WriteText(&txt, "checkout"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(txt.String(), "needed by web/page (on rollback: cascade)") {
		t.Errorf("text:\n%s", txt.String())
	}
	if err := g.WriteDOT(&dot, ""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dot.String(), `"report/export" -> "checkout/tax-calc" [label="disable", style=dashed];`) {
		t.Errorf("dot:\n%s", dot.String())
	}
}
