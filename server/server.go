// Package server is the embeddable Drummer server: a dragonboat NodeHost
// hosting one replica of the Drummer DB, the Drummer gRPC API, the soft
// state built from nodehost reports, and the scheduler that runs on the DB
// shard's leader.
//
// A deployment runs 3 or 5 servers. Every server takes reports from every
// nodehost (so a new leader starts with a warm view); only the server
// holding the current scheduler epoch plans, writes decisions and answers
// operator calls. Decisions carry the epoch and the DB rejects those of a
// deposed leader, so two servers can never both act.
package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/events"
	"github.com/drummerhq/drummer/internal/grpcutil"
)

// Server is one drummer server.
type Server struct {
	drummerpb.UnimplementedDrummerServer

	cfg     Config
	log     *slog.Logger
	started time.Time

	nh     *dragonboat.NodeHost
	sm     *db.StateMachine
	grpc   *grpc.Server
	lis    net.Listener
	health *health.Server
	loop   *loop
	// tls is nil in insecure mode.
	tls *auth.Source

	leaderKick chan struct{}
	removed    chan struct{}
	removeOnce sync.Once
	isRemoved  atomic.Bool
	// leaderChanges counts the DB shard's leader changes (Stats).
	leaderChanges atomic.Uint64

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

// New starts a drummer server: its NodeHost and DB replica, its gRPC
// listener, and the background scheduler. Close stops it.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "drummer", "replica_id", cfg.ReplicaID),
		started:    time.Now(),
		leaderKick: make(chan struct{}, 1),
		removed:    make(chan struct{}),
	}
	src, err := s.newTLSSource()
	if err != nil {
		return nil, err
	}
	s.tls = src
	lis, err := net.Listen("tcp", cfg.GRPCAddress)
	if err != nil {
		return nil, fmt.Errorf("listen on --grpc-address %s: %w", cfg.GRPCAddress, err)
	}
	s.lis = lis
	if err := s.startNodeHost(); err != nil {
		lis.Close()
		return nil, err
	}
	s.loop = newLoop(s)
	s.grpc = grpc.NewServer(append(s.grpcServerOptions(),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)...)
	drummerpb.RegisterDrummerServer(s.grpc, s)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(drummerpb.Drummer_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)

	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(3)
	if s.tls != nil {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.tls.Run(ctx) }()
	}
	go func() {
		defer s.wg.Done()
		if err := s.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("gRPC server stopped", "err", err)
		}
	}()
	go func() { defer s.wg.Done(); s.loop.run(ctx) }()
	go func() { defer s.wg.Done(); s.registerSelf(ctx) }()
	s.log.Info("drummer server started", "raft_address", cfg.RaftAddress, "grpc_address", cfg.GRPCAddress, "data_dir", cfg.DataDir)
	return s, nil
}

func (s *Server) startNodeHost() error {
	dir := filepath.Join(s.cfg.DataDir, "nodehost")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	listener := events.New(s.onEvent)
	nhc := config.NodeHostConfig{
		DeploymentID:        DeploymentID,
		NodeHostDir:         dir,
		RTTMillisecond:      s.cfg.RTTMillisecond,
		RaftAddress:         s.cfg.RaftAddress,
		RaftEventListener:   listener,
		SystemEventListener: listener,
		// dragonboat's own metrics (served on --http-address): the DB
		// shard is the only one, so their per-shard labels stay few.
		EnableMetrics: true,
		Expert:        config.ExpertConfig{LogDB: config.GetSmallMemLogDBConfig()},
	}
	if s.tls != nil {
		// dragonboat reads these files itself: the outgoing side on every
		// new connection, its listener only at start (see docs/security.md).
		nhc.MutualTLS, nhc.CAFile, nhc.CertFile, nhc.KeyFile = true, s.raftCAFile(), s.cfg.CertFile, s.cfg.KeyFile
	}
	if err := nhc.Validate(); err != nil {
		return fmt.Errorf("nodehost config: %w", err)
	}
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		return fmt.Errorf("start NodeHost in %s: %w", dir, err)
	}
	s.nh = nh
	s.sm = db.NewStateMachine(s.log)
	create := func(uint64, uint64) sm.IConcurrentStateMachine { return s.sm }
	rc := config.Config{
		ShardID:             DBShardID,
		ReplicaID:           s.cfg.ReplicaID,
		ElectionRTT:         20,
		HeartbeatRTT:        2,
		CheckQuorum:         true,
		PreVote:             true,
		OrderedConfigChange: true,
		SnapshotEntries:     10000,
		CompactionOverhead:  5000,
	}
	if err := rc.Validate(); err != nil {
		nh.Close()
		return fmt.Errorf("DB shard config: %w", err)
	}
	switch {
	case nh.HasNodeInfo(DBShardID, s.cfg.ReplicaID):
		// Restart from disk; --initial-members and --join are ignored.
		err = nh.StartConcurrentReplica(nil, false, create, rc)
	case s.cfg.Join:
		err = nh.StartConcurrentReplica(nil, true, create, rc)
	default:
		members := make(map[uint64]dragonboat.Target, len(s.cfg.InitialMembers))
		for id, addr := range s.cfg.InitialMembers {
			members[id] = addr
		}
		err = nh.StartConcurrentReplica(members, false, create, rc)
	}
	if err != nil {
		nh.Close()
		if errors.Is(err, dragonboat.ErrReplicaRemoved) {
			return fmt.Errorf("this server (replica %d) was removed from the drummer cluster; start it with a new --id after `drummercmd member add`, and a fresh --data-dir: %w", s.cfg.ReplicaID, err)
		}
		return fmt.Errorf("start the Drummer DB replica: %w", err)
	}
	return nil
}

