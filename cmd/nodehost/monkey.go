//go:build dragonboat_monkeytest

// Test-only fault injection for the chaos harness (internal/chaos). This
// file is compiled only with -tags dragonboat_monkeytest, which also builds
// dragonboat with its monkey-test hooks (PartitionNode, drop hooks,
// per-replica hashes). It adds hidden --test-* flags and, with
// --test-monkey, serves the Monkey gRPC service (api/drummer/v1/monkey.proto)
// on the API address.

package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	pb "github.com/lni/dragonboat/v4/raftpb"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/agent"
	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/kv"
)

func init() { testHooks = monkeyHooks }

type monkeyFlags struct {
	enabled      bool
	seed         uint64
	slowApply    bool
	slowSnapshot bool
	dropRate     float64
	unsafeAck    bool
	diverge      bool
}

func monkeyHooks(fs *pflag.FlagSet) func(cfg *agent.Config) error {
	var f monkeyFlags
	fs.BoolVar(&f.enabled, "test-monkey", false, "serve the test-only Monkey fault-injection service")
	fs.Uint64Var(&f.seed, "test-seed", 0, "seed of the fault injection randomness (0: random)")
	fs.BoolVar(&f.slowApply, "test-slow-apply", false, "start with random state machine apply delays")
	fs.BoolVar(&f.slowSnapshot, "test-slow-snapshot", false, "start with random snapshot save/recover delays")
	fs.Float64Var(&f.dropRate, "test-drop-rate", 0, "start dropping this fraction of outgoing Raft message batches")
	fs.BoolVar(&f.unsafeAck, "test-unsafe-ack", false, "BROKEN ON PURPOSE: acknowledge proposals before they are committed")
	fs.BoolVar(&f.diverge, "test-diverge", false, "BROKEN ON PURPOSE: this nodehost's kv replicas apply an extra hidden write, so they diverge")
	for _, n := range []string{"test-monkey", "test-seed", "test-slow-apply", "test-slow-snapshot", "test-drop-rate", "test-unsafe-ack", "test-diverge"} {
		_ = fs.MarkHidden(n)
	}
	return func(cfg *agent.Config) error {
		if !f.enabled {
			if f.slowApply || f.slowSnapshot || f.dropRate != 0 || f.unsafeAck || f.diverge {
				return errors.New("the --test-* fault flags need --test-monkey")
			}
			return nil
		}
		if f.dropRate < 0 || f.dropRate > 0.5 {
			return fmt.Errorf("--test-drop-rate %v: want 0..0.5", f.dropRate)
		}
		m := newMonkey(f, cfg.RaftAddress)
		m.install(cfg, f.diverge)
		return nil
	}
}

// monkey holds the fault state of this process. Faults are in memory
// only: a restarted nodehost starts healthy unless its flags say otherwise.
type monkey struct {
	raftAddress string
	unsafeAck   bool

	nh            atomic.Pointer[dragonboat.NodeHost]
	partitioned   atomic.Bool
	blockReports  atomic.Bool
	dropRateBits  atomic.Uint64
	slowApply     atomic.Bool
	slowSnapshot  atomic.Bool
	droppedBatch  atomic.Uint64
	droppedMsgs   atomic.Uint64
	droppedChunks atomic.Uint64
	blocked       atomic.Uint64
	unsafeAcks    atomic.Uint64

	mu  sync.Mutex
	rng *rand.Rand
}

func newMonkey(f monkeyFlags, raftAddress string) *monkey {
	seed := f.seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	m := &monkey{raftAddress: raftAddress, unsafeAck: f.unsafeAck, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	m.dropRateBits.Store(math.Float64bits(f.dropRate))
	m.slowApply.Store(f.slowApply)
	m.slowSnapshot.Store(f.slowSnapshot)
	return m
}

func (m *monkey) float() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rng.Float64()
}

func (m *monkey) intN(n int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rng.IntN(n)
}

func (m *monkey) dropRate() float64 { return math.Float64frombits(m.dropRateBits.Load()) }

