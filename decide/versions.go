package decide

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Where a version in the history came from.
const (
	sourceDeploy   = "deploy"   // announced by a DeployEvent
	sourceObserved = "observed" // seen serving traffic (an anomaly's version or baseline version)
)

// versionEntry says that from Since on, Version was what ran.
type versionEntry struct {
	Version  string
	Since    time.Time
	Source   string
	DeployID string
}

// versionLog is the history of one application, component or block, ordered by Since. Consecutive
// entries always differ in version: re-announcing the running version changes nothing.
type versionLog struct {
	entries []versionEntry
}

// add inserts e in time order, unless the version current at e.Since is already e.Version.
func (l *versionLog) add(e versionEntry) {
	i, _ := slices.BinarySearchFunc(l.entries, e.Since, func(x versionEntry, t time.Time) int {
		return x.Since.Compare(t)
	})
	// Entries with the same Since keep arrival order: insert after them.
	for i < len(l.entries) && l.entries[i].Since.Equal(e.Since) {
		i++
	}
	if i > 0 && l.entries[i-1].Version == e.Version {
		return
	}
	if i < len(l.entries) && l.entries[i].Version == e.Version {
		// The same version was seen later (observed, or a late-arriving deploy): this earlier
		// announcement is when it started, and a deploy is the better witness of who started it.
		l.entries[i].Since = e.Since
		if e.Source == sourceDeploy {
			l.entries[i].Source, l.entries[i].DeployID = e.Source, e.DeployID
		}
		return
	}
	l.entries = slices.Insert(l.entries, i, e)
}

// index returns the position of the entry current at t, or -1 when t precedes every entry.
func (l *versionLog) index(t time.Time) int {
	i := -1
	for j, e := range l.entries {
		if e.Since.After(t) {
			break
		}
		i = j
	}
	return i
}

// at returns the entry current at t.
func (l *versionLog) at(t time.Time) (versionEntry, bool) {
	if i := l.index(t); i >= 0 {
		return l.entries[i], true
	}
	return versionEntry{}, false
}

// find returns the index of the latest entry of version v that started at or before t, or -1.
func (l *versionLog) find(v string, t time.Time) int {
	for j := len(l.entries) - 1; j >= 0; j-- {
		if l.entries[j].Version == v && !l.entries[j].Since.After(t) {
			return j
		}
	}
	return -1
}

// previous returns the version that ran before entry i, skipping entries of the same version.
func (l *versionLog) previous(i int) (string, bool) {
	if i < 0 || i >= len(l.entries) {
		return "", false
	}
	for j := i - 1; j >= 0; j-- {
		if l.entries[j].Version != l.entries[i].Version {
			return l.entries[j].Version, true
		}
	}
	return "", false
}

// contains reports whether v ran at some point.
func (l *versionLog) contains(v string) bool {
	return slices.ContainsFunc(l.entries, func(e versionEntry) bool { return e.Version == v })
}

func (l *versionLog) empty() bool { return l == nil || len(l.entries) == 0 }

// serviceHistory is what ran when, for one service: the application, each component, each block.
//
// A component that no deploy ever listed on its own is versioned with the application (a deploy
// without a component list replaces every component), so its history is the application's.
type serviceHistory struct {
	// goodAfter is how long a version must have run to count as last known good.
	goodAfter time.Duration
	// bad holds "key@version" of versions an incident rolled back (key: "" for the application,
	// comp, or comp/block): they are never a rollback target again.
	bad    map[string]bool
	app    versionLog
	comps  map[string]*versionLog
	blocks map[string]*versionLog // key comp + "/" + block
	// placements holds, per component, where deploys said its blocks live in the versions they
	// shipped (see ranges.go).
	placements map[string][]placement
}

func newServiceHistory() *serviceHistory {
	return &serviceHistory{comps: map[string]*versionLog{}, blocks: map[string]*versionLog{}, bad: map[string]bool{}}
}

func blockKey(comp, block string) string { return comp + "/" + block }

// component returns the log that holds comp's versions: its own when a deploy or an observation gave
// it one, otherwise the application's.
func (h *serviceHistory) component(comp string) *versionLog {
	if l := h.comps[comp]; !l.empty() {
		return l
	}
	return &h.app
}

// block returns the block's own log, or nil when its versions were never announced (an unversioned
// block follows its component).
func (h *serviceHistory) block(comp, block string) *versionLog {
	if l := h.blocks[blockKey(comp, block)]; !l.empty() {
		return l
	}
	return nil
}

func (h *serviceHistory) ownComponent(comp string) *versionLog {
	l := h.comps[comp]
	if l == nil {
		l = &versionLog{}
		h.comps[comp] = l
	}
	return l
}

