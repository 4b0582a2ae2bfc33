// Package openfeature is an OpenFeature provider (github.com/open-feature/go-sdk) over scalpel's
// scalpel_active bucket, for services that already read their switches through OpenFeature: the
// version a block or function should run is a string flag, whether it is enabled a boolean flag,
// and a rollback is a flag change the SDK announces with PROVIDER_CONFIGURATION_CHANGED.
//
// Flag keys are the bucket's keys relative to the service: "pricing.discount" for block discount
// of component pricing, "pricing" for the component, "" is not a flag. A target scalpel never
// touched has no key: evaluations return the caller's default with reason DEFAULT, because "no
// rollback happened" is the normal state, not an error.
//
// Acks are not sent from here: a service that switches through OpenFeature flags acks with the
// deployer package, or leaves the ack to whoever applies the switch.
package openfeature

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	of "github.com/open-feature/go-sdk/openfeature"

	"github.com/scalpel-dev/scalpel/schemas"
)

// ProviderName is the provider's name in OpenFeature metadata and events.
const ProviderName = "scalpel"

// Provider resolves flags from scalpel_active. It holds a snapshot of the service's keys, kept
// current by a KV watcher, so an evaluation is a map lookup with no I/O.
type Provider struct {
	js      jetstream.JetStream
	service string

	snap   atomic.Pointer[map[string]schemas.ActiveVersion]
	events chan of.Event

	mu      sync.Mutex
	watcher jetstream.KeyWatcher
	cancel  context.CancelFunc
	done    chan struct{}
}

var (
	_ of.FeatureProvider          = (*Provider)(nil)
	_ of.ContextAwareStateHandler = (*Provider)(nil)
	_ of.EventHandler             = (*Provider)(nil)
)

// New returns a provider for service on js. It reads nothing until the OpenFeature SDK calls Init
// (of.SetProviderAndWait does).
func New(js jetstream.JetStream, service string) (*Provider, error) {
	if js == nil {
		return nil, errors.New("openfeature: nil JetStream")
	}
	if !schemas.IsName(service) {
		return nil, fmt.Errorf("openfeature: service %q is not a valid name", service)
	}
	p := &Provider{js: js, service: service, events: make(chan of.Event, 64)}
	empty := map[string]schemas.ActiveVersion{}
	p.snap.Store(&empty)
	return p, nil
}

// Metadata names the provider.
func (p *Provider) Metadata() of.Metadata { return of.Metadata{Name: ProviderName} }

// Hooks returns none.
func (p *Provider) Hooks() []of.Hook { return nil }

// EventChannel carries configuration changes (a rollback) after Init.
func (p *Provider) EventChannel() <-chan of.Event { return p.events }

// Init reads the service's desired state and starts following it.
func (p *Provider) Init(ec of.EvaluationContext) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return p.InitWithContext(ctx, ec)
}

// InitWithContext reads the service's desired state (bounded by ctx) and starts following it.
func (p *Provider) InitWithContext(ctx context.Context, _ of.EvaluationContext) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.watcher != nil {
		return nil
	}
	kv, err := p.js.KeyValue(ctx, schemas.BucketActive)
	if err != nil {
		return fmt.Errorf("openfeature: open %s: %w", schemas.BucketActive, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	w, err := kv.WatchFiltered(runCtx, []string{p.service + ".>"})
	if err != nil {
		cancel()
		return fmt.Errorf("openfeature: watch %s: %w", schemas.BucketActive, err)
	}
	cur := map[string]schemas.ActiveVersion{}
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case e, ok = <-w.Updates():
		case <-ctx.Done():
			_ = w.Stop()
			cancel()
			return fmt.Errorf("openfeature: reading desired state: %w", ctx.Err())
		}
		if !ok {
			cancel()
			return errors.New("openfeature: watcher closed during start-up")
		}
		if e == nil {
			break
		}
		p.apply(cur, e)
	}
	p.snap.Store(&cur)
	p.watcher, p.cancel, p.done = w, cancel, make(chan struct{})
	go p.follow(runCtx, w, p.done)
	return nil
}

// Shutdown stops following.
func (p *Provider) Shutdown() { _ = p.ShutdownWithContext(context.Background()) }

// ShutdownWithContext stops following, waiting (bounded by ctx) for the watcher to end.
func (p *Provider) ShutdownWithContext(ctx context.Context) error {
	p.mu.Lock()
	w, cancel, done := p.watcher, p.cancel, p.done
	p.watcher = nil
	p.mu.Unlock()
	if w == nil {
		return nil
	}
	_ = w.Stop()
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Provider) follow(ctx context.Context, w jetstream.KeyWatcher, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				continue
			}
			// Copy on write: evaluations read the old map until the new one is stored.
			next := make(map[string]schemas.ActiveVersion, len(*p.snap.Load())+1)
			for k, v := range *p.snap.Load() {
				next[k] = v
			}
			flag := p.apply(next, e)
			p.snap.Store(&next)
			if flag == "" {
				continue
			}
			ev := of.Event{ProviderName: ProviderName, EventType: of.ProviderConfigChange,
				ProviderEventDetails: of.ProviderEventDetails{Message: "scalpel changed " + flag, FlagChanges: []string{flag}}}
			select {
			case p.events <- ev:
			default: // nobody listening fast enough; the snapshot is current regardless
			}
		}
	}
}

