package decide

import (
	"slices"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// deployLog keeps a service's recent deploys in event-time order.
type deployLog struct {
	deploys []*schemas.DeployEvent
}

// add records ev unless a deploy with the same id is already known (a redelivery); it keeps at most
// max deploys, dropping the oldest. It reports whether ev was new.
func (l *deployLog) add(ev *schemas.DeployEvent, max int) bool {
	if slices.ContainsFunc(l.deploys, func(d *schemas.DeployEvent) bool { return d.ID == ev.ID }) {
		return false
	}
	i, _ := slices.BinarySearchFunc(l.deploys, ev.TS, func(d *schemas.DeployEvent, t time.Time) int {
		return d.TS.Compare(t)
	})
	for i < len(l.deploys) && l.deploys[i].TS.Equal(ev.TS) {
		i++
	}
	l.deploys = slices.Insert(l.deploys, i, ev)
	if over := len(l.deploys) - max; over > 0 {
		l.deploys = slices.Delete(l.deploys, 0, over)
	}
	return true
}

// componentChange says what deploy d did to component comp: the version it left running and
// whether that version started with d. A deploy without a component list replaces every component
// with the application version.
func (h *serviceHistory) componentChange(d *schemas.DeployEvent, comp string) (to string, changed bool) {
	if len(d.Components) == 0 {
		return d.AppVersion, startedBy(h.component(comp), d.AppVersion, d)
	}
	for _, c := range d.Components {
		if c.Component == comp {
			return c.Version, startedBy(h.component(comp), c.Version, d)
		}
	}
	if e, ok := h.component(comp).at(d.TS); ok {
		return e.Version, false
	}
	return "", false
}

// blockChange says what deploy d did to block block of comp. ok is false when d announced no block
// versions for comp: its blocks are unversioned and follow the component.
func (h *serviceHistory) blockChange(d *schemas.DeployEvent, comp, block string) (to string, changed, ok bool) {
	for _, c := range d.Components {
		if c.Component != comp || len(c.Blocks) == 0 {
			continue
		}
		for _, b := range c.Blocks {
			if b.Block == block {
				l := h.block(comp, block)
				return b.Version, l != nil && startedBy(l, b.Version, d), true
			}
		}
		if l := h.block(comp, block); l != nil {
			if e, found := l.at(d.TS); found {
				return e.Version, false, true
			}
		}
		return "", false, true
	}
	return "", false, false
}

// startedBy reports whether version v started with deploy d in log l. A version d re-announced while
// it was already running did not change anything.
func startedBy(l *versionLog, v string, d *schemas.DeployEvent) bool {
	i := l.find(v, d.TS)
	return i >= 0 && l.entries[i].DeployID == d.ID
}

// attribution is what attribute found about the change behind an anomaly.
type attribution struct {
	// Deploy is the deploy the anomaly is attributed to: the newest one that changed the component
	// (open window first); when an open deploy exists that did not change it, that one.
	Deploy *schemas.DeployEvent
	// WindowOpen reports whether the anomaly was detected inside Deploy's rollback window.
	WindowOpen bool
	// Changed reports whether Deploy changed the component.
	Changed bool
	// WindowEnds is when Deploy's rollback window closes (closed).
	WindowEnds time.Time
}

// attribute finds the deploy behind an anomaly of comp detected at t, given the service's rollback
// window.
//
// A deploy stamped up to skew after t still explains the anomaly when it set the component to the
// anomaly's version: pipelines announce a deploy when the rollout starts or finishes, and the new
// version's first requests — and a regression gross enough to be caught within a second — may come
// before the announcement's timestamp. Any other later deploy cannot explain an earlier anomaly.
func (l *deployLog) attribute(h *serviceHistory, comp, version string, t time.Time, window, skew time.Duration) attribution {
	var openUnchanged, closedChanged *schemas.DeployEvent
	for i := len(l.deploys) - 1; i >= 0; i-- {
		d := l.deploys[i]
		if d.TS.After(t) {
			if to, changed := h.componentChange(d, comp); !changed || to != version || d.TS.Sub(t) > skew {
				continue
			}
			t = d.TS // judged as if detected at the announcement: the window opens there
		}
		open := !t.After(d.TS.Add(window))
		_, changed := h.componentChange(d, comp)
		switch {
		case open && changed:
			return attribution{Deploy: d, WindowOpen: true, Changed: true, WindowEnds: d.TS.Add(window)}
		case open && openUnchanged == nil:
			openUnchanged = d
		case !open && changed && closedChanged == nil:
			closedChanged = d
		}
	}
	if openUnchanged != nil {
		return attribution{Deploy: openUnchanged, WindowOpen: true, WindowEnds: openUnchanged.TS.Add(window)}
	}
	if closedChanged != nil {
		return attribution{Deploy: closedChanged, Changed: true, WindowEnds: closedChanged.TS.Add(window)}
	}
	return attribution{}
}
