package txnfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Limits of the CSV reader. A physical line whose text (without its CR LF or
// LF) is longer than MaxLineBytes is rejected as one row ("line too long")
// without being held in memory, and a quoted record may span physical lines
// only up to MaxRecordBytes in all.
const (
	MaxLineBytes   = 1 << 20
	MaxRecordBytes = 4 << 20
	// MaxRawBytes is how much of a rejected row's raw text is kept.
	MaxRawBytes = 512
)

// Record is one logical CSV record. Its slices alias the reader's buffers and
// are valid only until the next call to Next.
type Record struct {
	// Line is the 1-based number of the physical line the record starts on.
	Line int64
	// EndLine is the number of the last physical line the record took up:
	// Line for a one-line record, more when a quoted field holds line
	// breaks. A record rejected for a quote that never closes takes up only
	// its first line (the lines after it are read again).
	EndLine int64
	// Raw is the record's text without its final line terminator.
	Raw []byte
	// Fields are the record's fields, unquoted. Nil when Problem is set.
	Fields [][]byte
	// Problem, when not empty, is why the record could not be split into
	// fields; Detail says more.
	Problem Reason
	Detail  string
	// InInput, for a record on one physical line without quotes, says that
	// Raw is exactly the input's bytes at Offset (a byte offset from the
	// start of the input), so that it can be read there again.
	InInput bool
	Offset  int64
}

// CSVReader reads RFC 4180 records from a stream, one at a time, with the
// line number and raw text of each. A UTF-8 byte order mark at the start is
// skipped, CRLF and LF line ends are accepted, fields may be quoted with
// doubled quotes inside and line breaks inside quotes. Empty lines are not
// records. A record that cannot be split (a bare quote, text after a closing
// quote, a quote left open at the end of the input, an over-long line) comes
// back with Problem set rather than as an error, and the reader carries on
// with the next line, so every line of the input is accounted for.
type CSVReader struct {
	r        *bufio.Reader
	lineNo   int64
	started  bool
	eof      bool
	replay   []physLine // lines to read again after a broken quoted record
	rec      []byte
	fields   [][]byte
	unquoted []byte
	pos      int64  // bytes consumed from the input
	plain    Record // the record Next returns on its fast path, reused
	// The limits, MaxLineBytes and MaxRecordBytes except in tests, which
	// make them small so that a fuzzer reaches them.
	maxLine, maxRecord int
	// After a quoted record that never closed: its first line's later
	// lines, up to openThrough, all left its quote open, and openDetail is
	// why a quote open across them is rejected (see quotedRecord).
	openThrough int64
	openDetail  string
	// scanned counts the bytes quoted records took up, for the tests that
	// check the reader stays linear; noMemo turns openThrough off, for the
	// tests that check it changes no outcome.
	scanned int64
	noMemo  bool
}

type physLine struct {
	no      int64
	off     int64  // byte offset of text in the input
	text    []byte // without LF; may end in CR
	lf      bool   // whether the line was terminated by LF
	tooLong bool   // longer than maxLine; text is cut to MaxRawBytes
}

// NewCSVReader returns a reader over r.
func NewCSVReader(r io.Reader) *CSVReader {
	return newCSVReader(r, 256<<10, MaxLineBytes, MaxRecordBytes)
}

func newCSVReader(r io.Reader, bufSize, maxLine, maxRecord int) *CSVReader {
	return &CSVReader{r: bufio.NewReaderSize(r, bufSize), maxLine: maxLine, maxRecord: maxRecord}
}

// readLine returns the next physical line. The returned text aliases the
// reader's buffer unless it came from the replay queue. A line whose text,
// without its line end, is longer than maxLine comes back with tooLong set
// and only its start kept: the rest is skipped, never held in memory.
func (c *CSVReader) readLine() (physLine, error) {
	if n := len(c.replay); n > 0 {
		l := c.replay[0]
		c.replay = c.replay[1:]
		return l, nil
	}
	if c.eof {
		return physLine{}, io.EOF
	}
	c.lineNo++
	no := c.lineNo
	off := c.pos
	line, err := c.r.ReadSlice('\n')
	n := len(line) // the line's length, all of it
	if err == bufio.ErrBufferFull {
		// Longer than the buffer: keep the start, up to just past the limit
		// (room for a BOM and a CR LF), and skip the rest.
		limit := c.maxLine + len(utf8BOM) + 2
		keep := append([]byte(nil), line[:min(len(line), limit)]...)
		for err == bufio.ErrBufferFull {
			line, err = c.r.ReadSlice('\n')
			n += len(line)
			if room := limit - len(keep); room > 0 {
				keep = append(keep, line[:min(room, len(line))]...)
			}
		}
		line = keep
	}
	if err == io.EOF {
		c.eof = true
		if n == 0 {
			c.lineNo--
			return physLine{}, io.EOF
		}
	} else if err != nil {
		return physLine{}, err
	}
	c.pos += int64(n)
	lf := err == nil // ReadSlice found the delimiter
	cut := n > len(line)
	if lf && !cut {
		line = line[:len(line)-1]
	}
	if !c.started {
		c.started = true
		if bytes.HasPrefix(line, utf8BOM) {
			line, off = line[len(utf8BOM):], off+int64(len(utf8BOM))
		}
	}
	if cut || len(trimCR(line)) > c.maxLine {
		return physLine{no: no, off: off, text: CutRaw(line), lf: lf, tooLong: true}, nil
	}
	return physLine{no: no, off: off, text: line, lf: lf}, nil
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// CutRaw cuts a raw row to MaxRawBytes.
func CutRaw(b []byte) []byte {
	if len(b) > MaxRawBytes {
		return b[:MaxRawBytes]
	}
	return b
}

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

// Next returns the next record, or io.EOF after the last one. Other errors
// are I/O errors of the underlying stream. The record, like its slices, is
// valid only until the next call to Next.
func (c *CSVReader) Next() (*Record, error) {
	for {
		first, err := c.readLine()
		if err != nil {
			return nil, err
		}
		if first.tooLong {
			return &Record{Line: first.no, EndLine: first.no, Raw: trimCR(first.text), Problem: ReasonLineTooLong,
				Detail: fmt.Sprintf("line is longer than %d bytes", c.maxLine)}, nil
		}
		text := trimCR(first.text)
		if len(text) == 0 {
			continue // an empty line is not a record
		}
		if bytes.IndexByte(text, '"') < 0 {
			// Fast path: no quotes, one physical line, fields split on commas.
			c.plain = Record{Line: first.no, EndLine: first.no, Raw: text, Fields: c.splitPlain(text), InInput: true, Offset: first.off}
			return &c.plain, nil
		}
		return c.quotedRecord(first)
	}
}

func (c *CSVReader) splitPlain(text []byte) [][]byte {
	c.fields = c.fields[:0]
	for {
		i := bytes.IndexByte(text, ',')
		if i < 0 {
			return append(c.fields, text)
		}
		c.fields = append(c.fields, text[:i])
		text = text[i+1:]
	}
}

// quotedRecord assembles a record that contains quotes, reading further
// physical lines while a quoted field is open. When the quote never closes
// (end of input, an over-long line, MaxRecordBytes reached), the first line
// is rejected and the lines after it are read again as records of their own;
// one of those that opens a quote left open through the same lines is
// rejected the same way (for MaxRecordBytes: the quote is given up where the
// first one was), so the reader stays linear in its input.
func (c *CSVReader) quotedRecord(first physLine) (*Record, error) {
	open := quoteOpenAfter(first.text, false)
	if open && first.no <= c.openThrough && !c.noMemo {
		// This line was read before, inside a quote opened on an earlier
		// line that never closed, and every line after it up to
		// openThrough left that quote open. A quote open at the end of this
		// line meets the same lines in the same state, so it ends the same
		// way: rejected, without reading them all again. Without this a
		// file of many such lines would take time quadratic in its length.
		return &Record{Line: first.no, EndLine: first.no, Raw: CutRaw(trimCR(first.text)), Problem: ReasonMalformedCSV,
			Detail: c.openDetail}, nil
	}
	c.rec = append(c.rec[:0], first.text...)
	c.scanned += int64(len(first.text))
	firstLen := len(first.text) // first.text aliases the read buffer; c.rec keeps a copy
	var taken []physLine        // the lines after the first, kept for replay
	lastLF := first.lf
	broken := func(extra *physLine, detail string) *Record {
		c.openThrough, c.openDetail = first.no, detail
		if n := len(taken); n > 0 {
			c.openThrough = taken[n-1].no
		}
		if extra != nil && extra.tooLong {
			c.openDetail = fmt.Sprintf("quoted field opened on this line is still open at line %d, which is longer than %d bytes", extra.no, c.maxLine)
		} else if extra != nil {
			c.openDetail = fmt.Sprintf("quoted field opened on this line is still open at line %d, %d bytes after the quote opened on line %d", extra.no, c.maxRecord, first.no)
		}
		c.replayAfter(taken, extra)
		return &Record{Line: first.no, EndLine: first.no, Raw: CutRaw(trimCR(c.rec[:firstLen])), Problem: ReasonMalformedCSV, Detail: detail}
	}
	for open && lastLF {
		next, err := c.readLine()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if next.tooLong {
			return broken(&next, fmt.Sprintf("quoted field opened on this line is still open at line %d, which is longer than %d bytes", next.no, c.maxLine)), nil
		}
		if len(c.rec)+1+len(next.text) > c.maxRecord {
			return broken(&next, fmt.Sprintf("quoted field opened on this line is still open after %d bytes", c.maxRecord)), nil
		}
		taken = append(taken, physLine{no: next.no, off: next.off, text: append([]byte(nil), next.text...), lf: next.lf})
		c.rec = append(c.rec, '\n')
		c.rec = append(c.rec, next.text...)
		c.scanned += int64(len(next.text))
		lastLF = next.lf
		open = quoteOpenAfter(next.text, true)
	}
	if open {
		return broken(nil, "quoted field is not closed before the end of the file"), nil
	}
	end := first.no
	if n := len(taken); n > 0 {
		end = taken[n-1].no
	}
	rec := trimCR(c.rec)
	fields, err := c.splitQuoted(rec)
	if err != nil {
		return &Record{Line: first.no, EndLine: end, Raw: CutRaw(rec), Problem: ReasonMalformedCSV, Detail: err.Error()}, nil
	}
	return &Record{Line: first.no, EndLine: end, Raw: rec, Fields: fields}, nil
}

// quoteOpenAfter follows RFC 4180 quoting through one physical line, which
// starts inside a quoted field when open is true, and reports whether a
// quoted field is open at its end. A quote is only an opening quote at the
// start of a field; one in the middle of an unquoted field is a bare quote
// (splitQuoted rejects it) and opens nothing.
func quoteOpenAfter(line []byte, open bool) bool {
	fieldStart := !open
	for i := 0; i < len(line); i++ {
		ch := line[i]
		if open {
			if ch == '"' {
				if i+1 < len(line) && line[i+1] == '"' {
					i++ // an escaped quote
					continue
				}
				open = false
			}
			continue
		}
		if ch == ',' {
			fieldStart = true
			continue
		}
		if ch == '"' && fieldStart {
			open = true
		}
		fieldStart = false
	}
	return open
}

// replayAfter queues the lines that followed a broken quoted record's first
// line so that they are read again as records of their own.
func (c *CSVReader) replayAfter(taken []physLine, extra *physLine) {
	q := make([]physLine, 0, len(taken)+1+len(c.replay))
	q = append(q, taken...)
	if extra != nil {
		copied := *extra
		copied.text = append([]byte(nil), extra.text...)
		q = append(q, copied)
	}
	c.replay = append(q, c.replay...)
}

// splitQuoted splits a record that contains quotes into unquoted fields.
func (c *CSVReader) splitQuoted(rec []byte) ([][]byte, error) {
	c.fields = c.fields[:0]
	c.unquoted = c.unquoted[:0]
	// Field bounds are collected first as offsets into c.unquoted, because
	// appending may move that buffer.
	type span struct{ from, to int }
	var spans []span
	i := 0
	for {
		from := len(c.unquoted)
		if i < len(rec) && rec[i] == '"' {
			i++
			for {
				j := bytes.IndexByte(rec[i:], '"')
				if j < 0 {
					return nil, errors.New("quoted field is not closed")
				}
				c.unquoted = append(c.unquoted, rec[i:i+j]...)
				i += j + 1
				if i < len(rec) && rec[i] == '"' {
					c.unquoted = append(c.unquoted, '"')
					i++
					continue
				}
				break
			}
			if i < len(rec) && rec[i] != ',' {
				return nil, fmt.Errorf("unexpected %q after a closing quote", rec[i])
			}
		} else {
			j := bytes.IndexByte(rec[i:], ',')
			if j < 0 {
				j = len(rec) - i
			}
			field := rec[i : i+j]
			if bytes.IndexByte(field, '"') >= 0 {
				return nil, errors.New("bare quote in an unquoted field")
			}
			c.unquoted = append(c.unquoted, field...)
			i += j
		}
		spans = append(spans, span{from, len(c.unquoted)})
		if i >= len(rec) {
			break
		}
		i++ // the comma
		if i == len(rec) {
			spans = append(spans, span{len(c.unquoted), len(c.unquoted)})
			break
		}
	}
	for _, s := range spans {
		c.fields = append(c.fields, c.unquoted[s.from:s.to])
	}
	return c.fields, nil
}
