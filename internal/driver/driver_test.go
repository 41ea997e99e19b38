package driver

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/balancebeam/balancebeam/internal/logs"
	"github.com/balancebeam/balancebeam/internal/manifest"
	"github.com/balancebeam/balancebeam/internal/pgtest"
	"github.com/balancebeam/balancebeam/internal/verify"
	"github.com/balancebeam/balancebeam/sinks"
	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

func TestMain(m *testing.M) {
	flag.Parse()
	beam.Init()
	logs.Setup(os.Stderr, "warn")
	os.Exit(pgtest.Main(m))
}

var testRunners = []string{"direct", "prism"}

const (
	day1    = "../../testdata/day1/*.csv"
	day2    = "../../testdata/day2/*.csv"
	fixedAt = "2026-12-02T06:00:00Z"
)

func clock(t *testing.T) func() time.Time {
	at, err := time.Parse(time.RFC3339, fixedAt)
	if err != nil {
		t.Fatal(err)
	}
	return func() time.Time { return at }
}

// run runs a batch; every test allows the fixtures' three rejected rows.
func run(t *testing.T, runner, dsn string, opts Options) *Report {
	t.Helper()
	opts.Runner, opts.DSN = runner, dsn
	if opts.Clock == nil {
		opts.Clock = clock(t)
	}
	if opts.MaxRejects == (Threshold{}) {
		opts.MaxRejects = Threshold{Count: 3}
	}
	rep, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("run %v: %v", opts.Inputs, err)
	}
	return rep
}

// tableRow is an accounts row, every column as text.
type tableRow struct{ ID, Balance, Batch, Updated, Count, LastTxn string }

