// Package nodehostapi serves the NodehostAPI, the data plane that every
// nodehost exposes to applications (api/drummer/v1/nodehost.proto), on top
// of a dragonboat NodeHost.
//
// The service validates every request before it reaches dragonboat (which
// panics or hangs on some bad inputs), bounds every operation by the
// caller's deadline, and answers with gRPC codes that say what to do next,
// each carrying an errdetails.ErrorInfo (Domain ErrorDomain) with a stable
// Reason and metadata (shard_id, host_id, retry):
//
//	dragonboat error                      code                reason               what the client should do
//	ErrShardNotFound                      NotFound            SHARD_NOT_HERE       locate again, use another member
//	ErrShardNotReady, ErrShardNotInit.    Unavailable         SHARD_NOT_READY      back off and retry (nothing proposed)
//	ErrSystemBusy                         Unavailable         BUSY                 back off and retry (nothing proposed)
//	ErrShardClosed, ErrClosed             Unavailable         CLOSED               retry on another member
//	ErrTimeout                            DeadlineExceeded    TIMEOUT              may be applied: retry with the same session/series
//	ErrAborted                            Aborted             ABORTED              back off and retry
//	ErrRejected                           FailedPrecondition  SESSION_REJECTED     open a new session (not applied)
//	session bounds reached (see Options)  ResourceExhausted   TOO_MANY_SESSIONS    close unused sessions
//	ErrCanceled                           Canceled            CANCELED             -
//	ErrPayloadTooBig                      InvalidArgument     PAYLOAD_TOO_LARGE    fix the request
//	ErrInvalidSession                     InvalidArgument     INVALID_SESSION      fix the request
//	ErrTimeoutTooSmall, no deadline       InvalidArgument     DEADLINE_TOO_SHORT,  set a deadline of at least one RTT
//	                                                          NO_DEADLINE
//	ErrInvalidOperation (witness)         InvalidArgument     INVALID_REQUEST      use another member
//	session on an on-disk state machine   InvalidArgument     SESSIONS_UNSUPPORTED propose without a session
//	Lookup returned an error              Unknown             STATE_MACHINE_ERROR  -
//	recovered panic, bad Lookup type      Internal            INTERNAL             -
//
// Every data call (Propose, Read, OpenSession, CloseSession) must carry a
// deadline leaving at least one Raft RTT; the service gives dragonboat that
// deadline minus a small margin (at most 50ms), capped by
// Options.MaxTimeout, so a timeout is answered as TIMEOUT before the
// caller's own deadline fires. ListLocalShards needs no deadline.
//
// Proposals with a session are applied exactly once: the session's fields
// travel with each request and the nodehost rebuilds dragonboat's
// client.Session from them, so a retry with the same series returns the
// first result. Proposals without a session use a no-op session: at least
// once, and the only kind an on-disk state machine accepts.
package nodehostapi

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"
	dbclient "github.com/lni/dragonboat/v4/client"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// DefaultMaxPayloadBytes is the default limit on a command or query.
const DefaultMaxPayloadBytes = 8 << 20

// DefaultMaxTimeout is the default cap on the time one call may spend in
// dragonboat, whatever the caller's deadline.
const DefaultMaxTimeout = time.Minute

// Options configure a Service.
type Options struct {
	// MaxPayloadBytes limits commands and queries (default
	// DefaultMaxPayloadBytes). The gRPC server must accept messages this
	// large: see GRPCServerOptions.
	MaxPayloadBytes int
	// MaxTimeout caps the time one call may wait in dragonboat (default
	// DefaultMaxTimeout).
	MaxTimeout time.Duration
	// HostID names this nodehost in errors and ListLocalShards (default:
	// the NodeHost's ID).
	HostID string
	// AppName, when set, gives the application name of a local replica
	// for ListLocalShards.
	AppName func(shardID, replicaID uint64) string
	// Logger receives recovered panics and other internal errors
	// (default: discarded).
	Logger *slog.Logger
	// MaxSessionsPerShard bounds the sessions this nodehost opens for one
	// shard (default DefaultMaxSessionsPerShard), MaxSessionsPerOwner
	// those of one caller (default DefaultMaxSessionsPerOwner). At a bound,
	// OpenSession closes the longest-idle session unused for
	// SessionIdleTimeout (default DefaultSessionIdleTimeout), or refuses
	// with ResourceExhausted/TOO_MANY_SESSIONS.
	MaxSessionsPerShard int
	MaxSessionsPerOwner int
	SessionIdleTimeout  time.Duration
	// SessionOwner names the caller of a call (its certificate identity);
	// nil puts every caller under one owner.
	SessionOwner func(context.Context) string
}

