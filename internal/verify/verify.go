// Package verify checks an accounts table against its inputs by a path of
// its own: it reads the files each batch registered (checking their sizes
// and SHA-256), applies the batch rules itself (txnfile's row parser, its
// own dedup and sums, no Beam) and compares the result with the table, read
// with its own SQL. It shares nothing with the pipeline or the sinks but the
// row parser, so a bug there does not hide itself here.
package verify

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

// DefaultTable is the accounts table's default name.
const DefaultTable = "accounts"

// DefaultMaxDiffs is how many differences a report lists by default.
const DefaultMaxDiffs = 20

// The modes the verifier knows, as the table registry records them.
const (
	ModeSnapshot = "snapshot"
	ModeLedger   = "ledger"
	// ModeLWW tables are checked as snapshot tables: each row against the
	// batch that wrote it, and no row older than the newest committed batch
	// that has the account. Last-write-wins breaks exactly that when
	// batches run out of order, and verify reports it (stale).
	ModeLWW = "lww"
)

// Options say what to verify.
type Options struct {
	// DSN is the database.
	DSN string
	// Table is the accounts table, optionally schema.table.
	Table string
	// BatchID, when not zero, verifies that batch only: every account its
	// files give must hold its values, unless a newer batch wrote it since.
	// When zero, the table's current state is verified (see Run).
	BatchID int64
	// MaxDiffs is how many differences the report lists (default 20); the
	// counts are always complete.
	MaxDiffs int
	// Open reads an input file; nil reads local files.
	Open Opener
	// History (snapshot and lww tables) compares every account with all the
	// distinct transactions of every committed batch's files, as a ledger
	// would hold them, instead of with the batch that wrote it: it finds
	// balances that a batch without the account's whole history (a late
	// file run alone) left short.
	History bool
}

// Kind classifies an account that is not as its inputs say.
type Kind string

// The kinds of difference. Each differing account has exactly one.
const (
	// Lost: transactions are missing: the account is not in the table
	// though a committed batch's files give it a balance, or its row counts
	// fewer transactions than its inputs have for it.
	Lost Kind = "lost"
	// Doubled: the row counts transactions more than once: its txn_count is
	// larger than the number of distinct transactions its batch has for the
	// account, or its balance is a whole multiple (2x or more) of the
	// expected non-zero balance.
	Doubled Kind = "doubled"
	// Wrong: any other difference in balance, txn_count, last_txn_at,
	// last_updated or (ledger mode) batch_id.
	Wrong Kind = "wrong"
	// Stale: the row was written by an older batch than the newest committed
	// batch whose files have the account: that batch should have replaced it.
	Stale Kind = "stale"
	// Unexpected: no batch accounts for the row: the batch it names is not
	// registered for this table, or that batch's files have no valid
	// transaction for the account.
	Unexpected Kind = "unexpected"
	// Uncommitted: the row holds the right values of a batch that is not
	// committed (its run failed part-way or is still running): the table
	// mixes that batch with older ones until it is run again.
	Uncommitted Kind = "uncommitted"
	// Unverified: the row's batch cannot be recomputed, because one of its
	// files is gone or has changed since it was registered.
	Unverified Kind = "unverified"
)

// Kinds lists the kinds in the order reports show them.
func Kinds() []Kind { return []Kind{Lost, Doubled, Wrong, Stale, Unexpected, Uncommitted, Unverified} }

// Values are an account's values, in the table or as recomputed.
type Values struct {
	Balance     string    `json:"balance"`
	BatchID     int64     `json:"batch_id"`
	TxnCount    int64     `json:"txn_count"`
	LastTxnAt   time.Time `json:"last_txn_at"`
	LastUpdated time.Time `json:"last_updated"`
}

// Diff is one account that differs.
type Diff struct {
	Account string `json:"account_id"`
	Kind    Kind   `json:"kind"`
	// Table is the row in the table; nil when the account is lost.
	Table *Values `json:"table,omitempty"`
	// Expected is what the files say; nil when no batch accounts for the row
	// or it cannot be recomputed.
	Expected *Values `json:"expected,omitempty"`
	// Detail says which values differ, or why.
	Detail string `json:"detail"`
}

