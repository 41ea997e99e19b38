package txnfile

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// The fuzz targets start from two corpora, and plain `go test` runs both:
//
//   - the project's seed files in the top-level testdata/fuzz/ folder: one
//     input per file, as plain bytes (CSV files a person can read, and a few
//     binary ones), added to every target with f.Add;
//   - what `go test -fuzz` itself found and saved, in Go's corpus format, in
//     testdata/fuzz/FuzzName/ next to this file.
//
// The seeds also include the fixtures of testdata/day1 and testdata/day2.
const seedDir = "../../testdata/fuzz"

// seeds returns the contents of every seed file. A missing or empty seed
// folder fails the test, so the corpus cannot silently stop running.
func seeds(f *testing.F) [][]byte {
	f.Helper()
	var out [][]byte
	err := filepath.WalkDir(seedDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		out = append(out, data)
		return nil
	})
	if err != nil {
		f.Fatalf("seed corpus: %v", err)
	}
	if len(out) < 10 {
		f.Fatalf("seed corpus %s has %d files; want the project's seeds", seedDir, len(out))
	}
	fixtures, _ := filepath.Glob("../../testdata/day*/*.csv")
	for _, p := range fixtures {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

// readerConfig is one set of reader limits the fuzz targets check.
type readerConfig struct {
	name                        string
	bufSize, maxLine, maxRecord int
	noMemo                      bool
}

// readerConfigs: the production limits, and limits small enough (a 16-byte
// buffer, 24-byte lines, 64-byte records) that fuzz inputs of a few hundred
// bytes reach the over-long line and runaway-quote paths.
var readerConfigs = []readerConfig{
	{"production", 256 << 10, MaxLineBytes, MaxRecordBytes, false},
	{"small limits", 16, 24, 64, false},
}

// roundTrip reads records written back: production limits, a small buffer.
var roundTrip = readerConfig{"round trip", 4096, MaxLineBytes, MaxRecordBytes, false}

// fuzzRec is a record copied out of the reader's buffers.
type fuzzRec struct {
	Line, EndLine int64
	Raw           []byte
	Fields        [][]byte
	Problem       Reason
	Detail        string
}

func readRecords(t *testing.T, data []byte, cfg readerConfig) []fuzzRec {
	t.Helper()
	r := newCSVReader(bytes.NewReader(data), cfg.bufSize, cfg.maxLine, cfg.maxRecord)
	r.noMemo = cfg.noMemo
	var out []fuzzRec
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: Next: %v (a bytes.Reader never fails)", cfg.name, err)
		}
		c := fuzzRec{Line: rec.Line, EndLine: rec.EndLine, Raw: bytes.Clone(rec.Raw), Problem: rec.Problem, Detail: rec.Detail}
		if rec.Fields != nil {
			c.Fields = make([][]byte, len(rec.Fields))
			for i, f := range rec.Fields {
				c.Fields[i] = bytes.Clone(f)
			}
		}
		out = append(out, c)
		if len(out) > len(data)+1 {
			t.Fatalf("%s: %d records from %d bytes: the reader does not end", cfg.name, len(out), len(data))
		}
	}
}

// physicalLines splits data the way the format defines lines, independently
// of the reader: on LF, the last line may lack one, a BOM starts only the
// first line and is not part of it.
func physicalLines(data []byte) [][]byte {
	if len(data) == 0 {
		return nil
	}
	lines := bytes.Split(data, []byte("\n"))
	if data[len(data)-1] == '\n' {
		lines = lines[:len(lines)-1]
	}
	lines[0] = bytes.TrimPrefix(lines[0], utf8BOM)
	return lines
}

// encodeRecord writes fields as one RFC 4180 record, every field quoted.
func encodeRecord(fields [][]byte) []byte {
	var b []byte
	for i, f := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, bytes.ReplaceAll(f, []byte(`"`), []byte(`""`))...)
		b = append(b, '"')
	}
	return b
}

