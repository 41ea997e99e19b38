// Package chaos runs balancebeam under faults, the seed article's closing
// advice made a tool: kill the job mid-way, kill its connections, restart
// the database, fail a bundle, rerun, run twice at once, feed late and
// out-of-order batches and a broken partitioner, in every mode and on each
// local runner, then check every balance against the truth the generator
// knows. Each cell is replayable from the seed.
package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/balancebeam/balancebeam/internal/driver"
	"github.com/balancebeam/balancebeam/internal/localpg"
	"github.com/balancebeam/balancebeam/internal/verify"
	"github.com/balancebeam/balancebeam/sinks"
)

// Options configure a chaos run.
type Options struct {
	// Seed fixes the data and every random choice (kill points, fault
	// counts): the same seed replays the same matrix.
	Seed int64
	// Rows, Accounts and Files size the generated data.
	Rows, Accounts, Files int
	// Modes, Runners and Scenarios select the cells (empty: all).
	Modes     []sinks.Mode
	Runners   []string
	Scenarios []string
	// Self is the balancebeam program, for the scenarios that need separate
	// processes (kill -9, two processes at once).
	Self string
	// CellTimeout bounds one cell.
	CellTimeout time.Duration
	// Log gets a line per cell as it finishes (nil: none).
	Log io.Writer
}

// Small and Large are the matrix sizes: Small for CI, Large by flag.
var (
	Small = Options{Rows: 4000, Accounts: 400, Files: 4}
	Large = Options{Rows: 200000, Accounts: 20000, Files: 4}
)

// Outcomes of a cell, as in the README's guarantee table.
const (
	Correct = "correct"
	Lost    = "lost"
	Stale   = "stale"
	Doubled = "double-counted"
	Wrong   = "wrong"
)

// Cell is one scenario in one mode on one runner.
type Cell struct {
	Scenario string
	Mode     sinks.Mode
	Runner   string
	// Claimed is the outcome the guarantee table claims; Got what happened.
	Claimed, Got string
	// Account counts by kind of difference from the truth.
	Lost, Doubled, Stale, Wrong int
	// Verify is the summary of `balancebeam verify --history` on the cell's
	// tables; VerifyEqual whether it found them equal to their inputs. It
	// must agree with the claim: equal exactly where the cell claims correct.
	Verify      string
	VerifyEqual bool
	// Note says what the faults did (kill point, retries, reruns).
	Note string
	// Err is set when the cell could not be run at all.
	Err     error
	Elapsed time.Duration
}

// OK reports whether the cell came out as claimed, and verify saw it so.
func (c Cell) OK() bool {
	return c.Err == nil && c.Got == c.Claimed && c.VerifyEqual == (c.Claimed == Correct)
}

// env is what a scenario works with.
type env struct {
	opts    Options
	mode    sinks.Mode
	runner  string
	dsn     string
	data    *Data
	cluster *localpg.Cluster
	rng     *rand.Rand
	notes   []string
}

func (e *env) note(format string, args ...any) {
	e.notes = append(e.notes, fmt.Sprintf(format, args...))
}

// options are a batch's driver options for this cell.
func (e *env) options(inputs ...string) driver.Options {
	return driver.Options{Inputs: inputs, DSN: e.dsn, Mode: e.mode, Runner: e.runner,
		MaxRejects: driver.Threshold{Percent: 100, IsPct: true}, FlushRows: 50, Clock: fixedClock}
}

func fixedClock() time.Time { return time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC) }

// run runs a batch in this process.
func (e *env) run(ctx context.Context, o driver.Options) error {
	_, err := driver.Run(ctx, o)
	return err
}

// child starts a batch as a separate balancebeam process.
func (e *env) child(ctx context.Context, table string, inputs ...string) (*exec.Cmd, *bytes.Buffer, error) {
	if e.opts.Self == "" {
		return nil, nil, errors.New("no balancebeam program to start (Options.Self)")
	}
	args := []string{"run", "--input", strings.Join(inputs, ","), "--database", e.dsn, "--mode", string(e.mode),
		"--runner", e.runner, "--table", table, "--flush_rows", "50", "--max_rejects", "100%", "--progress", "0", "--log_level", "warn"}
	cmd := exec.CommandContext(ctx, e.opts.Self, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", e.opts.Self, err)
	}
	return cmd, &out, nil
}

// written counts what the sink has written so far: accounts, or ledger rows.
func (e *env) written(ctx context.Context, table string) (int64, error) {
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	name := table
	if e.mode == sinks.ModeLedger {
		name = sinks.Tables{Accounts: table}.Ledger()
	}
	var n int64
	err = conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{name}.Sanitize()).Scan(&n)
	var pgErr interface{ SQLState() string }
	if errors.As(err, &pgErr) && pgErr.SQLState() == "42P01" {
		return 0, nil // not created yet
	}
	return n, err
}

