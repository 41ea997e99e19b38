package sinks

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/balancebeam/balancebeam/transforms"
)

// Metric names of the sinks, in transforms.MetricsNamespace.
const (
	MetricAccounts     = "accounts"
	MetricRowsUpserted = "rows_upserted"
	MetricRowsStale    = "rows_skipped_stale"
	MetricFlushes      = "flushes"
	MetricRejectsSaved = "rejected_rows_written"
)

var (
	accountsStaged = beam.NewCounter(transforms.MetricsNamespace, MetricAccounts)
	rowsUpserted   = beam.NewCounter(transforms.MetricsNamespace, MetricRowsUpserted)
	rowsStale      = beam.NewCounter(transforms.MetricsNamespace, MetricRowsStale)
	flushCount     = beam.NewCounter(transforms.MetricsNamespace, MetricFlushes)
	rejectsSaved   = beam.NewCounter(transforms.MetricsNamespace, MetricRejectsSaved)
)

func init() {
	register.DoFn3x1[context.Context, int, transforms.Totals, error](&BalanceWriterFn{})
	register.DoFn2x1[context.Context, transforms.RejectedRow, error](&RejectWriterFn{})
	beam.RegisterType(reflect.TypeOf((*Connection)(nil)).Elem())
}

// Target is where and as what batch the sinks write.
type Target struct {
	Conn   Connection
	Tables Tables
	// BatchID, Run and PinnedAt come from the registry, once per run.
	BatchID  int64
	Run      int
	PinnedAt time.Time
	// Buckets is the number of dedup buckets whose marks each shard's
	// totals must carry before the shard is written.
	Buckets int
	// FlushRows bounds the rows of one flush (one database transaction).
	FlushRows int
	Retry     Retry
	// FailAfterFlushes, when positive, makes each balance writer fail its
	// bundle once it has made that many flushes: a fault for tests and chaos
	// experiments, never set by the command line.
	FailAfterFlushes int
}

// DefaultFlushRows is the flush size when Target.FlushRows is zero.
const DefaultFlushRows = 10000

func (t Target) flushRows() int {
	if t.FlushRows > 0 {
		return t.FlushRows
	}
	return DefaultFlushRows
}

// WriteBalances writes each shard's account totals with the guarded merge.
// Each shard's totals arrive as one element, so one worker writes an account.
func WriteBalances(s beam.Scope, totals beam.PCollection, t Target) {
	s = s.Scope("WriteBalances")
	beam.ParDo0(s, &BalanceWriterFn{
		Conn: t.Conn, Tables: t.Tables, BatchID: t.BatchID, Run: t.Run, PinnedAtMicros: t.PinnedAt.UnixMicro(),
		Buckets: t.Buckets, FlushRows: t.flushRows(), Retry: t.Retry, FailAfterFlushes: t.FailAfterFlushes,
	}, totals)
}

// WriteRejects writes rejected rows to the rejected_rows table, once each:
// rerunning a batch inserts nothing new.
func WriteRejects(s beam.Scope, rejects beam.PCollection, t Target) {
	s = s.Scope("WriteRejects")
	beam.ParDo0(s, &RejectWriterFn{Conn: t.Conn, Tables: t.Tables, BatchID: t.BatchID, FlushRows: t.flushRows(), Retry: t.Retry}, rejects)
}

// BalanceWriterFn is the balances sink. It buffers account totals per bundle
// and flushes them when the buffer is full and at the end of the bundle. A
// flush is one transaction: COPY into a temporary staging table, then one
// INSERT ... ON CONFLICT DO UPDATE ... WHERE excluded.batch_id > batch_id.
// Transient errors retry the whole flush, which is safe because the merge
// is idempotent for a batch.
//
// A shard is written only if its totals carry the marks of all Buckets
// dedup buckets, and its mark row (batch_shards) is written in the same
// transaction as its last rows: the driver accepts a run only when every
// shard has its mark.
type BalanceWriterFn struct {
	Conn             Connection
	Tables           Tables
	BatchID          int64
	Run              int
	PinnedAtMicros   int64
	Buckets          int
	FlushRows        int
	Retry            Retry
	FailAfterFlushes int

	pool    *pgxpool.Pool
	buf     []stagedRow
	done    []shardDone       // shards whose rows are all buffered or written
	stats   map[int32]*counts // per shard: rows staged and written so far
	flushes int
}

