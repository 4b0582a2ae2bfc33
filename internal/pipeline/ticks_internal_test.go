package pipeline

import (
	"testing"
	"time"
)

// TestTickDue: no tick before tick_after of quiet; then one at every call (once a second); after
// five more minutes, one every 10 s, so a system nobody sends telemetry to stores a tenth as many.
func TestTickDue(t *testing.T) {
	const after = 10 * time.Second
	for _, c := range []struct {
		idle, since time.Duration
		want        bool
	}{
		{9 * time.Second, time.Hour, false},
		{10 * time.Second, time.Hour, true},
		{4 * time.Minute, time.Second, true},
		{after + longQuiet, time.Second, true},
		{after + longQuiet + time.Second, time.Second, false},
		{after + longQuiet + time.Second, 9 * time.Second, false},
		{after + longQuiet + time.Second, 10 * time.Second, true},
		{48 * time.Hour, 10 * time.Second, true},
	} {
		if got := tickDue(c.idle, c.since, after); got != c.want {
			t.Errorf("tickDue(idle %s, last tick %s ago) = %v, want %v", c.idle, c.since, got, c.want)
		}
	}
}
