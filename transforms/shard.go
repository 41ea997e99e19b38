package transforms

// FNV-1a, 64-bit, as in hash/fnv, written out so that hashing a string does
// not allocate on the hot path.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// FNV1a64 returns the 64-bit FNV-1a hash of the UTF-8 bytes of s.
func FNV1a64(s string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}

// Shard returns the sink shard that writes account: FNV-1a 64 of the
// account id modulo shards. Every account has exactly one shard, the same on
// every run and every runner, so exactly one sink worker writes it.
func Shard(account string, shards int) int {
	if shards <= 1 {
		return 0
	}
	return int(FNV1a64(account) % uint64(shards))
}

// DedupBucket returns the dedup bucket of a transaction id, in [0, buckets):
// FNV-1a 64 of the id modulo buckets. All copies of a transaction id land in
// the same bucket, whichever file they come from.
func DedupBucket(transactionID []byte, buckets int) int {
	if buckets <= 1 {
		return 0
	}
	h := uint64(fnvOffset64)
	for _, c := range transactionID {
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return int(h % uint64(buckets))
}
