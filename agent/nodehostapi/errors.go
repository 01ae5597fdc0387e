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
)

// ErrorDomain is the Domain of the errdetails.ErrorInfo attached to every
// error the service returns.
const ErrorDomain = "nodehostapi.drummer"

// Reasons: the errdetails.ErrorInfo Reason of each error, stable across
// releases. The gRPC code says how to react; the reason says why.
const (
	// ReasonShardNotHere (NotFound): this nodehost does not run the shard.
	// Locate the shard again and use another member.
	ReasonShardNotHere = "SHARD_NOT_HERE"
	// ReasonShardNotReady (Unavailable): no leader yet, the replica is
	// still starting, or a membership change is pending. Nothing was
	// proposed; retry after a short backoff, here or on another member.
	ReasonShardNotReady = "SHARD_NOT_READY"
	// ReasonBusy (Unavailable): queues full or rate limited. Nothing was
	// proposed; retry after a backoff.
	ReasonBusy = "BUSY"
	// ReasonClosed (Unavailable): the replica or the nodehost is shutting
	// down. Retry on another member.
	ReasonClosed = "CLOSED"
	// ReasonTimeout (DeadlineExceeded): the operation did not complete in
	// time. A proposal may still be applied: retry with the same session
	// and series (exactly once) or accept at-least-once.
	ReasonTimeout = "TIMEOUT"
	// ReasonAborted (Aborted): the state machine aborted the request.
	ReasonAborted = "ABORTED"
	// ReasonSessionRejected (FailedPrecondition): the session is not
	// registered (closed, or evicted from the shard's LRU of sessions).
	// Open a new session; the proposal was not applied.
	ReasonSessionRejected = "SESSION_REJECTED"
	// ReasonSessionsUnsupported (InvalidArgument): the shard's state
	// machine is on-disk, which only accepts proposals without a session.
	ReasonSessionsUnsupported = "SESSIONS_UNSUPPORTED"
	// ReasonInvalidSession (InvalidArgument): the session fields are not
	// usable (wrong shard, zero client ID, series out of range).
	ReasonInvalidSession = "INVALID_SESSION"
	// ReasonPayloadTooLarge (InvalidArgument): the command or query is
	// larger than the nodehost accepts.
	ReasonPayloadTooLarge = "PAYLOAD_TOO_LARGE"
	// ReasonNoDeadline (InvalidArgument): the call has no deadline.
	ReasonNoDeadline = "NO_DEADLINE"
	// ReasonDeadlineTooShort (InvalidArgument): less time is left than one
	// Raft round trip (the nodehost's RTTMillisecond).
	ReasonDeadlineTooShort = "DEADLINE_TOO_SHORT"
	// ReasonInvalidRequest (InvalidArgument): another malformed request
	// (shard 0, empty command, operation not allowed on this replica).
	ReasonInvalidRequest = "INVALID_REQUEST"
	// ReasonCanceled (Canceled): the caller canceled the call.
	ReasonCanceled = "CANCELED"
	// ReasonStateMachine (Unknown): the state machine's Lookup returned an
	// error, included in the message.
	ReasonStateMachine = "STATE_MACHINE_ERROR"
	// ReasonInternal (Internal): a bug; the message says more.
	ReasonInternal = "INTERNAL"
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
			"%s: shard %d rejected the session (closed or evicted); the proposal was not applied: open a new session", op, shardID)
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
