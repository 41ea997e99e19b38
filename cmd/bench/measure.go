package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/balancebeam/balancebeam/internal/localpg"
	"github.com/balancebeam/balancebeam/internal/txgen"
)

// measurement is one process's run.
type measurement struct {
	Seconds float64 `json:"seconds"`
	// MaxRSSBytes is the child's peak resident set (getrusage ru_maxrss).
	MaxRSSBytes int64   `json:"max_rss_bytes"`
	UserSeconds float64 `json:"user_seconds"`
	SysSeconds  float64 `json:"sys_seconds"`
	// InnerSeconds is the time the program itself reports for the part
	// being measured (the sink benchmarks' write), when it reports one.
	InnerSeconds float64 `json:"inner_seconds,omitempty"`
	// Rounds are the sink benchmarks' writes, each into an empty table.
	Rounds []float64 `json:"rounds,omitempty"`
	// RowsWritten is the number of accounts rows the run inserted or
	// updated, from the rows' transaction ids.
	RowsWritten   int64  `json:"rows_written"`
	RejectsDigest string `json:"rejects_digest,omitempty"`
}

type runEnv struct {
	o        options
	data     string
	sum      *txgen.Summary
	expected []txgen.Balance
}

// runMeasured runs a program to its end and measures it. A failed run is an
// error with the end of its stderr.
func runMeasured(ctx context.Context, prog string, args []string, env []string) (*measurement, []byte, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		tail := stderr.Bytes()
		if len(tail) > 3000 {
			tail = tail[len(tail)-3000:]
		}
		return nil, nil, fmt.Errorf("%s %s: %w\n%s", prog, strings.Join(args, " "), err, tail)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return nil, nil, errors.New("no rusage for the child")
	}
	m := &measurement{
		Seconds:     wall.Seconds(),
		MaxRSSBytes: ru.Maxrss * 1024, // KiB on Linux
		UserSeconds: time.Duration(ru.Utime.Nano()).Seconds(),
		SysSeconds:  time.Duration(ru.Stime.Nano()).Seconds(),
	}
	return m, stdout.Bytes(), nil
}

// measure runs configuration c against dsn, checks what it wrote and adds
// the run to cr.
func (e *runEnv) measure(ctx context.Context, c config, dsn string, cr *configResult) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var xidBefore int64
	if err := conn.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&xidBefore); err != nil {
		return err
	}
	prog, args := c.args(e, dsn)
	m, out, err := runMeasured(ctx, prog, args, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	if err := e.check(ctx, conn, c, out, xidBefore, m); err != nil {
		return fmt.Errorf("%s, %d rows: the run's output is wrong, so it is not timed: %w", c.name, e.sum.Config.Rows, err)
	}
	slog.Info("run", "rows", e.sum.Config.Rows, "config", c.name, "seconds", fmt.Sprintf("%.2f", m.Seconds),
		"max_rss_mb", m.MaxRSSBytes>>20, "rows_written", m.RowsWritten)
	cr.Runs = append(cr.Runs, *m)
	return nil
}