// apply folds one entry into m and returns the flag it changed ("" when none).
func (p *Provider) apply(m map[string]schemas.ActiveVersion, e jetstream.KeyValueEntry) string {
	flag, ok := strings.CutPrefix(e.Key(), p.service+".")
	if !ok || flag == "" {
		return ""
	}
	if e.Operation() != jetstream.KeyValuePut {
		delete(m, flag)
		return flag
	}
	var av schemas.ActiveVersion
	if err := json.Unmarshal(e.Value(), &av); err != nil {
		return "" // unreadable: keep what we had; the next write repairs it
	}
	m[flag] = av
	return flag
}

func (p *Provider) lookup(flag string) (schemas.ActiveVersion, bool) {
	av, ok := (*p.snap.Load())[flag]
	return av, ok
}

func detail(av schemas.ActiveVersion, variant string) of.ProviderResolutionDetail {
	return of.ProviderResolutionDetail{Reason: of.TargetingMatchReason, Variant: variant,
		FlagMetadata: of.FlagMetadata{"command_id": av.CommandID, "decision_id": av.DecisionID,
			"incident_id": av.IncidentID, "action": av.Action, "from_version": av.FromVersion}}
}

// StringEvaluation resolves the version a block or component should run.
func (p *Provider) StringEvaluation(_ context.Context, flag string, def string, _ of.FlattenedContext) of.StringResolutionDetail {
	av, ok := p.lookup(flag)
	if !ok {
		return of.StringResolutionDetail{Value: def, ProviderResolutionDetail: of.ProviderResolutionDetail{Reason: of.DefaultReason}}
	}
	if av.Action == schemas.ActionDisable && av.Version == "" {
		return of.StringResolutionDetail{Value: def, ProviderResolutionDetail: of.ProviderResolutionDetail{Reason: of.DisabledReason, Variant: "disabled"}}
	}
	return of.StringResolutionDetail{Value: av.Version, ProviderResolutionDetail: detail(av, av.Version)}
}

// BooleanEvaluation resolves whether a block or component is enabled: false once scalpel disabled
// it, until a later command enables or restores it.
func (p *Provider) BooleanEvaluation(_ context.Context, flag string, def bool, _ of.FlattenedContext) of.BoolResolutionDetail {
	av, ok := p.lookup(flag)
	if !ok {
		return of.BoolResolutionDetail{Value: def, ProviderResolutionDetail: of.ProviderResolutionDetail{Reason: of.DefaultReason}}
	}
	enabled := av.Action != schemas.ActionDisable
	variant := "enabled"
	if !enabled {
		variant = "disabled"
	}
	return of.BoolResolutionDetail{Value: enabled, ProviderResolutionDetail: detail(av, variant)}
}

// FloatEvaluation: versions are strings.
func (p *Provider) FloatEvaluation(_ context.Context, flag string, def float64, _ of.FlattenedContext) of.FloatResolutionDetail {
	return of.FloatResolutionDetail{Value: def, ProviderResolutionDetail: mismatch(flag, "float")}
}

// IntEvaluation: versions are strings.
func (p *Provider) IntEvaluation(_ context.Context, flag string, def int64, _ of.FlattenedContext) of.IntResolutionDetail {
	return of.IntResolutionDetail{Value: def, ProviderResolutionDetail: mismatch(flag, "int")}
}

// ObjectEvaluation resolves the whole desired-state record (schemas.ActiveVersion).
func (p *Provider) ObjectEvaluation(_ context.Context, flag string, def any, _ of.FlattenedContext) of.InterfaceResolutionDetail {
	av, ok := p.lookup(flag)
	if !ok {
		return of.InterfaceResolutionDetail{Value: def, ProviderResolutionDetail: of.ProviderResolutionDetail{Reason: of.DefaultReason}}
	}
	return of.InterfaceResolutionDetail{Value: av, ProviderResolutionDetail: detail(av, av.Version)}
}

func mismatch(flag, typ string) of.ProviderResolutionDetail {
	return of.ProviderResolutionDetail{Reason: of.ErrorReason,
		ResolutionError: of.NewTypeMismatchResolutionError(fmt.Sprintf("scalpel flag %q is a version (string) or enabled (bool), not %s", flag, typ))}
}
