package sinks

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Tables names the tables of one target. Batches and rejected rows live in
// the same schema as the accounts table.
type Tables struct {
	// Accounts is the accounts table, optionally schema-qualified
	// ("reporting.accounts").
	Accounts string
}

// DefaultAccountsTable is the accounts table's default name.
const DefaultAccountsTable = "accounts"

func (t Tables) accountsName() string {
	if t.Accounts == "" {
		return DefaultAccountsTable
	}
	return t.Accounts
}

// ident splits a possibly qualified name into a pgx.Identifier.
func ident(name string) pgx.Identifier {
	return pgx.Identifier(strings.Split(name, "."))
}

// sibling names a table in the same schema as the accounts table.
func (t Tables) sibling(name string) pgx.Identifier {
	id := ident(t.accountsName())
	return append(id[:len(id)-1:len(id)-1], name)
}

// Validate checks that the table name is one a user meant.
func (t Tables) Validate() error {
	parts := ident(t.accountsName())
	if len(parts) > 2 {
		return fmt.Errorf("table %q: want table or schema.table", t.Accounts)
	}
	for _, p := range parts {
		if p == "" {
			return fmt.Errorf("table %q: empty name part", t.Accounts)
		}
	}
	return nil
}

// Key is the accounts table's name as recorded in the batch registry.
func (t Tables) Key() string { return t.accountsName() }

func (t Tables) accounts() string { return ident(t.accountsName()).Sanitize() }
func (t Tables) batches() string  { return t.sibling("batches").Sanitize() }
func (t Tables) batchSeq() string { return t.sibling("batches_batch_id_seq").Sanitize() }
func (t Tables) rejected() string { return t.sibling("rejected_rows").Sanitize() }
func (t Tables) shardMarks() string {
	return t.sibling("batch_shards").Sanitize()
}

// Every SQL statement of the sinks is built here, from the table names.
// Values are always parameters.

func (t Tables) schemaSQL() []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + t.batches() + ` (
	batch_id        bigint PRIMARY KEY,
	target_table    text NOT NULL,
	manifest_sha256 text NOT NULL,
	files           jsonb NOT NULL,
	pinned_at       timestamptz NOT NULL,
	status          text NOT NULL CHECK (status IN ('running', 'committed', 'failed')),
	runs            integer NOT NULL DEFAULT 1,
	counts          jsonb,
	error           text,
	UNIQUE (target_table, manifest_sha256)
)`,
		`CREATE SEQUENCE IF NOT EXISTS ` + t.batchSeq(),
		`CREATE TABLE IF NOT EXISTS ` + t.accounts() + ` (
	account_id   text PRIMARY KEY,
	balance      numeric(20,2) NOT NULL,
	batch_id     bigint NOT NULL,
	last_updated timestamptz NOT NULL,
	txn_count    bigint NOT NULL,
	last_txn_at  timestamptz NOT NULL
)`,
		`CREATE TABLE IF NOT EXISTS ` + t.rejected() + ` (
	batch_id    bigint NOT NULL,
	source_file text NOT NULL,
	line_number bigint NOT NULL,
	reason      text NOT NULL,
	detail      text NOT NULL,
	raw_line    text NOT NULL,
	PRIMARY KEY (batch_id, source_file, line_number)
)`,
		// One row per shard per run, written in the transaction that writes
		// the shard's last rows: the proof that the run wrote the whole shard,
		// with the counts of the dedup buckets that made it up.
		`CREATE TABLE IF NOT EXISTS ` + t.shardMarks() + ` (
	batch_id   bigint NOT NULL,
	run        integer NOT NULL,
	shard      integer NOT NULL,
	buckets    integer NOT NULL,
	accounts   bigint NOT NULL,
	upserted   bigint NOT NULL,
	stale      bigint NOT NULL,
	rows_read  bigint NOT NULL,
	applied    bigint NOT NULL,
	duplicates bigint NOT NULL,
	rejected   bigint NOT NULL,
	PRIMARY KEY (batch_id, run, shard)
)`,
	}
}

// schemaLockSQL serialises schema creation and batch registration for one
// target: concurrent CREATE TABLE IF NOT EXISTS can otherwise collide.
const schemaLockSQL = `SELECT pg_advisory_xact_lock(hashtextextended('balancebeam:' || $1, 0))`

func (t Tables) batchByManifestSQL() string {
	return `SELECT batch_id, manifest_sha256, pinned_at, status FROM ` + t.batches() +
		` WHERE target_table = $1 AND manifest_sha256 = $2`
}

func (t Tables) batchByIDSQL() string {
	return `SELECT target_table, manifest_sha256, pinned_at, status, files FROM ` + t.batches() + ` WHERE batch_id = $1`
}

// nextBatchIDSQL takes the sequence's name as $1.
const nextBatchIDSQL = `SELECT nextval($1::regclass)`