// recordDeploy adds the versions a deploy announced.
func (h *serviceHistory) recordDeploy(ev *schemas.DeployEvent) {
	h.recordPlacements(ev)
	h.app.add(versionEntry{Version: ev.AppVersion, Since: ev.TS, Source: sourceDeploy, DeployID: ev.ID})
	if len(ev.Components) == 0 {
		// The whole application was replaced: components with a history of their own move with it.
		for _, l := range h.comps {
			l.add(versionEntry{Version: ev.AppVersion, Since: ev.TS, Source: sourceDeploy, DeployID: ev.ID})
		}
		return
	}
	for _, c := range ev.Components {
		h.ownComponent(c.Component).add(versionEntry{Version: c.Version, Since: ev.TS, Source: sourceDeploy, DeployID: ev.ID})
		for _, b := range c.Blocks {
			k := blockKey(c.Component, b.Block)
			l := h.blocks[k]
			if l == nil {
				l = &versionLog{}
				h.blocks[k] = l
			}
			l.add(versionEntry{Version: b.Version, Since: ev.TS, Source: sourceDeploy, DeployID: ev.ID})
		}
	}
}

// recordObserved learns from an anomaly: its version ran at the anomaly's window, and its baseline
// version — what the detector compared it with — served traffic before. A version that served before
// is a valid rollback target even if no DeployEvent ever announced it (systems already running when
// scalpel was adopted).
//
// The anomaly's version may label the component or the whole application (telemetry's version is
// OpenTelemetry's service.version, which teams set either way). It is filed where it is already
// known; when it is known nowhere, in the component's own log if that exists, else in the
// application's.
func (h *serviceHistory) recordObserved(a *schemas.Anomaly) {
	if a.Version == "" {
		return
	}
	l := h.observedLog(a.Component, a.Version)
	cur := l.find(a.Version, a.TSDetected)
	if cur < 0 {
		if !l.empty() {
			// An unknown version next to a known history is more likely a label mismatch than a
			// deploy we missed; guessing its place would corrupt the history.
			return
		}
		from := a.Window.From
		if from.IsZero() || from.After(a.TSDetected) {
			from = a.TSDetected
		}
		l.add(versionEntry{Version: a.Version, Since: from, Source: sourceObserved})
		cur = l.find(a.Version, a.TSDetected)
	}
	bv := schemas.BaselineVersionOf(a.BaselineVersion) // a canary's says which cohort: "2.4.0 (cohort baseline)"
	if bv == "" || bv == a.Version || bv == schemas.CohortBaseline || bv == schemas.CohortCanary {
		return
	}
	if _, ok := l.previous(cur); ok || l.contains(bv) {
		return
	}
	l.add(versionEntry{Version: bv, Since: l.entries[cur].Since.Add(-time.Nanosecond), Source: sourceObserved})
}

func (h *serviceHistory) observedLog(comp, version string) *versionLog {
	own := h.comps[comp]
	switch {
	case !own.empty() && own.contains(version):
		return own
	case h.app.contains(version):
		return &h.app
	case !own.empty():
		return own
	}
	// Nothing known: the component's versions are the application's until a deploy lists it.
	return &h.app
}

// lastGood returns the rollback target for entry i of l (key names l for the bad set): the newest
// earlier version that ran at least goodAfter (or was observed as a healthy baseline) and that no
// incident rolled back. When none ran that long, the newest earlier version no incident rolled
// back. note explains a choice other than the immediately previous version, for the reason.
func (h *serviceHistory) lastGood(l *versionLog, i int, key string) (v, note string, ok bool) {
	if i < 0 || i >= len(l.entries) {
		return "", "", false
	}
	cur := l.entries[i].Version
	prev, short := "", ""
	var skipped []string
	for j := i - 1; j >= 0; j-- {
		en := l.entries[j]
		if en.Version == cur {
			continue
		}
		if prev == "" {
			prev = en.Version
		}
		if h.bad[key+"@"+en.Version] {
			skipped = append(skipped, en.Version+" (rolled back by an earlier incident)")
			continue
		}
		ran := l.entries[j+1].Since.Sub(en.Since)
		if en.Source == sourceObserved || ran >= h.goodAfter {
			if en.Version != prev {
				note = fmt.Sprintf("last known good version %s, skipping %s", en.Version, strings.Join(skipped, ", "))
			}
			return en.Version, note, true
		}
		if short == "" {
			short = en.Version
		}
		skipped = append(skipped, fmt.Sprintf("%s (ran only %s)", en.Version, age(ran)))
	}
	if short != "" {
		return short, fmt.Sprintf("no earlier version ran %s without an incident, so the newest one not rolled back, %s", age(h.goodAfter), short), true
	}
	return "", "", false
}

func (h *serviceHistory) markBad(key, version string) { h.bad[key+"@"+version] = true }