func (o Options) withDefaults() Options {
	if o.MaxPayloadBytes <= 0 {
		o.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if o.MaxTimeout <= 0 {
		o.MaxTimeout = DefaultMaxTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxSessionsPerShard <= 0 {
		o.MaxSessionsPerShard = DefaultMaxSessionsPerShard
	}
	if o.MaxSessionsPerOwner <= 0 {
		o.MaxSessionsPerOwner = DefaultMaxSessionsPerOwner
	}
	if o.SessionIdleTimeout <= 0 {
		o.SessionIdleTimeout = DefaultSessionIdleTimeout
	}
	return o
}

// GRPCServerOptions returns the grpc.ServerOptions the service needs (a
// receive limit that fits MaxPayloadBytes). Add them when creating the
// grpc.Server the service is registered on.
func GRPCServerOptions(opts Options) []grpc.ServerOption {
	opts = opts.withDefaults()
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(opts.MaxPayloadBytes + 64<<10)}
}

// Service implements drummerpb.NodehostAPIServer for one NodeHost. It is
// safe for concurrent use.
type Service struct {
	drummerpb.UnimplementedNodehostAPIServer

	nh     *dragonboat.NodeHost
	opts   Options
	hostID string
	rtt    time.Duration
	log    *slog.Logger

	mu    sync.Mutex
	types map[uint64]sm.Type // shard → state machine type, from GetNodeHostInfo

	sessions *sessionTable
}

var _ drummerpb.NodehostAPIServer = (*Service)(nil)

// New returns the NodehostAPI service of nh. Register it with Register or
// drummerpb.RegisterNodehostAPIServer.
func New(nh *dragonboat.NodeHost, opts Options) *Service {
	opts = opts.withDefaults()
	cfg := nh.NodeHostConfig()
	s := &Service{
		nh:     nh,
		opts:   opts,
		hostID: opts.HostID,
		rtt:    time.Duration(cfg.RTTMillisecond) * time.Millisecond,
		log:    opts.Logger,
		types:  map[uint64]sm.Type{},
	}
	s.sessions = newSessionTable(opts.MaxSessionsPerShard, opts.MaxSessionsPerOwner, opts.SessionIdleTimeout)
	if s.hostID == "" {
		s.hostID = nh.ID()
	}
	return s
}

// Register registers the service on r (a *grpc.Server).
func (s *Service) Register(r grpc.ServiceRegistrar) { drummerpb.RegisterNodehostAPIServer(r, s) }

// safe runs a dragonboat call, turning a panic into an error.
func safe[T any](s *Service, op string, f func() (T, error)) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("nodehostapi: dragonboat panicked", "op", op, "panic", p)
			err = errPanic{p}
		}
	}()
	return f()
}

// opCtx derives the context for one dragonboat operation from the call's:
// a deadline is required and must leave at least one RTT. A small margin
// is kept so that a timeout is answered (as TIMEOUT) before the caller's
// own deadline fires.
func (s *Service) opCtx(ctx context.Context, op string, shardID uint64) (context.Context, context.CancelFunc, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, s.mapError(op, shardID, err)
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return nil, nil, s.invalid(ReasonNoDeadline, shardID,
			"%s: set a deadline on the call (e.g. context.WithTimeout): the nodehost needs one to bound the Raft operation, and it must be at least %v", op, s.rtt)
	}
	rem := time.Until(dl)
	if rem < s.rtt+time.Millisecond {
		return nil, nil, s.invalid(ReasonDeadlineTooShort, shardID,
			"%s: the call's deadline leaves %v, less than one Raft round trip (%v) of this nodehost: use a longer deadline", op, rem.Round(time.Microsecond), s.rtt)
	}
	rem = min(rem, s.opts.MaxTimeout)
	margin := min(rem/10, 50*time.Millisecond)
	if rem-margin < s.rtt+time.Millisecond {
		margin = 0
	}
	c, cancel := context.WithTimeout(ctx, rem-margin)
	return c, cancel, nil
}

