package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/schemas"
)

func init() { register(newPublishCmd) }

// publishOpts are the flags of `scalpel publish`.
type publishOpts struct {
	ev        schemas.TelemetryEvent
	latency   float64
	requests  int64
	errorRate float64
	count     int
	rate      string
	duration  time.Duration
	stdin     bool
}

// publishStats is what the summary reports.
type publishStats struct {
	Published int64   `json:"published"`
	Failed    int64   `json:"failed"`
	Invalid   int64   `json:"invalid"`
	Seconds   float64 `json:"seconds"`
	Rate      float64 `json:"events_per_second"`
}

func newPublishCmd() *cobra.Command {
	var o publishOpts
	cmd := &cobra.Command{
		Use:   "publish [--service S --component C --version V ...] | publish --stdin < FILE",
		Short: "Publish telemetry events, from flags or NDJSON/JSON on stdin",
		Long: `publish sends TelemetryEvents to telemetry.<service>.<component>, as an instrumented service
would. It is for trying scalpel out, load-testing it and replaying captured telemetry.

From flags, it builds one event and publishes it --count times, or for --duration, at --rate (events
per second; unlimited when not given). --error-rate marks that fraction of the events as failed with
--error's category; the rest succeed. Each event gets the current time and a fresh id.

From stdin (--stdin, or automatically when stdin is a pipe and no event flags are given), it reads
NDJSON — one event per line — or a single JSON array of events. A missing "id" is filled with a
fresh UUID and a missing "ts" with the current time; everything else is validated exactly as ingest
validates it (unknown fields are errors: "latency_msec" is a typo, not a new field). A bad line is
reported with its line number and skipped; the rest are still published.

Events go out with JetStream async publish; each carries Nats-Msg-Id = its id, so publishing the
same file twice within the TELEMETRY stream's duplicate window stores every event once. A summary
line (or -o json) reports published, failed and invalid counts and the rate.`,
		Example: `  # one request observation
  scalpel publish --service checkout --component tax-calc --version 2.4.0 --latency-ms 12.5

  # a steady canary with 5% timeouts, 200 events/s for a minute
  scalpel publish --service checkout --component tax-calc --block rate-lookup --version 2.5.0 \
      --cohort canary --latency-ms 14 --error timeout --error-rate 0.05 --rate 200/s --duration 1m

  # replay captured telemetry
  scalpel publish --stdin < telemetry.ndjson
  echo '{"service":"checkout","component":"tax-calc","version":"2.4.0","latency_ms":9}' |
      scalpel publish`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			eventFlags := false
			for _, name := range []string{"service", "component", "block", "version", "cohort", "latency-ms", "error", "requests", "error-rate"} {
				eventFlags = eventFlags || cmd.Flags().Changed(name)
			}
			fromStdin := o.stdin || (!eventFlags && !isTerminal(os.Stdin))
			if fromStdin && eventFlags {
				return errors.New("give either event flags or --stdin, not both")
			}
			if !fromStdin && !eventFlags {
				return errors.New("nothing to publish: give --service, --component and --version, or pipe NDJSON on stdin (see --help)")
			}
			rate, err := parseRate(o.rate)
			if err != nil {
				return err
			}
			if o.errorRate < 0 || o.errorRate > 1 {
				return fmt.Errorf("--error-rate must be between 0 and 1, got %v", o.errorRate)
			}

			var src eventSource
			if fromStdin {
				src = newStdinSource(cmd.InOrStdin(), cmd.ErrOrStderr())
			} else {
				if cmd.Flags().Changed("latency-ms") {
					o.ev.LatencyMS = &o.latency
				}
				o.ev.Count = o.requests
				if o.errorRate > 0 && o.ev.Error == "" {
					o.ev.Error = schemas.ErrException // the usual failure; --error picks another
				}
				if o.errorRate == 0 && o.ev.Error != "" {
					o.errorRate = 1
				}
				failed := o.ev.Error
				o.ev.Error = ""
				probe := o.ev
				probe.TS, probe.Error = time.Now(), failed
				if err := probe.Validate(); err != nil {
					return fmt.Errorf("invalid event: %w", err)
				}
				src = &flagSource{tmpl: o.ev, failed: failed, errorRate: o.errorRate, count: o.count,
					countSet: cmd.Flags().Changed("count"), duration: o.duration}
			}

			nc, _, err := connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			var failedN atomic.Int64
			var lastErr atomic.Value
			js, err := jetstream.New(nc, jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
				failedN.Add(1)
				lastErr.Store(err)
			}), jetstream.WithPublishAsyncMaxPending(4096))
			if err != nil {
				return err
			}
			stats, err := runPublish(cmd.Context(), js, schemas.Subjects{Prefix: global.prefix}, src, rate, cmd.ErrOrStderr())
			stats.Failed = failedN.Load()
			stats.Published -= stats.Failed
			if e, ok := lastErr.Load().(error); ok {
				fmt.Fprintf(cmd.ErrOrStderr(), "publish failed for %d events; last error: %v\n", stats.Failed, e)
			}
			if asJSON {
				if werr := writeJSON(cmd.OutOrStdout(), stats); werr != nil {
					return werr
				}
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "published %d events in %.1fs (%.0f events/s)", stats.Published, stats.Seconds, stats.Rate)
				if stats.Failed > 0 || stats.Invalid > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "; %d failed, %d invalid skipped", stats.Failed, stats.Invalid)
				}
				fmt.Fprintln(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			if stats.Failed > 0 || stats.Invalid > 0 {
				return errSilent // exit status 1: not everything went out
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ev.Service, "service", "", "service name (token-safe: [A-Za-z0-9_-])")
	f.StringVar(&o.ev.Component, "component", "", "component: function or endpoint name")
	f.StringVar(&o.ev.Block, "block", "", "block inside the component (optional)")
	f.StringVar(&o.ev.Version, "version", "", "version of the component that served the request")
	f.StringVar(&o.ev.Cohort, "cohort", "", "cohort, e.g. canary or baseline (optional)")
	f.Float64Var(&o.latency, "latency-ms", 0, "request latency in milliseconds")
	f.StringVar(&o.ev.Error, "error", "", "error category of failed events: timeout, exception, invalid_input or other (with --error-rate, default exception)")
	f.Float64Var(&o.errorRate, "error-rate", 0, "fraction of events that fail with --error (default 1 when --error is given)")
	f.Int64Var(&o.requests, "requests", 0, "the event's count field: requests an aggregate event stands for (default 1)")
	f.IntVar(&o.count, "count", 1, "number of events to publish (with --duration: at most this many)")
	f.StringVar(&o.rate, "rate", "", "events per second, e.g. 200/s or 200 (default: as fast as possible)")
	f.DurationVar(&o.duration, "duration", 0, "keep publishing for this long (e.g. 30s, 5m); stops early at --count if given")
	f.BoolVar(&o.stdin, "stdin", false, "read NDJSON or a JSON array of events from stdin")
	return cmd
}

