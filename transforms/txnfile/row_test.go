package txnfile

import (
	"strings"
	"testing"
	"time"
)

func record(t *testing.T, line string) *Record {
	t.Helper()
	r, err := NewCSVReader(strings.NewReader(line)).Next()
	if err != nil {
		t.Fatalf("read %q: %v", line, err)
	}
	return r
}

func TestParseHeader(t *testing.T) {
	tests := []struct {
		line    string
		want    Header
		wantErr string
	}{
		{"transaction_id,account_id,amount,timestamp", Header{4, 0, 1, 2, 3}, ""},
		{"account_id,timestamp,memo,amount,transaction_id", Header{5, 4, 0, 3, 1}, ""},
		{" Transaction_ID , ACCOUNT_ID,Amount,TimeStamp", Header{4, 0, 1, 2, 3}, ""},
		{"transaction_id,account_id,amount", Header{}, "lacks column(s) timestamp"},
		{"id,account,value,time", Header{}, "lacks column(s) transaction_id, account_id, amount, timestamp"},
		{"transaction_id,account_id,amount,timestamp,amount", Header{}, `names column "amount" twice`},
		{`transaction_id,"account_id,amount,timestamp`, Header{}, "not valid CSV"},
		{"transaction_id,account_id,amount,timestamp\xff", Header{}, "not valid UTF-8"},
	}
	for _, tt := range tests {
		got, err := ParseHeader(record(t, tt.line))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseHeader(%q) error = %v, want it to say %q", tt.line, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseHeader(%q) = %+v, %v; want %+v", tt.line, got, err, tt.want)
		}
	}
}

