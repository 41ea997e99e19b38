// Package txgen generates transaction files for benchmarks and tests: a
// deterministic function of a seed, written as a stream, so that ten million
// rows take no more memory than ten thousand.
//
// A batch is Rows rows spread over Files files, in order. Each row is one of
//
//   - a new transaction (a new transaction_id),
//   - an exact copy of an earlier transaction (same id, account, amount and
//     time: collapsed by dedup),
//   - a conflicting copy of an earlier transaction (same id, another amount:
//     every copy of that id is rejected as conflicting_duplicate),
//   - a bad row (rejected at parse: bad amount, bad timestamp, wrong field
//     count or empty id).
//
// A late file, written apart from the batch, holds copies of the batch's
// transactions and new ones, like a file that arrives a day late and repeats
// part of what came before.
//
// Every transaction's account, amount and time are a pure function of the
// seed and the transaction's number, so a copy is regenerated rather than
// remembered. The only state that grows with the input is the set of
// transactions chosen to conflict (ConflictShare of the rows) and the
// per-account totals (Accounts entries) from which the generator also writes
// the balances a correct run must produce.
package txgen

import (
	"bufio"
	"container/heap"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

// Config is what to generate. The zero value of a share means none.
type Config struct {
	// Seed selects the data: the same Config gives the same bytes.
	Seed uint64
	// Rows is the number of data rows of the batch's files (headers not
	// counted).
	Rows int64
	// Accounts is the number of accounts transactions are spread over,
	// uniformly.
	Accounts int
	// Files is the number of batch files the rows are split over, in order.
	Files int
	// DupShare is the share of rows that are exact copies of an earlier
	// transaction.
	DupShare float64
	// ConflictShare is the share of rows that are conflicting copies of an
	// earlier transaction.
	ConflictShare float64
	// BadShare is the share of rows rejected at parse.
	BadShare float64
	// LateRows is the number of rows of the late file (0: no late file).
	LateRows int64
	// LateOverlap is the share of the late file's rows that are exact
	// copies of the batch's transactions; the rest are new.
	LateOverlap float64
	// Start is the day transactions fall in (default 2026-12-01 UTC).
	Start time.Time
}

// Validate checks a Config.
func (c Config) Validate() error {
	switch {
	case c.Rows < 0 || c.LateRows < 0:
		return errors.New("rows must not be negative")
	case c.Accounts < 1:
		return errors.New("accounts must be at least 1")
	case c.Files < 1:
		return errors.New("files must be at least 1")
	case c.Rows < int64(c.Files):
		return fmt.Errorf("%d rows cannot fill %d files", c.Rows, c.Files)
	}
	for _, s := range []struct {
		name string
		v    float64
	}{{"dup", c.DupShare}, {"conflict", c.ConflictShare}, {"bad", c.BadShare}, {"late overlap", c.LateOverlap}} {
		if s.v < 0 || s.v > 1 || math.IsNaN(s.v) {
			return fmt.Errorf("%s share %v is not in [0, 1]", s.name, s.v)
		}
	}
	if c.DupShare+c.ConflictShare+c.BadShare >= 0.9 {
		return errors.New("dup, conflict and bad shares leave too few new transactions")
	}
	return nil
}

// Counts are what a correct run over some files must report.
type Counts struct {
	// Rows is every data row.
	Rows int64 `json:"rows_read"`
	// Applied is the number of distinct transactions summed.
	Applied int64 `json:"rows_applied"`
	// Duplicates is the number of exact copies collapsed.
	Duplicates int64 `json:"duplicates_collapsed"`
	// Rejected is the number of rows rejected, by reason code.
	Rejected         int64            `json:"rows_rejected"`
	RejectedByReason map[string]int64 `json:"rejected_by_reason"`
	// Accounts is the number of accounts with at least one transaction.
	Accounts int64 `json:"accounts"`
}

// Summary is what Generate wrote.
type Summary struct {
	Config Config `json:"config"`
	// Files are the batch's file names, in order; LateFile the late file's.
	Files    []string `json:"files"`
	LateFile string   `json:"late_file,omitempty"`
	// ExactCopies, ConflictCopies and BadRows count the batch's rows of each
	// kind (a transaction's first row is neither).
	ExactCopies    int64 `json:"exact_copies"`
	ConflictCopies int64 `json:"conflict_copies"`
	BadRows        int64 `json:"bad_rows"`
	// LateCopies is the number of late rows copying a batch transaction.
	LateCopies int64 `json:"late_copies"`
	// Batch is what a run over the batch's files must report; WithLate what
	// a run over the batch's files and the late file together must.
	Batch    Counts `json:"batch"`
	WithLate Counts `json:"with_late"`

	batch, withLate []total
	width           int
}

type total struct {
	cents, count, latest int64
}

// Output receives the generated files.
type Output interface {
	// Create opens a new file for writing; name is relative ("txns-0001.csv",
	// "late/late.csv").
	Create(name string) (io.WriteCloser, error)
}

// Header is the header line of every file.
const Header = "transaction_id,account_id,amount,timestamp"

// Generate writes the batch's files and the late file to out.
func Generate(cfg Config, out Output) (*Summary, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("txgen: %w", err)
	}
	if cfg.Start.IsZero() {
		cfg.Start = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	}
	g := &gen{cfg: cfg, conflicted: map[int64]bool{}, startMicros: cfg.Start.UnixMicro()}
	g.sum = &Summary{Config: cfg, batch: make([]total, cfg.Accounts), width: len(strconv.Itoa(cfg.Accounts - 1))}
	g.counts = &g.sum.Batch
	g.counts.RejectedByReason = map[string]int64{}
	if err := g.batch(out); err != nil {
		return nil, err
	}
	g.sum.Batch.Accounts = countAccounts(g.sum.batch)

	// The late file's counts continue from the batch's.
	g.sum.withLate = append([]total(nil), g.sum.batch...)
	g.sum.WithLate = g.sum.Batch
	g.sum.WithLate.RejectedByReason = map[string]int64{}
	for k, v := range g.sum.Batch.RejectedByReason {
		g.sum.WithLate.RejectedByReason[k] = v
	}
	g.counts = &g.sum.WithLate
	if cfg.LateRows > 0 {
		if err := g.late(out); err != nil {
			return nil, err
		}
	}
	g.sum.WithLate.Accounts = countAccounts(g.sum.withLate)
	return g.sum, nil
}

