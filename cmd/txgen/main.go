// Command txgen writes deterministic transaction files for benchmarks and
// tests, streaming (ten million rows in constant memory), together with the
// balances and counts a correct run over them must produce.
//
//	txgen --out /tmp/in --rows 1000000 --accounts 100000 --files 4 --seed 1
//
// writes, under --out:
//
//	txns-0000-of-0004.csv ...   the batch (run them with --input '/tmp/in/*.csv')
//	late/late.csv               the late file (--late_rows), copies and new transactions
//	expected/batch.csv          account_id,balance,txn_count,last_txn_at after the batch
//	expected/with-late.csv      the same after the batch and the late file run together
//	summary.json                the configuration and the counts a run must report
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/balancebeam/balancebeam/internal/txgen"
)

type dirOutput string

func (d dirOutput) Create(name string) (io.WriteCloser, error) {
	p := filepath.Join(string(d), filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	return os.Create(p)
}

func main() {
	var cfg txgen.Config
	out := flag.String("out", "", "output folder (created; existing files of the same names are replaced)")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "seed: the same flags give the same bytes")
	flag.Int64Var(&cfg.Rows, "rows", 1000000, "data rows in the batch's files")
	flag.IntVar(&cfg.Accounts, "accounts", 100000, "accounts")
	flag.IntVar(&cfg.Files, "files", 4, "batch files")
	flag.Float64Var(&cfg.DupShare, "dup", 0.02, "share of rows that are exact copies of an earlier transaction")
	flag.Float64Var(&cfg.ConflictShare, "conflict", 0.0005, "share of rows that are conflicting copies of an earlier transaction")
	flag.Float64Var(&cfg.BadShare, "bad", 0.001, "share of rows rejected at parse")
	flag.Int64Var(&cfg.LateRows, "late_rows", 10000, "rows of the late file (0: none)")
	flag.Float64Var(&cfg.LateOverlap, "late_overlap", 0.5, "share of the late file's rows that copy batch transactions")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: txgen --out DIR [--rows N --accounts N --files N --seed N --dup S --conflict S --bad S --late_rows N --late_overlap S]")
		os.Exit(2)
	}
	if err := run(*out, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "txgen:", err)
		os.Exit(1)
	}
}

func run(dir string, cfg txgen.Config) error {
	if err := os.MkdirAll(filepath.Join(dir, "expected"), 0o755); err != nil {
		return err
	}
	sum, err := txgen.Generate(cfg, dirOutput(dir))
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name  string
		write func(io.Writer) error
	}{
		{"expected/batch.csv", func(w io.Writer) error { return sum.WriteExpected(w, false) }},
		{"expected/with-late.csv", func(w io.Writer) error { return sum.WriteExpected(w, true) }},
		{"summary.json", sum.WriteJSON},
	} {
		fh, err := os.Create(filepath.Join(dir, f.name))
		if err != nil {
			return err
		}
		if err := f.write(fh); err != nil {
			fh.Close()
			return fmt.Errorf("write %s: %w", f.name, err)
		}
		if err := fh.Close(); err != nil {
			return err
		}
	}
	b := sum.Batch
	fmt.Printf("txgen: %d files in %s: %d rows = %d applied + %d duplicates + %d rejected; %d accounts; late file %d rows\n",
		len(sum.Files), dir, b.Rows, b.Applied, b.Duplicates, b.Rejected, b.Accounts, cfg.LateRows)
	return nil
}