// FuzzCSVReader checks, for any input and for both sets of limits, that the
// reader accounts for every line exactly once: records come in order and
// never overlap; the lines between them are empty; a record with fields is
// exactly its lines' text and its fields survive being written out and read
// again; a record without fields has a reason from the reader's own list
// and a detail; an over-long line is always rejected as line_too_long and
// never part of another record.
func FuzzCSVReader(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := physicalLines(data)
		for _, cfg := range readerConfigs {
			checkRecords(t, cfg, lines, readRecords(t, data, cfg))
		}
		// With the production limits (which a fuzz input never reaches), the
		// reader's shortcut after a quote that never closes changes nothing:
		// it reads exactly what reading every line again reads.
		if len(data) <= 16<<10 {
			noMemo := readerConfigs[0]
			noMemo.noMemo = true
			if got, want := readRecords(t, data, readerConfigs[0]), readRecords(t, data, noMemo); !reflect.DeepEqual(got, want) {
				t.Fatalf("with the shortcut\n%+v\nwithout\n%+v", got, want)
			}
		}
	})
}

func checkRecords(t *testing.T, cfg readerConfig, lines [][]byte, recs []fuzzRec) {
	t.Helper()
	empty := func(l []byte) bool { return len(trimCR(l)) == 0 }
	tooLong := func(l []byte) bool { return len(trimCR(l)) > cfg.maxLine }
	if len(recs) > len(lines) {
		t.Fatalf("%s: %d records from %d lines", cfg.name, len(recs), len(lines))
	}
	next := int64(1) // the first line no record has covered yet
	for i, r := range recs {
		if r.Line < next || r.EndLine < r.Line || r.EndLine > int64(len(lines)) {
			t.Fatalf("%s: record %d spans lines %d-%d; lines before %d are taken, the input has %d",
				cfg.name, i, r.Line, r.EndLine, next, len(lines))
		}
		for l := next; l < r.Line; l++ {
			if !empty(lines[l-1]) {
				t.Fatalf("%s: line %d %q is in no record", cfg.name, l, lines[l-1])
			}
		}
		first := lines[r.Line-1]
		if empty(first) {
			t.Fatalf("%s: record %d starts on empty line %d", cfg.name, i, r.Line)
		}
		span := bytes.Join(lines[r.Line-1:r.EndLine], []byte("\n"))
		if (r.Problem == ReasonLineTooLong) != tooLong(first) {
			t.Fatalf("%s: record %d at line %d: problem %v, but the line has %d bytes (limit %d)",
				cfg.name, i, r.Line, r.Problem, len(trimCR(first)), cfg.maxLine)
		}
		switch r.Problem {
		case ReasonNone:
			if r.Fields == nil {
				t.Fatalf("%s: record %d has neither fields nor a problem", cfg.name, i)
			}
			if !bytes.Equal(r.Raw, trimCR(span)) {
				t.Fatalf("%s: record %d raw %q, its lines are %q", cfg.name, i, r.Raw, span)
			}
			for l := r.Line; l <= r.EndLine; l++ {
				if tooLong(lines[l-1]) {
					t.Fatalf("%s: record %d holds over-long line %d", cfg.name, i, l)
				}
			}
			if bytes.IndexByte(r.Raw, '"') < 0 {
				if want := bytes.Split(r.Raw, []byte(",")); !equalFields(r.Fields, want) {
					t.Fatalf("%s: record %d %q split into %q", cfg.name, i, r.Raw, r.Fields)
				}
			}
			enc := encodeRecord(r.Fields)
			back := readRecords(t, append(enc, '\n'), roundTrip)
			if len(back) != 1 || !equalFields(back[0].Fields, r.Fields) {
				t.Fatalf("%s: record %d fields %q written as %q read back as %+v", cfg.name, i, r.Fields, enc, back)
			}
		case ReasonMalformedCSV, ReasonLineTooLong:
			if r.Fields != nil || r.Detail == "" {
				t.Fatalf("%s: rejected record %d: fields %q, detail %q", cfg.name, i, r.Fields, r.Detail)
			}
			if len(r.Raw) > MaxRawBytes || !bytes.HasPrefix(span, r.Raw) {
				t.Fatalf("%s: rejected record %d raw %q is not the start of its lines %q", cfg.name, i, r.Raw, span)
			}
			if r.Problem == ReasonLineTooLong && r.EndLine != r.Line {
				t.Fatalf("%s: over-long line record %d spans lines %d-%d", cfg.name, i, r.Line, r.EndLine)
			}
		default:
			t.Fatalf("%s: record %d has problem %v, which the reader never gives", cfg.name, i, r.Problem)
		}
		next = r.EndLine + 1
	}
	for l := next; l <= int64(len(lines)); l++ {
		if !empty(lines[l-1]) {
			t.Fatalf("%s: line %d %q after the last record is in no record", cfg.name, l, lines[l-1])
		}
	}
}