// waitWritten polls until the sink has written at least n rows, the done
// channel closes (the run ended first) or ctx ends.
func (e *env) waitWritten(ctx context.Context, table string, n int64, done <-chan struct{}) (bool, error) {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-done:
			return false, nil
		case <-tick.C:
		}
		got, err := e.written(ctx, table)
		if err != nil {
			continue // the database may be restarting
		}
		if got >= n {
			return true, nil
		}
	}
}

// target is the count of rows the sink writes for the whole input.
func (e *env) target(truth map[string]Balance) int64 {
	if e.mode == sinks.ModeLedger {
		var n int64
		for _, b := range truth {
			n += b.Count
		}
		return n
	}
	return int64(len(truth))
}

// Run runs the matrix. It starts a throwaway PostgreSQL and removes it, and
// every process it started, before returning.
func Run(ctx context.Context, opts Options) ([]Cell, error) {
	if opts.Rows == 0 {
		opts.Rows, opts.Accounts, opts.Files = Small.Rows, Small.Accounts, Small.Files
	}
	if opts.CellTimeout == 0 {
		opts.CellTimeout = 3 * time.Minute
	}
	if len(opts.Modes) == 0 {
		opts.Modes = sinks.Modes()
	}
	if len(opts.Runners) == 0 {
		opts.Runners = []string{"direct", "prism"}
	}
	chosen, err := pick(opts.Scenarios)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "balancebeam-chaos-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil { // the postgres account must reach pg/
		return nil, err
	}
	data, err := Generate(filepath.Join(dir, "data"), opts.Seed, opts.Rows, opts.Accounts, opts.Files)
	if err != nil {
		return nil, fmt.Errorf("generate data: %w", err)
	}
	cluster, err := localpg.Start(ctx, localpg.Options{Dir: filepath.Join(dir, "pg"), Database: "postgres"})
	if err != nil {
		return nil, err
	}
	defer cluster.Stop(context.WithoutCancel(ctx))

	var cells []Cell
	n := 0
	for _, sc := range chosen {
		for _, mode := range opts.Modes {
			for _, runner := range opts.Runners {
				n++
				cell := runCell(ctx, opts, sc, mode, runner, data, cluster, fmt.Sprintf("cell_%03d", n))
				cells = append(cells, cell)
				if opts.Log != nil {
					fmt.Fprintf(opts.Log, "%-44s %-9s %-7s %s (%s)\n", sc.name, mode, runner, cellText(cell), cell.Elapsed.Round(time.Millisecond))
				}
				if ctx.Err() != nil {
					return cells, ctx.Err()
				}
			}
		}
	}
	return cells, nil
}

func runCell(ctx context.Context, opts Options, sc scenario, mode sinks.Mode, runner string, data *Data, cluster *localpg.Cluster, db string) Cell {
	start := time.Now()
	cell := Cell{Scenario: sc.name, Mode: mode, Runner: runner, Claimed: sc.claims[mode]}
	ctx, cancel := context.WithTimeout(ctx, opts.CellTimeout)
	defer cancel()
	if err := createDatabase(ctx, cluster, db); err != nil {
		cell.Err = err
		return cell
	}
	// Every cell draws from its own stream of the seed, so one cell can be
	// replayed alone.
	e := &env{opts: opts, mode: mode, runner: runner, dsn: cluster.DSNFor(db), data: data, cluster: cluster,
		rng: rand.New(rand.NewPCG(uint64(opts.Seed), fnv(sc.name+"/"+string(mode)+"/"+runner)))}
	tables, want, older, err := sc.run(ctx, e)
	cell.Note = strings.Join(e.notes, "; ")
	if err != nil {
		cell.Err = err
		cell.Elapsed = time.Since(start)
		return cell
	}
	cell.Got = Correct
	cell.VerifyEqual = true
	var summaries []string
	for _, table := range tables {
		got, err := readTable(ctx, e.dsn, table)
		if err != nil {
			cell.Err = err
			break
		}
		classify(&cell, got, want, older)
		// Each run ends with the user's own check, which recomputes the
		// balances from the batches' files by another path.
		rep, err := verify.Run(ctx, verify.Options{DSN: e.dsn, Table: table, History: true})
		if err != nil {
			cell.Err = fmt.Errorf("verify %s: %w", table, err)
			break
		}
		if rep.Outcome() != verify.Equal {
			cell.VerifyEqual = false
		}
		summaries = append(summaries, rep.Summary())
	}
	cell.Verify = strings.Join(slices.Compact(summaries), "; ")
	cell.Elapsed = time.Since(start)
	return cell
}