// BatchCheck is what the verifier found for one batch it recomputed.
type BatchCheck struct {
	BatchID int64  `json:"batch_id"`
	Status  string `json:"status"`
	Files   int    `json:"files"`
	// FileProblems lists files that are gone or changed: the batch cannot
	// be recomputed.
	FileProblems []FileProblem `json:"file_problems,omitempty"`
	// The recomputed counts (when the files could be read).
	RowsRead   int64 `json:"rows_read"`
	Applied    int64 `json:"rows_applied"`
	Duplicates int64 `json:"duplicates_collapsed"`
	Rejected   int64 `json:"rows_rejected"`
	Accounts   int64 `json:"accounts"`
	// RowsInTable is how many accounts rows name this batch.
	RowsInTable int64 `json:"rows_in_table"`
	// RejectsStored is how many rejected rows the batch has in
	// rejected_rows; RejectsMissing and RejectsExtra count the rows the files
	// reject that are not stored (or stored with another reason), and the
	// stored rows the files do not reject. Checked for committed batches.
	RejectsStored  int64 `json:"rejects_stored"`
	RejectsMissing int64 `json:"rejects_missing"`
	RejectsExtra   int64 `json:"rejects_extra"`
	// Problems are differences found at the batch level: recorded counts
	// that disagree with the recomputation, rejected rows not stored.
	Problems []string `json:"problems,omitempty"`

	exp *Expected
	b   *batch
}

// Report is the outcome of a verification.
type Report struct {
	Table string `json:"table"`
	Mode  string `json:"mode"`
	// BatchID is the batch verified alone, or 0 for the table's state.
	BatchID int64 `json:"batch_id,omitempty"`
	// History is set when the accounts were compared with every committed
	// batch's transactions (Options.History).
	History bool `json:"history,omitempty"`
	// NewestCommitted is the newest committed batch of the table (0: none).
	NewestCommitted int64        `json:"newest_committed"`
	Batches         []BatchCheck `json:"batches"`
	// Accounts is how many accounts were compared (rows in the table, and
	// accounts the files give that the table lacks).
	Accounts int64 `json:"accounts"`
	// Equal is how many of them are as their inputs say.
	Equal int64 `json:"equal"`
	// Superseded (with BatchID only) counts accounts of the batch that a
	// newer batch has written since: not a difference.
	Superseded int64 `json:"superseded,omitempty"`
	// Counts has every kind of difference, zero or not.
	Counts map[Kind]int64 `json:"counts"`
	// Diffs are the first MaxDiffs differences, in account order.
	Diffs []Diff `json:"diffs"`
	// Ledger is the check of the ledger against the files (ledger mode).
	Ledger *LedgerCheck `json:"ledger,omitempty"`
	// Notes are facts worth knowing that are not differences.
	Notes []string `json:"notes,omitempty"`
	// Result is Outcome as text: equal, different or unverified.
	Result string `json:"result"`
}

// Outcome sums a report up.
type Outcome int

// The outcomes, from best to worst.
const (
	// Equal: every account is as its inputs say.
	Equal Outcome = iota
	// Unverifiable: no difference was found, but some accounts (or batch
	// checks) could not be made because input files are gone or changed.
	Unverifiable
	// Different: at least one difference.
	Different
)

func (o Outcome) String() string {
	switch o {
	case Equal:
		return "equal"
	case Unverifiable:
		return "unverified"
	default:
		return "different"
	}
}

// Outcome returns the report's outcome.
func (r *Report) Outcome() Outcome {
	for _, k := range Kinds() {
		if k != Unverified && r.Counts[k] > 0 {
			return Different
		}
	}
	for _, b := range r.Batches {
		if len(b.Problems) > 0 {
			return Different
		}
	}
	if r.Ledger != nil && r.Ledger.differences() > 0 {
		return Different
	}
	if r.Counts[Unverified] > 0 || r.Ledger != nil && r.Ledger.Unverified > 0 {
		return Unverifiable
	}
	for _, b := range r.Batches {
		if len(b.FileProblems) > 0 {
			return Unverifiable
		}
	}
	return Equal
}