func equalFields(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// amountRE is the amount rule, written independently of ParseCents.
var amountRE = regexp.MustCompile(`^-?[0-9]+(\.[0-9]{1,2})?$`)

// oracleCents parses an amount with math/big: ok is false for a bad amount,
// overflow true when it is well formed but does not fit in int64 cents.
func oracleCents(s string) (cents int64, ok, overflow bool) {
	if !amountRE.MatchString(s) {
		return 0, false, false
	}
	neg := s[0] == '-'
	whole, frac, _ := strings.Cut(strings.TrimPrefix(s, "-"), ".")
	for len(frac) < 2 {
		frac += "0"
	}
	v, _ := new(big.Int).SetString(whole+frac, 10)
	if neg {
		v.Neg(v)
	}
	if !v.IsInt64() {
		return 0, true, true
	}
	return v.Int64(), true, false
}

// FuzzParseCents compares ParseCents with a math/big oracle and checks that
// FormatCents gives back what ParseCents reads.
func FuzzParseCents(f *testing.F) {
	for _, s := range []string{"0", "-0", "1.5", "-0.05", "10.10", "007.50", "92233720368547758.07",
		"-92233720368547758.08", "92233720368547758.08", "1e3", "1.001", ".5", "5.", "-", "+1", " 1", "１"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseCents(s)
		want, ok, overflow := oracleCents(s)
		switch {
		case !ok:
			if err != errBadAmount {
				t.Fatalf("ParseCents(%q) = %d, %v; want a bad amount", s, got, err)
			}
		case overflow:
			if err != errAmountOverflow {
				t.Fatalf("ParseCents(%q) = %d, %v; want an overflow", s, got, err)
			}
		default:
			if err != nil || got != want {
				t.Fatalf("ParseCents(%q) = %d, %v; want %d", s, got, err, want)
			}
			back, err := ParseCents(FormatCents(got))
			if err != nil || back != got {
				t.Fatalf("FormatCents(%d) = %q reads back as %d, %v", got, FormatCents(got), back, err)
			}
		}
	})
}

// FuzzRows runs whole files through the reader, the header and the row
// rules. Every row is either valid, with values that independent checks
// agree with, or rejected with a row-level reason from Reasons() and a
// detail; a file whose header is bad is refused with an error.
func FuzzRows(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Add([]byte("transaction_id,account_id,amount,timestamp\nt1,a,1.5,2026-12-01T00:00:00Z\n"))
	rowReasons := map[Reason]bool{}
	for _, r := range Reasons() {
		if r != ReasonConflictingDuplicate && r != ReasonConflictAcrossBatches {
			rowReasons[r] = true
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewCSVReader(bytes.NewReader(data))
		first, err := r.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		h, err := ParseHeader(first)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("header error without a message")
			}
			return
		}
		for _, at := range []int{h.ID, h.Account, h.Amount, h.Stamp} {
			if at < 0 || at >= h.NumFields {
				t.Fatalf("header %+v: column outside the %d fields", h, h.NumFields)
			}
		}
		for rows := 0; ; rows++ {
			rec, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			row, reason, detail := ParseRow(h, rec)
			if reason != ReasonNone {
				if !rowReasons[reason] || detail == "" {
					t.Fatalf("line %d %q: reason %v, detail %q", rec.Line, rec.Raw, reason, detail)
				}
				checkReason(t, h, rec, reason)
				continue
			}
			checkValidRow(t, h, rec, row)
		}
	})
}