func dump(t *testing.T, dsn, table string) []tableRow {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT account_id, balance::text, batch_id::text, last_updated::text, txn_count::text, last_txn_at::text
		FROM `+pgx.Identifier{table}.Sanitize()+` ORDER BY account_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []tableRow
	for rows.Next() {
		var r tableRow
		if err := rows.Scan(&r.ID, &r.Balance, &r.Batch, &r.Updated, &r.Count, &r.LastTxn); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// expected reads a testdata/expected file: account_id,balance,txn_count.
func expected(t *testing.T, name string) [][3]string {
	t.Helper()
	f, err := os.Open(filepath.Join("../../testdata/expected", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var out [][3]string
	for _, r := range recs[1:] {
		out = append(out, [3]string{r[0], r[1], r[2]})
	}
	return out
}

func balances(rows []tableRow) [][3]string {
	var out [][3]string
	for _, r := range rows {
		out = append(out, [3]string{r.ID, r.Balance, r.Count})
	}
	return out
}

func batchStatus(t *testing.T, dsn string, id int64) string {
	t.Helper()
	return scalar[string](t, dsn, "SELECT status FROM batches WHERE batch_id = $1", id)
}

// TestScenarios is the core contract, on each local runner: first run,
// rerun, shards, an older batch after a newer one, a failing sink then a
// rerun, and the late file together with yesterday's files.
func TestScenarios(t *testing.T) {
	for _, runner := range testRunners {
		t.Run(runner, func(t *testing.T) {
			t.Run("day1 gives the right balances", func(t *testing.T) {
				dsn := pgtest.New(t)
				rep := run(t, runner, dsn, Options{Inputs: []string{day1}})
				if got, want := balances(dump(t, dsn, "accounts")), expected(t, "day1.csv"); !reflect.DeepEqual(got, want) {
					t.Errorf("balances\n got %v\nwant %v", got, want)
				}
				if rep.RowsRead != 15 || rep.RowsApplied != 11 || rep.Duplicates != 1 || rep.Rejected != 3 ||
					rep.Accounts != 6 || rep.RowsUpserted != 6 || rep.RowsStale != 0 || !rep.NewBatch || rep.BatchID != 1 {
					t.Errorf("report: %+v", rep)
				}
				if fmt.Sprint(rep.RejectedByReason) != "map[bad_amount:1 conflicting_duplicate:2]" {
					t.Errorf("rejected by reason: %v", rep.RejectedByReason)
				}
				for _, r := range dump(t, dsn, "accounts") {
					if r.Updated != "2026-12-02 06:00:00+00" || r.Batch != "1" {
						t.Errorf("%s: last_updated %s batch %s: want the pinned time and batch 1", r.ID, r.Updated, r.Batch)
					}
				}
				checkRejects(t, dsn, 1, "day1.rejects.csv")
				if s := batchStatus(t, dsn, 1); s != "committed" {
					t.Errorf("status %q", s)
				}
			})

			t.Run("rerun keeps the batch and changes no row", func(t *testing.T) {
				dsn := pgtest.New(t)
				first := run(t, runner, dsn, Options{Inputs: []string{day1}})
				before := dump(t, dsn, "accounts")
				// A rerun later in the day, the inputs named in another order:
				// the same batch, committed already, so nothing is run; the
				// report is the committing run's, and the pinned time too.
				again := Options{Inputs: []string{"../../testdata/day1/b.csv", "../../testdata/day1/a.csv"},
					Clock: func() time.Time { return time.Now() }}
				same := run(t, runner, dsn, again)
				if !same.Unchanged || same.BatchID != first.BatchID || same.NewBatch || same.Run != 1 || same.CommittedRun != 1 ||
					!same.PinnedAt.Equal(first.PinnedAt) || same.RowsUpserted != 0 || same.RowsStale != 0 ||
					same.RowsRead != first.RowsRead || same.Rejected != first.Rejected || same.Accounts != first.Accounts ||
					!reflect.DeepEqual(same.RejectedByReason, first.RejectedByReason) {
					t.Errorf("rerun of the committed batch: %+v; first %+v", same, first)
				}
				if got := query(t, dsn, `SELECT runs || ' ' || status FROM batches WHERE batch_id = 1`); !reflect.DeepEqual(got, []string{"1 committed"}) {
					t.Errorf("after the unchanged rerun: runs and status %v", got)
				}
				var text strings.Builder
				same.WriteText(&text)
				if !strings.Contains(text.String(), "nothing to do") || !strings.Contains(text.String(), "--recheck") {
					t.Errorf("report of the unchanged rerun:\n%s", text.String())
				}
				// With Recheck the whole pipeline runs again, and the guard
				// skips every row.
				again.Recheck = true
				rerun := run(t, runner, dsn, again)
				if rerun.Unchanged || rerun.BatchID != first.BatchID || rerun.NewBatch || rerun.Run != 2 || !rerun.PinnedAt.Equal(first.PinnedAt) {
					t.Errorf("rerun batch %d new=%v run %d pinned %v; first %d %v", rerun.BatchID, rerun.NewBatch, rerun.Run, rerun.PinnedAt, first.BatchID, first.PinnedAt)
				}
				if rerun.RowsUpserted != 0 || rerun.RowsStale != 6 {
					t.Errorf("rerun wrote %d rows (%d stale), want 0 (6)", rerun.RowsUpserted, rerun.RowsStale)
				}
				if after := dump(t, dsn, "accounts"); !reflect.DeepEqual(before, after) {
					t.Errorf("rerun changed rows:\n%v\n%v", before, after)
				}
				checkRejects(t, dsn, 1, "day1.rejects.csv") // not duplicated
			})

			t.Run("shards 1 and 4 give identical tables", func(t *testing.T) {
				var tables [][]tableRow
				for _, shards := range []int{1, 4} {
					dsn := pgtest.New(t)
					run(t, runner, dsn, Options{Inputs: []string{day1 + "," + day2}, Shards: shards, FlushRows: 2})
					tables = append(tables, dump(t, dsn, "accounts"))
				}
				if !reflect.DeepEqual(tables[0], tables[1]) {
					t.Errorf("shards 1:\n%v\nshards 4:\n%v", tables[0], tables[1])
				}
			})

			t.Run("an older batch after a newer one changes nothing", func(t *testing.T) {
				dsn := pgtest.New(t)
				older := run(t, runner, dsn, Options{Inputs: []string{day1}})
				newer := run(t, runner, dsn, Options{Inputs: []string{day1, day2}})
				if newer.BatchID <= older.BatchID {
					t.Fatalf("batch ids %d then %d", older.BatchID, newer.BatchID)
				}
				want := dump(t, dsn, "accounts")
				again := run(t, runner, dsn, Options{Inputs: []string{day1}})
				if again.BatchID != older.BatchID || again.RowsUpserted != 0 {
					t.Errorf("older batch rerun: batch %d upserted %d", again.BatchID, again.RowsUpserted)
				}
				if got := dump(t, dsn, "accounts"); !reflect.DeepEqual(got, want) {
					t.Errorf("older batch changed the table:\n got %v\nwant %v", got, want)
				}
			})

			t.Run("a sink failing after some flushes, then a rerun", func(t *testing.T) {
				dsn := pgtest.New(t)
				opts := Options{Inputs: []string{day1, day2}, Runner: runner, DSN: dsn, Clock: clock(t),
					MaxRejects: Threshold{Count: 3}, Shards: 1, FlushRows: 2, FailAfterFlushes: 2}
				_, err := Run(context.Background(), opts)
				if !failedRun(err) {
					t.Fatalf("faulty run: %v", err)
				}
				if n := len(dump(t, dsn, "accounts")); n != 4 {
					t.Errorf("%d accounts written before the fault, want 4 (two flushes of two)", n)
				}
				if s := batchStatus(t, dsn, 1); s != "failed" {
					t.Errorf("status after the fault: %q", s)
				}
				opts.FailAfterFlushes = 0
				rep := run(t, runner, dsn, opts)
				if rep.BatchID != 1 || rep.PreviousStatus != "failed" || rep.RowsUpserted != 3 || rep.RowsStale != 4 {
					t.Errorf("rerun: %+v", rep)
				}
				if got, want := balances(dump(t, dsn, "accounts")), expected(t, "day1+day2.csv"); !reflect.DeepEqual(got, want) {
					t.Errorf("balances\n got %v\nwant %v", got, want)
				}
				if s := batchStatus(t, dsn, 1); s != "committed" {
					t.Errorf("status after the rerun: %q", s)
				}
			})

			t.Run("the late file with yesterday's files counts each transaction once", func(t *testing.T) {
				dsn := pgtest.New(t)
				first := run(t, runner, dsn, Options{Inputs: []string{day1}})
				late := run(t, runner, dsn, Options{Inputs: []string{day1 + "," + day2}})
				if late.BatchID <= first.BatchID || !late.NewBatch {
					t.Errorf("late batch %d (new %v) after %d", late.BatchID, late.NewBatch, first.BatchID)
				}
				if late.RowsRead != 20 || late.RowsApplied != 14 || late.Duplicates != 3 || late.Rejected != 3 {
					t.Errorf("late report: %+v", late)
				}
				if got, want := balances(dump(t, dsn, "accounts")), expected(t, "day1+day2.csv"); !reflect.DeepEqual(got, want) {
					t.Errorf("balances\n got %v\nwant %v", got, want)
				}
			})
		})
	}
}

// checkRejects compares the batch's rejected rows with an expected file.
func checkRejects(t *testing.T, dsn string, batch int64, name string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT source_file, line_number, reason FROM rejected_rows WHERE batch_id = $1 ORDER BY 1, 2", batch)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var file, reason string
		var line int64
		if err := rows.Scan(&file, &line, &reason); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s/%s,%d,%s", filepath.Base(filepath.Dir(file)), filepath.Base(file), line, reason))
	}
	rows.Close()
	data, err := os.ReadFile(filepath.Join("../../testdata/expected", name))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSpace(string(data)), "\n")[1:]
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rejected rows\n got %v\nwant %v", got, want)
	}
}

// TestEveryRejectReason runs a file with one row for each reason.
func TestEveryRejectReason(t *testing.T) {
	dir := t.TempDir()
	lines := []string{
		"transaction_id,account_id,amount,timestamp",
		"ok-1,acc,1.00,2026-12-01T00:00:00Z",                        // 2
		"r-wfc,acc,1.00",                                            // 3 wrong_field_count
		",acc,1.00,2026-12-01T00:00:00Z",                            // 4 empty_id
		"r-bid ,acc,1.00,2026-12-01T00:00:00Z",                      // 5 bad_id
		"r-bam,acc,1.001,2026-12-01T00:00:00Z",                      // 6 bad_amount
		"r-ovf,acc,99999999999999999999,2026-12-01T00:00:00Z",       // 7 amount_overflow
		"r-bts,acc,1.00,yesterday",                                  // 8 bad_timestamp
		"r-utf,acc\xff,1.00,2026-12-01T00:00:00Z",                   // 9 invalid_utf8
		"r-csv,a\"cc,1.00,2026-12-01T00:00:00Z",                     // 10 malformed_csv
		"r-long," + strings.Repeat("x", txnfile.MaxLineBytes) + ",", // 11 line_too_long
		"r-dup,acc,1.00,2026-12-01T00:00:00Z",                       // 12 conflicting_duplicate
		"r-dup,acc,2.00,2026-12-01T00:00:00Z",                       // 13 conflicting_duplicate
		"ok-2,acc,2.50,2026-12-01T00:00:00Z",                        // 14
		"r-eof,\"acc,1.00,2026-12-01T00:00:00Z",                     // 15 malformed_csv (quote open at the end)
	}
	path := filepath.Join(dir, "reasons.csv")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := map[int64]string{3: "wrong_field_count", 4: "empty_id", 5: "bad_id", 6: "bad_amount", 7: "amount_overflow",
		8: "bad_timestamp", 9: "invalid_utf8", 10: "malformed_csv", 11: "line_too_long", 12: "conflicting_duplicate",
		13: "conflicting_duplicate", 15: "malformed_csv"}
	for _, runner := range testRunners {
		t.Run(runner, func(t *testing.T) {
			dsn := pgtest.New(t)
			rep, err := Run(context.Background(), Options{Inputs: []string{path}, Runner: runner, DSN: dsn, Clock: clock(t)})
			if !errors.Is(err, ErrTooManyRejects) || rep == nil {
				t.Fatalf("run: %v", err)
			}
			if rep.RowsRead != 14 || rep.RowsApplied != 2 || rep.Rejected != 12 {
				t.Errorf("report: %+v", rep)
			}
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			rows, _ := conn.Query(ctx, "SELECT line_number, reason, detail, length(raw_line) FROM rejected_rows")
			got := map[int64]string{}
			for rows.Next() {
				var line int64
				var reason, detail string
				var rawLen int
				if err := rows.Scan(&line, &reason, &detail, &rawLen); err != nil {
					t.Fatal(err)
				}
				got[line] = reason
				if detail == "" || rawLen == 0 || rawLen > txnfile.MaxRawBytes*3 {
					t.Errorf("line %d: detail %q, raw line of %d chars", line, detail, rawLen)
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("reasons\n got %v\nwant %v", got, want)
			}
			if b := balances(dump(t, dsn, "accounts")); !reflect.DeepEqual(b, [][3]string{{"acc", "3.50", "2"}}) {
				t.Errorf("balances %v", b)
			}
		})
	}
}

const hdr = "transaction_id,account_id,amount,timestamp"

// randomBytes returns n bytes from a fixed seed.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestBadInputsWriteNothing: a missing input, an empty glob, a file without
// a header or with a bad header (truncated, binary, NULs, a header line over
// 1 MiB) fail before anything is written.
func TestBadInputsWriteNothing(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.csv", "transaction_id,account_id,amount,timestamp\nt1,a,1.00,2026-12-01T00:00:00Z\n")
	unreadable := write("secret.csv", "transaction_id,account_id,amount,timestamp\n")
	os.Chmod(unreadable, 0)
	tests := []struct {
		name   string
		inputs []string
		want   string
	}{
		{"no inputs", nil, "no input"},
		{"missing file", []string{good, filepath.Join(dir, "nope.csv")}, "no such file"},
		{"empty glob", []string{filepath.Join(dir, "*.tsv")}, "matches no files"},
		{"directory", []string{dir}, "is a directory"},
		{"empty file", []string{good, write("empty.csv", "")}, "no header"},
		{"header lacks a column", []string{write("nohdr.csv", "t1,a,1.00,2026-12-01T00:00:00Z\n")}, "lacks column"},
		{"truncated in the header", []string{good, write("cut.csv", "transaction_id,account_id,amo")}, "lacks column(s) amount, timestamp"},
		{"only a BOM", []string{write("bom.csv", "\ufeff")}, "no header"},
		{"binary", []string{good, write("random.bin", string(randomBytes(4096, 1)))}, "header"},
		{"NULs", []string{write("nuls.bin", strings.Repeat("\x00", 4096))}, "lacks column"},
		{"header over 1 MiB", []string{write("longhdr.csv", hdr+","+strings.Repeat("x", txnfile.MaxLineBytes)+"\nt1,a,1.00,2026-12-01T00:00:00Z\n")},
			"line is longer than 1048576 bytes"},
		{"one huge line without a line end", []string{write("huge.csv", strings.Repeat("y", 3*txnfile.MaxLineBytes))},
			"line is longer than 1048576 bytes"},
	}
	if os.Geteuid() != 0 { // root reads anything
		tests = append(tests, struct {
			name   string
			inputs []string
			want   string
		}{"unreadable file", []string{unreadable}, "permission denied"})
	}
	dsn := pgtest.New(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(context.Background(), Options{Inputs: tt.inputs, Runner: "direct", DSN: dsn})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to say %q", err, tt.want)
			}
		})
	}
	// Nothing reached the database: not even the schema.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d tables exist after failed runs (%v)", n, err)
	}
}

