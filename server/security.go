package server

import (
	"context"
	"net"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/grpcutil"
)

// Limits of the Drummer gRPC API.
const (
	// MaxReportBytes bounds a report (a full report of a host with
	// thousands of replicas and memberships); every other call is small.
	MaxReportBytes = 64 << 20
	// maxListBytes bounds the calls that take lists of shard IDs.
	maxListBytes = 4 << 20
	// maxOperatorBytes bounds every other request.
	maxOperatorBytes = 1 << 20
	// maxStreams bounds concurrent calls per connection.
	maxStreams = 256
)

// Default rate of CreateShards per caller (each call defines up to
// db.MaxShardsPerCommand shards in one Raft entry).
var defaultCreateShardsRate = grpcutil.Rate{PerSecond: 10, Burst: 20}

// apiLimits are the per-call limits of the Drummer API: deadlines the
// server imposes whatever the client asks, request sizes that fit each
// call, and the rate of the calls that allocate.
func (s *Server) apiLimits() grpcutil.Limits {
	rate := defaultCreateShardsRate
	if s.cfg.CreateShardsPerSecond > 0 {
		rate = grpcutil.Rate{PerSecond: s.cfg.CreateShardsPerSecond, Burst: max(1, int(2*s.cfg.CreateShardsPerSecond))}
	}
	return grpcutil.Limits{
		DefaultDeadline:        30 * time.Second,
		Deadlines:              map[string]time.Duration{drummerpb.Drummer_Report_FullMethodName: 10 * time.Second},
		DefaultMaxRequestBytes: maxOperatorBytes,
		MaxRequestBytes: map[string]int{
			// The receive limit is this one: measuring every report
			// again (proto.Size) was 2 % of a follower at 10,000 hosts.
			drummerpb.Drummer_Report_FullMethodName:       0,
			drummerpb.Drummer_LocateShards_FullMethodName: maxListBytes,
			drummerpb.Drummer_ListShards_FullMethodName:   maxListBytes,
			drummerpb.Drummer_DeleteShards_FullMethodName: maxListBytes,
		},
		Rates: map[string]grpcutil.Rate{drummerpb.Drummer_CreateShards_FullMethodName: rate},
		Key:   callerKey,
	}
}

func callerKey(ctx context.Context) string {
	if id, ok := auth.FromContext(ctx); ok {
		return id.Name
	}
	return ""
}

// grpcServerOptions are the security and limit options of the API server.
func (s *Server) grpcServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxReportBytes),
		grpc.MaxSendMsgSize(64 << 20),
		grpc.MaxConcurrentStreams(maxStreams),
		grpc.ConnectionTimeout(10 * time.Second),
		// Every nodehost holds a connection to every server: gRPC's
		// default 32 KiB read and write buffers per connection were 110 MB
		// of a leader's 590 MB live heap at 3,000 hosts. Reports are small;
		// write buffers are shared between flushes.
		grpc.ReadBufferSize(8 << 10),
		grpc.WriteBufferSize(8 << 10),
		grpc.SharedWriteBuffer(true),
	}
	limits := []grpc.UnaryServerInterceptor{s.apiLimits().UnaryInterceptor()}
	if s.cfg.Metrics != nil {
		limits = append([]grpc.UnaryServerInterceptor{s.cfg.Metrics.UnaryInterceptor()}, limits...)
	}
	if s.tls == nil {
		return append(opts, grpc.ChainUnaryInterceptor(limits...))
	}
	a := auth.NewAuthorizer(nil)
	return append(opts,
		grpc.Creds(s.tls.ServerCredentials()),
		grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{a.UnaryInterceptor()}, limits...)...),
		grpc.ChainStreamInterceptor(a.StreamInterceptor()),
	)
}

// raftCAFile is where the CAs that sign the other drummer servers are
// written for dragonboat (only the server CA: no client or nodehost
// certificate can reach the DB's Raft port).
func (s *Server) raftCAFile() string { return filepath.Join(s.cfg.DataDir, "tls", "raft-ca.crt") }

func (s *Server) newTLSSource() (*auth.Source, error) {
	if s.cfg.Insecure {
		return nil, nil
	}
	return auth.NewSource(auth.SourceOptions{
		Files:      auth.Files{CAFile: s.cfg.CAFile, CertFile: s.cfg.CertFile, KeyFile: s.cfg.KeyFile},
		Roles:      []auth.Role{auth.RoleServer},
		RaftCAFile: s.raftCAFile(),
		CheckEvery: s.cfg.CertCheckEvery,
		Logger:     s.cfg.Logger,
	})
}

// checkReporter enforces "a host speaks only for itself": the report's
// raft address must be the one the caller's nodehost certificate is bound
// to, its API address must be on a host the certificate names, and a
// registered host ID is only accepted from its own raft address. In
// insecure mode there is no identity to check.
func checkReporter(ctx context.Context, req *drummerpb.ReportRequest, registered *dbpb.Host) error {
	id, ok := auth.FromContext(ctx)
	if !ok {
		return nil
	}
	if id.Role != auth.RoleNodehost {
		return status.Errorf(codes.PermissionDenied, "only nodehost certificates may report; %s", id)
	}
	if !id.BoundTo(req.RaftAddress) {
		return status.Errorf(codes.PermissionDenied, "nodehost certificate %q is bound to raft address %v; it cannot report for raft address %s",
			id.Name, id.RaftAddresses, req.RaftAddress)
	}
	if registered != nil && registered.RaftAddress != req.RaftAddress {
		return status.Errorf(codes.PermissionDenied, "host %s is registered at raft address %s; certificate %q (bound to %s) cannot report for it",
			req.HostId, registered.RaftAddress, id.Name, req.RaftAddress)
	}
	if host, _, err := net.SplitHostPort(req.ApiAddress); err == nil && !id.ValidFor(host) {
		return status.Errorf(codes.PermissionDenied, "nodehost certificate %q is not valid for the API address %s it reports (hosts %v); make it with --hosts %s",
			id.Name, req.ApiAddress, id.Hosts, host)
	}
	return nil
}
