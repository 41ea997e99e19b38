package runners

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStartFailsClearly: a job server that exits, or never opens its port,
// fails Start with the end of its log, and is not left running.
func TestStartFailsClearly(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, script string
		want         []string
	}{
		{"exits", "echo starting up; echo 'no such class' >&2; exit 3", []string{"exited before its job service came up", "no such class", "exit status 3"}},
		{"never listens", "echo $$ > pid; echo waiting for nothing; exec sleep 600", []string{"did not open its job service", "within 1s", "waiting for nothing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Start(context.Background(), Spec{
				Name:     "fake",
				Command:  []string{"sh", "-c", tt.script},
				PortFlag: "--port",
				Dir:      dir,
				Log:      filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".log"),
				Ready:    time.Second,
			})
			if err == nil {
				s.Stop()
				t.Fatal("Start succeeded")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if data, err := os.ReadFile(filepath.Join(dir, "pid")); err == nil {
				pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
				if pid > 0 && syscall.Kill(pid, 0) == nil {
					syscall.Kill(pid, syscall.SIGKILL)
					t.Errorf("the job server (pid %d) is still running", pid)
				}
			}
		})
	}
}
