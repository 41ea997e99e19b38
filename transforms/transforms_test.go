package transforms

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"

	"github.com/balancebeam/balancebeam/internal/scratch"
	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

func TestMain(m *testing.M) {
	flag.Parse()
	beam.Init()
	done := scratch.Use("balancebeam-test-")
	code := m.Run()
	done()
	os.Exit(code)
}

// testRunners are the local runners every pipeline test runs on.
var testRunners = []string{"direct", "prism"}

func TestFNV1a64Golden(t *testing.T) {
	tests := []struct {
		s              string
		hash           uint64
		mod2, mod4, m8 int
	}{
		// The first three are FNV-1a's published test vectors.
		{"", 0xcbf29ce484222325, 1, 1, 5},
		{"a", 0xaf63dc4c8601ec8c, 0, 0, 4},
		{"foobar", 0x85944171f73967e8, 0, 0, 0},
		{"acc-alice", 0x93acf99f433d4e37, 1, 3, 7},
		{"acc-bob", 0x6b76519016cf29c4, 0, 0, 4},
		{"acc-carol", 0x2f4686616732ff42, 0, 2, 2},
		{"acc-dave", 0xf5909ea0f0bcaeef, 1, 3, 7},
		{"acc-erin", 0x3b67be9ad02cf109, 1, 1, 1},
		{"acc-frank", 0xc291eb8301581393, 1, 3, 3},
		{"acc-heidi", 0x391c786c59330e76, 0, 2, 6},
		{"ä-kønto", 0xfca1dc9536657e7c, 0, 0, 4}, // hashed as UTF-8 bytes
	}
	for _, tt := range tests {
		if got := FNV1a64(tt.s); got != tt.hash {
			t.Errorf("FNV1a64(%q) = %#x, want %#x", tt.s, got, tt.hash)
		}
		h := fnv.New64a()
		h.Write([]byte(tt.s))
		if h.Sum64() != tt.hash {
			t.Errorf("hash/fnv disagrees for %q", tt.s)
		}
		for shards, want := range map[int]int{1: 0, 2: tt.mod2, 4: tt.mod4, 8: tt.m8} {
			if got := Shard(tt.s, shards); got != want {
				t.Errorf("Shard(%q, %d) = %d, want %d", tt.s, shards, got, want)
			}
		}
	}
}

func TestShardSpread(t *testing.T) {
	const n, shards = 100000, 8
	counts := make([]int, shards)
	for i := 0; i < n; i++ {
		counts[Shard(fmt.Sprintf("acc-%06d", i), shards)]++
	}
	for s, c := range counts {
		if c < n/shards*9/10 || c > n/shards*11/10 {
			t.Errorf("shard %d has %d of %d accounts: %v", s, c, n, counts)
		}
	}
}

