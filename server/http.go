package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/db"
)

// Ready reports whether this server can serve: it is a member, its DB
// replica knows the Raft leader and has caught up with it (a ReadIndex
// round succeeds). The error says what is missing.
func (s *Server) Ready(ctx context.Context) error {
	if s.isRemoved.Load() {
		return errors.New("this server was removed from the drummer cluster")
	}
	if id, _ := s.raftLeader(); id == 0 {
		return errors.New("the drummer DB has no Raft leader yet (election in progress, or no quorum)")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.nh.SyncRead(ctx, DBShardID, db.QueryView{}); err != nil {
		return fmt.Errorf("the DB replica has not caught up with the leader: %w", err)
	}
	return nil
}

// LocalConn calls this server's Drummer service in process, for the
// HTTP/JSON gateway and the dashboard. Each call is authorized for the
// identity the HTTP middleware put in its context (auth.FromContext),
// with the same method table as the gRPC listener, and passes the same
// limits and metrics. On a follower, the read-only calls are forwarded
// to the leader with this server's own certificate (after the caller's
// role was checked here); other calls answer Unavailable naming the
// leader, as on gRPC.
type LocalConn struct {
	s       *Server
	authz   *auth.Authorizer
	methods map[string]grpc.MethodHandler
	chain   []grpc.UnaryServerInterceptor

	mu     sync.Mutex
	fwd    *client.Conn
	fwdEps []string
}

var _ grpc.ClientConnInterface = (*LocalConn)(nil)

// NewLocalConn returns an in-process connection; Close it when done.
func (s *Server) NewLocalConn() *LocalConn {
	c := &LocalConn{s: s, authz: auth.NewAuthorizer(nil), methods: map[string]grpc.MethodHandler{}}
	desc := drummerpb.Drummer_ServiceDesc
	for _, m := range desc.Methods {
		c.methods["/"+desc.ServiceName+"/"+m.MethodName] = m.Handler
	}
	if s.cfg.Metrics != nil {
		c.chain = append(c.chain, s.cfg.Metrics.UnaryInterceptor())
	}
	c.chain = append(c.chain, s.apiLimits().UnaryInterceptor())
	return c
}

// forwarded are the calls a follower forwards to the leader (their rule
// admits the server role).
var forwarded = map[string]bool{
	drummerpb.Drummer_GetClusterInfo_FullMethodName:   true,
	drummerpb.Drummer_ListShards_FullMethodName:       true,
	drummerpb.Drummer_GetShard_FullMethodName:         true,
	drummerpb.Drummer_ListHosts_FullMethodName:        true,
	drummerpb.Drummer_ListRepairs_FullMethodName:      true,
	drummerpb.Drummer_GetConfig_FullMethodName:        true,
	drummerpb.Drummer_GetBalanceStatus_FullMethodName: true,
	drummerpb.Drummer_ListMembers_FullMethodName:      true,
}

// Invoke implements grpc.ClientConnInterface.
func (c *LocalConn) Invoke(ctx context.Context, method string, args, reply any, _ ...grpc.CallOption) error {
	h, ok := c.methods[method]
	if !ok || method == drummerpb.Drummer_Report_FullMethodName {
		return status.Errorf(codes.Unimplemented, "%s is not served in process", method)
	}
	if c.s.tls != nil {
		if err := c.authz.AuthorizeIdentity(ctx, method, args); err != nil {
			return err
		}
	}
	in, ok1 := args.(proto.Message)
	out, ok2 := reply.(proto.Message)
	if !ok1 || !ok2 {
		return status.Errorf(codes.Internal, "%s: arguments are not protobuf messages", method)
	}
	if forwarded[method] && !c.s.IsLeader() {
		if fwd := c.forwarder(); fwd != nil {
			return fwd.Invoke(ctx, method, args, reply)
		}
	}
	dec := func(v any) error {
		proto.Merge(v.(proto.Message), in)
		return nil
	}
	resp, err := h(c.s, ctx, dec, c.intercept)
	if err != nil {
		return err
	}
	m, ok := resp.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "%s: unexpected response %T", method, resp)
	}
	proto.Reset(out)
	proto.Merge(out, m)
	return nil
}

// intercept runs the chain around a handler.
func (c *LocalConn) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	next := h
	for i := len(c.chain) - 1; i >= 0; i-- {
		ic, inner := c.chain[i], next
		next = func(ctx context.Context, req any) (any, error) { return ic(ctx, req, info, inner) }
	}
	return next(ctx, req)
}

// NewStream implements grpc.ClientConnInterface; the Drummer service has
// no streams.
func (c *LocalConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unimplemented, "streams are not served in process")
}

// forwarder returns the connection to the other servers, made from the
// DB's list of servers and made again when that list changes (nil while
// the DB names none).
func (c *LocalConn) forwarder() *client.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, _ := c.s.sm.View()
	var eps []string
	for _, id := range slices.Sorted(maps.Keys(st.Drummers)) {
		if id != c.s.cfg.ReplicaID && st.Drummers[id].GrpcAddress != "" {
			eps = append(eps, st.Drummers[id].GrpcAddress)
		}
	}
	if len(eps) == 0 {
		return nil
	}
	if c.fwd != nil && slices.Equal(eps, c.fwdEps) {
		return c.fwd
	}
	if c.fwd != nil {
		_ = c.fwd.Close()
		c.fwd = nil
	}
	sec := client.Security{Insecure: true}
	if c.s.tls != nil {
		sec = client.Security{CAFile: c.s.cfg.CAFile, CertFile: c.s.cfg.CertFile, KeyFile: c.s.cfg.KeyFile}
	}
	fwd, err := client.NewConn(eps, client.Options{Security: sec, Logger: c.s.log})
	if err != nil {
		c.s.log.Warn("cannot reach the other drummer servers for the dashboard", "err", err)
		return nil
	}
	c.fwd, c.fwdEps = fwd, eps
	return fwd
}

// Close closes the forwarding connections.
func (c *LocalConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fwd == nil {
		return nil
	}
	err := c.fwd.Close()
	c.fwd = nil
	return err
}
