package verify_test

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/jackc/pgx/v5"

	"github.com/balancebeam/balancebeam/internal/driver"
	"github.com/balancebeam/balancebeam/internal/logs"
	"github.com/balancebeam/balancebeam/internal/pgtest"
	"github.com/balancebeam/balancebeam/internal/verify"
	"github.com/balancebeam/balancebeam/sinks"
)

// The verifier itself never links Beam; its tests do, because they run the
// real pipeline to have something to verify.

func TestMain(m *testing.M) {
	flag.Parse()
	beam.Init()
	logs.Setup(os.Stderr, "warn")
	os.Exit(pgtest.Main(m))
}

const (
	day1 = "../../testdata/day1/*.csv"
	day2 = "../../testdata/day2/*.csv"
)

// fixtures copies the fixtures to a folder of the test's own, so that tests
// can change or remove the files after a run.
func fixtures(t *testing.T) (dir1, dir2 string) {
	t.Helper()
	root := t.TempDir()
	for _, glob := range []string{day1, day2} {
		paths, err := filepath.Glob(glob)
		if err != nil || len(paths) == 0 {
			t.Fatalf("fixtures %s: %v", glob, err)
		}
		dir := filepath.Join(root, filepath.Base(filepath.Dir(paths[0])))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return filepath.Join(root, "day1"), filepath.Join(root, "day2")
}

func runBatch(t *testing.T, dsn string, opts driver.Options) *driver.Report {
	t.Helper()
	if opts.Runner == "" {
		opts.Runner = "direct"
	}
	opts.DSN = dsn
	opts.MaxRejects = driver.Threshold{Count: 100}
	at := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	opts.Clock = func() time.Time { return at }
	rep, err := driver.Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("run %v: %v", opts.Inputs, err)
	}
	return rep
}

func verifyTable(t *testing.T, dsn string, opts verify.Options) *verify.Report {
	t.Helper()
	opts.DSN = dsn
	rep, err := verify.Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return rep
}

