package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/balancebeam/balancebeam/internal/driver"
	"github.com/balancebeam/balancebeam/sinks"
)

// scenario is one row of the matrix. run does the scenario and returns the
// tables to check, the truth they must equal, and the older truth a stale
// balance would equal.
type scenario struct {
	name   string
	claims map[sinks.Mode]string
	run    func(ctx context.Context, e *env) (tables []string, want, older map[string]Balance, err error)
}

// allCorrect is the claim of a scenario every mode survives.
var allCorrect = map[sinks.Mode]string{sinks.ModeLedger: Correct, sinks.ModeSnapshot: Correct, sinks.ModeLWW: Correct}

// Scenarios lists the scenario names, in matrix order.
func Scenarios() []string {
	var names []string
	for _, s := range scenarios {
		names = append(names, s.name)
	}
	return names
}

func pick(names []string) ([]scenario, error) {
	if len(names) == 0 {
		return scenarios, nil
	}
	var out []scenario
	for _, n := range names {
		found := false
		for _, s := range scenarios {
			if s.name == n {
				out = append(out, s)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("no scenario %q (have: %s)", n, strings.Join(Scenarios(), ", "))
		}
	}
	return out, nil
}

// The claims are the README's guarantee table.
var scenarios = []scenario{
	{name: "kill-9-while-writing-then-rerun", claims: allCorrect, run: killWhileWriting},
	{name: "connection-killed-mid-flush", claims: allCorrect, run: terminateBackend},
	{name: "postgres-restarted-during-run", claims: allCorrect, run: restartPostgres},
	{name: "bundle-fails-after-some-writes-then-rerun", claims: allCorrect, run: failBundle},
	{name: "same-batch-three-times", claims: allCorrect, run: threeTimes},
	{name: "two-processes-same-batch-at-once", claims: allCorrect, run: twoProcesses},
	{name: "late-file-overlapping-earlier-batch", run: lateFileAlone,
		claims: map[sinks.Mode]string{sinks.ModeLedger: Correct, sinks.ModeSnapshot: Lost, sinks.ModeLWW: Lost}},
	{name: "batches-applied-out-of-order", run: outOfOrder,
		claims: map[sinks.Mode]string{sinks.ModeLedger: Correct, sinks.ModeSnapshot: Correct, sinks.ModeLWW: Stale}},
	{name: "shards-1-2-4-8", claims: allCorrect, run: shardCounts},
	{name: "partitioner-sends-an-account-to-two-shards", run: faultyPartitioner,
		claims: map[sinks.Mode]string{sinks.ModeLedger: Correct, sinks.ModeSnapshot: Lost, sinks.ModeLWW: Lost}},
}

const table = "accounts"

// killWhileWriting starts the job as its own process, kills it with SIGKILL
// once the sink has written a seeded share of its rows, then reruns it.
func killWhileWriting(ctx context.Context, e *env) ([]string, map[string]Balance, map[string]Balance, error) {
	share := 0.1 + 0.8*e.rng.Float64()
	at := max(1, int64(share*float64(e.target(e.data.Truth12))))
	cmd, out, err := e.child(ctx, table, e.data.Day1, e.data.Late)
	if err != nil {
		return nil, nil, nil, err
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	hit, err := e.waitWritten(ctx, table, at, done)
	if err != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return nil, nil, nil, err
	}
	if hit {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		n, _ := e.written(ctx, table)
		e.note("killed at %d of %d rows written", n, e.target(e.data.Truth12))
	} else {
		e.note("the run ended (%v) before %d rows were written: %s", waitErr, at, lastLine(out.String()))
	}
	if err := e.run(ctx, e.options(e.data.Day1, e.data.Late)); err != nil {
		return nil, nil, nil, fmt.Errorf("rerun: %w", err)
	}
	return []string{table}, e.data.Truth12, nil, nil
}

// terminateBackend kills the sink's database connections from another
// connection, one to three times (seeded), while it writes; the sink retries.
func terminateBackend(ctx context.Context, e *env) ([]string, map[string]Balance, map[string]Balance, error) {
	kills := 1 + e.rng.IntN(3)
	done := make(chan struct{})
	var runErr error
	go func() { runErr = e.run(ctx, e.options(e.data.Day1, e.data.Late)); close(done) }()
	killed := 0
	for killed < kills {
		n, err := terminateActive(ctx, e.dsn, done)
		if err != nil || n == 0 {
			break
		}
		killed += n
	}
	<-done
	e.note("terminated %d backends", killed)
	if runErr != nil {
		e.note("the run failed (%v); rerun", firstLine(runErr.Error()))
		if err := e.run(ctx, e.options(e.data.Day1, e.data.Late)); err != nil {
			return nil, nil, nil, fmt.Errorf("rerun: %w", err)
		}
	}
	return []string{table}, e.data.Truth12, nil, nil
}

// terminateActive waits for a balancebeam backend busy writing and
// terminates it; 0 when the run ended first.
func terminateActive(ctx context.Context, dsn string, done <-chan struct{}) (int, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	for {
		select {
		case <-done:
			return 0, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
		var n int
		err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = 'balancebeam' AND datname = current_database() AND pid <> pg_backend_pid()
			AND state = 'active' AND (query ILIKE '%INSERT INTO%' OR query ILIKE 'COPY%')`).Scan(&n)
		if err != nil {
			return 0, err
		}
		if n > 0 {
			return n, nil
		}
	}
}

// restartPostgres stops PostgreSQL (fast shutdown) while the sink writes and
// starts it again a second later.
func restartPostgres(ctx context.Context, e *env) ([]string, map[string]Balance, map[string]Balance, error) {
	at := max(1, e.target(e.data.Truth12)/4)
	done := make(chan struct{})
	var runErr error
	go func() { runErr = e.run(ctx, e.options(e.data.Day1, e.data.Late)); close(done) }()
	hit, err := e.waitWritten(ctx, table, at, done)
	if err == nil && hit {
		n, _ := e.written(ctx, table)
		if err := e.cluster.Restart(ctx, time.Second); err != nil {
			<-done
			return nil, nil, nil, fmt.Errorf("restart PostgreSQL: %w", err)
		}
		e.note("restarted PostgreSQL at %d rows written", n)
	} else {
		e.note("the run ended before the restart")
	}
	<-done
	if runErr != nil {
		e.note("the run failed (%v); rerun", firstLine(runErr.Error()))
		if err := e.run(ctx, e.options(e.data.Day1, e.data.Late)); err != nil {
			return nil, nil, nil, fmt.Errorf("rerun: %w", err)
		}
	} else {
		e.note("the run rode it out")
	}
	return []string{table}, e.data.Truth12, nil, nil
}

// failBundle makes the sink fail its bundle after a seeded number of
// flushes; the local runners do not retry bundles, so the job fails and is
// rerun, as an orchestrator would.
func failBundle(ctx context.Context, e *env) ([]string, map[string]Balance, map[string]Balance, error) {
	o := e.options(e.data.Day1, e.data.Late)
	o.FailAfterFlushes = 1 + e.rng.IntN(4)
	err := e.run(ctx, o)
	switch {
	case err != nil && strings.Contains(err.Error(), "injected fault"):
		e.note("failed after %d flushes", o.FailAfterFlushes)
	case errors.Is(err, driver.ErrIncompleteRun):
		// Prism 2.62 can report success for a failed bundle; the marks
		// caught it and the batch was not committed.
		e.note("failed after %d flushes; the runner reported success, the completeness check failed the run", o.FailAfterFlushes)
	default:
		return nil, nil, nil, fmt.Errorf("the faulty run did not fail: %v", err)
	}
	n, _ := e.written(ctx, table)
	e.note("%d rows written; rerun", n)
	if err := e.run(ctx, e.options(e.data.Day1, e.data.Late)); err != nil {
		return nil, nil, nil, fmt.Errorf("rerun: %w", err)
	}
	return []string{table}, e.data.Truth12, nil, nil
}

// threeTimes runs the same batch three times: the second run finds it
// committed and does nothing, the third runs it through the pipeline again
// (Recheck).
func threeTimes(ctx context.Context, e *env) ([]string, map[string]Balance, map[string]Balance, error) {
	for i := 0; i < 3; i++ {
		o := e.options(e.data.Day1, e.data.Late)
		o.Recheck = i == 2
		if err := e.run(ctx, o); err != nil {
			return nil, nil, nil, fmt.Errorf("run %d: %w", i+1, err)
		}
	}
	return []string{table}, e.data.Truth12, nil, nil
}

// twoProcesses runs the same batch in two processes at the same time.
func twoProcesses(ctx context.Context, e *env) ([]string, map[string]Balance, map[string]Balance, error) {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		cmd, out, err := e.child(ctx, table, e.data.Day1, e.data.Late)
		if err != nil {
			return nil, nil, nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cmd.Wait(); err != nil {
				errs[i] = fmt.Errorf("process %d: %w: %s", i+1, err, lastLine(out.String()))
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, nil, err
	}
	return []string{table}, e.data.Truth12, nil, nil
}

// lateFileAlone runs yesterday's files, then the late file alone.
func lateFileAlone(ctx context.Context, e *env) ([]string, map[string]Balance, map[string]Balance, error) {
	if err := e.run(ctx, e.options(e.data.Day1)); err != nil {
		return nil, nil, nil, err
	}
	if err := e.run(ctx, e.options(e.data.Late)); err != nil {
		return nil, nil, nil, err
	}
	return []string{table}, e.data.Truth12, e.data.Truth1, nil
}

// outOfOrder applies batch 2 (yesterday's files and the late one) before
// batch 1 (yesterday's files).
func outOfOrder(ctx context.Context, e *env) ([]string, map[string]Balance, map[string]Balance, error) {
	o := e.options(e.data.Day1, e.data.Late)
	o.BatchID = 2
	if err := e.run(ctx, o); err != nil {
		return nil, nil, nil, err
	}
	o = e.options(e.data.Day1)
	o.BatchID = 1
	if err := e.run(ctx, o); err != nil {
		return nil, nil, nil, err
	}
	return []string{table}, e.data.Truth12, e.data.Truth1, nil
}

// shardCounts writes the same batch with 1, 2, 4 and 8 shards into four
// tables; each must be right.
func shardCounts(ctx context.Context, e *env) ([]string, map[string]Balance, map[string]Balance, error) {
	var tables []string
	for _, n := range []int{1, 2, 4, 8} {
		o := e.options(e.data.Day1, e.data.Late)
		o.Shards = n
		o.Table = fmt.Sprintf("accounts_%d", n)
		if err := e.run(ctx, o); err != nil {
			return nil, nil, nil, fmt.Errorf("%d shards: %w", n, err)
		}
		tables = append(tables, o.Table)
	}
	return tables, e.data.Truth12, nil, nil
}

func faultyPartitioner(ctx context.Context, e *env) ([]string, map[string]Balance, map[string]Balance, error) {
	o := e.options(e.data.Day1, e.data.Late)
	o.SplitAccounts = true
	if err := e.run(ctx, o); err != nil {
		return nil, nil, nil, err
	}
	return []string{table}, e.data.Truth12, nil, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