// Summary is the outcome in one line: "equal", or the counts of what
// differs (for callers such as the chaos matrix that keep one line a table).
func (r *Report) Summary() string {
	o := r.Outcome()
	if o == Equal {
		return o.String()
	}
	var parts []string
	for _, k := range Kinds() {
		if n := r.Counts[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, k))
		}
	}
	if l := r.Ledger; l != nil && l.differences() > 0 {
		parts = append(parts, fmt.Sprintf("ledger: %d lost, %d unexpected, %d wrong transactions", l.Lost, l.Unexpected, l.Wrong))
	}
	for _, b := range r.Batches {
		if len(b.Problems) > 0 {
			parts = append(parts, fmt.Sprintf("batch %d: %s", b.BatchID, strings.Join(b.Problems, "; ")))
		}
		if len(b.FileProblems) > 0 {
			parts = append(parts, fmt.Sprintf("batch %d: %d files gone or changed", b.BatchID, len(b.FileProblems)))
		}
	}
	return o.String() + ": " + strings.Join(parts, ", ")
}

// Differences is the number of accounts that differ (unverified ones not
// counted).
func (r *Report) Differences() int64 {
	var n int64
	for _, k := range Kinds() {
		if k != Unverified {
			n += r.Counts[k]
		}
	}
	return n
}

