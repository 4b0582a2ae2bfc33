package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/schemas"
)

func init() { register(newWatchCmd) }

type watchOptions struct {
	since string
	all   bool
	count int
}

func newWatchCmd() *cobra.Command {
	var o watchOptions
	cmd := &cobra.Command{
		Use:   "watch SERVICE",
		Short: "Follow a service's rollback commands and the deployers' acks as they happen",
		Long: `watch follows rollback.cmd.<svc> and rollback.ack.<svc> on the ROLLBACKS stream and prints one line
per command (when, id, action, target, from→to, reason) and per ack (status, instance, active
version, error). It shows only new messages unless --since or --all asks for history. Reading is
passive (an ordered consumer): it never acknowledges or changes anything. Ctrl-C stops it.

With -o json every message is one JSON object per line (NDJSON) with "kind": "command", "ack" or
"invalid" (a message that is neither, with the reason), plus stream_seq and stream_time.`,
		Example: `  scalpel watch checkout
  scalpel watch checkout --since 1h
  scalpel watch checkout --since 2026-11-26T10:00:00Z -o json | jq .
  scalpel watch checkout --all --count 2   # the first command and its ack, then exit`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			svc := args[0]
			if err := checkService("service", svc); err != nil {
				return err
			}
			if o.count < 0 {
				return fmt.Errorf("--count %d: give a number of messages, or 0 to follow until Ctrl-C", o.count)
			}
			cfg, err := watchConsumerConfig(schemas.Subjects{Prefix: global.prefix}, svc, o, time.Now())
			if err != nil {
				return err
			}
			nc, js, err := connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			return runWatch(cmd.Context(), js, cfg, svc, o.count, asJSON, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.since, "since", "", "also print history from this long ago (1h) or this time (RFC 3339)")
	f.BoolVar(&o.all, "all", false, "print the whole history the stream holds, then follow")
	f.IntVar(&o.count, "count", 0, "exit after N messages (0 = follow until Ctrl-C)")
	return cmd
}

// watchConsumerConfig is the ordered consumer of one service's commands and acks, starting where
// the flags ask. It is separate from the I/O so the flag rules are testable without a server.
func watchConsumerConfig(subj schemas.Subjects, svc string, o watchOptions, now time.Time) (jetstream.OrderedConsumerConfig, error) {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subj.RollbackCmd(svc), subj.RollbackAck(svc)},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	}
	switch {
	case o.all && o.since != "":
		return cfg, errors.New("--all and --since both say where to start: give one")
	case o.all:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case o.since != "":
		start, err := watchParseSince(o.since, now)
		if err != nil {
			return cfg, err
		}
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &start
	}
	return cfg, nil
}

// watchParseSince reads --since as a duration back from now or as an RFC 3339 time.
func watchParseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("--since %s: give a positive duration such as 30m, or a time", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: give a duration (30m, 2h) or an RFC 3339 time (2026-11-26T10:00:00Z)", s)
}

