package deployer

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
)

// ErrUnknownVersion is returned by Switch for a version the target has no implementation of.
var ErrUnknownVersion = errors.New("no implementation registered for this version")

// Disabled is the version name under which a target's "disabled" implementation is registered
// (Block.Disable). A disable command without a to_version switches to it.
const Disabled = ""

// Target is anything the Deployer can switch: a Block, a Handler, or a type of the service's own.
// Component and Block name it as in the catalog (Block is empty for a whole component). Switch must
// be safe to call while the target serves requests.
type Target interface {
	Component() string
	Block() string
	// Active is the version serving now (Disabled when switched off).
	Active() string
	// Has reports whether version has an implementation.
	Has(version string) bool
	// Switch makes version the active one; ErrUnknownVersion when it has no implementation.
	Switch(version string) error
}

// impl is one registered implementation; the active one is published through an atomic pointer.
type impl[T any] struct {
	version string
	v       T
}

// Block holds several implementations of one code block, keyed by version, and serves the active
// one. Get is a single atomic load: no lock, no allocation, safe under any concurrency. Register
// and Switch take a mutex that the call path never sees.
type Block[T any] struct {
	component, block string

	mu    sync.Mutex
	impls map[string]*impl[T]

	cur atomic.Pointer[impl[T]]
}

var _ Target = (*Block[int])(nil)

// NewBlock returns an empty block named component/block. Register its versions before serving;
// the first version registered is active until something switches it.
func NewBlock[T any](component, block string) *Block[T] {
	return &Block[T]{component: component, block: block, impls: map[string]*impl[T]{}}
}

// Register adds (or replaces) the implementation of version and returns b, so registrations chain.
// The first version registered becomes active.
func (b *Block[T]) Register(version string, v T) *Block[T] {
	b.mu.Lock()
	defer b.mu.Unlock()
	im := &impl[T]{version: version, v: v}
	b.impls[version] = im
	if cur := b.cur.Load(); cur == nil || cur.version == version {
		b.cur.Store(im)
	}
	return b
}

// Disable registers what the block does while switched off (a disable command without a target
// version): typically a safe default or a feature turned off.
func (b *Block[T]) Disable(v T) *Block[T] {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.impls[Disabled] = &impl[T]{version: Disabled, v: v}
	return b
}

// Get returns the active implementation (the zero T before anything is registered).
func (b *Block[T]) Get() T {
	if im := b.cur.Load(); im != nil {
		return im.v
	}
	var zero T
	return zero
}

// Current returns the active version and its implementation from one load, so a caller that
// reports the version it ran gets the one it actually ran.
func (b *Block[T]) Current() (version string, v T) {
	if im := b.cur.Load(); im != nil {
		return im.version, im.v
	}
	return "", v
}

// Active is the version serving now.
func (b *Block[T]) Active() string {
	if im := b.cur.Load(); im != nil {
		return im.version
	}
	return ""
}

// Has reports whether version has an implementation.
func (b *Block[T]) Has(version string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.impls[version]
	return ok
}

// Switch makes version the active implementation. Requests already running finish on the one they
// started with.
func (b *Block[T]) Switch(version string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	im, ok := b.impls[version]
	if !ok {
		return fmt.Errorf("%s: version %q: %w (have %v)", b.name(), version, ErrUnknownVersion, b.versionsLocked())
	}
	b.cur.Store(im)
	return nil
}

// Versions lists the registered versions, sorted (the disabled implementation is not listed).
func (b *Block[T]) Versions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.versionsLocked()
}

func (b *Block[T]) versionsLocked() []string {
	vs := make([]string, 0, len(b.impls))
	for v := range b.impls {
		if v != Disabled {
			vs = append(vs, v)
		}
	}
	sort.Strings(vs)
	return vs
}

// Component names the component the block belongs to.
func (b *Block[T]) Component() string { return b.component }

// Block names the block.
func (b *Block[T]) Block() string { return b.block }

func (b *Block[T]) name() string {
	if b.block == "" {
		return b.component
	}
	return b.component + "/" + b.block
}

// Handler serves the versions of one HTTP endpoint (a component of kind endpoint). Rolling the
// endpoint back switches which http.Handler answers, with no lock on the request path.
type Handler struct {
	b *Block[http.Handler]
}

var (
	_ Target       = (*Handler)(nil)
	_ http.Handler = (*Handler)(nil)
)

// NewHandler returns an endpoint named component with no versions yet; the first registered is
// active. While disabled without a registered disabled handler it answers 503.
func NewHandler(component string) *Handler {
	h := &Handler{b: NewBlock[http.Handler](component, "")}
	h.b.Disable(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, component+" is disabled", http.StatusServiceUnavailable)
	}))
	return h
}

// Register adds the handler of version and returns h.
func (h *Handler) Register(version string, hh http.Handler) *Handler {
	h.b.Register(version, hh)
	return h
}

// Disable registers what the endpoint answers while switched off.
func (h *Handler) Disable(hh http.Handler) *Handler {
	h.b.Disable(hh)
	return h
}

// ServeHTTP hands the request to the active version.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hh := h.b.Get()
	if hh == nil {
		http.Error(w, h.b.component+" is disabled", http.StatusServiceUnavailable)
		return
	}
	hh.ServeHTTP(w, r)
}

// Component names the endpoint.
func (h *Handler) Component() string { return h.b.component }

// Block is empty: a Handler is a whole component.
func (h *Handler) Block() string { return "" }

// Active is the version answering now.
func (h *Handler) Active() string { return h.b.Active() }

// Has reports whether version has a handler.
func (h *Handler) Has(version string) bool { return h.b.Has(version) }

// Switch makes version answer from now on.
func (h *Handler) Switch(version string) error { return h.b.Switch(version) }

// Versions lists the registered versions.
func (h *Handler) Versions() []string { return h.b.Versions() }