func (s *Service) checkShardID(op string, shardID uint64) error {
	if shardID == 0 {
		return s.invalid(ReasonInvalidRequest, 0, "%s: shard_id is 0: set the shard to use", op)
	}
	return nil
}

func (s *Service) checkPayload(op, what string, shardID uint64, b []byte, allowEmpty bool) error {
	if len(b) == 0 && !allowEmpty {
		return s.invalid(ReasonInvalidRequest, shardID, "%s: %s is empty", op, what)
	}
	if len(b) > s.opts.MaxPayloadBytes {
		return s.invalid(ReasonPayloadTooLarge, shardID, "%s: %s of %d bytes exceeds the nodehost's limit of %d bytes", op, what, len(b), s.opts.MaxPayloadBytes)
	}
	return nil
}

// smType returns the state machine type of the local replica of shardID;
// ok is false when the shard is not running here. err is set when the
// NodeHost is closed.
func (s *Service) smType(op string, shardID uint64) (t sm.Type, ok bool, err error) {
	s.mu.Lock()
	t, ok = s.types[shardID]
	s.mu.Unlock()
	if ok {
		return t, true, nil
	}
	info, err := safe(s, op, func() (*dragonboat.NodeHostInfo, error) {
		return s.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true}), nil
	})
	if err != nil {
		return 0, false, err
	}
	if info == nil {
		return 0, false, dragonboat.ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, si := range info.ShardInfoList {
		s.types[si.ShardID] = si.StateMachineType
	}
	t, ok = s.types[shardID]
	return t, ok, nil
}

func (s *Service) forget(shardID uint64) {
	s.mu.Lock()
	delete(s.types, shardID)
	s.mu.Unlock()
}

// checkSessions fails unless the shard runs here with a state machine
// type that supports client sessions.
func (s *Service) checkSessions(op string, shardID uint64) error {
	t, ok, err := s.smType(op, shardID)
	if err != nil {
		return s.mapError(op, shardID, err)
	}
	if !ok {
		return s.mapError(op, shardID, dragonboat.ErrShardNotFound)
	}
	if t == sm.OnDiskStateMachine {
		return s.invalid(ReasonSessionsUnsupported, shardID,
			"%s: shard %d runs an on-disk state machine, which does not support client sessions: propose without a session (at least once) and make commands idempotent", op, shardID)
	}
	return nil
}

// session validates a session from a request for use in a proposal.
func (s *Service) session(op string, shardID uint64, p *drummerpb.Session) (*dbclient.Session, error) {
	switch {
	case p.GetShardId() != shardID:
		return nil, s.invalid(ReasonInvalidSession, shardID, "%s: the session belongs to shard %d, the request is for shard %d", op, p.GetShardId(), shardID)
	case p.GetClientId() == dbclient.NotSessionManagedClientID:
		return nil, s.invalid(ReasonInvalidSession, shardID, "%s: session client_id is 0: open a session with OpenSession", op)
	case p.GetSeriesId() == dbclient.NoOPSeriesID:
		return nil, s.invalid(ReasonInvalidSession, shardID, "%s: session series_id is 0 (the no-op series): omit the session for at-least-once proposals", op)
	case p.GetSeriesId() >= dbclient.SeriesIDForRegister:
		return nil, s.invalid(ReasonInvalidSession, shardID, "%s: session series_id %d is reserved", op, p.GetSeriesId())
	case p.GetRespondedTo() >= p.GetSeriesId():
		return nil, s.invalid(ReasonInvalidSession, shardID, "%s: session responded_to (%d) must be below series_id (%d)", op, p.GetRespondedTo(), p.GetSeriesId())
	}
	if err := s.checkSessions(op, shardID); err != nil {
		return nil, err
	}
	return &dbclient.Session{ShardID: shardID, ClientID: p.GetClientId(), SeriesID: p.GetSeriesId(), RespondedTo: p.GetRespondedTo()}, nil
}

