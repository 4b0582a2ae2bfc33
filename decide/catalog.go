package decide

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/schemas"
)

// ErrUnknownService is returned when the catalog holds no manifest for a service.
var ErrUnknownService = errors.New("unknown service: no catalog manifest")

// ErrInvalidManifest is wrapped when a manifest cannot be stored or read back.
var ErrInvalidManifest = errors.New("invalid manifest")

// CatalogReader gives the engine a service's manifest. Implementations return an error wrapping
// ErrUnknownService when the service has none.
type CatalogReader interface {
	Manifest(ctx context.Context, service string) (*schemas.Manifest, error)
}

// catalogTimeout bounds a catalog call whose context carries no deadline.
const catalogTimeout = 5 * time.Second

// Catalog stores manifests in the scalpel_catalog KV bucket: key = service, value = the manifest as
// JSON. The bucket's history keeps earlier revisions for audit; the revision Apply returns names the
// version of the manifest a decision was made under.
type Catalog struct {
	kv jetstream.KeyValue
}

// NewCatalog returns a catalog over an existing KV bucket (ingest's topology creates
// scalpel_catalog).
func NewCatalog(kv jetstream.KeyValue) *Catalog { return &Catalog{kv: kv} }

func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, catalogTimeout)
}

// Apply validates m and stores it under its service, replacing the previous manifest. It returns the
// KV revision of the write.
func (c *Catalog) Apply(ctx context.Context, m *schemas.Manifest) (uint64, error) {
	if m == nil {
		return 0, fmt.Errorf("%w: nil manifest", ErrInvalidManifest)
	}
	if err := m.Validate(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalidManifest, err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("encode manifest of %s: %w", m.Service, err)
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rev, err := c.kv.Put(ctx, m.Service, b)
	if err != nil {
		return 0, fmt.Errorf("store manifest of %s: %w", m.Service, err)
	}
	return rev, nil
}

// Manifest returns the service's current manifest, or an error wrapping ErrUnknownService.
func (c *Catalog) Manifest(ctx context.Context, service string) (*schemas.Manifest, error) {
	m, _, err := c.Get(ctx, service)
	return m, err
}

// Get returns the service's current manifest and its KV revision.
func (c *Catalog) Get(ctx context.Context, service string) (*schemas.Manifest, uint64, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	e, err := c.kv.Get(ctx, service)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, 0, fmt.Errorf("%w %q", ErrUnknownService, service)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read manifest of %s: %w", service, err)
	}
	var m schemas.Manifest
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return nil, 0, fmt.Errorf("%w: stored manifest of %s (revision %d): %w", ErrInvalidManifest, service, e.Revision(), err)
	}
	return &m, e.Revision(), nil
}

// List returns the services that have a manifest, sorted.
func (c *Catalog) List(ctx context.Context) ([]string, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	kl, err := c.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list catalog: %w", err)
	}
	defer func() { _ = kl.Stop() }()
	var out []string
	for k := range kl.Keys() {
		out = append(out, k)
	}
	slices.Sort(out)
	return out, nil
}

// Delete removes a service's manifest; the engine then holds that service's anomalies.
func (c *Catalog) Delete(ctx context.Context, service string) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	if err := c.kv.Delete(ctx, service); err != nil {
		return fmt.Errorf("delete manifest of %s: %w", service, err)
	}
	return nil
}

// StaticCatalog is an in-memory catalog keyed by service, for tests and for replay from a file.
type StaticCatalog map[string]*schemas.Manifest

// Manifest returns the service's manifest, or an error wrapping ErrUnknownService.
func (s StaticCatalog) Manifest(_ context.Context, service string) (*schemas.Manifest, error) {
	if m, ok := s[service]; ok && m != nil {
		return m, nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownService, service)
}

// NewStaticCatalog indexes manifests by service; a later manifest of the same service wins, as a
// later `catalog apply` would.
func NewStaticCatalog(ms ...*schemas.Manifest) StaticCatalog {
	s := make(StaticCatalog, len(ms))
	for _, m := range ms {
		if m != nil {
			s[m.Service] = m
		}
	}
	return s
}

// ApplyAll validates ms together with the rest of the catalog — every depends_on edge must name a
// component that exists (in ms or already stored) and the edges must not form a cycle — and only
// then stores them, so a bad file never half-applies. It returns the KV revision of each write.
func (c *Catalog) ApplyAll(ctx context.Context, ms []*schemas.Manifest) ([]uint64, error) {
	for _, m := range ms {
		if m == nil {
			return nil, fmt.Errorf("%w: nil manifest", ErrInvalidManifest)
		}
		if err := m.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidManifest, m.Service, err)
		}
	}
	_, stored, err := LoadGraph(ctx, c)
	if err != nil {
		return nil, err
	}
	byName := map[string]*schemas.Manifest{}
	for _, m := range stored {
		byName[m.Service] = m
	}
	for _, m := range ms {
		byName[m.Service] = m
	}
	all := make([]*schemas.Manifest, 0, len(byName))
	for _, m := range byName {
		all = append(all, m)
	}
	if err := BuildGraph(all).Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidManifest, err)
	}
	revs := make([]uint64, 0, len(ms))
	for _, m := range ms {
		rev, err := c.Apply(ctx, m)
		if err != nil {
			return revs, err
		}
		revs = append(revs, rev)
	}
	return revs, nil
}
