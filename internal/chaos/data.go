package chaos

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

// Data is the input of a chaos run: yesterday's files, a late file that
// repeats some of yesterday's transactions and adds new ones, and the
// balances each set must produce, known from generating them (not from any
// parser).
type Data struct {
	Day1 string // glob of yesterday's files
	Late string // the late file
	// Truth1 are the balances of yesterday's files alone; Truth12 of
	// yesterday's files and the late file together (every distinct
	// transaction once).
	Truth1, Truth12 map[string]Balance
	Rows            int // data rows written, bad ones included
}

// Balance is an account's expected balance.
type Balance struct {
	Cents int64
	Count int64
}

type txn struct {
	id, account string
	cents       int64
	at          time.Time
}

// Generate writes the data for a seed into dir: rows transactions over
// accounts accounts in files files, 2% of them copied exactly into another
// file, one row in a thousand malformed, and a late file with a tenth of the
// transactions again and late/10 new ones.
func Generate(dir string, seed int64, rows, accounts, files int) (*Data, error) {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6368616f73))
	day1Dir := filepath.Join(dir, "day1")
	if err := os.MkdirAll(day1Dir, 0o755); err != nil {
		return nil, err
	}
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	d := &Data{Day1: filepath.Join(day1Dir, "*.csv"), Late: filepath.Join(dir, "late.csv"),
		Truth1: map[string]Balance{}, Truth12: map[string]Balance{}}
	ws := make([]*bufio.Writer, files)
	fs := make([]*os.File, files)
	for i := range ws {
		f, err := os.Create(filepath.Join(day1Dir, fmt.Sprintf("part-%02d.csv", i)))
		if err != nil {
			return nil, err
		}
		fs[i], ws[i] = f, bufio.NewWriter(f)
		fmt.Fprintln(ws[i], "transaction_id,account_id,amount,timestamp")
	}
	var all []txn
	for i := 0; i < rows; i++ {
		t := txn{
			id:      fmt.Sprintf("tx-%08d", i),
			account: fmt.Sprintf("acct-%05d", rng.IntN(accounts)),
			cents:   rng.Int64N(200001) - 100000,
			at:      base.Add(time.Duration(i) * time.Second),
		}
		w := ws[i%files]
		if rng.IntN(1000) == 0 {
			fmt.Fprintf(w, "%s,%s,not-money,%s\n", t.id, t.account, t.at.Format(time.RFC3339))
			d.Rows++
			continue
		}
		writeTxn(w, t)
		d.Rows++
		if rng.IntN(50) == 0 {
			writeTxn(ws[(i+1)%files], t)
			d.Rows++
		}
		all = append(all, t)
		add(d.Truth1, t)
		add(d.Truth12, t)
	}
	for i := range ws {
		if err := ws[i].Flush(); err != nil {
			return nil, err
		}
		if err := fs[i].Close(); err != nil {
			return nil, err
		}
	}
	lf, err := os.Create(d.Late)
	if err != nil {
		return nil, err
	}
	lw := bufio.NewWriter(lf)
	fmt.Fprintln(lw, "transaction_id,account_id,amount,timestamp")
	for _, t := range all {
		if rng.IntN(10) == 0 {
			writeTxn(lw, t)
		}
	}
	for i := 0; i < rows/10; i++ {
		t := txn{
			id:      fmt.Sprintf("late-%08d", i),
			account: fmt.Sprintf("acct-%05d", rng.IntN(accounts)),
			cents:   rng.Int64N(200001) - 100000,
			at:      base.Add(24*time.Hour + time.Duration(i)*time.Second),
		}
		writeTxn(lw, t)
		add(d.Truth12, t)
	}
	if err := lw.Flush(); err != nil {
		return nil, err
	}
	return d, lf.Close()
}

func add(m map[string]Balance, t txn) {
	b := m[t.account]
	b.Cents += t.cents
	b.Count++
	m[t.account] = b
}

func writeTxn(w *bufio.Writer, t txn) {
	sign, c := "", t.cents
	if c < 0 {
		sign, c = "-", -c
	}
	fmt.Fprintf(w, "%s,%s,%s%d.%02d,%s\n", t.id, t.account, sign, c/100, c%100, t.at.Format(time.RFC3339))
}