func (m *monkey) install(cfg *agent.Config, diverge bool) {
	// The kv app with random delays (off unless switched on).
	create := kv.NewFactory(kv.Options{ApplyDelay: m.applyDelay, SnapshotDelay: m.snapshotDelay})
	if diverge {
		inner := create
		create = func(shardID, replicaID uint64) sm.IStateMachine {
			return &divergingSM{IStateMachine: inner(shardID, replicaID)}
		}
	}
	apps := agent.NewRegistry()
	if err := apps.Register(agent.App{Name: kv.AppName, Regular: create}); err != nil {
		panic(err)
	}
	cfg.Apps = apps
	prev := cfg.NodeHostStarted
	cfg.NodeHostStarted = func(nh *dragonboat.NodeHost) {
		m.nh.Store(nh)
		nh.SetTransportDropBatchHook(m.dropBatch)
		nh.SetPreStreamChunkSendHook(m.dropChunk)
		if prev != nil {
			prev(nh)
		}
	}
	prevReg := cfg.RegisterAPI
	cfg.RegisterAPI = func(s *grpc.Server) {
		drummerpb.RegisterMonkeyServer(s, &monkeyService{m: m})
		if prevReg != nil {
			prevReg(s)
		}
	}
	// A partitioned nodehost cannot report to the drummer servers either.
	cfg.DrummerDialOptions = append(cfg.DrummerDialOptions, grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if m.blockReports.Load() && strings.HasSuffix(method, "/Report") {
				m.blocked.Add(1)
				return status.Error(codes.Unavailable, "monkey: nodehost partitioned")
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}))
	if m.unsafeAck {
		cfg.APIInterceptors = append(cfg.APIInterceptors, m.unsafeAckInterceptor)
	}
}

// applyDelay follows the original Drummer monkey test's distribution.
func (m *monkey) applyDelay() time.Duration {
	if !m.slowApply.Load() {
		return 0
	}
	switch n := m.intN(10000); {
	case n < 1:
		return 300 * time.Millisecond
	case n < 10:
		return 100 * time.Millisecond
	case n < 100:
		return 10 * time.Millisecond
	case n < 500:
		return 2 * time.Millisecond
	}
	return 0
}

func (m *monkey) snapshotDelay() time.Duration {
	if !m.slowSnapshot.Load() {
		return 0
	}
	switch n := m.intN(100); {
	case n < 2:
		return 3 * time.Second
	case n < 12:
		return 500 * time.Millisecond
	}
	return 50 * time.Millisecond
}

// dropBatch drops a whole outgoing batch, or one message of a batch of
// several, each with the drop rate.
func (m *monkey) dropBatch(b pb.MessageBatch) (pb.MessageBatch, bool) {
	rate := m.dropRate()
	if rate <= 0 {
		return b, true
	}
	if m.float() < rate {
		m.droppedBatch.Add(1)
		return b, false
	}
	if len(b.Requests) > 1 && m.float() < rate {
		i := m.intN(len(b.Requests))
		reqs := make([]pb.Message, 0, len(b.Requests)-1)
		reqs = append(reqs, b.Requests[:i]...)
		b.Requests = append(reqs, b.Requests[i+1:]...)
		m.droppedMsgs.Add(1)
	}
	return b, true
}

func (m *monkey) dropChunk(c pb.Chunk) (pb.Chunk, bool) {
	if rate := m.dropRate(); rate > 0 && m.float() < rate {
		m.droppedChunks.Add(1)
		return c, false
	}
	return c, true
}

// unsafeAckInterceptor is deliberately wrong: it answers a Propose with
// success at once and lets the proposal run in the background, as a
// nodehost that acknowledged writes before they commit would. The chaos
// checker must catch it.
func (m *monkey) unsafeAckInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !strings.HasSuffix(info.FullMethod, "NodehostAPI/Propose") {
		return handler(ctx, req)
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(5 * time.Second)
	}
	bctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), dl)
	go func() {
		defer cancel()
		_, _ = handler(bctx, req)
	}()
	m.unsafeAcks.Add(1)
	return &drummerpb.ProposeResponse{Value: uint64(kv.StatusOK)}, nil
}

func (m *monkey) state() *drummerpb.MonkeyState {
	st := &drummerpb.MonkeyState{
		RaftAddress:     m.raftAddress,
		Partitioned:     m.partitioned.Load(),
		ReportsBlocked:  m.blockReports.Load(),
		DropRate:        m.dropRate(),
		SlowApply:       m.slowApply.Load(),
		SlowSnapshot:    m.slowSnapshot.Load(),
		DroppedBatches:  m.droppedBatch.Load(),
		DroppedMessages: m.droppedMsgs.Load(),
		DroppedChunks:   m.droppedChunks.Load(),
		BlockedReports:  m.blocked.Load(),
		UnsafeAcks:      m.unsafeAcks.Load(),
	}
	if nh := m.nh.Load(); nh != nil {
		st.HostId = nh.ID()
	}
	return st
}

