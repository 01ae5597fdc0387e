// Package nhtest runs real dragonboat NodeHosts in-process for tests and
// benchmarks of the data plane: each host listens on 127.0.0.1 (free
// ports), keeps its data in a temporary directory, and serves the
// NodehostAPI over gRPC on loopback. A fake Drummer server answering
// LocateShards from the cluster's actual state is included.
//
// Everything started is stopped by the test's Cleanup. Set
// DRUMMER_TEST_LOG=debug|info|warn|error to see dragonboat's logs (default:
// silent).
package nhtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"google.golang.org/grpc"

	"github.com/drummerhq/drummer/agent/nodehostapi"
	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/dblog"
)

// Options configure a Cluster.
type Options struct {
	// Hosts is the number of NodeHosts (default 3).
	Hosts int
	// RTTMillisecond is the NodeHosts' RTT (default 20).
	RTTMillisecond uint64
	// Dir holds the NodeHost directories (default: t.TempDir()).
	Dir string
	// Service configures each host's NodehostAPI service.
	Service nodehostapi.Options
}

// ShardOptions configure a shard started with StartShard.
type ShardOptions struct {
	// Hosts are the indexes of the hosts that get a replica (default all).
	// Replica IDs are host index + 1.
	Hosts []int
	// SnapshotEntries and CompactionOverhead are passed to config.Config.
	SnapshotEntries    uint64
	CompactionOverhead uint64
	// ElectionRTT (default 10) and HeartbeatRTT (default 1).
	ElectionRTT, HeartbeatRTT uint64
}

// Host is one NodeHost with its NodehostAPI server.
type Host struct {
	Index    int
	NH       *dragonboat.NodeHost
	Service  *nodehostapi.Service
	Server   *grpc.Server
	APIAddr  string
	RaftAddr string
	Dir      string

	stopped bool
}

// Cluster is a set of in-process NodeHosts.
type Cluster struct {
	t    testing.TB
	opts Options
	RTT  time.Duration

	mu     sync.Mutex
	Hosts  []*Host
	shards map[uint64][]int // shard → host indexes with a replica
	specs  map[uint64]shardSpec
}

type shardSpec struct {
	create sm.CreateStateMachineFunc
	disk   sm.CreateOnDiskStateMachineFunc
	opts   ShardOptions
}

var routeOnce sync.Once

// QuietLogs routes dragonboat's logging according to DRUMMER_TEST_LOG
// (default: silent). New calls it once; call it before New only to be
// explicit.
func QuietLogs() {
	routeOnce.Do(func() {
		level := slog.Level(100)
		switch strings.ToLower(os.Getenv("DRUMMER_TEST_LOG")) {
		case "debug":
			level = slog.LevelDebug
		case "info":
			level = slog.LevelInfo
		case "warn":
			level = slog.LevelWarn
		case "error":
			level = slog.LevelError
		}
		h := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
		dblog.Route(slog.New(h), level)
	})
}

// New starts opts.Hosts NodeHosts, each serving the NodehostAPI. No shard
// runs yet: see StartShard.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	QuietLogs()
	if opts.Hosts <= 0 {
		opts.Hosts = 3
	}
	if opts.RTTMillisecond == 0 {
		opts.RTTMillisecond = 20
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	c := &Cluster{t: t, opts: opts, RTT: time.Duration(opts.RTTMillisecond) * time.Millisecond, shards: map[uint64][]int{}, specs: map[uint64]shardSpec{}}
	t.Cleanup(c.Close)
	for i := 0; i < opts.Hosts; i++ {
		h, err := c.startHost(i, "", "")
		if err != nil {
			t.Fatalf("nhtest: start host %d: %v", i, err)
		}
		c.Hosts = append(c.Hosts, h)
	}
	return c
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startHost starts host i; raftAddr and apiAddr are reused when given
// (a restart).
func (c *Cluster) startHost(i int, raftAddr, apiAddr string) (*Host, error) {
	dir := filepath.Join(c.opts.Dir, "nh"+strconv.Itoa(i))
	var nh *dragonboat.NodeHost
	addr := raftAddr
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		if raftAddr == "" {
			if addr, err = freePort(); err != nil {
				return nil, err
			}
		}
		nhc := config.NodeHostConfig{
			NodeHostDir:    dir,
			RTTMillisecond: c.opts.RTTMillisecond,
			RaftAddress:    addr,
		}
		nhc.Expert.LogDB = config.GetTinyMemLogDBConfig()
		nh, err = dragonboat.NewNodeHost(nhc)
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
		if raftAddr != "" {
			time.Sleep(100 * time.Millisecond) // wait for the old listener to go
		}
	}
	if err != nil {
		return nil, err
	}
	var lis net.Listener
	if apiAddr != "" {
		lis, err = net.Listen("tcp", apiAddr)
	}
	if lis == nil {
		lis, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		nh.Close()
		return nil, err
	}
	svc := nodehostapi.New(nh, c.opts.Service)
	srv := grpc.NewServer(nodehostapi.GRPCServerOptions(c.opts.Service)...)
	svc.Register(srv)
	go srv.Serve(lis)
	return &Host{Index: i, NH: nh, Service: svc, Server: srv, APIAddr: lis.Addr().String(), RaftAddr: addr, Dir: dir}, nil
}

