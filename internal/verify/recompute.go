package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"

	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

// FileRef is one input file of a batch as the batch registered it (the
// batches.files JSON).
type FileRef struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Opener opens an input file for reading. The default reads local paths.
type Opener func(path string) (io.ReadCloser, error)

func openLocal(path string) (io.ReadCloser, error) {
	if strings.Contains(path, "://") {
		return nil, fmt.Errorf("%s: only local files can be verified here", path)
	}
	return os.Open(path)
}

// Sum is an account's expected row: the sum of its distinct transactions.
type Sum struct {
	Cents        int64
	Count        int64
	LatestMicros int64
}

// Txn is one distinct transaction of a batch.
type Txn struct {
	Account string
	Cents   int64
	Micros  int64
}

// rowKey names a row of an input file.
type rowKey struct {
	File string
	Line int64
}

// Expected is what a batch's files say, recomputed without the pipeline.
type Expected struct {
	// Accounts are the balances the batch computes.
	Accounts map[string]Sum
	// Txns are the batch's distinct transactions by id (conflicting
	// copies excluded). Kept only when asked for (ledger mode).
	Txns map[string]Txn
	// RowsRead = Applied + Duplicates + Rejected, as the run counts them.
	RowsRead, Applied, Duplicates, Rejected int64
	// Rejects are the rows the batch rejects, with their reason codes.
	Rejects map[rowKey]string
}

// FileProblem says why a registered file cannot be used to recompute its
// batch: it is gone, unreadable, or no longer what was registered.
type FileProblem struct {
	Path    string `json:"path"`
	Problem string `json:"problem"`
}

// txnState is what the dedup keeps of one transaction id.
type txnState struct {
	account  string
	cents    int64
	micros   int64
	first    rowKey
	copies   int32
	conflict bool
}

// recompute reads a batch's files and applies the batch rules on its own:
// every row parsed by txnfile; exact copies of a transaction id collapse to
// one; when copies differ, every copy is rejected (conflicting_duplicate);
// the surviving transactions are summed per account with overflow checks.
// A file that is missing or whose size or SHA-256 no longer match the
// registration makes the batch unverifiable: the problems are returned and
// Expected is nil.
func recompute(files []FileRef, open Opener, keepTxns bool) (*Expected, []FileProblem, error) {
	if open == nil {
		open = openLocal
	}
	exp := &Expected{Accounts: map[string]Sum{}, Rejects: map[rowKey]string{}}
	txns := map[string]*txnState{}
	later := map[string][]rowKey{}  // locations of the second and later copies
	accounts := map[string]string{} // interned account ids
	var problems []FileProblem
	for _, f := range files {
		if err := readFile(f, open, exp, txns, later, accounts); err != nil {
			var p *fileProblem
			if errors.As(err, &p) {
				problems = append(problems, FileProblem{Path: f.Path, Problem: p.msg})
				continue
			}
			return nil, nil, err
		}
	}
	if len(problems) > 0 {
		return nil, problems, nil
	}
	if keepTxns {
		exp.Txns = make(map[string]Txn, len(txns))
	}
	for id, t := range txns {
		if t.conflict {
			exp.Rejected += int64(t.copies)
			exp.Rejects[t.first] = txnfile.ReasonConflictingDuplicate.Code()
			for _, k := range later[id] {
				exp.Rejects[k] = txnfile.ReasonConflictingDuplicate.Code()
			}
			continue
		}
		exp.Applied++
		exp.Duplicates += int64(t.copies) - 1
		if keepTxns {
			exp.Txns[id] = Txn{Account: t.account, Cents: t.cents, Micros: t.micros}
		}
		s := exp.Accounts[t.account]
		sum, ok := addCents(s.Cents, t.cents)
		if !ok {
			return nil, nil, fmt.Errorf("account %q: the sum of its transactions does not fit in 64-bit cents (the pipeline fails such a batch)", t.account)
		}
		s.Cents = sum
		s.Count++
		if s.Count == 1 || t.micros > s.LatestMicros {
			s.LatestMicros = t.micros
		}
		exp.Accounts[t.account] = s
	}
	return exp, nil, nil
}

type fileProblem struct{ msg string }

func (p *fileProblem) Error() string { return p.msg }

func problemf(format string, args ...any) error {
	return &fileProblem{msg: fmt.Sprintf(format, args...)}
}

// readFile parses one file into the batch's dedup state, checking its size
// and SHA-256 against the registration as it goes.
func readFile(f FileRef, open Opener, exp *Expected, txns map[string]*txnState, later map[string][]rowKey, accounts map[string]string) error {
	rc, err := open(f.Path)
	if err != nil {
		return problemf("cannot open: %v", err)
	}
	defer rc.Close()
	h := sha256.New()
	counter := &countWriter{h: h}
	cr := txnfile.NewCSVReader(io.TeeReader(rc, counter))
	first, err := cr.Next()
	if errors.Is(err, io.EOF) {
		return checkWhole(f, counter, "the file is empty now")
	}
	if err != nil {
		return problemf("read: %v", err)
	}
	header, err := txnfile.ParseHeader(first)
	if err != nil {
		// Drain it to tell a changed file from a bad one.
		if _, err := io.Copy(io.Discard, io.TeeReader(rc, counter)); err != nil {
			return problemf("read: %v", err)
		}
		return checkWhole(f, counter, "its header is not valid: "+err.Error())
	}
	for {
		rec, err := cr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return problemf("read: %v", err)
		}
		exp.RowsRead++
		row, reason, _ := txnfile.ParseRow(header, rec)
		key := rowKey{File: f.Path, Line: rec.Line}
		if reason != txnfile.ReasonNone {
			exp.Rejected++
			exp.Rejects[key] = reason.Code()
			continue
		}
		id := string(row.ID)
		t, seen := txns[id]
		if !seen {
			acct, ok := accounts[string(row.Account)]
			if !ok {
				acct = string(row.Account)
				accounts[acct] = acct
			}
			txns[id] = &txnState{account: acct, cents: row.Cents, micros: row.AtMicros, first: key, copies: 1}
			continue
		}
		t.copies++
		later[id] = append(later[id], key)
		if t.account != string(row.Account) || t.cents != row.Cents || t.micros != row.AtMicros {
			t.conflict = true
		}
	}
	return checkWhole(f, counter, "")
}

// checkWhole compares what was read with the registration.
func checkWhole(f FileRef, c *countWriter, also string) error {
	got := hex.EncodeToString(c.h.Sum(nil))
	switch {
	case c.n != f.Size:
		return problemf("changed since its batch was registered: size was %d bytes, now %d", f.Size, c.n)
	case f.SHA256 != "" && got != f.SHA256:
		return problemf("changed since its batch was registered: sha256 was %s, now %s", f.SHA256, got)
	case also != "":
		return problemf("%s", also)
	}
	return nil
}

type countWriter struct {
	h hash.Hash
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

// addCents adds with an overflow check.
func addCents(a, b int64) (int64, bool) {
	s := a + b
	if (a >= 0) == (b >= 0) && (s >= 0) != (a >= 0) {
		return 0, false
	}
	return s, true
}
