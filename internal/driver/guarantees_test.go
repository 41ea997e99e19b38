package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/balancebeam/balancebeam/internal/pgtest"
	"github.com/balancebeam/balancebeam/sinks"
	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

// The outcomes of the guarantee table in the README.
const (
	correct = "correct"
	stale   = "stale"           // an older batch's balance stands
	lost    = "lost"            // transactions missing from a balance
	doubled = "double-counted"  // transactions counted more than once
	broken  = "wrong otherwise" // none of the above
)

// outcome classifies a table against the expected balances: the worst
// account decides (lost, then double-counted, then stale).
func outcome(t *testing.T, got []tableRow, want [][3]string, older [][3]string) string {
	t.Helper()
	wantBy := map[string][3]string{}
	for _, w := range want {
		wantBy[w[0]] = w
	}
	olderBy := map[string][3]string{}
	for _, o := range older {
		olderBy[o[0]] = o
	}
	seen := map[string]bool{}
	worst := correct
	rank := map[string]int{correct: 0, stale: 1, broken: 2, doubled: 3, lost: 4}
	note := func(o string) {
		if rank[o] > rank[worst] {
			worst = o
		}
	}
	for _, r := range got {
		seen[r.ID] = true
		w, ok := wantBy[r.ID]
		switch {
		case !ok:
			note(broken)
		case r.Balance == w[1] && r.Count == w[2]:
		case olderBy[r.ID][1] == r.Balance && olderBy[r.ID][2] == r.Count:
			note(stale)
		case r.Count < w[2]:
			note(lost)
		case r.Count > w[2]:
			note(doubled)
		default:
			note(broken)
		}
	}
	for id := range wantBy {
		if !seen[id] {
			note(lost)
		}
	}
	return worst
}