// Propose proposes a command, with the request's session (exactly once)
// or a no-op session (at least once).
func (s *Service) Propose(ctx context.Context, req *drummerpb.ProposeRequest) (*drummerpb.ProposeResponse, error) {
	const op = "propose"
	shardID := req.GetShardId()
	if err := s.checkShardID(op, shardID); err != nil {
		return nil, err
	}
	if err := s.checkPayload(op, "command", shardID, req.GetCommand(), false); err != nil {
		return nil, err
	}
	var cs *dbclient.Session
	if req.GetSession() != nil {
		var err error
		if cs, err = s.session(op, shardID, req.GetSession()); err != nil {
			return nil, err
		}
	}
	cctx, cancel, err := s.opCtx(ctx, op, shardID)
	if err != nil {
		return nil, err
	}
	defer cancel()
	r, err := safe(s, op, func() (sm.Result, error) {
		if cs == nil {
			cs = s.nh.GetNoOPSession(shardID)
		}
		return s.nh.SyncPropose(cctx, cs, req.GetCommand())
	})
	if req.GetSession() != nil {
		if errors.Is(err, dragonboat.ErrRejected) {
			s.sessions.forget(shardID, cs.ClientID)
		} else {
			s.sessions.touch(shardID, cs.ClientID, time.Now())
		}
	}
	if err != nil {
		return nil, s.mapError(op, shardID, err)
	}
	return &drummerpb.ProposeResponse{Value: r.Value, Data: r.Data}, nil
}

// knownErrors are the errors SyncRead and StaleRead return themselves;
// any other error comes from the state machine's Lookup.
var knownErrors = []error{
	dragonboat.ErrShardNotFound, dragonboat.ErrShardNotReady, dragonboat.ErrShardNotInitialized,
	dragonboat.ErrSystemBusy, dragonboat.ErrShardClosed, dragonboat.ErrClosed, dragonboat.ErrTimeout,
	dragonboat.ErrCanceled, dragonboat.ErrAborted, dragonboat.ErrRejected, dragonboat.ErrInvalidOperation,
	dragonboat.ErrTimeoutTooSmall, dragonboat.ErrDeadlineNotSet, dragonboat.ErrInvalidDeadline,
	context.Canceled, context.DeadlineExceeded,
}

// Read queries the local replica: after a ReadIndex round (linearizable)
// or, with stale set, directly.
func (s *Service) Read(ctx context.Context, req *drummerpb.ReadRequest) (*drummerpb.ReadResponse, error) {
	op := "read"
	if req.GetStale() {
		op = "stale read"
	}
	shardID := req.GetShardId()
	if err := s.checkShardID(op, shardID); err != nil {
		return nil, err
	}
	if err := s.checkPayload(op, "query", shardID, req.GetQuery(), true); err != nil {
		return nil, err
	}
	query := req.GetQuery()
	if query == nil {
		query = []byte{}
	}
	cctx, cancel, err := s.opCtx(ctx, op, shardID)
	if err != nil {
		return nil, err
	}
	defer cancel()
	v, err := safe(s, op, func() (any, error) {
		if req.GetStale() {
			return s.nh.StaleRead(shardID, query)
		}
		return s.nh.SyncRead(cctx, shardID, query)
	})
	if err != nil {
		var p errPanic
		if !errors.As(err, &p) && !slices.ContainsFunc(knownErrors, func(e error) bool { return errors.Is(err, e) }) {
			return nil, s.apiError(codes.Unknown, ReasonStateMachine, "no", shardID, "%s: shard %d: the state machine's Lookup failed: %v", op, shardID, err)
		}
		return nil, s.mapError(op, shardID, err)
	}
	switch b := v.(type) {
	case []byte:
		return &drummerpb.ReadResponse{Result: b}, nil
	case nil:
		return &drummerpb.ReadResponse{}, nil
	default:
		return nil, s.apiError(codes.Internal, ReasonInternal, "no", shardID,
			"%s: shard %d: the state machine's Lookup returned %T; the NodehostAPI needs []byte", op, shardID, v)
	}
}

