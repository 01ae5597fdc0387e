package nodehostapi

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/lni/dragonboat/v4"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// ErrorDomain and the Reasons are the NodehostAPI's error contract, defined
// in api/drummerpb (see there for what each reason means).
const ErrorDomain = drummerpb.ErrorDomain

// Reasons: the errdetails.ErrorInfo Reason of each error.
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

// Metadata keys of the ErrorInfo.
const (
	// MetaShardID is the shard the request was about.
	MetaShardID = "shard_id"
	// MetaHostID is the nodehost that answered.
	MetaHostID = "host_id"
	// MetaRetry says what a client should do: "other_host", "backoff",
	// "same_session", "new_session" or "no".
	MetaRetry = "retry"
)

// apiError builds a status error with an ErrorInfo.
func (s *Service) apiError(c codes.Code, reason, retry string, shardID uint64, format string, args ...any) error {
	st := status.New(c, fmt.Sprintf(format, args...))
	md := map[string]string{MetaHostID: s.hostID, MetaRetry: retry}
	if shardID != 0 {
		md[MetaShardID] = strconv.FormatUint(shardID, 10)
	}
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: md}); err == nil {
		st = d
	}
	return st.Err()
}

func (s *Service) invalid(reason string, shardID uint64, format string, args ...any) error {
	return s.apiError(codes.InvalidArgument, reason, "no", shardID, format, args...)
}

// errPanic marks a recovered panic from dragonboat.
type errPanic struct{ v any }

func (e errPanic) Error() string { return fmt.Sprintf("dragonboat panicked: %v", e.v) }

// mapError translates a dragonboat (or context) error into a status error
// that tells the client what to do.
func (s *Service) mapError(op string, shardID uint64, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err // already mapped
	}
	sh := shardID
	switch {
	case errors.Is(err, dragonboat.ErrShardNotFound):
		s.forget(shardID)
		return s.apiError(codes.NotFound, ReasonShardNotHere, "other_host", sh,
			"%s: shard %d is not running on nodehost %s: locate the shard again and use another member", op, shardID, s.hostID)
	case errors.Is(err, dragonboat.ErrShardNotReady), errors.Is(err, dragonboat.ErrShardNotInitialized):
		return s.apiError(codes.Unavailable, ReasonShardNotReady, "backoff", sh,
			"%s: shard %d is not ready (no leader yet, replica starting, or membership change pending); nothing was proposed: retry after a short backoff", op, shardID)
	case errors.Is(err, dragonboat.ErrSystemBusy):
		return s.apiError(codes.Unavailable, ReasonBusy, "backoff", sh,
			"%s: shard %d is busy (queues full); nothing was proposed: retry after a backoff", op, shardID)
	case errors.Is(err, dragonboat.ErrShardClosed), errors.Is(err, dragonboat.ErrClosed):
		return s.apiError(codes.Unavailable, ReasonClosed, "other_host", sh,
			"%s: shard %d is shutting down on nodehost %s: retry on another member", op, shardID, s.hostID)
	case errors.Is(err, dragonboat.ErrTimeout):
		return s.apiError(codes.DeadlineExceeded, ReasonTimeout, "same_session", sh,
			"%s: shard %d did not complete in time; a proposal may still be applied: retry with the same session and series for exactly-once", op, shardID)
	case errors.Is(err, dragonboat.ErrAborted):
		return s.apiError(codes.Aborted, ReasonAborted, "backoff", sh,
			"%s: shard %d: request aborted by the state machine", op, shardID)
	case errors.Is(err, dragonboat.ErrRejected):
		return s.apiError(codes.FailedPrecondition, ReasonSessionRejected, "new_session", sh,
			"%s: shard %d rejected the session (closed, expired or evicted); this attempt was not applied (an earlier attempt of the same series may have been): open a new session", op, shardID)
	case errors.Is(err, dragonboat.ErrCanceled), errors.Is(err, context.Canceled):
		return s.apiError(codes.Canceled, ReasonCanceled, "no", sh, "%s: canceled", op)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, dragonboat.ErrInvalidDeadline):
		return s.apiError(codes.DeadlineExceeded, ReasonTimeout, "same_session", sh,
			"%s: shard %d: deadline exceeded", op, shardID)
	case errors.Is(err, dragonboat.ErrPayloadTooBig):
		return s.invalid(ReasonPayloadTooLarge, sh, "%s: shard %d: payload too big for the shard's log (MaxInMemLogSize)", op, shardID)
	case errors.Is(err, dragonboat.ErrInvalidSession):
		return s.invalid(ReasonInvalidSession, sh, "%s: shard %d: invalid session", op, shardID)
	case errors.Is(err, dragonboat.ErrTimeoutTooSmall), errors.Is(err, dragonboat.ErrDeadlineNotSet):
		return s.invalid(ReasonDeadlineTooShort, sh, "%s: the call's deadline must leave at least %v (one Raft RTT)", op, s.rtt)
	case errors.Is(err, dragonboat.ErrInvalidOperation):
		return s.invalid(ReasonInvalidRequest, sh, "%s: operation not allowed on the replica of shard %d on this nodehost (witness?): use another member", op, shardID)
	}
	var p errPanic
	if errors.As(err, &p) {
		return s.apiError(codes.Internal, ReasonInternal, "no", sh, "%s: shard %d: %v", op, shardID, err)
	}
	return s.apiError(codes.Unknown, ReasonInternal, "no", sh, "%s: shard %d: %v", op, shardID, err)
}
