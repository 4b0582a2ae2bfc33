package config

import (
	"errors"
	"fmt"
	"slices"
	"sort"
)

// validate checks the actuate section: known actuator names, and for every service that uses the
// webhook or exec actuator, settings that can build one.
func (a *Actuate) validate() []error {
	var errs []error
	uses := map[string]bool{} // actuator name → used by Default
	check := func(where string, names []string) {
		for _, n := range names {
			if !slices.Contains(KnownActuators, n) {
				errs = append(errs, fmt.Errorf("%s: unknown actuator %q (known: %v)", where, n, KnownActuators))
			}
		}
	}
	check("actuate.default", a.Default)
	for _, n := range a.Default {
		uses[n] = true
	}
	services := make([]string, 0, len(a.Services))
	for svc := range a.Services {
		services = append(services, svc)
	}
	sort.Strings(services)
	for _, svc := range services {
		check("actuate.services."+svc, a.Services[svc])
	}
	if a.CommandTTL < 0 {
		errs = append(errs, errors.New("actuate.command_ttl: must be >= 0"))
	}
	if err := a.HandOff.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("actuate.handoff: %w", err))
	}

	// A service's settings must be complete where it uses the actuator: through Default (then the
	// default settings must be), through its Services entry, or wherever settings were written.
	usesActuator := func(svc, name string) bool {
		if names, ok := a.Services[svc]; ok {
			return slices.Contains(names, name)
		}
		return uses[name]
	}
	if uses["webhook"] || a.Webhook.Default.URL != "" {
		if err := a.Webhook.For("").Validate(); err != nil {
			errs = append(errs, fmt.Errorf("actuate.webhook.default: %w", err))
		}
	}
	for _, svc := range sortedKeys(a.Webhook.Services) {
		if err := a.Webhook.For(svc).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("actuate.webhook.services.%s: %w", svc, err))
		}
	}
	if uses["exec"] || len(a.Exec.Default.Argv) > 0 {
		if err := a.Exec.For("").Validate(); err != nil {
			errs = append(errs, fmt.Errorf("actuate.exec.default: %w", err))
		}
	}
	for _, svc := range sortedKeys(a.Exec.Services) {
		if err := a.Exec.For(svc).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("actuate.exec.services.%s: %w", svc, err))
		}
	}
	for _, svc := range services {
		if usesActuator(svc, "webhook") {
			if _, ok := a.Webhook.Services[svc]; !ok && a.Webhook.Default.URL == "" {
				errs = append(errs, fmt.Errorf("actuate.services.%s uses webhook, but neither actuate.webhook.services.%s nor actuate.webhook.default has a url", svc, svc))
			}
		}
		if usesActuator(svc, "exec") {
			if _, ok := a.Exec.Services[svc]; !ok && len(a.Exec.Default.Argv) == 0 {
				errs = append(errs, fmt.Errorf("actuate.services.%s uses exec, but neither actuate.exec.services.%s nor actuate.exec.default has an argv", svc, svc))
			}
		}
	}
	return errs
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
