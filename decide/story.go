package decide

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Story is one incident told from its audit trail: every decision in order with the commands it
// implied, what the deployers answered and what people approved. It is what `scalpel decisions
// --incident ID` prints — in words with String, as is with -o json.
type Story struct {
	IncidentID string `json:"incident_id"`
	Service    string `json:"service"`
	// State is the incident's state as the trail tells it: open, held, awaiting approval,
	// mitigating, mitigated, failed, resolved, closed (a recommendation rejected or expired), or
	// dry run (acting steps that were only recorded).
	State    string      `json:"state"`
	Opened   time.Time   `json:"opened"`
	DeployID string      `json:"deploy_id,omitempty"`
	Steps    []StoryStep `json:"steps"`
}

// StoryStep is one decision of the incident with what followed from it.
type StoryStep struct {
	Decision  schemas.Decision   `json:"decision"`
	Commands  []StoryCommand     `json:"commands"`
	Approvals []schemas.Approval `json:"approvals"`
}

// StoryCommand is a command a decision implies (actuate derives the same id), whether it was seen
// on rollback.cmd.<svc>, and the deployers' acks of it.
type StoryCommand struct {
	ID          string                `json:"id"`
	Action      string                `json:"action"`
	Service     string                `json:"service"`
	Target      string                `json:"target"`
	FromVersion string                `json:"from_version"`
	ToVersion   string                `json:"to_version"`
	Published   bool                  `json:"published"`
	Acks        []schemas.RollbackAck `json:"acks"`
}

// NewStory assembles incident's story from the decisions, commands, acks and approvals read from
// the streams; inputs may hold other incidents' records and redeliveries, which are left out.
// Decisions are told in event-time order (ladder step order on ties).
func NewStory(incident string, decisions []schemas.Decision, commands []schemas.RollbackCommand, acks []schemas.RollbackAck, approvals []schemas.Approval) Story {
	s := Story{IncidentID: incident, Steps: []StoryStep{}}
	seen := map[string]bool{}
	var ds []schemas.Decision
	for _, d := range decisions {
		if d.IncidentID == incident && !seen[d.ID] {
			seen[d.ID] = true
			ds = append(ds, d)
		}
	}
	slices.SortStableFunc(ds, func(a, b schemas.Decision) int { return a.TS.Compare(b.TS) })
	published := map[string]bool{}
	for _, c := range commands {
		published[c.ID] = true
	}
	acksOf := map[string][]schemas.RollbackAck{}
	for _, a := range acks {
		if !slices.Contains(acksOf[a.CommandID], a) {
			acksOf[a.CommandID] = append(acksOf[a.CommandID], a)
		}
	}
	for _, d := range ds {
		if s.Service == "" {
			s.Service, s.Opened = d.Service, d.TS
		}
		if s.DeployID == "" {
			s.DeployID = d.DeployID
		}
		st := StoryStep{Decision: d, Commands: []StoryCommand{}, Approvals: []schemas.Approval{}}
		if !d.DryRun && changesVersions(d.Action) {
			for id, t := range commandIDs(&d) {
				c := StoryCommand{ID: id, Action: planActionOf(&d, t), Service: cmp.Or(t.Service, d.Service), Target: targetName(withService(t, d.Service)),
					FromVersion: t.FromVersion, ToVersion: t.ToVersion, Published: published[id], Acks: acksOf[id]}
				slices.SortStableFunc(c.Acks, func(a, b schemas.RollbackAck) int {
					return cmp.Or(a.TS.Compare(b.TS), cmp.Compare(a.Instance, b.Instance))
				})
				if c.Acks == nil {
					c.Acks = []schemas.RollbackAck{}
				}
				st.Commands = append(st.Commands, c)
			}
			step := func(c StoryCommand) int {
				for _, t := range d.Targets {
					if targetName(withService(t, d.Service)) == c.Target {
						return t.Step
					}
				}
				return 0
			}
			slices.SortFunc(st.Commands, func(a, b StoryCommand) int {
				return cmp.Or(cmp.Compare(step(a), step(b)), cmp.Compare(a.Target, b.Target))
			})
		}
		for _, ap := range approvals {
			if ap.DecisionID == d.ID && !slices.ContainsFunc(st.Approvals, func(x schemas.Approval) bool { return x.ID == ap.ID }) {
				st.Approvals = append(st.Approvals, ap)
			}
		}
		slices.SortStableFunc(st.Approvals, func(a, b schemas.Approval) int { return a.TS.Compare(b.TS) })
		s.Steps = append(s.Steps, st)
	}
	s.State = storyState(ds)
	return s
}

