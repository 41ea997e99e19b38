package sinks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/balancebeam/balancebeam/internal/pgtest"
	"github.com/balancebeam/balancebeam/transforms"
	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestSplitPassword(t *testing.T) {
	tests := []struct {
		in, clean, pw string
		wantErr       bool
	}{
		{"postgres://u:secret@h:5432/db?sslmode=disable", "postgres://u@h:5432/db?sslmode=disable", "secret", false},
		{"postgresql://u@h/db", "postgresql://u@h/db", "", false},
		{"postgres://h/db?password=p%40ss&sslmode=require", "postgres://h/db?sslmode=require", "p@ss", false},
		{"host=h user=u dbname=d", "host=h user=u dbname=d", "", false},
		{"host=h password=x", "", "", true},
	}
	for _, tt := range tests {
		clean, pw, err := SplitPassword(tt.in)
		if (err != nil) != tt.wantErr || clean != tt.clean || pw != tt.pw {
			t.Errorf("SplitPassword(%q) = %q, %q, %v; want %q, %q, err %v", tt.in, clean, pw, err, tt.clean, tt.pw, tt.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "x") && strings.Contains(err.Error(), "password=x") {
			t.Errorf("error echoes the password: %v", err)
		}
	}
	if got := Redact("postgres://u:secret@h:5433/db"); strings.Contains(got, "secret") || got != "postgres://u@h:5433/db" {
		t.Errorf("Redact = %q", got)
	}
}

func TestIsTransient(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "40001"}, true},
		{&pgconn.PgError{Code: "40P01"}, true},
		{&pgconn.PgError{Code: "57P01"}, true},
		{&pgconn.PgError{Code: "08006"}, true},
		{fmt.Errorf("flush: %w", &pgconn.PgError{Code: "57P03"}), true},
		{&pgconn.PgError{Code: "23505"}, false}, // unique_violation
		{&pgconn.PgError{Code: "42P01"}, false}, // undefined_table
		{&pgconn.PgError{Code: "22003"}, false}, // numeric_value_out_of_range
		{io.ErrUnexpectedEOF, true},
		{syscall.ECONNREFUSED, true},
		{&net.OpError{Op: "dial", Err: syscall.ECONNRESET}, true},
		{context.Canceled, false},
		{errors.New("injected fault"), false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := IsTransient(tt.err); got != tt.want {
			t.Errorf("IsTransient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func openPool(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	dsn := pgtest.New(t)
	pool, err := OpenPool(context.Background(), Connection{DSN: dsn, MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, dsn
}

func TestEnsureSchemaConcurrent(t *testing.T) {
	pool, _ := openPool(t)
	ctx := context.Background()
	tables := Tables{Accounts: "reporting.balances"}
	if _, err := pool.Exec(ctx, "CREATE SCHEMA reporting"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = EnsureSchema(ctx, pool, tables, ModeSnapshot) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := EnsureSchema(ctx, pool, tables, ModeSnapshot); err != nil {
		t.Fatalf("again: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_schema = 'reporting'`).Scan(&n); err != nil || n != 5 {
		t.Errorf("tables in schema reporting: %d, %v", n, err)
	}
	if err := EnsureSchema(ctx, pool, Tables{Accounts: "a.b.c"}, ModeSnapshot); err == nil {
		t.Error("three-part table name accepted")
	}
}

func TestRegistry(t *testing.T) {
	pool, _ := openPool(t)
	ctx := context.Background()
	tables := Tables{}
	if err := EnsureSchema(ctx, pool, tables, ModeSnapshot); err != nil {
		t.Fatal(err)
	}
	reg := &Registry{Pool: pool, Tables: tables}
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 123456789, time.UTC)
	req := func(hash string, force int64, at time.Time) BatchRequest {
		return BatchRequest{ManifestSHA256: hash, Files: []string{hash + ".csv"}, PinnedAt: at, ForceID: force}
	}

	b1, err := reg.Register(ctx, req("m1", 0, t0))
	if err != nil || !b1.New || b1.ID != 1 || !b1.PinnedAt.Equal(t0.Truncate(time.Microsecond)) {
		t.Fatalf("first: %+v, %v", b1, err)
	}
	again, err := reg.Register(ctx, req("m1", 0, t0.Add(time.Hour)))
	if err != nil || again.New || again.ID != b1.ID || !again.PinnedAt.Equal(b1.PinnedAt) || again.PreviousStatus != StatusRunning {
		t.Fatalf("same inputs: %+v, %v", again, err)
	}
	b2, err := reg.Register(ctx, req("m2", 0, t0))
	if err != nil || b2.ID <= b1.ID {
		t.Fatalf("new inputs: %+v, %v", b2, err)
	}
	// Forcing an id.
	if _, err := reg.Register(ctx, req("m3", b1.ID, t0)); !errors.Is(err, ErrBatchConflict) {
		t.Errorf("forcing another batch's id: %v", err)
	}
	if _, err := reg.Register(ctx, req("m1", 50, t0)); !errors.Is(err, ErrBatchConflict) {
		t.Errorf("forcing a second id for known inputs: %v", err)
	}
	if b, err := reg.Register(ctx, req("m1", b1.ID, t0)); err != nil || b.ID != b1.ID {
		t.Errorf("forcing the inputs' own id: %+v, %v", b, err)
	}
	b100, err := reg.Register(ctx, req("m4", 100, t0))
	if err != nil || b100.ID != 100 || !b100.New {
		t.Fatalf("forcing a free id: %+v, %v", b100, err)
	}
	next, err := reg.Register(ctx, req("m5", 0, t0))
	if err != nil || next.ID <= 100 {
		t.Errorf("after a forced id the sequence moves past it: %+v, %v", next, err)
	}
	// Status: commit sticks, a later failure does not undo it.
	if err := reg.Commit(ctx, b1.ID, map[string]int{"rows_read": 3}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Fail(ctx, b1.ID, errors.New("rerun broke")); err != nil {
		t.Fatal(err)
	}
	var status string
	if err := pool.QueryRow(ctx, "SELECT status FROM batches WHERE batch_id = $1", b1.ID).Scan(&status); err != nil || status != StatusCommitted {
		t.Errorf("status after commit then failed rerun: %q, %v", status, err)
	}
	if err := reg.Fail(ctx, b2.ID, errors.New("broke")); err != nil {
		t.Fatal(err)
	}
	rerun, err := reg.Register(ctx, req("m2", 0, t0))
	if err != nil || rerun.PreviousStatus != StatusFailed {
		t.Errorf("rerun of a failed batch: %+v, %v", rerun, err)
	}
	// Another table: the same inputs are another batch there.
	if err := EnsureSchema(ctx, pool, Tables{Accounts: "other"}, ModeSnapshot); err != nil {
		t.Fatal(err)
	}
	other, err := (&Registry{Pool: pool, Tables: Tables{Accounts: "other"}}).Register(ctx, req("m1", 0, t0))
	if err != nil || other.ID == b1.ID || !other.New {
		t.Errorf("same inputs, other table: %+v, %v", other, err)
	}
}

func TestRegistryConcurrent(t *testing.T) {
	pool, _ := openPool(t)
	ctx := context.Background()
	if err := EnsureSchema(ctx, pool, Tables{}, ModeSnapshot); err != nil {
		t.Fatal(err)
	}
	reg := &Registry{Pool: pool}
	ids := make([]int64, 8)
	errs := make([]error, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := reg.Register(ctx, BatchRequest{ManifestSHA256: "same", Files: []string{"f"}, PinnedAt: time.Unix(int64(i), 0)})
			ids[i], errs[i] = b.ID, err
		}()
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("concurrent registration: ids %v, errors %v", ids, errs)
		}
	}
}

// writer returns a started balance writer for batch.
func writer(t *testing.T, dsn string, batch int64, flushRows int) *BalanceWriterFn {
	t.Helper()
	w := &BalanceWriterFn{Conn: Connection{DSN: dsn}, BatchID: batch, Run: 1, Buckets: 1,
		PinnedAtMicros: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixMicro() + batch, FlushRows: flushRows,
		Retry: Retry{Attempts: 3, Initial: 10 * time.Millisecond}}
	if err := w.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Teardown(context.Background()) })
	return w
}

func write(t *testing.T, w *BalanceWriterFn, rows ...transforms.Total) error {
	t.Helper()
	ctx := context.Background()
	w.StartBundle(ctx)
	if err := w.ProcessElement(ctx, 0, transforms.Totals{Rows: rows, Marks: []transforms.BucketMark{{Bucket: 0, Read: int64(len(rows)), Applied: int64(len(rows))}}}); err != nil {
		return err
	}
	return w.FinishBundle(ctx)
}

type accountRow struct {
	Balance string
	Batch   int64
	Count   int64
}

func accounts(t *testing.T, pool *pgxpool.Pool) map[string]accountRow {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT account_id, balance::text, batch_id, txn_count FROM accounts")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]accountRow{}
	for rows.Next() {
		var id string
		var r accountRow
		if err := rows.Scan(&id, &r.Balance, &r.Batch, &r.Count); err != nil {
			t.Fatal(err)
		}
		out[id] = r
	}
	return out
}

func TestBalanceWriterGuard(t *testing.T) {
	pool, dsn := openPool(t)
	ctx := context.Background()
	if err := EnsureSchema(ctx, pool, Tables{}, ModeSnapshot); err != nil {
		t.Fatal(err)
	}
	// Batch 2 writes; flushes of 2 rows, so 3 transactions.
	w2 := writer(t, dsn, 2, 2)
	if err := write(t, w2, transforms.Total{Account: "a", Cents: 1050, Count: 2, LatestMicros: 1},
		transforms.Total{Account: "b", Cents: -1, Count: 1, LatestMicros: 2},
		transforms.Total{Account: "c", Cents: 92233720368547758, Count: 1, LatestMicros: 3}); err != nil {
		t.Fatal(err)
	}
	want := map[string]accountRow{"a": {"10.50", 2, 2}, "b": {"-0.01", 2, 1}, "c": {"922337203685477.58", 2, 1}}
	if got := accounts(t, pool); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after batch 2: %v, want %v", got, want)
	}
	if w2.flushes.Load() != 2 {
		t.Errorf("flushes = %d, want 2 (2 rows, then 1)", w2.flushes.Load())
	}
	marks, err := (&Registry{Pool: pool}).ShardMarks(ctx, 2, 1)
	if err != nil || len(marks) != 1 || marks[0] != (ShardMark{Shard: 0, Buckets: 1, Accounts: 3, Upserted: 3, RowsRead: 3, Applied: 3}) {
		t.Errorf("shard marks %+v, %v", marks, err)
	}
	// Totals that lack a bucket's mark are refused before anything is written.
	w := writer(t, dsn, 9, 100)
	w.Buckets = 2
	w.StartBundle(ctx)
	err = w.ProcessElement(ctx, 1, transforms.Totals{Rows: []transforms.Total{{Account: "zz", Cents: 1}}, Marks: []transforms.BucketMark{{Bucket: 0}}})
	if err == nil || !strings.Contains(err.Error(), "lack the marks of 1 of 2 dedup buckets ([1])") {
		t.Fatalf("incomplete totals: %v", err)
	}
	if _, ok := accounts(t, pool)["zz"]; ok {
		t.Error("incomplete shard written")
	}
	// The same batch again, with other values: the guard keeps what is there.
	if err := write(t, writer(t, dsn, 2, 100), transforms.Total{Account: "a", Cents: 999, Count: 9}); err != nil {
		t.Fatal(err)
	}
	// An older batch after a newer one: nothing changes; its new accounts
	// are inserted (no newer batch has written them).
	if err := write(t, writer(t, dsn, 1, 100), transforms.Total{Account: "a", Cents: 5, Count: 1}, transforms.Total{Account: "d", Cents: 7, Count: 1}); err != nil {
		t.Fatal(err)
	}
	want["d"] = accountRow{"0.07", 1, 1}
	if got := accounts(t, pool); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after rerun and older batch: %v, want %v", got, want)
	}
	// A newer batch replaces the balances it carries.
	if err := write(t, writer(t, dsn, 3, 100), transforms.Total{Account: "a", Cents: 0, Count: 3}); err != nil {
		t.Fatal(err)
	}
	want["a"] = accountRow{"0.00", 3, 3}
	if got := accounts(t, pool); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after batch 3: %v, want %v", got, want)
	}
}

