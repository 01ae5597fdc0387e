package server

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

func withDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// members returns the DB shard's membership joined with the recorded gRPC
// addresses.
func (s *Server) members(ctx context.Context) ([]*drummerpb.Member, uint64, error) {
	ctx, cancel := withDeadline(ctx, 5*time.Second)
	defer cancel()
	m, err := s.nh.SyncGetShardMembership(ctx, DBShardID)
	if err != nil {
		return nil, 0, proposeError(err)
	}
	st, _ := s.sm.View()
	leader, _ := s.raftLeader()
	var out []*drummerpb.Member
	add := func(id uint64, addr, role string) {
		mem := &drummerpb.Member{ReplicaId: id, RaftAddress: addr, Role: role, IsLeader: id == leader}
		if d := st.Drummers[id]; d != nil {
			mem.GrpcAddress = d.GrpcAddress
		}
		out = append(out, mem)
	}
	for _, id := range slices.Sorted(maps.Keys(m.Nodes)) {
		add(id, m.Nodes[id], "voter")
	}
	for _, id := range slices.Sorted(maps.Keys(m.NonVotings)) {
		add(id, m.NonVotings[id], "non_voting")
	}
	return out, m.ConfigChangeID, nil
}

// ListMembers lists the drummer servers.
func (s *Server) ListMembers(ctx context.Context, _ *drummerpb.ListMembersRequest) (*drummerpb.ListMembersResponse, error) {
	if _, err := s.requireLeader(ctx); err != nil {
		return nil, err
	}
	ms, cci, err := s.members(ctx)
	if err != nil {
		return nil, err
	}
	return &drummerpb.ListMembersResponse{Members: ms, ConfigChangeId: cci}, nil
}

// AddMember adds a drummer server to the DB shard. The new server is then
// started with --join.
func (s *Server) AddMember(ctx context.Context, req *drummerpb.AddMemberRequest) (*drummerpb.AddMemberResponse, error) {
	if _, err := s.requireLeader(ctx); err != nil {
		return nil, err
	}
	if req.ReplicaId == 0 {
		return nil, status.Error(codes.InvalidArgument, "member ID must be at least 1")
	}
	if err := db.ValidateAddress(req.RaftAddress); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "raft address: %v", err)
	}
	if err := db.ValidateAddress(req.GrpcAddress); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "grpc address: %v", err)
	}
	ctx, cancel := withDeadline(ctx, 10*time.Second)
	defer cancel()
	m, err := s.nh.SyncGetShardMembership(ctx, DBShardID)
	if err != nil {
		return nil, proposeError(err)
	}
	if _, removed := m.Removed[req.ReplicaId]; removed {
		return nil, status.Errorf(codes.FailedPrecondition, "member ID %d was removed before; IDs are never reused, pick a new one", req.ReplicaId)
	}
	for id, addr := range m.Nodes {
		if id == req.ReplicaId {
			return nil, status.Errorf(codes.AlreadyExists, "member %d already exists (%s)", id, addr)
		}
		if addr == req.RaftAddress {
			return nil, status.Errorf(codes.AlreadyExists, "raft address %s is used by member %d", addr, id)
		}
	}
	if _, err := s.write(ctx, "register member", &dbpb.Command{Op: &dbpb.Command_RegisterDrummer{RegisterDrummer: &dbpb.RegisterDrummer{
		ReplicaId: req.ReplicaId, RaftAddress: req.RaftAddress, GrpcAddress: req.GrpcAddress}}}); err != nil {
		return nil, err
	}
	if err := s.nh.SyncRequestAddReplica(ctx, DBShardID, req.ReplicaId, req.RaftAddress, m.ConfigChangeID); err != nil {
		return nil, status.Errorf(codes.Aborted, "add member %d: %v (the membership may have changed; retry)", req.ReplicaId, err)
	}
	s.log.Info("drummer member added", "member", req.ReplicaId, "raft_address", req.RaftAddress)
	ms, _, err := s.members(ctx)
	if err != nil {
		return nil, err
	}
	return &drummerpb.AddMemberResponse{Members: ms}, nil
}