func TestForcedBatchID(t *testing.T) {
	dsn := pgtest.New(t)
	first := run(t, "direct", dsn, Options{Inputs: []string{day1}, BatchID: 40})
	if first.BatchID != 40 {
		t.Fatalf("forced id: %d", first.BatchID)
	}
	_, err := Run(context.Background(), Options{Inputs: []string{day1, day2}, Runner: "direct", DSN: dsn, BatchID: 40})
	if err == nil || !strings.Contains(err.Error(), "belongs to other inputs") {
		t.Fatalf("forcing another batch's id: %v", err)
	}
	next := run(t, "direct", dsn, Options{Inputs: []string{day1, day2}})
	if next.BatchID <= 40 {
		t.Errorf("next batch id %d", next.BatchID)
	}
}

func TestThreshold(t *testing.T) {
	tests := []struct {
		in      string
		read    int64
		allowed int64
		wantErr bool
	}{
		{"0", 100, 0, false},
		{"5", 100, 5, false},
		{"1%", 1000, 10, false},
		{"0.5%", 1000, 5, false},
		{"100%", 7, 7, false},
		{"-1", 0, 0, true},
		{"101%", 0, 0, true},
		{"lots", 0, 0, true},
	}
	for _, tt := range tests {
		th, err := ParseThreshold(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseThreshold(%q) error %v", tt.in, err)
			continue
		}
		if err == nil && th.Allowed(tt.read) != tt.allowed {
			t.Errorf("%q of %d allows %d, want %d", tt.in, tt.read, th.Allowed(tt.read), tt.allowed)
		}
	}
	dsn := pgtest.New(t)
	rep, err := Run(context.Background(), Options{Inputs: []string{day1}, Runner: "direct", DSN: dsn, MaxRejects: Threshold{Count: 2}})
	if !errors.Is(err, ErrTooManyRejects) || rep == nil || rep.Rejected != 3 {
		t.Fatalf("3 rejects over a threshold of 2: %v, %+v", err, rep)
	}
	if s := batchStatus(t, dsn, rep.BatchID); s != "committed" {
		t.Errorf("status %q: the valid rows are written and the batch committed", s)
	}
	var sb strings.Builder
	rep.WriteText(&sb)
	for _, want := range []string{"batch 1 (new)", "read 15 = applied 11 + duplicates collapsed 1 + rejected 3", "bad_amount 1, conflicting_duplicate 2", "6 upserted"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, sb.String())
		}
	}
}

