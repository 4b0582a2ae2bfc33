//go:build !race

package single

// raceEnabled is true under the race detector: the NAB run (about ten times slower there, and
// single-goroutine, so it has no races to find) skips.
const raceEnabled = false
