package decide

import (
	"fmt"
	"slices"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// placement is where one deploy said the blocks of a component live in the version it shipped:
// the line ranges of that version, which a refactor may have moved away from the catalog's.
type placement struct {
	TS         time.Time
	DeployID   string
	Version    string // the component's version in the deploy
	AppVersion string // the deploy's application version (telemetry may label either)
	Blocks     []schemas.ManifestBlock
}

// recordPlacements keeps the block ranges a deploy gave, per component, in event-time order. Only
// deploys that placed at least one block are kept: a version whose deploy gave none is mapped with
// the catalog's ranges.
func (h *serviceHistory) recordPlacements(ev *schemas.DeployEvent) {
	for _, c := range ev.Components {
		var bs []schemas.ManifestBlock
		for _, b := range c.Blocks {
			if b.File != "" {
				bs = append(bs, schemas.ManifestBlock{Block: b.Block, File: b.File, Lines: b.Lines})
			}
		}
		if len(bs) == 0 {
			continue
		}
		if h.placements == nil {
			h.placements = map[string][]placement{}
		}
		ps := h.placements[c.Component]
		i, _ := slices.BinarySearchFunc(ps, ev.TS, func(p placement, t time.Time) int { return p.TS.Compare(t) })
		for i < len(ps) && ps[i].TS.Equal(ev.TS) {
			i++
		}
		h.placements[c.Component] = slices.Insert(ps, i, placement{TS: ev.TS, DeployID: ev.ID, Version: c.Version, AppVersion: ev.AppVersion, Blocks: bs})
	}
}

// placementOf returns the block ranges of comp at version v: those of the newest deploy at or
// before t that shipped v (as the component's or the application's version) and placed blocks.
func (h *serviceHistory) placementOf(comp, v string, t time.Time) (placement, bool) {
	ps := h.placements[comp]
	for i := len(ps) - 1; i >= 0; i-- {
		p := ps[i]
		if !p.TS.After(t) && v != "" && (p.Version == v || p.AppVersion == v) {
			return p, true
		}
	}
	return placement{}, false
}

// siteMap maps the error sites of one component version to blocks: through the ranges the deploy of
// that version gave, then — for blocks that deploy did not place — through the catalog's.
type siteMap struct {
	version string
	placed  *placement
	own     schemas.ManifestComponent // the deploy's ranges
	catalog schemas.ManifestComponent // the catalog's ranges of blocks the deploy did not place
	// usedCatalog is set once a site mapped through the catalog's ranges although the deploy
	// placed other blocks: the reason says so.
	usedCatalog bool
}

func newSiteMap(h *serviceHistory, a *schemas.Anomaly, comp *schemas.ManifestComponent) *siteMap {
	m := &siteMap{version: a.Version}
	if p, ok := h.placementOf(a.Component, a.Version, a.TSDetected); ok {
		m.placed = &p
		m.own.Blocks = p.Blocks
	}
	if comp != nil {
		for _, b := range comp.Blocks {
			if m.placed == nil || !slices.ContainsFunc(m.placed.Blocks, func(x schemas.ManifestBlock) bool { return x.Block == b.Block }) {
				m.catalog.Blocks = append(m.catalog.Blocks, b)
			}
		}
	}
	return m
}

// block maps one error site.
func (m *siteMap) block(site string) (string, bool) {
	if b, ok := m.own.BlockForSite(site); ok {
		return b, true
	}
	b, ok := m.catalog.BlockForSite(site)
	if ok && m.placed != nil {
		m.usedCatalog = true
	}
	return b, ok
}

// note says whose line ranges mapped the sites, for the reason.
func (m *siteMap) note() string {
	switch {
	case m.placed == nil:
		return fmt.Sprintf("error sites mapped through the catalog's line ranges, as no deploy gave ranges for version %s", m.version)
	case m.usedCatalog:
		return fmt.Sprintf("error sites mapped through the line ranges deploy %s gave for version %s, and the catalog's for blocks it did not place", m.placed.DeployID, m.version)
	default:
		return fmt.Sprintf("error sites mapped through the line ranges deploy %s gave for version %s", m.placed.DeployID, m.version)
	}
}
