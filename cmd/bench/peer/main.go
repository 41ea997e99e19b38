// Command peer holds the benchmarks' Beam peers of balancebeam. It is not a
// product: nothing here is a balancebeam option.
//
//	peer naive --input '/tmp/in/*.csv' --database postgres://... [--runner=direct]
//
// runs balancebeam's own Parse, Dedup and SumPerShard composites and writes
// with the sink a user might write first: one INSERT ... ON CONFLICT round
// trip per account, each its own transaction (the style of Beam's databaseio
// writer, with an upsert guarded like balancebeam's merge), and one INSERT
// per rejected row.
//
//	peer sink --sink=guarded|lww|naive --expected /tmp/in/expected/batch.csv --database postgres://...
//
// times the sinks alone: it loads the account totals a batch produces (the
// expected balances txgen writes) and hands them, split by shard as the
// pipeline would, to balancebeam's balance writer (snapshot mode, guarded, or
// lww mode, unguarded, at the same batching) or to the naive one,
// outside any runner, --rounds times, each into an empty table of its own. It
// prints a JSON line with the median write's seconds.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners" // --runner
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"
	"github.com/jackc/pgx/v5"

	"github.com/balancebeam/balancebeam/internal/txgen"
	"github.com/balancebeam/balancebeam/sinks"
	"github.com/balancebeam/balancebeam/transforms"
	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

func init() {
	register.DoFn3x1[context.Context, int, transforms.Totals, error](&NaiveBalanceFn{})
	register.DoFn2x1[context.Context, transforms.RejectedRow, error](&NaiveRejectFn{})
}

var (
	input     = flag.String("input", "", "input files or globs, comma-separated (naive)")
	database  = flag.String("database", os.Getenv("DATABASE_URL"), "PostgreSQL URL")
	table     = flag.String("table", sinks.DefaultAccountsTable, "accounts table")
	batchID   = flag.Int64("batch_id", 1, "batch id written to the accounts")
	pinnedAt  = flag.String("pinned_at", "2026-12-02T06:00:00Z", "the batch's pinned timestamp (RFC 3339)")
	shards    = flag.Int("shards", 4, "shards")
	expected  = flag.String("expected", "", "expected balances CSV from txgen (sink)")
	sinkKind  = flag.String("sink", "guarded", "guarded (balancebeam's writer, snapshot mode), lww (its writer, unguarded) or naive (sink)")
	flushRows = flag.Int("flush_rows", sinks.DefaultFlushRows, "rows per flush of balancebeam's writer (sink)")
	rounds    = flag.Int("rounds", 1, "writes, each into an empty table <table>_<sink>_<round>; the median is reported (sink)")
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: peer naive|sink [flags]")
		os.Exit(2)
	}
	cmd := os.Args[1]
	if err := flag.CommandLine.Parse(os.Args[2:]); err != nil {
		os.Exit(2)
	}
	beam.Init()
	pinned, err := time.Parse(time.RFC3339, *pinnedAt)
	if err != nil || *database == "" {
		fmt.Fprintln(os.Stderr, "peer: --database and a valid --pinned_at are needed")
		os.Exit(2)
	}
	ctx := context.Background()
	switch cmd {
	case "naive":
		err = naive(ctx, pinned)
	case "sink":
		err = sinkOnly(ctx, pinned)
	default:
		err = fmt.Errorf("unknown command %q (want naive or sink)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		os.Exit(1)
	}
}

func ensureSchema(ctx context.Context, table string, mode sinks.Mode) error {
	pool, err := sinks.OpenPool(ctx, sinks.Connection{DSN: *database, MaxConns: 1})
	if err != nil {
		return err
	}
	defer pool.Close()
	return sinks.EnsureSchema(ctx, pool, sinks.Tables{Accounts: table}, mode)
}

