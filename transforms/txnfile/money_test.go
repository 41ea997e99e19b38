package txnfile

import (
	"math"
	"testing"
)

func TestParseCents(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr error
	}{
		{"0", 0, nil},
		{"-0", 0, nil},
		{"1", 100, nil},
		{"10.1", 1010, nil},
		{"10.10", 1010, nil},
		{"-0.05", -5, nil},
		{"007.50", 750, nil},
		{"123456789.99", 12345678999, nil},
		{"92233720368547758.07", math.MaxInt64, nil},
		{"-92233720368547758.08", math.MinInt64, nil},
		{"92233720368547758.08", 0, errAmountOverflow},
		{"-92233720368547758.09", 0, errAmountOverflow},
		{"99999999999999999999", 0, errAmountOverflow},
		{"100000000000000000000000000000.00", 0, errAmountOverflow},
		{"", 0, errBadAmount},
		{"-", 0, errBadAmount},
		{".5", 0, errBadAmount},
		{"5.", 0, errBadAmount},
		{"1.001", 0, errBadAmount},
		{"+1.00", 0, errBadAmount},
		{" 1.00", 0, errBadAmount},
		{"1.00 ", 0, errBadAmount},
		{"1,000.00", 0, errBadAmount},
		{"1e3", 0, errBadAmount},
		{"--1", 0, errBadAmount},
		{"1.-1", 0, errBadAmount},
		{"NaN", 0, errBadAmount},
		{"１", 0, errBadAmount}, // a full-width digit is not [0-9]
	}
	for _, tt := range tests {
		got, err := ParseCents(tt.in)
		if err != tt.wantErr || got != tt.want {
			t.Errorf("ParseCents(%q) = %d, %v; want %d, %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestFormatCents(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0.00"},
		{5, "0.05"},
		{-5, "-0.05"},
		{100, "1.00"},
		{1010, "10.10"},
		{-12345, "-123.45"},
		{math.MaxInt64, "92233720368547758.07"},
		{math.MinInt64, "-92233720368547758.08"},
	}
	for _, tt := range tests {
		if got := FormatCents(tt.in); got != tt.want {
			t.Errorf("FormatCents(%d) = %q, want %q", tt.in, got, tt.want)
		}
		if back, err := ParseCents(tt.want); err != nil || back != tt.in {
			t.Errorf("ParseCents(FormatCents(%d)) = %d, %v", tt.in, back, err)
		}
	}
}

func TestAddCents(t *testing.T) {
	tests := []struct {
		a, b, want int64
		ok         bool
	}{
		{1, 2, 3, true},
		{-1, -2, -3, true},
		{math.MaxInt64, 0, math.MaxInt64, true},
		{math.MaxInt64, 1, 0, false},
		{math.MinInt64, -1, 0, false},
		{math.MaxInt64, math.MinInt64, -1, true},
		{math.MinInt64, 0, math.MinInt64, true},
	}
	for _, tt := range tests {
		got, ok := AddCents(tt.a, tt.b)
		if ok != tt.ok || got != tt.want {
			t.Errorf("AddCents(%d, %d) = %d, %v; want %d, %v", tt.a, tt.b, got, ok, tt.want, tt.ok)
		}
	}
}
