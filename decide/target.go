package decide

import (
	"fmt"

	"github.com/scalpel-dev/scalpel/schemas"
)

// blockTarget is the fine target: the evidence's block, from the version the deploy gave it back to
// the one before. Blocks whose versions no deploy announced are unversioned: they follow their
// component, so from/to are the component's versions and the deployer switches only that block to
// the implementation registered under the component's previous version. why explains a failure.
func blockTarget(c *Case) (t schemas.DecisionTarget, why string, ok bool) {
	a, h, d := c.Anomaly, c.history, c.Attribution.Deploy
	if c.Block == "" {
		if c.BlockWhy != "" {
			return t, c.BlockWhy, false
		}
		return t, "the evidence names no block", false
	}
	t = schemas.DecisionTarget{Service: a.Service, Component: a.Component, Block: c.Block}
	var l *versionLog
	idx := -1
	if d != nil {
		to, changed, versioned := h.blockChange(d, a.Component, c.Block)
		if versioned {
			if !changed {
				return t, fmt.Sprintf("deploy %s did not change block %s", d.ID, c.Block), false
			}
			l = h.block(a.Component, c.Block)
			idx = l.find(to, d.TS)
		}
	} else if bl := h.block(a.Component, c.Block); bl != nil {
		l, idx = bl, bl.index(a.TSDetected)
	}
	if l == nil {
		ct, cwhy, cok := componentTarget(c)
		if !cok {
			return t, cwhy, false
		}
		t.FromVersion, t.ToVersion = ct.FromVersion, ct.ToVersion
		return t, "", true
	}
	if idx < 0 {
		return t, fmt.Sprintf("no version of block %s is known", c.Block), false
	}
	prev, note, ok := h.lastGood(l, idx, blockKey(a.Component, c.Block))
	if !ok {
		return t, fmt.Sprintf("there is no known previous version of block %s to go back to", c.Block), false
	}
	t.FromVersion, t.ToVersion = l.entries[idx].Version, prev
	c.goodNote = note
	return t, "", true
}

// componentTarget is the medium target: the component, from the version the deploy gave it (or the
// one running at detection when no deploy is known) back to the one before.
func componentTarget(c *Case) (schemas.DecisionTarget, string, bool) {
	a, h, d := c.Anomaly, c.history, c.Attribution.Deploy
	l := h.component(a.Component)
	idx := -1
	if d != nil {
		to, _ := h.componentChange(d, a.Component)
		idx = l.find(to, d.TS)
	} else {
		idx = l.index(a.TSDetected)
	}
	name := a.Service + "/" + a.Component
	if idx < 0 {
		return schemas.DecisionTarget{}, fmt.Sprintf("no version of %s is known (no deploy announced it and no anomaly observed it)", name), false
	}
	prev, note, ok := h.lastGood(l, idx, a.Component)
	if !ok {
		return schemas.DecisionTarget{}, fmt.Sprintf("there is no known previous version of %s to go back to (no earlier deploy or baseline version on record, or an incident rolled back every earlier one)", name), false
	}
	c.goodNote = note
	return schemas.DecisionTarget{Service: a.Service, Component: a.Component, FromVersion: l.entries[idx].Version, ToVersion: prev}, "", true
}

// appTarget is the coarse target: the application, from the deploy's app version back to the one
// before.
func appTarget(c *Case) (schemas.DecisionTarget, string, bool) {
	a, h, d := c.Anomaly, c.history, c.Attribution.Deploy
	idx := -1
	if d != nil {
		idx = h.app.find(d.AppVersion, d.TS)
	} else {
		idx = h.app.index(a.TSDetected)
	}
	if idx < 0 {
		return schemas.DecisionTarget{}, fmt.Sprintf("no application version of %s is known", a.Service), false
	}
	prev, note, ok := h.lastGood(&h.app, idx, "")
	if !ok {
		return schemas.DecisionTarget{}, fmt.Sprintf("there is no known previous application version of %s to go back to", a.Service), false
	}
	c.goodNote = note
	return schemas.DecisionTarget{Service: a.Service, FromVersion: h.app.entries[idx].Version, ToVersion: prev}, "", true
}