func exec(t *testing.T, dsn string, sql ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range sql {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// kinds maps each listed difference's account to its kind.
func kinds(rep *verify.Report) map[string]verify.Kind {
	out := map[string]verify.Kind{}
	for _, d := range rep.Diffs {
		out[d.Account] = d.Kind
	}
	return out
}

func counts(rep *verify.Report) map[verify.Kind]int64 {
	out := map[verify.Kind]int64{}
	for k, n := range rep.Counts {
		if n != 0 {
			out[k] = n
		}
	}
	return out
}

func text(rep *verify.Report) string {
	var b strings.Builder
	rep.WriteText(&b)
	return b.String()
}

// TestEqualAfterRealRuns: after real runs on both local runners (a first
// batch, the late file with yesterday's files, an older batch rerun after
// the newer one), the table equals its inputs.
func TestEqualAfterRealRuns(t *testing.T) {
	for _, runner := range []string{"direct", "prism"} {
		t.Run(runner, func(t *testing.T) {
			dsn := pgtest.New(t)
			runBatch(t, dsn, driver.Options{Inputs: []string{day1}, Runner: runner})
			rep := verifyTable(t, dsn, verify.Options{})
			if rep.Outcome() != verify.Equal || rep.Accounts != 6 || rep.Equal != 6 || len(rep.Diffs) != 0 {
				t.Fatalf("after day1:\n%s", text(rep))
			}
			b := rep.Batches[0]
			if len(rep.Batches) != 1 || b.BatchID != 1 || b.RowsRead != 15 || b.Applied != 11 || b.Duplicates != 1 ||
				b.Rejected != 3 || b.RejectsStored != 3 || len(b.Problems) != 0 {
				t.Errorf("batch check: %+v", rep.Batches)
			}

			runBatch(t, dsn, driver.Options{Inputs: []string{day1, day2}, Runner: runner, Shards: 3})
			runBatch(t, dsn, driver.Options{Inputs: []string{day1}, Runner: runner}) // older batch: changes nothing
			rep = verifyTable(t, dsn, verify.Options{})
			if rep.Outcome() != verify.Equal || rep.Accounts != 7 || rep.Equal != 7 || rep.NewestCommitted != 2 {
				t.Fatalf("after the late batch:\n%s", text(rep))
			}
			if !strings.Contains(text(rep), "EQUAL: every account is as the files of the batch that wrote it say") || rep.Summary() != "equal" {
				t.Errorf("text:\n%s", text(rep))
			}

			// Batch 1 alone: every account it has was written by batch 2 since.
			rep = verifyTable(t, dsn, verify.Options{BatchID: 1})
			if rep.Outcome() != verify.Equal || rep.Superseded != 6 || rep.Equal != 0 {
				t.Errorf("batch 1:\n%s", text(rep))
			}
			rep = verifyTable(t, dsn, verify.Options{BatchID: 2})
			if rep.Outcome() != verify.Equal || rep.Equal != 7 {
				t.Errorf("batch 2:\n%s", text(rep))
			}
		})
	}
}

// TestDetectsEveryKind tampers with the table after real runs, one account
// per kind of difference, and checks each is classified and counted.
func TestDetectsEveryKind(t *testing.T) {
	dsn := pgtest.New(t)
	runBatch(t, dsn, driver.Options{Inputs: []string{day1}})
	runBatch(t, dsn, driver.Options{Inputs: []string{day1, day2}})
	exec(t, dsn,
		`DELETE FROM accounts WHERE account_id = 'acc-bob'`,                                                   // lost
		`UPDATE accounts SET balance = balance * 2, txn_count = txn_count * 2 WHERE account_id = 'acc-alice'`, // doubled
		`UPDATE accounts SET balance = balance * 3 WHERE account_id = 'acc-heidi'`,                            // doubled (3x)
		`UPDATE accounts SET txn_count = txn_count + 1 WHERE account_id = 'acc-erin'`,                         // doubled (counted more)
		`UPDATE accounts SET balance = balance + 0.01 WHERE account_id = 'acc-carol'`,                         // wrong
		`UPDATE accounts SET last_txn_at = last_txn_at - interval '1 second' WHERE account_id = 'acc-frank'`,  // wrong
		`UPDATE accounts SET batch_id = 1 WHERE account_id = 'acc-dave'`,                                      // stale
		`INSERT INTO accounts SELECT 'acc-zed', 1, 2, last_updated, 1, last_txn_at FROM accounts LIMIT 1`,     // unexpected
		`INSERT INTO accounts SELECT 'acc-yan', 1, 99, last_updated, 1, last_txn_at FROM accounts LIMIT 1`,    // unexpected
	)
	rep := verifyTable(t, dsn, verify.Options{})
	want := map[string]verify.Kind{
		"acc-alice": verify.Doubled, "acc-bob": verify.Lost, "acc-carol": verify.Wrong, "acc-dave": verify.Stale,
		"acc-erin": verify.Doubled, "acc-frank": verify.Wrong, "acc-heidi": verify.Doubled,
		"acc-yan": verify.Unexpected, "acc-zed": verify.Unexpected,
	}
	if got := kinds(rep); !reflect.DeepEqual(got, want) {
		t.Errorf("kinds\n got %v\nwant %v\n%s", got, want, text(rep))
	}
	wantCounts := map[verify.Kind]int64{verify.Lost: 1, verify.Doubled: 3, verify.Wrong: 2, verify.Stale: 1, verify.Unexpected: 2}
	if got := counts(rep); !reflect.DeepEqual(got, wantCounts) {
		t.Errorf("counts %v, want %v", got, wantCounts)
	}
	if rep.Outcome() != verify.Different || rep.Accounts != 9 || rep.Equal != 0 || rep.Differences() != 9 {
		t.Errorf("outcome %v, %d accounts, %d equal, %d differences", rep.Outcome(), rep.Accounts, rep.Equal, rep.Differences())
	}
	// Both values are shown.
	for _, d := range rep.Diffs {
		switch d.Account {
		case "acc-alice":
			if d.Table.Balance != "210.00" || d.Expected.Balance != "105.00" || d.Table.TxnCount != 8 || d.Expected.TxnCount != 4 {
				t.Errorf("acc-alice: table %+v expected %+v", d.Table, d.Expected)
			}
		case "acc-bob":
			if d.Table != nil || d.Expected.Balance != "199.99" || d.Expected.BatchID != 2 {
				t.Errorf("acc-bob: table %+v expected %+v", d.Table, d.Expected)
			}
		case "acc-dave":
			if d.Table.BatchID != 1 || d.Expected.BatchID != 2 {
				t.Errorf("acc-dave: table %+v expected %+v", d.Table, d.Expected)
			}
		}
	}
	out := text(rep)
	for _, s := range []string{"DIFFERENT: 9 of 9 accounts differ: 1 lost, 3 doubled, 2 wrong, 1 stale, 2 unexpected",
		"acc-alice", "210.00 (8 txns", "105.00 (4 txns", "batch 99 is not a registered batch"} {
		if !strings.Contains(out, s) {
			t.Errorf("text lacks %q:\n%s", s, out)
		}
	}
	// The counts stay complete when fewer differences are listed.
	short := verifyTable(t, dsn, verify.Options{MaxDiffs: 2})
	if len(short.Diffs) != 2 || short.Diffs[0].Account != "acc-alice" || short.Diffs[1].Account != "acc-bob" ||
		!reflect.DeepEqual(counts(short), wantCounts) {
		t.Errorf("max 2 diffs: %+v, counts %v", short.Diffs, counts(short))
	}
	if got, want := rep.Summary(), "different: 1 lost, 3 doubled, 2 wrong, 1 stale, 2 unexpected"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	// JSON names the kinds.
	js, err := json.Marshal(rep)
	if err != nil || !strings.Contains(string(js), `"kind":"doubled"`) || !strings.Contains(string(js), `"lost":1`) ||
		!strings.Contains(string(js), `"result":"different"`) {
		t.Errorf("json: %v %s", err, js)
	}
}

// TestBatchRecords: the batch's recorded counts and its rejected rows are
// checked against its files too.
func TestBatchRecords(t *testing.T) {
	dsn := pgtest.New(t)
	runBatch(t, dsn, driver.Options{Inputs: []string{day1}})
	exec(t, dsn, `DELETE FROM rejected_rows WHERE reason = 'bad_amount'`,
		`INSERT INTO rejected_rows SELECT batch_id, source_file, 1000, reason, detail, raw_line FROM rejected_rows LIMIT 1`,
		`UPDATE batches SET counts = jsonb_set(counts, '{rows_applied}', '12')`)
	rep := verifyTable(t, dsn, verify.Options{})
	if rep.Outcome() != verify.Different || rep.Differences() != 0 || rep.Equal != 6 {
		t.Fatalf("outcome %v:\n%s", rep.Outcome(), text(rep))
	}
	b := rep.Batches[0]
	want := []string{"the run recorded rows applied 12, the files give 11",
		"1 rows the files reject are not in rejected_rows with their reason",
		"1 rows in rejected_rows are not rejected by the files (or for another reason)"}
	if !reflect.DeepEqual(b.Problems, want) || b.RejectsMissing != 1 || b.RejectsExtra != 1 {
		t.Errorf("problems %q", b.Problems)
	}
}

// TestUncommittedBatch: a run that failed part-way leaves rows of its batch
// beside older rows; verify says so until the batch is run again.
func TestUncommittedBatch(t *testing.T) {
	dsn := pgtest.New(t)
	runBatch(t, dsn, driver.Options{Inputs: []string{day1}})
	opts := driver.Options{Inputs: []string{day1, day2}, Runner: "direct", DSN: dsn, Shards: 1, FlushRows: 2, FailAfterFlushes: 2,
		MaxRejects: driver.Threshold{Count: 100}}
	if _, err := driver.Run(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "injected fault") {
		t.Fatalf("faulty run: %v", err)
	}
	rep := verifyTable(t, dsn, verify.Options{})
	// Two flushes of two accounts were written by the failed batch 2; the
	// other accounts still hold batch 1's values, which are right for it.
	if got := counts(rep); !reflect.DeepEqual(got, map[verify.Kind]int64{verify.Uncommitted: 4}) || rep.Equal != 2 {
		t.Fatalf("counts %v:\n%s", got, text(rep))
	}
	if rep.Outcome() != verify.Different || !strings.Contains(text(rep), "which is failed: run it again") {
		t.Errorf("text:\n%s", text(rep))
	}
	opts.FailAfterFlushes = 0
	runBatch(t, dsn, opts)
	if rep := verifyTable(t, dsn, verify.Options{}); rep.Outcome() != verify.Equal || rep.Equal != 7 {
		t.Errorf("after the rerun:\n%s", text(rep))
	}
}

// TestChangedOrMissingFiles: a batch whose files changed or are gone cannot
// be recomputed; its accounts are unverified, and the text says why.
func TestChangedOrMissingFiles(t *testing.T) {
	dir1, dir2 := fixtures(t)
	dsn := pgtest.New(t)
	runBatch(t, dsn, driver.Options{Inputs: []string{filepath.Join(dir1, "*.csv")}})
	runBatch(t, dsn, driver.Options{Inputs: []string{filepath.Join(dir1, "*.csv"), filepath.Join(dir2, "*.csv")}})
	if rep := verifyTable(t, dsn, verify.Options{}); rep.Outcome() != verify.Equal {
		t.Fatalf("before any change:\n%s", text(rep))
	}

	// Same size, other contents: caught by the SHA-256.
	late := filepath.Join(dir2, "late.csv")
	data, err := os.ReadFile(late)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(data), "500.00", "900.00", 1)
	if changed == string(data) {
		t.Fatal("fixture late.csv has no 500.00")
	}
	if err := os.WriteFile(late, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := verifyTable(t, dsn, verify.Options{})
	if rep.Outcome() != verify.Unverifiable || rep.Counts[verify.Unverified] != 7 || rep.Differences() != 0 {
		t.Fatalf("changed file:\n%s", text(rep))
	}
	if out := text(rep); !strings.Contains(out, "late.csv: changed since its batch was registered: sha256 was") ||
		!strings.Contains(out, "UNVERIFIED") {
		t.Errorf("text:\n%s", out)
	}
	// Batch 1's files are intact: it alone still verifies.
	if rep := verifyTable(t, dsn, verify.Options{BatchID: 1}); rep.Outcome() != verify.Equal || rep.Superseded != 6 {
		t.Errorf("batch 1:\n%s", text(rep))
	}

	// A file gone.
	if err := os.Remove(filepath.Join(dir1, "a.csv")); err != nil {
		t.Fatal(err)
	}
	rep = verifyTable(t, dsn, verify.Options{BatchID: 1})
	if rep.Outcome() != verify.Unverifiable || !strings.Contains(text(rep), "a.csv: cannot open") {
		t.Errorf("file gone:\n%s", text(rep))
	}
	// A difference still wins over what cannot be checked.
	exec(t, dsn, `INSERT INTO accounts SELECT 'acc-zed', 1, 99, last_updated, 1, last_txn_at FROM accounts LIMIT 1`)
	if rep := verifyTable(t, dsn, verify.Options{}); rep.Outcome() != verify.Different || rep.Counts[verify.Unexpected] != 1 {
		t.Errorf("difference and unverified:\n%s", text(rep))
	}
}

// TestRecomputeRules runs verify over a batch whose file exercises the
// dedup rules directly: copies across files, a conflict of three copies,
// rejects of every kind the row parser gives.
func TestRecomputeRules(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, lines ...string) {
		data := "transaction_id,account_id,amount,timestamp\n" + strings.Join(lines, "\n") + "\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.csv",
		"t1,acc-a,1.00,2026-12-01T00:00:00Z",
		"t2,acc-a,2.00,2026-12-01T01:00:00Z",
		"t3,acc-b,3.00,2026-12-01T00:00:00Z",
		"t3,acc-b,3.00,2026-12-01T00:00:00Z", // exact copy
		"t4,acc-c,4.00,2026-12-01T00:00:00Z",
		"bad,acc-c,x,2026-12-01T00:00:00Z", // bad amount
	)
	write("b.csv",
		"t1,acc-a,1.0,2026-12-01T00:00:00Z",  // the same as a.csv:2 (1.0 = 1.00)
		"t4,acc-c,4.00,2026-12-01T00:00:00Z", // copy of a.csv:6 ...
		"t4,acc-c,4.01,2026-12-01T00:00:00Z", // ... but this one differs: all three rejected
		"t5,acc-d,-0.50,2026-12-01T00:00:00+01:00",
	)
	dsn := pgtest.New(t)
	runBatch(t, dsn, driver.Options{Inputs: []string{filepath.Join(dir, "*.csv")}})
	rep := verifyTable(t, dsn, verify.Options{})
	if rep.Outcome() != verify.Equal || rep.Equal != 3 {
		t.Fatalf("verify:\n%s", text(rep))
	}
	b := rep.Batches[0]
	if b.RowsRead != 10 || b.Applied != 4 || b.Duplicates != 2 || b.Rejected != 4 || b.Accounts != 3 {
		t.Errorf("batch check %+v", b)
	}
	// A balance off by a cent in the account the conflict touched: the
	// conflicting copies are not in it.
	exec(t, dsn, `UPDATE accounts SET balance = 4.00, txn_count = 1 WHERE account_id = 'acc-d'`)
	rep = verifyTable(t, dsn, verify.Options{})
	if k := kinds(rep); !reflect.DeepEqual(k, map[string]verify.Kind{"acc-d": verify.Wrong}) {
		t.Errorf("kinds %v:\n%s", k, text(rep))
	}
}

// TestNothingToVerify: a table that was never written is an error, not a
// pass.
func TestNothingToVerify(t *testing.T) {
	dsn := pgtest.New(t)
	_, err := verify.Run(context.Background(), verify.Options{DSN: dsn})
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("empty database: %v", err)
	}
	runBatch(t, dsn, driver.Options{Inputs: []string{day1}})
	_, err = verify.Run(context.Background(), verify.Options{DSN: dsn, BatchID: 7})
	if err == nil || !strings.Contains(err.Error(), "batch 7 is not a batch of table accounts") {
		t.Errorf("unknown batch: %v", err)
	}
	_, err = verify.Run(context.Background(), verify.Options{DSN: dsn, Table: "a.b.c"})
	if err == nil {
		t.Error("a three-part table name was accepted")
	}
}

