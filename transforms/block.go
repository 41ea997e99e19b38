package transforms

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

// Block is a packed run of parsed rows (transactions and rejected rows) bound
// for one dedup bucket. Packing many rows into one element keeps the number of
// elements crossing the shuffle small and its coder a plain byte copy: a
// block's encoding is its Data.
type Block struct {
	Data []byte
}

// Record kinds inside a Block.
const (
	kindTxn      byte = 1
	kindReject   byte = 2
	kindFileDone byte = 3
	kindTxnRef   byte = 4 // a transaction whose raw text is left in its file
)

// Txn is one parsed transaction as carried through dedup. The file is an
// index into the batch's manifest. The row's text, for the rejected_rows
// table should the row turn out to conflict, is either Raw (cut to
// MaxRawBytes) or, when RawLen is positive, the RawLen bytes at RawOffset in
// the file: a plain local file's rows leave their text there, which halves
// what crosses the shuffle (see ReadRaw).
type Txn struct {
	ID, Account string
	Cents       int64
	AtMicros    int64
	File        int32
	Line        int64
	Raw         string
	RawOffset   int64
	RawLen      int64
}

// Reject is one rejected row.
type Reject struct {
	File   int32
	Line   int64
	Reason txnfile.Reason
	Detail string
	Raw    string
}

// Len returns the packed size in bytes.
func (b Block) Len() int { return len(b.Data) }

// AppendTxn packs a transaction.
func (b *Block) AppendTxn(id, account []byte, cents, atMicros int64, file int32, line int64, raw []byte) {
	d := append(b.Data, kindTxn)
	d = appendBytes(d, id)
	d = appendBytes(d, account)
	d = binary.AppendVarint(d, cents)
	d = binary.AppendVarint(d, atMicros)
	d = binary.AppendUvarint(d, uint64(file))
	d = binary.AppendUvarint(d, uint64(line))
	b.Data = appendBytes(d, txnfile.CutRaw(raw))
}

// AppendTxnRef packs a transaction whose raw text stays in its file, as
// rawLen bytes at rawOffset.
func (b *Block) AppendTxnRef(id, account []byte, cents, atMicros int64, file int32, line, rawOffset, rawLen int64) {
	d := append(b.Data, kindTxnRef)
	d = appendBytes(d, id)
	d = appendBytes(d, account)
	d = binary.AppendVarint(d, cents)
	d = binary.AppendVarint(d, atMicros)
	d = binary.AppendUvarint(d, uint64(file))
	d = binary.AppendUvarint(d, uint64(line))
	d = binary.AppendUvarint(d, uint64(rawOffset))
	b.Data = binary.AppendUvarint(d, uint64(rawLen))
}

// AppendReject packs a rejected row.
func (b *Block) AppendReject(file int32, line int64, reason txnfile.Reason, detail string, raw []byte) {
	d := append(b.Data, kindReject)
	d = binary.AppendUvarint(d, uint64(file))
	d = binary.AppendUvarint(d, uint64(line))
	d = append(d, byte(reason))
	d = appendBytes(d, []byte(txnfile.Truncate(detail, 300)))
	b.Data = appendBytes(d, txnfile.CutRaw(raw))
}

// AppendFileDone packs the end mark of a file: the file was read to its end
// and matched its manifest entry, and rows of its rows went to this bucket.
// Every bucket gets one from every file, after the file's last block for it,
// so a bucket that lacks a file's mark did not receive all of its rows.
func (b *Block) AppendFileDone(file int32, rows int64) {
	d := append(b.Data, kindFileDone)
	d = binary.AppendUvarint(d, uint64(file))
	b.Data = binary.AppendUvarint(d, uint64(rows))
}

func appendBytes(d, s []byte) []byte {
	d = binary.AppendUvarint(d, uint64(len(s)))
	return append(d, s...)
}

// errCorrupt is returned for a block that does not decode.
var errCorrupt = errors.New("corrupt block")

// BlockVisitor receives the records of a block. The strings it is handed
// alias the block's data (which is never written once built): clone any that
// must outlive the block.
type BlockVisitor struct {
	Txn      func(Txn) error
	Reject   func(Reject) error
	FileDone func(file int32, rows int64) error
}