// check verifies the run's tables against txgen's expected balances and
// counts, and fills in the rows written and the rejected rows' digest.
func (e *runEnv) check(ctx context.Context, conn *pgx.Conn, c config, out []byte, xidBefore int64, m *measurement) error {
	// Rows inserted or updated by the run: those whose creating transaction
	// is newer than the check's (xmin is the 32-bit id; the cluster is new,
	// so no wraparound).
	want := e.sum.Batch
	if c.kind == "sink" {
		return e.checkSink(ctx, conn, out, xidBefore, m)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM accounts WHERE xmin::text::bigint > $1`, xidBefore%(1<<32)).Scan(&m.RowsWritten); err != nil {
		return err
	}
	if err := e.checkAccounts(ctx, conn, "accounts"); err != nil {
		return err
	}
	switch c.kind {
	case "baseline", "balancebeam", "naive", "rerun":
		got, digest, err := rejectCounts(ctx, conn)
		if err != nil {
			return err
		}
		if !maps.Equal(got, want.RejectedByReason) {
			return fmt.Errorf("rejected_rows by reason %v, want %v", got, want.RejectedByReason)
		}
		m.RejectsDigest = digest
	}
	switch c.kind {
	case "balancebeam", "rerun":
		var rep struct {
			RowsRead       int64  `json:"rows_read"`
			RowsApplied    int64  `json:"rows_applied"`
			Duplicates     int64  `json:"duplicates_collapsed"`
			Rejected       int64  `json:"rows_rejected"`
			Accounts       int64  `json:"accounts"`
			RowsUpserted   int64  `json:"rows_upserted"`
			Run            int    `json:"run"`
			Unchanged      bool   `json:"unchanged"`
			Mode           string `json:"mode"`
			LedgerInserted int64  `json:"ledger_inserted"`
			LedgerKnown    int64  `json:"ledger_known"`
		}
		if err := json.Unmarshal(out, &rep); err != nil {
			return fmt.Errorf("report: %w: %q", err, truncate(out))
		}
		wantApplied := want.Applied
		if c.mode == "ledger" && c.recheck {
			wantApplied = 0 // in ledger mode, what the run added: nothing, every transaction is known
		}
		// A rerun without --recheck does nothing and reports the committed
		// run's counts; with it, it is the batch's second run.
		if wantUnchanged := c.kind == "rerun" && !c.recheck; rep.Unchanged != wantUnchanged {
			return fmt.Errorf("report unchanged=%v, want %v", rep.Unchanged, wantUnchanged)
		}
		if rep.RowsRead != want.Rows || rep.RowsApplied != wantApplied || rep.Duplicates != want.Duplicates || rep.Rejected != want.Rejected || rep.Accounts != want.Accounts {
			return fmt.Errorf("report %+v, want %+v", rep, want)
		}
		wantWritten, wantRun := want.Accounts, 1
		switch {
		case c.recheck:
			wantWritten, wantRun = 0, 2
		case c.kind == "rerun":
			wantWritten = 0
		}
		if rep.RowsUpserted != wantWritten || m.RowsWritten != wantWritten || rep.Run != wantRun || rep.Mode != c.mode {
			return fmt.Errorf("run %d in %s mode wrote %d rows (report: %d upserted), want run %d in %s mode writing %d",
				rep.Run, rep.Mode, m.RowsWritten, rep.RowsUpserted, wantRun, c.mode, wantWritten)
		}
		if c.mode == "ledger" {
			wantNew, wantKnown := want.Applied, int64(0)
			switch {
			case c.recheck:
				wantNew, wantKnown = 0, want.Applied
			case c.kind == "rerun":
				wantNew = 0 // nothing run
			}
			if rep.LedgerInserted != wantNew || rep.LedgerKnown != wantKnown {
				return fmt.Errorf("ledger: %d transactions inserted, %d known; want %d and %d", rep.LedgerInserted, rep.LedgerKnown, wantNew, wantKnown)
			}
		}
	default:
		if m.RowsWritten != want.Accounts {
			return fmt.Errorf("wrote %d rows, want %d", m.RowsWritten, want.Accounts)
		}
	}
	return nil
}

// checkSink checks every table a sink benchmark wrote, one per round.
func (e *runEnv) checkSink(ctx context.Context, conn *pgx.Conn, out []byte, xidBefore int64, m *measurement) error {
	var rep struct {
		Rows    int64     `json:"rows"`
		Seconds float64   `json:"seconds"`
		Rounds  []float64 `json:"rounds"`
		Tables  []string  `json:"tables"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return fmt.Errorf("report: %w: %q", err, truncate(out))
	}
	if rep.Rows != e.sum.Batch.Accounts || len(rep.Tables) == 0 || len(rep.Tables) != len(rep.Rounds) {
		return fmt.Errorf("sink report %+v, want %d rows", rep, e.sum.Batch.Accounts)
	}
	for _, table := range rep.Tables {
		var written int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()+` WHERE xmin::text::bigint > $1`, xidBefore%(1<<32)).Scan(&written); err != nil {
			return err
		}
		if written != e.sum.Batch.Accounts {
			return fmt.Errorf("%s: %d rows written, want %d", table, written, e.sum.Batch.Accounts)
		}
		if err := e.checkAccounts(ctx, conn, table); err != nil {
			return fmt.Errorf("%s: %w", table, err)
		}
	}
	m.InnerSeconds, m.Rounds, m.RowsWritten = rep.Seconds, rep.Rounds, e.sum.Batch.Accounts
	return nil
}

