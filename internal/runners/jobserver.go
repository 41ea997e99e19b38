// Package runners starts Beam job servers (Prism, Flink) as child processes
// for the cross-runner tests: the same batches run on the direct runner, on
// a standalone Prism job server, on Flink and with workers in processes of
// their own must leave the same tables, byte for byte. The job servers are
// the project's scripts (scripts/prism-jobserver.sh,
// scripts/flink-jobserver.sh), started on free ports, waited for with a
// bounded timeout, and stopped with their whole process group.
package runners

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Spec says how to start a job server.
type Spec struct {
	// Name is what errors and logs call it ("prism", "flink").
	Name string
	// Command is the program and its arguments; PortFlag=PORT is added.
	Command []string
	// PortFlag is the job server's flag for its job service port.
	PortFlag string
	// Dir is the working directory (the repository root).
	Dir string
	// Env is added to the environment.
	Env []string
	// Log is the file the server's stdout and stderr go to.
	Log string
	// Ready bounds the wait for the job service port to accept connections.
	Ready time.Duration
}

// JobServer is a running job server.
type JobServer struct {
	Name string
	// Endpoint is the job service's host:port, for --endpoint.
	Endpoint string
	// Log is the server's log file.
	Log string

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // the process's exit, once exited is closed
}

// Start starts the job server on a free port and waits until its job
// service accepts connections. If the server exits or is not up within
// spec.Ready, Start stops it and returns an error with the tail of its log.
// A server that lost its port to another process between the choice and
// its bind is started again on another, up to three times.
func Start(ctx context.Context, spec Spec) (*JobServer, error) {
	for attempt := 1; ; attempt++ {
		s, err := start(ctx, spec)
		if errors.Is(err, errPortTaken) && attempt < 3 {
			continue
		}
		return s, err
	}
}

var errPortTaken = errors.New("its port was taken")

func start(ctx context.Context, spec Spec) (*JobServer, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(spec.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s job server log: %w", spec.Name, err)
	}
	defer logf.Close()
	args := append(append([]string{}, spec.Command[1:]...), spec.PortFlag+"="+strconv.Itoa(port))
	cmd := exec.Command(spec.Command[0], args...)
	cmd.Dir = spec.Dir
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A process group of its own, so that Stop ends the script's children
	// (Maven, java) too; and killed should the test binary die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the %s job server (%s): %w", spec.Name, strings.Join(spec.Command, " "), err)
	}
	s := &JobServer{Name: spec.Name, Endpoint: net.JoinHostPort("localhost", strconv.Itoa(port)), Log: spec.Log,
		cmd: cmd, exited: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()

	ready := spec.Ready
	if ready <= 0 {
		ready = time.Minute
	}
	deadline := time.NewTimer(ready)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := net.DialTimeout("tcp", s.Endpoint, time.Second)
		if err == nil {
			conn.Close()
			return s, nil
		}
		select {
		case <-s.exited:
			tail := s.Tail(40)
			err := fmt.Errorf("the %s job server exited before its job service came up on %s (%v); the end of its log %s:\n%s",
				spec.Name, s.Endpoint, s.err, spec.Log, tail)
			if strings.Contains(tail, "address already in use") || strings.Contains(tail, "BindException") {
				err = fmt.Errorf("%w: %w", errPortTaken, err)
			}
			return nil, err
		case <-deadline.C:
			s.Stop()
			return nil, fmt.Errorf("the %s job server did not open its job service on %s within %s; the end of its log %s:\n%s",
				spec.Name, s.Endpoint, ready, spec.Log, s.Tail(40))
		case <-ctx.Done():
			s.Stop()
			return nil, fmt.Errorf("waiting for the %s job server: %w", spec.Name, ctx.Err())
		case <-tick.C:
		}
	}
}

// Stop ends the job server's process group: SIGTERM, then SIGKILL if it is
// still there after ten seconds. It is safe to call more than once.
func (s *JobServer) Stop() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	pgid := s.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-s.exited
	}
	return nil
}

// Exited reports whether the job server's process has ended, and how.
func (s *JobServer) Exited() (bool, error) {
	select {
	case <-s.exited:
		return true, s.err
	default:
		return false, nil
	}
}

// Tail returns the last n lines of the server's log.
func (s *JobServer) Tail(n int) string { return TailFile(s.Log, n) }

// TailFile returns the last n lines of a file, or why it cannot.
func TailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// FreePort returns a TCP port on localhost that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "localhost:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RepoRoot returns the repository root: the nearest directory at or above
// the working directory that holds go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory")
		}
		dir = parent
	}
}

// RunScript runs a repository script to completion within timeout, with
// its output going to log, and returns its trimmed standard output.
func RunScript(ctx context.Context, root string, timeout time.Duration, log string, script string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	logf, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, filepath.Join(root, script), args...)
	cmd.Dir = root
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.Output()
	if ctx.Err() == context.DeadlineExceeded {
		return "", fmt.Errorf("%s %s did not finish within %s; the end of its log %s:\n%s", script, strings.Join(args, " "), timeout, log, TailFile(log, 40))
	}
	if err != nil {
		return "", fmt.Errorf("%s %s: %w; the end of its log %s:\n%s", script, strings.Join(args, " "), err, log, TailFile(log, 40))
	}
	return strings.TrimSpace(string(out)), nil
}