// checkReason checks a rejection against independent rules where the rule
// can be told apart: the reasons are tried in a fixed order (CSV, UTF-8,
// field count, ids, amount, timestamp), so each reason implies the earlier
// rules passed.
func checkReason(t *testing.T, h Header, rec *Record, reason Reason) {
	t.Helper()
	if reason == ReasonMalformedCSV || reason == ReasonLineTooLong {
		if rec.Problem != reason {
			t.Fatalf("line %d: %v, but the reader said %v", rec.Line, reason, rec.Problem)
		}
		return
	}
	if rec.Problem != ReasonNone {
		t.Fatalf("line %d: the reader said %v, ParseRow %v", rec.Line, rec.Problem, reason)
	}
	if reason == ReasonInvalidUTF8 {
		if utf8.Valid(rec.Raw) {
			t.Fatalf("line %d %q is valid UTF-8", rec.Line, rec.Raw)
		}
		return
	}
	if len(rec.Fields) != h.NumFields {
		if reason != ReasonWrongFieldCount {
			t.Fatalf("line %d: %d fields, header %d, reason %v", rec.Line, len(rec.Fields), h.NumFields, reason)
		}
		return
	}
	idsOK := idOK(rec.Fields[h.ID]) && idOK(rec.Fields[h.Account])
	switch reason {
	case ReasonEmptyID, ReasonBadID:
		if idsOK {
			t.Fatalf("line %d: ids %q %q are fine, reason %v", rec.Line, rec.Fields[h.ID], rec.Fields[h.Account], reason)
		}
	case ReasonBadAmount, ReasonAmountOverflow:
		_, ok, overflow := oracleCents(string(rec.Fields[h.Amount]))
		if !idsOK || ok != (reason == ReasonAmountOverflow) || overflow != (reason == ReasonAmountOverflow) {
			t.Fatalf("line %d: amount %q: reason %v, oracle ok=%v overflow=%v", rec.Line, rec.Fields[h.Amount], reason, ok, overflow)
		}
	case ReasonBadTimestamp:
		if _, ok, overflow := oracleCents(string(rec.Fields[h.Amount])); !idsOK || !ok || overflow {
			t.Fatalf("line %d: bad timestamp, but the amount or ids are bad too", rec.Line)
		}
		if at, ok := oracleMicros(string(rec.Fields[h.Stamp])); ok {
			t.Fatalf("line %d: timestamp %q rejected; the oracle reads it as %d µs", rec.Line, rec.Fields[h.Stamp], at)
		}
	}
}

// stampRE is the RFC 3339 date-time form the row rules take, written
// independently of ParseTimestamp.
var stampRE = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`)

// oracleMicros is the timestamp rule: RFC 3339 form, a real calendar time,
// whole microseconds, and a UTC year from 0000 to 9999.
func oracleMicros(s string) (int64, bool) {
	if !stampRE.MatchString(s) {
		return 0, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Nanosecond()%1000 != 0 || t.UTC().Year() < 0 || t.UTC().Year() > 9999 {
		return 0, false
	}
	return t.UnixMicro(), true
}

// idOK is the id rule, written independently of checkID.
func idOK(id []byte) bool {
	if len(id) == 0 || !utf8.Valid(id) {
		return false
	}
	s := string(id)
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	first, _ := utf8.DecodeRuneInString(s)
	last, _ := utf8.DecodeLastRuneInString(s)
	return !unicode.IsSpace(first) && !unicode.IsSpace(last)
}

func checkValidRow(t *testing.T, h Header, rec *Record, row Row) {
	t.Helper()
	if rec.Problem != ReasonNone || !utf8.Valid(rec.Raw) || len(rec.Fields) != h.NumFields {
		t.Fatalf("line %d %q accepted: problem %v, %d fields of %d", rec.Line, rec.Raw, rec.Problem, len(rec.Fields), h.NumFields)
	}
	if !bytes.Equal(row.ID, rec.Fields[h.ID]) || !bytes.Equal(row.Account, rec.Fields[h.Account]) {
		t.Fatalf("line %d: ids %q %q are not the fields", rec.Line, row.ID, row.Account)
	}
	if !idOK(row.ID) || !idOK(row.Account) {
		t.Fatalf("line %d: accepted ids %q %q break the id rule", rec.Line, row.ID, row.Account)
	}
	amount := string(rec.Fields[h.Amount])
	if want, ok, overflow := oracleCents(amount); !ok || overflow || want != row.Cents {
		t.Fatalf("line %d: amount %q read as %d cents; oracle %d ok=%v overflow=%v", rec.Line, amount, row.Cents, want, ok, overflow)
	}
	stamp := string(rec.Fields[h.Stamp])
	if at, ok := oracleMicros(stamp); !ok || at != row.AtMicros {
		t.Fatalf("line %d: timestamp %q accepted as %d µs; oracle %d ok=%v", rec.Line, stamp, row.AtMicros, at, ok)
	}
	if back, err := ParseTimestamp([]byte(FormatMicros(row.AtMicros))); err != nil || back != row.AtMicros {
		t.Fatalf("line %d: FormatMicros(%d) = %q reads back as %d, %v", rec.Line, row.AtMicros, FormatMicros(row.AtMicros), back, err)
	}
}