type stagedRow struct {
	shard int32
	transforms.Total
}

type shardDone struct {
	shard int32
	sum   transforms.BucketMark
}

type counts struct{ staged, upserted int64 }

// Setup opens the connection pool.
func (w *BalanceWriterFn) Setup(ctx context.Context) error {
	if w.FlushRows <= 0 {
		w.FlushRows = DefaultFlushRows
	}
	pool, err := OpenPool(ctx, w.Conn)
	if err != nil {
		return err
	}
	w.pool = pool
	return nil
}

// StartBundle empties the buffer.
func (w *BalanceWriterFn) StartBundle(ctx context.Context) error {
	w.buf, w.done, w.stats = w.buf[:0], w.done[:0], map[int32]*counts{}
	return nil
}

// ProcessElement checks that one shard's totals are complete, then buffers
// them, flushing as the buffer fills.
func (w *BalanceWriterFn) ProcessElement(ctx context.Context, shard int, totals transforms.Totals) error {
	if missing := totals.MissingBuckets(w.Buckets); len(missing) > 0 {
		return fmt.Errorf("shard %d of batch %d: the totals lack the marks of %d of %d dedup buckets (%v): part of the batch did not reach the sink, so nothing of this shard is written",
			shard, w.BatchID, len(missing), w.Buckets, firstFew(missing))
	}
	if len(totals.Marks) != w.Buckets {
		return fmt.Errorf("shard %d of batch %d: %d bucket marks for %d buckets", shard, w.BatchID, len(totals.Marks), w.Buckets)
	}
	w.stats[int32(shard)] = &counts{}
	rows := totals.Rows
	for len(rows) > 0 {
		n := min(len(rows), w.FlushRows-len(w.buf))
		for _, r := range rows[:n] {
			w.buf = append(w.buf, stagedRow{int32(shard), r})
		}
		rows = rows[n:]
		if len(w.buf) >= w.FlushRows {
			if err := w.flush(ctx); err != nil {
				return err
			}
		}
	}
	w.done = append(w.done, shardDone{int32(shard), totals.Sum()})
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

// flush writes the buffered rows and the marks of the shards that are done,
// in one transaction.
func (w *BalanceWriterFn) flush(ctx context.Context) error {
	if len(w.buf) == 0 && len(w.done) == 0 {
		return nil
	}
	if w.FailAfterFlushes > 0 && w.flushes >= w.FailAfterFlushes {
		return fmt.Errorf("injected fault: balance writer fails after %d flushes", w.flushes)
	}
	rows := w.buf
	// Lock rows in one order in every writer: no deadlocks between writers.
	slices.SortFunc(rows, func(a, b stagedRow) int { return strings.Compare(a.Account, b.Account) })
	pinned := time.UnixMicro(w.PinnedAtMicros).UTC()
	var got map[int32]counts
	err := w.Retry.do(ctx, fmt.Sprintf("write %d balances to %s (batch %d)", len(rows), w.Tables.Key(), w.BatchID), func() error {
		got = map[int32]counts{}
		return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
			if len(rows) > 0 {
				if _, err := tx.Exec(ctx, createStageBalancesSQL); err != nil {
					return err
				}
				src := pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
					r := rows[i]
					return []any{r.shard, r.Account, r.Cents, r.Count, time.UnixMicro(r.LatestMicros).UTC()}, nil
				})
				if _, err := tx.CopyFrom(ctx, pgx.Identifier{stageBalances}, stageBalanceColumns, src); err != nil {
					return err
				}
				res, err := tx.Query(ctx, w.Tables.mergeGuardedSQL(), w.BatchID, pinned)
				if err != nil {
					return err
				}
				var shard int32
				var c counts
				if _, err := pgx.ForEachRow(res, []any{&shard, &c.staged, &c.upserted}, func() error {
					got[shard] = c
					return nil
				}); err != nil {
					return err
				}
			}
			for _, d := range w.done {
				st := w.stats[d.shard]
				c := got[d.shard]
				staged, upserted := st.staged+c.staged, st.upserted+c.upserted
				if _, err := tx.Exec(ctx, w.Tables.insertShardMarkSQL(), w.BatchID, w.Run, d.shard, d.sum.Bucket,
					staged, upserted, staged-upserted, d.sum.Read, d.sum.Applied, d.sum.Duplicates, d.sum.Rejected); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	var staged, upserted int64
	for shard, c := range got {
		if st := w.stats[shard]; st != nil {
			st.staged += c.staged
			st.upserted += c.upserted
		}
		staged += c.staged
		upserted += c.upserted
	}
	w.flushes++
	flushCount.Inc(ctx, 1)
	accountsStaged.Inc(ctx, staged)
	rowsUpserted.Inc(ctx, upserted)
	rowsStale.Inc(ctx, staged-upserted)
	slog.Debug("flushed balances", "table", w.Tables.Key(), "batch", w.BatchID, "rows", len(rows), "upserted", upserted, "shards_done", len(w.done))
	w.buf, w.done = w.buf[:0], w.done[:0]
	return nil
}

// RejectWriterFn is the rejected-rows sink: COPY into staging, then one
// INSERT ... ON CONFLICT DO NOTHING keyed by (batch, file, line).
type RejectWriterFn struct {
	Conn      Connection
	Tables    Tables
	BatchID   int64
	FlushRows int
	Retry     Retry

	pool *pgxpool.Pool
	buf  []transforms.RejectedRow
}

// Setup opens the connection pool.
func (w *RejectWriterFn) Setup(ctx context.Context) error {
	if w.FlushRows <= 0 {
		w.FlushRows = DefaultFlushRows
	}
	pool, err := OpenPool(ctx, w.Conn)
	if err != nil {
		return err
	}
	w.pool = pool
	return nil
}

// StartBundle empties the buffer.
func (w *RejectWriterFn) StartBundle(ctx context.Context) error {
	w.buf = w.buf[:0]
	return nil
}

// ProcessElement buffers one rejected row.
func (w *RejectWriterFn) ProcessElement(ctx context.Context, r transforms.RejectedRow) error {
	w.buf = append(w.buf, r)
	if len(w.buf) >= w.FlushRows {
		return w.flush(ctx)
	}
	return nil
}

// FinishBundle flushes what is left.
func (w *RejectWriterFn) FinishBundle(ctx context.Context) error {
	return w.flush(ctx)
}

// Teardown closes the pool.
func (w *RejectWriterFn) Teardown(ctx context.Context) error {
	if w.pool != nil {
		w.pool.Close()
	}
	return nil
}

func (w *RejectWriterFn) flush(ctx context.Context) error {
	if len(w.buf) == 0 {
		return nil
	}
	rows := w.buf
	var inserted int64
	err := w.Retry.do(ctx, fmt.Sprintf("write %d rejected rows (batch %d)", len(rows), w.BatchID), func() error {
		return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, createStageRejectsSQL); err != nil {
				return err
			}
			src := pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
				r := rows[i]
				return []any{pgText(r.File), r.Line, r.Reason, pgText(r.Detail), pgText(r.Raw)}, nil
			})
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{stageRejects}, stageRejectColumns, src); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, w.Tables.insertRejectsSQL(), w.BatchID)
			inserted = tag.RowsAffected()
			return err
		})
	})
	if err != nil {
		return err
	}
	rejectsSaved.Inc(ctx, inserted)
	w.buf = w.buf[:0]
	return nil
}

// pgText makes s storable as PostgreSQL text, which must be valid UTF-8
// without NUL bytes: a rejected row may be neither.
func pgText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}
