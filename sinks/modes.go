package sinks

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Mode is how a table's balances are written: a point on the sliding scale
// from idempotency-first to concurrency-first.
type Mode string

// The modes.
const (
	// ModeLedger is idempotency-first: every transaction is recorded once in
	// a ledger table and only transactions new to the ledger are added to
	// the balances. Late files alone, overlapping files, batches in any
	// order, reruns, retried bundles and concurrent writers all end with
	// balance = sum of distinct transactions.
	ModeLedger Mode = "ledger"
	// ModeSnapshot is the balanced point: each batch writes absolute
	// balances, applied only by a newer batch than the one that last wrote
	// the account. Right when a batch holds the whole history of the
	// accounts it touches.
	ModeSnapshot Mode = "snapshot"
	// ModeLWW is concurrency-first: absolute balances, last write wins, no
	// guard. Fastest; wrong when batches arrive out of order, when a late
	// file is run alone, or when two writers share an account.
	ModeLWW Mode = "lww"
)

// Modes lists the modes from idempotency-first to concurrency-first.
func Modes() []Mode { return []Mode{ModeLedger, ModeSnapshot, ModeLWW} }

// ParseMode checks a mode name.
func ParseMode(s string) (Mode, error) {
	for _, m := range Modes() {
		if string(m) == s {
			return m, nil
		}
	}
	return "", fmt.Errorf("mode %q: want ledger, snapshot or lww", s)
}

// ErrModeMismatch is returned when a run's mode is not the table's.
var ErrModeMismatch = errors.New("mode mismatch")

// TableMode returns the recorded mode of the target's table ("" when none).
func TableMode(ctx context.Context, pool *pgxpool.Pool, t Tables) (Mode, error) {
	var exists bool
	if err := pool.QueryRow(ctx, tableExistsSQL, t.modesName()).Scan(&exists); err != nil {
		return "", fmt.Errorf("look up the mode of %s: %w", t.Key(), err)
	}
	if !exists {
		return "", nil
	}
	var m string
	err := pool.QueryRow(ctx, t.tableModeSQL(), t.Key()).Scan(&m)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up the mode of %s: %w", t.Key(), err)
	}
	return Mode(m), nil
}

// claimMode records the table's mode on its first run and refuses a run in
// another mode. Runs inside EnsureSchema's locked transaction.
func claimMode(ctx context.Context, tx pgx.Tx, t Tables, mode Mode) error {
	var recorded string
	err := tx.QueryRow(ctx, t.tableModeSQL(), t.Key()).Scan(&recorded)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if mode == ModeLedger {
			// A ledger must hold every transaction behind the balances: it can
			// only start with an empty accounts table.
			var n int64
			if err := tx.QueryRow(ctx, t.countAccountsSQL()).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("%w: table %s has %d accounts written without a ledger; it cannot become a ledger table (start a new --table, or rebuild it from the complete history into an empty table)", ErrModeMismatch, t.Key(), n)
			}
		}
		_, err := tx.Exec(ctx, t.insertTableModeSQL(), t.Key(), string(mode))
		return err
	case err != nil:
		return err
	case Mode(recorded) != mode:
		return fmt.Errorf("%w: table %s is in %s mode and this run asks for %s: run with --mode=%s, or convert the table first with `balancebeam convert --table %s --to %s` (see README, Modes)",
			ErrModeMismatch, t.Key(), recorded, mode, recorded, t.Key(), mode)
	}
	return nil
}

// Recompute rebuilds a ledger table's balances from its ledger, in one
// transaction: balance, count and latest time from the ledger's rows, batch
// and last_updated from the newest batch that added to the account. It
// returns how many accounts it changed and removed.
func Recompute(ctx context.Context, pool *pgxpool.Pool, t Tables) (changed, removed int64, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, schemaLockSQL, t.Key()); err != nil {
			return err
		}
		var mode string
		if err := tx.QueryRow(ctx, t.tableModeSQL(), t.Key()).Scan(&mode); err != nil {
			return fmt.Errorf("table %s has no recorded mode: %w", t.Key(), err)
		}
		if Mode(mode) != ModeLedger {
			return fmt.Errorf("table %s is in %s mode: only a ledger table can be recomputed", t.Key(), mode)
		}
		return recompute(ctx, tx, t, &changed, &removed)
	})
	return changed, removed, err
}

func recompute(ctx context.Context, tx pgx.Tx, t Tables, changed, removed *int64) error {
	if _, err := tx.Exec(ctx, t.lockForRecomputeSQL()); err != nil {
		return fmt.Errorf("lock %s: %w", t.Key(), err)
	}
	if err := tx.QueryRow(ctx, t.recomputeSQL()).Scan(changed, removed); err != nil {
		return fmt.Errorf("recompute %s from its ledger: %w", t.Key(), err)
	}
	return nil
}

// Convert switches a table to another mode. Ledger to snapshot or lww first
// recomputes the balances from the ledger (then the ledger is no longer
// written); snapshot and lww switch either way as they are; a table with
// accounts cannot become a ledger table, since its transactions are not
// recorded.
func Convert(ctx context.Context, pool *pgxpool.Pool, t Tables, to Mode) (from Mode, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, schemaLockSQL, t.Key()); err != nil {
			return err
		}
		var recorded string
		if err := tx.QueryRow(ctx, t.tableModeSQL(), t.Key()).Scan(&recorded); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("table %s has no recorded mode: run a batch first", t.Key())
			}
			return err
		}
		from = Mode(recorded)
		switch {
		case from == to:
			return nil
		case to == ModeLedger:
			var n int64
			if err := tx.QueryRow(ctx, t.countAccountsSQL()).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("%w: table %s has %d accounts but no ledger of their transactions: it cannot become a ledger table", ErrModeMismatch, t.Key(), n)
			}
			if _, err := tx.Exec(ctx, t.ledgerSQL()); err != nil {
				return err
			}
		case from == ModeLedger:
			var changed, removed int64
			if err := recompute(ctx, tx, t, &changed, &removed); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, t.updateTableModeSQL(), t.Key(), string(to))
		return err
	})
	return from, err
}