func countAccounts(ts []total) int64 {
	var n int64
	for _, t := range ts {
		if t.count > 0 {
			n++
		}
	}
	return n
}

type gen struct {
	cfg         Config
	sum         *Summary
	counts      *Counts
	totals      []total
	next        int64          // the next new transaction's number
	conflicted  map[int64]bool // transactions with a conflicting copy
	pending     dueHeap        // conflicting copies not yet written
	startMicros int64
	w           *bufio.Writer
	line        []byte
}

// Decision tags: each random choice draws from its own stream.
const (
	tagKind uint64 = iota + 1
	tagCopyOf
	tagConflict
	tagDelay
	tagAccount
	tagAmount
	tagTime
	tagBadKind
	tagLateKind
	tagLateCopyOf
	tagConflictDelta
)

// rnd is a counter-based generator: splitmix64 over seed, stream and index.
func (g *gen) rnd(tag uint64, i int64) uint64 {
	return mix(mix(g.cfg.Seed^(tag*0x9e3779b97f4a7c15)) ^ uint64(i))
}

func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// unit returns a uniform float in [0, 1).
func (g *gen) unit(tag uint64, i int64) float64 {
	return float64(g.rnd(tag, i)>>11) / (1 << 53)
}

func (g *gen) below(tag uint64, i int64, n int64) int64 {
	return int64(g.rnd(tag, i) % uint64(n))
}

// txn is transaction j's content, a pure function of the seed and j.
type txn struct {
	account  int
	cents    int64
	atMicros int64
}

func (g *gen) txn(j int64) txn {
	// Amounts from -500.00 to 2000.00, a fifth of them whole.
	cents := g.below(tagAmount, j, 250001) - 50000
	if g.rnd(tagAmount, ^j)%5 == 0 {
		cents -= cents % 100
	}
	// Times within the day; a third with microseconds.
	us := g.below(tagTime, j, 86400*1000000)
	if g.rnd(tagTime, ^j)%3 != 0 {
		us -= us % 1000000
	}
	return txn{account: int(g.below(tagAccount, j, int64(g.cfg.Accounts))), cents: cents, atMicros: g.startMicros + us}
}

