package driver

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/balancebeam/balancebeam/sinks"
)

// WriteText writes the report for a person to read.
func (r *Report) WriteText(w io.Writer) {
	if r.DryRun {
		fmt.Fprintf(w, "dry run on %s: the job was translated and printed, not submitted; nothing was written\n", r.Runner)
		fmt.Fprintf(w, "  table %s, %d shards, %d files: %s\n", r.Table, r.Shards, len(r.Files), strings.Join(r.Files, ", "))
		return
	}
	if r.Unchanged {
		fmt.Fprintf(w, "batch %d is committed (by run %d of %d, pinned at %s) and its inputs are unchanged: nothing to do, nothing read or written (--recheck runs it again)\n",
			r.BatchID, r.CommittedRun, r.Run, r.PinnedAt.UTC().Format(time.RFC3339Nano))
		fmt.Fprintf(w, "  table     %s (%s mode), committed on runner %s with %d shards\n", r.Table, r.Mode, r.Runner, r.Shards)
		fmt.Fprintf(w, "  files     %d: %s\n", len(r.Files), strings.Join(r.Files, ", "))
		fmt.Fprintf(w, "  rows      as committed: read %d = applied %d + duplicates collapsed %d + rejected %d; %d accounts\n",
			r.RowsRead, r.RowsApplied, r.Duplicates, r.Rejected, r.Accounts)
		r.writeRejected(w)
		fmt.Fprintf(w, "  elapsed   %s\n", r.Elapsed.Round(time.Millisecond))
		return
	}
	state := "reused"
	if r.NewBatch {
		state = "new"
	} else if r.PreviousStatus != "" {
		state = "reused, was " + r.PreviousStatus
	}
	fmt.Fprintf(w, "batch %d (%s), run %d, pinned at %s, table %s (%s mode), runner %s, %d shards\n",
		r.BatchID, state, r.Run, r.PinnedAt.UTC().Format(time.RFC3339Nano), r.Table, r.Mode, r.Runner, r.Shards)
	fmt.Fprintf(w, "  files     %d: %s\n", len(r.Files), strings.Join(r.Files, ", "))
	if r.Mode == sinks.ModeLedger {
		fmt.Fprintf(w, "  rows      read %d = new to the ledger %d + already in the ledger %d + duplicates collapsed %d + rejected %d\n",
			r.RowsRead, r.LedgerInserted, r.LedgerKnown, r.Duplicates, r.Rejected)
	} else {
		fmt.Fprintf(w, "  rows      read %d = applied %d + duplicates collapsed %d + rejected %d\n",
			r.RowsRead, r.RowsApplied, r.Duplicates, r.Rejected)
	}
	r.writeRejected(w)
	switch r.Mode {
	case sinks.ModeLedger:
		fmt.Fprintf(w, "  accounts  %d: %d changed, %d unchanged (no transaction new to the ledger)\n", r.Accounts, r.RowsUpserted, r.RowsStale)
	case sinks.ModeLWW:
		fmt.Fprintf(w, "  accounts  %d written (last write wins, no guard)\n", r.RowsUpserted)
	default:
		fmt.Fprintf(w, "  accounts  %d: %d upserted, %d skipped as stale (already at batch %d or newer)\n",
			r.Accounts, r.RowsUpserted, r.RowsStale, r.BatchID)
	}
	rate := ""
	if secs := r.Elapsed.Seconds(); secs > 0 && r.RowsRead > 0 {
		rate = fmt.Sprintf(" (%.0f rows/s)", float64(r.RowsRead)/secs)
	}
	fmt.Fprintf(w, "  elapsed   %s%s\n", r.Elapsed.Round(time.Millisecond), rate)
}

// writeRejected writes the rejected rows' counts by reason, if any.
func (r *Report) writeRejected(w io.Writer) {
	if len(r.RejectedByReason) == 0 {
		return
	}
	reasons := slices.Sorted(maps.Keys(r.RejectedByReason))
	parts := make([]string, len(reasons))
	for i, reason := range reasons {
		parts[i] = fmt.Sprintf("%s %d", reason, r.RejectedByReason[reason])
	}
	fmt.Fprintf(w, "  rejected  %s\n", strings.Join(parts, ", "))
}
