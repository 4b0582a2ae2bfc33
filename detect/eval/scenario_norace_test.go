//go:build !race

package eval

// raceEnabled is true under the race detector: the statistical suite skips there.
const raceEnabled = false