type due struct{ at, txn int64 }
type dueHeap []due

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].txn < h[j].txn
}
func (h dueHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)   { *h = append(*h, x.(due)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func fileName(i, n int) string { return fmt.Sprintf("txns-%04d-of-%04d.csv", i, n) }

// LateFileName is the late file's name in the output.
const LateFileName = "late/late.csv"

func (g *gen) open(out Output, name string) (io.WriteCloser, error) {
	f, err := out.Create(name)
	if err != nil {
		return nil, fmt.Errorf("txgen: create %s: %w", name, err)
	}
	if g.w == nil {
		g.w = bufio.NewWriterSize(f, 1<<20)
	} else {
		g.w.Reset(f)
	}
	g.w.WriteString(Header + "\n")
	return f, nil
}

func (g *gen) close(f io.WriteCloser, name string) error {
	if err := g.w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("txgen: write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("txgen: close %s: %w", name, err)
	}
	return nil
}

func (g *gen) batch(out Output) error {
	cfg := g.cfg
	g.totals = g.sum.batch
	newShare := 1 - cfg.DupShare - cfg.ConflictShare - cfg.BadShare
	// A new transaction gets a conflicting copy with this probability, so
	// that conflicting copies make up ConflictShare of the rows.
	pConflict := cfg.ConflictShare / newShare
	// A conflicting copy follows its transaction by up to about a file.
	maxDelay := max(1, cfg.Rows/int64(cfg.Files))
	var f io.WriteCloser
	var name string
	file := -1
	for r := int64(0); r < cfg.Rows; r++ {
		if fi := int(r * int64(cfg.Files) / cfg.Rows); fi != file {
			if f != nil {
				if err := g.close(f, name); err != nil {
					return err
				}
			}
			file, name = fi, fileName(fi, cfg.Files)
			var err error
			if f, err = g.open(out, name); err != nil {
				return err
			}
			g.sum.Files = append(g.sum.Files, name)
		}
		left := cfg.Rows - r
		if len(g.pending) > 0 && (g.pending[0].at <= r || int64(len(g.pending)) >= left) {
			d := heap.Pop(&g.pending).(due)
			g.conflictCopy(d.txn)
			continue
		}
		u := g.unit(tagKind, r)
		switch {
		case u < cfg.BadShare:
			g.badRow(r)
		case u < cfg.BadShare+cfg.DupShare && g.next > 0:
			g.exactCopy(g.below(tagCopyOf, r, g.next))
			g.sum.ExactCopies++
		default:
			j := g.newTxn()
			// The last rows hold the copies still pending: a new
			// transaction conflicts only if its copy still fits.
			if g.unit(tagConflict, j) < pConflict && int64(len(g.pending))+1 < left {
				g.conflicted[j] = true
				heap.Push(&g.pending, due{at: r + 1 + g.below(tagDelay, j, maxDelay), txn: j})
				g.reject(txnfile.ReasonConflictingDuplicate)
			} else {
				g.apply(j)
			}
		}
	}
	return g.close(f, name)
}

func (g *gen) late(out Output) error {
	cfg := g.cfg
	g.totals = g.sum.withLate
	f, err := g.open(out, LateFileName)
	if err != nil {
		return err
	}
	g.sum.LateFile = LateFileName
	batchTxns := g.next
	for r := int64(0); r < cfg.LateRows; r++ {
		if g.unit(tagLateKind, r) < cfg.LateOverlap && batchTxns > 0 {
			g.exactCopy(g.below(tagLateCopyOf, r, batchTxns))
			g.sum.LateCopies++
			continue
		}
		g.apply(g.newTxn())
	}
	return g.close(f, LateFileName)
}

// newTxn writes a new transaction's first row and returns its number. The
// caller counts it, as applied or as conflicting, once it has decided which.
func (g *gen) newTxn() int64 {
	j := g.next
	g.next++
	t := g.txn(j)
	g.writeTxn(j, t.account, t.cents, t.atMicros)
	g.counts.Rows++
	return j
}

// apply sums transaction j into its account's expected total.
func (g *gen) apply(j int64) {
	t := g.txn(j)
	tot := &g.totals[t.account]
	tot.cents += t.cents
	tot.count++
	if tot.count == 1 || t.atMicros > tot.latest {
		tot.latest = t.atMicros
	}
	g.counts.Applied++
}

func (g *gen) reject(reason txnfile.Reason) {
	g.counts.Rejected++
	g.counts.RejectedByReason[reason.Code()]++
}

func (g *gen) exactCopy(j int64) {
	t := g.txn(j)
	g.writeTxn(j, t.account, t.cents, t.atMicros)
	g.counts.Rows++
	if g.conflicted[j] {
		g.reject(txnfile.ReasonConflictingDuplicate)
	} else {
		g.counts.Duplicates++
	}
}

func (g *gen) conflictCopy(j int64) {
	t := g.txn(j)
	// Another amount, same account and time.
	delta := 1 + g.below(tagConflictDelta, j, 9999)
	g.writeTxn(j, t.account, t.cents+delta, t.atMicros)
	g.counts.Rows++
	g.sum.ConflictCopies++
	g.reject(txnfile.ReasonConflictingDuplicate)
}

// badRow writes a row that parse rejects, of one of four kinds.
func (g *gen) badRow(r int64) {
	b := g.line[:0]
	id := func(b []byte) []byte { return strconv.AppendInt(append(b, "bad-"...), r, 10) }
	acct := func(b []byte) []byte { return g.appendAccount(b, int(g.below(tagAccount, ^r, int64(g.cfg.Accounts)))) }
	stamp := "2026-12-01T12:00:00Z"
	var reason txnfile.Reason
	switch g.rnd(tagBadKind, r) % 4 {
	case 0:
		reason = txnfile.ReasonBadAmount
		b = append(acct(append(id(b), ',')), ",12.3x,"...)
		b = append(b, stamp...)
	case 1:
		reason = txnfile.ReasonBadTimestamp
		b = append(acct(append(id(b), ',')), ",10.00,2026-13-01T25:00:00Z"...)
	case 2:
		reason = txnfile.ReasonWrongFieldCount
		b = append(acct(append(id(b), ',')), ",10.00"...)
	default:
		reason = txnfile.ReasonEmptyID
		b = append(acct(append(b, ',')), ",10.00,"...)
		b = append(b, stamp...)
	}
	b = append(b, '\n')
	g.w.Write(b)
	g.line = b
	g.counts.Rows++
	g.sum.BadRows++
	g.reject(reason)
}

func (g *gen) appendAccount(b []byte, a int) []byte {
	b = append(b, "acc-"...)
	return appendPadded(b, int64(a), g.sum.width)
}

func appendPadded(b []byte, v int64, width int) []byte {
	var d [20]byte
	s := strconv.AppendInt(d[:0], v, 10)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

// writeTxn writes one transaction row: tx-<j>,acc-<a>,<amount>,<time>.
func (g *gen) writeTxn(j int64, account int, cents, atMicros int64) {
	b := append(g.line[:0], "tx-"...)
	b = appendPadded(b, j, 10)
	b = append(b, ',')
	b = g.appendAccount(b, account)
	b = append(b, ',')
	if cents%100 == 0 && (j%2 == 0) {
		b = strconv.AppendInt(b, cents/100, 10) // "12" as well as "12.00"
	} else {
		b = txnfile.AppendCents(b, cents)
	}
	b = append(b, ',')
	b = appendTime(b, atMicros)
	b = append(b, '\n')
	g.w.Write(b)
	g.line = b
}

func appendTime(b []byte, us int64) []byte {
	t := time.UnixMicro(us).UTC()
	if us%1000000 == 0 {
		return t.AppendFormat(b, "2006-01-02T15:04:05Z07:00")
	}
	return t.AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
}

// WriteExpected writes the balances a correct run over the batch (or, with
// withLate, over the batch and the late file) must leave, as CSV sorted by
// account: account_id,balance,txn_count,last_txn_at.
func (s *Summary) WriteExpected(w io.Writer, withLate bool) error {
	totals := s.batch
	if withLate {
		totals = s.withLate
	}
	bw := bufio.NewWriter(w)
	bw.WriteString("account_id,balance,txn_count,last_txn_at\n")
	var b []byte
	for a, t := range totals {
		if t.count == 0 {
			continue
		}
		b = append(b[:0], "acc-"...)
		b = appendPadded(b, int64(a), s.width)
		b = append(b, ',')
		b = txnfile.AppendCents(b, t.cents)
		b = append(b, ',')
		b = strconv.AppendInt(b, t.count, 10)
		b = append(b, ',')
		b = time.UnixMicro(t.latest).UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '\n')
		bw.Write(b)
	}
	return bw.Flush()
}

// Balance is one account's row of the expected balances.
type Balance struct {
	Account      string
	Cents        int64
	Count        int64
	LatestMicros int64
}

// ReadExpected reads what WriteExpected wrote, checking that it is sorted
// by account (byte order, as the tables are compared).
func ReadExpected(path string) ([]Balance, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReader(f))
	if _, err := r.Read(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []Balance
	for line := 2; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(rec) != 4 {
			return nil, fmt.Errorf("%s:%d: %d fields, want 4", path, line, len(rec))
		}
		b := Balance{Account: rec[0]}
		var at time.Time
		if b.Cents, err = txnfile.ParseCents(rec[1]); err == nil {
			if b.Count, err = strconv.ParseInt(rec[2], 10, 64); err == nil {
				at, err = time.Parse(time.RFC3339Nano, rec[3])
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		b.LatestMicros = at.UnixMicro()
		if n := len(out); n > 0 && out[n-1].Account >= b.Account {
			return nil, fmt.Errorf("%s:%d: not sorted by account", path, line)
		}
		out = append(out, b)
	}
}

// WriteJSON writes the summary as indented JSON.
func (s *Summary) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}
