package transforms

import (
	"cmp"
	"context"
	"fmt"
	"maps"
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
	// The blocks are in memory already: gather them first, to size the
	// transactions' slice once.
	var all []Block
	size := 0
	var b Block
	for blocks(&b) {
		all = append(all, b)
		size += b.Len()
	}
	txns := make([]Txn, 0, size/64+16)
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
	for _, b := range all {
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
	raws := &rawReader{files: f.Files}
	defer raws.close()
	for _, group := range conflicts {
		detail := conflictDetail(group, f.Files)
		for _, t := range group {
			raw, err := raws.read(t)
			if err != nil {
				return fmt.Errorf("dedup bucket %d: %w", bucket, err)
			}
			rejects = append(rejects, f.rejected(t.File, t.Line, txnfile.ReasonConflictingDuplicate, detail, raw))
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

// DedupTxns splits txns into the transactions to apply (one per id: of
// exact copies, the first by file and line), the number of exact copies
// collapsed, and the groups of copies that conflict: every copy of an id
// whose copies differ, sorted by file and line, the groups sorted by id.
// Copies are equal when their account, amount and time are equal. It groups
// by hashing, in one pass, so the result does not depend on the order of
// txns; only kept's order does (the order of each id's first row). It
// reuses txns' memory for kept.
func DedupTxns(txns []Txn) (kept []Txn, dups int, conflicts [][]Txn) {
	first := make(map[string]int32, len(txns))
	// Every copy of the ids seen more than once (a few percent of them).
	var repeated map[string][]Txn
	kept = txns[:0] // written behind the reads
	for _, t := range txns {
		if i, ok := first[t.ID]; ok {
			if repeated == nil {
				repeated = map[string][]Txn{}
			}
			g := repeated[t.ID]
			if g == nil {
				g = append(make([]Txn, 0, 2), kept[i])
			}
			repeated[t.ID] = append(g, t)
			continue
		}
		first[t.ID] = int32(len(kept))
		kept = append(kept, t)
	}
	if len(repeated) == 0 {
		return kept, 0, nil
	}
	drop := false
	for _, id := range slices.Sorted(maps.Keys(repeated)) {
		g := repeated[id]
		slices.SortFunc(g, func(a, b Txn) int {
			if c := cmp.Compare(a.File, b.File); c != 0 {
				return c
			}
			return cmp.Compare(a.Line, b.Line)
		})
		same := true
		for _, t := range g[1:] {
			if t.Account != g[0].Account || t.Cents != g[0].Cents || t.AtMicros != g[0].AtMicros {
				same = false
				break
			}
		}
		i := first[id]
		if same {
			kept[i] = g[0]
			dups += len(g) - 1
			continue
		}
		conflicts = append(conflicts, g)
		kept[i].ID = "" // dropped below; valid ids are never empty
		drop = true
	}
	if drop {
		kept = slices.DeleteFunc(kept, func(t Txn) bool { return t.ID == "" })
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
// It sums through a map and sorts only the accounts, not the transactions.
// The account strings are copied into one buffer of the result's own, so
// the totals hold no reference to the blocks.
func SumByAccount(txns []Txn) ([]Total, error) {
	if len(txns) == 0 {
		return nil, nil
	}
	index := make(map[string]int32, len(txns))
	out := make([]Total, 0, len(txns))
	for _, t := range txns {
		in := Total{Account: t.Account, Cents: t.Cents, Count: 1, LatestMicros: t.AtMicros}
		if i, ok := index[t.Account]; ok {
			if err := out[i].Add(in); err != nil {
				return nil, err
			}
			continue
		}
		index[t.Account] = int32(len(out))
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b Total) int { return strings.Compare(a.Account, b.Account) })
	n := 0
	for _, r := range out {
		n += len(r.Account)
	}
	buf := make([]byte, 0, n) // never grows: the strings below stay valid
	for i, r := range out {
		off := len(buf)
		buf = append(buf, r.Account...)
		out[i].Account = bytesString(buf[off:])
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

// ledgerEntries copies a shard's transactions into entries, their ids and
// accounts into one string (one allocation instead of two an entry); the
// combiner sorts them.
func ledgerEntries(txns []Txn) []Entry {
	n := 0
	for _, t := range txns {
		n += len(t.ID) + len(t.Account)
	}
	var b strings.Builder
	b.Grow(n)
	for _, t := range txns {
		b.WriteString(t.ID)
		b.WriteString(t.Account)
	}
	text := b.String()
	entries := make([]Entry, len(txns))
	off := 0
	for i, t := range txns {
		id := text[off : off+len(t.ID)]
		off += len(t.ID)
		acct := text[off : off+len(t.Account)]
		off += len(t.Account)
		entries[i] = Entry{ID: id, Account: acct, Cents: t.Cents, AtMicros: t.AtMicros, File: t.File, Line: t.Line}
	}
	return entries
}

// byShard splits the bucket's transactions by shard and, per shard, sums
// them per account, or in ledger mode lists them.
func (f *DedupFn) byShard(kept []Txn) ([]Totals, error) {
	perShard := make([][]Txn, f.Shards)
	for s := range perShard {
		perShard[s] = make([]Txn, 0, len(kept)/f.Shards+len(kept)/(4*f.Shards)+8)
	}
	for _, t := range kept {
		s := f.shardOf(t)
		perShard[s] = append(perShard[s], t)
	}
	parts := make([]Totals, f.Shards)
	for s, txns := range perShard {
		if f.Ledger {
			parts[s].Entries = ledgerEntries(txns)
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
