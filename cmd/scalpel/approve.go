package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/schemas"
)

func init() {
	register(func() *cobra.Command { return newAnswerCmd(true) })
	register(func() *cobra.Command { return newAnswerCmd(false) })
}

// newAnswerCmd builds `scalpel approve` and `scalpel reject`: both publish an Approval for a
// recommend decision on approval.<svc>.
func newAnswerCmd(approve bool) *cobra.Command {
	var reason, actor string
	verb, effect := "reject", "decide records a\n`none` decision quoting your reason; nothing is rolled back."
	if approve {
		verb, effect = "approve", "decide turns it\ninto a rollback step of the same incident, executed like any other."
	}
	cmd := &cobra.Command{
		Use:   verb + " DECISION_ID [--reason R]",
		Short: fmt.Sprintf("%s a recommended rollback (a decision made outside the rollback window)", map[bool]string{true: "Approve", false: "Reject"}[approve]),
		Long: fmt.Sprintf(`%s answers a recommend decision (see `+"`scalpel decisions`"+`): %s
The answer is published on approval.<service>; answering a decision that is no longer pending
(already answered, expired, withdrawn) changes nothing.`, verb, effect),
		Example: fmt.Sprintf("  scalpel %s 3f2a9c0e-... --reason \"checked the dashboards\"", verb),
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			nc, js, err := connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			subj := schemas.Subjects{Prefix: global.prefix}
			ds, err := auditReader(js).Decisions(cmd.Context(), "", time.Now().Add(-365*24*time.Hour), 0, "")
			if err != nil {
				return err
			}
			var d *schemas.Decision
			for i := range ds {
				if ds[i].ID == args[0] {
					d = &ds[i]
				}
			}
			if d == nil {
				return fmt.Errorf("no decision %s on %s: list them with `scalpel decisions`", args[0], subj.DecisionAll())
			}
			if d.Action != schemas.ActionRecommend {
				return fmt.Errorf("decision %s is a %s, not a recommend: only recommendations wait for an answer", d.ID, d.Action)
			}
			if actor == "" {
				actor = whoami()
			}
			ap := schemas.Approval{ID: uuid.NewString(), DecisionID: d.ID, Service: d.Service, Approve: approve, Actor: actor, Reason: reason, TS: time.Now().UTC()}
			if err := ap.Validate(); err != nil {
				return fmt.Errorf("invalid answer: %w", err)
			}
			b, err := json.Marshal(&ap)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), global.timeout)
			defer cancel()
			ack, err := js.Publish(ctx, subj.Approval(d.Service), b, jetstream.WithMsgID(ap.ID))
			if errors.Is(err, jetstream.ErrNoStreamResponse) {
				return fmt.Errorf("publish on %s: no stream stores it: restart `scalpel serve` once so the DECISIONS stream learns approval subjects", subj.Approval(d.Service))
			}
			if err != nil {
				return fmt.Errorf("publish on %s: %w", subj.Approval(d.Service), err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"approval": ap, "stream": ack.Stream, "seq": ack.Sequence})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%sd decision %s (%s, incident %s); follow it with `scalpel decisions --incident %s`\n",
				verb, d.ID, d.Service, d.IncidentID, d.IncidentID)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, quoted in the resulting decision")
	cmd.Flags().StringVar(&actor, "actor", "", "who answers (default: user@host)")
	return cmd
}

func whoami() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}
