package verify

import (
	"context"
	"fmt"
	"time"
)

// history verifies a snapshot or lww table against the history of its
// inputs: every account must hold the sum of the distinct transactions that
// all committed batches' files give it (a transaction in several batches
// counts once; when batches give it different values, the newest batch's
// are expected). It checks balance, txn_count and last_txn_at; which batch
// wrote a row does not matter here.
func (v *verifier) history(ctx context.Context) error {
	var err error
	if v.batches, err = v.t.batches(ctx, v.conn); err != nil {
		return err
	}
	rowsPer, err := v.t.writers(ctx, v.conn)
	if err != nil {
		return err
	}
	var ids []int64
	for _, id := range sortedKeys(v.batches) {
		if v.batches[id].status == "committed" {
			ids = append(ids, id)
			v.rep.NewestCommitted = id
		}
	}
	if err := v.recomputeBatches(ctx, ids, rowsPer, true); err != nil {
		return err
	}
	var unverifiable []int64
	for _, id := range ids {
		if err := v.checkBatchRecords(ctx, v.checks[id], true); err != nil {
			return err
		}
		if v.checks[id].exp == nil {
			unverifiable = append(unverifiable, id)
		}
	}
	type version struct {
		Txn
		batch int64
	}
	union := map[string]version{}
	var differing int64
	for _, id := range ids {
		bc := v.checks[id]
		if bc.exp == nil {
			continue
		}
		for txnID, t := range bc.exp.Txns {
			if u, ok := union[txnID]; ok && u.Txn != t {
				differing++
			}
			union[txnID] = version{t, id} // ascending ids: the newest batch's version stays
		}
	}
	if differing > 0 {
		v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("%d transactions are given different values by two batches: the newest batch's values are expected", differing))
	}
	expected := map[string]*expectedAccount{}
	for _, u := range union {
		e := expected[u.Account]
		if e == nil {
			e = &expectedAccount{}
			expected[u.Account] = e
		}
		if err := e.add(u.Txn, u.batch); err != nil {
			return err
		}
	}

	seen := map[string]bool{}
	err = v.t.eachRow(ctx, v.conn, func(r Row) error {
		v.rep.Accounts++
		seen[r.Account] = true
		if len(unverifiable) > 0 {
			v.add(Diff{Account: r.Account, Kind: Unverified, Table: tableValues(r),
				Detail: fmt.Sprintf("committed batches %v cannot be recomputed", unverifiable)})
			return nil
		}
		e := expected[r.Account]
		if e == nil {
			v.add(Diff{Account: r.Account, Kind: Unexpected, Table: tableValues(r), Detail: "no committed batch's files give a transaction for the account"})
			return nil
		}
		kind, detail := classify(r, e.sum, time.Time{})
		if kind == "" {
			v.rep.Equal++
			return nil
		}
		v.add(Diff{Account: r.Account, Kind: kind, Table: tableValues(r), Expected: ledgerValues(e, v.batches[e.batch]), Detail: detail})
		return nil
	})
	if err != nil {
		return err
	}
	// With a batch that cannot be recomputed, an account missing from the
	// table may be one only that batch gives: none is called lost.
	v.finish(expected, func(account string) bool { return !seen[account] && len(unverifiable) == 0 }, ids,
		"the committed batches' files give the account transactions; the table does not have it")
	return nil
}
