package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EnsureSchema creates the target's tables if they do not exist (the
// ledger too in ledger mode), and records the table's mode on its first run
// or refuses a run in another mode (ErrModeMismatch). It is idempotent and
// safe to run from several processes at once.
func EnsureSchema(ctx context.Context, pool *pgxpool.Pool, t Tables, mode Mode) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if mode == "" {
		mode = ModeSnapshot
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, schemaLockSQL, t.Key()); err != nil {
			return fmt.Errorf("lock schema: %w", err)
		}
		stmts := t.schemaSQL()
		if mode == ModeLedger {
			stmts = append(stmts, t.ledgerSQL())
		}
		for _, stmt := range stmts {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("create schema for %s: %w", t.Key(), err)
			}
		}
		return claimMode(ctx, tx, t, mode)
	})
}

// Batch status values, as stored.
const (
	StatusRunning   = "running"
	StatusCommitted = "committed"
	StatusFailed    = "failed"
)

// BatchRequest asks the registry for the batch of a set of inputs.
type BatchRequest struct {
	// ManifestSHA256 identifies the inputs.
	ManifestSHA256 string
	// Files is the manifest's file list, stored as JSON for people to read.
	Files any
	// PinnedAt is the run timestamp to pin if the batch is new. A known
	// batch keeps the timestamp pinned when it was first registered.
	PinnedAt time.Time
	// ForceID, when not zero, is the batch id to use. It is an error if that
	// id belongs to other inputs, or if these inputs have another id.
	ForceID int64
	// KeepCommitted makes Register return a committed batch as it is
	// (Batch.Committed, with its counts) instead of starting a run of it.
	KeepCommitted bool
}

// Batch is a registered batch.
type Batch struct {
	ID int64
	// Run counts the runs of the batch, this one included.
	Run      int
	PinnedAt time.Time
	// New is true when this call registered the batch.
	New bool
	// PreviousStatus is the batch's status before this run ("" if New).
	PreviousStatus string
	// Committed is set, with KeepCommitted, when the batch is committed: no
	// run was started (Run is the runs it has had) and Counts holds what its
	// committing run recorded (the JSON given to Commit).
	Committed bool
	Counts    []byte
}

// Registry records batches in the batches table of a target.
type Registry struct {
	Pool   *pgxpool.Pool
	Tables Tables
}

// ErrBatchConflict is returned when a forced batch id does not fit the inputs.
var ErrBatchConflict = errors.New("batch id conflict")

// Register returns the batch of the request's inputs, registering it with a
// new id larger than every earlier one when the inputs are new. The same
// inputs give back the same id and pinned timestamp every time.
func (r *Registry) Register(ctx context.Context, req BatchRequest) (Batch, error) {
	t := r.Tables
	files, err := json.Marshal(req.Files)
	if err != nil {
		return Batch{}, fmt.Errorf("encode manifest: %w", err)
	}
	var b Batch
	err = pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, schemaLockSQL, t.Key()); err != nil {
			return fmt.Errorf("lock batches: %w", err)
		}
		var existing struct {
			id       int64
			hash     string
			pinnedAt time.Time
			status   string
		}
		found := true
		err := tx.QueryRow(ctx, t.batchByManifestSQL(), t.Key(), req.ManifestSHA256).
			Scan(&existing.id, &existing.hash, &existing.pinnedAt, &existing.status)
		if errors.Is(err, pgx.ErrNoRows) {
			found = false
		} else if err != nil {
			return fmt.Errorf("look up batch: %w", err)
		}

		if req.ForceID != 0 {
			if req.ForceID < 0 {
				return fmt.Errorf("%w: batch id %d must be positive", ErrBatchConflict, req.ForceID)
			}
			var other struct {
				table, hash, status string
				pinnedAt            time.Time
				files               []byte
			}
			err := tx.QueryRow(ctx, t.batchByIDSQL(), req.ForceID).Scan(&other.table, &other.hash, &other.pinnedAt, &other.status, &other.files)
			switch {
			case err == nil && (other.table != t.Key() || other.hash != req.ManifestSHA256):
				return fmt.Errorf("%w: batch %d belongs to other inputs (table %s, manifest %s, files %s); these inputs have manifest %s",
					ErrBatchConflict, req.ForceID, other.table, other.hash, other.files, req.ManifestSHA256)
			case err == nil:
				// The forced id is these inputs' own batch.
			case !errors.Is(err, pgx.ErrNoRows):
				return fmt.Errorf("look up batch %d: %w", req.ForceID, err)
			case found:
				return fmt.Errorf("%w: these inputs are batch %d already; cannot register them again as batch %d",
					ErrBatchConflict, existing.id, req.ForceID)
			default:
				if _, err := tx.Exec(ctx, t.bumpBatchSeqSQL(), t.batchSeq(), req.ForceID); err != nil {
					return fmt.Errorf("advance batch sequence: %w", err)
				}
				return r.insert(ctx, tx, req.ForceID, req, files, &b)
			}
		}
		if found {
			b = Batch{ID: existing.id, PinnedAt: existing.pinnedAt, PreviousStatus: existing.status}
			if req.KeepCommitted && existing.status == StatusCommitted {
				// A committed batch stays committed (a later run cannot
				// undo it), so what it recorded is final.
				b.Committed = true
				if err := tx.QueryRow(ctx, t.committedBatchSQL(), existing.id).Scan(&b.Run, &b.Counts); err != nil {
					return fmt.Errorf("read committed batch %d: %w", existing.id, err)
				}
				return nil
			}
			if err := tx.QueryRow(ctx, t.rerunBatchSQL(), existing.id).Scan(&b.Run); err != nil {
				return fmt.Errorf("mark batch %d running: %w", existing.id, err)
			}
			return nil
		}
		var id int64
		if err := tx.QueryRow(ctx, nextBatchIDSQL, t.batchSeq()).Scan(&id); err != nil {
			return fmt.Errorf("allocate batch id: %w", err)
		}
		return r.insert(ctx, tx, id, req, files, &b)
	})
	if err != nil {
		return Batch{}, err
	}
	return b, nil
}

