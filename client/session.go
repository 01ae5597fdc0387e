package client

import (
	"bytes"
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// Session is a client session registered with one shard. Its proposals
// are applied exactly once: each carries a series number, retries (after a
// timeout, on another member) reuse it, and the shard answers a repeated
// series with the first result instead of applying the command again.
//
// A Session serializes its calls: Propose and Close may be called from
// several goroutines, but they run one at a time. Use several sessions for
// parallel proposals. Each shard keeps a bounded number of sessions
// (4096, least recently used first out), and each nodehost opens a
// bounded share of them per caller, closing the longest-idle one when a
// caller at its bound opens another (or refusing with reason
// TOO_MANY_SESSIONS). A session the shard no longer knows fails with
// ErrSessionRejected (nothing pending: not applied) or ErrSessionLost (a
// proposal's outcome was unknown: it may have been applied); either way a
// new one must be opened. Close sessions that are no longer needed.
//
// On-disk state machines do not support sessions (OpenSession fails with
// reason SESSIONS_UNSUPPORTED); use Client.Propose there.
type Session struct {
	c *Client

	mu      sync.Mutex
	s       *drummerpb.Session
	pending []byte // command of the current series, sent without a known outcome
	hasPend bool
	closed  bool
	err     error // set once the shard rejected the session
}

// OpenSession registers a new session with the shard.
func (c *Client) OpenSession(ctx context.Context, shardID uint64) (*Session, error) {
	var s *drummerpb.Session
	err := c.invoke(ctx, "open session", shardID, false, func(ctx context.Context, api drummerpb.NodehostAPIClient) error {
		resp, err := api.OpenSession(ctx, &drummerpb.OpenSessionRequest{ShardId: shardID})
		if err == nil {
			s = resp
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Session{c: c, s: s}, nil
}

// ShardID returns the session's shard.
func (s *Session) ShardID() uint64 { return s.s.GetShardId() }

// Propose proposes cmd through the session, exactly once: it retries
// retryable failures with the same series until it gets the result or ctx
// ends.
//
// When Propose fails with the outcome unknown (ErrOutcomeUnknown, e.g. the
// deadline passed while the shard was unreachable), the command was
// applied at most once. Calling Propose again with the same command
// continues that series, so the command is still applied exactly once and
// its result is returned; calling it with a different command abandons
// the old one, which is then never applied if it was not already.
//
// After ErrSessionRejected or ErrSessionLost the session is unusable:
// open a new one. ErrSessionLost (which matches ErrOutcomeUnknown) means
// the shard lost the session while this command's outcome was unknown:
// it may have been applied, and proposing it on a new session may apply
// it twice.
func (s *Session) Propose(ctx context.Context, cmd []byte) (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Result{}, &Error{Op: "propose", ShardID: s.s.GetShardId(), Code: codes.FailedPrecondition, sentinel: ErrSessionClosed}
	}
	if s.err != nil {
		return Result{}, s.err
	}
	if s.hasPend && !bytes.Equal(s.pending, cmd) {
		s.advance()
	}
	req := &drummerpb.ProposeRequest{ShardId: s.s.GetShardId(), Session: proto.Clone(s.s).(*drummerpb.Session), Command: cmd}
	var out Result
	err := s.c.invoke(ctx, "propose", s.s.GetShardId(), true, func(ctx context.Context, api drummerpb.NodehostAPIClient) error {
		resp, err := api.Propose(ctx, req)
		if err == nil {
			out = Result{Value: resp.GetValue(), Data: resp.GetData()}
		}
		return err
	})
	switch {
	case err == nil:
		s.advance()
		return out, nil
	case errors.Is(err, ErrSessionRejected) || errors.Is(err, ErrSessionLost):
		var e *Error
		if errors.As(err, &e) && s.hasPend {
			// This call continued a series whose outcome was unknown.
			e.sentinel, e.MaybeApplied = ErrSessionLost, true
		}
		// Later calls send nothing: not applied.
		s.err = &Error{Op: "propose", ShardID: s.s.GetShardId(), Code: codes.FailedPrecondition,
			Reason: ReasonSessionRejected, sentinel: ErrSessionRejected, Err: errors.New("the shard rejected this session earlier; open a new one")}
		s.pending, s.hasPend = nil, false
	default:
		s.pending, s.hasPend = bytes.Clone(cmd), true
	}
	return Result{}, err
}

// advance completes (or abandons) the current series, as dragonboat's
// ProposalCompleted does.
func (s *Session) advance() {
	s.s.RespondedTo = s.s.SeriesId
	s.s.SeriesId++
	s.pending, s.hasPend = nil, false
}

// Close unregisters the session. The Session is unusable afterwards,
// even if Close fails (the shard then forgets the session when it is
// evicted).
func (s *Session) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.err != nil {
		return nil // the shard does not know it anymore
	}
	req := &drummerpb.CloseSessionRequest{Session: proto.Clone(s.s).(*drummerpb.Session)}
	return s.c.invoke(ctx, "close session", s.s.GetShardId(), false, func(ctx context.Context, api drummerpb.NodehostAPIClient) error {
		_, err := api.CloseSession(ctx, req)
		return err
	})
}
