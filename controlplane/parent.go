package main

import (
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// exitWithParent makes a crashed test run (or a killed `npm start`) take the
// control plane down with it instead of leaving an apiserver behind.
// PR_SET_PDEATHSIG (prctl(2)) delivers SIGTERM when the parent exits, which
// goes through the normal graceful shutdown. Node cannot set it for a child
// (child_process has no such option), so the child sets it on itself and then
// checks getppid(): a parent that died before prctl ran would otherwise go
// unnoticed. The getppid poll also covers the case prctl(2) documents where
// the signal follows the death of the parent *thread* rather than process.
func exitWithParent() {
	parent := os.Getppid()
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0, 0, 0)
	if os.Getppid() != parent || parent == 1 {
		if parent != 1 {
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		}
		return
	}
	go func() {
		for range time.Tick(time.Second) {
			if os.Getppid() != parent {
				_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
				return
			}
		}
	}()
}
