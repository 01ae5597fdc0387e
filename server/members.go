package server

import (
	"context"
	"maps"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
