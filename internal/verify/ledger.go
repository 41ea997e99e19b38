package verify

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

// LedgerCheck is the check of a ledger-mode table's ledger against the
// batches' files.
type LedgerCheck struct {
	// Transactions is how many rows the ledger has.
	Transactions int64 `json:"transactions"`
	// Lost counts transactions of committed batches' files that are not in
	// the ledger.
	Lost int64 `json:"lost"`
	// Unexpected counts ledger rows no batch's files account for: the batch
	// they name is not registered, or its files have no such valid, distinct
	// transaction.
	Unexpected int64 `json:"unexpected"`
	// Wrong counts ledger rows whose account, amount or time differ from
	// their batch's files.
	Wrong int64 `json:"wrong"`
	// Unverified counts ledger rows of batches that cannot be recomputed.
	Unverified int64 `json:"unverified"`
	// AcrossBatches counts transactions that batches' files give with
	// different contents: the ledger holds the version of the batch that
	// applied it first, and the others reject theirs. Not a difference.
	AcrossBatches int64 `json:"across_batches"`
	// Diffs are the first differences, in transaction id order.
	Diffs []TxnDiff `json:"diffs,omitempty"`
}

// TxnDiff is one ledger transaction that differs from the files.
type TxnDiff struct {
	TransactionID string `json:"transaction_id"`
	Kind          Kind   `json:"kind"`
	Detail        string `json:"detail"`
}

func (l *LedgerCheck) differences() int64 { return l.Lost + l.Unexpected + l.Wrong }

func (l *LedgerCheck) add(d TxnDiff, max int) {
	switch d.Kind {
	case Lost:
		l.Lost++
	case Unexpected:
		l.Unexpected++
	case Wrong:
		l.Wrong++
	}
	if len(l.Diffs) < max {
		l.Diffs = append(l.Diffs, d)
	}
}

// expectedAccount is a ledger account's expected row.
type expectedAccount struct {
	sum   Sum
	batch int64 // the newest batch that added to the account
}

func (e *expectedAccount) add(t Txn, batch int64) error {
	s, ok := addCents(e.sum.Cents, t.Cents)
	if !ok {
		return fmt.Errorf("account %q: the sum of its transactions does not fit in 64-bit cents", t.Account)
	}
	e.sum.Cents = s
	e.sum.Count++
	if e.sum.Count == 1 || t.Micros > e.sum.LatestMicros {
		e.sum.LatestMicros = t.Micros
	}
	e.batch = max(e.batch, batch)
	return nil
}

