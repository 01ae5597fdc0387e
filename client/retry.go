package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// downFor is how long a nodehost that refused a connection (or is
// shutting down) goes to the end of the member order.
const downFor = time.Second

type actionKind int

const (
	// actNext: try the next member now.
	actNext actionKind = iota
	// actBackoff: pause before trying again.
	actBackoff
	// actStop: the error is final.
	actStop
	// actGiveUp: no time left; report the state so far.
	actGiveUp
)

type action struct {
	kind      actionKind
	ambiguous bool // a write may have been applied
	down      bool // the host is unreachable or closing
	relocate  bool // the location is probably out of date
}

// classify decides what to do after a failed attempt; ctx is the
// caller's (the attempt's deadline is never later than ctx's).
func classify(err error, ctx context.Context) action {
	code := status.Code(err)
	reason := ""
	if ei := errorInfo(err); ei != nil {
		reason = ei.Reason
	}
	if ctx.Err() != nil {
		// The caller's deadline or cancellation cut the attempt short.
		return action{kind: actGiveUp, ambiguous: reason == "" || reason == ReasonTimeout || reason == ReasonCanceled}
	}
	switch reason {
	case ReasonShardNotHere:
		return action{kind: actNext, relocate: true}
	case ReasonShardNotReady:
		return action{kind: actNext}
	case ReasonBusy, ReasonAborted:
		return action{kind: actBackoff}
	case ReasonClosed:
		// The replica stopped; a proposal pending there (terminated by the
		// stop) may still be committed by the other members.
		return action{kind: actNext, ambiguous: true, down: true, relocate: true}
	case ReasonTimeout:
		return action{kind: actNext, ambiguous: true}
	case ReasonCanceled:
		// Not ours (ctx is alive): the server gave up, e.g. shutting down.
		return action{kind: actNext, ambiguous: true}
	case ReasonDeadlineTooShort:
		return action{kind: actGiveUp}
	case "":
		// No NodehostAPI answer: a transport failure or our own attempt
		// deadline.
		switch code {
		case codes.Unavailable:
			return action{kind: actNext, ambiguous: true, down: true, relocate: true}
		case codes.DeadlineExceeded, codes.Canceled:
			// ctx is alive, so this was the attempt's deadline (noticed
			// by the client or the server first), or the server
			// dropping the call: try elsewhere.
			return action{kind: actNext, ambiguous: true, relocate: true}
		}
	}
	return action{kind: actStop}
}

var sentinels = map[string]error{
	ReasonSessionRejected: ErrSessionRejected,
}

// invoke runs call against the shard's members until it succeeds, fails
// with a final error, or ctx ends. write marks proposals, whose outcome
// may be unknown after some failures.
func (c *Client) invoke(ctx context.Context, op string, shardID uint64, write bool, call func(context.Context, drummerpb.NodehostAPIClient) error) error {
	e := &Error{Op: op, ShardID: shardID}
	if shardID == 0 {
		e.Code, e.Err = codes.InvalidArgument, errors.New("shard ID 0 is not a shard")
		return e
	}
	if c.pool.isClosed() {
		e.Code, e.sentinel = codes.Canceled, ErrClientClosed
		return e
	}
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	backoff := c.cfg.MinBackoff
	for {
		loc, err := c.locs.get(ctx, shardID)
		switch {
		case errors.Is(err, ErrShardNotFound):
			e.Code, e.sentinel = codes.NotFound, ErrShardNotFound
			return e
		case err != nil:
			if ctx.Err() != nil {
				return c.giveUp(ctx, e, err)
			}
			e.Code, e.Err = codes.Unavailable, err
		}
		var addrs []string
		if loc != nil {
			if addrs = c.targets(shardID, loc); len(addrs) == 0 {
				e.Code, e.sentinel = codes.Unavailable, ErrNoReplicas
				c.locs.invalidate(shardID)
			}
		}
	round:
		for _, addr := range addrs {
			rem := time.Until(deadlineOf(ctx))
			if rem <= 0 || ctx.Err() != nil {
				return c.giveUp(ctx, e, nil)
			}
			api, err := c.pool.get(addr)
			if err != nil {
				if errors.Is(err, ErrClientClosed) {
					e.Code, e.sentinel = codes.Canceled, ErrClientClosed
					return e
				}
				e.Err = err
				continue
			}
			actx, acancel := context.WithTimeout(ctx, min(rem, c.cfg.AttemptTimeout))
			err = call(actx, api)
			acancel()
			e.Attempts++
			if err == nil {
				c.locs.succeeded(shardID, addr)
				c.pool.markUp(addr)
				return nil
			}
			a := classify(err, ctx)
			e.Code, e.Err, e.sentinel = status.Code(err), fmt.Errorf("nodehost %s: %w", addr, err), nil
			if r := Reason(err); r != "" {
				e.Reason = r
			}
			if write && a.ambiguous {
				e.MaybeApplied = true
			}
			if a.down {
				c.pool.markDown(addr, downFor)
			}
			if a.relocate {
				c.locs.invalidate(shardID)
			}
			c.log.Debug("drummer client: attempt failed", "op", op, "shard", shardID, "host", addr, "err", err, "attempt", e.Attempts)
			switch a.kind {
			case actStop:
				e.sentinel = sentinels[Reason(err)]
				if e.sentinel == ErrSessionRejected && e.MaybeApplied {
					// An earlier attempt of this series may have been
					// applied; the shard, without the session, cannot
					// tell: unknown, not "not applied".
					e.sentinel = ErrSessionLost
				}
				return e
			case actGiveUp:
				return c.giveUp(ctx, e, nil)
			case actBackoff:
				break round
			}
		}
		if !sleep(ctx, jitter(backoff)) {
			return c.giveUp(ctx, e, nil)
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

// giveUp finishes e when time ran out or the caller canceled.
func (c *Client) giveUp(ctx context.Context, e *Error, err error) error {
	if e.Err == nil {
		e.Err = err
	}
	if e.Err == nil {
		e.Err = ctx.Err()
	}
	e.Code = codes.DeadlineExceeded
	if errors.Is(ctx.Err(), context.Canceled) {
		e.Code = codes.Canceled
	}
	if e.MaybeApplied {
		e.sentinel = ErrOutcomeUnknown
	}
	return e
}

func deadlineOf(ctx context.Context) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(time.Hour)
}

// jitter returns a duration in [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// sleep waits d or until ctx ends; it reports whether the full d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
