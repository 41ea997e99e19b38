package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/balancebeam/balancebeam/transforms"
	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

// BalanceWriterFn is the balances sink. Each shard's totals arrive as one
// element; the writer writes them in flushes of at most FlushRows rows (an
// account's transactions are never split between flushes), the shards of a
// bundle in parallel on up to Conn.MaxConns connections, and the bundle ends
// when every shard is written. A flush is one transaction: COPY into a
// temporary staging table, then one set-based statement of the mode:
//
//	snapshot  INSERT ... ON CONFLICT DO UPDATE ... WHERE excluded.batch_id > batch_id
//	lww       the same without the WHERE
//	ledger    insert the transactions the ledger does not hold, and add the sums
//	          of those inserted to the accounts (one CTE)
//
// Transient errors retry the whole flush, which is safe because each
// mode's statement is idempotent for a batch (lww: the same absolute values).
//
// A shard is written only if its totals carry the marks of all Buckets
// dedup buckets, and its mark row (batch_shards) is written in the same
// transaction as its last rows: the driver accepts a run only when every
// shard has its mark. A shard's flushes run one after another, so its mark
// never commits before its rows.
type BalanceWriterFn struct {
	Conn             Connection
	Tables           Tables
	Mode             Mode
	Files            []string
	BatchID          int64
	Run              int
	PinnedAtMicros   int64
	Buckets          int
	FlushRows        int
	Retry            Retry
	FailAfterFlushes int

	pool         *pgxpool.Pool
	noFastLedger atomic.Bool  // a duplicate id was seen: the ledger's fast path is off
	flushes      atomic.Int64 // flushes made, for the injected fault

	// Per bundle: the shards being written and what they did.
	group   *errgroup.Group
	mu      sync.Mutex
	written counts
}

// shardWrite is one flush of one shard.
type shardWrite struct {
	shard   int32
	rows    []transforms.Total
	entries []transforms.Entry
	// mark is set on the shard's last flush, which writes the shard's mark
	// row with total, what the shard's flushes did.
	mark  *transforms.BucketMark
	total counts
}

// counts are what a shard's flushes did.
type counts struct {
	accounts, upserted          int64
	inserted, staged, conflicts int64 // ledger mode
	flushes                     int64
}

func (c *counts) add(o counts) {
	c.accounts += o.accounts
	c.upserted += o.upserted
	c.inserted += o.inserted
	c.staged += o.staged
	c.conflicts += o.conflicts
	c.flushes += o.flushes
}

// Setup opens the connection pool.
func (w *BalanceWriterFn) Setup(ctx context.Context) error {
	if w.Mode == "" {
		w.Mode = ModeSnapshot
	}
	if w.FlushRows <= 0 {
		w.FlushRows = Target{Mode: w.Mode}.balanceFlushRows()
	}
	if _, err := ParseMode(string(w.Mode)); err != nil {
		return err
	}
	pool, err := OpenPool(ctx, w.Conn)
	if err != nil {
		return err
	}
	w.pool = pool
	return nil
}

// StartBundle prepares the bundle's parallel shard writers.
func (w *BalanceWriterFn) StartBundle(ctx context.Context) error {
	w.group = new(errgroup.Group)
	w.group.SetLimit(max(1, int(w.pool.Config().MaxConns)))
	w.written = counts{}
	return nil
}

// ProcessElement checks that one shard's totals are complete, then hands
// them to a shard writer; it waits only when every connection is busy.
func (w *BalanceWriterFn) ProcessElement(ctx context.Context, shard int, totals transforms.Totals) error {
	if missing := totals.MissingBuckets(w.Buckets); len(missing) > 0 {
		return fmt.Errorf("shard %d of batch %d: the totals lack the marks of %d of %d dedup buckets (%v): part of the batch did not reach the sink, so nothing of this shard is written",
			shard, w.BatchID, len(missing), w.Buckets, firstFew(missing))
	}
	if len(totals.Marks) != w.Buckets {
		return fmt.Errorf("shard %d of batch %d: %d bucket marks for %d buckets", shard, w.BatchID, len(totals.Marks), w.Buckets)
	}
	if (w.Mode == ModeLedger && len(totals.Rows) > 0) || (w.Mode != ModeLedger && len(totals.Entries) > 0) {
		return fmt.Errorf("shard %d of batch %d: totals of the wrong kind for %s mode", shard, w.BatchID, w.Mode)
	}
	w.group.Go(func() error {
		c, err := w.writeShard(int32(shard), totals)
		w.mu.Lock()
		w.written.add(c)
		w.mu.Unlock()
		return err
	})
	return nil
}

