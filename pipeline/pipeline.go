// Package pipeline builds balancebeam's Beam graph. It only composes the
// transforms and sinks; it does no I/O, so the same graph runs on the direct
// runner, Prism, Flink and Dataflow.
package pipeline

import (
	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/balancebeam/balancebeam/sinks"
	"github.com/balancebeam/balancebeam/transforms"
)

// Config is everything the graph needs, pinned by the driver before the
// pipeline is built: the batch's files, its id and timestamp.
type Config struct {
	// Files are the batch's inputs, in manifest order.
	Files []transforms.FileSpec
	// Parse sets the dedup bucket count and block size.
	Parse transforms.ParseConfig
	// Shards is the number of sink shards (writers), at least 1.
	Shards int
	// Target is the database, tables, mode and batch the sinks write.
	Target sinks.Target
	// SplitAccounts injects a broken partitioner that sends each account to
	// two shards (tests and chaos experiments only).
	SplitAccounts bool
}

// Build adds the batch's graph to s:
//
//	Parse   files -> rows packed in blocks by dedup bucket, rejects alongside
//	Dedup   by transaction_id; conflicting copies rejected
//	Sum     per account, keyed by shard (FNV-1a of account_id), lifted combine
//	        (in ledger mode: the shard's transactions themselves)
//	Write   one set-based statement of the mode per flush; rejected rows once each
func Build(s beam.Scope, cfg Config) {
	paths := make([]string, len(cfg.Files))
	for i, f := range cfg.Files {
		paths[i] = f.Path
	}
	files := beam.CreateList(s, cfg.Files)
	blocks := transforms.Parse(s, files, cfg.Parse)
	totals, rejects := transforms.Dedup(s, blocks, transforms.DedupConfig{
		Shards: cfg.Shards, Files: paths, Ledger: cfg.Target.Mode == sinks.ModeLedger, SplitAccounts: cfg.SplitAccounts,
	})
	sums := transforms.SumPerShard(s, totals)
	target := cfg.Target
	target.Files = paths
	sinks.WriteBalances(s, sums, target)
	sinks.WriteRejects(s, rejects, cfg.Target)
}
