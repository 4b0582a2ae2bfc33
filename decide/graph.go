package decide

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"gonum.org/v1/gonum/graph"
	"gonum.org/v1/gonum/graph/simple"
	"gonum.org/v1/gonum/graph/topo"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Sentinel errors of the dependency graph.
var (
	// ErrUnknownReference is wrapped when a depends_on edge names a service or component the catalog
	// does not hold.
	ErrUnknownReference = errors.New("unknown dependency reference")
	// ErrDependencyCycle is wrapped when depends_on edges form a cycle: no rollback order is safe.
	ErrDependencyCycle = errors.New("dependency cycle")
)

// CatalogLister is a catalog that can also list its services; the engine needs it to find the
// dependents of a target in other services. Catalog and StaticCatalog implement it.
type CatalogLister interface {
	CatalogReader
	List(ctx context.Context) ([]string, error)
}

// List returns the services of the static catalog, sorted.
func (s StaticCatalog) List(context.Context) ([]string, error) {
	out := make([]string, 0, len(s))
	for k, m := range s {
		if m != nil {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Ref names a component of a service.
type Ref struct {
	Service   string `json:"service"`
	Component string `json:"component"`
}

func (r Ref) String() string { return r.Service + "/" + r.Component }

// Edge is a depends_on edge: From depends on To, and OnRollback says what happens to From when To
// is rolled back.
type Edge struct {
	From       Ref    `json:"from"`
	To         Ref    `json:"to"`
	OnRollback string `json:"on_rollback"`
}

// Graph is the catalog's dependency graph over every component of every service, built on
// gonum's directed graph. Edges point from a dependent to what it depends on.
type Graph struct {
	g     *simple.DirectedGraph
	ids   map[Ref]int64
	refs  []Ref
	edges map[[2]int64]Edge
	// Unknown lists edges whose target is not in the catalog (they are not in g).
	Unknown []Edge
}

// BuildGraph builds the dependency graph of the given manifests. It never fails: unknown references
// are collected in Unknown; Validate reports them and cycles.
func BuildGraph(ms []*schemas.Manifest) *Graph {
	g := &Graph{g: simple.NewDirectedGraph(), ids: map[Ref]int64{}, edges: map[[2]int64]Edge{}}
	ms = slices.Clone(ms)
	ms = slices.DeleteFunc(ms, func(m *schemas.Manifest) bool { return m == nil })
	slices.SortFunc(ms, func(a, b *schemas.Manifest) int { return cmp.Compare(a.Service, b.Service) })
	for _, m := range ms {
		for _, c := range m.Components {
			g.node(Ref{m.Service, c.Component})
		}
	}
	for _, m := range ms {
		for _, c := range m.Components {
			from := Ref{m.Service, c.Component}
			for _, d := range c.DependsOn {
				e := Edge{From: from, To: Ref{d.Service, d.Component}, OnRollback: cmp.Or(d.OnRollback, schemas.DefaultOnRollback)}
				to, ok := g.ids[e.To]
				if !ok {
					g.Unknown = append(g.Unknown, e)
					continue
				}
				fid := g.ids[from]
				if fid == to {
					// gonum's simple graph has no self loops; a self dependency is a cycle of one.
					g.edges[[2]int64{fid, to}] = e
					continue
				}
				g.g.SetEdge(g.g.NewEdge(g.g.Node(fid), g.g.Node(to)))
				g.edges[[2]int64{fid, to}] = e
			}
		}
	}
	return g
}

func (g *Graph) node(r Ref) int64 {
	if id, ok := g.ids[r]; ok {
		return id
	}
	id := int64(len(g.refs))
	g.ids[r] = id
	g.refs = append(g.refs, r)
	g.g.AddNode(simple.Node(id))
	return id
}

// Refs returns every component of the graph, sorted.
func (g *Graph) Refs() []Ref { return slices.Clone(g.refs) }

// Edges returns every known edge, sorted by dependent then dependency.
func (g *Graph) Edges() []Edge {
	out := make([]Edge, 0, len(g.edges))
	for _, e := range g.edges {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Edge) int {
		return cmp.Or(cmp.Compare(a.From.String(), b.From.String()), cmp.Compare(a.To.String(), b.To.String()))
	})
	return out
}

// Cycles returns the dependency cycles, each as the components it goes through, sorted.
func (g *Graph) Cycles() [][]Ref {
	var out [][]Ref
	for k, e := range g.edges {
		if k[0] == k[1] {
			out = append(out, []Ref{e.From})
		}
	}
	if _, err := topo.Sort(g.g); err != nil {
		var u topo.Unorderable
		if errors.As(err, &u) {
			for _, scc := range u {
				var c []Ref
				for _, n := range scc {
					c = append(c, g.refs[n.ID()])
				}
				slices.SortFunc(c, func(a, b Ref) int { return cmp.Compare(a.String(), b.String()) })
				out = append(out, c)
			}
		}
	}
	slices.SortFunc(out, func(a, b []Ref) int { return cmp.Compare(a[0].String(), b[0].String()) })
	return out
}

// Validate reports unknown references and cycles, every one of them, in words that say what to fix.
func (g *Graph) Validate() error {
	var errs []error
	for _, e := range g.Unknown {
		errs = append(errs, fmt.Errorf("%w: %s depends on %s, which no manifest in the catalog defines (apply %s's manifest first, or fix the name)",
			ErrUnknownReference, e.From, e.To, e.To.Service))
	}
	for _, c := range g.Cycles() {
		names := make([]string, len(c))
		for i, r := range c {
			names[i] = r.String()
		}
		errs = append(errs, fmt.Errorf("%w: %s depend on each other, so no rollback order is safe; drop one depends_on edge or set it to on_rollback: ignore",
			ErrDependencyCycle, strings.Join(names, ", ")))
	}
	return errors.Join(errs...)
}

// Dependents returns the direct dependents of r (the components that depend on it), sorted.
func (g *Graph) Dependents(r Ref) []Edge {
	id, ok := g.ids[r]
	if !ok {
		return nil
	}
	var out []Edge
	for _, n := range graph.NodesOf(g.g.To(id)) {
		out = append(out, g.edges[[2]int64{n.ID(), id}])
	}
	if e, ok := g.edges[[2]int64{id, id}]; ok {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Edge) int { return cmp.Compare(a.From.String(), b.From.String()) })
	return out
}

// Connected reports whether a and b are linked by dependency edges in either direction.
func (g *Graph) Connected(a, b Ref) bool {
	ia, ok1 := g.ids[a]
	ib, ok2 := g.ids[b]
	if !ok1 || !ok2 {
		return false
	}
	return topo.PathExistsIn(g.g, g.g.Node(ia), g.g.Node(ib)) || topo.PathExistsIn(g.g, g.g.Node(ib), g.g.Node(ia))
}

// Impact is one component a rollback of a target touches through the dependency edges.
type Impact struct {
	Ref    Ref
	Action string // rollback (cascade) or disable
	Edge   Edge   // the edge that brought it in
}

// Expand returns what rolling back root does to its dependents, in a safe order: dependents before
// what they depend on (a dependent goes back, or is switched off, before the dependency it was built
// against changes under it), the farthest first. cascade follows the edge and goes on to the
// dependent's own dependents; disable switches the dependent off and stops there (nothing runs it);
// ignore leaves it. A cycle among the components reached is ErrDependencyCycle.
func (g *Graph) Expand(root Ref) ([]Impact, error) {
	if _, ok := g.ids[root]; !ok {
		return nil, nil
	}
	reached := map[Ref]Impact{}
	sub := simple.NewDirectedGraph()
	sub.AddNode(simple.Node(g.ids[root]))
	queue := []Ref{root}
	for len(queue) > 0 {
		r := queue[0]
		queue = queue[1:]
		for _, e := range g.Dependents(r) {
			if e.OnRollback == schemas.OnRollbackIgnore {
				continue
			}
			if e.From == r || e.From == root {
				return nil, fmt.Errorf("%w: %s and %s depend on each other", ErrDependencyCycle, e.From, e.To)
			}
			fid, tid := g.ids[e.From], g.ids[e.To]
			if sub.Node(fid) == nil {
				sub.AddNode(simple.Node(fid))
			}
			sub.SetEdge(sub.NewEdge(sub.Node(fid), sub.Node(tid)))
			if prev, seen := reached[e.From]; seen {
				// Reached twice: cascade wins over disable (a rolled back dependent is consistent,
				// a disabled one only harmless).
				if prev.Action == schemas.ActionDisable && e.OnRollback == schemas.OnRollbackCascade {
					reached[e.From] = Impact{Ref: e.From, Action: schemas.ActionRollback, Edge: e}
					queue = append(queue, e.From)
				}
				continue
			}
			act := schemas.ActionRollback
			if e.OnRollback == schemas.OnRollbackDisable {
				act = schemas.ActionDisable
			}
			reached[e.From] = Impact{Ref: e.From, Action: act, Edge: e}
			if act == schemas.ActionRollback {
				queue = append(queue, e.From)
			}
		}
	}
	order, err := topo.SortStabilized(sub, func(ns []graph.Node) {
		slices.SortFunc(ns, func(a, b graph.Node) int { return cmp.Compare(g.refs[a.ID()].String(), g.refs[b.ID()].String()) })
	})
	if err != nil {
		return nil, fmt.Errorf("%w among the dependents of %s: %v", ErrDependencyCycle, root, err)
	}
	var out []Impact
	for _, n := range order {
		r := g.refs[n.ID()]
		if r == root {
			continue
		}
		out = append(out, reached[r])
	}
	return out, nil
}

// WriteText writes the graph as indented text: each service, its components, and their edges.
func (g *Graph) WriteText(w io.Writer, service string) error {
	edges := g.Edges()
	var b strings.Builder
	last := ""
	for _, r := range g.refs {
		if service != "" && r.Service != service && !touches(edges, r, service) {
			continue
		}
		if r.Service != last {
			fmt.Fprintf(&b, "%s\n", r.Service)
			last = r.Service
		}
		fmt.Fprintf(&b, "  %s\n", r.Component)
		for _, e := range edges {
			if e.From == r {
				fmt.Fprintf(&b, "    depends on %s (on rollback: %s)\n", e.To, e.OnRollback)
			}
		}
		for _, e := range edges {
			if e.To == r {
				fmt.Fprintf(&b, "    needed by %s (on rollback: %s)\n", e.From, e.OnRollback)
			}
		}
	}
	for _, e := range g.Unknown {
		if service == "" || e.From.Service == service {
			fmt.Fprintf(&b, "! %s depends on %s, which the catalog does not define\n", e.From, e.To)
		}
	}
	for _, c := range g.Cycles() {
		fmt.Fprintf(&b, "! cycle: %v\n", c)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func touches(edges []Edge, r Ref, service string) bool {
	for _, e := range edges {
		if (e.From == r && e.To.Service == service) || (e.To == r && e.From.Service == service) {
			return true
		}
	}
	return false
}

// WriteDOT writes the graph in Graphviz DOT: one cluster per service, edges labelled with their
// on_rollback policy (disable dashed, ignore dotted).
func (g *Graph) WriteDOT(w io.Writer, service string) error {
	edges := g.Edges()
	var b strings.Builder
	b.WriteString("digraph scalpel {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n")
	byService := map[string][]Ref{}
	var services []string
	for _, r := range g.refs {
		if service != "" && r.Service != service && !touches(edges, r, service) {
			continue
		}
		if _, ok := byService[r.Service]; !ok {
			services = append(services, r.Service)
		}
		byService[r.Service] = append(byService[r.Service], r)
	}
	for i, s := range services {
		fmt.Fprintf(&b, "  subgraph cluster_%d {\n    label=%q;\n", i, s)
		for _, r := range byService[s] {
			fmt.Fprintf(&b, "    %q [label=%q];\n", r.String(), r.Component)
		}
		b.WriteString("  }\n")
	}
	for _, e := range edges {
		if _, ok := byService[e.From.Service]; !ok {
			continue
		}
		if _, ok := byService[e.To.Service]; !ok {
			continue
		}
		style := "solid"
		switch e.OnRollback {
		case schemas.OnRollbackDisable:
			style = "dashed"
		case schemas.OnRollbackIgnore:
			style = "dotted"
		}
		fmt.Fprintf(&b, "  %q -> %q [label=%q, style=%s];\n", e.From.String(), e.To.String(), e.OnRollback, style)
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// LoadGraph reads every manifest of the catalog and builds the graph.
func LoadGraph(ctx context.Context, cat CatalogLister) (*Graph, []*schemas.Manifest, error) {
	names, err := cat.List(ctx)
	if err != nil {
		return nil, nil, err
	}
	ms := make([]*schemas.Manifest, 0, len(names))
	for _, n := range names {
		m, err := cat.Manifest(ctx, n)
		if errors.Is(err, ErrUnknownService) {
			continue // deleted between List and Manifest
		}
		if err != nil {
			return nil, nil, err
		}
		ms = append(ms, m)
	}
	return BuildGraph(ms), ms, nil
}