// eventSource yields the events to publish. next returns false when there are no more.
type eventSource interface {
	next(now time.Time) (schemas.TelemetryEvent, bool)
	invalid() int64
}

// flagSource repeats the event described by the flags.
type flagSource struct {
	tmpl      schemas.TelemetryEvent
	failed    string
	errorRate float64
	count     int
	countSet  bool
	duration  time.Duration
	n         int
	deadline  time.Time
}

func (s *flagSource) next(now time.Time) (schemas.TelemetryEvent, bool) {
	if s.duration > 0 {
		if s.deadline.IsZero() {
			s.deadline = now.Add(s.duration)
		}
		if !now.Before(s.deadline) || (s.countSet && s.n >= s.count) {
			return schemas.TelemetryEvent{}, false
		}
	} else if s.n >= s.count {
		return schemas.TelemetryEvent{}, false
	}
	s.n++
	ev := s.tmpl
	ev.ID = uuid.NewString()
	ev.TS = now.UTC()
	if s.failed != "" && (s.errorRate >= 1 || rand.Float64() < s.errorRate) {
		ev.Error = s.failed
	}
	return ev, true
}

func (s *flagSource) invalid() int64 { return 0 }

// stdinSource reads NDJSON, or one JSON array, and reports bad lines on errw.
type stdinSource struct {
	sc      *bufio.Scanner
	errw    io.Writer
	line    int
	bad     int64
	pending []schemas.TelemetryEvent // the rest of a JSON array
	r       *bufio.Reader
	started bool
	warned  bool // an event stamped ahead of this machine's clock was reported
}

func newStdinSource(r io.Reader, errw io.Writer) *stdinSource {
	return &stdinSource{r: bufio.NewReaderSize(r, 1<<16), errw: errw}
}

func (s *stdinSource) invalid() int64 { return s.bad }

