//go:build unix

package exec

import (
	osexec "os/exec"
	"syscall"
)

// killGroup runs the program in its own process group and kills the whole group on cancel, so a
// timed-out script does not leave its children (the kubectl it started) running.
func killGroup(c *osexec.Cmd) {
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error {
		if c.Process == nil {
			return nil
		}
		return syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	}
}