// OpenSession registers a new client session with the shard.
func (s *Service) OpenSession(ctx context.Context, req *drummerpb.OpenSessionRequest) (*drummerpb.Session, error) {
	const op = "open session"
	shardID := req.GetShardId()
	if err := s.checkShardID(op, shardID); err != nil {
		return nil, err
	}
	if err := s.checkSessions(op, shardID); err != nil {
		return nil, err
	}
	cctx, cancel, err := s.opCtx(ctx, op, shardID)
	if err != nil {
		return nil, err
	}
	defer cancel()
	// A random 64-bit client ID collides with a live one with negligible
	// probability; the shard then rejects the registration and another ID
	// is tried.
	owner := s.ownerOf(ctx)
	for range 3 {
		cs := &dbclient.Session{ShardID: shardID, ClientID: randomClientID(), SeriesID: dbclient.SeriesIDForRegister}
		victim, ok := s.sessions.reserve(shardID, cs.ClientID, owner, time.Now())
		if !ok {
			return nil, s.apiError(codes.ResourceExhausted, ReasonTooManySessions, "no", shardID,
				"%s: shard %d already has %d sessions opened through nodehost %s (at most %d, %d per caller) and none idle for %v: close the sessions you no longer use",
				op, shardID, s.opts.MaxSessionsPerShard, s.hostID, s.opts.MaxSessionsPerShard, s.opts.MaxSessionsPerOwner, s.opts.SessionIdleTimeout)
		}
		if victim != 0 {
			// Close the idle session explicitly (its client sees it
			// rejected), rather than let dragonboat's LRU pick one.
			vs := &dbclient.Session{ShardID: shardID, ClientID: victim, SeriesID: dbclient.SeriesIDForUnregister}
			if _, err := s.sessionOp(cctx, op, vs); err != nil && !errors.Is(err, dragonboat.ErrRejected) {
				s.log.Debug("nodehostapi: closing an idle session failed", "shard_id", shardID, "err", err)
			}
		}
		r, err := s.sessionOp(cctx, op, cs)
		ok = err == nil && r.Value == cs.ClientID
		s.sessions.opened(shardID, cs.ClientID, ok)
		if errors.Is(err, dragonboat.ErrRejected) {
			continue
		}
		if err != nil {
			return nil, s.mapError(op, shardID, err)
		}
		if ok {
			return &drummerpb.Session{ShardId: shardID, ClientId: cs.ClientID, SeriesId: dbclient.SeriesIDFirstProposal}, nil
		}
	}
	return nil, s.apiError(codes.Unavailable, ReasonBusy, "backoff", shardID, "%s: shard %d did not register the session: retry", op, shardID)
}

// CloseSession unregisters a session. Closing a session the shard does not
// know (already closed or evicted) succeeds.
func (s *Service) CloseSession(ctx context.Context, req *drummerpb.CloseSessionRequest) (*drummerpb.CloseSessionResponse, error) {
	const op = "close session"
	p := req.GetSession()
	if p == nil {
		return nil, s.invalid(ReasonInvalidSession, 0, "%s: no session given", op)
	}
	shardID := p.GetShardId()
	if err := s.checkShardID(op, shardID); err != nil {
		return nil, err
	}
	if p.GetClientId() == dbclient.NotSessionManagedClientID {
		return nil, s.invalid(ReasonInvalidSession, shardID, "%s: session client_id is 0", op)
	}
	if err := s.checkSessions(op, shardID); err != nil {
		return nil, err
	}
	cctx, cancel, err := s.opCtx(ctx, op, shardID)
	if err != nil {
		return nil, err
	}
	defer cancel()
	cs := &dbclient.Session{ShardID: shardID, ClientID: p.GetClientId(), SeriesID: dbclient.SeriesIDForUnregister, RespondedTo: p.GetRespondedTo()}
	// The shard rejects unregistering a session it does not know: it is
	// closed already (this may be a retry) or was evicted. Either way the
	// caller's goal is met.
	if _, err := s.sessionOp(cctx, op, cs); err != nil && !errors.Is(err, dragonboat.ErrRejected) {
		return nil, s.mapError(op, shardID, err)
	}
	s.sessions.forget(shardID, cs.ClientID)
	return &drummerpb.CloseSessionResponse{}, nil
}

