// Package scratch gives a process a private temporary directory: it points
// TMPDIR there and removes it when the process is done. Beam 2.62 leaves an
// empty beamloopbackworker-* file in the temporary directory for every
// loopback job (and builds worker binaries there for remote runners); with a
// private directory none of it piles up in /tmp.
package scratch

import (
	"fmt"
	"os"
)

// Use makes a private directory the process's TMPDIR and returns the
// function that removes it. The directory is searchable by others (0755), so
// the postgres account can reach data directories made inside it. On error
// TMPDIR is left as it was and the returned function does nothing.
func Use(prefix string) func() {
	dir, err := os.MkdirTemp("", prefix)
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scratch: no private temporary directory:", err)
		return func() {}
	}
	old, had := os.LookupEnv("TMPDIR")
	os.Setenv("TMPDIR", dir)
	return func() {
		if had {
			os.Setenv("TMPDIR", old)
		} else {
			os.Unsetenv("TMPDIR")
		}
		os.RemoveAll(dir)
	}
}