func TestParseRowReasons(t *testing.T) {
	h := Header{NumFields: 4, ID: 0, Account: 1, Amount: 2, Stamp: 3}
	tests := []struct {
		line   string
		reason Reason
	}{
		{"t1,acc,1.00,2026-12-01T00:00:00Z", ReasonNone},
		{"t1,acc,-0.5,2026-12-01T00:00:00.123456+05:30", ReasonNone},
		{"t1,ä-kønto,1.00,2026-12-01T00:00:00Z", ReasonNone},
		{"t1,acc,1.00", ReasonWrongFieldCount},
		{"t1,acc,1.00,2026-12-01T00:00:00Z,extra", ReasonWrongFieldCount},
		{",acc,1.00,2026-12-01T00:00:00Z", ReasonEmptyID},
		{"t1,,1.00,2026-12-01T00:00:00Z", ReasonEmptyID},
		{" t1,acc,1.00,2026-12-01T00:00:00Z", ReasonBadID},
		{"t1,acc ,1.00,2026-12-01T00:00:00Z", ReasonBadID},
		{"t1,acc\u00a0,1.00,2026-12-01T00:00:00Z", ReasonBadID}, // no-break space
		{"t\x01,acc,1.00,2026-12-01T00:00:00Z", ReasonBadID},
		{"t1,ac\u0085c,1.00,2026-12-01T00:00:00Z", ReasonBadID}, // C1 control
		{"\"t\r1\",acc,1.00,2026-12-01T00:00:00Z", ReasonBadID},
		{"t1,acc,1.001,2026-12-01T00:00:00Z", ReasonBadAmount},
		{"t1,acc,,2026-12-01T00:00:00Z", ReasonBadAmount},
		{"t1,acc,1e2,2026-12-01T00:00:00Z", ReasonBadAmount},
		{"t1,acc,99999999999999999999.99,2026-12-01T00:00:00Z", ReasonAmountOverflow},
		{"t1,acc,1.00,2026-12-01 00:00:00Z", ReasonBadTimestamp},
		{"t1,acc,1.00,2026-12-01T00:00:00", ReasonBadTimestamp},
		{"t1,acc,1.00,2026-13-01T00:00:00Z", ReasonBadTimestamp},
		{"t1,acc,1.00,2026-12-01T00:00:00.0000001Z", ReasonBadTimestamp},
		{"t1,acc,1.00,1733011200", ReasonBadTimestamp},
		{"t1,acc,1.00,2026-12-01T9:00:00Z", ReasonBadTimestamp},       // one-digit hour
		{`t1,acc,1.00,"2026-12-01T09:00:00,5Z"`, ReasonBadTimestamp},  // a comma before the fraction
		{"t1,acc,1.00,2026-12-01T09:00:00.Z", ReasonBadTimestamp},     // no fraction digits
		{"t1,acc,1.00,2026-12-01T09:00:00+24:00", ReasonBadTimestamp}, // offset hour
		{"t1,acc,1.00,2026-12-01T09:00:00+01:60", ReasonBadTimestamp}, // offset minute
		{"t1,acc,1.00,2026-12-01T09:00:00+0100", ReasonBadTimestamp},  // offset without ':'
		{"t1,acc,1.00,2026-12-01t09:00:00z", ReasonBadTimestamp},      // lower-case t and z
		{"t1,acc,1.00,2026-02-30T09:00:00Z", ReasonBadTimestamp},      // no such day
		{"t1,acc,1.00,0000-01-01T00:00:00+01:00", ReasonBadTimestamp}, // year -1 in UTC
		{"t1,acc,1.00,9999-12-31T23:30:00-01:00", ReasonBadTimestamp}, // year 10000 in UTC
		{"t1,acc,1.00,0000-01-01T00:00:00Z", ReasonNone},              // the first instant
		{"t1,acc,1.00,9999-12-31T23:59:59.999999Z", ReasonNone},       // the last
		{"t1,acc,1.00,2024-02-29T12:00:00.5-23:59", ReasonNone},
		{"t1,acc,1.00,2026-12-01T09:00:00.1000000Z", ReasonNone}, // seven digits, a whole microsecond
		{"t1,acc\xff,1.00,2026-12-01T00:00:00Z", ReasonInvalidUTF8},
		{"t1,a\"cc,1.00,2026-12-01T00:00:00Z", ReasonMalformedCSV},
	}
	seen := map[Reason]bool{}
	for _, tt := range tests {
		_, reason, detail := ParseRow(h, record(t, tt.line))
		if reason != tt.reason {
			t.Errorf("ParseRow(%q) = %v (%s), want %v", tt.line, reason, detail, tt.reason)
		}
		if reason != ReasonNone && detail == "" {
			t.Errorf("ParseRow(%q): no detail for %v", tt.line, reason)
		}
		seen[reason] = true
	}
	// Every row-level reason is covered here; the others have their own
	// tests (line too long: TestCSVReaderLongLine; duplicates: dedup).
	for _, r := range Reasons() {
		switch r {
		case ReasonLineTooLong, ReasonConflictingDuplicate, ReasonConflictAcrossBatches:
			continue
		}
		if !seen[r] {
			t.Errorf("no test row for reason %v", r)
		}
	}
}

func TestParseRowValues(t *testing.T) {
	h := Header{NumFields: 5, ID: 4, Account: 0, Amount: 3, Stamp: 1}
	row, reason, detail := ParseRow(h, record(t, `acc-1,2026-12-01T12:00:00+01:00,"memo, with comma",-12.5,t-9`))
	if reason != ReasonNone {
		t.Fatalf("rejected: %v %s", reason, detail)
	}
	want := time.Date(2026, 12, 1, 11, 0, 0, 0, time.UTC).UnixMicro()
	if string(row.ID) != "t-9" || string(row.Account) != "acc-1" || row.Cents != -1250 || row.AtMicros != want {
		t.Errorf("row = %s %s %d %d", row.ID, row.Account, row.Cents, row.AtMicros)
	}
}

func TestReasonCodes(t *testing.T) {
	codes := map[string]bool{}
	for _, r := range Reasons() {
		c := r.Code()
		if c == "" || codes[c] {
			t.Errorf("reason %d: code %q empty or repeated", r, c)
		}
		codes[c] = true
		if back, ok := ReasonFromCode(c); !ok || back != r {
			t.Errorf("ReasonFromCode(%q) = %v, %v", c, back, ok)
		}
	}
}