// writeShard writes one shard's totals in flushes, the last with its mark.
func (w *BalanceWriterFn) writeShard(shard int32, totals transforms.Totals) (counts, error) {
	// A flush is not tied to the bundle's context: it commits or rolls back
	// on its own, and a failed shard fails the bundle in FinishBundle.
	ctx := context.Background()
	sum := totals.Sum()
	sw := &shardWrite{shard: shard}
	rows, entries := totals.Rows, totals.Entries
	for {
		sw.rows, sw.entries = nil, nil
		switch {
		case len(rows) > 0:
			n := min(len(rows), w.FlushRows)
			sw.rows, rows = rows[:n], rows[n:]
		case len(entries) > 0:
			n := min(len(entries), w.ledgerFlushRows())
			for n < len(entries) && entries[n].Account == entries[n-1].Account {
				n++ // never split an account's transactions
			}
			sw.entries, entries = entries[:n], entries[n:]
		}
		if len(rows) == 0 && len(entries) == 0 {
			sw.mark = &sum
		}
		if err := w.flush(ctx, sw); err != nil {
			return sw.total, err
		}
		if sw.mark != nil {
			return sw.total, nil
		}
	}
}

func firstFew(xs []int) string {
	if len(xs) > 10 {
		return fmt.Sprintf("%v…", xs[:10])
	}
	return fmt.Sprint(xs)
}

// FinishBundle waits for the bundle's shards to be written.
func (w *BalanceWriterFn) FinishBundle(ctx context.Context) error {
	err := w.group.Wait()
	w.mu.Lock()
	c := w.written
	w.mu.Unlock()
	// Counters are incremented here, in the bundle's own goroutine.
	flushCount.Inc(ctx, c.flushes)
	accountsStaged.Inc(ctx, c.accounts)
	rowsUpserted.Inc(ctx, c.upserted)
	rowsStale.Inc(ctx, c.accounts-c.upserted)
	return err
}

// Teardown closes the pool.
func (w *BalanceWriterFn) Teardown(ctx context.Context) error {
	if w.pool != nil {
		w.pool.Close()
	}
	return nil
}

// flush writes one shard's chunk, and its mark on the last, in one
// transaction.
func (w *BalanceWriterFn) flush(ctx context.Context, sw *shardWrite) error {
	if n := w.flushes.Add(1); w.FailAfterFlushes > 0 && n > int64(w.FailAfterFlushes) {
		return fmt.Errorf("injected fault: balance writer fails after %d flushes", w.FailAfterFlushes)
	}
	var got counts
	n := len(sw.rows) + len(sw.entries)
	err := w.Retry.Do(ctx, fmt.Sprintf("write %d %s rows of shard %d to %s (batch %d)", n, w.Mode, sw.shard, w.Tables.Key(), w.BatchID), func() error {
		got = counts{}
		return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
			var err error
			if w.Mode == ModeLedger {
				err = w.writeLedger(ctx, tx, sw, &got)
			} else {
				err = w.writeBalances(ctx, tx, sw, &got)
			}
			if err != nil {
				return err
			}
			if sw.mark == nil {
				return nil
			}
			return w.writeMark(ctx, tx, sw, got)
		})
	})
	if err != nil {
		return err
	}
	got.flushes = 1
	sw.total.add(got)
	slog.Debug("flushed balances", "table", w.Tables.Key(), "mode", w.Mode, "batch", w.BatchID, "shard", sw.shard,
		"rows", n, "upserted", got.upserted, "last", sw.mark != nil)
	return nil
}

