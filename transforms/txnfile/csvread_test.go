package txnfile

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// rec is a record as the tests compare it.
type rec struct {
	Line    int64
	Raw     string
	Fields  []string
	Problem Reason
}

func readAll(t *testing.T, in string) []rec {
	t.Helper()
	r := NewCSVReader(strings.NewReader(in))
	var out []rec
	for {
		got, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		var fields []string
		if got.Fields != nil {
			fields = []string{}
			for _, f := range got.Fields {
				fields = append(fields, string(f))
			}
		}
		out = append(out, rec{Line: got.Line, Raw: string(got.Raw), Fields: fields, Problem: got.Problem})
		if len(out) > 1_000_000 {
			t.Fatal("reader does not end")
		}
	}
}

func TestCSVReader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []rec
	}{
		{"empty input", "", nil},
		{"one plain line without LF", "a,b", []rec{{1, "a,b", []string{"a", "b"}, 0}}},
		{"LF and CRLF", "a,b\nc,d\r\ne,f\n", []rec{
			{1, "a,b", []string{"a", "b"}, 0},
			{2, "c,d", []string{"c", "d"}, 0},
			{3, "e,f", []string{"e", "f"}, 0},
		}},
		{"BOM at start only", "\ufeffa,b\n\ufeffc\n", []rec{
			{1, "a,b", []string{"a", "b"}, 0},
			{2, "\ufeffc", []string{"\ufeffc"}, 0},
		}},
		{"empty lines are not records", "a\n\n\r\nb\n", []rec{
			{1, "a", []string{"a"}, 0},
			{4, "b", []string{"b"}, 0},
		}},
		{"empty fields", "a,,\n,\n", []rec{
			{1, "a,,", []string{"a", "", ""}, 0},
			{2, ",", []string{"", ""}, 0},
		}},
		{"quoted comma and doubled quotes", `"a,b","say ""hi""",c` + "\n", []rec{
			{1, `"a,b","say ""hi""",c`, []string{"a,b", `say "hi"`, "c"}, 0},
		}},
		{"empty quoted field", `"",x,""` + "\n", []rec{
			{1, `"",x,""`, []string{"", "x", ""}, 0},
		}},
		{"line break inside quotes", "a,\"one\ntwo\",b\nnext\n", []rec{
			{1, "a,\"one\ntwo\",b", []string{"a", "one\ntwo", "b"}, 0},
			{3, "next", []string{"next"}, 0},
		}},
		{"CRLF inside quotes and after", "a,\"one\r\ntwo\"\r\nb\r\n", []rec{
			{1, "a,\"one\r\ntwo\"", []string{"a", "one\r\ntwo"}, 0},
			{3, "b", []string{"b"}, 0},
		}},
		{"bare quote in unquoted field", "a,b\"c,d\nok\n", []rec{
			{1, `a,b"c,d`, nil, ReasonMalformedCSV},
			{2, "ok", []string{"ok"}, 0},
		}},
		{"a single bare quote does not open a field across lines", "a,b\"c,d\nnext,1\n", []rec{
			{1, `a,b"c,d`, nil, ReasonMalformedCSV},
			{2, "next,1", []string{"next", "1"}, 0},
		}},
		{"text after closing quote", "\"a\"x,b\nok\n", []rec{
			{1, `"a"x,b`, nil, ReasonMalformedCSV},
			{2, "ok", []string{"ok"}, 0},
		}},
		{"quote open at end of input: the following lines are read again", "x,\"open\ny,1\nz,2\n", []rec{
			{1, `x,"open`, nil, ReasonMalformedCSV},
			{2, "y,1", []string{"y", "1"}, 0},
			{3, "z,2", []string{"z", "2"}, 0},
		}},
		{"truncated mid-row in quotes, no final LF", "a,b\nc,\"d", []rec{
			{1, "a,b", []string{"a", "b"}, 0},
			{2, `c,"d`, nil, ReasonMalformedCSV},
		}},
		{"truncated mid-row without quotes", "a,b\nc,", []rec{
			{1, "a,b", []string{"a", "b"}, 0},
			{2, "c,", []string{"c", ""}, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := readAll(t, tt.in)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("records:\n got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestCSVReaderLongLine(t *testing.T) {
	long := strings.Repeat("x", MaxLineBytes+10)
	got := readAll(t, "a,1\n"+long+"\nb,2\n"+long)
	if len(got) != 4 {
		t.Fatalf("got %d records, want 4: %+v", len(got), got)
	}
	for i, want := range []rec{{Line: 1}, {Line: 2, Problem: ReasonLineTooLong}, {Line: 3}, {Line: 4, Problem: ReasonLineTooLong}} {
		if got[i].Line != want.Line || got[i].Problem != want.Problem {
			t.Errorf("record %d: line %d problem %v, want line %d problem %v", i, got[i].Line, got[i].Problem, want.Line, want.Problem)
		}
		if len(got[i].Raw) > MaxLineBytes {
			t.Errorf("record %d keeps %d raw bytes", i, len(got[i].Raw))
		}
	}
	// A line just under the limit is an ordinary record.
	ok := strings.Repeat("y", MaxLineBytes-1)
	if got := readAll(t, ok+"\n"); len(got) != 1 || got[0].Problem != 0 || len(got[0].Raw) != len(ok) {
		t.Errorf("line under the limit: %d records", len(got))
	}
}

func TestCSVReaderOpenQuoteThenLongLine(t *testing.T) {
	long := strings.Repeat("x", MaxLineBytes+1)
	got := readAll(t, "a,\"open\nb,2\n"+long+"\nc,3\n")
	want := []struct {
		line    int64
		problem Reason
	}{{1, ReasonMalformedCSV}, {2, 0}, {3, ReasonLineTooLong}, {4, 0}}
	if len(got) != len(want) {
		t.Fatalf("got %d records: %+v", len(got), got)
	}
	for i, w := range want {
		if got[i].Line != w.line || got[i].Problem != w.problem {
			t.Errorf("record %d: line %d problem %v, want line %d problem %v", i, got[i].Line, got[i].Problem, w.line, w.problem)
		}
	}
}

func TestCSVReaderRunawayQuote(t *testing.T) {
	// A stray quote followed by more than MaxRecordBytes of lines: the
	// opening line is rejected and every later line is still a record.
	var b strings.Builder
	b.WriteString("bad,\"open\n")
	line := strings.Repeat("z", 1000) + ",1\n"
	n := MaxRecordBytes/len(line) + 10
	for i := 0; i < n; i++ {
		b.WriteString(line)
	}
	got := readAll(t, b.String())
	if len(got) != n+1 {
		t.Fatalf("got %d records, want %d", len(got), n+1)
	}
	if got[0].Problem != ReasonMalformedCSV || got[0].Line != 1 {
		t.Errorf("first record: %+v", got[0].Problem)
	}
	for i, r := range got[1:] {
		if r.Problem != 0 || r.Line != int64(i+2) {
			t.Fatalf("record %d: line %d problem %v", i+1, r.Line, r.Problem)
		}
	}
}

// TestCSVReaderLineLimitExact: the limit is on a line's text without its
// line end (LF or CR LF) and without a leading BOM.
func TestCSVReaderLineLimitExact(t *testing.T) {
	at := strings.Repeat("x", MaxLineBytes)
	over := at + "x"
	tests := []struct {
		name string
		in   string
		want Reason
	}{
		{"at the limit, LF", at + "\nok\n", ReasonNone},
		{"at the limit, CR LF", at + "\r\nok\n", ReasonNone},
		{"at the limit, no line end", at, ReasonNone},
		{"at the limit after a BOM", "\ufeff" + at + "\nok\n", ReasonNone},
		{"one over, LF", over + "\nok\n", ReasonLineTooLong},
		{"one over, CR LF", over + "\r\nok\n", ReasonLineTooLong},
		{"one over, no line end", over, ReasonLineTooLong},
		{"one over after a BOM", "\ufeff" + over + "\nok\n", ReasonLineTooLong},
	}
	for _, tt := range tests {
		got := readAll(t, tt.in)
		if len(got) == 0 || got[0].Problem != tt.want || got[0].Line != 1 {
			t.Errorf("%s: first record %+v, want problem %v", tt.name, got[0].Problem, tt.want)
		}
		if strings.HasSuffix(tt.in, "ok\n") && (len(got) != 2 || got[1].Raw != "ok" || got[1].Line != 2) {
			t.Errorf("%s: %d records", tt.name, len(got))
		}
	}
}

func TestCSVReaderEndLine(t *testing.T) {
	in := "a\n\"b\nc\",d\n\"e\nf\"x\ng,\"open\nh\n"
	r := NewCSVReader(strings.NewReader(in))
	var got []string
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d-%d %v", rec.Line, rec.EndLine, rec.Problem))
	}
	want := []string{"1-1 none", "2-3 none", "4-5 malformed_csv", "6-6 malformed_csv", "7-7 none"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("records %v, want %v", got, want)
	}
}

// TestCSVReaderStaysLinear: lines that each open a quote that stays open
// through all the lines after them (to the end of the file, an over-long
// line, or the record limit) are each rejected, and the reader takes up
// every byte in a quoted record only about once, not once per line.
func TestCSVReaderStaysLinear(t *testing.T) {
	const line = "xxx\",\"" // opens a quote read alone, and leaves one open
	if !quoteOpenAfter([]byte(line), false) || !quoteOpenAfter([]byte(line), true) {
		t.Fatal("the test line does not keep a quote open")
	}
	n := 20000
	tests := []struct {
		name                        string
		in                          string
		bufSize, maxLine, maxRecord int
	}{
		{"to the end of the file", strings.Repeat(line+"\n", n), 256 << 10, MaxLineBytes, MaxRecordBytes},
		{"to an over-long line", strings.Repeat(line+"\n", n) + strings.Repeat("y", 100) + "\n", 64, 50, MaxRecordBytes},
		{"to the record limit", strings.Repeat(line+"\n", n), 64, 50, 7000},
	}
	for _, tt := range tests {
		r := newCSVReader(strings.NewReader(tt.in), tt.bufSize, tt.maxLine, tt.maxRecord)
		var recs, malformed int
		for {
			rec, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			recs++
			if rec.Problem == ReasonMalformedCSV {
				malformed++
			}
		}
		if malformed != n {
			t.Errorf("%s: %d of %d lines rejected as malformed_csv (%d records)", tt.name, malformed, n, recs)
		}
		if limit := int64(3 * len(tt.in)); r.scanned > limit {
			t.Errorf("%s: quoted records took up %d bytes of a %d-byte input: not linear", tt.name, r.scanned, len(tt.in))
		}
	}
}

// TestCSVReaderOffsets checks that a plain record's Offset points at its raw
// text in the input, after a byte order mark, CRLF line ends, quoted records
// spanning lines and empty lines, and that other records are not InInput.
func TestCSVReaderOffsets(t *testing.T) {
	in := "\xEF\xBB\xBFid,acct\r\nt1,a\r\n\r\n\"q,1\",b\nt2,\"multi\nline\"\nt3,c\n" + strings.Repeat("x", 300) + ",d"
	r := NewCSVReader(strings.NewReader(in))
	plain := 0
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		quoted := strings.Contains(string(rec.Raw), "\"")
		switch {
		case quoted && rec.InInput:
			t.Errorf("line %d (quoted) is InInput", rec.Line)
		case !quoted && (!rec.InInput || in[rec.Offset:rec.Offset+int64(len(rec.Raw))] != string(rec.Raw)):
			t.Errorf("line %d: offset %d does not point at %q", rec.Line, rec.Offset, rec.Raw)
		case !quoted:
			plain++
		}
	}
	if plain != 4 {
		t.Errorf("%d plain records, want 4 (header, t1, t3, the last)", plain)
	}
}
