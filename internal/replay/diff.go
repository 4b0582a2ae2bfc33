package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Diff compares what a replay decided with what was recorded live. Decisions are matched first by
// id (ids are derived from what a decision is about, so the same decision carries the same id),
// then, among the rest, by what they do: incident, action and targets.
type Diff struct {
	// Identical is true when every decision and anomaly matched byte for byte (as JSON).
	Identical bool `json:"identical"`
	// Same counts decisions identical to their recorded twin.
	Same int `json:"same"`
	// Changed pairs a replayed decision with a recorded one that it matched but differs from.
	Changed []Change `json:"changed,omitempty"`
	// Added are decisions only the replay made: what the config would have done in addition.
	Added []schemas.Decision `json:"added,omitempty"`
	// Removed are recorded decisions the replay did not make.
	Removed []schemas.Decision `json:"removed,omitempty"`
	// Anomalies compares the detector's output the same way, by id.
	Anomalies AnomalyDiff `json:"anomalies"`
}

// Change is a replayed decision that matched a recorded one but differs in Fields.
type Change struct {
	MatchedBy string            `json:"matched_by"` // id | incident+action+targets
	Replayed  schemas.Decision  `json:"replayed"`
	Recorded  schemas.Decision  `json:"recorded"`
	Fields    []string          `json:"fields"`
	Values    map[string][2]any `json:"values,omitempty"` // field → [replayed, recorded]
}

// AnomalyDiff compares anomalies by id (and status).
type AnomalyDiff struct {
	Same    int               `json:"same"`
	Changed []string          `json:"changed,omitempty"` // ids
	Added   []schemas.Anomaly `json:"added,omitempty"`
	Removed []schemas.Anomaly `json:"removed,omitempty"`
}

// Empty reports whether nothing differs.
func (d *Diff) Empty() bool {
	return len(d.Changed) == 0 && len(d.Added) == 0 && len(d.Removed) == 0 &&
		len(d.Anomalies.Changed) == 0 && len(d.Anomalies.Added) == 0 && len(d.Anomalies.Removed) == 0
}

func decisionKey(d *schemas.Decision) string {
	var b strings.Builder
	b.WriteString(d.IncidentID + "|" + d.Action)
	for _, t := range d.Targets {
		fmt.Fprintf(&b, "|%s/%s/%s:%s>%s", t.Service, t.Component, t.Block, t.FromVersion, t.ToVersion)
	}
	return b.String()
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// Compare diffs replayed against recorded decisions and anomalies.
func Compare(replayed, recorded []schemas.Decision, replayedA, recordedA []schemas.Anomaly) *Diff {
	d := &Diff{}
	byID := map[string]int{}
	for i := range recorded {
		byID[recorded[i].ID] = i
	}
	used := make([]bool, len(recorded))
	var rest []int
	for i := range replayed {
		j, ok := byID[replayed[i].ID]
		if !ok || used[j] {
			rest = append(rest, i)
			continue
		}
		used[j] = true
		d.pair("id", &replayed[i], &recorded[j])
	}
	byKey := map[string][]int{}
	for j := range recorded {
		if !used[j] {
			k := decisionKey(&recorded[j])
			byKey[k] = append(byKey[k], j)
		}
	}
	for _, i := range rest {
		k := decisionKey(&replayed[i])
		if js := byKey[k]; len(js) > 0 {
			j := js[0]
			byKey[k] = js[1:]
			used[j] = true
			d.pair("incident+action+targets", &replayed[i], &recorded[j])
			continue
		}
		d.Added = append(d.Added, replayed[i])
	}
	for j := range recorded {
		if !used[j] {
			d.Removed = append(d.Removed, recorded[j])
		}
	}

	aByID := map[string]*schemas.Anomaly{}
	for i := range recordedA {
		aByID[recordedA[i].ID+"/"+recordedA[i].Status] = &recordedA[i]
	}
	seen := map[string]bool{}
	for i := range replayedA {
		k := replayedA[i].ID + "/" + replayedA[i].Status
		rec, ok := aByID[k]
		if !ok {
			d.Anomalies.Added = append(d.Anomalies.Added, replayedA[i])
			continue
		}
		seen[k] = true
		if bytes.Equal(mustJSON(&replayedA[i]), mustJSON(rec)) {
			d.Anomalies.Same++
		} else {
			d.Anomalies.Changed = append(d.Anomalies.Changed, replayedA[i].ID)
		}
	}
	for i := range recordedA {
		if !seen[recordedA[i].ID+"/"+recordedA[i].Status] {
			d.Anomalies.Removed = append(d.Anomalies.Removed, recordedA[i])
		}
	}
	d.Identical = d.Empty()
	return d
}

func (d *Diff) pair(by string, rep, rec *schemas.Decision) {
	a, b := mustJSON(rep), mustJSON(rec)
	if bytes.Equal(a, b) {
		d.Same++
		return
	}
	var ma, mb map[string]any
	_ = json.Unmarshal(a, &ma)
	_ = json.Unmarshal(b, &mb)
	c := Change{MatchedBy: by, Replayed: *rep, Recorded: *rec, Values: map[string][2]any{}}
	keys := map[string]bool{}
	for k := range ma {
		keys[k] = true
	}
	for k := range mb {
		keys[k] = true
	}
	for k := range keys {
		if !bytes.Equal(mustJSON(ma[k]), mustJSON(mb[k])) {
			c.Fields = append(c.Fields, k)
			c.Values[k] = [2]any{ma[k], mb[k]}
		}
	}
	slices.Sort(c.Fields)
	d.Changed = append(d.Changed, c)
}

// Lines renders the diff for a terminal, one line per difference.
func (d *Diff) Lines() []string {
	var out []string
	for _, c := range d.Changed {
		out = append(out, fmt.Sprintf("~ %s %s (matched by %s): %s differ", c.Replayed.TS.Format("15:04:05"), decisionSummary(&c.Replayed), c.MatchedBy, strings.Join(c.Fields, ", ")))
	}
	for i := range d.Added {
		out = append(out, fmt.Sprintf("+ %s would decide: %s", d.Added[i].TS.Format("15:04:05"), decisionSummary(&d.Added[i])))
	}
	for i := range d.Removed {
		out = append(out, fmt.Sprintf("- %s would not decide: %s", d.Removed[i].TS.Format("15:04:05"), decisionSummary(&d.Removed[i])))
	}
	for i := range d.Anomalies.Added {
		a := &d.Anomalies.Added[i]
		out = append(out, fmt.Sprintf("+ %s would detect: %s", a.TSDetected.Format("15:04:05"), anomalySummary(a)))
	}
	for i := range d.Anomalies.Removed {
		a := &d.Anomalies.Removed[i]
		out = append(out, fmt.Sprintf("- %s would not detect: %s", a.TSDetected.Format("15:04:05"), anomalySummary(a)))
	}
	for _, id := range d.Anomalies.Changed {
		out = append(out, "~ anomaly "+id+" differs")
	}
	return out
}
