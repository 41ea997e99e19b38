package verify

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText writes the report for a person to read.
func (r *Report) WriteText(w io.Writer) {
	scope := "the table's current state"
	switch {
	case r.BatchID != 0:
		scope = fmt.Sprintf("batch %d", r.BatchID)
	case r.History:
		scope = "against every committed batch's transactions"
	}
	fmt.Fprintf(w, "verify %s (%s mode), %s: %d accounts compared, %d equal\n", r.Table, r.Mode, scope, r.Accounts, r.Equal)
	for _, b := range r.Batches {
		fmt.Fprintf(w, "  batch %d  %s, %d files", b.BatchID, b.Status, b.Files)
		if len(b.FileProblems) > 0 {
			fmt.Fprintf(w, ", %d gone or changed: cannot be recomputed\n", len(b.FileProblems))
			for _, p := range b.FileProblems {
				fmt.Fprintf(w, "           %s: %s\n", p.Path, p.Problem)
			}
			continue
		}
		fmt.Fprintf(w, " unchanged; rows read %d = applied %d + duplicates %d + rejected %d; %d accounts, %d rows in the table\n",
			b.RowsRead, b.Applied, b.Duplicates, b.Rejected, b.Accounts, b.RowsInTable)
		for _, p := range b.Problems {
			fmt.Fprintf(w, "           %s\n", p)
		}
	}
	if l := r.Ledger; l != nil {
		fmt.Fprintf(w, "  ledger   %d transactions: %d lost, %d unexpected, %d wrong against the files", l.Transactions, l.Lost, l.Unexpected, l.Wrong)
		if l.Unverified > 0 {
			fmt.Fprintf(w, ", %d of batches that cannot be recomputed", l.Unverified)
		}
		if l.AcrossBatches > 0 {
			fmt.Fprintf(w, "; %d given differently by two batches (the first applied is kept)", l.AcrossBatches)
		}
		fmt.Fprintln(w)
		for _, d := range l.Diffs {
			fmt.Fprintf(w, "           %s %s: %s\n", d.Kind, d.TransactionID, d.Detail)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note     %s\n", n)
	}
	if r.Superseded > 0 {
		fmt.Fprintf(w, "  %d accounts of batch %d were written by newer batches since\n", r.Superseded, r.BatchID)
	}
	switch r.Outcome() {
	case Equal:
		if r.BatchID != 0 {
			fmt.Fprintf(w, "EQUAL: every account of batch %d is as its files say\n", r.BatchID)
		} else if r.History || r.Mode == ModeLedger {
			fmt.Fprintln(w, "EQUAL: every account holds the distinct transactions of the committed batches' files")
		} else {
			fmt.Fprintln(w, "EQUAL: every account is as the files of the batch that wrote it say")
		}
		return
	case Unverifiable:
		fmt.Fprintf(w, "UNVERIFIED: no difference found, but %d accounts could not be checked: input files are gone or changed\n", r.Counts[Unverified])
	case Different:
		parts := make([]string, 0, len(Kinds()))
		for _, k := range Kinds() {
			if n := r.Counts[k]; n > 0 || k == Lost || k == Doubled || k == Wrong {
				parts = append(parts, fmt.Sprintf("%d %s", n, k))
			}
		}
		fmt.Fprintf(w, "DIFFERENT: %d of %d accounts differ: %s\n", r.Differences(), r.Accounts, strings.Join(parts, ", "))
		for _, b := range r.Batches {
			if len(b.Problems) > 0 {
				fmt.Fprintf(w, "  batch %d's records differ from its files (see above)\n", b.BatchID)
			}
		}
		if r.Ledger != nil && r.Ledger.differences() > 0 {
			fmt.Fprintf(w, "  the ledger differs from the files in %d transactions (see above)\n", r.Ledger.differences())
		}
	}
	if len(r.Diffs) == 0 {
		return
	}
	total := r.Differences() + r.Counts[Unverified]
	fmt.Fprintf(w, "first %d of %d:\n", len(r.Diffs), total)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  account_id\tkind\ttable\texpected\tdetail")
	for _, d := range r.Diffs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", d.Account, d.Kind, d.Table.text(), d.Expected.text(), d.Detail)
	}
	tw.Flush()
}

func (v *Values) text() string {
	if v == nil {
		return "-"
	}
	txns := "txns"
	if v.TxnCount == 1 {
		txns = "txn"
	}
	return fmt.Sprintf("%s (%d %s, last %s; batch %d)", v.Balance, v.TxnCount, txns, v.LastTxnAt.UTC().Format(time.RFC3339Nano), v.BatchID)
}