// naive runs balancebeam's composites with the naive sinks.
func naive(ctx context.Context, pinned time.Time) error {
	if *input == "" {
		return errors.New("--input is needed")
	}
	var paths []string
	for _, p := range strings.Split(*input, ",") {
		m, err := filepath.Glob(p)
		if err != nil || len(m) == 0 {
			return fmt.Errorf("input %q matches no file", p)
		}
		for _, f := range m {
			abs, err := filepath.Abs(f)
			if err != nil {
				return err
			}
			paths = append(paths, abs)
		}
	}
	slices.Sort(paths)
	paths = slices.Compact(paths)
	if err := ensureSchema(ctx, *table, sinks.ModeSnapshot); err != nil {
		return err
	}
	specs := make([]transforms.FileSpec, len(paths))
	for i, p := range paths {
		// Local files, as balancebeam reads them: raw text stays in the file.
		specs[i] = transforms.FileSpec{Index: int32(i), Path: p, RawInFile: true}
	}
	p, s := beam.NewPipelineWithRoot()
	files := beam.CreateList(s, specs)
	blocks := transforms.Parse(s, files, transforms.DefaultParseConfig)
	totals, rejects := transforms.Dedup(s, blocks, transforms.DedupConfig{Shards: *shards, Files: paths})
	sums := transforms.SumPerShard(s, totals)
	beam.ParDo0(s, &NaiveBalanceFn{DSN: *database, Table: *table, BatchID: *batchID, PinnedAtMicros: pinned.UnixMicro()}, sums)
	beam.ParDo0(s, &NaiveRejectFn{DSN: *database, BatchID: *batchID}, rejects)
	runner := *runners.Runner
	if runner == "" {
		runner = "direct"
	}
	start := time.Now()
	if _, err := beam.Run(ctx, runner, p); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	fmt.Printf("{\"seconds\": %.3f}\n", time.Since(start).Seconds())
	return nil
}

// NaiveBalanceFn writes each account with its own INSERT ... ON CONFLICT
// statement, in autocommit: one round trip and one transaction per account.
type NaiveBalanceFn struct {
	DSN            string
	Table          string
	BatchID        int64
	PinnedAtMicros int64

	conn *pgx.Conn
	sql  string
}

// Setup connects.
func (f *NaiveBalanceFn) Setup(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, f.DSN)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	f.conn = conn
	f.sql = `INSERT INTO ` + pgx.Identifier(strings.Split(f.Table, ".")).Sanitize() + ` AS a
	(account_id, balance, batch_id, last_updated, txn_count, last_txn_at)
VALUES ($1, $2::numeric, $3, $4, $5, $6)
ON CONFLICT (account_id) DO UPDATE
SET balance = excluded.balance, batch_id = excluded.batch_id, last_updated = excluded.last_updated,
    txn_count = excluded.txn_count, last_txn_at = excluded.last_txn_at
WHERE excluded.batch_id > a.batch_id`
	return nil
}

// ProcessElement writes one shard's accounts, one statement each.
func (f *NaiveBalanceFn) ProcessElement(ctx context.Context, shard int, totals transforms.Totals) error {
	pinned := time.UnixMicro(f.PinnedAtMicros).UTC()
	for _, r := range totals.Rows {
		if _, err := f.conn.Exec(ctx, f.sql, r.Account, txnfile.FormatCents(r.Cents), f.BatchID, pinned, r.Count,
			time.UnixMicro(r.LatestMicros).UTC()); err != nil {
			return fmt.Errorf("upsert %s: %w", r.Account, err)
		}
	}
	return nil
}

// Teardown disconnects.
func (f *NaiveBalanceFn) Teardown(ctx context.Context) error {
	if f.conn != nil {
		return f.conn.Close(ctx)
	}
	return nil
}

// NaiveRejectFn writes each rejected row with its own INSERT.
type NaiveRejectFn struct {
	DSN     string
	BatchID int64
	conn    *pgx.Conn
}

// Setup connects.
func (f *NaiveRejectFn) Setup(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, f.DSN)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	f.conn = conn
	return nil
}

// ProcessElement writes one rejected row.
func (f *NaiveRejectFn) ProcessElement(ctx context.Context, r transforms.RejectedRow) error {
	_, err := f.conn.Exec(ctx, `INSERT INTO rejected_rows (batch_id, source_file, line_number, reason, detail, raw_line)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (batch_id, source_file, line_number) DO NOTHING`,
		f.BatchID, pgText(r.File), r.Line, r.Reason, pgText(r.Detail), pgText(r.Raw))
	return err
}