// TestBalanceWriterRerunMerge checks that a rerun's merge (Run > 1, which
// leaves out the accounts the guard would skip before merging) writes what
// the first run's merge writes, and leaves the skipped rows untouched: not
// even locked.
func TestBalanceWriterRerunMerge(t *testing.T) {
	ctx := context.Background()
	for _, run := range []int{1, 2} {
		t.Run(fmt.Sprintf("run=%d", run), func(t *testing.T) {
			pool, dsn := openPool(t)
			if err := EnsureSchema(ctx, pool, Tables{}, ModeSnapshot); err != nil {
				t.Fatal(err)
			}
			for batch, acct := range map[int64]string{1: "old", 2: "same", 3: "newer"} {
				if err := write(t, writer(t, dsn, batch, 100), transforms.Total{Account: acct, Cents: batch, Count: 1}); err != nil {
					t.Fatal(err)
				}
			}
			xmax := func() string {
				var x string
				if err := pool.QueryRow(ctx, `SELECT string_agg(account_id || ':' || xmax::text, ',' ORDER BY account_id) FROM accounts`).Scan(&x); err != nil {
					t.Fatal(err)
				}
				return x
			}
			before := xmax()
			w := writer(t, dsn, 2, 100)
			w.Run = run
			if err := write(t, w, transforms.Total{Account: "missing", Cents: 200, Count: 2}, transforms.Total{Account: "newer", Cents: 200, Count: 2},
				transforms.Total{Account: "old", Cents: 200, Count: 2}, transforms.Total{Account: "same", Cents: 200, Count: 2}); err != nil {
				t.Fatal(err)
			}
			want := map[string]accountRow{"missing": {"2.00", 2, 2}, "newer": {"0.03", 3, 1}, "old": {"2.00", 2, 2}, "same": {"0.02", 2, 1}}
			if got := accounts(t, pool); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("after batch 2, run %d: %v, want %v", run, got, want)
			}
			marks, err := (&Registry{Pool: pool}).ShardMarks(ctx, 2, run)
			if err != nil || len(marks) != 1 || marks[0].Accounts != 4 || marks[0].Upserted != 2 || marks[0].Stale != 2 {
				t.Errorf("shard marks %+v, %v", marks, err)
			}
			if run > 1 {
				// The rows at batch 2 or newer kept their xmax: not locked.
				after := xmax()
				for _, acct := range []string{"newer", "same"} {
					if field(before, acct) != field(after, acct) {
						t.Errorf("%s was locked by the rerun: xmax %s -> %s", acct, field(before, acct), field(after, acct))
					}
				}
			}
		})
	}
}

