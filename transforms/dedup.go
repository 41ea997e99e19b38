package transforms

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

// RejectedRow is a rejected row as the sink stores it.
type RejectedRow struct {
	File   string
	Line   int64
	Reason string // a Reason's Code
	Detail string
	Raw    string
}

func init() {
	beam.RegisterType(reflect.TypeOf((*RejectedRow)(nil)).Elem())
	beam.RegisterCoder(reflect.TypeOf((*Totals)(nil)).Elem(), EncodeTotals, DecodeTotals)
	register.Function1x1(EncodeTotals)
	register.Function1x2(DecodeTotals)
	register.DoFn5x1[context.Context, int, func(*Block) bool, func(int, Totals), func(RejectedRow), error](&DedupFn{})
	register.Iter1[Block]()
	register.Emitter2[int, Totals]()
	register.Emitter1[RejectedRow]()
}

// DedupConfig sets how Dedup keys its output.
type DedupConfig struct {
	// Shards is how many sink shards account totals are keyed by.
	Shards int
	// Files are the batch's file paths, by manifest index, to name the source
	// of rejected rows.
	Files []string
	// Ledger makes Dedup emit the transactions themselves (Totals.Entries)
	// instead of their sums, for the ledger mode's sink.
	Ledger bool
	// SplitAccounts is a fault for tests and chaos experiments: a broken
	// partitioner that sends each account's transactions to two shards
	// (its own and the next, by transaction id). Never set by the command line.
	SplitAccounts bool
}

// Dedup groups the parsed blocks by bucket and, within each, collapses exact
// copies of a transaction id to one and rejects every copy of an id whose
// copies differ (so the result never depends on the order rows arrive in).
// It returns the surviving transactions summed per account and keyed by sink
// shard, and every rejected row of the batch (parse and dedup rejects).
func Dedup(s beam.Scope, blocks beam.PCollection, cfg DedupConfig) (totals, rejects beam.PCollection) {
	s = s.Scope("Dedup")
	grouped := beam.GroupByKey(s, blocks)
	shards := cfg.Shards
	if shards < 1 {
		shards = 1
	}
	return beam.ParDo2(s, &DedupFn{Shards: shards, Files: cfg.Files, Ledger: cfg.Ledger, SplitAccounts: cfg.SplitAccounts}, grouped)
}

// DedupFn deduplicates one bucket of transactions.
type DedupFn struct {
	Shards        int
	Files         []string
	Ledger        bool
	SplitAccounts bool
}

// ProcessElement dedups the transactions of one bucket. It first checks that
// every file of the batch delivered its end mark to the bucket, so that a
// bucket missing part of its rows fails instead of summing a partial set.
// It emits, for every shard, the bucket's account totals of that shard with
// the bucket's mark (even when the shard has no account from this bucket),
// and the bucket's rejected rows.
func (f *DedupFn) ProcessElement(ctx context.Context, bucket int, blocks func(*Block) bool,
	emit func(int, Totals), reject func(RejectedRow)) error {
	var txns []Txn
	var rejects []RejectedRow
	done := make([]bool, len(f.Files))
	mark := BucketMark{Bucket: int32(bucket)}
	visit := BlockVisitor{
		Txn: func(t Txn) error {
			txns = append(txns, t)
			return nil
		},
		Reject: func(r Reject) error {
			rejects = append(rejects, f.rejected(r.File, r.Line, r.Reason, r.Detail, r.Raw))
			return nil
		},
		FileDone: func(file int32, rows int64) error {
			if file < 0 || int(file) >= len(done) {
				return fmt.Errorf("end mark of unknown file #%d", file)
			}
			done[file] = true
			mark.Read += rows
			return nil
		},
	}
	var b Block
	for blocks(&b) {
		if err := b.Each(visit); err != nil {
			return fmt.Errorf("dedup bucket %d: %w", bucket, err)
		}
	}
	for i, ok := range done {
		if !ok {
			return fmt.Errorf("dedup bucket %d: no end mark from %s: the runner delivered only part of its rows", bucket, fileName(f.Files, int32(i)))
		}
	}
	if got := int64(len(txns) + len(rejects)); got != mark.Read {
		return fmt.Errorf("dedup bucket %d: %d rows arrived, the files' end marks say %d", bucket, got, mark.Read)
	}
	kept, dups, conflicts := DedupTxns(txns)
	for _, group := range conflicts {
		detail := conflictDetail(group, f.Files)
		for _, t := range group {
			rejects = append(rejects, f.rejected(t.File, t.Line, txnfile.ReasonConflictingDuplicate, detail, t.Raw))
		}
	}
	parts, err := f.byShard(kept)
	if err != nil {
		return err
	}
	mark.Applied, mark.Duplicates, mark.Rejected = int64(len(kept)), int64(dups), int64(len(rejects))
	for _, r := range rejects {
		reject(r)
	}
	for shard, part := range parts {
		part.Marks = []BucketMark{mark}
		emit(shard, part)
	}
	duplicates.Inc(ctx, int64(dups))
	rowsApplied.Inc(ctx, int64(len(kept)))
	return nil
}