// writeBalances stages absolute balances and merges them (snapshot, lww).
func (w *BalanceWriterFn) writeBalances(ctx context.Context, tx pgx.Tx, sw *shardWrite, got *counts) error {
	if len(sw.rows) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, createStageBalancesSQL); err != nil {
		return err
	}
	rows := sw.rows
	src := pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		r := rows[i]
		return []any{r.Account, r.Cents, r.Count, time.UnixMicro(r.LatestMicros).UTC()}, nil
	})
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{stageBalances}, stageBalanceColumns, src); err != nil {
		return err
	}
	merge := w.Tables.mergeGuardedSQL()
	switch {
	case w.Mode == ModeLWW:
		merge = w.Tables.mergeUnguardedSQL()
	case w.Run > 1:
		// A rerun: most accounts are at this batch already. Same merge,
		// same guard, without locking the rows it would skip.
		merge = w.Tables.mergeGuardedRerunSQL()
	}
	got.accounts = int64(len(rows))
	// The command tag counts the rows inserted or updated, not those the
	// guard skipped: no RETURNING to gather and count.
	tag, err := tx.Exec(ctx, merge, w.BatchID, time.UnixMicro(w.PinnedAtMicros).UTC())
	got.upserted = tag.RowsAffected()
	return err
}

// ledgerFlushRows is the size of the next ledger flush: FlushRows on the
// fast path, but at most DefaultFlushRows on the general one, which stages
// the transactions in a temporary table and probes the ledger for each: a
// larger flush there gains nothing (a rerun of 10M rows with --recheck took
// 80-83 s either way) and holds more in temporary buffers and work memory.
func (w *BalanceWriterFn) ledgerFlushRows() int {
	if w.fastLedger() {
		return w.FlushRows
	}
	return min(w.FlushRows, DefaultFlushRows)
}

// fastLedger reports whether the next ledger flush tries the fast path: on
// a batch's first run, until an id turns out to be in the ledger already.
func (w *BalanceWriterFn) fastLedger() bool { return w.Run == 1 && !w.noFastLedger.Load() }

// writeLedger records the flush's transactions in the ledger, once each,
// adds the new ones to the balances and rejects those the ledger holds with
// other values. On a batch's first run it first tries the fast path, a COPY
// straight into the ledger (most transactions are new then); the first
// duplicate id sends this writer to the general path for good.
func (w *BalanceWriterFn) writeLedger(ctx context.Context, tx pgx.Tx, sw *shardWrite, got *counts) error {
	if len(sw.entries) == 0 {
		return nil
	}
	if w.fastLedger() {
		done, err := w.writeLedgerFast(ctx, tx, sw, got)
		if err != nil || done {
			return err
		}
		w.noFastLedger.Store(true)
		slog.Debug("ledger fast path off: an id of this batch is in the ledger already", "batch", w.BatchID)
	}
	if _, err := tx.Exec(ctx, createStageLedgerSQL); err != nil {
		return err
	}
	entries := sw.entries
	src := pgx.CopyFromSlice(len(entries), func(i int) ([]any, error) {
		e := entries[i]
		return []any{e.ID, e.Account, e.Cents, time.UnixMicro(e.AtMicros).UTC(), e.File, e.Line}, nil
	})
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{stageLedger}, stageLedgerColumns, src); err != nil {
		return err
	}
	got.staged = int64(len(entries))
	for i, e := range entries {
		if i == 0 || entries[i-1].Account != e.Account {
			got.accounts++
		}
	}
	if _, err := tx.Exec(ctx, ledgerJoinsByIndexSQL); err != nil {
		return err
	}
	res, err := tx.Query(ctx, w.Tables.mergeLedgerSQL(), w.BatchID, time.UnixMicro(w.PinnedAtMicros).UTC())
	if err != nil {
		return err
	}
	var rejects []transforms.RejectedRow
	var (
		id, acct, oldAcct, oldAmount *string
		file                         *int32
		line, cents, oldBatch        *int64
		at, oldAt                    *time.Time
	)
	_, err = pgx.ForEachRow(res, []any{&got.inserted, &got.upserted, &id, &file, &line, &acct, &cents, &at, &oldBatch, &oldAcct, &oldAmount, &oldAt}, func() error {
		if id == nil {
			return nil // no conflict: the row of counts alone
		}
		got.conflicts++
		rejects = append(rejects, transforms.RejectedRow{
			File: fileName(w.Files, *file), Line: *line, Reason: txnfile.ReasonConflictAcrossBatches.Code(),
			Detail: fmt.Sprintf("transaction_id %q is in the ledger from batch %d as (%s, %s, %s); this row has (%s, %s, %s): not applied",
				txnfile.Truncate(*id, 64), *oldBatch, txnfile.Truncate(*oldAcct, 32), *oldAmount, oldAt.UTC().Format(time.RFC3339Nano),
				txnfile.Truncate(*acct, 32), txnfile.FormatCents(*cents), at.UTC().Format(time.RFC3339Nano)),
		})
		return nil
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.TableName == w.Tables.Ledger() {
			// A concurrent writer committed one of these ids after the probe
			// looked: retry the flush, which will see it.
			return retryable{fmt.Errorf("ledger id inserted concurrently: %w", err)}
		}
		return err
	}
	if len(rejects) == 0 {
		return nil
	}
	// The conflicting rows inserted nothing (the ledger kept its row, and the
	// balances its value): record them as rejected.
	return insertRejects(ctx, tx, w.Tables, w.BatchID, rejects)
}