// bumpBatchSeqSQL keeps the sequence ($1) ahead of a forced batch id ($2).
func (t Tables) bumpBatchSeqSQL() string {
	return `SELECT setval($1::regclass, GREATEST($2::bigint, (SELECT last_value FROM ` + t.batchSeq() + `)))`
}

func (t Tables) insertBatchSQL() string {
	return `INSERT INTO ` + t.batches() + ` (batch_id, target_table, manifest_sha256, files, pinned_at, status)
VALUES ($1, $2, $3, $4, $5, 'running')`
}

func (t Tables) rerunBatchSQL() string {
	return `UPDATE ` + t.batches() + ` SET runs = runs + 1,
	status = CASE WHEN status = 'committed' THEN status ELSE 'running' END
WHERE batch_id = $1 RETURNING runs`
}

func (t Tables) commitBatchSQL() string {
	return `UPDATE ` + t.batches() + ` SET status = 'committed', counts = $2, error = NULL WHERE batch_id = $1`
}

func (t Tables) failBatchSQL() string {
	return `UPDATE ` + t.batches() + ` SET status = 'failed', error = $2 WHERE batch_id = $1 AND status <> 'committed'`
}

func (t Tables) rejectCountsSQL() string {
	return `SELECT reason, count(*) FROM ` + t.rejected() + ` WHERE batch_id = $1 GROUP BY reason ORDER BY reason`
}

// Staging tables are per connection and emptied at every commit, so each
// flush sees only its own rows.
const (
	stageBalances = "bb_stage_balances"
	stageRejects  = "bb_stage_rejects"
)

var stageBalanceColumns = []string{"shard", "account_id", "cents", "txn_count", "last_txn_at"}

const createStageBalancesSQL = `CREATE TEMP TABLE IF NOT EXISTS ` + stageBalances + ` (
	shard       integer NOT NULL,
	account_id  text NOT NULL,
	cents       bigint NOT NULL,
	txn_count   bigint NOT NULL,
	last_txn_at timestamptz NOT NULL
) ON COMMIT DELETE ROWS`

// mergeGuardedSQL is the snapshot merge: absolute balances, applied only by
// a newer batch than the one that last wrote the account. Rerunning a batch,
// or running an older one after a newer one, changes nothing. Rows are taken
// in account order so that concurrent writers lock rows in the same order.
// It returns, per shard, the rows staged and the rows written.
func (t Tables) mergeGuardedSQL() string {
	return `WITH up AS (
	INSERT INTO ` + t.accounts() + ` AS a (account_id, balance, batch_id, last_updated, txn_count, last_txn_at)
	SELECT account_id, cents * 0.01, $1, $2, txn_count, last_txn_at FROM ` + stageBalances + ` ORDER BY account_id
	ON CONFLICT (account_id) DO UPDATE
	SET balance = excluded.balance, batch_id = excluded.batch_id, last_updated = excluded.last_updated,
	    txn_count = excluded.txn_count, last_txn_at = excluded.last_txn_at
	WHERE excluded.batch_id > a.batch_id
	RETURNING account_id
) SELECT s.shard, count(*), count(up.account_id) FROM ` + stageBalances + ` s LEFT JOIN up USING (account_id) GROUP BY s.shard`
}

func (t Tables) insertShardMarkSQL() string {
	return `INSERT INTO ` + t.shardMarks() + ` (batch_id, run, shard, buckets, accounts, upserted, stale, rows_read, applied, duplicates, rejected)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (batch_id, run, shard) DO UPDATE SET buckets = excluded.buckets, accounts = excluded.accounts,
	upserted = excluded.upserted, stale = excluded.stale, rows_read = excluded.rows_read, applied = excluded.applied,
	duplicates = excluded.duplicates, rejected = excluded.rejected`
}

func (t Tables) shardMarksSQL() string {
	return `SELECT shard, buckets, accounts, upserted, stale, rows_read, applied, duplicates, rejected FROM ` + t.shardMarks() +
		` WHERE batch_id = $1 AND run = $2 ORDER BY shard`
}

var stageRejectColumns = []string{"source_file", "line_number", "reason", "detail", "raw_line"}

const createStageRejectsSQL = `CREATE TEMP TABLE IF NOT EXISTS ` + stageRejects + ` (
	source_file text NOT NULL,
	line_number bigint NOT NULL,
	reason      text NOT NULL,
	detail      text NOT NULL,
	raw_line    text NOT NULL
) ON COMMIT DELETE ROWS`

func (t Tables) insertRejectsSQL() string {
	return `INSERT INTO ` + t.rejected() + ` (batch_id, source_file, line_number, reason, detail, raw_line)
SELECT $1, source_file, line_number, reason, detail, raw_line FROM ` + stageRejects + `
ORDER BY source_file, line_number
ON CONFLICT (batch_id, source_file, line_number) DO NOTHING`
}
