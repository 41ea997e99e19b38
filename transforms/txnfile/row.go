package txnfile

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
	"unsafe"
)

// The header columns a transaction file must have, in any order. Other
// columns are allowed and ignored.
const (
	ColTransactionID = "transaction_id"
	ColAccountID     = "account_id"
	ColAmount        = "amount"
	ColTimestamp     = "timestamp"
)

// Header maps the required columns to their positions in a file.
type Header struct {
	NumFields                  int
	ID, Account, Amount, Stamp int
}

// ErrNoHeader is returned for a file that has no header line.
var ErrNoHeader = errors.New("file is empty: no header line")

// ParseHeader reads the column names of a header record. Names are matched
// case-insensitively after trimming spaces.
func ParseHeader(rec *Record) (Header, error) {
	if rec.Problem != ReasonNone {
		return Header{}, fmt.Errorf("header line is not valid CSV: %s", rec.Detail)
	}
	if !utf8.Valid(rec.Raw) {
		return Header{}, errors.New("header line is not valid UTF-8")
	}
	h := Header{NumFields: len(rec.Fields), ID: -1, Account: -1, Amount: -1, Stamp: -1}
	for i, f := range rec.Fields {
		name := strings.ToLower(strings.TrimSpace(string(f)))
		var slot *int
		switch name {
		case ColTransactionID:
			slot = &h.ID
		case ColAccountID:
			slot = &h.Account
		case ColAmount:
			slot = &h.Amount
		case ColTimestamp:
			slot = &h.Stamp
		default:
			continue
		}
		if *slot >= 0 {
			return Header{}, fmt.Errorf("header names column %q twice", name)
		}
		*slot = i
	}
	var missing []string
	for _, c := range []struct {
		name string
		at   int
	}{{ColTransactionID, h.ID}, {ColAccountID, h.Account}, {ColAmount, h.Amount}, {ColTimestamp, h.Stamp}} {
		if c.at < 0 {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return Header{}, fmt.Errorf("header %q lacks column(s) %s (want transaction_id,account_id,amount,timestamp in any order)",
			Truncate(string(rec.Raw), 200), strings.Join(missing, ", "))
	}
	return h, nil
}

// Row is one valid transaction row. ID and Account alias the record's
// buffers.
type Row struct {
	ID, Account []byte
	Cents       int64
	// AtMicros is the transaction time in microseconds since the Unix epoch.
	AtMicros int64
}

// ParseRow validates a record against the header. On failure it returns the
// reason and a human-readable detail.
func ParseRow(h Header, rec *Record) (Row, Reason, string) {
	if rec.Problem != ReasonNone {
		return Row{}, rec.Problem, rec.Detail
	}
	if !utf8.Valid(rec.Raw) {
		return Row{}, ReasonInvalidUTF8, "row is not valid UTF-8"
	}
	if len(rec.Fields) != h.NumFields {
		return Row{}, ReasonWrongFieldCount, fmt.Sprintf("row has %d fields, header has %d", len(rec.Fields), h.NumFields)
	}
	var r Row
	r.ID = rec.Fields[h.ID]
	if reason, detail := checkID(ColTransactionID, r.ID); reason != ReasonNone {
		return Row{}, reason, detail
	}
	r.Account = rec.Fields[h.Account]
	if reason, detail := checkID(ColAccountID, r.Account); reason != ReasonNone {
		return Row{}, reason, detail
	}
	amount := rec.Fields[h.Amount]
	cents, err := ParseCents(bytesString(amount))
	switch err {
	case nil:
		r.Cents = cents
	case errAmountOverflow:
		return Row{}, ReasonAmountOverflow, fmt.Sprintf("amount %q: %v", Truncate(string(amount), 64), err)
	default:
		return Row{}, ReasonBadAmount, fmt.Sprintf("amount %q: %v", Truncate(string(amount), 64), err)
	}
	at, err := ParseTimestamp(rec.Fields[h.Stamp])
	if err != nil {
		return Row{}, ReasonBadTimestamp, err.Error()
	}
	r.AtMicros = at
	return r, ReasonNone, ""
}

// checkID applies the id rules: non-empty, no surrounding whitespace, no
// control characters.
func checkID(col string, id []byte) (Reason, string) {
	if len(id) == 0 {
		return ReasonEmptyID, col + " is empty"
	}
	ascii := true
	for _, b := range id {
		if b < 0x20 || b == 0x7f {
			return ReasonBadID, fmt.Sprintf("%s %q has a control character", col, Truncate(string(id), 64))
		}
		if b >= utf8.RuneSelf {
			ascii = false
		}
	}
	if ascii {
		if id[0] == ' ' || id[len(id)-1] == ' ' {
			return ReasonBadID, fmt.Sprintf("%s %q has surrounding whitespace", col, Truncate(string(id), 64))
		}
		return ReasonNone, ""
	}
	first, _ := utf8.DecodeRune(id)
	last, _ := utf8.DecodeLastRune(id)
	if unicode.IsSpace(first) || unicode.IsSpace(last) {
		return ReasonBadID, fmt.Sprintf("%s %q has surrounding whitespace", col, Truncate(string(id), 64))
	}
	for _, r := range string(id) {
		if unicode.IsControl(r) {
			return ReasonBadID, fmt.Sprintf("%s %q has a control character", col, Truncate(string(id), 64))
		}
	}
	return ReasonNone, ""
}

// ParseTimestamp parses an RFC 3339 timestamp into microseconds since the
// Unix epoch: YYYY-MM-DDTHH:MM:SS, an optional fraction after a '.', and Z
// or an offset ±HH:MM (hours 00-23, minutes 00-59), with an upper-case T and
// Z. Precision finer than a microsecond (PostgreSQL's) is refused rather
// than rounded, so that two rows never compare equal by accident, and so is
// an instant whose UTC year is outside 0000-9999 (it could not be written
// back as RFC 3339). time.Parse alone is laxer than RFC 3339 (it takes a
// one-digit hour, a ',' before the fraction, an offset of +24:00), hence the
// check of the form first.
func ParseTimestamp(b []byte) (int64, error) {
	if !rfc3339Form(b) {
		return 0, fmt.Errorf("timestamp %q is not RFC 3339", Truncate(string(b), 64))
	}
	t, err := time.Parse(time.RFC3339Nano, bytesString(b))
	if err != nil {
		return 0, fmt.Errorf("timestamp %q is not RFC 3339", Truncate(string(b), 64))
	}
	if t.Nanosecond()%1000 != 0 {
		return 0, fmt.Errorf("timestamp %q is more precise than a microsecond", Truncate(string(b), 64))
	}
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return 0, fmt.Errorf("timestamp %q is outside the years 0000-9999 in UTC", Truncate(string(b), 64))
	}
	return t.UnixMicro(), nil
}

