// Package txnfile reads transaction files: RFC 4180 records with their line
// numbers and raw text, the header, the row rules (ids, amounts, timestamps)
// and the fixed list of rejection reasons. Money is integer cents throughout.
// It knows nothing of Beam or SQL, so the sink-independent verifier and the
// fuzz tests use it as it is.
package txnfile

import "fmt"

// Reason is why a row was rejected. The list is fixed: every rejected row has
// exactly one of these, stored by its Code in the rejected_rows table.
type Reason uint8

// The rejection reasons.
const (
	ReasonNone Reason = iota
	// ReasonWrongFieldCount: the row has more or fewer fields than the header.
	ReasonWrongFieldCount
	// ReasonEmptyID: transaction_id or account_id is empty.
	ReasonEmptyID
	// ReasonBadID: an id has surrounding whitespace or control characters.
	ReasonBadID
	// ReasonBadAmount: amount is not -?[0-9]+(\.[0-9]{1,2})?.
	ReasonBadAmount
	// ReasonAmountOverflow: amount's cents do not fit in 64 bits.
	ReasonAmountOverflow
	// ReasonBadTimestamp: timestamp is not RFC 3339 with at most microsecond precision.
	ReasonBadTimestamp
	// ReasonInvalidUTF8: the row is not valid UTF-8.
	ReasonInvalidUTF8
	// ReasonMalformedCSV: the row breaks RFC 4180 quoting.
	ReasonMalformedCSV
	// ReasonLineTooLong: a physical line is longer than MaxLineBytes.
	ReasonLineTooLong
	// ReasonConflictingDuplicate: another row of the batch has the same
	// transaction_id but a different account, amount or time. Every copy is
	// rejected, so the outcome does not depend on the order rows are seen in.
	ReasonConflictingDuplicate
	// ReasonConflictAcrossBatches: in ledger mode, the transaction_id is in the
	// ledger already, from an earlier batch, with a different account, amount
	// or time.
	ReasonConflictAcrossBatches

	numReasons
)

var reasonCodes = [numReasons]string{
	ReasonNone:                  "none",
	ReasonWrongFieldCount:       "wrong_field_count",
	ReasonEmptyID:               "empty_id",
	ReasonBadID:                 "bad_id",
	ReasonBadAmount:             "bad_amount",
	ReasonAmountOverflow:        "amount_overflow",
	ReasonBadTimestamp:          "bad_timestamp",
	ReasonInvalidUTF8:           "invalid_utf8",
	ReasonMalformedCSV:          "malformed_csv",
	ReasonLineTooLong:           "line_too_long",
	ReasonConflictingDuplicate:  "conflicting_duplicate",
	ReasonConflictAcrossBatches: "conflicting_duplicate_across_batches",
}

// Code is the reason's stable identifier, as stored in PostgreSQL.
func (r Reason) Code() string {
	if r < numReasons {
		return reasonCodes[r]
	}
	return fmt.Sprintf("reason_%d", uint8(r))
}

// String returns Code.
func (r Reason) String() string { return r.Code() }

// Reasons lists every rejection reason, in a fixed order.
func Reasons() []Reason {
	out := make([]Reason, 0, numReasons-1)
	for r := ReasonNone + 1; r < numReasons; r++ {
		out = append(out, r)
	}
	return out
}

// ReasonFromCode returns the reason with the given code.
func ReasonFromCode(code string) (Reason, bool) {
	for r := ReasonNone + 1; r < numReasons; r++ {
		if reasonCodes[r] == code {
			return r, true
		}
	}
	return ReasonNone, false
}
