// Package scheduler is the loop around the pure planner: the soft state
// built from nodehost reports, the dirty sets, the patrol, the liveness
// timers, the orders in force and the verdict cache. Its Node is what
// etcd-io/raft's RawNode is to raft: a single-threaded, I/O-free driver,
// with inputs in (Step a report, Round a planning round) and effects out
// (decisions to propose, orders to hand to hosts). The server wraps one
// Node in a goroutine (with the locking, proposing and the epoch); the
// simulator drives one directly, so the simulated scheduler is the real
// one.
//
// Costs are bounded by what changed, not by the deployment: a report marks
// dirty only what it changed; a host's liveness is judged by a timer when
// a threshold could pass, not by reading every host each round; the
// patrol visits a bounded number of shards per second; status counts are
// kept as verdicts change.
package scheduler
