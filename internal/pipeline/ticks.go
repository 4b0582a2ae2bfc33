package pipeline

import (
	"context"
	"encoding/json"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Clock ticks come once a second for longQuiet, then every longQuietTick.
const (
	longQuiet     = 5 * time.Minute
	longQuietTick = 10 * time.Second
)

// tickDue reports whether a clock tick is due when no telemetry has come in for idle and the last
// tick went out since ago: after tick_after of quiet, every second, and after longQuiet more,
// every longQuietTick.
func tickDue(idle, since, after time.Duration) bool {
	return idle >= after && (idle <= after+longQuiet || since >= longQuietTick)
}

// startTicks publishes clock ticks (schemas.ClockTick) once a second while no telemetry has come
// in for ingest.tick_after, until the returned func is called. It runs in the process that
// consumes the telemetry, which reads its own ticks back like any telemetry: detection, which
// runs on event time alone, then finds a service that fell silent even when no other producer
// publishes, and decide's verify periods and approval timeouts go on. The ticks are stored in
// the telemetry stream, so a replay or a restore reads them as live ingest did.
//
// A tick carries the newest event time heard moved on by the wall-clock time since, less
// tick_after: event time goes on at the wall clock's pace from where the producers left it
// (which need not be now: a backfill or a demo stamps the past), tick_after behind what a
// producer that kept publishing would stamp.
//
// After longQuiet of ticks a second, they come every longQuietTick: a silence has been found by
// then, and a system nobody sends telemetry to for days stores a tenth as many.
func (p *Pipeline) startTicks() (stop func()) {
	after, on := p.cfg.Ingest.Ticks(p.subj)
	if !on {
		return func() {}
	}
	subject, component := p.cfg.Ingest.TickSubject(p.subj)
	p.detect.hearFrom(time.Now())
	var quietSince, last time.Time // the quiet the log has announced; the last tick published
	failing := false
	return every(time.Second, func() {
		ts, at := p.detect.heard()
		idle := time.Since(at)
		if ts.IsZero() || !tickDue(idle, time.Since(last), after) {
			return
		}
		tick := ts.Add(idle - after).Truncate(time.Millisecond)
		b, err := json.Marshal(schemas.ClockTickAs(component, tick))
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		defer cancel()
		if _, err := p.js.Publish(ctx, subject, b); err != nil {
			if !failing {
				p.log.Warn("ingest: cannot publish a clock tick; event time stands still until telemetry or a tick comes in", "stage", "ingest", "err", err)
			}
			failing = true
			return
		}
		failing, last = false, time.Now()
		p.m.ticks.Inc()
		if !quietSince.Equal(at) {
			quietSince = at
			p.log.Info("ingest: no telemetry for a while; clock ticks move event time on", "stage", "ingest",
				"quiet_for", idle.Round(time.Second), "event_time", tick)
		}
	})
}
