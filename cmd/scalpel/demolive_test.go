package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestLiveStoryStampsNeverGoBack: a line taken earlier but printed later (the subscription's,
// behind the traffic ticker's) carries the later stamp, so the story reads in order.
func TestLiveStoryStampsNeverGoBack(t *testing.T) {
	var out bytes.Buffer
	start := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	st := &liveStory{out: &out, start: start}
	st.printf(start.Add(75*time.Second), "HTTP      traffic")
	st.printf(start.Add(74*time.Second), "RESOLVED  shop/pricing/discount 2.0")
	st.printf(start.Add(80*time.Second), "HTTP      traffic")
	want := "[t+ 75s] HTTP      traffic\n[t+ 75s] RESOLVED  shop/pricing/discount 2.0\n[t+ 80s] HTTP      traffic\n"
	if got := out.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, strings.TrimSpace(want))
	}
}