// sessionOp registers or unregisters a session. It does what
// SyncGetSession/SyncCloseSession do, without their panics when the shard
// answers an unexpected client ID.
func (s *Service) sessionOp(ctx context.Context, op string, cs *dbclient.Session) (sm.Result, error) {
	return safe(s, op, func() (sm.Result, error) {
		dl, _ := ctx.Deadline()
		rs, err := s.nh.ProposeSession(cs, time.Until(dl))
		if err != nil {
			return sm.Result{}, err
		}
		select {
		case r := <-rs.AppliedC():
			switch {
			case r.Completed():
				rs.Release()
				return r.GetResult(), nil
			case r.Rejected():
				return sm.Result{}, dragonboat.ErrRejected
			case r.Timeout():
				return sm.Result{}, dragonboat.ErrTimeout
			case r.Terminated():
				return sm.Result{}, dragonboat.ErrShardClosed
			case r.Dropped():
				return sm.Result{}, dragonboat.ErrShardNotReady
			case r.Aborted():
				return sm.Result{}, dragonboat.ErrAborted
			}
			return sm.Result{}, fmt.Errorf("unknown request result %v", r)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return sm.Result{}, dragonboat.ErrCanceled
			}
			return sm.Result{}, dragonboat.ErrTimeout
		}
	})
}

func randomClientID() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if id := binary.LittleEndian.Uint64(b[:]); id != dbclient.NotSessionManagedClientID {
			return id
		}
	}
}

// ListLocalShards lists the replicas this nodehost runs.
func (s *Service) ListLocalShards(ctx context.Context, _ *drummerpb.ListLocalShardsRequest) (*drummerpb.ListLocalShardsResponse, error) {
	const op = "list local shards"
	info, err := safe(s, op, func() (*dragonboat.NodeHostInfo, error) {
		return s.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true}), nil
	})
	if err == nil && info == nil {
		err = dragonboat.ErrClosed
	}
	if err != nil {
		return nil, s.mapError(op, 0, err)
	}
	resp := &drummerpb.ListLocalShardsResponse{HostId: s.hostID}
	s.mu.Lock()
	for _, si := range info.ShardInfoList {
		s.types[si.ShardID] = si.StateMachineType
	}
	s.mu.Unlock()
	for _, si := range info.ShardInfoList {
		role := "voter"
		switch {
		case si.IsWitness:
			role = "witness"
		case si.IsNonVoting:
			role = "non_voting"
		}
		ls := &drummerpb.LocalShard{
			ShardId:   si.ShardID,
			ReplicaId: si.ReplicaID,
			LeaderId:  si.LeaderID,
			Term:      si.Term,
			IsLeader:  si.LeaderID != 0 && si.LeaderID == si.ReplicaID,
			Role:      role,
		}
		if s.opts.AppName != nil {
			ls.App = s.opts.AppName(si.ShardID, si.ReplicaID)
		}
		resp.Shards = append(resp.Shards, ls)
	}
	slices.SortFunc(resp.Shards, func(a, b *drummerpb.LocalShard) int {
		switch {
		case a.ShardId < b.ShardId:
			return -1
		case a.ShardId > b.ShardId:
			return 1
		}
		return 0
	})
	return resp, nil
}