func TestBlockRoundTrip(t *testing.T) {
	var b Block
	b.AppendTxn([]byte("t1"), []byte("acc"), -1250, 1733011200000000, 3, 17, []byte("t1,acc,-12.50,..."))
	b.AppendReject(2, 9, txnfile.ReasonBadAmount, "amount \"x\"", []byte("t2,acc,x,..."))
	b.AppendTxn([]byte("t3"), []byte("ä"), math.MinInt64, -1, 0, 1, nil)
	var txns []Txn
	var rejects []Reject
	b.AppendFileDone(3, 2)
	var marks [][2]int64
	dec := DecodeBlock(append([]byte(nil), EncodeBlock(b)...))
	if err := dec.Each(BlockVisitor{
		Txn:      func(t Txn) error { txns = append(txns, t); return nil },
		Reject:   func(r Reject) error { rejects = append(rejects, r); return nil },
		FileDone: func(f int32, n int64) error { marks = append(marks, [2]int64{int64(f), n}); return nil },
	}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(marks, [][2]int64{{3, 2}}) {
		t.Errorf("file marks %v", marks)
	}
	wantTxns := []Txn{
		{ID: "t1", Account: "acc", Cents: -1250, AtMicros: 1733011200000000, File: 3, Line: 17, Raw: "t1,acc,-12.50,..."},
		{ID: "t3", Account: "ä", Cents: math.MinInt64, AtMicros: -1, File: 0, Line: 1},
	}
	wantRejects := []Reject{{File: 2, Line: 9, Reason: txnfile.ReasonBadAmount, Detail: "amount \"x\"", Raw: "t2,acc,x,..."}}
	if !reflect.DeepEqual(txns, wantTxns) || !reflect.DeepEqual(rejects, wantRejects) {
		t.Errorf("decoded\n %+v\n %+v", txns, rejects)
	}
	// Every cut of a valid block that is not between two records fails
	// cleanly instead of decoding garbage.
	var prefix Block
	boundaries := map[int]bool{}
	prefix.AppendTxn([]byte("t1"), []byte("acc"), -1250, 1733011200000000, 3, 17, []byte("t1,acc,-12.50,..."))
	boundaries[prefix.Len()] = true
	prefix.AppendReject(2, 9, txnfile.ReasonBadAmount, "amount \"x\"", []byte("t2,acc,x,..."))
	boundaries[prefix.Len()] = true
	prefix.AppendTxn([]byte("t3"), []byte("ä"), math.MinInt64, -1, 0, 1, nil)
	boundaries[prefix.Len()] = true
	nop := BlockVisitor{Txn: func(Txn) error { return nil }, Reject: func(Reject) error { return nil }, FileDone: func(int32, int64) error { return nil }}
	for n := 1; n < len(b.Data); n++ {
		err := Block{Data: b.Data[:n]}.Each(nop)
		if (err == nil) != boundaries[n] {
			t.Errorf("block cut at %d of %d: err = %v", n, len(b.Data), err)
		}
	}
	if err := (Block{Data: []byte{9}}).Each(nop); err == nil {
		t.Error("unknown record kind decoded")
	}
}

func TestTotalsCoder(t *testing.T) {
	in := Totals{Rows: []Total{{"a", 1, 1, 5}, {"b", math.MaxInt64, 7, -3}, {"ü", math.MinInt64, 1, 0}},
		Entries: []Entry{{ID: "t1", Account: "a", Cents: -5, AtMicros: 7, File: 2, Line: 9}, {ID: "t2", Account: "ü", Cents: math.MaxInt64, AtMicros: -1}},
		Marks:   []BucketMark{{0, 10, 7, 2, 1}, {5, 0, 0, 0, 0}}}
	out, err := DecodeTotals(EncodeTotals(in))
	if err != nil || !reflect.DeepEqual(in, out) {
		t.Errorf("round trip: %+v, %v", out, err)
	}
	if _, err := DecodeTotals(EncodeTotals(in)[:5]); err == nil {
		t.Error("truncated totals decoded")
	}
	empty, err := DecodeTotals(EncodeTotals(Totals{}))
	if err != nil || len(empty.Rows) != 0 || len(empty.Marks) != 0 {
		t.Errorf("empty: %+v, %v", empty, err)
	}
	if got := in.MissingBuckets(6); !reflect.DeepEqual(got, []int{1, 2, 3, 4}) {
		t.Errorf("missing buckets %v", got)
	}
	if got := in.Sum(); got != (BucketMark{Bucket: 2, Read: 10, Applied: 7, Duplicates: 2, Rejected: 1}) {
		t.Errorf("sum %+v", got)
	}
}

func TestDedupTxns(t *testing.T) {
	txn := func(id, acct string, cents int64, file int32, line int64) Txn {
		return Txn{ID: id, Account: acct, Cents: cents, AtMicros: 1, File: file, Line: line}
	}
	tests := []struct {
		name      string
		in        []Txn
		kept      []string // id@file:line
		dups      int
		conflicts [][]string
	}{
		{"distinct, in the order of their first rows", []Txn{txn("b", "x", 1, 0, 2), txn("a", "x", 1, 0, 1)}, []string{"b@0:2", "a@0:1"}, 0, nil},
		{"exact copies collapse to the first by file and line",
			[]Txn{txn("a", "x", 1, 1, 5), txn("a", "x", 1, 0, 9), txn("a", "x", 1, 1, 2)}, []string{"a@0:9"}, 2, nil},
		{"copies that differ are all rejected, whatever the order",
			[]Txn{txn("a", "x", 2, 1, 1), txn("a", "x", 1, 0, 1), txn("a", "x", 1, 2, 1), txn("b", "y", 1, 0, 2)},
			[]string{"b@0:2"}, 0, [][]string{{"a@0:1", "a@1:1", "a@2:1"}}},
		{"groups sorted by id, copies by file and line",
			[]Txn{txn("z", "x", 1, 0, 5), txn("y", "x", 1, 1, 1), txn("z", "x", 2, 0, 3), txn("y", "x", 3, 0, 7), txn("w", "x", 1, 0, 1)},
			[]string{"w@0:1"}, 0, [][]string{{"y@0:7", "y@1:1"}, {"z@0:3", "z@0:5"}}},
		{"a different account is a conflict", []Txn{txn("a", "x", 1, 0, 1), txn("a", "y", 1, 0, 2)},
			nil, 0, [][]string{{"a@0:1", "a@0:2"}}},
		{"a different time is a conflict", []Txn{txn("a", "x", 1, 0, 1), {ID: "a", Account: "x", Cents: 1, AtMicros: 2, Line: 2}},
			nil, 0, [][]string{{"a@0:1", "a@0:2"}}},
	}
	key := func(t Txn) string { return fmt.Sprintf("%s@%d:%d", t.ID, t.File, t.Line) }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kept, dups, conflicts := DedupTxns(slices.Clone(tt.in))
			var gotKept []string
			for _, k := range kept {
				gotKept = append(gotKept, key(k))
			}
			var gotConflicts [][]string
			for _, g := range conflicts {
				var ks []string
				for _, k := range g {
					ks = append(ks, key(k))
				}
				gotConflicts = append(gotConflicts, ks)
			}
			if !reflect.DeepEqual(gotKept, tt.kept) || dups != tt.dups || !reflect.DeepEqual(gotConflicts, tt.conflicts) {
				t.Errorf("kept %v dups %d conflicts %v; want %v %d %v", gotKept, dups, gotConflicts, tt.kept, tt.dups, tt.conflicts)
			}
		})
	}
}