// Teardown disconnects.
func (f *NaiveRejectFn) Teardown(ctx context.Context) error {
	if f.conn != nil {
		return f.conn.Close(ctx)
	}
	return nil
}

func pgText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// loadExpected reads txgen's expected balances as account totals sorted by
// account.
func loadExpected(path string) ([]transforms.Total, error) {
	rows, err := txgen.ReadExpected(path)
	if err != nil {
		return nil, err
	}
	out := make([]transforms.Total, len(rows))
	for i, r := range rows {
		out[i] = transforms.Total{Account: r.Account, Cents: r.Cents, Count: r.Count, LatestMicros: r.LatestMicros}
	}
	return out, nil
}

// balanceWriter is the part of a sink DoFn's lifecycle the sink benchmark
// drives, as a runner would for one bundle.
type balanceWriter interface {
	Setup(context.Context) error
	ProcessElement(context.Context, int, transforms.Totals) error
	Teardown(context.Context) error
}

type bundled interface {
	StartBundle(context.Context) error
	FinishBundle(context.Context) error
}

func sinkOnly(ctx context.Context, pinned time.Time) error {
	totals, err := loadExpected(*expected)
	if err != nil {
		return err
	}
	mode := sinks.ModeSnapshot
	switch *sinkKind {
	case "guarded", "naive":
	case "lww":
		mode = sinks.ModeLWW
	default:
		return fmt.Errorf("unknown --sink %q (want guarded, lww or naive)", *sinkKind)
	}
	// Split by shard as Dedup does; each part stays sorted.
	parts := make([]transforms.Totals, *shards)
	for _, t := range totals {
		s := transforms.Shard(t.Account, *shards)
		parts[s].Rows = append(parts[s].Rows, t)
	}
	var tables []string
	var secs []float64
	for round := 1; round <= *rounds; round++ {
		// Each round writes an empty table of its own.
		name := fmt.Sprintf("%s_%s_%d", *table, *sinkKind, round)
		if err := ensureSchema(ctx, name, mode); err != nil {
			return err
		}
		var w balanceWriter
		if *sinkKind == "naive" {
			w = &NaiveBalanceFn{DSN: *database, Table: name, BatchID: *batchID, PinnedAtMicros: pinned.UnixMicro()}
		} else {
			w = &sinks.BalanceWriterFn{Conn: sinks.Connection{DSN: *database, MaxConns: 2}, Tables: sinks.Tables{Accounts: name},
				Mode: mode, BatchID: *batchID, Run: 1, PinnedAtMicros: pinned.UnixMicro(), Buckets: 1, FlushRows: *flushRows}
		}
		start := time.Now()
		if err := writeOnce(ctx, w, parts); err != nil {
			return err
		}
		secs = append(secs, time.Since(start).Seconds())
		tables = append(tables, name)
	}
	sorted := slices.Clone(secs)
	slices.Sort(sorted)
	med := sorted[len(sorted)/2]
	out, _ := json.Marshal(map[string]any{"sink": *sinkKind, "rows": len(totals), "seconds": med, "rounds": secs, "tables": tables,
		"rows_per_second": float64(len(totals)) / med})
	fmt.Println(string(out))
	return nil
}

// writeOnce drives a writer through one bundle holding every shard, as a
// runner would.
func writeOnce(ctx context.Context, w balanceWriter, parts []transforms.Totals) error {
	if err := w.Setup(ctx); err != nil {
		return err
	}
	defer w.Teardown(ctx)
	if b, ok := w.(bundled); ok {
		if err := b.StartBundle(ctx); err != nil {
			return err
		}
	}
	for shard, part := range parts {
		// The one mark balancebeam's writer needs (Buckets: 1).
		part.Marks = []transforms.BucketMark{{Bucket: 0, Read: int64(len(part.Rows)), Applied: int64(len(part.Rows))}}
		if err := w.ProcessElement(ctx, shard, part); err != nil {
			return err
		}
	}
	if b, ok := w.(bundled); ok {
		return b.FinishBundle(ctx)
	}
	return nil
}
