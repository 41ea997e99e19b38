package sinks

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/balancebeam/balancebeam/transforms"
	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

// BalanceWriterFn is the balances sink. It buffers each shard's totals per
// bundle and flushes them when the buffer is full and at the end of the
// bundle. A flush is one transaction: COPY into a temporary staging table,
// then one set-based statement of the mode:
//
//	snapshot  INSERT ... ON CONFLICT DO UPDATE ... WHERE excluded.batch_id > batch_id
//	lww       the same without the WHERE
//	ledger    INSERT INTO ledger ... ON CONFLICT DO NOTHING, and add the sums of
//	          the inserted rows to the accounts (one CTE)
//
// Transient errors retry the whole flush, which is safe because each
// mode's statement is idempotent for a batch (lww: the same absolute values).
//
// A shard is written only if its totals carry the marks of all Buckets
// dedup buckets, and its mark row (batch_shards) is written in the same
// transaction as its last rows: the driver accepts a run only when every
// shard has its mark.
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

	pool    *pgxpool.Pool
	shard   int32 // the shard of the buffered rows: a flush never mixes shards
	rows    []transforms.Total
	entries []transforms.Entry
	done    []shardDone
	stats   map[int32]*counts
	flushes int
}

type shardDone struct {
	shard int32
	sum   transforms.BucketMark
}

// counts are what a shard's flushes did so far.
type counts struct {
	accounts, upserted          int64
	inserted, staged, conflicts int64 // ledger mode
}

func (c *counts) add(o counts) {
	c.accounts += o.accounts
	c.upserted += o.upserted
	c.inserted += o.inserted
	c.staged += o.staged
	c.conflicts += o.conflicts
}

// Setup opens the connection pool.
func (w *BalanceWriterFn) Setup(ctx context.Context) error {
	if w.FlushRows <= 0 {
		w.FlushRows = DefaultFlushRows
	}
	if w.Mode == "" {
		w.Mode = ModeSnapshot
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

// StartBundle empties the buffers.
func (w *BalanceWriterFn) StartBundle(ctx context.Context) error {
	w.rows, w.entries, w.done, w.stats = w.rows[:0], w.entries[:0], w.done[:0], map[int32]*counts{}
	return nil
}

// ProcessElement checks that one shard's totals are complete, then buffers
// them, flushing as the buffer fills. A flush holds one shard's rows and
// never splits an account's transactions, so each account is updated once
// per batch.
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
	if len(w.rows)+len(w.entries) > 0 {
		if err := w.flush(ctx); err != nil {
			return err
		}
	}
	w.shard = int32(shard)
	w.stats[w.shard] = &counts{}
	for _, r := range totals.Rows {
		w.rows = append(w.rows, r)
		if len(w.rows) >= w.FlushRows {
			if err := w.flush(ctx); err != nil {
				return err
			}
		}
	}
	for i, e := range totals.Entries {
		w.entries = append(w.entries, e)
		atAccountEnd := i+1 == len(totals.Entries) || totals.Entries[i+1].Account != e.Account
		if len(w.entries) >= w.FlushRows && atAccountEnd {
			if err := w.flush(ctx); err != nil {
				return err
			}
		}
	}
	w.done = append(w.done, shardDone{w.shard, totals.Sum()})
	return nil
}

func firstFew(xs []int) string {
	if len(xs) > 10 {
		return fmt.Sprintf("%v…", xs[:10])
	}
	return fmt.Sprint(xs)
}

// FinishBundle flushes what is left.
func (w *BalanceWriterFn) FinishBundle(ctx context.Context) error {
	return w.flush(ctx)
}

// Teardown closes the pool.
func (w *BalanceWriterFn) Teardown(ctx context.Context) error {
	if w.pool != nil {
		w.pool.Close()
	}
	return nil
}

// flush writes the buffered rows of the current shard and the marks of the
// shards that are done, in one transaction.
func (w *BalanceWriterFn) flush(ctx context.Context) error {
	if len(w.rows) == 0 && len(w.entries) == 0 && len(w.done) == 0 {
		return nil
	}
	if w.FailAfterFlushes > 0 && w.flushes >= w.FailAfterFlushes {
		return fmt.Errorf("injected fault: balance writer fails after %d flushes", w.flushes)
	}
	// Lock rows in one order in every writer: no deadlocks between writers.
	// (Totals rows and ledger entries arrive sorted by account.)
	var got counts
	n := len(w.rows) + len(w.entries)
	err := w.Retry.Do(ctx, fmt.Sprintf("write %d %s rows to %s (batch %d)", n, w.Mode, w.Tables.Key(), w.BatchID), func() error {
		got = counts{}
		return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
			var err error
			if w.Mode == ModeLedger {
				err = w.writeLedger(ctx, tx, &got)
			} else {
				err = w.writeBalances(ctx, tx, &got)
			}
			if err != nil {
				return err
			}
			return w.writeMarks(ctx, tx, got)
		})
	})
	if err != nil {
		return err
	}
	if st := w.stats[w.shard]; st != nil && n > 0 {
		st.add(got)
	}
	w.flushes++
	flushCount.Inc(ctx, 1)
	accountsStaged.Inc(ctx, got.accounts)
	rowsUpserted.Inc(ctx, got.upserted)
	rowsStale.Inc(ctx, got.accounts-got.upserted)
	slog.Debug("flushed balances", "table", w.Tables.Key(), "mode", w.Mode, "batch", w.BatchID, "shard", w.shard,
		"rows", n, "upserted", got.upserted, "shards_done", len(w.done))
	w.rows, w.entries, w.done = w.rows[:0], w.entries[:0], w.done[:0]
	return nil
}