func TestSumTotals(t *testing.T) {
	fn := SumTotalsFn{}
	a := Totals{Rows: []Total{{"a", 100, 1, 10}, {"c", -5, 2, 30}}, Marks: []BucketMark{{Bucket: 2, Read: 3}}}
	b := Totals{Rows: []Total{{"b", 7, 1, 5}, {"c", 5, 1, 40}}, Marks: []BucketMark{{Bucket: 0, Read: 2}}}
	acc := fn.CreateAccumulator()
	acc, err := fn.AddInput(acc, a)
	if err != nil {
		t.Fatal(err)
	}
	acc, err = fn.AddInput(acc, b)
	if err != nil {
		t.Fatal(err)
	}
	want := Totals{Rows: []Total{{"a", 100, 1, 10}, {"b", 7, 1, 5}, {"c", 0, 3, 40}},
		Marks: []BucketMark{{Bucket: 0, Read: 2}, {Bucket: 2, Read: 3}}}
	if got := fn.ExtractOutput(acc); !reflect.DeepEqual(got, want) {
		t.Errorf("sum = %+v, want %+v", got, want)
	}
	// Merging is commutative.
	ab, _ := fn.MergeAccumulators(a, b)
	ba, _ := fn.MergeAccumulators(b, a)
	if !reflect.DeepEqual(ab, ba) {
		t.Errorf("a+b = %+v, b+a = %+v", ab, ba)
	}
	// Ledger entries come out in (account, id) order, whatever the order of
	// the inputs, and the inputs are left as they were.
	ea := Totals{Entries: []Entry{{ID: "t3", Account: "a"}, {ID: "t1", Account: "c"}}, Marks: []BucketMark{{Bucket: 1}}}
	eb := Totals{Entries: []Entry{{ID: "t2", Account: "a"}, {ID: "t0", Account: "b"}}, Marks: []BucketMark{{Bucket: 3}}}
	ec := Totals{Entries: []Entry{{ID: "t9", Account: "a"}}, Marks: []BucketMark{{Bucket: 2}}}
	for _, order := range [][]Totals{{ea, eb, ec}, {ec, eb, ea}, {eb, ec, ea}} {
		acc := fn.CreateAccumulator()
		for _, in := range order {
			var err error
			if acc, err = fn.AddInput(acc, in); err != nil {
				t.Fatal(err)
			}
		}
		var ids []string
		for _, e := range fn.ExtractOutput(acc).Entries {
			ids = append(ids, e.Account+"/"+e.ID)
		}
		if fmt.Sprint(ids) != "[a/t2 a/t3 a/t9 b/t0 c/t1]" {
			t.Errorf("combined entries %v", ids)
		}
	}
	merged, err := fn.MergeAccumulators(ea, eb)
	if err != nil {
		t.Fatal(err)
	}
	if out := fn.ExtractOutput(merged); len(out.Entries) != 4 || out.Entries[0].ID != "t2" || ea.Entries[0].ID != "t3" || eb.Entries[0].ID != "t2" {
		t.Errorf("merged %+v; inputs %+v, %+v", out.Entries, ea.Entries, eb.Entries)
	}
	// The same bucket twice means data delivered twice: refused.
	if _, err := fn.MergeAccumulators(a, a); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate bucket: %v", err)
	}
	// Overflow fails, naming the account, instead of wrapping.
	big := Totals{Rows: []Total{{"rich", math.MaxInt64, 1, 0}}}
	if _, err := fn.MergeAccumulators(big, Totals{Rows: []Total{{"rich", 1, 1, 0}}}); err == nil || !strings.Contains(err.Error(), `"rich"`) {
		t.Errorf("overflow: %v", err)
	}
}

