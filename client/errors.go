package client

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// Reasons carried in the errdetails.ErrorInfo of NodehostAPI errors (the
// contract is defined in api/drummerpb). Reason(err) extracts them from any
// error returned by this package.
const (
	ReasonShardNotHere        = drummerpb.ReasonShardNotHere
	ReasonShardNotReady       = drummerpb.ReasonShardNotReady
	ReasonBusy                = drummerpb.ReasonBusy
	ReasonClosed              = drummerpb.ReasonClosed
	ReasonTimeout             = drummerpb.ReasonTimeout
	ReasonAborted             = drummerpb.ReasonAborted
	ReasonSessionRejected     = drummerpb.ReasonSessionRejected
	ReasonSessionsUnsupported = drummerpb.ReasonSessionsUnsupported
	ReasonInvalidSession      = drummerpb.ReasonInvalidSession
	ReasonPayloadTooLarge     = drummerpb.ReasonPayloadTooLarge
	ReasonNoDeadline          = drummerpb.ReasonNoDeadline
	ReasonDeadlineTooShort    = drummerpb.ReasonDeadlineTooShort
	ReasonInvalidRequest      = drummerpb.ReasonInvalidRequest
	ReasonCanceled            = drummerpb.ReasonCanceled
	ReasonStateMachine        = drummerpb.ReasonStateMachine
	ReasonInternal            = drummerpb.ReasonInternal
	ReasonTooManySessions     = drummerpb.ReasonTooManySessions
)

// Sentinel errors; test for them with errors.Is.
var (
	// ErrShardNotFound: Drummer does not know the shard.
	ErrShardNotFound = errors.New("drummer: shard not found")
	// ErrNoReplicas: the shard has no member with an API address (it is
	// still being placed, or every host is gone).
	ErrNoReplicas = errors.New("drummer: no reachable replica")
	// ErrSessionRejected: the shard no longer knows the session (closed,
	// or evicted from its LRU of sessions) and no earlier attempt of the
	// proposal may have been applied: it was not applied; open a new
	// session.
	ErrSessionRejected = errors.New("drummer: session rejected by the shard")
	// ErrSessionLost: the shard no longer knows the session (closed,
	// expired or evicted) while the outcome of the proposal was unknown:
	// an earlier attempt may have been applied, and the shard can no
	// longer say. Errors with it also match ErrOutcomeUnknown, never
	// ErrSessionRejected. The session is unusable: open a new one, and
	// find out from the state (a read) whether the command took effect
	// before proposing it again.
	ErrSessionLost = errors.New("drummer: session lost by the shard, outcome unknown")
	// ErrSessionClosed: the Session was closed, or rejected earlier.
	ErrSessionClosed = errors.New("drummer: session closed")
	// ErrOutcomeUnknown: a proposal's outcome is not known: it may or may
	// not have been applied (a timeout, or a connection lost mid-call).
	// Without a session, retrying may apply the command twice; with a
	// Session, proposing the same command again continues the same series
	// and is applied at most once in total.
	ErrOutcomeUnknown = errors.New("drummer: outcome unknown, the command may have been applied")
	// ErrClientClosed: the Client was closed.
	ErrClientClosed = errors.New("drummer: client closed")
)

// Error is the error returned by Client, Session and KV operations that
// reached (or tried to reach) the nodehosts. It carries the gRPC code and
// NodehostAPI reason of the last answer, and whether a write may have been
// applied. status.Code(err) returns Code.
type Error struct {
	// Op is the operation ("propose", "read", "open session", ...).
	Op string
	// ShardID is the shard operated on.
	ShardID uint64
	// Code is the gRPC code of the final answer (DeadlineExceeded or
	// Canceled when the caller's context ended first).
	Code codes.Code
	// Reason is the NodehostAPI ErrorInfo reason of the last answer that
	// had one ("" otherwise).
	Reason string
	// Attempts is the number of calls made.
	Attempts int
	// MaybeApplied is set for writes that may have been applied (see
	// ErrOutcomeUnknown).
	MaybeApplied bool
	// Err is the last underlying error.
	Err error
	// sentinel, if any, is matched by errors.Is.
	sentinel error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s on shard %d", e.Op, e.ShardID)
	if e.sentinel != nil {
		s += ": " + e.sentinel.Error()
	}
	if e.Attempts > 1 {
		s += fmt.Sprintf(" (after %d attempts)", e.Attempts)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	if e.MaybeApplied && !errors.Is(e.sentinel, ErrOutcomeUnknown) {
		s += " (" + ErrOutcomeUnknown.Error() + ")"
	}
	return s
}

// Unwrap exposes the sentinel (ErrShardNotFound, ErrSessionRejected,
// ErrOutcomeUnknown, ...) and the underlying error to errors.Is/As.
func (e *Error) Unwrap() []error {
	out := make([]error, 0, 3)
	if e.sentinel != nil {
		out = append(out, e.sentinel)
	}
	if e.MaybeApplied && e.sentinel != ErrOutcomeUnknown {
		out = append(out, ErrOutcomeUnknown)
	}
	if e.Err != nil {
		out = append(out, e.Err)
	}
	return out
}

// GRPCStatus makes status.Code and status.FromError report Code.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Error()) }

// Reason returns the NodehostAPI reason carried by err ("" if none).
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	if ei := errorInfo(err); ei != nil {
		return ei.Reason
	}
	return ""
}

func errorInfo(err error) *errdetails.ErrorInfo {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return nil
	}
	for _, d := range se.GRPCStatus().Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei
		}
	}
	return nil
}