// RestartHost stops host i (if running) and starts it again on the same
// directory and Raft address, restarting its replicas from their logs and
// snapshots. The API address is kept when it is still free.
func (c *Cluster) RestartHost(i int) {
	c.t.Helper()
	c.StopHost(i)
	c.mu.Lock()
	old := c.Hosts[i]
	var shards []uint64
	for id, hosts := range c.shards {
		if slices.Contains(hosts, i) {
			shards = append(shards, id)
		}
	}
	c.mu.Unlock()
	h, err := c.startHost(i, old.RaftAddr, old.APIAddr)
	if err != nil {
		c.t.Fatalf("nhtest: restart host %d: %v", i, err)
	}
	for _, id := range shards {
		c.mu.Lock()
		spec := c.specs[id]
		c.mu.Unlock()
		cfg := spec.opts.config(id, uint64(i+1))
		if spec.disk != nil {
			err = h.NH.StartOnDiskReplica(nil, false, spec.disk, cfg)
		} else {
			err = h.NH.StartReplica(nil, false, spec.create, cfg)
		}
		if err != nil {
			c.t.Fatalf("nhtest: restart shard %d on host %d: %v", id, i, err)
		}
	}
	c.mu.Lock()
	c.Hosts[i] = h
	c.mu.Unlock()
}

func (o ShardOptions) config(shardID, replicaID uint64) config.Config {
	cfg := config.Config{
		ShardID:            shardID,
		ReplicaID:          replicaID,
		ElectionRTT:        o.ElectionRTT,
		HeartbeatRTT:       o.HeartbeatRTT,
		CheckQuorum:        true,
		SnapshotEntries:    o.SnapshotEntries,
		CompactionOverhead: o.CompactionOverhead,
	}
	if cfg.ElectionRTT == 0 {
		cfg.ElectionRTT = 10
	}
	if cfg.HeartbeatRTT == 0 {
		cfg.HeartbeatRTT = 1
	}
	return cfg
}

func (c *Cluster) members(o ShardOptions) (map[uint64]dragonboat.Target, []int) {
	hosts := o.Hosts
	if len(hosts) == 0 {
		for i := range c.Hosts {
			hosts = append(hosts, i)
		}
	}
	m := map[uint64]dragonboat.Target{}
	for _, i := range hosts {
		m[uint64(i+1)] = c.Hosts[i].RaftAddr
	}
	return m, hosts
}

// StartShard starts a regular (in-memory) state machine shard.
func (c *Cluster) StartShard(shardID uint64, create sm.CreateStateMachineFunc, o ShardOptions) {
	c.t.Helper()
	m, hosts := c.members(o)
	for _, i := range hosts {
		if err := c.Hosts[i].NH.StartReplica(m, false, create, o.config(shardID, uint64(i+1))); err != nil {
			c.t.Fatalf("nhtest: start shard %d on host %d: %v", shardID, i, err)
		}
	}
	c.mu.Lock()
	c.shards[shardID] = hosts
	c.specs[shardID] = shardSpec{create: create, opts: o}
	c.mu.Unlock()
}

// StartOnDiskShard starts an on-disk state machine shard.
func (c *Cluster) StartOnDiskShard(shardID uint64, create sm.CreateOnDiskStateMachineFunc, o ShardOptions) {
	c.t.Helper()
	m, hosts := c.members(o)
	for _, i := range hosts {
		if err := c.Hosts[i].NH.StartOnDiskReplica(m, false, create, o.config(shardID, uint64(i+1))); err != nil {
			c.t.Fatalf("nhtest: start on-disk shard %d on host %d: %v", shardID, i, err)
		}
	}
	c.mu.Lock()
	c.shards[shardID] = hosts
	c.specs[shardID] = shardSpec{disk: create, opts: o}
	c.mu.Unlock()
}

// Live returns the hosts that are not stopped.
func (c *Cluster) Live() []*Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Host
	for _, h := range c.Hosts {
		if !h.stopped {
			out = append(out, h)
		}
	}
	return out
}

// WaitLeader waits (up to 60s) until every live replica of the shard knows
// the same leader, and returns the leader's host index.
func (c *Cluster) WaitLeader(shardID uint64) int {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if i, ok := c.leader(shardID); ok {
			return i
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("nhtest: shard %d has no leader after 60s", shardID)
	return -1
}

// leader reports the leader's host index if all live replicas agree.
func (c *Cluster) leader(shardID uint64) (int, bool) {
	c.mu.Lock()
	hosts := c.shards[shardID]
	c.mu.Unlock()
	var leader uint64
	seen := 0
	for _, i := range hosts {
		h := c.host(i)
		if c.isStopped(h) {
			continue
		}
		id, _, valid, err := h.NH.GetLeaderID(shardID)
		if err != nil || !valid || id == 0 || (leader != 0 && id != leader) {
			return -1, false
		}
		leader = id
		seen++
	}
	if seen == 0 || int(leader-1) >= len(c.Hosts) || c.isStopped(c.host(int(leader-1))) {
		return -1, false
	}
	return int(leader - 1), true
}

// host returns host i (Hosts[i] is replaced by RestartHost).
func (c *Cluster) host(i int) *Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Hosts[i]
}