func withService(t schemas.DecisionTarget, svc string) schemas.DecisionTarget {
	t.Service = cmp.Or(t.Service, svc)
	return t
}

// storyState follows the incident's lifecycle through its decisions, as the engine does.
func storyState(ds []schemas.Decision) string {
	state := IncidentOpen
	if len(ds) == 0 {
		return "unknown"
	}
	for _, d := range ds {
		switch d.Action {
		case schemas.ActionRollback, schemas.ActionEscalate, schemas.ActionDisable:
			switch {
			case len(d.Targets) == 0:
				state = IncidentFailed
			case d.DryRun:
				state = "dry run"
			default:
				state = IncidentMitigating
			}
		case schemas.ActionRecommend:
			state = "awaiting approval"
		case schemas.ActionHold:
			if state == IncidentOpen {
				state = "held"
			}
		case schemas.ActionRestore, schemas.ActionEnable:
			state = IncidentResolved
		case schemas.ActionNone:
			switch state {
			case IncidentMitigating:
				state = IncidentMitigated
			case "awaiting approval":
				state = "closed"
			case IncidentOpen, "held":
				state = "closed"
			}
		}
	}
	return state
}

// String tells the story in words a person reads at 3 a.m.: what degraded against which baseline
// and what was changed (the decision's reason says both), why this granularity, what the plan
// touches, which guard held it, what the deployers answered and who approved.
func (s Story) String() string {
	var b strings.Builder
	if len(s.Steps) == 0 {
		fmt.Fprintf(&b, "Incident %s: no decisions recorded.\n", s.IncidentID)
		return b.String()
	}
	fmt.Fprintf(&b, "Incident %s\n", s.IncidentID)
	fmt.Fprintf(&b, "  service:  %s\n", s.Service)
	fmt.Fprintf(&b, "  state:    %s\n", s.State)
	fmt.Fprintf(&b, "  opened:   %s\n", stamp(s.Opened))
	if s.DeployID != "" {
		fmt.Fprintf(&b, "  deploy:   %s\n", s.DeployID)
	}
	fmt.Fprintf(&b, "  steps:    %d\n", len(s.Steps))
	for i, st := range s.Steps {
		d := st.Decision
		b.WriteString("\n")
		head := d.Action
		if d.Granularity != "" {
			head += ", " + d.Granularity
		}
		if d.DryRun {
			head += ", DRY RUN"
		}
		fmt.Fprintf(&b, "Step %d  %s  %s  (decision %s)\n", i+1, stamp(d.TS), head, d.ID)
		wrap(&b, d.Reason, "  ", 100)
		// Policy lines belong to the decisions the policy made; a mitigation or a restore only
		// reports what happened.
		if policyDecision(d.Action) {
			if why := granularityWhy(d); why != "" {
				fmt.Fprintf(&b, "  Granularity: %s\n", why)
			}
			window := "closed (a person must approve)"
			if d.Policy.WindowOpen {
				window = "open (automatic action allowed)"
			}
			fmt.Fprintf(&b, "  Rollback window: %s.\n", window)
		}
		switch {
		case len(d.Policy.GuardsHit) > 0:
			fmt.Fprintf(&b, "  Guards hit: %s.\n", strings.Join(d.Policy.GuardsHit, ", "))
		case policyDecision(d.Action):
			b.WriteString("  Guards hit: none.\n")
		}
		if len(d.Plan) > 0 {
			b.WriteString("  Plan:\n")
			for _, p := range d.Plan {
				fmt.Fprintf(&b, "    %d. %s\n", p.Step, planLine(p, d.Service))
			}
		}
		switch {
		case d.DryRun && changesVersions(d.Action) && len(d.Targets) > 0:
			b.WriteString("  Dry run: recorded only; no command was sent and nothing changed.\n")
		case len(st.Commands) > 0:
			b.WriteString("  Commands:\n")
			for _, c := range st.Commands {
				fmt.Fprintf(&b, "    - %s %s %s → %s (command %s): %s\n", c.Action, c.Target, c.FromVersion, c.ToVersion, c.ID, commandOutcome(c))
			}
		}
		for _, ap := range st.Approvals {
			verb := "rejected"
			if ap.Approve {
				verb = "approved"
			}
			line := fmt.Sprintf("  %s %s it at %s", cmp.Or(ap.Actor, "someone"), verb, stamp(ap.TS))
			if ap.Reason != "" {
				line += fmt.Sprintf(": %q", ap.Reason)
			}
			b.WriteString(line + ".\n")
		}
		if d.Action == schemas.ActionRecommend && len(st.Approvals) == 0 {
			fmt.Fprintf(&b, "  Waiting for a person: `scalpel approve %s` or `scalpel reject %s`.\n", d.ID, d.ID)
		}
	}
	return b.String()
}

