package sinks

import (
	"context"
	"fmt"
	"reflect"
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
	// Mode is how balances are written (default snapshot).
	Mode Mode
	// Files are the batch's file paths by manifest index, to name the source
	// of rows the ledger rejects.
	Files []string
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

// DefaultFlushRows is the flush size when Target.FlushRows is zero: account
// rows, or rejected rows.
const DefaultFlushRows = 10000

// DefaultLedgerFlushRows is the ledger mode's flush size, in transactions,
// when Target.FlushRows is zero. A flush inserts its transactions into the
// ledger's primary key in id order, so a large flush touches each page of
// the key about once where small ones touch most pages once each (measured,
// 10M rows: 59 s with flushes of 10,000 transactions, 51 s with 100,000,
// 43 s with 1,000,000, where the key outgrows PostgreSQL's shared buffers).
const DefaultLedgerFlushRows = 1000000

func (t Target) flushRows() int {
	if t.FlushRows > 0 {
		return t.FlushRows
	}
	return DefaultFlushRows
}

// balanceFlushRows is the balance writer's flush size in t's mode.
func (t Target) balanceFlushRows() int {
	if t.FlushRows <= 0 && t.Mode == ModeLedger {
		return DefaultLedgerFlushRows
	}
	return t.flushRows()
}

// WriteBalances writes each shard's totals in the target's mode. Each
// shard's totals arrive as one element, so one worker writes an account.
func WriteBalances(s beam.Scope, totals beam.PCollection, t Target) {
	s = s.Scope("WriteBalances")
	mode := t.Mode
	if mode == "" {
		mode = ModeSnapshot
	}
	beam.ParDo0(s, &BalanceWriterFn{
		Conn: t.Conn, Tables: t.Tables, Mode: mode, Files: t.Files, BatchID: t.BatchID, Run: t.Run,
		PinnedAtMicros: t.PinnedAt.UnixMicro(), Buckets: t.Buckets, FlushRows: t.balanceFlushRows(), Retry: t.Retry,
		FailAfterFlushes: t.FailAfterFlushes,
	}, totals)
}

// WriteRejects writes rejected rows to the rejected_rows table, once each:
// rerunning a batch inserts nothing new.
func WriteRejects(s beam.Scope, rejects beam.PCollection, t Target) {
	s = s.Scope("WriteRejects")
	beam.ParDo0(s, &RejectWriterFn{Conn: t.Conn, Tables: t.Tables, BatchID: t.BatchID, FlushRows: t.flushRows(), Retry: t.Retry}, rejects)
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
	err := w.Retry.Do(ctx, fmt.Sprintf("write %d rejected rows (batch %d)", len(rows), w.BatchID), func() error {
		return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
			return insertRejects(ctx, tx, w.Tables, w.BatchID, rows)
		})
	})
	if err != nil {
		return err
	}
	rejectsSaved.Inc(ctx, int64(len(rows)))
	w.buf = w.buf[:0]
	return nil
}

// insertRejects stages rejected rows and inserts those not stored yet.
func insertRejects(ctx context.Context, tx pgx.Tx, t Tables, batch int64, rows []transforms.RejectedRow) error {
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
	_, err := tx.Exec(ctx, t.insertRejectsSQL(), batch)
	return err
}

// pgText makes s storable as PostgreSQL text, which must be valid UTF-8
// without NUL bytes: a rejected row may be neither.
func pgText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}
