// Package client is the Go client of Drummer.
//
// Conn talks to the Drummer servers (the control plane), following the
// scheduler leader. Client uses the data plane: it locates shards through
// Drummer.LocateShards, caches the locations, and calls the NodehostAPI on
// the shards' nodehosts:
//
//	c, err := client.New(ctx, client.Config{Endpoints: []string{"10.0.0.1:7101"}})
//	...
//	defer c.Close()
//	r, err := c.Propose(ctx, shardID, cmd)      // at least once
//	b, err := c.Read(ctx, shardID, query)       // linearizable
//	s, err := c.OpenSession(ctx, shardID)
//	r, err = s.Propose(ctx, cmd)                // exactly once
//	err = c.KV(shardID).Put(ctx, key, value)    // the built-in kv app
//
// Routing and retries. A call goes to the leader's nodehost first (a
// follower forwards proposals to the leader, and serves linearizable reads
// itself), then to the other members. Each attempt has its own deadline
// (Config.AttemptTimeout, 2s by default, cut to what is left of the
// caller's context), so a dead host costs one attempt. Answers meaning
// "try elsewhere" (shard not here, host closing, unreachable) move to the
// next member at once and refresh the shard's location; "not ready" and
// "busy" answers are retried after an exponential backoff with jitter.
// Errors that retrying cannot fix (invalid arguments, rejected sessions,
// state machine errors) are returned at once. Everything stops when the
// caller's context ends; a context without a deadline gets
// Config.DefaultTimeout.
//
// Errors are *Error values: status.Code(err) gives the gRPC code of the
// final answer, Reason(err) its NodehostAPI reason, and errors.Is matches
// ErrShardNotFound, ErrSessionRejected, ErrSessionLost, ErrOutcomeUnknown, ErrClientClosed
// and the like.
//
// Delivery. Client.Propose has no session: a proposal whose attempt timed
// out is retried and may be applied twice (at least once). A Session
// proposes exactly once: retries keep the series number and the shard
// returns the first result. On-disk state machines accept only
// session-less proposals.
//
// Concurrency. Client and Conn are safe for concurrent use. A Session
// serializes its own calls; open one session per goroutine for parallel
// exactly-once proposals.
package client