func runWatch(ctx context.Context, js jetstream.JetStream, cfg jetstream.OrderedConsumerConfig, svc string, count int, asJSON bool, out io.Writer) error {
	ictx, cancel := context.WithTimeout(ctx, global.timeout)
	stream, err := js.Stream(ictx, schemas.StreamRollbacks)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		cancel()
		return fmt.Errorf("stream %s does not exist: start `scalpel serve` once (it creates the topology), or point --server at scalpel's NATS", schemas.StreamRollbacks)
	}
	if err != nil {
		cancel()
		return fmt.Errorf("open stream %s: %w", schemas.StreamRollbacks, err)
	}
	cons, err := stream.OrderedConsumer(ictx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("follow %s: %w", strings.Join(cfg.FilterSubjects, ", "), err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("follow %s: %w", strings.Join(cfg.FilterSubjects, ", "), err)
	}
	defer it.Stop()
	// Next blocks; stopping the iterator is how Ctrl-C (ctx) gets it to return.
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			it.Stop()
		case <-stopped:
		}
	}()

	cmdSubject := schemas.Subjects{Prefix: global.prefix}.RollbackCmd(svc)
	enc := json.NewEncoder(out)
	for n := 0; count == 0 || n < count; n++ {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("follow %s: %w", svc, err)
		}
		line := watchDecode(msg, cmdSubject)
		if asJSON {
			err = enc.Encode(line)
		} else {
			_, err = fmt.Fprintln(out, line.text())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// watchLine is one message as printed: a command, an ack, or what made it neither.
type watchLine struct {
	Kind       string    `json:"kind"` // command | ack | invalid
	Subject    string    `json:"subject"`
	StreamSeq  uint64    `json:"stream_seq"`
	StreamTime time.Time `json:"stream_time"`
	*schemas.RollbackCommand
	*schemas.RollbackAck
	Problem string `json:"problem,omitempty"`
}

// MarshalJSON writes the command's or ack's own fields at the top level, beside kind and stream
// position, so `jq .to_version` works on either kind; the two are never set together.
func (l watchLine) MarshalJSON() ([]byte, error) {
	head := map[string]any{"kind": l.Kind, "subject": l.Subject, "stream_seq": l.StreamSeq, "stream_time": l.StreamTime}
	if l.Problem != "" {
		head["problem"] = l.Problem
	}
	var body any
	switch {
	case l.RollbackCommand != nil:
		body = l.RollbackCommand
	case l.RollbackAck != nil:
		body = l.RollbackAck
	}
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		var fields map[string]any
		if err := json.Unmarshal(b, &fields); err != nil {
			return nil, err
		}
		for k, v := range fields {
			if _, taken := head[k]; !taken {
				head[k] = v
			}
		}
	}
	return json.Marshal(head)
}

// watchDecode reads one message. Nothing a deployer or a stranger wrote can stop the watch: what
// does not decode is shown as invalid with the reason.
func watchDecode(msg jetstream.Msg, cmdSubject string) watchLine {
	l := watchLine{Subject: msg.Subject(), Kind: "invalid"}
	if md, err := msg.Metadata(); err == nil {
		l.StreamSeq, l.StreamTime = md.Sequence.Stream, md.Timestamp.UTC()
	}
	if msg.Subject() == cmdSubject {
		c, err := schemas.DecodeCommandEvent(msg.Headers(), msg.Data())
		if err != nil {
			l.Problem = err.Error()
			return l
		}
		l.Kind, l.RollbackCommand = "command", c
		return l
	}
	// Unknown fields are tolerated: a newer deployer SDK may add some; the rules still apply.
	var a schemas.RollbackAck
	if err := json.Unmarshal(msg.Data(), &a); err != nil {
		l.Problem = "not a rollback ack: " + err.Error()
		return l
	}
	if err := a.Validate(); err != nil {
		l.Problem = "invalid rollback ack: " + err.Error()
		return l
	}
	l.Kind, l.RollbackAck = "ack", &a
	return l
}

// text is the one-line table form.
func (l watchLine) text() string {
	ts := l.StreamTime.Format("2006-01-02T15:04:05.000Z07:00")
	switch {
	case l.RollbackCommand != nil:
		c := l.RollbackCommand
		return fmt.Sprintf("%s  command  %s  %-8s  %s  %s→%s  %s", ts, watchShort(c.ID), c.Action, c.Target(),
			watchDash(c.FromVersion), watchDash(c.ToVersion), watchOneLine(c.Reason))
	case l.RollbackAck != nil:
		a := l.RollbackAck
		s := fmt.Sprintf("%s  ack      %s  %-8s  instance=%s  active=%s", ts, watchShort(a.CommandID), a.Status,
			a.Instance, watchDash(a.ActiveVersion))
		if a.Error != "" {
			s += "  error=" + watchOneLine(a.Error)
		}
		return s
	}
	return fmt.Sprintf("%s  invalid  %s  %s", ts, l.Subject, watchOneLine(l.Problem))
}

// watchShort is the first 8 characters of an id: enough to tell commands apart on one screen and to
// match an ack to its command.
func watchShort(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func watchDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func watchOneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
