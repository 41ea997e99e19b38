package txnfile

import (
	"errors"
	"math"
	"math/bits"
	"strconv"
)

// Errors returned by ParseCents. Each maps to one rejection reason.
var (
	errBadAmount      = errors.New("amount must match -?[0-9]+(\\.[0-9]{1,2})?")
	errAmountOverflow = errors.New("amount does not fit in 64-bit cents")
)

// ParseCents parses a decimal amount of the form -?[0-9]+(\.[0-9]{1,2})? into
// integer minor units (cents). It never goes through floating point: "10.1"
// is 1010 and "-0.05" is -5. Amounts whose cents do not fit in an int64 are
// rejected with an overflow error rather than wrapped.
func ParseCents(s string) (int64, error) {
	i := 0
	neg := false
	if i < len(s) && s[i] == '-' {
		neg = true
		i++
	}
	start := i
	// The magnitude is accumulated as uint64 so that the most negative value
	// (-92233720368547758.08) still parses.
	var mag uint64
	overflow := false
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		mag, overflow = mulAdd(mag, 10, uint64(s[i]-'0'), overflow)
		i++
	}
	if i == start {
		return 0, errBadAmount
	}
	frac := 0
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && s[i] >= '0' && s[i] <= '9' && frac < 3 {
			mag, overflow = mulAdd(mag, 10, uint64(s[i]-'0'), overflow)
			frac++
			i++
		}
		if frac == 0 || frac > 2 {
			return 0, errBadAmount
		}
	}
	if i != len(s) {
		return 0, errBadAmount
	}
	for ; frac < 2; frac++ {
		mag, overflow = mulAdd(mag, 10, 0, overflow)
	}
	if overflow {
		return 0, errAmountOverflow
	}
	if neg {
		if mag > 1<<63 {
			return 0, errAmountOverflow
		}
		return -int64(mag), nil // -(1<<63) wraps to itself, which is the right value
	}
	if mag > math.MaxInt64 {
		return 0, errAmountOverflow
	}
	return int64(mag), nil
}

// mulAdd returns a*m+d, reporting overflow of uint64 sticky in ovf.
func mulAdd(a, m, d uint64, ovf bool) (uint64, bool) {
	hi, lo := bits.Mul64(a, m)
	sum, carry := bits.Add64(lo, d, 0)
	return sum, ovf || hi != 0 || carry != 0
}

// FormatCents renders integer cents as a decimal string with exactly two
// fraction digits, the text form PostgreSQL's numeric accepts: 1010 is
// "10.10" and -5 is "-0.05".
func FormatCents(c int64) string {
	return string(AppendCents(nil, c))
}

// AppendCents appends the decimal form of c (see FormatCents) to b.
func AppendCents(b []byte, c int64) []byte {
	var mag uint64
	if c < 0 {
		b = append(b, '-')
		mag = uint64(-(c + 1)) + 1 // safe for math.MinInt64
	} else {
		mag = uint64(c)
	}
	b = strconv.AppendUint(b, mag/100, 10)
	r := mag % 100
	return append(b, '.', byte('0'+r/10), byte('0'+r%10))
}

// AddCents returns a+b, or ok=false when the sum overflows an int64.
func AddCents(a, b int64) (sum int64, ok bool) {
	s := a + b
	// Overflow happened when both operands have the same sign and the sum's
	// sign differs from theirs.
	if (a >= 0) == (b >= 0) && (s >= 0) != (a >= 0) {
		return 0, false
	}
	return s, true
}