func TestParseStreamChangedFile(t *testing.T) {
	data := "transaction_id,account_id,amount,timestamp\nt1,a,1.00,2026-12-01T00:00:00Z\n"
	sum := sha256.Sum256([]byte(data))
	good := FileSpec{Path: "f.csv", Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	emitted := map[int]int{}
	if _, err := ParseStream(strings.NewReader(data), good, 4, 1<<20, func(b int, _ Block) { emitted[b]++ }); err != nil || len(emitted) != 4 {
		t.Fatalf("unchanged file: %v, blocks per bucket %v (every bucket gets the end mark)", err, emitted)
	}
	changed := strings.Replace(data, "1.00", "9.00", 1)
	if _, err := ParseStream(strings.NewReader(changed), good, 4, 1<<20, func(int, Block) {}); err == nil || !strings.Contains(err.Error(), "changed since its batch was registered") {
		t.Errorf("changed file: %v", err)
	}
	if _, err := ParseStream(strings.NewReader(data+"t2,a,1.00,2026-12-01T00:00:00Z\n"), good, 4, 1<<20, func(int, Block) {}); err == nil {
		t.Error("grown file accepted")
	}
	if _, err := ParseStream(strings.NewReader(""), FileSpec{Path: "e.csv"}, 4, 1<<20, func(int, Block) {}); err == nil || !strings.Contains(err.Error(), "no header") {
		t.Errorf("empty file: %v", err)
	}

	// A GCS object is checked by its size and CRC32C.
	object := FileSpec{Path: "gs://b/f.csv", Size: int64(len(data)), Generation: 7,
		CRC32C: encodeCRC32C(crc32.Checksum([]byte(data), crc32.MakeTable(crc32.Castagnoli)))}
	if _, err := ParseStream(strings.NewReader(data), object, 4, 1<<20, func(int, Block) {}); err != nil {
		t.Errorf("unchanged object: %v", err)
	}
	_, err := ParseStream(strings.NewReader(changed), object, 4, 1<<20, func(int, Block) {})
	if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "gs://b/f.csv changed since its batch was registered: crc32c was "+object.CRC32C+", read ") {
		t.Errorf("changed object: %v", err)
	}
	if got := encodeCRC32C(crc32.Checksum([]byte("hello world"), crc32.MakeTable(crc32.Castagnoli))); got != "yZRlqg==" {
		t.Errorf("crc32c of hello world %s, want GCS's yZRlqg==", got)
	}
}