// TestLedgerMode verifies real ledger-mode runs: the late file alone first,
// then yesterday's files, then all of them again, and a file that gives a
// known transaction other values (rejected across batches). Then it tampers
// with the ledger and the accounts.
func TestLedgerMode(t *testing.T) {
	dsn := pgtest.New(t)
	ledger := func(inputs ...string) *driver.Report {
		return runBatch(t, dsn, driver.Options{Inputs: inputs, Mode: sinks.ModeLedger})
	}
	ledger(day2)
	if rep := verifyTable(t, dsn, verify.Options{}); rep.Mode != "ledger" || rep.Outcome() != verify.Equal || rep.Equal != 4 {
		t.Fatalf("after the late file alone:\n%s", text(rep))
	}
	ledger(day1)
	ledger(day1, day2)
	dir := t.TempDir()
	other := filepath.Join(dir, "other.csv")
	if err := os.WriteFile(other, []byte("transaction_id,account_id,amount,timestamp\n"+
		"t-0001,acc-alice,1.00,2026-12-01T09:00:00Z\nt-9001,acc-ivan,7.00,2026-12-02T09:00:00Z\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if rep := ledger(other); rep.RejectedByReason["conflicting_duplicate_across_batches"] != 1 {
		t.Fatalf("the conflicting copy: %+v", rep)
	}
	rep := verifyTable(t, dsn, verify.Options{})
	if rep.Outcome() != verify.Equal || rep.Equal != 8 || rep.Ledger.Transactions != 15 || rep.Ledger.AcrossBatches != 1 || len(rep.Batches) != 4 {
		t.Fatalf("after four ledger batches:\n%s", text(rep))
	}
	if _, err := verify.Run(context.Background(), verify.Options{DSN: dsn, BatchID: 1}); err == nil {
		t.Error("--batch_id accepted on a ledger table")
	}

	exec(t, dsn,
		`DELETE FROM ledger WHERE transaction_id = 't-0202'`,                                                             // lost transaction
		`UPDATE ledger SET amount = amount + 1 WHERE transaction_id = 't-0004'`,                                          // wrong transaction
		`INSERT INTO ledger SELECT 't-9999', account_id, amount, txn_at, 77 FROM ledger WHERE transaction_id = 't-0001'`, // unexpected transaction
		`UPDATE accounts SET balance = balance * 2, txn_count = txn_count * 2 WHERE account_id = 'acc-frank'`,            // doubled account
		`DELETE FROM accounts WHERE account_id = 'acc-ivan'`,                                                             // lost account
		`INSERT INTO accounts SELECT 'acc-zed', 1, batch_id, last_updated, 1, last_txn_at FROM accounts LIMIT 1`,         // unexpected account
	)
	rep = verifyTable(t, dsn, verify.Options{})
	l := rep.Ledger
	if l.Lost != 1 || l.Wrong != 1 || l.Unexpected != 1 || rep.Outcome() != verify.Different {
		t.Errorf("ledger check %+v:\n%s", l, text(rep))
	}
	// The accounts: acc-heidi (t-0202) and the account of t-0004 still hold
	// what the files say, so the tampered ledger rows show in the ledger
	// check only.
	want := map[string]verify.Kind{"acc-frank": verify.Doubled, "acc-ivan": verify.Lost, "acc-zed": verify.Unexpected}
	if got := kinds(rep); !reflect.DeepEqual(got, want) {
		t.Errorf("kinds %v, want %v:\n%s", got, want, text(rep))
	}
	for _, s := range []string{"ledger   15 transactions: 1 lost, 1 unexpected, 1 wrong", "lost t-0202: committed batch",
		"wrong t-0004: the ledger has", "unexpected t-9999: batch 77 is not a registered batch"} {
		if !strings.Contains(text(rep), s) {
			t.Errorf("text lacks %q:\n%s", s, text(rep))
		}
	}
	// Rebuilt from the tampered ledger, the accounts follow the ledger, so
	// they now differ from the files where the ledger does: acc-carol
	// (t-0004) is wrong and acc-heidi (t-0202, its only transaction) lost.
	exec(t, dsn, `DELETE FROM ledger WHERE transaction_id = 't-9999'`)
	pool, err := sinks.OpenPool(context.Background(), sinks.Connection{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, _, err := sinks.Recompute(context.Background(), pool, sinks.Tables{}); err != nil {
		t.Fatal(err)
	}
	rep = verifyTable(t, dsn, verify.Options{})
	if got := kinds(rep); !reflect.DeepEqual(got, map[string]verify.Kind{"acc-carol": verify.Wrong, "acc-heidi": verify.Lost}) {
		t.Errorf("after recompute from the tampered ledger: %v\n%s", got, text(rep))
	}
}

// TestLWWMode: last-write-wins lets an older batch's rerun overwrite a newer
// batch; verify reports those accounts as stale.
func TestLWWMode(t *testing.T) {
	dsn := pgtest.New(t)
	lww := func(inputs ...string) { runBatch(t, dsn, driver.Options{Inputs: inputs, Mode: sinks.ModeLWW}) }
	lww(day1)
	lww(day1, day2)
	if rep := verifyTable(t, dsn, verify.Options{}); rep.Mode != "lww" || rep.Outcome() != verify.Equal || rep.Equal != 7 {
		t.Fatalf("in order:\n%s", text(rep))
	}
	// Batch 1 again, after batch 2, through the pipeline (without Recheck a
	// committed batch is not run again).
	runBatch(t, dsn, driver.Options{Inputs: []string{day1}, Mode: sinks.ModeLWW, Recheck: true})
	rep := verifyTable(t, dsn, verify.Options{})
	if got := counts(rep); !reflect.DeepEqual(got, map[verify.Kind]int64{verify.Stale: 6}) || rep.Equal != 1 {
		t.Errorf("an older batch after a newer one: %v\n%s", got, text(rep))
	}
}

// TestHistory: a late file run alone in snapshot mode leaves balances that
// match the batch that wrote them but miss yesterday's transactions; the
// history check finds them.
func TestHistory(t *testing.T) {
	dsn := pgtest.New(t)
	runBatch(t, dsn, driver.Options{Inputs: []string{day1}})
	runBatch(t, dsn, driver.Options{Inputs: []string{day2}}) // alone: a partial sum
	if rep := verifyTable(t, dsn, verify.Options{}); rep.Outcome() != verify.Equal {
		t.Errorf("by the batch that wrote each row:\n%s", text(rep))
	}
	rep := verifyTable(t, dsn, verify.Options{History: true})
	want := map[string]verify.Kind{"acc-alice": verify.Lost, "acc-bob": verify.Lost, "acc-dave": verify.Lost}
	if got := kinds(rep); !reflect.DeepEqual(got, want) || rep.Equal != 4 || !rep.History {
		t.Errorf("history: %v, %d equal\n%s", got, rep.Equal, text(rep))
	}
	if !strings.Contains(text(rep), "against every committed batch's transactions") {
		t.Errorf("text:\n%s", text(rep))
	}
	// Run together, the late file and yesterday's give the whole history.
	runBatch(t, dsn, driver.Options{Inputs: []string{day1, day2}})
	if rep := verifyTable(t, dsn, verify.Options{History: true}); rep.Outcome() != verify.Equal || rep.Equal != 7 {
		t.Errorf("after day1+day2 together:\n%s", text(rep))
	}
	if _, err := verify.Run(context.Background(), verify.Options{DSN: dsn, History: true, BatchID: 1}); err == nil {
		t.Error("history with a batch id accepted")
	}
}