// ledger verifies a ledger-mode table in two steps. The ledger against the
// files: every ledger row must be a valid, distinct transaction of the files
// of the batch it names, and every transaction of every committed batch's
// files must be in the ledger (a transaction whose copies differ between
// batches is in it once, as the batch that applied it first has it). The
// accounts against the expected ledger: balance, txn_count and last_txn_at
// are the sums of the account's transactions, batch_id the newest batch
// that added to it and last_updated that batch's pinned time.
func (v *verifier) ledger(ctx context.Context) error {
	if v.opts.BatchID != 0 {
		return fmt.Errorf("--batch_id is for snapshot tables: a ledger table's accounts hold the transactions of every batch, verify the whole table")
	}
	if ok, err := v.t.exists(ctx, v.conn, v.t.ledger()); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("table %s is in ledger mode, but its ledger %s does not exist", v.t.key, v.t.ledger().Sanitize())
	}
	var err error
	if v.batches, err = v.t.batches(ctx, v.conn); err != nil {
		return err
	}
	rowsPer, err := v.t.writers(ctx, v.conn)
	if err != nil {
		return err
	}
	ids := sortedKeys(v.batches)
	for _, id := range ids {
		if v.batches[id].status == "committed" {
			v.rep.NewestCommitted = id
		}
	}
	// Every batch: a failed run's transactions that reached the ledger are
	// real, and checked against their files like any other.
	if err := v.recomputeBatches(ctx, ids, rowsPer, true); err != nil {
		return err
	}
	for _, id := range ids {
		if err := v.checkBatchRecords(ctx, v.checks[id], false); err != nil {
			return err
		}
	}

	lc := &LedgerCheck{}
	v.rep.Ledger = lc
	type held struct {
		Txn
		batch int64
		valid bool
	}
	inLedger := map[string]held{}
	expected := map[string]*expectedAccount{}
	unverified := map[string]bool{} // accounts with transactions of unrecomputable batches
	addExpected := func(t Txn, batch int64) error {
		e := expected[t.Account]
		if e == nil {
			e = &expectedAccount{}
			expected[t.Account] = e
		}
		return e.add(t, batch)
	}
	err = v.t.eachLedgerRow(ctx, v.conn, func(r ledgerRow) error {
		lc.Transactions++
		cents, perr := txnfile.ParseCents(r.Amount)
		got := Txn{Account: r.Account, Cents: cents, Micros: r.At.UnixMicro()}
		h := held{Txn: got, batch: r.BatchID}
		bc := v.checks[r.BatchID]
		switch {
		case bc == nil:
			lc.add(TxnDiff{r.ID, Unexpected, fmt.Sprintf("batch %d is not a registered batch of table %s", r.BatchID, v.t.key)}, v.opts.MaxDiffs)
		case bc.exp == nil:
			lc.Unverified++
			unverified[r.Account] = true
		default:
			want, ok := bc.exp.Txns[r.ID]
			switch {
			case !ok:
				lc.add(TxnDiff{r.ID, Unexpected, fmt.Sprintf("batch %d's files have no valid, distinct transaction %q", r.BatchID, r.ID)}, v.opts.MaxDiffs)
			case perr != nil || want != got:
				lc.add(TxnDiff{r.ID, Wrong, fmt.Sprintf("the ledger has (%s, %s, %s), batch %d's files (%s, %s, %s)",
					r.Account, r.Amount, txnfile.FormatMicros(got.Micros), r.BatchID,
					want.Account, txnfile.FormatCents(want.Cents), txnfile.FormatMicros(want.Micros))}, v.opts.MaxDiffs)
			default:
				h.valid = true
				if err := addExpected(got, r.BatchID); err != nil {
					return err
				}
			}
		}
		inLedger[r.ID] = h
		return nil
	})
	if err != nil {
		return err
	}
	// The committed batches' transactions the ledger lacks (or holds wrong):
	// the oldest batch's version is the one expected.
	var lost []TxnDiff
	counted := map[string]bool{}
	for _, id := range ids {
		bc := v.checks[id]
		if bc.exp == nil || bc.Status != "committed" {
			continue
		}
		for txnID, t := range bc.exp.Txns {
			h, in := inLedger[txnID]
			switch {
			case in && h.valid:
				if h.Txn != t {
					lc.AcrossBatches++
				}
				continue
			case in && h.batch != id && v.checks[h.batch] != nil && v.checks[h.batch].exp == nil:
				continue // held from a batch that cannot be recomputed
			case counted[txnID]:
				continue
			}
			counted[txnID] = true
			if err := addExpected(t, id); err != nil {
				return err
			}
			if !in {
				lost = append(lost, TxnDiff{txnID, Lost, fmt.Sprintf("committed batch %d's files give (%s, %s, %s); the ledger does not have it",
					id, t.Account, txnfile.FormatCents(t.Cents), txnfile.FormatMicros(t.Micros))})
			}
		}
	}
	slices.SortFunc(lost, func(a, b TxnDiff) int {
		if a.TransactionID < b.TransactionID {
			return -1
		}
		if a.TransactionID > b.TransactionID {
			return 1
		}
		return 0
	})
	lc.Lost += int64(len(lost))
	for _, d := range lost {
		if len(lc.Diffs) >= v.opts.MaxDiffs {
			break
		}
		lc.Diffs = append(lc.Diffs, d)
	}
	slices.SortStableFunc(lc.Diffs, func(a, b TxnDiff) int {
		if a.TransactionID < b.TransactionID {
			return -1
		}
		if a.TransactionID > b.TransactionID {
			return 1
		}
		return 0
	})

	// The accounts against the expected ledger.
	seen := map[string]bool{}
	err = v.t.eachRow(ctx, v.conn, func(r Row) error {
		v.rep.Accounts++
		seen[r.Account] = true
		if unverified[r.Account] {
			v.add(Diff{Account: r.Account, Kind: Unverified, Table: tableValues(r), Detail: "some of its transactions are of batches that cannot be recomputed"})
			return nil
		}
		e := expected[r.Account]
		if e == nil {
			v.add(Diff{Account: r.Account, Kind: Unexpected, Table: tableValues(r), Detail: "no batch's files give a transaction for the account"})
			return nil
		}
		b := v.batches[e.batch]
		kind, detail := classify(r, e.sum, b.pinnedAt)
		if kind == "" && r.BatchID != e.batch {
			kind, detail = Wrong, fmt.Sprintf("batch_id differs: the newest batch that added to the account is %d", e.batch)
		}
		if kind == "" && b.status != "committed" {
			kind, detail = Uncommitted, fmt.Sprintf("holds transactions of batch %d, which is %s: run it again", e.batch, b.status)
		}
		if kind == "" {
			v.rep.Equal++
			return nil
		}
		v.add(Diff{Account: r.Account, Kind: kind, Table: tableValues(r), Expected: ledgerValues(e, b), Detail: detail})
		return nil
	})
	if err != nil {
		return err
	}
	v.finish(expected, func(account string) bool { return !seen[account] && !unverified[account] }, ids,
		"the batches' files give the account transactions; the table does not have it")
	return nil
}

// finish reports the expected accounts that lost says the table lost,
// sorted, with detail, after the differences found, and then the checks of
// the batches ids.
func (v *verifier) finish(expected map[string]*expectedAccount, lost func(account string) bool, ids []int64, detail string) {
	var diffs []Diff
	for account, e := range expected {
		if lost(account) {
			diffs = append(diffs, Diff{Account: account, Kind: Lost, Expected: ledgerValues(e, v.batches[e.batch]), Detail: detail})
		}
	}
	slices.SortFunc(diffs, func(a, b Diff) int { return strings.Compare(a.Account, b.Account) })
	v.rep.Accounts += int64(len(diffs))
	v.rep.Counts[Lost] += int64(len(diffs))
	v.rep.Diffs = mergeDiffs(v.diffs, diffs, v.opts.MaxDiffs)
	for _, id := range ids {
		v.rep.Batches = append(v.rep.Batches, *v.checks[id])
	}
}

func ledgerValues(e *expectedAccount, b *batch) *Values {
	return &Values{Balance: txnfile.FormatCents(e.sum.Cents), BatchID: e.batch, TxnCount: e.sum.Count,
		LastTxnAt: time.UnixMicro(e.sum.LatestMicros).UTC(), LastUpdated: b.pinnedAt.UTC()}
}