func truncate(b []byte) string {
	if len(b) > 300 {
		b = b[:300]
	}
	return string(b)
}

// checkAccounts compares the accounts table with the expected balances,
// row by row.
func (e *runEnv) checkAccounts(ctx context.Context, conn *pgx.Conn, table string) error {
	rows, err := conn.Query(ctx, `SELECT account_id, (balance * 100)::bigint, txn_count,
		(extract(epoch FROM last_txn_at) * 1000000)::bigint, balance = round(balance, 2) FROM `+pgx.Identifier{table}.Sanitize()+` ORDER BY account_id COLLATE "C"`)
	if err != nil {
		return err
	}
	defer rows.Close()
	i := 0
	for rows.Next() {
		var g txgen.Balance
		var exact bool
		if err := rows.Scan(&g.Account, &g.Cents, &g.Count, &g.LatestMicros, &exact); err != nil {
			return err
		}
		if i >= len(e.expected) {
			return fmt.Errorf("unexpected account %s", g.Account)
		}
		if w := e.expected[i]; g != w || !exact {
			return fmt.Errorf("account row %d: got %+v, want %+v", i, g, w)
		}
		i++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if i != len(e.expected) {
		return fmt.Errorf("%d accounts, want %d", i, len(e.expected))
	}
	return nil
}

// rejectCounts counts rejected_rows by reason and digests (file, line,
// reason) of all of them.
func rejectCounts(ctx context.Context, conn *pgx.Conn) (map[string]int64, string, error) {
	rows, err := conn.Query(ctx, `SELECT source_file, line_number, reason FROM rejected_rows ORDER BY source_file COLLATE "C", line_number`)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	counts := map[string]int64{}
	h := sha256.New()
	for rows.Next() {
		var file, reason string
		var line int64
		if err := rows.Scan(&file, &line, &reason); err != nil {
			return nil, "", err
		}
		counts[reason]++
		fmt.Fprintf(h, "%s\x00%d\x00%s\n", file, line, reason)
	}
	return counts, hex.EncodeToString(h.Sum(nil)[:8]), rows.Err()
}

func freshDatabase(ctx context.Context, pg *localpg.Cluster, name string) (string, error) {
	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	// A kept --work folder may hold it from an interrupted run.
	if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return pg.DSNFor(name), nil
}

func dropDatabase(ctx context.Context, pg *localpg.Cluster, name string) error {
	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DROP DATABASE `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	// A checkpoint now, so that one run's dirty pages are not written
	// during the next.
	_, err = conn.Exec(ctx, `CHECKPOINT`)
	return err
}

func pgVersion(ctx context.Context, dsn string) (string, string) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "unknown", ""
	}
	defer conn.Close(ctx)
	var v string
	conn.QueryRow(ctx, `SHOW server_version`).Scan(&v)
	var settings []string
	for _, s := range []string{"fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "max_wal_size"} {
		var val string
		if conn.QueryRow(ctx, `SELECT current_setting($1)`, s).Scan(&val) == nil {
			settings = append(settings, s+"="+val)
		}
	}
	return "PostgreSQL " + v, strings.Join(settings, ", ")
}