// --- Pipeline tests: Parse, Dedup and Sum on both local runners. ---

func init() {
	register.Function3x0[int, Totals, func(string)](formatTotals)
	register.Function2x0[RejectedRow, func(string)](formatReject)
	register.Emitter1[string]()
}

// formatTotals renders each account of a shard as "shard account balance count".
func formatTotals(shard int, t Totals, emit func(string)) {
	for _, r := range t.Rows {
		emit(fmt.Sprintf("%d %s %s %d", shard, r.Account, txnfile.FormatCents(r.Cents), r.Count))
	}
}

func formatReject(r RejectedRow, emit func(string)) {
	emit(fmt.Sprintf("%s:%d %s", filepath.Base(r.File), r.Line, r.Reason))
}

func specsFor(t *testing.T, paths ...string) ([]FileSpec, []string) {
	t.Helper()
	var specs []FileSpec
	for i, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(abs)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		specs = append(specs, FileSpec{Index: int32(i), Path: abs, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])})
		paths[i] = abs
	}
	return specs, paths
}

func buildBalances(s beam.Scope, specs []FileSpec, paths []string, cfg ParseConfig, shards int) (balances, rejects beam.PCollection) {
	files := beam.CreateList(s, specs)
	blocks := Parse(s, files, cfg)
	totals, rej := Dedup(s, blocks, DedupConfig{Shards: shards, Files: paths})
	sums := SumPerShard(s, totals)
	return beam.ParDo(s, formatTotals, sums), beam.ParDo(s, formatReject, rej)
}

func TestPipelineDay1(t *testing.T) {
	wantBalances := []any{
		"3 acc-alice 75.00 3", "0 acc-bob 200.00 2", "2 acc-carol 75.00 1",
		"3 acc-dave 20.00 2", "1 acc-erin 2.00 2", "3 acc-frank 300.00 1",
	}
	wantRejects := []any{"a.csv:9 bad_amount", "b.csv:8 conflicting_duplicate", "b.csv:9 conflicting_duplicate"}
	for _, runner := range testRunners {
		t.Run(runner, func(t *testing.T) {
			specs, paths := specsFor(t, "../testdata/day1/a.csv", "../testdata/day1/b.csv")
			p, s := beam.NewPipelineWithRoot()
			// Tiny blocks, so that each file sends many elements.
			balances, rejects := buildBalances(s, specs, paths, ParseConfig{Buckets: 5, BlockBytes: 64}, 4)
			passert.Equals(s, balances, wantBalances...)
			passert.Equals(s, rejects, wantRejects...)
			if _, err := beam.Run(context.Background(), runner, p); err != nil {
				t.Fatalf("pipeline: %v", err)
			}
		})
	}
}

