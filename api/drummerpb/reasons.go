package drummerpb

// The NodehostAPI's error contract. Every error the service returns carries
// an errdetails.ErrorInfo with Domain ErrorDomain and one of these Reasons;
// the gRPC code says how to react, the reason says why. Both the nodehost
// (agent/nodehostapi) and the client library (client) use these constants,
// so the two sides cannot drift apart.

// ErrorDomain is the Domain of the errdetails.ErrorInfo attached to every
// NodehostAPI error.
const ErrorDomain = "nodehostapi.drummer"

// Reasons: the errdetails.ErrorInfo Reason of each NodehostAPI error,
// stable across releases.
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
	// Open a new session; the proposal was not applied (but an earlier
	// attempt of the same series may have been: the client library then
	// reports the outcome as unknown, ErrSessionLost).
	ReasonSessionRejected = "SESSION_REJECTED"
	// ReasonTooManySessions (ResourceExhausted): the nodehost has opened
	// as many sessions of the shard as it may (in total or for this
	// caller) and none has been idle long enough to be closed. Close
	// sessions no longer used.
	ReasonTooManySessions = "TOO_MANY_SESSIONS"
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