// TestCheckMarks: a run whose marks are missing or disagree, or whose
// rejected rows are not all stored, is not accepted, whatever the runner said.
func TestCheckMarks(t *testing.T) {
	dsn := pgtest.New(t)
	rep := run(t, "direct", dsn, Options{Inputs: []string{day1}})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	pool, err := sinksPool(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	reg := &sinks.Registry{Pool: pool}
	fresh := func() *Report { return &Report{BatchID: rep.BatchID, Run: rep.Run, Shards: rep.Shards} }
	if err := checkMarks(ctx, reg, fresh(), 64); err != nil {
		t.Fatalf("a good run: %v", err)
	}
	if err := checkMarks(ctx, reg, fresh(), 32); err == nil {
		t.Error("marks of 64 buckets accepted for 32")
	}
	for _, tt := range []struct{ name, sql, want string }{
		{"rejected row lost", "DELETE FROM rejected_rows WHERE line_number = 9 AND reason = 'bad_amount'", "are stored"},
		{"counts disagree", "UPDATE batch_shards SET applied = applied + 1 WHERE shard = 2 AND run = $1", "disagree"},
		{"shard mark missing", "DELETE FROM batch_shards WHERE shard = 1 AND run = $1", "have no mark"},
	} {
		// Each case on a fresh run of the batch, which writes its own marks
		// and restores any rejected row.
		r := run(t, "direct", dsn, Options{Inputs: []string{day1}, Recheck: true})
		args := []any{r.Run}
		if !strings.Contains(tt.sql, "$1") {
			args = nil
		}
		if _, err := conn.Exec(ctx, tt.sql, args...); err != nil {
			t.Fatal(err)
		}
		if err := checkMarks(ctx, reg, &Report{BatchID: r.BatchID, Run: r.Run, Shards: r.Shards}, 64); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

func sinksPool(dsn string) (*pgxpool.Pool, error) {
	return sinks.OpenPool(context.Background(), sinks.Connection{DSN: dsn})
}

// rejectedLines returns a batch's rejected rows of one file: line -> reason.
func rejectedLines(t *testing.T, dsn string, batch int64, file string) map[int64]string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT line_number, reason FROM rejected_rows WHERE batch_id = $1 AND source_file = $2", batch, file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]string{}
	for rows.Next() {
		var line int64
		var reason string
		if err := rows.Scan(&line, &reason); err != nil {
			t.Fatal(err)
		}
		out[line] = reason
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// count runs a count(*) query.
func count(t *testing.T, dsn, sql string, args ...any) int64 {
	t.Helper()
	return scalar[int64](t, dsn, sql, args...)
}

// scalar runs a query of one value.
func scalar[T any](t *testing.T, dsn, sql string, args ...any) T {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v T
	if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// mustVerify checks the table with the independent verifier.
func mustVerify(t *testing.T, dsn string) {
	t.Helper()
	rep, err := verify.Run(context.Background(), verify.Options{DSN: dsn})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep.Outcome() != verify.Equal {
		var b strings.Builder
		rep.WriteText(&b)
		t.Errorf("verify:\n%s", b.String())
	}
}

// TestBadInputOutcomes: files that are truncated mid-row (with and without
// an open quote), binary or NUL-filled after a good header, header-only, or
// hold a huge line end with a clear outcome: the batch is committed, the
// good rows applied, each bad row rejected with its reason, and every row
// read accounted for. The verifier agrees with the table after each.
func TestBadInputOutcomes(t *testing.T) {
	const ok = "t-ok,acc-ok,1.00,2026-12-01T00:00:00Z\n"
	garbage := string(randomBytes(2048, 2))
	tests := []struct {
		name     string
		data     string
		read     int64
		applied  int64
		reasons  map[int64]string // nil: check only that rows read = applied + rejected
		balances [][3]string
	}{
		{"truncated mid-row", hdr + "\n" + ok + "t-2,acc-ok,2.00,2026-12-01T00:0", 2, 1,
			map[int64]string{3: "bad_timestamp"}, [][3]string{{"acc-ok", "1.00", "1"}}},
		{"truncated mid-field list", hdr + "\n" + ok + "t-2,acc-ok", 2, 1,
			map[int64]string{3: "wrong_field_count"}, [][3]string{{"acc-ok", "1.00", "1"}}},
		{"truncated in an open quote", hdr + "\n" + ok + "t-2,\"acc-ok,2.00,2026-12-01T00:00:00Z", 2, 1,
			map[int64]string{3: "malformed_csv"}, [][3]string{{"acc-ok", "1.00", "1"}}},
		{"an open quote mid-file: the lines after it are rows again", hdr + "\nt-1,\"acc-ok,1.00,2026-12-01T00:00:00Z\n" + ok, 2, 1,
			map[int64]string{2: "malformed_csv"}, [][3]string{{"acc-ok", "1.00", "1"}}},
		{"header only", hdr + "\n", 0, 0, map[int64]string{}, nil},
		{"header only, with a BOM, CRLF and an empty line", "\ufeff" + hdr + "\r\n\r\n", 0, 0, map[int64]string{}, nil},
		{"NUL rows", hdr + "\n" + ok + "\x00\x00\x00\n\x00,\x00,\x00,\x00\nt-n\x00,acc-ok,1.00,2026-12-01T00:00:00Z\n", 4, 1,
			map[int64]string{3: "wrong_field_count", 4: "bad_id", 5: "bad_id"}, [][3]string{{"acc-ok", "1.00", "1"}}},
		{"binary after the header", hdr + "\n" + ok + garbage + "\n" + ok, -1, 1, nil, [][3]string{{"acc-ok", "1.00", "1"}}},
		{"a huge line at the end without a line end", hdr + "\n" + ok + strings.Repeat("z", 3*txnfile.MaxLineBytes), 2, 1,
			map[int64]string{3: "line_too_long"}, [][3]string{{"acc-ok", "1.00", "1"}}},
		{"a huge line in an open quote", hdr + "\nt-q,\"x\n" + strings.Repeat("z", 2*txnfile.MaxLineBytes) + "\n" + ok, 3, 1,
			map[int64]string{2: "malformed_csv", 3: "line_too_long"}, [][3]string{{"acc-ok", "1.00", "1"}}},
	}
	dir := t.TempDir()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("bad%d.csv", i))
			if err := os.WriteFile(path, []byte(tt.data), 0o644); err != nil {
				t.Fatal(err)
			}
			dsn := pgtest.New(t)
			rep, err := Run(context.Background(), Options{Inputs: []string{path}, Runner: "direct", DSN: dsn, Clock: clock(t),
				MaxRejects: Threshold{Percent: 100, IsPct: true}})
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if (tt.read >= 0 && rep.RowsRead != tt.read) || rep.RowsApplied != tt.applied ||
				rep.RowsRead != rep.RowsApplied+rep.Duplicates+rep.Rejected {
				t.Errorf("report: read %d applied %d dups %d rejected %d", rep.RowsRead, rep.RowsApplied, rep.Duplicates, rep.Rejected)
			}
			got := rejectedLines(t, dsn, rep.BatchID, path)
			if tt.reasons != nil && !reflect.DeepEqual(got, tt.reasons) {
				t.Errorf("rejected rows\n got %v\nwant %v", got, tt.reasons)
			}
			if int64(len(got)) != rep.Rejected {
				t.Errorf("%d rejected rows stored, the report says %d", len(got), rep.Rejected)
			}
			for line, reason := range got {
				if _, known := txnfile.ReasonFromCode(reason); !known {
					t.Errorf("line %d: unknown reason %q", line, reason)
				}
			}
			if b := balances(dump(t, dsn, "accounts")); !reflect.DeepEqual(b, tt.balances) {
				t.Errorf("balances %v, want %v", b, tt.balances)
			}
			if s := batchStatus(t, dsn, rep.BatchID); s != "committed" {
				t.Errorf("status %q", s)
			}
			mustVerify(t, dsn)
		})
	}
}

// TestFileChangedWhileRead: a file that changes between the manifest and
// the pipeline's read (appended to, rewritten with the same size, cut short,
// removed) fails the run with a clear error, and nothing of the batch is
// written: no account, no rejected row, the batch marked failed. Once the
// file is as registered again, a rerun of the same batch commits it. The
// change happens in the driver's AfterRegister seam, so no timing is
// involved.
func TestFileChangedWhileRead(t *testing.T) {
	const contents = hdr + "\nt-1,acc-a,1.00,2026-12-01T00:00:00Z\nt-2,acc-b,2.00,2026-12-01T00:00:00Z\nt-3,acc-b,x,2026-12-01T00:00:00Z\n"
	tests := []struct {
		name   string
		change func(path string) error
		want   string
	}{
		{"appended to", func(p string) error {
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteString("t-4,acc-c,4.00,2026-12-01T00:00:00Z\n")
			return err
		}, "changed since its batch was registered: size was"},
		{"rewritten with the same size", func(p string) error {
			return os.WriteFile(p, []byte(strings.Replace(contents, "2.00", "9.00", 1)), 0o644)
		}, "changed since its batch was registered: sha256 was"},
		{"cut short mid-row", func(p string) error { return os.Truncate(p, int64(len(contents)-20)) },
			"changed since its batch was registered: size was"},
		{"removed", os.Remove, "no such file"},
	}
	type setup struct {
		runner string
		mode   sinks.Mode
	}
	setups := []setup{{"direct", sinks.ModeLedger}}
	for _, runner := range testRunners {
		setups = append(setups, setup{runner, sinks.ModeSnapshot})
	}
	for _, su := range setups {
		runner := su.runner
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/%s/%s", runner, su.mode, tt.name), func(t *testing.T) {
				dir := t.TempDir()
				good := filepath.Join(dir, "a-good.csv")
				changing := filepath.Join(dir, "b-changing.csv")
				for _, p := range []string{good, changing} {
					if err := os.WriteFile(p, []byte(contents), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				dsn := pgtest.New(t)
				opts := Options{Inputs: []string{filepath.Join(dir, "*.csv")}, Runner: runner, DSN: dsn, Clock: clock(t),
					MaxRejects: Threshold{Count: 10}, Mode: su.mode,
					AfterRegister: func(files []manifest.File) {
						if len(files) != 2 || files[1].Path != changing {
							t.Errorf("manifest %+v", files)
						}
						if err := tt.change(changing); err != nil {
							t.Fatal(err)
						}
					}}
				_, err := Run(context.Background(), opts)
				if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), changing) {
					t.Fatalf("run: %v; want an error naming %s and saying %q", err, changing, tt.want)
				}
				if n := count(t, dsn, "SELECT count(*) FROM accounts"); n != 0 {
					t.Errorf("%d accounts written", n)
				}
				if n := count(t, dsn, "SELECT count(*) FROM rejected_rows"); n != 0 {
					t.Errorf("%d rejected rows written", n)
				}
				if su.mode == sinks.ModeLedger {
					if n := count(t, dsn, "SELECT count(*) FROM ledger"); n != 0 {
						t.Errorf("%d ledger rows written", n)
					}
				}
				if s := batchStatus(t, dsn, 1); s != "failed" {
					t.Errorf("status %q", s)
				}
				if n := count(t, dsn, "SELECT count(*) FROM batches WHERE batch_id = 1 AND position($1 in error) > 0", tt.want); n != 1 {
					t.Errorf("the batch's recorded error does not say %q", tt.want)
				}

				// The file as registered again: the same batch, committed.
				if err := os.WriteFile(changing, []byte(contents), 0o644); err != nil {
					t.Fatal(err)
				}
				opts.AfterRegister = nil
				rep, err := Run(context.Background(), opts)
				if err != nil || rep.BatchID != 1 || rep.PreviousStatus != "failed" || rep.RowsApplied != 2 || rep.Duplicates != 2 || rep.Rejected != 2 {
					t.Fatalf("rerun: %v %+v", err, rep)
				}
				if b := balances(dump(t, dsn, "accounts")); !reflect.DeepEqual(b, [][3]string{{"acc-a", "1.00", "1"}, {"acc-b", "2.00", "1"}}) {
					t.Errorf("balances %v", b)
				}
				mustVerify(t, dsn)
			})
		}
	}
}

