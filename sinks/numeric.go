package sinks

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/big"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// cents is an amount in minor units bound for a numeric column with two
// decimal places. The pool's connections encode it in PostgreSQL's binary
// numeric format by integer arithmetic: pgtype.Numeric goes through math/big
// for every value, which was a tenth of the CPU of a ledger-mode run at 10M
// rows. On a connection without centsCodec it still encodes right, through
// NumericValue.
type cents int64

// NumericValue implements pgtype.NumericValuer.
func (c cents) NumericValue() (pgtype.Numeric, error) {
	return pgtype.Numeric{Int: big.NewInt(int64(c)), Exp: -2, Valid: true}, nil
}

// centsCodec is PostgreSQL's numeric codec with a fast binary encoder for
// cents; everything else is pgtype.NumericCodec's.
type centsCodec struct{ pgtype.NumericCodec }

// PlanEncode implements pgtype.Codec.
func (c centsCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if _, ok := value.(cents); ok && format == pgtype.BinaryFormatCode {
		return encodeCents{}
	}
	return c.NumericCodec.PlanEncode(m, oid, format, value)
}

// registerCents makes conn encode cents with centsCodec.
func registerCents(_ context.Context, conn *pgx.Conn) error {
	conn.TypeMap().RegisterType(&pgtype.Type{Name: "numeric", OID: pgtype.NumericOID, Codec: centsCodec{}})
	return nil
}

type encodeCents struct{}

// numericNegative is the sign word of a negative numeric.
const numericNegative = 0x4000

// Encode appends c as a binary numeric: the digit count, the weight of the
// first digit (in powers of 10000), the sign and the display scale, then
// the base-10000 digits, most significant first, without leading or
// trailing zero digits.
func (encodeCents) Encode(value any, buf []byte) ([]byte, error) {
	c, ok := value.(cents)
	if !ok {
		return nil, fmt.Errorf("cents codec: cannot encode %T", value)
	}
	var sign uint16
	v := uint64(c)
	if c < 0 {
		sign, v = numericNegative, uint64(-c) // -MinInt64 wraps to its own magnitude as uint64
	}
	// Digits from the least significant: the fractional one (two decimal
	// places are the first two of a base-10000 digit), then the integer part.
	var digits [7]uint16 // 20 integer decimal digits at most: 5 groups, and the fraction
	n := 0
	digits[n], n = uint16(v%100*100), n+1
	for i := v / 100; i > 0; i /= 10000 {
		digits[n], n = uint16(i%10000), n+1
	}
	weight := n - 2 // the fraction's digit has weight -1
	lo := 0
	for lo < n && digits[lo] == 0 {
		lo++ // trailing zero digits
	}
	hi := n
	for hi > lo && digits[hi-1] == 0 {
		hi--
		weight--
	}
	if lo == hi {
		weight = 0 // zero: no digits
	}
	buf = binary.BigEndian.AppendUint16(buf, uint16(hi-lo))
	buf = binary.BigEndian.AppendUint16(buf, uint16(int16(weight)))
	buf = binary.BigEndian.AppendUint16(buf, sign)
	buf = binary.BigEndian.AppendUint16(buf, 2)
	for i := hi - 1; i >= lo; i-- {
		buf = binary.BigEndian.AppendUint16(buf, digits[i])
	}
	return buf, nil
}
