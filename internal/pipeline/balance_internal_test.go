package pipeline

import (
	"testing"
	"time"
)

// TestBalancerHandsTheDeciderOverLast: a process that holds four partitions, when a second joins,
// hands over its two highest, but not the one whose pipeline decides, which would move the decide
// lease and its rebuild to the newcomer for nothing.
func TestBalancerHandsTheDeciderOverLast(t *testing.T) {
	for _, tt := range []struct {
		deciding int // -1: none
		released []int
	}{
		{-1, []int{2, 3}},
		{0, []int{2, 3}},
		{3, []int{1, 2}},
		{2, []int{1, 3}},
	} {
		b := NewBalancer(4, time.Minute)
		for k := range 4 {
			b.held[k] = true
		}
		b.members = 2
		for k := range 4 { // the deciding pipeline says so first, as each does at its step
			if k == tt.deciding {
				b.shouldRelease(k, true)
			}
		}
		var released []int
		for k := range 4 {
			if b.shouldRelease(k, k == tt.deciding) {
				released = append(released, k)
			}
		}
		if len(released) != len(tt.released) || released[0] != tt.released[0] || released[1] != tt.released[1] {
			t.Errorf("deciding %d: released %v, want %v", tt.deciding, released, tt.released)
		}
		if len(b.held) != 2 || tt.deciding >= 0 && !b.held[tt.deciding] {
			t.Errorf("deciding %d: holds %v after the handover", tt.deciding, b.held)
		}
	}
}
