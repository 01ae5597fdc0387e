// Package chaos is Drummer's monkey test: a multi-process chaos harness
// with linearizability and replica-consistency checks.
//
// Run starts a real deployment on 127.0.0.1 with internal/testcluster: 3
// drummer servers and 5-6 nodehosts built with -tags=dragonboat_monkeytest
// (the nodehosts then have hidden --test-* flags and serve the test-only
// Monkey gRPC service, api/drummer/v1/monkey.proto). It creates kv shards
// of 3 replicas and then, for Config.Duration:
//
//   - a workload of concurrent clients (package client) reads, writes and
//     compare-and-sets unique values on a few hot keys (rotated every
//     minute) and many cold ones, each write through a session (exactly
//     once). Every operation is recorded with its invocation and return
//     time; a write whose outcome is unknown is recorded as such (it may
//     take effect at any time after its invocation, until the session's
//     next proposal returns) and its worker continues as a new client;
//   - a nemesis injects faults from a seeded schedule: SIGKILL and restart
//     of nodehosts and drummer servers (the scheduler leader included),
//     SIGSTOP/SIGCONT pauses, network partitions of one or two nodehosts
//     (dragonboat's PartitionNode, which drops all of a host's Raft traffic,
//     plus failing reports to the drummers), random loss of Raft messages
//     and snapshot chunks, wiping a nodehost's data directory (it comes
//     back as a new identity on the same raft address and must be repaired
//     around), slow state machine applies and snapshots, and forced
//     snapshots with log compaction. At most Config.MaxImpaired nodehosts
//     and one drummer server are impaired at a time, and a data directory
//     is wiped only when no shard could lose a second replica's data.
//
// Then every fault is healed and the checks run, each within a bound:
// every shard healthy with its desired replica count, no repair in flight,
// no member on a removed or replaced host, every member running where
// Drummer says and no zombie replica; every shard accepts a write and a
// read; all replicas of every shard at the same last-applied index with
// equal state machine, session and membership hashes; all drummer servers
// with the same DB hash at the same applied index; and the history
// linearizable (porcupine, partitioned per key, with a nondeterministic kv
// model for unknown outcomes).
//
// A failing run keeps its directory: process logs, data directories,
// history.jsonl, final-state.json, summary.txt and report.json, and a
// porcupine visualization (linearizability-<key>.html) with a text listing
// for non-linearizable keys. The summary names the seed and the replay
// command.
//
// TestChaos is the short run of the default test suite (about three
// minutes); cmd/drummer-chaos runs long ones. Two tests prove that the
// checks can fail: TestChaosCatchesUnsafeAck (nodehosts that acknowledge
// proposals before commit, --test-unsafe-ack) and TestChaosCatchesDivergence
// (a nodehost whose replicas apply a hidden extra write, --test-diverge).
// See docs/chaos.md.
package chaos