func (s *stdinSource) next(now time.Time) (schemas.TelemetryEvent, bool) {
	if !s.started {
		s.started = true
		// A JSON array is read whole; anything else is NDJSON.
		if first, err := s.peekNonSpace(); err == nil && first == '[' {
			var raw []json.RawMessage
			if err := json.NewDecoder(s.r).Decode(&raw); err != nil {
				fmt.Fprintf(s.errw, "stdin: not a JSON array of events: %v\n", err)
				s.bad++
				return schemas.TelemetryEvent{}, false
			}
			for i, r := range raw {
				if ev, ok := s.parse(r, fmt.Sprintf("element %d", i), now); ok {
					s.pending = append(s.pending, ev)
				}
			}
			s.sc = nil
		} else {
			s.sc = bufio.NewScanner(s.r)
			s.sc.Buffer(make([]byte, 64<<10), 8<<20)
		}
	}
	if s.sc == nil {
		if len(s.pending) == 0 {
			return schemas.TelemetryEvent{}, false
		}
		ev := s.pending[0]
		s.pending = s.pending[1:]
		return ev, true
	}
	for s.sc.Scan() {
		s.line++
		b := bytes.TrimSpace(s.sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if ev, ok := s.parse(b, "line "+strconv.Itoa(s.line), now); ok {
			return ev, true
		}
	}
	if err := s.sc.Err(); err != nil {
		fmt.Fprintf(s.errw, "stdin: line %d: %v\n", s.line+1, err)
		s.bad++
	}
	return schemas.TelemetryEvent{}, false
}

func (s *stdinSource) peekNonSpace() (byte, error) {
	for {
		b, err := s.r.Peek(1)
		if err != nil {
			return 0, err
		}
		switch b[0] {
		case ' ', '\t', '\r', '\n':
			_, _ = s.r.ReadByte()
		default:
			return b[0], nil
		}
	}
}

// parse decodes one event as ingest would read it (encoding/json semantics, then Validate), after
// filling a missing id and ts.
func (s *stdinSource) parse(b []byte, where string, now time.Time) (schemas.TelemetryEvent, bool) {
	var ev schemas.TelemetryEvent
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields() // as ingest does by default: a typo must not silently drop a field
	err := dec.Decode(&ev)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value on the line")
	}
	if err != nil {
		fmt.Fprintf(s.errw, "%s: %v\n", where, err)
		s.bad++
		return ev, false
	}
	if ev.ID == "" {
		ev.ID = uuid.NewString()
	}
	if ev.TS.IsZero() {
		ev.TS = now.UTC()
	}
	if err := ev.Validate(); err != nil {
		fmt.Fprintf(s.errw, "%s: %v\n", where, err)
		s.bad++
		return ev, false
	}
	if ahead := ev.TS.Sub(now); ahead > ingest.DefaultMaxClockAhead && !s.warned {
		s.warned = true
		fmt.Fprintf(s.errw, "%s: warning: ts %s is %s ahead of this machine's clock; ingest rejects an event stamped more than ingest.max_clock_ahead (%s by default) ahead of when the server stores it (future_timestamp), so stamp replayed or simulated traffic in the past (further events ahead are not listed)\n",
			where, ev.TS.UTC().Format(time.RFC3339Nano), ahead.Round(time.Millisecond), ingest.DefaultMaxClockAhead)
	}
	return ev, true
}

// runPublish publishes every event of src, paced at rate (0 = unpaced), and waits for the acks.
func runPublish(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects, src eventSource, rate float64, progress io.Writer) (publishStats, error) {
	var st publishStats
	start := time.Now()
	showProgress := isTerminalWriter(progress)
	lastShown := start
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// How long a publish waits for acks once 4096 are outstanding: --timeout, or the library's
	// 200 ms when it is not set (the library refuses a wait of 0).
	stallWait := cmp.Or(max(global.timeout, 0), 200*time.Millisecond)
	var err error
	for ctx.Err() == nil {
		now := time.Now()
		if rate > 0 {
			// Pace against the schedule, not the previous event, so the average rate holds.
			due := start.Add(time.Duration(float64(st.Published) / rate * float64(time.Second)))
			if wait := due.Sub(now); wait > time.Millisecond {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
				}
				now = time.Now()
			}
		}
		ev, ok := src.next(now)
		if !ok {
			break
		}
		buf.Reset()
		if err = enc.Encode(&ev); err != nil {
			break
		}
		body := bytes.TrimRight(buf.Bytes(), "\n")
		// PublishAsync copies nothing: hand it its own slice. When 4096 acks are outstanding it
		// waits for the server (up to --timeout) instead of failing: a busy server slows the
		// file down, and only one that stopped acking ends the command.
		if _, err = js.PublishAsync(subj.Telemetry(ev.Service, ev.Component), append([]byte(nil), body...),
			jetstream.WithMsgID(ev.ID), jetstream.WithStallWait(stallWait)); err != nil {
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				err = fmt.Errorf("publish: %w (no ack from the server for %s with %d outstanding; a busy server needs a longer --timeout)",
					err, stallWait, js.PublishAsyncPending())
			} else {
				err = fmt.Errorf("publish: %w", err)
			}
			break
		}
		st.Published++
		if showProgress && now.Sub(lastShown) >= time.Second {
			lastShown = now
			fmt.Fprintf(progress, "\rpublished %d events (%.0f/s)   ", st.Published, float64(st.Published)/now.Sub(start).Seconds())
		}
	}
	if showProgress && st.Published > 0 {
		fmt.Fprint(progress, "\r\033[K")
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(global.timeout + 5*time.Second):
		if err == nil {
			err = fmt.Errorf("timed out waiting for %d acks: is the TELEMETRY stream there? (`scalpel serve` creates it)", js.PublishAsyncPending())
		}
	}
	st.Invalid = src.invalid()
	st.Seconds = time.Since(start).Seconds()
	if st.Seconds > 0 {
		st.Rate = float64(st.Published) / st.Seconds
	}
	return st, err
}

// parseRate reads "200/s", "200" or "" (unlimited) as events per second.
func parseRate(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "/s"), 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("--rate %q: want events per second, e.g. 200/s", s)
	}
	return v, nil
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f)
}