// TestPipelineDeterministic checks that bucket and block sizes and the order
// of files change nothing: exact copies spread over three files collapse,
// copies that conflict across files are all rejected.
func TestPipelineDeterministic(t *testing.T) {
	dir := t.TempDir()
	header := "transaction_id,account_id,amount,timestamp\n"
	var f1, f2, f3 strings.Builder
	for _, f := range []*strings.Builder{&f1, &f2, &f3} {
		f.WriteString(header)
	}
	for i := 0; i < 300; i++ {
		row := fmt.Sprintf("t%03d,acc%02d,%d.%02d,2026-12-01T00:%02d:00Z\n", i, i%17, i, i%100, i%60)
		f1.WriteString(row)
		if i%3 == 0 {
			f2.WriteString(row) // exact copy
		}
		if i%50 == 7 {
			f3.WriteString(fmt.Sprintf("t%03d,acc%02d,%d.%02d,2026-12-01T00:%02d:00Z\n", i, i%17, i, (i+1)%100, i%60)) // conflict
		}
	}
	names := []string{"f1.csv", "f2.csv", "f3.csv"}
	for i, b := range []*strings.Builder{&f1, &f2, &f3} {
		if err := os.WriteFile(filepath.Join(dir, names[i]), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The expected balances, summed here by a plain loop.
	want := map[string]int64{}
	counts := map[string]int{}
	wantRejects := 0
	for i := 0; i < 300; i++ {
		if i%50 == 7 {
			wantRejects += 2 // in f1 and f3
			if i%3 == 0 {
				wantRejects++ // and in f2
			}
			continue
		}
		acct := fmt.Sprintf("acc%02d", i%17)
		want[acct] += int64(i*100 + i%100)
		counts[acct]++
	}
	var wantLines []any
	for acct, cents := range want {
		wantLines = append(wantLines, fmt.Sprintf("%d %s %s %d", Shard(acct, 3), acct, txnfile.FormatCents(cents), counts[acct]))
	}
	for _, runner := range testRunners {
		for _, cfg := range []ParseConfig{{Buckets: 1, BlockBytes: 1 << 20}, {Buckets: 7, BlockBytes: 100}, {Buckets: 64}} {
			for _, order := range [][]string{{"f1.csv", "f2.csv", "f3.csv"}, {"f3.csv", "f1.csv", "f2.csv"}} {
				t.Run(fmt.Sprintf("%s/buckets=%d/%s", runner, cfg.Buckets, order[0]), func(t *testing.T) {
					paths := []string{filepath.Join(dir, order[0]), filepath.Join(dir, order[1]), filepath.Join(dir, order[2])}
					specs, paths := specsFor(t, paths...)
					p, s := beam.NewPipelineWithRoot()
					balances, rejects := buildBalances(s, specs, paths, cfg, 3)
					passert.Equals(s, balances, wantLines...)
					passert.Count(s, rejects, "rejects", wantRejects)
					if _, err := beam.Run(context.Background(), runner, p); err != nil {
						t.Fatalf("pipeline: %v", err)
					}
				})
			}
		}
	}
}

func TestDedupNeedsEveryFileMark(t *testing.T) {
	fn := &DedupFn{Shards: 2, Files: []string{"a.csv", "b.csv"}}
	var full, partial Block
	full.AppendTxn([]byte("t1"), []byte("acc"), 100, 1, 0, 2, nil)
	full.AppendFileDone(0, 1)
	partial.AppendFileDone(1, 0)
	run := func(blocks ...Block) ([]Totals, error) {
		i := 0
		var out []Totals
		err := fn.ProcessElement(context.Background(), 7, func(b *Block) bool {
			if i == len(blocks) {
				return false
			}
			*b = blocks[i]
			i++
			return true
		}, func(_ int, t Totals) { out = append(out, t) }, func(RejectedRow) {})
		return out, err
	}
	out, err := run(full, partial)
	if err != nil || len(out) != 2 {
		t.Fatalf("complete bucket: %v, %d outputs (one per shard, even empty)", err, len(out))
	}
	for _, o := range out {
		if len(o.Marks) != 1 || o.Marks[0] != (BucketMark{Bucket: 7, Read: 1, Applied: 1}) {
			t.Errorf("mark %+v", o.Marks)
		}
	}
	if _, err := run(full); err == nil || !strings.Contains(err.Error(), "no end mark from b.csv") {
		t.Errorf("a file's mark missing: %v", err)
	}
	var short Block
	short.AppendFileDone(0, 2) // says two rows, one arrives
	if _, err := run(full, short, partial); err == nil {
		t.Errorf("row count below the marks accepted")
	}
}

// TestRawInFile checks that rows of a local file leave their raw text in it
// (the blocks carry an offset instead) and that the conflicting copies'
// rejected rows get the exact text back, with a changed file refused.
func TestRawInFile(t *testing.T) {
	dir := t.TempDir()
	data := "transaction_id,account_id,amount,timestamp\r\nt1,a,1.00,2026-12-01T00:00:00Z\r\nt2,b,2.00,2026-12-01T00:00:00Z\r\n\"t1\",a,1.50,2026-12-01T00:00:00Z\r\nt1,a,1.75,2026-12-01T00:00:00Z\r\n"
	path := filepath.Join(dir, "f.csv")
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	parse := func(rawInFile bool) ([]Block, int) {
		var blocks []Block
		size := 0
		if _, err := ParseStream(strings.NewReader(data), FileSpec{Path: path, RawInFile: rawInFile}, 1, 1<<20, func(_ int, b Block) {
			blocks = append(blocks, b)
			size += b.Len()
		}); err != nil {
			t.Fatal(err)
		}
		return blocks, size
	}
	inline, inlineSize := parse(false)
	refs, refsSize := parse(true)
	if refsSize >= inlineSize-60 {
		t.Errorf("blocks with raw text in the file: %d bytes, inline: %d", refsSize, inlineSize)
	}
	dedup := func(blocks []Block) ([]RejectedRow, error) {
		fn := &DedupFn{Shards: 1, Files: []string{path}}
		var rejects []RejectedRow
		i := 0
		err := fn.ProcessElement(context.Background(), 0, func(b *Block) bool {
			if i == len(blocks) {
				return false
			}
			*b = blocks[i]
			i++
			return true
		}, func(int, Totals) {}, func(r RejectedRow) { rejects = append(rejects, r) })
		slices.SortFunc(rejects, func(a, b RejectedRow) int { return int(a.Line - b.Line) })
		return rejects, err
	}
	want, err := dedup(inline)
	if err != nil {
		t.Fatal(err)
	}
	got, err := dedup(refs)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 3 || !reflect.DeepEqual(got, want) {
		t.Fatalf("rejected rows with the text in the file:\n %+v\nwant (inline)\n %+v", got, want)
	}
	if got[0].Raw != "t1,a,1.00,2026-12-01T00:00:00Z" || got[1].Raw != `"t1",a,1.50,2026-12-01T00:00:00Z` {
		t.Errorf("raw texts %q, %q", got[0].Raw, got[1].Raw)
	}
	// The file changed under the run: refused, not a wrong text.
	if err := os.WriteFile(path, []byte(strings.Replace(data, "t1,a,1.00", "t9,z,1.00", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := dedup(refs); !errors.Is(err, ErrChanged) {
		t.Errorf("changed file: %v", err)
	}
}

// TestSortEntries checks the combiner's grouping sort against one sort of
// the whole list by account then id.
func TestSortEntries(t *testing.T) {
	for _, tt := range []struct{ entries, accounts int }{{0, 1}, {1, 1}, {7, 7}, {5000, 1}, {5000, 50}, {5000, 5000}} {
		in := make([]Entry, tt.entries)
		for i := range in {
			// ids and accounts in an order unrelated to their sorted one
			k := (i*7919 + 13) % max(tt.entries, 1)
			in[i] = Entry{ID: fmt.Sprintf("t%07d", k), Account: fmt.Sprintf("acct-%d", (k*31)%tt.accounts), Cents: int64(k)}
		}
		orig := slices.Clone(in)
		want := slices.Clone(in)
		slices.SortFunc(want, compareEntries)
		got := sortEntries(in)
		if !slices.Equal(got, want) {
			t.Errorf("%d entries over %d accounts: sortEntries differs from a full sort", tt.entries, tt.accounts)
		}
		if !slices.Equal(in, orig) {
			t.Errorf("%d entries: sortEntries wrote to its input", tt.entries)
		}
	}
}