// onEvent runs on dragonboat's event goroutine: record and return.
func (s *Server) onEvent(e events.Event) {
	if e.ShardID != DBShardID {
		return
	}
	switch e.Kind {
	case events.LeaderUpdated:
		s.leaderChanges.Add(1)
		// Rare, and worth an operator's eye: a new Raft leader takes the
		// scheduler epoch and judges the whole fleet again.
		s.log.Info("DB Raft leader changed", "leader_id", e.LeaderID, "term", e.Term)
		select {
		case s.leaderKick <- struct{}{}:
		default:
		}
	case events.NodeDeleted:
		if e.ReplicaID == s.cfg.ReplicaID {
			s.isRemoved.Store(true)
			s.removeOnce.Do(func() { close(s.removed) })
		}
	}
}

// Removed is closed when this server has been removed from the drummer
// cluster (drummercmd member remove); it then serves nothing.
func (s *Server) Removed() <-chan struct{} { return s.removed }

// NodeHost returns the server's dragonboat NodeHost.
func (s *Server) NodeHost() *dragonboat.NodeHost { return s.nh }

// GRPCAddress is the address the API listens on.
func (s *Server) GRPCAddress() string { return s.lis.Addr().String() }

// ReplicaID is this server's replica ID in the DB shard.
func (s *Server) ReplicaID() uint64 { return s.cfg.ReplicaID }

// IsLeader reports whether this server currently holds the scheduler epoch.
func (s *Server) IsLeader() bool { return s.loop.isActive() }

// DBHash returns the DB state hash and the index it reflects.
func (s *Server) DBHash() (uint64, uint64) {
	return s.sm.HashAt()
}

// Close stops the server. It is safe to call more than once.
func (s *Server) Close() {
	if s.closed.Swap(true) {
		return
	}
	s.health.Shutdown()
	s.cancel()
	grpcutil.Stop(s.grpc, 3*time.Second)
	s.wg.Wait()
	s.nh.Close()
	s.log.Info("drummer server stopped")
}

// propose writes a command through Raft and waits for it to apply.
func (s *Server) propose(ctx context.Context, cmd *dbpb.Command) (db.Result, error) {
	cmd.Version = db.CommandVersion
	if cmd.NowUnixMs == 0 {
		cmd.NowUnixMs = time.Now().UnixMilli()
	}
	b, err := db.Encode(cmd)
	if err != nil {
		return db.Result{}, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	r, err := s.nh.SyncPropose(ctx, s.nh.GetNoOPSession(DBShardID), b)
	if err != nil {
		return db.Result{}, err
	}
	return db.Result{Code: dbpb.Code(r.Value), Data: r.Data}, nil
}

// registerSelf records this server's gRPC address in the DB, so agents and
// clients learn every drummer endpoint.
func (s *Server) registerSelf(ctx context.Context) {
	cmd := &dbpb.Command{Op: &dbpb.Command_RegisterDrummer{RegisterDrummer: &dbpb.RegisterDrummer{
		ReplicaId: s.cfg.ReplicaID, RaftAddress: s.cfg.RaftAddress, GrpcAddress: s.advertisedGRPC()}}}
	for {
		st, _ := s.sm.View()
		if d := st.Drummers[s.cfg.ReplicaID]; d != nil && d.GrpcAddress == s.advertisedGRPC() && d.RaftAddress == s.cfg.RaftAddress {
			return
		}
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		r, err := s.propose(pctx, cmd)
		cancel()
		if err == nil && (r.Code == dbpb.Code_CODE_OK || r.Code == dbpb.Code_CODE_NOOP) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// advertisedGRPC is the gRPC address others should dial.
func (s *Server) advertisedGRPC() string { return s.cfg.GRPCAddress }

func randomID() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return uint64(time.Now().UnixNano())
	}
	return binary.LittleEndian.Uint64(b[:]) | 1
}
