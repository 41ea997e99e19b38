// Command baseline is the benchmarks' floor: a plain, single-goroutine Go
// program without Beam that produces the same accounts and rejected_rows
// tables as balancebeam's snapshot mode. It parses with the same file rules
// (transforms/txnfile), deduplicates with a map (exact copies collapse, every
// copy of an id whose copies differ is rejected), sums per account, and
// writes in one transaction: COPY into a staging table and one guarded
// merge, then the rejected rows the same way.
//
//	baseline --input '/tmp/in/*.csv' --database postgres://... --batch_id 1
//
// It does what the job needs and nothing more: no manifest, no checksums,
// no batch registry, no completeness marks. It is not a product; it is what
// balancebeam's times are divided by in BENCHMARKS.md.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

func main() {
	input := flag.String("input", "", "input files or globs, comma-separated")
	dsn := flag.String("database", os.Getenv("DATABASE_URL"), "PostgreSQL URL")
	table := flag.String("table", "accounts", "accounts table")
	batchID := flag.Int64("batch_id", 1, "batch id written to the accounts")
	pinned := flag.String("pinned_at", "2026-12-02T06:00:00Z", "the batch's pinned timestamp (RFC 3339)")
	flag.Parse()
	at, err := time.Parse(time.RFC3339, *pinned)
	if err != nil || *input == "" || *dsn == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: baseline --input GLOBS --database URL [--table T --batch_id N --pinned_at RFC3339]")
		os.Exit(2)
	}
	start := time.Now()
	res, err := run(context.Background(), strings.Split(*input, ","), *dsn, *table, *batchID, at)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
	fmt.Printf("baseline: %d rows read = %d applied + %d duplicates + %d rejected; %d accounts, %d written; %s\n",
		res.read, res.applied, res.dups, len(res.rejects), len(res.totals), res.written, time.Since(start).Round(time.Millisecond))
}

// first is the first copy of a transaction id; later copies only need to be
// compared with it.
type first struct {
	account  string
	cents    int64
	atMicros int64
	loc      loc
	raw      [2]int // the raw text in the arena
	conflict bool
}

type loc struct {
	file int32
	line int64
}

type copyOf struct {
	loc
	raw string
}

type total struct {
	account string
	cents   int64
	count   int64
	latest  int64
}

type reject struct {
	file   string
	line   int64
	reason string
	detail string
	raw    string
}

type result struct {
	read, applied, dups, written int64
	totals                       []total
	rejects                      []reject
}

func expand(patterns []string) ([]string, int64, error) {
	seen := map[string]bool{}
	var files []string
	var size int64
	for _, p := range patterns {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		m, err := filepath.Glob(p)
		if err != nil {
			return nil, 0, err
		}
		if len(m) == 0 {
			return nil, 0, fmt.Errorf("input %q matches no file", p)
		}
		for _, f := range m {
			abs, err := filepath.Abs(f)
			if err != nil {
				return nil, 0, err
			}
			if !seen[abs] {
				st, err := os.Stat(abs)
				if err != nil {
					return nil, 0, err
				}
				seen[abs] = true
				files = append(files, abs)
				size += st.Size()
			}
		}
	}
	slices.Sort(files)
	return files, size, nil
}

func run(ctx context.Context, patterns []string, dsn, table string, batchID int64, pinned time.Time) (*result, error) {
	files, size, err := expand(patterns)
	if err != nil {
		return nil, err
	}
	res := &result{}
	// Sized once, from the input's size: rows are about 50 bytes.
	estimate := int(size/50) + 16
	index := make(map[string]int32, estimate) // transaction id -> firsts
	firsts := make([]first, 0, estimate)
	// Every row of an id seen more than once, with its raw text, in case its
	// copies turn out to differ (they are all rejected then).
	copies := map[string][]copyOf{}
	// Raw text of the first copy of every id, in one arena.
	arena := make([]byte, 0, size)
	accounts := map[string]string{} // interned account ids
	for fi, path := range files {
		if err := parseFile(path, int32(fi), res, func(id, account []byte, cents, at int64, l loc, raw []byte) {
			if i, ok := index[string(id)]; ok {
				f := &firsts[i]
				sid := string(id)
				if len(copies[sid]) == 0 {
					copies[sid] = append(copies[sid], copyOf{f.loc, string(arena[f.raw[0]:f.raw[1]])})
				}
				copies[sid] = append(copies[sid], copyOf{l, string(txnfile.CutRaw(raw))})
				if f.account != string(account) || f.cents != cents || f.atMicros != at {
					f.conflict = true
				}
				return
			}
			acct, ok := accounts[string(account)]
			if !ok {
				acct = string(account)
				accounts[acct] = acct
			}
			off := len(arena)
			arena = append(arena, txnfile.CutRaw(raw)...)
			index[string(id)] = int32(len(firsts))
			firsts = append(firsts, first{account: acct, cents: cents, atMicros: at, loc: l, raw: [2]int{off, len(arena)}})
		}); err != nil {
			return nil, err
		}
	}

	for id, group := range copies {
		if !firsts[index[id]].conflict {
			res.dups += int64(len(group) - 1)
			continue
		}
		slices.SortFunc(group, func(a, b copyOf) int {
			if c := cmp.Compare(a.file, b.file); c != 0 {
				return c
			}
			return cmp.Compare(a.line, b.line)
		})
		detail := fmt.Sprintf("transaction_id %q has %d copies that differ", txnfile.Truncate(id, 64), len(group))
		for _, c := range group {
			res.rejects = append(res.rejects, reject{files[c.file], c.line, txnfile.ReasonConflictingDuplicate.Code(), detail, c.raw})
		}
	}
	byAccount := make(map[string]int32, len(accounts))
	res.totals = make([]total, 0, len(accounts))
	for i := range firsts {
		f := &firsts[i]
		if f.conflict {
			continue
		}
		res.applied++
		j, ok := byAccount[f.account]
		if !ok {
			j = int32(len(res.totals))
			byAccount[f.account] = j
			res.totals = append(res.totals, total{account: f.account, latest: f.atMicros})
		}
		t := &res.totals[j]
		s, ok := txnfile.AddCents(t.cents, f.cents)
		if !ok {
			return nil, fmt.Errorf("account %q: balance overflows 64-bit cents", f.account)
		}
		t.cents = s
		t.count++
		t.latest = max(t.latest, f.atMicros)
	}
	slices.SortFunc(res.totals, func(a, b total) int { return strings.Compare(a.account, b.account) })
	if res.read != res.applied+res.dups+int64(len(res.rejects)) {
		return nil, fmt.Errorf("rows read %d != applied %d + duplicates %d + rejected %d", res.read, res.applied, res.dups, len(res.rejects))
	}
	res.written, err = write(ctx, dsn, table, batchID, pinned, res)
	return res, err
}