// TestGuarantees proves each cell of the README's guarantee table: every
// scenario in every mode, against PostgreSQL, on both local runners. The
// table says what each mode claims; this test fails if a mode does better or
// worse than claimed.
func TestGuarantees(t *testing.T) {
	type scenario struct {
		name string
		// want is the claimed outcome per mode.
		want map[sinks.Mode]string
		run  func(t *testing.T, r testRun) string
	}
	day12 := expected(t, "day1+day2.csv")
	day1only := expected(t, "day1.csv")
	scenarios := []scenario{
		{
			name: "rerun of the same batch",
			want: map[sinks.Mode]string{sinks.ModeLedger: correct, sinks.ModeSnapshot: correct, sinks.ModeLWW: correct},
			run: func(t *testing.T, r testRun) string {
				r.batch(t, Options{Inputs: []string{day1, day2}})
				before := dump(t, r.dsn, "accounts")
				// Through the pipeline again (without Recheck a committed
				// batch is not run at all: TestScenarios).
				rep := r.batch(t, Options{Inputs: []string{day1, day2}, Recheck: true})
				if r.mode != sinks.ModeLWW && rep.RowsUpserted != 0 {
					t.Errorf("rerun wrote %d accounts", rep.RowsUpserted)
				}
				if after := dump(t, r.dsn, "accounts"); fmt.Sprint(before) != fmt.Sprint(after) {
					t.Errorf("rerun changed the table")
				}
				return outcome(t, dump(t, r.dsn, "accounts"), day12, nil)
			},
		},
		{
			name: "failure after some flushes, then a retry",
			want: map[sinks.Mode]string{sinks.ModeLedger: correct, sinks.ModeSnapshot: correct, sinks.ModeLWW: correct},
			run: func(t *testing.T, r testRun) string {
				opts := r.opts(Options{Inputs: []string{day1, day2}, Shards: 1, FlushRows: 2, FailAfterFlushes: 2})
				if _, err := Run(context.Background(), opts); !failedRun(err) {
					t.Fatalf("faulty run: %v", err)
				}
				opts.FailAfterFlushes = 0
				if _, err := Run(context.Background(), opts); err != nil {
					t.Fatalf("retry: %v", err)
				}
				return outcome(t, dump(t, r.dsn, "accounts"), day12, nil)
			},
		},
		{
			name: "late file alone, overlapping yesterday's",
			want: map[sinks.Mode]string{sinks.ModeLedger: correct, sinks.ModeSnapshot: lost, sinks.ModeLWW: lost},
			run: func(t *testing.T, r testRun) string {
				r.batch(t, Options{Inputs: []string{day1}})
				r.batch(t, Options{Inputs: []string{day2}})
				return outcome(t, dump(t, r.dsn, "accounts"), day12, day1only)
			},
		},
		{
			name: "batches applied out of order",
			want: map[sinks.Mode]string{sinks.ModeLedger: correct, sinks.ModeSnapshot: correct, sinks.ModeLWW: stale},
			run: func(t *testing.T, r testRun) string {
				// Batch 2 (yesterday's files and the late one) runs first, then
				// batch 1 (yesterday's files only).
				r.batch(t, Options{Inputs: []string{day1, day2}, BatchID: 2})
				r.batch(t, Options{Inputs: []string{day1}, BatchID: 1})
				return outcome(t, dump(t, r.dsn, "accounts"), day12, day1only)
			},
		},
		{
			name: "two processes running the same batch at once",
			want: map[sinks.Mode]string{sinks.ModeLedger: correct, sinks.ModeSnapshot: correct, sinks.ModeLWW: correct},
			run: func(t *testing.T, r testRun) string {
				var wg sync.WaitGroup
				errs := make([]error, 2)
				for i := range errs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, errs[i] = Run(context.Background(), r.opts(Options{Inputs: []string{day1, day2}, FlushRows: 1}))
					}()
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						t.Fatalf("concurrent run: %v", err)
					}
				}
				return outcome(t, dump(t, r.dsn, "accounts"), day12, nil)
			},
		},
		{
			name: "a partitioner that sends one account to two shards",
			want: map[sinks.Mode]string{sinks.ModeLedger: correct, sinks.ModeSnapshot: lost, sinks.ModeLWW: lost},
			run: func(t *testing.T, r testRun) string {
				r.batch(t, Options{Inputs: []string{day1, day2}, SplitAccounts: true, FlushRows: 1})
				return outcome(t, dump(t, r.dsn, "accounts"), day12, nil)
			},
		},
	}
	for _, runner := range testRunners {
		for _, sc := range scenarios {
			for _, mode := range sinks.Modes() {
				t.Run(fmt.Sprintf("%s/%s/%s", runner, mode, strings.ReplaceAll(sc.name, " ", "_")), func(t *testing.T) {
					r := testRun{runner: runner, mode: mode, dsn: pgtest.New(t), clock: clock(t)}
					if got, want := sc.run(t, r), sc.want[mode]; got != want {
						t.Errorf("%s in %s mode: %s, the guarantee table says %s\n%v", sc.name, mode, got, want, dump(t, r.dsn, "accounts"))
					}
				})
			}
		}
	}
}

type testRun struct {
	runner string
	mode   sinks.Mode
	dsn    string
	clock  func() time.Time
}

func (r testRun) opts(o Options) Options {
	o.Runner, o.DSN, o.Mode, o.Clock = r.runner, r.dsn, r.mode, r.clock
	o.MaxRejects = Threshold{Count: 3}
	return o
}

func (r testRun) batch(t *testing.T, o Options) *Report {
	t.Helper()
	rep, err := Run(context.Background(), r.opts(o))
	if err != nil {
		t.Fatalf("run %v: %v", o.Inputs, err)
	}
	return rep
}