// Each calls the visitor for every record of the block, in order.
func (b Block) Each(v BlockVisitor) error {
	d := b.Data
	for len(d) > 0 {
		kind := d[0]
		d = d[1:]
		var err error
		switch kind {
		case kindTxn, kindTxnRef:
			var t Txn
			var id, acct, raw []byte
			if id, d, err = readBytes(d); err != nil {
				return err
			}
			if acct, d, err = readBytes(d); err != nil {
				return err
			}
			if t.Cents, d, err = readVarint(d); err != nil {
				return err
			}
			if t.AtMicros, d, err = readVarint(d); err != nil {
				return err
			}
			var f, l uint64
			if f, d, err = readUvarint(d); err != nil {
				return err
			}
			if l, d, err = readUvarint(d); err != nil {
				return err
			}
			if kind == kindTxn {
				if raw, d, err = readBytes(d); err != nil {
					return err
				}
			} else {
				var off, n uint64
				if off, d, err = readUvarint(d); err != nil {
					return err
				}
				if n, d, err = readUvarint(d); err != nil {
					return err
				}
				if n == 0 || n > txnfile.MaxRawBytes || off > 1<<62 {
					return fmt.Errorf("%w: raw text reference %d+%d", errCorrupt, off, n)
				}
				t.RawOffset, t.RawLen = int64(off), int64(n)
			}
			t.ID, t.Account, t.Raw = bytesString(id), bytesString(acct), bytesString(raw)
			t.File, t.Line = int32(f), int64(l)
			if err := v.Txn(t); err != nil {
				return err
			}
		case kindReject:
			var r Reject
			var f, l uint64
			if f, d, err = readUvarint(d); err != nil {
				return err
			}
			if l, d, err = readUvarint(d); err != nil {
				return err
			}
			if len(d) == 0 {
				return errCorrupt
			}
			r.Reason = txnfile.Reason(d[0])
			d = d[1:]
			var detail, raw []byte
			if detail, d, err = readBytes(d); err != nil {
				return err
			}
			if raw, d, err = readBytes(d); err != nil {
				return err
			}
			r.File, r.Line, r.Detail, r.Raw = int32(f), int64(l), bytesString(detail), bytesString(raw)
			if err := v.Reject(r); err != nil {
				return err
			}
		case kindFileDone:
			var f, n uint64
			if f, d, err = readUvarint(d); err != nil {
				return err
			}
			if n, d, err = readUvarint(d); err != nil {
				return err
			}
			if err := v.FileDone(int32(f), int64(n)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: unknown record kind %d", errCorrupt, kind)
		}
	}
	return nil
}

func readUvarint(d []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(d)
	if n <= 0 {
		return 0, nil, errCorrupt
	}
	return v, d[n:], nil
}

func readVarint(d []byte) (int64, []byte, error) {
	v, n := binary.Varint(d)
	if n <= 0 {
		return 0, nil, errCorrupt
	}
	return v, d[n:], nil
}

func readBytes(d []byte) ([]byte, []byte, error) {
	n, d, err := readUvarint(d)
	if err != nil {
		return nil, nil, err
	}
	if uint64(len(d)) < n {
		return nil, nil, errCorrupt
	}
	return d[:n], d[n:], nil
}

// Total is one account's running total: the sum of its transactions' cents,
// how many there were and the latest transaction time.
type Total struct {
	Account      string
	Cents        int64
	Count        int64
	LatestMicros int64
}

// Add folds o into t. It fails when the sum would overflow int64 cents,
// which is never silently wrapped.
func (t *Total) Add(o Total) error {
	sum, ok := txnfile.AddCents(t.Cents, o.Cents)
	if !ok {
		return fmt.Errorf("account %q: balance overflows 64-bit cents (%s + %s)", t.Account, txnfile.FormatCents(t.Cents), txnfile.FormatCents(o.Cents))
	}
	t.Cents = sum
	t.Count += o.Count
	if o.LatestMicros > t.LatestMicros {
		t.LatestMicros = o.LatestMicros
	}
	return nil
}

// Totals is a list of account totals sorted by account, one entry an
// account, and the marks of the dedup buckets that contributed to it. It is
// the value combined per shard and handed to the sink, which writes a shard
// only when the marks of every bucket are there: that proves no part of the
// batch was lost on the way, whatever the runner did.
type Totals struct {
	Rows []Total
	// Entries are the transactions themselves, sorted by account then id,
	// for the ledger mode, whose sink records each transaction once; in the
	// other modes it is empty and Rows holds the sums.
	Entries []Entry
	Marks   []BucketMark // sorted by bucket, one per bucket
}

// Entry is one deduplicated transaction bound for the ledger. File and Line
// say where it came from, for a conflict with an earlier batch.
type Entry struct {
	ID, Account string
	Cents       int64
	AtMicros    int64
	File        int32
	Line        int64
}

// BucketMark is the account of one dedup bucket: every bucket sends one to
// every shard, so each shard's combined totals can show that all buckets, and
// through them all files, made it.
type BucketMark struct {
	Bucket     int32
	Read       int64 // rows read from the files for this bucket
	Applied    int64 // distinct transactions summed
	Duplicates int64 // exact copies collapsed
	Rejected   int64 // rows rejected, at parse or as conflicting copies
}

// EncodeTotals is the coder of Totals: the rows, counted and packed, then
// the marks.
func EncodeTotals(t Totals) []byte {
	d := make([]byte, 0, 16+len(t.Rows)*24+len(t.Marks)*12)
	d = binary.AppendUvarint(d, uint64(len(t.Rows)))
	for _, r := range t.Rows {
		d = appendBytes(d, []byte(r.Account))
		d = binary.AppendVarint(d, r.Cents)
		d = binary.AppendVarint(d, r.Count)
		d = binary.AppendVarint(d, r.LatestMicros)
	}
	d = binary.AppendUvarint(d, uint64(len(t.Entries)))
	for _, e := range t.Entries {
		d = appendBytes(d, []byte(e.ID))
		d = appendBytes(d, []byte(e.Account))
		d = binary.AppendVarint(d, e.Cents)
		d = binary.AppendVarint(d, e.AtMicros)
		d = binary.AppendUvarint(d, uint64(e.File))
		d = binary.AppendUvarint(d, uint64(e.Line))
	}
	d = binary.AppendUvarint(d, uint64(len(t.Marks)))
	for _, m := range t.Marks {
		d = binary.AppendUvarint(d, uint64(m.Bucket))
		d = binary.AppendUvarint(d, uint64(m.Read))
		d = binary.AppendUvarint(d, uint64(m.Applied))
		d = binary.AppendUvarint(d, uint64(m.Duplicates))
		d = binary.AppendUvarint(d, uint64(m.Rejected))
	}
	return d
}

// DecodeTotals decodes EncodeTotals' output. Its strings share one copy of
// d (one allocation an element, not one a string).
func DecodeTotals(d []byte) (Totals, error) {
	all := string(d)
	// str is the string of b, just read from all's bytes, rest following it.
	str := func(b, rest []byte) string {
		end := len(all) - len(rest)
		return all[end-len(b) : end]
	}
	n, d, err := readUvarint(d)
	if err != nil {
		return Totals{}, err
	}
	if n > uint64(len(d)) {
		return Totals{}, errCorrupt
	}
	rows := make([]Total, n)
	for i := range rows {
		var acct []byte
		if acct, d, err = readBytes(d); err != nil {
			return Totals{}, err
		}
		rows[i].Account = str(acct, d)
		if rows[i].Cents, d, err = readVarint(d); err != nil {
			return Totals{}, err
		}
		if rows[i].Count, d, err = readVarint(d); err != nil {
			return Totals{}, err
		}
		if rows[i].LatestMicros, d, err = readVarint(d); err != nil {
			return Totals{}, err
		}
	}
	ne, d, err := readUvarint(d)
	if err != nil {
		return Totals{}, err
	}
	if ne > uint64(len(d)) {
		return Totals{}, errCorrupt
	}
	var entries []Entry
	if ne > 0 {
		entries = make([]Entry, ne)
	}
	for i := range entries {
		var id, acct []byte
		if id, d, err = readBytes(d); err != nil {
			return Totals{}, err
		}
		entries[i].ID = str(id, d)
		if acct, d, err = readBytes(d); err != nil {
			return Totals{}, err
		}
		entries[i].Account = str(acct, d)
		if entries[i].Cents, d, err = readVarint(d); err != nil {
			return Totals{}, err
		}
		if entries[i].AtMicros, d, err = readVarint(d); err != nil {
			return Totals{}, err
		}
		var f, l uint64
		if f, d, err = readUvarint(d); err != nil {
			return Totals{}, err
		}
		if l, d, err = readUvarint(d); err != nil {
			return Totals{}, err
		}
		entries[i].File, entries[i].Line = int32(f), int64(l)
	}
	nm, d, err := readUvarint(d)
	if err != nil {
		return Totals{}, err
	}
	if nm > uint64(len(d)) {
		return Totals{}, errCorrupt
	}
	var marks []BucketMark
	if nm > 0 {
		marks = make([]BucketMark, nm)
	}
	for i := range marks {
		var v [5]uint64
		for j := range v {
			if v[j], d, err = readUvarint(d); err != nil {
				return Totals{}, err
			}
		}
		marks[i] = BucketMark{Bucket: int32(v[0]), Read: int64(v[1]), Applied: int64(v[2]), Duplicates: int64(v[3]), Rejected: int64(v[4])}
	}
	if len(d) != 0 {
		return Totals{}, errCorrupt
	}
	if len(rows) == 0 {
		rows = nil
	}
	return Totals{Rows: rows, Entries: entries, Marks: marks}, nil
}

// Sum adds up the marks: the batch's row counts as far as these totals saw.
func (t Totals) Sum() BucketMark {
	var s BucketMark
	for _, m := range t.Marks {
		s.Read += m.Read
		s.Applied += m.Applied
		s.Duplicates += m.Duplicates
		s.Rejected += m.Rejected
	}
	s.Bucket = int32(len(t.Marks))
	return s
}

// MissingBuckets lists the buckets of [0, buckets) without a mark.
func (t Totals) MissingBuckets(buckets int) []int {
	var missing []int
	i := 0
	for b := 0; b < buckets; b++ {
		for i < len(t.Marks) && int(t.Marks[i].Bucket) < b {
			i++
		}
		if i < len(t.Marks) && int(t.Marks[i].Bucket) == b {
			continue
		}
		missing = append(missing, b)
	}
	return missing
}

// EncodeBlock is the coder of Block.
func EncodeBlock(b Block) []byte { return b.Data }

// DecodeBlock is the coder of Block. The runner hands over a fresh slice.
func DecodeBlock(d []byte) Block { return Block{Data: d} }

// bytesString views b as a string without copying; b must never change.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
