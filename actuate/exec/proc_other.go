//go:build !unix

package exec

import osexec "os/exec"

// killGroup keeps os/exec's default: only the program itself is killed on cancel.
func killGroup(*osexec.Cmd) {}