// Run verifies the table.
//
// Without BatchID it checks the table's current state: every row must hold
// what the files of the batch named in its batch_id give for the account
// (balance, txn_count, last_txn_at, and last_updated = that batch's pinned
// time); every account that the files of the newest committed batch give,
// or of any other committed batch it recomputes, must be in the table,
// written by that batch or a newer one. With BatchID it checks that one
// batch's accounts the same way.
func Run(ctx context.Context, opts Options) (*Report, error) {
	t, err := newTables(opts.Table)
	if err != nil {
		return nil, err
	}
	if opts.MaxDiffs <= 0 {
		opts.MaxDiffs = DefaultMaxDiffs
	}
	conn, err := pgx.Connect(ctx, opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// One snapshot of the database for every read.
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	c := tx.Conn()

	for _, id := range []pgx.Identifier{t.accounts, t.sibling("batches"), t.sibling("rejected_rows")} {
		ok, err := t.exists(ctx, c, id)
		if err != nil {
			return nil, fmt.Errorf("look up %s: %w", id.Sanitize(), err)
		}
		if !ok {
			return nil, fmt.Errorf("table %s does not exist: nothing has been run against %s yet", id.Sanitize(), t.key)
		}
	}
	mode, err := t.mode(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("look up the mode of %s: %w", t.key, err)
	}
	if mode == "" {
		mode = ModeSnapshot
	}
	rep := &Report{Table: t.key, Mode: mode, BatchID: opts.BatchID, History: opts.History, Counts: map[Kind]int64{}}
	for _, k := range Kinds() {
		rep.Counts[k] = 0
	}
	v := &verifier{opts: opts, t: t, conn: c, rep: rep}
	if opts.History && opts.BatchID != 0 {
		return nil, fmt.Errorf("history and a batch id do not go together: the history is every committed batch")
	}
	switch {
	case opts.History && mode != ModeLedger:
		err = v.history(ctx)
	case mode == ModeSnapshot || mode == ModeLWW:
		err = v.snapshot(ctx)
	case mode == ModeLedger:
		err = v.ledger(ctx) // a ledger is checked against the history always
	default:
		// The seam for the other modes: each gets a method of its own.
		err = fmt.Errorf("table %s is in %s mode, which verify does not know", t.key, mode)
	}
	if err != nil {
		return nil, err
	}
	rep.Result = rep.Outcome().String()
	return rep, nil
}

// verifier holds one verification's state.
type verifier struct {
	opts    Options
	t       tables
	conn    *pgx.Conn
	rep     *Report
	batches map[int64]*batch
	checks  map[int64]*BatchCheck
	diffs   []Diff // differences found while streaming, at most MaxDiffs
}

// load reads the batches and the table's writers, and recomputes the
// batches in ids (sorted) from their files.
func (v *verifier) recomputeBatches(ctx context.Context, ids []int64, rowsPer map[int64]int64, keepTxns bool) error {
	v.checks = map[int64]*BatchCheck{}
	for _, id := range ids {
		b := v.batches[id]
		bc := &BatchCheck{BatchID: id, Status: b.status, Files: len(b.files), RowsInTable: rowsPer[id], b: b}
		exp, problems, err := recompute(b.files, v.opts.Open, keepTxns)
		if err != nil {
			return fmt.Errorf("batch %d: %w", id, err)
		}
		bc.FileProblems = problems
		if exp != nil {
			bc.exp = exp
			bc.RowsRead, bc.Applied, bc.Duplicates, bc.Rejected = exp.RowsRead, exp.Applied, exp.Duplicates, exp.Rejected
			bc.Accounts = int64(len(exp.Accounts))
		}
		v.checks[id] = bc
	}
	return nil
}

// checkBatchRecords compares a committed batch's recorded counts and stored
// rejected rows with the recomputation.
func (v *verifier) checkBatchRecords(ctx context.Context, bc *BatchCheck, compareApplied bool) error {
	if bc.exp == nil || bc.Status != "committed" {
		return nil
	}
	if c := bc.b.counts; c != nil {
		check := func(name string, rec *int64, got int64) {
			if rec != nil && *rec != got {
				bc.Problems = append(bc.Problems, fmt.Sprintf("the run recorded %s %d, the files give %d", name, *rec, got))
			}
		}
		check("rows read", c.RowsRead, bc.RowsRead)
		if compareApplied {
			check("rows applied", c.Applied, bc.Applied)
			check("duplicates collapsed", c.Duplicates, bc.Duplicates)
			check("rows rejected", c.Rejected, bc.Rejected)
		}
	}
	stored, err := v.t.storedRejects(ctx, v.conn, bc.BatchID)
	if err != nil {
		return err
	}
	bc.RejectsStored = int64(len(stored))
	for k, reason := range bc.exp.Rejects {
		if stored[k] != reason {
			bc.RejectsMissing++
		}
	}
	for k, reason := range stored {
		if want, ok := bc.exp.Rejects[k]; !ok || want != reason {
			if !compareApplied && reason == txnfile.ReasonConflictAcrossBatches.Code() {
				continue // a ledger's own rejections, checked against the ledger
			}
			bc.RejectsExtra++
		}
	}
	if bc.RejectsMissing > 0 {
		bc.Problems = append(bc.Problems, fmt.Sprintf("%d rows the files reject are not in rejected_rows with their reason", bc.RejectsMissing))
	}
	if bc.RejectsExtra > 0 {
		bc.Problems = append(bc.Problems, fmt.Sprintf("%d rows in rejected_rows are not rejected by the files (or for another reason)", bc.RejectsExtra))
	}
	return nil
}

// snapshot verifies a snapshot-mode table.
func (v *verifier) snapshot(ctx context.Context) error {
	var err error
	if v.batches, err = v.t.batches(ctx, v.conn); err != nil {
		return err
	}
	rowsPer, err := v.t.writers(ctx, v.conn)
	if err != nil {
		return err
	}
	var newest int64
	for id, b := range v.batches {
		if b.status == "committed" && id > newest {
			newest = id
		}
	}
	v.rep.NewestCommitted = newest

	// The batches to recompute.
	want := map[int64]bool{}
	if id := v.opts.BatchID; id != 0 {
		if v.batches[id] == nil {
			return fmt.Errorf("batch %d is not a batch of table %s", id, v.t.key)
		}
		want[id] = true
	} else {
		for id := range rowsPer {
			if v.batches[id] != nil {
				want[id] = true
			}
		}
		if newest != 0 {
			want[newest] = true
		}
	}
	ids := sortedKeys(want)
	if err := v.recomputeBatches(ctx, ids, rowsPer, false); err != nil {
		return err
	}
	for _, id := range ids {
		if err := v.checkBatchRecords(ctx, v.checks[id], true); err != nil {
			return err
		}
	}
	for id, b := range v.batches {
		if id > newest && b.status != "committed" && rowsPer[id] == 0 {
			v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("batch %d is %s and wrote no account", id, b.status))
		}
	}
	slices.Sort(v.rep.Notes)

	// The committed batches that say which accounts must be present, newest
	// first.
	var required []*BatchCheck
	for i := len(ids) - 1; i >= 0; i-- {
		if bc := v.checks[ids[i]]; bc.exp != nil && bc.Status == "committed" {
			required = append(required, bc)
		}
	}
	// requiredBy returns the newest of those whose files have the account.
	requiredBy := func(account string) (*BatchCheck, Sum) {
		for _, bc := range required {
			if s, ok := bc.exp.Accounts[account]; ok {
				return bc, s
			}
		}
		return nil, Sum{}
	}
	seen := map[string]bool{}

	err = v.t.eachRow(ctx, v.conn, func(r Row) error {
		if id := v.opts.BatchID; id != 0 {
			return v.snapshotBatchRow(r, v.checks[id], seen)
		}
		v.rep.Accounts++
		seen[r.Account] = true
		if bc, s := requiredBy(r.Account); bc != nil && r.BatchID < bc.BatchID {
			v.add(Diff{Account: r.Account, Kind: Stale, Table: tableValues(r), Expected: expectedValues(bc, s),
				Detail: fmt.Sprintf("written by batch %d; committed batch %d has the account and did not replace it", r.BatchID, bc.BatchID)})
			return nil
		}
		bc := v.checks[r.BatchID]
		if bc == nil {
			v.add(Diff{Account: r.Account, Kind: Unexpected, Table: tableValues(r),
				Detail: fmt.Sprintf("batch %d is not a registered batch of table %s", r.BatchID, v.t.key)})
			return nil
		}
		v.compare(r, bc)
		return nil
	})
	if err != nil {
		return err
	}

	// Accounts the required batches give that the table lacks.
	var lost []Diff
	if id := v.opts.BatchID; id != 0 {
		if bc := v.checks[id]; bc.exp != nil {
			for account, s := range bc.exp.Accounts {
				if !seen[account] {
					lost = append(lost, Diff{Account: account, Kind: Lost, Expected: expectedValues(bc, s),
						Detail: fmt.Sprintf("batch %d's files give the account; the table does not have it", id)})
				}
			}
		}
	} else {
		for _, bc := range required {
			for account := range bc.exp.Accounts {
				if seen[account] {
					continue
				}
				seen[account] = true // once, for the newest batch that has it
				by, s := requiredBy(account)
				lost = append(lost, Diff{Account: account, Kind: Lost, Expected: expectedValues(by, s),
					Detail: fmt.Sprintf("committed batch %d's files give the account; the table does not have it", by.BatchID)})
			}
		}
	}
	v.rep.Accounts += int64(len(lost))
	v.rep.Counts[Lost] += int64(len(lost))
	slices.SortFunc(lost, func(a, b Diff) int { return cmp.Compare(a.Account, b.Account) })
	v.rep.Diffs = mergeDiffs(v.diffs, lost, v.opts.MaxDiffs)
	for _, id := range ids {
		v.rep.Batches = append(v.rep.Batches, *v.checks[id])
	}
	return nil
}

