package transforms

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"

	"github.com/balancebeam/balancebeam/internal/txgen"
)

// The stages of the graph without a runner, on txgen data, to see where the
// CPU goes and to check a change to a stage before timing the whole program:
//
//	go test -run '^$' -bench Stages -benchtime 3x ./transforms
//	BENCH_ROWS=10000000 go test -run '^$' -bench Stages -benchtime 1x ./transforms
//
// Each stage runs on the previous stage's output, as the direct runner runs
// them: Parse per file, Dedup per bucket, Sum per shard with AddInput.

type memFiles map[string]*bytes.Buffer

type memFile struct{ *bytes.Buffer }

func (memFile) Close() error { return nil }

func (m memFiles) Create(name string) (io.WriteCloser, error) {
	b := &bytes.Buffer{}
	m[name] = b
	return memFile{b}, nil
}

func benchData(b *testing.B) ([]FileSpec, memFiles, *txgen.Summary) {
	rows := int64(1000000)
	if s := os.Getenv("BENCH_ROWS"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		rows = n
	}
	files := memFiles{}
	sum, err := txgen.Generate(txgen.Config{Seed: 1, Rows: rows, Accounts: 100000, Files: 4, DupShare: 0.02,
		ConflictShare: 0.0005, BadShare: 0.001}, files)
	if err != nil {
		b.Fatal(err)
	}
	var specs []FileSpec
	for i, name := range sum.Files {
		specs = append(specs, FileSpec{Index: int32(i), Path: name, Size: int64(files[name].Len())})
	}
	return specs, files, sum
}

func BenchmarkStages(b *testing.B) {
	specs, files, sum := benchData(b)
	cfg := DefaultParseConfig
	const shards = 4
	paths := make([]string, len(specs))
	for i, s := range specs {
		paths[i] = s.Path
	}
	parse := func() [][]Block {
		byBucket := make([][]Block, cfg.Buckets)
		for _, f := range specs {
			if _, err := ParseStream(bytes.NewReader(files[f.Path].Bytes()), f, cfg.Buckets, cfg.BlockBytes, func(k int, blk Block) {
				byBucket[k] = append(byBucket[k], blk)
			}); err != nil {
				b.Fatal(err)
			}
		}
		return byBucket
	}
	dedup := func(byBucket [][]Block) [][]Totals {
		fn := &DedupFn{Shards: shards, Files: paths}
		byShard := make([][]Totals, shards)
		for k, blocks := range byBucket {
			i := 0
			if err := fn.ProcessElement(context.Background(), k, func(blk *Block) bool {
				if i == len(blocks) {
					return false
				}
				*blk = blocks[i]
				i++
				return true
			}, func(s int, t Totals) { byShard[s] = append(byShard[s], t) }, func(RejectedRow) {}); err != nil {
				b.Fatal(err)
			}
		}
		return byShard
	}
	combine := func(byShard [][]Totals) int {
		fn := SumTotalsFn{}
		n := 0
		for _, parts := range byShard {
			acc := fn.CreateAccumulator()
			for _, p := range parts {
				var err error
				if acc, err = fn.AddInput(acc, p); err != nil {
					b.Fatal(err)
				}
			}
			n += len(fn.ExtractOutput(acc).Rows)
		}
		return n
	}
	b.Run("Parse", func(b *testing.B) {
		for b.Loop() {
			parse()
		}
	})
	byBucket := parse()
	b.Run("Dedup", func(b *testing.B) {
		for b.Loop() {
			dedup(byBucket)
		}
	})
	byShard := dedup(byBucket)
	b.Run("Sum", func(b *testing.B) {
		for b.Loop() {
			if n := combine(byShard); int64(n) != sum.Batch.Accounts {
				b.Fatalf("%d accounts, want %d", n, sum.Batch.Accounts)
			}
		}
	})
	b.Run("CodersTotals", func(b *testing.B) {
		for b.Loop() {
			for _, parts := range byShard {
				for _, p := range parts {
					if _, err := DecodeTotals(EncodeTotals(p)); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
	})
	b.Run("All", func(b *testing.B) {
		for b.Loop() {
			if n := combine(dedup(parse())); int64(n) != sum.Batch.Accounts {
				b.Fatal(fmt.Sprint(n))
			}
		}
	})
}