// TestLedgerConflictAcrossBatches: a transaction the ledger holds with other
// values is rejected with its own reason and never applied; a rerun adds
// nothing; recompute repairs a balance tampered with; modes cannot be mixed.
func TestLedgerConflictAcrossBatches(t *testing.T) {
	for _, runner := range testRunners {
		t.Run(runner, func(t *testing.T) {
			dsn := pgtest.New(t)
			r := testRun{runner: runner, mode: sinks.ModeLedger, dsn: dsn, clock: clock(t)}
			r.batch(t, Options{Inputs: []string{day1}})
			path := writeFile(t, "conflict.csv", "transaction_id,account_id,amount,timestamp\n"+
				"t-0001,acc-alice,999.00,2026-12-01T09:00:00Z\n"+ // in the ledger as 100.00
				"t-0002,acc-bob,250.50,2026-12-01T09:05:00Z\n"+ // in the ledger, equal
				"t-0900,acc-zed,1.00,2026-12-02T09:00:00Z\n")
			for i := 0; i < 2; i++ {
				rep, err := Run(context.Background(), r.opts(Options{Inputs: []string{path}, Recheck: true}))
				if err != nil {
					t.Fatal(err)
				}
				// First run: t-0900 is new, t-0002 known, t-0001 conflicts. The
				// rerun (through the pipeline): nothing new.
				wantNew, wantKnown := int64(1-i), int64(1+i)
				if rep.LedgerInserted != wantNew || rep.LedgerKnown != wantKnown || rep.LedgerConflicts != 1 || rep.Rejected != 1 ||
					rep.RejectedByReason[txnfile.ReasonConflictAcrossBatches.Code()] != 1 {
					t.Errorf("run %d: %+v", i+1, rep)
				}
			}
			rows := map[string]tableRow{}
			for _, row := range dump(t, dsn, "accounts") {
				rows[row.ID] = row
			}
			if rows["acc-alice"].Balance != "75.00" || rows["acc-zed"].Balance != "1.00" || rows["acc-bob"].Balance != "200.00" {
				t.Errorf("balances after the conflict: %v", rows)
			}

			// Recompute repairs a tampered balance from the ledger.
			pool, err := sinksPool(dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			if _, err := pool.Exec(context.Background(), "UPDATE accounts SET balance = 0, txn_count = 0 WHERE account_id = 'acc-bob'"); err != nil {
				t.Fatal(err)
			}
			changed, removed, err := sinks.Recompute(context.Background(), pool, sinks.Tables{})
			if err != nil || changed != 1 || removed != 0 {
				t.Fatalf("recompute: %d changed, %d removed, %v", changed, removed, err)
			}
			for _, row := range dump(t, dsn, "accounts") {
				if row.ID == "acc-bob" && (row.Balance != "200.00" || row.Count != "2") {
					t.Errorf("after recompute: %+v", row)
				}
			}

			// A snapshot run on a ledger table is refused until converted.
			_, err = Run(context.Background(), testRun{runner: runner, mode: sinks.ModeSnapshot, dsn: dsn, clock: clock(t)}.opts(Options{Inputs: []string{day1}}))
			if !errors.Is(err, sinks.ErrModeMismatch) || !strings.Contains(err.Error(), "balancebeam convert") {
				t.Fatalf("snapshot run on a ledger table: %v", err)
			}
			before := dump(t, dsn, "accounts")
			if from, err := sinks.Convert(context.Background(), pool, sinks.Tables{}, sinks.ModeSnapshot); err != nil || from != sinks.ModeLedger {
				t.Fatalf("convert: %v, %v", from, err)
			}
			if after := dump(t, dsn, "accounts"); fmt.Sprint(before) != fmt.Sprint(after) {
				t.Errorf("converting a consistent ledger table changed it")
			}
			if _, err := sinks.Convert(context.Background(), pool, sinks.Tables{}, sinks.ModeLedger); !errors.Is(err, sinks.ErrModeMismatch) {
				t.Errorf("snapshot with accounts to ledger: %v", err)
			}
			r.mode = sinks.ModeSnapshot
			r.batch(t, Options{Inputs: []string{day1, day2}})
			if got := balances(dump(t, dsn, "accounts")); len(got) != 8 {
				t.Errorf("after converting and a snapshot batch: %v", got)
			}
		})
	}
}

func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