// RemoveMember removes a drummer server from the DB shard.
func (s *Server) RemoveMember(ctx context.Context, req *drummerpb.RemoveMemberRequest) (*drummerpb.RemoveMemberResponse, error) {
	if _, err := s.requireLeader(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := withDeadline(ctx, 10*time.Second)
	defer cancel()
	m, err := s.nh.SyncGetShardMembership(ctx, DBShardID)
	if err != nil {
		return nil, proposeError(err)
	}
	if _, ok := m.Nodes[req.ReplicaId]; !ok {
		if _, ok := m.NonVotings[req.ReplicaId]; !ok {
			return nil, status.Errorf(codes.NotFound, "member %d does not exist", req.ReplicaId)
		}
	}
	if _, voter := m.Nodes[req.ReplicaId]; voter && len(m.Nodes) <= 1 {
		return nil, status.Error(codes.FailedPrecondition, "cannot remove the last drummer server")
	}
	if err := s.nh.SyncRequestDeleteReplica(ctx, DBShardID, req.ReplicaId, m.ConfigChangeID); err != nil {
		return nil, status.Errorf(codes.Aborted, "remove member %d: %v (the membership may have changed; retry)", req.ReplicaId, err)
	}
	s.log.Info("drummer member removed", "member", req.ReplicaId)
	// Best effort: forget its gRPC address so agents stop reporting to it.
	if _, err := s.propose(ctx, &dbpb.Command{Op: &dbpb.Command_UnregisterDrummer{UnregisterDrummer: &dbpb.UnregisterDrummer{ReplicaId: req.ReplicaId}}}); err != nil {
		s.log.Warn("unregister removed member", "member", req.ReplicaId, "err", err)
	}
	resp := &drummerpb.RemoveMemberResponse{}
	if req.ReplicaId != s.cfg.ReplicaID {
		if ms, _, err := s.members(ctx); err == nil {
			resp.Members = ms
		}
	}
	return resp, nil
}

// ApplyConfigValues returns a copy of c with the given "key"="value"
// settings applied and validated. With shardID != 0 only the liveness
// timeouts may be set, as an override for that shard; an empty value
// removes the override.
func ApplyConfigValues(c *dbpb.Config, values map[string]string, shardID uint64) (*dbpb.Config, error) {
	if len(values) == 0 {
		return nil, fmt.Errorf("no settings given; e.g. dead_timeout=45s")
	}
	out := proto.CloneOf(c)
	var ov *dbpb.ShardTimeouts
	if shardID != 0 {
		if out.ShardOverrides == nil {
			out.ShardOverrides = map[uint64]*dbpb.ShardTimeouts{}
		}
		ov = proto.CloneOf(out.ShardOverrides[shardID])
		if ov == nil {
			ov = &dbpb.ShardTimeouts{}
		}
	}
	dur := func(k, v string) (uint64, error) {
		if ov != nil && (v == "" || v == "default") {
			return 0, nil // back to the deployment-wide value
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("%s=%q: want a positive duration such as 30s or 5m", k, v)
		}
		return uint64(d.Milliseconds()), nil
	}
	num := func(k, v string) (uint32, error) {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("%s=%q: want a positive integer", k, v)
		}
		return uint32(n), nil
	}
	for _, k := range slices.Sorted(maps.Keys(values)) {
		v := strings.TrimSpace(values[k])
		var err error
		switch k {
		case "suspect_timeout":
			if ov != nil {
				ov.SuspectTimeoutMs, err = dur(k, v)
			} else {
				out.SuspectTimeoutMs, err = dur(k, v)
			}
		case "dead_timeout":
			if ov != nil {
				ov.DeadTimeoutMs, err = dur(k, v)
			} else {
				out.DeadTimeoutMs, err = dur(k, v)
			}
		case "report_interval", "host_gc_after", "max_concurrent_repairs", "max_repairs_per_host":
			if ov != nil {
				return nil, fmt.Errorf("%s is deployment-wide; only suspect_timeout and dead_timeout can be set per shard", k)
			}
			switch k {
			case "report_interval":
				out.ReportIntervalMs, err = dur(k, v)
			case "host_gc_after":
				out.HostGcAfterMs, err = dur(k, v)
			case "max_concurrent_repairs":
				out.MaxConcurrentRepairs, err = num(k, v)
			case "max_repairs_per_host":
				out.MaxRepairsPerHost, err = num(k, v)
			}
		default:
			return nil, fmt.Errorf("unknown setting %q; known: report_interval, suspect_timeout, dead_timeout, max_concurrent_repairs, max_repairs_per_host, host_gc_after", k)
		}
		if err != nil {
			return nil, err
		}
	}
	if ov != nil {
		if ov.SuspectTimeoutMs == 0 && ov.DeadTimeoutMs == 0 {
			delete(out.ShardOverrides, shardID)
		} else {
			out.ShardOverrides[shardID] = ov
		}
	}
	if err := db.ValidateConfig(out); err != nil {
		return nil, err
	}
	return out, nil
}
