package transforms

import (
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
)

func init() {
	register.Combiner1[Totals](&SumTotalsFn{})
}

// SumPerShard combines the per-bucket account totals of each shard into one
// Totals per shard: every account of the shard once, with its sum (checked
// for overflow), transaction count and latest transaction time. The combiner
// is lifted, so partial sums are merged before the shuffle.
func SumPerShard(s beam.Scope, totals beam.PCollection) beam.PCollection {
	s = s.Scope("Sum")
	return beam.CombinePerKey(s, &SumTotalsFn{}, totals)
}

// SumTotalsFn is the combiner of SumPerShard. Its accumulator is a Totals
// list sorted by account; merging two is a linear merge.
type SumTotalsFn struct{}

// CreateAccumulator returns an empty list.
func (SumTotalsFn) CreateAccumulator() Totals { return Totals{} }

// AddInput merges one per-bucket list into the accumulator.
func (fn SumTotalsFn) AddInput(acc, in Totals) (Totals, error) {
	return fn.MergeAccumulators(acc, in)
}

// MergeAccumulators merges two sorted lists, adding the totals of accounts
// present in both.
func (SumTotalsFn) MergeAccumulators(a, b Totals) (Totals, error) {
	if len(a.Rows) == 0 {
		return b, nil
	}
	if len(b.Rows) == 0 {
		return a, nil
	}
	out := make([]Total, 0, len(a.Rows)+len(b.Rows))
	i, j := 0, 0
	for i < len(a.Rows) && j < len(b.Rows) {
		switch c := strings.Compare(a.Rows[i].Account, b.Rows[j].Account); {
		case c < 0:
			out = append(out, a.Rows[i])
			i++
		case c > 0:
			out = append(out, b.Rows[j])
			j++
		default:
			t := a.Rows[i]
			if err := t.Add(b.Rows[j]); err != nil {
				return Totals{}, err
			}
			out = append(out, t)
			i++
			j++
		}
	}
	out = append(out, a.Rows[i:]...)
	out = append(out, b.Rows[j:]...)
	return Totals{Rows: out}, nil
}

// ExtractOutput returns the accumulator.
func (SumTotalsFn) ExtractOutput(acc Totals) Totals { return acc }