func createDatabase(ctx context.Context, c *localpg.Cluster, db string) error {
	conn, err := pgx.Connect(ctx, c.DSNFor("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	return nil
}

func readTable(ctx context.Context, dsn, table string) (map[string]Balance, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT account_id, (balance * 100)::bigint, txn_count FROM "+pgx.Identifier{table}.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	out := map[string]Balance{}
	var id string
	var b Balance
	_, err = pgx.ForEachRow(rows, []any{&id, &b.Cents, &b.Count}, func() error {
		out[id] = b
		return nil
	})
	return out, err
}

// classify counts each account's difference from the truth; the worst kind
// found is the cell's outcome (lost, then double-counted, then stale).
func classify(c *Cell, got, want, older map[string]Balance) {
	for id, w := range want {
		g, ok := got[id]
		switch {
		case ok && g == w:
		case !ok || g.Count < w.Count:
			if o, isOld := older[id]; ok && isOld && g == o {
				c.Stale++
			} else {
				c.Lost++
			}
		case g.Count > w.Count:
			c.Doubled++
		default:
			if o, isOld := older[id]; isOld && g == o {
				c.Stale++
			} else {
				c.Wrong++
			}
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			c.Wrong++
		}
	}
	worst := map[string]int{Correct: 0, Stale: 1, Wrong: 2, Doubled: 3, Lost: 4}
	for kind, n := range map[string]int{Lost: c.Lost, Doubled: c.Doubled, Stale: c.Stale, Wrong: c.Wrong} {
		if n > 0 && worst[kind] > worst[c.Got] {
			c.Got = kind
		}
	}
}

func cellText(c Cell) string {
	if c.Err != nil {
		return "ERROR: " + c.Err.Error()
	}
	var counts []string
	for _, kc := range []struct {
		k string
		n int
	}{{Lost, c.Lost}, {Doubled, c.Doubled}, {Stale, c.Stale}, {Wrong, c.Wrong}} {
		if kc.n > 0 {
			counts = append(counts, fmt.Sprintf("%s %d", kc.k, kc.n))
		}
	}
	detail := "correct"
	if len(counts) > 0 {
		detail = strings.Join(counts, ", ")
	}
	switch {
	case c.OK() && c.Claimed == Correct:
		return "pass"
	case c.OK():
		return "pass (" + detail + ", as claimed)"
	case c.Got == c.Claimed:
		return "FAIL (verify: " + c.Verify + ")"
	default:
		return "FAIL (" + detail + "; claimed " + c.Claimed + ")"
	}
}

func fnv(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// WriteText writes the matrix for a terminal: scenarios down, mode and
// runner across.
func WriteText(w io.Writer, cells []Cell) {
	cols, rows, at := layout(cells)
	width := 44
	fmt.Fprintf(w, "%-*s", width, "scenario")
	for _, c := range cols {
		fmt.Fprintf(w, " | %-28s", c)
	}
	fmt.Fprintln(w)
	for _, r := range rows {
		fmt.Fprintf(w, "%-*s", width, r)
		for _, c := range cols {
			fmt.Fprintf(w, " | %-28s", shortText(at[r+"|"+c]))
		}
		fmt.Fprintln(w)
	}
}

// WriteMarkdown writes the matrix as a Markdown table.
func WriteMarkdown(w io.Writer, cells []Cell) {
	cols, rows, at := layout(cells)
	fmt.Fprintf(w, "| scenario | %s |\n|---|%s\n", strings.Join(cols, " | "), strings.Repeat("---|", len(cols)))
	for _, r := range rows {
		var out []string
		for _, c := range cols {
			out = append(out, shortText(at[r+"|"+c]))
		}
		fmt.Fprintf(w, "| %s | %s |\n", r, strings.Join(out, " | "))
	}
}

func shortText(c *Cell) string {
	if c == nil {
		return ""
	}
	return cellText(*c)
}

func layout(cells []Cell) (cols, rows []string, at map[string]*Cell) {
	at = map[string]*Cell{}
	for i := range cells {
		c := &cells[i]
		col := string(c.Mode) + "/" + c.Runner
		if !slices.Contains(cols, col) {
			cols = append(cols, col)
		}
		if !slices.Contains(rows, c.Scenario) {
			rows = append(rows, c.Scenario)
		}
		at[c.Scenario+"|"+col] = c
	}
	return cols, rows, at
}