// rfc3339Form checks the shape of an RFC 3339 date-time; time.Parse checks
// the calendar.
func rfc3339Form(b []byte) bool {
	digits := func(from, to int) bool {
		for i := from; i < to; i++ {
			if b[i] < '0' || b[i] > '9' {
				return false
			}
		}
		return true
	}
	two := func(at int) int { return int(b[at]-'0')*10 + int(b[at+1]-'0') }
	if len(b) < 20 || !digits(0, 4) || b[4] != '-' || !digits(5, 7) || b[7] != '-' || !digits(8, 10) || b[10] != 'T' ||
		!digits(11, 13) || b[13] != ':' || !digits(14, 16) || b[16] != ':' || !digits(17, 19) {
		return false
	}
	i := 19
	if b[i] == '.' {
		j := i + 1
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		if j == i+1 {
			return false
		}
		i = j
	}
	switch {
	case i == len(b)-1 && b[i] == 'Z':
		return true
	case i+6 == len(b) && (b[i] == '+' || b[i] == '-') && digits(i+1, i+3) && b[i+3] == ':' && digits(i+4, i+6):
		return two(i+1) <= 23 && two(i+4) <= 59
	}
	return false
}

// FormatMicros renders microseconds since the epoch as RFC 3339 in UTC.
func FormatMicros(us int64) string {
	return time.UnixMicro(us).UTC().Format(time.RFC3339Nano)
}

// bytesString views b as a string without copying. The string must not be
// kept beyond the life of b's contents.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// Truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
