package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The verifier's own reads of the tables the sinks write. It shares no code
// with the sinks: only the table layout, which the README documents.

// tables names the target's tables. Batches, rejected rows and the mode
// registry live in the same schema as the accounts table.
type tables struct {
	key      string // the accounts table as the batch registry records it
	accounts pgx.Identifier
}

func newTables(name string) (tables, error) {
	if name == "" {
		name = DefaultTable
	}
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return tables{}, fmt.Errorf("table %q: want table or schema.table", name)
	}
	for _, p := range parts {
		if p == "" {
			return tables{}, fmt.Errorf("table %q: empty name part", name)
		}
	}
	return tables{key: name, accounts: pgx.Identifier(parts)}, nil
}

func (t tables) sibling(name string) pgx.Identifier {
	id := t.accounts
	return append(id[:len(id)-1:len(id)-1], name)
}

// ledger names the ledger of a ledger-mode table: "ledger" beside the
// default accounts table, otherwise the accounts table's name + "_ledger".
func (t tables) ledger() pgx.Identifier {
	name := t.accounts[len(t.accounts)-1]
	if name == DefaultTable {
		return t.sibling("ledger")
	}
	return t.sibling(name + "_ledger")
}

func (t tables) exists(ctx context.Context, conn *pgx.Conn, id pgx.Identifier) (bool, error) {
	var ok bool
	err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, id.Sanitize()).Scan(&ok)
	return ok, err
}

// mode returns the table's recorded mode: "" when no mode is recorded (the
// tables of a version before modes existed are snapshot tables).
func (t tables) mode(ctx context.Context, conn *pgx.Conn) (string, error) {
	reg := t.sibling("balancebeam_tables")
	ok, err := t.exists(ctx, conn, reg)
	if err != nil || !ok {
		return "", err
	}
	var m string
	err = conn.QueryRow(ctx, `SELECT mode FROM `+reg.Sanitize()+` WHERE table_name = $1`, t.key).Scan(&m)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return m, err
}

// batch is a registered batch of the target.
type batch struct {
	id       int64
	status   string
	files    []FileRef
	pinnedAt time.Time
	counts   *recordedCounts
}

// recordedCounts are the counts a committed run recorded (the run report's
// JSON); nil fields were not recorded.
type recordedCounts struct {
	RowsRead   *int64 `json:"rows_read"`
	Applied    *int64 `json:"rows_applied"`
	Duplicates *int64 `json:"duplicates_collapsed"`
	Rejected   *int64 `json:"rows_rejected"`
}

// batches returns the target's batches by id.
func (t tables) batches(ctx context.Context, conn *pgx.Conn) (map[int64]*batch, error) {
	rows, err := conn.Query(ctx, `SELECT batch_id, status, files::text, pinned_at, counts::text FROM `+
		t.sibling("batches").Sanitize()+` WHERE target_table = $1 ORDER BY batch_id`, t.key)
	if err != nil {
		return nil, fmt.Errorf("read batches: %w", err)
	}
	defer rows.Close()
	out := map[int64]*batch{}
	for rows.Next() {
		var b batch
		var files string
		var counts *string
		if err := rows.Scan(&b.id, &b.status, &files, &b.pinnedAt, &counts); err != nil {
			return nil, fmt.Errorf("read batches: %w", err)
		}
		if err := json.Unmarshal([]byte(files), &b.files); err != nil {
			return nil, fmt.Errorf("batch %d: files: %w", b.id, err)
		}
		if counts != nil {
			b.counts = &recordedCounts{}
			if err := json.Unmarshal([]byte(*counts), b.counts); err != nil {
				return nil, fmt.Errorf("batch %d: counts: %w", b.id, err)
			}
		}
		out[b.id] = &b
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read batches: %w", err)
	}
	return out, nil
}

// writers returns the batch ids the accounts table's rows name, with how
// many rows each wrote.
func (t tables) writers(ctx context.Context, conn *pgx.Conn) (map[int64]int64, error) {
	rows, err := conn.Query(ctx, `SELECT batch_id, count(*) FROM `+t.accounts.Sanitize()+` GROUP BY batch_id`)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", t.key, err)
	}
	defer rows.Close()
	out := map[int64]int64{}
	for rows.Next() {
		var id, n int64
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, rows.Err()
}

// storedRejects returns a batch's rejected rows: (file, line) -> reason.
func (t tables) storedRejects(ctx context.Context, conn *pgx.Conn, id int64) (map[rowKey]string, error) {
	rows, err := conn.Query(ctx, `SELECT source_file, line_number, reason FROM `+t.sibling("rejected_rows").Sanitize()+
		` WHERE batch_id = $1`, id)
	if err != nil {
		return nil, fmt.Errorf("read rejected rows of batch %d: %w", id, err)
	}
	defer rows.Close()
	out := map[rowKey]string{}
	for rows.Next() {
		var k rowKey
		var reason string
		if err := rows.Scan(&k.File, &k.Line, &reason); err != nil {
			return nil, err
		}
		out[k] = reason
	}
	return out, rows.Err()
}

// Row is an accounts row as the verifier reads it.
type Row struct {
	Account string
	// Balance is the balance as PostgreSQL prints it.
	Balance     string
	BatchID     int64
	LastUpdated time.Time
	TxnCount    int64
	LastTxnAt   time.Time
}

// eachRow streams the accounts table in account order.
func (t tables) eachRow(ctx context.Context, conn *pgx.Conn, fn func(Row) error) error {
	rows, err := conn.Query(ctx, `SELECT account_id, balance::text, batch_id, last_updated, txn_count, last_txn_at FROM `+
		t.accounts.Sanitize()+` ORDER BY account_id COLLATE "C"`)
	if err != nil {
		return fmt.Errorf("read %s: %w", t.key, err)
	}
	defer rows.Close()
	var r Row
	for rows.Next() {
		if err := rows.Scan(&r.Account, &r.Balance, &r.BatchID, &r.LastUpdated, &r.TxnCount, &r.LastTxnAt); err != nil {
			return fmt.Errorf("read %s: %w", t.key, err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read %s: %w", t.key, err)
	}
	return nil
}

// ledgerRow is one transaction of a ledger table.
type ledgerRow struct {
	ID      string
	Account string
	Amount  string
	At      time.Time
	BatchID int64
}

// eachLedgerRow streams a ledger table in transaction id order.
func (t tables) eachLedgerRow(ctx context.Context, conn *pgx.Conn, fn func(ledgerRow) error) error {
	rows, err := conn.Query(ctx, `SELECT transaction_id, account_id, amount::text, txn_at, batch_id FROM `+
		t.ledger().Sanitize()+` ORDER BY transaction_id COLLATE "C"`)
	if err != nil {
		return fmt.Errorf("read the ledger: %w", err)
	}
	defer rows.Close()
	var r ledgerRow
	for rows.Next() {
		if err := rows.Scan(&r.ID, &r.Account, &r.Amount, &r.At, &r.BatchID); err != nil {
			return fmt.Errorf("read the ledger: %w", err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the ledger: %w", err)
	}
	return nil
}