type monkeyService struct {
	drummerpb.UnimplementedMonkeyServer
	m *monkey
}

func (s *monkeyService) nodeHost() (*dragonboat.NodeHost, error) {
	nh := s.m.nh.Load()
	if nh == nil {
		return nil, status.Error(codes.Unavailable, "monkey: NodeHost not started")
	}
	return nh, nil
}

func (s *monkeyService) SetPartition(_ context.Context, req *drummerpb.SetPartitionRequest) (*drummerpb.MonkeyState, error) {
	nh, err := s.nodeHost()
	if err != nil {
		return nil, err
	}
	if req.Partitioned {
		nh.PartitionNode()
	} else {
		nh.RestorePartitionedNode()
	}
	s.m.partitioned.Store(req.Partitioned)
	s.m.blockReports.Store(req.Partitioned && !req.KeepReports)
	return s.m.state(), nil
}

func (s *monkeyService) SetDropRate(_ context.Context, req *drummerpb.SetDropRateRequest) (*drummerpb.MonkeyState, error) {
	if req.Rate < 0 || req.Rate > 0.5 || math.IsNaN(req.Rate) {
		return nil, status.Errorf(codes.InvalidArgument, "drop rate %v: want 0..0.5", req.Rate)
	}
	s.m.dropRateBits.Store(math.Float64bits(req.Rate))
	return s.m.state(), nil
}

func (s *monkeyService) SetSlow(_ context.Context, req *drummerpb.SetSlowRequest) (*drummerpb.MonkeyState, error) {
	s.m.slowApply.Store(req.SlowApply)
	s.m.slowSnapshot.Store(req.SlowSnapshot)
	return s.m.state(), nil
}

func (s *monkeyService) RequestSnapshot(ctx context.Context, req *drummerpb.MonkeySnapshotRequest) (*drummerpb.MonkeySnapshotResponse, error) {
	nh, err := s.nodeHost()
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	idx, err := nh.SyncRequestSnapshot(ctx, req.ShardId, dragonboat.SnapshotOption{
		OverrideCompactionOverhead: true, CompactionOverhead: req.CompactionOverhead,
	})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "snapshot of shard %d: %v", req.ShardId, err)
	}
	return &drummerpb.MonkeySnapshotResponse{Index: idx}, nil
}

func (s *monkeyService) GetReplicaStates(context.Context, *drummerpb.GetReplicaStatesRequest) (*drummerpb.GetReplicaStatesResponse, error) {
	nh, err := s.nodeHost()
	if err != nil {
		return nil, err
	}
	resp := &drummerpb.GetReplicaStatesResponse{State: s.m.state()}
	for _, n := range nh.Shards() {
		rs := &drummerpb.ReplicaState{ShardId: n.ShardID(), ReplicaId: n.ReplicaID()}
		func() {
			defer func() {
				if p := recover(); p != nil {
					rs.Error = fmt.Sprint("reading replica state: ", p)
				}
			}()
			rs.LastApplied = n.GetLastApplied()
			rs.StateMachineHash = n.GetStateMachineHash()
			rs.SessionHash = n.GetSessionHash()
			rs.MembershipHash = n.GetMembershipHash()
			rs.IsLeader = n.IsLeader()
		}()
		resp.Replicas = append(resp.Replicas, rs)
	}
	return resp, nil
}

// divergingSM is deliberately wrong (--test-diverge): after each command
// it also writes a hidden key that no client reads, so this replica's
// state (and hash) drifts from the other replicas' without any client
// noticing. The chaos checker's replica comparison must catch it.
type divergingSM struct {
	sm.IStateMachine
}

func (d *divergingSM) Update(e sm.Entry) (sm.Result, error) {
	r, err := d.IStateMachine.Update(e)
	if err == nil {
		if cmd, cerr := kv.EncodePut([]byte("__monkey_diverged"), fmt.Appendf(nil, "%d", e.Index)); cerr == nil {
			_, _ = d.IStateMachine.Update(sm.Entry{Index: e.Index, Cmd: cmd})
		}
	}
	return r, err
}

func (d *divergingSM) GetHash() (uint64, error) {
	if h, ok := d.IStateMachine.(sm.IHash); ok {
		return h.GetHash()
	}
	return 0, errors.New("no hash")
}