// snapshotBatchRow handles a row when one batch is verified.
func (v *verifier) snapshotBatchRow(r Row, bc *BatchCheck, seen map[string]bool) error {
	if bc.exp == nil {
		if r.BatchID == bc.BatchID {
			v.rep.Accounts++
			v.add(Diff{Account: r.Account, Kind: Unverified, Table: tableValues(r), Detail: unverifiedDetail(bc)})
		}
		return nil
	}
	s, has := bc.exp.Accounts[r.Account]
	switch {
	case has:
		seen[r.Account] = true
		v.rep.Accounts++
		switch {
		case r.BatchID > bc.BatchID:
			v.rep.Superseded++
		case r.BatchID < bc.BatchID:
			v.add(Diff{Account: r.Account, Kind: Stale, Table: tableValues(r), Expected: expectedValues(bc, s),
				Detail: fmt.Sprintf("written by batch %d; batch %d has the account and did not replace it", r.BatchID, bc.BatchID)})
		default:
			v.compare(r, bc)
		}
	case r.BatchID == bc.BatchID:
		v.rep.Accounts++
		v.compare(r, bc)
	}
	return nil
}

// compare checks a row against the batch that wrote it.
func (v *verifier) compare(r Row, bc *BatchCheck) {
	if bc.exp == nil {
		v.add(Diff{Account: r.Account, Kind: Unverified, Table: tableValues(r), Detail: unverifiedDetail(bc)})
		return
	}
	s, ok := bc.exp.Accounts[r.Account]
	if !ok {
		v.add(Diff{Account: r.Account, Kind: Unexpected, Table: tableValues(r),
			Detail: fmt.Sprintf("batch %d's files have no valid transaction for the account", bc.BatchID)})
		return
	}
	kind, detail := classify(r, s, bc.b.pinnedAt)
	if kind == "" && bc.Status != "committed" {
		kind, detail = Uncommitted, fmt.Sprintf("the values of batch %d, which is %s: run it again", bc.BatchID, bc.Status)
	}
	if kind == "" {
		v.rep.Equal++
		return
	}
	v.add(Diff{Account: r.Account, Kind: kind, Table: tableValues(r), Expected: expectedValues(bc, s), Detail: detail})
}