// writeBalances stages absolute balances and merges them (snapshot, lww).
func (w *BalanceWriterFn) writeBalances(ctx context.Context, tx pgx.Tx, got *counts) error {
	if len(w.rows) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, createStageBalancesSQL); err != nil {
		return err
	}
	rows := w.rows
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

// writeLedger stages transactions, records the new ones in the ledger and
// adds them to the balances, then rejects those the ledger holds with other
// values.
func (w *BalanceWriterFn) writeLedger(ctx context.Context, tx pgx.Tx, got *counts) error {
	if len(w.entries) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, createStageLedgerSQL); err != nil {
		return err
	}
	entries := w.entries
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
	if err := tx.QueryRow(ctx, w.Tables.mergeLedgerSQL(), w.BatchID, time.UnixMicro(w.PinnedAtMicros).UTC()).
		Scan(&got.inserted, &got.upserted); err != nil {
		return err
	}
	if got.inserted == got.staged {
		return nil // every transaction was new: none can conflict
	}
	conflicts, err := tx.Query(ctx, w.Tables.ledgerConflictsSQL())
	if err != nil {
		return err
	}
	var rejects []transforms.RejectedRow
	var (
		id, acct, oldAcct, oldAmount string
		file                         int32
		line, cents, oldBatch        int64
		at, oldAt                    time.Time
	)
	if _, err := pgx.ForEachRow(conflicts, []any{&id, &file, &line, &acct, &cents, &at, &oldBatch, &oldAcct, &oldAmount, &oldAt}, func() error {
		got.conflicts++
		rejects = append(rejects, transforms.RejectedRow{
			File: fileName(w.Files, file), Line: line, Reason: txnfile.ReasonConflictAcrossBatches.Code(),
			Detail: fmt.Sprintf("transaction_id %q is in the ledger from batch %d as (%s, %s, %s); this row has (%s, %s, %s): not applied",
				txnfile.Truncate(id, 64), oldBatch, txnfile.Truncate(oldAcct, 32), oldAmount, oldAt.UTC().Format(time.RFC3339Nano),
				txnfile.Truncate(acct, 32), txnfile.FormatCents(cents), at.UTC().Format(time.RFC3339Nano)),
		})
		return nil
	}); err != nil {
		return err
	}
	if len(rejects) == 0 {
		return nil
	}
	// The conflicting rows inserted nothing (the ledger kept its row, and the
	// balances its value): record them as rejected.
	return insertRejects(ctx, tx, w.Tables, w.BatchID, rejects)
}

// writeMarks writes the mark rows of the shards that are done; got is what
// this flush did for the current shard.
func (w *BalanceWriterFn) writeMarks(ctx context.Context, tx pgx.Tx, got counts) error {
	for _, d := range w.done {
		var c counts
		if st := w.stats[d.shard]; st != nil {
			c = *st
		}
		if d.shard == w.shard {
			c.add(got)
		}
		known := c.staged - c.inserted - c.conflicts
		if _, err := tx.Exec(ctx, w.Tables.insertShardMarkSQL(), w.BatchID, w.Run, d.shard, d.sum.Bucket,
			c.accounts, c.upserted, c.accounts-c.upserted, d.sum.Read, d.sum.Applied, d.sum.Duplicates, d.sum.Rejected,
			c.inserted, known, c.conflicts); err != nil {
			return err
		}
	}
	return nil
}

func fileName(files []string, i int32) string {
	if i >= 0 && int(i) < len(files) {
		return files[i]
	}
	return fmt.Sprintf("file #%d", i)
}