// TestHugeLineIsNotHeld: the reader rejects a line far over the limit
// without holding it: reading a 256 MiB line allocates a few MiB.
func TestHugeLineIsNotHeld(t *testing.T) {
	const size = 256 << 20
	src := io.MultiReader(strings.NewReader(hdr+"\n"), &repeatReader{b: 'q', n: size}, strings.NewReader("\nt1,a,1.00,2026-12-01T00:00:00Z\n"))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	cr := txnfile.NewCSVReader(src)
	var got []string
	for {
		rec, err := cr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d:%v:%d", rec.Line, rec.Problem, len(rec.Raw)))
	}
	runtime.ReadMemStats(&after)
	if want := []string{"1:none:42", "2:line_too_long:512", "3:none:30"}; !reflect.DeepEqual(got, want) {
		t.Errorf("records %v, want %v", got, want)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("reading a %d MiB line allocated %d MiB", size>>20, alloc>>20)
	}
}

// repeatReader yields n copies of b.
type repeatReader struct {
	b byte
	n int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = r.b
	}
	r.n -= k
	return k, nil
}

// failedRun reports whether err is the failure of a run with an injected
// sink fault: the fault itself, or, when the runner reported success for the
// failed bundle (Prism 2.62 can), the completeness check's ErrIncompleteRun.
func failedRun(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "injected fault") || errors.Is(err, ErrIncompleteRun))
}