// granularityWhy finds the sentence of the reason that explains the granularity ("tagged fine",
// "falls back", "Escalating from").
func granularityWhy(d schemas.Decision) string {
	if d.Granularity == "" || len(d.Targets) == 0 {
		return ""
	}
	switch {
	case strings.Contains(d.Reason, "Escalating from"):
		return fmt.Sprintf("%s, because the previous level did not fix it (see the reason).", d.Granularity)
	case strings.Contains(d.Reason, "is tagged fine but"):
		return fmt.Sprintf("%s: the component is tagged fine, but no block could be singled out.", d.Granularity)
	case strings.Contains(d.Reason, "is tagged "):
		return fmt.Sprintf("%s, as the catalog tags the component.", d.Granularity)
	}
	return d.Granularity + "."
}

func planLine(p schemas.PlanStep, svc string) string {
	line := p.Action + " " + targetName(schemas.DecisionTarget{Service: cmp.Or(p.Service, svc), Component: p.Component, Block: p.Block})
	if p.FromVersion != "" || p.ToVersion != "" {
		line += fmt.Sprintf(" %s → %s", dashIfEmpty(p.FromVersion), dashIfEmpty(p.ToVersion))
	}
	if p.Edge != "" {
		edge := p.Edge
		if _, to, ok := strings.Cut(edge, " depends_on "); ok {
			edge = "depends on " + to
		}
		line += " (" + edge + ")"
	}
	return line
}

// policyDecision reports whether decisions of this action went through the policy chain (and so
// have a granularity, a window and guards worth telling).
func policyDecision(action string) bool {
	switch action {
	case schemas.ActionRollback, schemas.ActionEscalate, schemas.ActionDisable, schemas.ActionRecommend, schemas.ActionHold:
		return true
	}
	return false
}

func commandOutcome(c StoryCommand) string {
	svc := c.Service
	var parts []string
	if c.Published {
		parts = append(parts, "published on rollback.cmd."+svc)
	} else {
		parts = append(parts, "not seen on rollback.cmd."+svc+" (another actuator carried it, or it was not sent)")
	}
	if len(c.Acks) == 0 {
		parts = append(parts, "no ack yet")
	}
	for _, a := range c.Acks {
		s := fmt.Sprintf("%s by %s at %s", a.Status, a.Instance, stamp(a.TS))
		if a.ActiveVersion != "" {
			s += ", active " + a.ActiveVersion
		}
		if a.Error != "" {
			s += ": " + a.Error
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// wrap writes text as lines of at most width runes, each starting with indent.
func wrap(b *strings.Builder, text, indent string, width int) {
	line := indent
	for _, w := range strings.Fields(text) {
		if len([]rune(line)) > len(indent) && len([]rune(line))+1+len([]rune(w)) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += w
	}
	if len(line) > len(indent) {
		b.WriteString(line + "\n")
	}
}