func (c *Cluster) isStopped(h *Host) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return h.stopped
}

// Location describes the shard as Drummer's LocateShards would: members
// with their API addresses, leader flags from the replicas' own view, and
// stopped hosts as "dead".
func (c *Cluster) Location(shardID uint64) *drummerpb.ShardLocation {
	c.mu.Lock()
	hosts, ok := c.shards[shardID]
	c.mu.Unlock()
	loc := &drummerpb.ShardLocation{ShardId: shardID, Found: ok}
	if !ok {
		return loc
	}
	leaderIdx, hasLeader := c.leader(shardID)
	loc.Health = "healthy"
	if !hasLeader {
		loc.Health = "unavailable"
	} else {
		loc.LeaderReplicaId = uint64(leaderIdx + 1)
	}
	for _, i := range hosts {
		h := c.host(i)
		m := &drummerpb.MemberStatus{
			ReplicaId:   uint64(i + 1),
			HostId:      "host-" + strconv.Itoa(i),
			RaftAddress: h.RaftAddr,
			ApiAddress:  h.APIAddr,
			Role:        "voter",
			State:       "live",
			IsLeader:    hasLeader && i == leaderIdx,
		}
		if c.isStopped(h) {
			m.State = "dead"
			if loc.Health == "healthy" {
				loc.Health = "under_replicated"
			}
		}
		loc.Members = append(loc.Members, m)
	}
	return loc
}

// StopHost stops a host's API server and closes its NodeHost.
func (c *Cluster) StopHost(i int) {
	c.mu.Lock()
	h := c.Hosts[i]
	if h.stopped {
		c.mu.Unlock()
		return
	}
	h.stopped = true
	c.mu.Unlock()
	stopServer(h.Server)
	h.NH.Close()
}

func stopServer(s *grpc.Server) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.Stop()
		<-done
	}
}

// Close stops every host. It is registered with t.Cleanup by New.
func (c *Cluster) Close() {
	for i := range c.Hosts {
		c.StopHost(i)
	}
}

// FakeDrummer serves Drummer.LocateShards over gRPC on loopback; every
// other Drummer RPC answers Unimplemented.
type FakeDrummer struct {
	drummerpb.UnimplementedDrummerServer

	// Addr is the server's address.
	Addr string

	mu     sync.Mutex
	locate func(shardID uint64) *drummerpb.ShardLocation
	calls  int
	fail   error
	srv    *grpc.Server
}

// StartFakeDrummer starts a fake Drummer whose LocateShards answers with
// locate (which should return Found=false for unknown shards). It stops
// at the test's Cleanup.
func StartFakeDrummer(t testing.TB, locate func(shardID uint64) *drummerpb.ShardLocation) *FakeDrummer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &FakeDrummer{Addr: lis.Addr().String(), locate: locate, srv: grpc.NewServer()}
	drummerpb.RegisterDrummerServer(f.srv, f)
	go f.srv.Serve(lis)
	t.Cleanup(func() { stopServer(f.srv) })
	return f
}

// SetLocate replaces the answer function.
func (f *FakeDrummer) SetLocate(locate func(shardID uint64) *drummerpb.ShardLocation) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.locate = locate
}

// SetFailure makes LocateShards fail with err (nil: answer normally).
func (f *FakeDrummer) SetFailure(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

// Calls returns how many LocateShards calls were answered.
func (f *FakeDrummer) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// LocateShards implements drummerpb.DrummerServer.
func (f *FakeDrummer) LocateShards(_ context.Context, req *drummerpb.LocateShardsRequest) (*drummerpb.LocateShardsResponse, error) {
	f.mu.Lock()
	locate, fail := f.locate, f.fail
	f.calls++
	f.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	resp := &drummerpb.LocateShardsResponse{}
	for _, id := range req.GetShardIds() {
		loc := locate(id)
		if loc == nil {
			loc = &drummerpb.ShardLocation{ShardId: id}
		}
		resp.Shards = append(resp.Shards, loc)
	}
	return resp, nil
}

// ErrFake is a convenience error for SetFailure.
var ErrFake = errors.New("nhtest: injected failure")

// String describes the cluster (for test logs).
func (c *Cluster) String() string {
	var b strings.Builder
	for _, h := range c.Hosts {
		fmt.Fprintf(&b, "host %d raft=%s api=%s stopped=%v\n", h.Index, h.RaftAddr, h.APIAddr, c.isStopped(h))
	}
	return b.String()
}