func (f *DedupFn) rejected(file int32, line int64, reason txnfile.Reason, detail, raw string) RejectedRow {
	return RejectedRow{File: fileName(f.Files, file), Line: line, Reason: reason.Code(),
		Detail: strings.Clone(detail), Raw: strings.Clone(raw)}
}

func fileName(files []string, i int32) string {
	if i >= 0 && int(i) < len(files) {
		return files[i]
	}
	return fmt.Sprintf("file #%d", i)
}

// DedupTxns sorts txns by (transaction id, file, line) and splits them into
// the transactions to apply (one per id), the number of exact copies
// collapsed, and the groups of copies that conflict. Copies are equal when
// their account, amount and time are equal.
func DedupTxns(txns []Txn) (kept []Txn, dups int, conflicts [][]Txn) {
	slices.SortFunc(txns, func(a, b Txn) int {
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		if c := cmp.Compare(a.File, b.File); c != 0 {
			return c
		}
		return cmp.Compare(a.Line, b.Line)
	})
	kept = txns[:0:0]
	for i := 0; i < len(txns); {
		j := i + 1
		same := true
		for j < len(txns) && txns[j].ID == txns[i].ID {
			if txns[j].Account != txns[i].Account || txns[j].Cents != txns[i].Cents || txns[j].AtMicros != txns[i].AtMicros {
				same = false
			}
			j++
		}
		if same {
			kept = append(kept, txns[i])
			dups += j - i - 1
		} else {
			conflicts = append(conflicts, txns[i:j])
		}
		i = j
	}
	return kept, dups, conflicts
}

func conflictDetail(group []Txn, files []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "transaction_id %q has %d copies that differ:", txnfile.Truncate(group[0].ID, 64), len(group))
	for i, t := range group {
		if i == 4 {
			fmt.Fprintf(&b, " and %d more", len(group)-i)
			break
		}
		fmt.Fprintf(&b, " %s:%d (%s, %s, %s);", fileName(files, t.File), t.Line, txnfile.Truncate(t.Account, 32), txnfile.FormatCents(t.Cents), txnfile.FormatMicros(t.AtMicros))
	}
	return b.String()
}

// SumByAccount folds transactions into per-account totals sorted by account.
// Account strings are copied, so the totals hold no reference to the blocks.
func SumByAccount(txns []Txn) ([]Total, error) {
	slices.SortFunc(txns, func(a, b Txn) int { return strings.Compare(a.Account, b.Account) })
	var out []Total
	for _, t := range txns {
		in := Total{Account: t.Account, Cents: t.Cents, Count: 1, LatestMicros: t.AtMicros}
		if n := len(out); n > 0 && out[n-1].Account == t.Account {
			if err := out[n-1].Add(in); err != nil {
				return nil, err
			}
			continue
		}
		in.Account = strings.Clone(in.Account)
		out = append(out, in)
	}
	return out, nil
}

// shardOf is the shard that writes a transaction: its account's shard, or
// with the SplitAccounts fault, one of two shards chosen by transaction id.
func (f *DedupFn) shardOf(t Txn) int {
	s := Shard(t.Account, f.Shards)
	if f.SplitAccounts && f.Shards > 1 {
		s = (s + int(FNV1a64(t.ID)%2)) % f.Shards
	}
	return s
}

// byShard splits the bucket's transactions by shard and, per shard, sums
// them per account, or in ledger mode lists them sorted by account and id.
func (f *DedupFn) byShard(kept []Txn) ([]Totals, error) {
	perShard := make([][]Txn, f.Shards)
	for _, t := range kept {
		s := f.shardOf(t)
		perShard[s] = append(perShard[s], t)
	}
	parts := make([]Totals, f.Shards)
	for s, txns := range perShard {
		if f.Ledger {
			entries := make([]Entry, len(txns))
			for i, t := range txns {
				entries[i] = Entry{ID: strings.Clone(t.ID), Account: strings.Clone(t.Account), Cents: t.Cents,
					AtMicros: t.AtMicros, File: t.File, Line: t.Line}
			}
			slices.SortFunc(entries, compareEntries)
			parts[s].Entries = entries
			continue
		}
		rows, err := SumByAccount(txns)
		if err != nil {
			return nil, err
		}
		parts[s].Rows = rows
	}
	return parts, nil
}