func field(list, key string) string {
	for _, kv := range strings.Split(list, ",") {
		if k, v, _ := strings.Cut(kv, ":"); k == key {
			return v
		}
	}
	return ""
}

func TestBalanceWriterFaults(t *testing.T) {
	pool, dsn := openPool(t)
	ctx := context.Background()
	if err := EnsureSchema(ctx, pool, Tables{}, ModeSnapshot); err != nil {
		t.Fatal(err)
	}
	// The injected fault fails after the configured number of flushes.
	w := writer(t, dsn, 1, 1)
	w.FailAfterFlushes = 2
	err := write(t, w, transforms.Total{Account: "a", Cents: 1}, transforms.Total{Account: "b", Cents: 2}, transforms.Total{Account: "c", Cents: 3})
	if err == nil || !strings.Contains(err.Error(), "injected fault") {
		t.Fatalf("fault: %v", err)
	}
	if got := len(accounts(t, pool)); got != 2 {
		t.Errorf("%d accounts written before the fault, want 2", got)
	}

	// A connection killed between flushes is retried transparently.
	w = writer(t, dsn, 2, 100)
	if err := write(t, w, transforms.Total{Account: "a", Cents: 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = 'balancebeam' AND pid <> pg_backend_pid() AND datname = current_database()`); err != nil {
		t.Fatal(err)
	}
	if err := write(t, w, transforms.Total{Account: "b", Cents: 20}); err != nil {
		t.Fatalf("after pg_terminate_backend: %v", err)
	}
	if got := accounts(t, pool)["b"]; got.Balance != "0.20" || got.Batch != 2 {
		t.Errorf("b = %+v", got)
	}

	// A permanent error fails at once, with its SQL state.
	if _, err := pool.Exec(ctx, "ALTER TABLE accounts ADD CONSTRAINT small CHECK (balance < 1000)"); err != nil {
		t.Fatal(err)
	}
	err = write(t, writer(t, dsn, 3, 100), transforms.Total{Account: "big", Cents: 100000000})
	if err == nil || !strings.Contains(err.Error(), "SQLSTATE 23514") {
		t.Fatalf("permanent error: %v", err)
	}
	if strings.Contains(err.Error(), "giving up") {
		t.Errorf("a permanent error was retried: %v", err)
	}
}

func TestRejectWriterIdempotent(t *testing.T) {
	pool, dsn := openPool(t)
	ctx := context.Background()
	if err := EnsureSchema(ctx, pool, Tables{}, ModeSnapshot); err != nil {
		t.Fatal(err)
	}
	rows := []transforms.RejectedRow{
		{File: "/in/a.csv", Line: 9, Reason: "bad_amount", Detail: `amount "abc"`, Raw: "t8,acc,abc,..."},
		{File: "/in/a.csv", Line: 12, Reason: "invalid_utf8", Detail: "row is not valid UTF-8", Raw: "t9,acc\xff,\x00,..."},
		{File: "/in/b.csv", Line: 9, Reason: "conflicting_duplicate", Detail: "…", Raw: "x"},
	}
	for run := 0; run < 2; run++ {
		w := &RejectWriterFn{Conn: Connection{DSN: dsn}, BatchID: 7, FlushRows: 2}
		if err := w.Setup(ctx); err != nil {
			t.Fatal(err)
		}
		w.StartBundle(ctx)
		for _, r := range rows {
			if err := w.ProcessElement(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.FinishBundle(ctx); err != nil {
			t.Fatal(err)
		}
		w.Teardown(ctx)
	}
	reg := &Registry{Pool: pool}
	counts, err := reg.RejectCounts(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(counts) != "map[bad_amount:1 conflicting_duplicate:1 invalid_utf8:1]" {
		t.Errorf("counts after two runs: %v", counts)
	}
	var raw string
	if err := pool.QueryRow(ctx, "SELECT raw_line FROM rejected_rows WHERE line_number = 12").Scan(&raw); err != nil || raw != "t9,acc\uFFFD,\uFFFD,..." {
		t.Errorf("sanitised raw line = %q, %v", raw, err)
	}
}

// TestCentsEncoding checks the fast numeric encoder against PostgreSQL's own
// reading of it, and against the general encoder, at the edges of the
// base-10000 digits and of int64.
func TestCentsEncoding(t *testing.T) {
	pool, _ := openPool(t)
	ctx := context.Background()
	tests := []int64{
		0, 1, -1, 5, 10, 99, 100, -100, 101, 1000, 9999, 10000, 10001, 123456, -123456, 999999, 1000000,
		100000000, 100000001, 1234567890123, -987654321098, 1e17, 1e18 - 1, math.MaxInt64, math.MinInt64,
		math.MinInt64 + 1,
	}
	for _, c := range tests {
		want := txnfile.FormatCents(c)
		var fast, general string
		var eq bool
		err := pool.QueryRow(ctx, `SELECT $1::numeric::text, $2::numeric::text, $1::numeric = $2::numeric`,
			cents(c), pgtype.Numeric{Int: big.NewInt(c), Exp: -2, Valid: true}).Scan(&fast, &general, &eq)
		if err != nil {
			t.Fatalf("cents %d: %v", c, err)
		}
		if fast != want || general != want || !eq {
			t.Errorf("cents %d: fast encoder gives %s, pgtype.Numeric %s; want %s", c, fast, general, want)
		}
		buf, err := encodeCents{}.Encode(cents(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if ndigits := int(buf[0])<<8 | int(buf[1]); len(buf) != 8+2*ndigits {
			t.Errorf("cents %d: %d bytes for %d digits", c, len(buf), ndigits)
		}
	}
}

// TestFlushRowsDefaults: the ledger mode's balance flushes default to
// DefaultLedgerFlushRows transactions, everything else to DefaultFlushRows,
// and a set size wins.
func TestFlushRowsDefaults(t *testing.T) {
	tests := []struct {
		target            Target
		balances, rejects int
	}{
		{Target{}, DefaultFlushRows, DefaultFlushRows},
		{Target{Mode: ModeSnapshot}, DefaultFlushRows, DefaultFlushRows},
		{Target{Mode: ModeLWW}, DefaultFlushRows, DefaultFlushRows},
		{Target{Mode: ModeLedger}, DefaultLedgerFlushRows, DefaultFlushRows},
		{Target{Mode: ModeLedger, FlushRows: 7}, 7, 7},
		{Target{Mode: ModeSnapshot, FlushRows: 7}, 7, 7},
	}
	for _, tt := range tests {
		if got, gotRejects := tt.target.balanceFlushRows(), tt.target.flushRows(); got != tt.balances || gotRejects != tt.rejects {
			t.Errorf("%+v: balance flushes %d, reject flushes %d; want %d, %d", tt.target, got, gotRejects, tt.balances, tt.rejects)
		}
	}
}