func (r *Registry) insert(ctx context.Context, tx pgx.Tx, id int64, req BatchRequest, files []byte, b *Batch) error {
	pinned := req.PinnedAt.UTC().Truncate(time.Microsecond)
	if _, err := tx.Exec(ctx, r.Tables.insertBatchSQL(), id, r.Tables.Key(), req.ManifestSHA256, files, pinned); err != nil {
		return fmt.Errorf("register batch %d: %w", id, err)
	}
	*b = Batch{ID: id, Run: 1, PinnedAt: pinned, New: true}
	return nil
}

// Commit marks a batch committed and records its run's counts.
func (r *Registry) Commit(ctx context.Context, id int64, counts any) error {
	c, err := json.Marshal(counts)
	if err != nil {
		return fmt.Errorf("encode counts: %w", err)
	}
	if _, err := r.Pool.Exec(ctx, r.Tables.commitBatchSQL(), id, c); err != nil {
		return fmt.Errorf("commit batch %d: %w", id, err)
	}
	return nil
}

// Fail marks a batch failed with the run's error, unless an earlier run
// committed it (a failed rerun of a committed batch changed nothing).
func (r *Registry) Fail(ctx context.Context, id int64, cause error) error {
	if _, err := r.Pool.Exec(ctx, r.Tables.failBatchSQL(), id, cause.Error()); err != nil {
		return fmt.Errorf("mark batch %d failed: %w", id, err)
	}
	return nil
}

// RejectCounts returns the number of rejected rows of a batch by reason code.
func (r *Registry) RejectCounts(ctx context.Context, id int64) (map[string]int64, error) {
	rows, err := r.Pool.Query(ctx, r.Tables.rejectCountsSQL(), id)
	if err != nil {
		return nil, fmt.Errorf("count rejected rows of batch %d: %w", id, err)
	}
	out := map[string]int64{}
	for rows.Next() {
		var reason string
		var n int64
		if err := rows.Scan(&reason, &n); err != nil {
			return nil, err
		}
		out[reason] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count rejected rows of batch %d: %w", id, err)
	}
	return out, nil
}

// ShardMark is one shard's mark row: what one run wrote of the shard, and
// the batch's row counts as the shard's totals saw them.
type ShardMark struct {
	Shard, Buckets                          int
	Accounts, Upserted, Stale               int64
	RowsRead, Applied, Duplicates, Rejected int64
	// In ledger mode: transactions new to the ledger, already in it, and in
	// it with other values (rejected).
	Inserted, Known, Conflicts int64
}

// ShardMarks returns the mark rows one run of a batch wrote.
func (r *Registry) ShardMarks(ctx context.Context, id int64, run int) ([]ShardMark, error) {
	rows, err := r.Pool.Query(ctx, r.Tables.shardMarksSQL(), id, run)
	if err != nil {
		return nil, fmt.Errorf("read shard marks of batch %d: %w", id, err)
	}
	marks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ShardMark, error) {
		var m ShardMark
		err := row.Scan(&m.Shard, &m.Buckets, &m.Accounts, &m.Upserted, &m.Stale, &m.RowsRead, &m.Applied, &m.Duplicates, &m.Rejected,
			&m.Inserted, &m.Known, &m.Conflicts)
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("read shard marks of batch %d: %w", id, err)
	}
	return marks, nil
}

// BatchFiles returns the file list a batch was registered with, as stored
// (JSON), or nil if there is no such batch.
func (r *Registry) BatchFiles(ctx context.Context, id int64) ([]byte, error) {
	var table, hash, status string
	var pinnedAt time.Time
	var files []byte
	err := r.Pool.QueryRow(ctx, r.Tables.batchByIDSQL(), id).Scan(&table, &hash, &pinnedAt, &status, &files)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up batch %d: %w", id, err)
	}
	return files, nil
}