// classify compares a row with its expected sum: "" when equal. A zero
// pinnedAt leaves last_updated unchecked.
func classify(r Row, s Sum, pinnedAt time.Time) (Kind, string) {
	cents, err := txnfile.ParseCents(r.Balance)
	balanceOK := err == nil && cents == s.Cents
	var diffs []string
	if !balanceOK {
		diffs = append(diffs, "balance")
	}
	if r.TxnCount != s.Count {
		diffs = append(diffs, "txn_count")
	}
	if r.LastTxnAt.UnixMicro() != s.LatestMicros {
		diffs = append(diffs, "last_txn_at")
	}
	if !pinnedAt.IsZero() && r.LastUpdated.UnixMicro() != pinnedAt.UnixMicro() {
		diffs = append(diffs, "last_updated")
	}
	if len(diffs) == 0 {
		return "", ""
	}
	detail := strings.Join(diffs, ", ") + " differ"
	if len(diffs) == 1 {
		detail = diffs[0] + " differs"
	}
	if r.TxnCount > s.Count {
		return Doubled, fmt.Sprintf("%s: %d transactions counted, the files have %d distinct", detail, r.TxnCount, s.Count)
	}
	if err == nil && s.Cents != 0 && cents != s.Cents && cents%s.Cents == 0 && cents/s.Cents >= 2 {
		return Doubled, fmt.Sprintf("%s: the balance is %d times the expected one", detail, cents/s.Cents)
	}
	if r.TxnCount < s.Count {
		return Lost, fmt.Sprintf("%s: %d transactions counted, the files have %d", detail, r.TxnCount, s.Count)
	}
	return Wrong, detail
}

func unverifiedDetail(bc *BatchCheck) string {
	p := bc.FileProblems[0]
	return fmt.Sprintf("batch %d cannot be recomputed: %s: %s", bc.BatchID, p.Path, p.Problem)
}

// add counts a difference and keeps it if it is among the first ones.
func (v *verifier) add(d Diff) {
	v.rep.Counts[d.Kind]++
	if len(v.diffs) < v.opts.MaxDiffs {
		v.diffs = append(v.diffs, d)
	}
}

// mergeDiffs merges two lists sorted by account and keeps the first n.
func mergeDiffs(a, b []Diff, n int) []Diff {
	out := make([]Diff, 0, min(n, len(a)+len(b)))
	for len(out) < n && (len(a) > 0 || len(b) > 0) {
		if len(b) == 0 || len(a) > 0 && a[0].Account <= b[0].Account {
			out = append(out, a[0])
			a = a[1:]
		} else {
			out = append(out, b[0])
			b = b[1:]
		}
	}
	return out
}

func tableValues(r Row) *Values {
	return &Values{Balance: r.Balance, BatchID: r.BatchID, TxnCount: r.TxnCount, LastTxnAt: r.LastTxnAt.UTC(), LastUpdated: r.LastUpdated.UTC()}
}

func expectedValues(bc *BatchCheck, s Sum) *Values {
	return &Values{Balance: txnfile.FormatCents(s.Cents), BatchID: bc.BatchID, TxnCount: s.Count,
		LastTxnAt: time.UnixMicro(s.LatestMicros).UTC(), LastUpdated: bc.b.pinnedAt.UTC()}
}

func sortedKeys[V any](m map[int64]V) []int64 {
	out := make([]int64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
