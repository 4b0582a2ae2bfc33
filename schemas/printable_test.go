package schemas

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestPrintableASCII checks the eight-bytes-at-a-time scan against the byte-at-a-time rule for
// every byte value at every position of strings around the word size.
func TestPrintableASCII(t *testing.T) {
	slow := func(s string) bool {
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] >= 0x7f {
				return false
			}
		}
		return true
	}
	for n := 1; n <= 19; n++ {
		base := []byte(strings.Repeat("a", n))
		for pos := range n {
			for c := range 256 {
				b := append([]byte(nil), base...)
				b[pos] = byte(c)
				if got, want := printableASCII(string(b)), slow(string(b)); got != want {
					t.Fatalf("%q: %v, want %v", b, got, want)
				}
			}
		}
	}
}

// TestIsVersionFastPathAgrees checks that the ASCII fast path gives the rune-by-rune answer.
func TestIsVersionFastPathAgrees(t *testing.T) {
	for _, s := range []string{"1.4.2", "4f1c9a9e-2b7d-4c59-9f3e-1a2b3c4d5e6f", "v 2 ~", strings.Repeat("x", MaxVersionLen),
		strings.Repeat("x", MaxVersionLen+1), "a\x7fb", "a\tb", "é", "a\u0085b", string([]byte{0xff})} {
		want := s != "" && utf8.RuneCountInString(s) <= MaxVersionLen
		for _, r := range s {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
				want = false
			}
		}
		if got := IsVersion(s); got != want {
			t.Errorf("IsVersion(%q) = %v, want %v", s, got, want)
		}
	}
}