// writeLedgerFast COPYs the flush's transactions straight into the ledger
// and adds their sums, computed here, to the accounts. It reports false
// (having undone its part of the transaction) when an id is in the ledger
// already, which the COPY finds as a unique violation.
func (w *BalanceWriterFn) writeLedgerFast(ctx context.Context, tx pgx.Tx, sw *shardWrite, got *counts) (bool, error) {
	if _, err := tx.Exec(ctx, savepointSQL); err != nil {
		return false, err
	}
	entries := sw.entries
	// In id order, the ledger's index takes the rows where they go one after
	// another (measured: COPY of 1M rows 3.1 s in id order, 5.4 s in account
	// order).
	byID := make([]int, len(entries))
	for i := range byID {
		byID[i] = i
	}
	slices.SortFunc(byID, func(a, b int) int { return strings.Compare(entries[a].ID, entries[b].ID) })
	src := pgx.CopyFromSlice(len(entries), func(i int) ([]any, error) {
		e := entries[byID[i]]
		return []any{e.ID, e.Account, cents(e.Cents),
			time.UnixMicro(e.AtMicros).UTC(), w.BatchID}, nil
	})
	if _, err := tx.CopyFrom(ctx, w.Tables.sibling(w.Tables.Ledger()), ledgerColumns, src); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			if _, err := tx.Exec(ctx, rollbackSavepointSQL); err != nil {
				return false, err
			}
			return false, nil
		}
		return false, err
	}
	// The sums per account; entries come sorted by account.
	var sums []transforms.Total
	for _, e := range entries {
		in := transforms.Total{Account: e.Account, Cents: e.Cents, Count: 1, LatestMicros: e.AtMicros}
		if n := len(sums); n > 0 && sums[n-1].Account == e.Account {
			if err := sums[n-1].Add(in); err != nil {
				return false, err
			}
			continue
		}
		sums = append(sums, in)
	}
	if _, err := tx.Exec(ctx, createStageBalancesSQL); err != nil {
		return false, err
	}
	stage := pgx.CopyFromSlice(len(sums), func(i int) ([]any, error) {
		r := sums[i]
		return []any{r.Account, r.Cents, r.Count, time.UnixMicro(r.LatestMicros).UTC()}, nil
	})
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{stageBalances}, stageBalanceColumns, stage); err != nil {
		return false, err
	}
	tag, err := tx.Exec(ctx, w.Tables.addLedgerSumsSQL(), w.BatchID, time.UnixMicro(w.PinnedAtMicros).UTC())
	if err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, releaseSavepointSQL); err != nil {
		return false, err
	}
	got.staged, got.inserted = int64(len(entries)), int64(len(entries))
	got.accounts, got.upserted = int64(len(sums)), tag.RowsAffected()
	return true, nil
}

// writeMark writes the shard's mark row: what its flushes did, this one's
// (got) included, and the batch's counts as its bucket marks give them.
func (w *BalanceWriterFn) writeMark(ctx context.Context, tx pgx.Tx, sw *shardWrite, got counts) error {
	c := sw.total
	c.add(got)
	m := sw.mark
	known := c.staged - c.inserted - c.conflicts
	_, err := tx.Exec(ctx, w.Tables.insertShardMarkSQL(), w.BatchID, w.Run, sw.shard, m.Bucket,
		c.accounts, c.upserted, c.accounts-c.upserted, m.Read, m.Applied, m.Duplicates, m.Rejected,
		c.inserted, known, c.conflicts)
	return err
}

func fileName(files []string, i int32) string {
	if i >= 0 && int(i) < len(files) {
		return files[i]
	}
	return fmt.Sprintf("file #%d", i)
}
