// Package dataplane benchmarks the data plane: Propose throughput and
// latency through the NodehostAPI (client library → gRPC → nodehost →
// SyncPropose) against in-process dragonboat SyncPropose, on the same
// 3-NodeHost shard (127.0.0.1, RTT 10ms) at concurrency 1, 16 and 64.
//
//	go test -run '^$' -bench . -benchtime 4000x ./internal/bench/dataplane
//
// Each result reports ops/s and the p50/p99 latency of single proposals
// (µs). See docs/benchmarks-dataplane.md.
package dataplane