func parseFile(path string, fi int32, res *result, txn func(id, account []byte, cents, at int64, l loc, raw []byte)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := txnfile.NewCSVReader(f)
	rec, err := r.Next()
	if err != nil {
		return fmt.Errorf("%s: no header: %w", path, err)
	}
	h, err := txnfile.ParseHeader(rec)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		res.read++
		row, reason, detail := txnfile.ParseRow(h, rec)
		if reason != txnfile.ReasonNone {
			res.rejects = append(res.rejects, reject{path, rec.Line, reason.Code(), txnfile.Truncate(detail, 300), string(txnfile.CutRaw(rec.Raw))})
			continue
		}
		txn(row.ID, row.Account, row.Cents, row.AtMicros, loc{fi, rec.Line}, rec.Raw)
	}
}

// The tables, as balancebeam's sinks create them.
func schema(table string) []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + pgx.Identifier{table}.Sanitize() + ` (
	account_id   text PRIMARY KEY,
	balance      numeric(20,2) NOT NULL,
	batch_id     bigint NOT NULL,
	last_updated timestamptz NOT NULL,
	txn_count    bigint NOT NULL,
	last_txn_at  timestamptz NOT NULL
)`,
		`CREATE TABLE IF NOT EXISTS rejected_rows (
	batch_id    bigint NOT NULL,
	source_file text NOT NULL,
	line_number bigint NOT NULL,
	reason      text NOT NULL,
	detail      text NOT NULL,
	raw_line    text NOT NULL,
	PRIMARY KEY (batch_id, source_file, line_number)
)`,
		`CREATE TEMP TABLE stage (account_id text NOT NULL, cents bigint NOT NULL, txn_count bigint NOT NULL, last_txn_at timestamptz NOT NULL)`,
		`CREATE TEMP TABLE stage_rejects (source_file text NOT NULL, line_number bigint NOT NULL, reason text NOT NULL, detail text NOT NULL, raw_line text NOT NULL)`,
	}
}

// mergeSQL is balancebeam's guarded merge.
func mergeSQL(table string) string {
	return `INSERT INTO ` + pgx.Identifier{table}.Sanitize() + ` AS a (account_id, balance, batch_id, last_updated, txn_count, last_txn_at)
SELECT account_id, cents * 0.01, $1, $2, txn_count, last_txn_at FROM stage ORDER BY account_id
ON CONFLICT (account_id) DO UPDATE
SET balance = excluded.balance, batch_id = excluded.batch_id, last_updated = excluded.last_updated,
    txn_count = excluded.txn_count, last_txn_at = excluded.last_txn_at
WHERE excluded.batch_id > a.batch_id`
}

const insertRejectsSQL = `INSERT INTO rejected_rows (batch_id, source_file, line_number, reason, detail, raw_line)
SELECT $1, source_file, line_number, reason, detail, raw_line FROM stage_rejects ORDER BY source_file, line_number
ON CONFLICT (batch_id, source_file, line_number) DO NOTHING`

func write(ctx context.Context, dsn, table string, batchID int64, pinned time.Time, res *result) (int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)
	var written int64
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, stmt := range schema(table) {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"stage"}, []string{"account_id", "cents", "txn_count", "last_txn_at"},
			pgx.CopyFromSlice(len(res.totals), func(i int) ([]any, error) {
				t := res.totals[i]
				return []any{t.account, t.cents, t.count, time.UnixMicro(t.latest).UTC()}, nil
			})); err != nil {
			return fmt.Errorf("copy balances: %w", err)
		}
		tag, err := tx.Exec(ctx, mergeSQL(table), batchID, pinned)
		if err != nil {
			return fmt.Errorf("merge: %w", err)
		}
		written = tag.RowsAffected()
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"stage_rejects"}, []string{"source_file", "line_number", "reason", "detail", "raw_line"},
			pgx.CopyFromSlice(len(res.rejects), func(i int) ([]any, error) {
				r := res.rejects[i]
				return []any{pgText(r.file), r.line, r.reason, pgText(r.detail), pgText(r.raw)}, nil
			})); err != nil {
			return fmt.Errorf("copy rejected rows: %w", err)
		}
		if _, err := tx.Exec(ctx, insertRejectsSQL, batchID); err != nil {
			return fmt.Errorf("insert rejected rows: %w", err)
		}
		return nil
	})
	return written, err
}

func pgText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
