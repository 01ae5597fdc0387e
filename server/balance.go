package server

import (
	"context"
	"time"

	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/scheduler"
)

// Balance status pages: the same sizes as host list.
const (
	balancePageDefault = 500
	balancePageMax     = 5000
)

// GetBalanceStatus reports the balancing settings in force, each host's
// load against its fair share and the moves in flight. Like the other
// scheduler status calls it is answered by the leader (a follower names
// it), from the scheduler Node on its loop goroutine.
func (s *Server) GetBalanceStatus(ctx context.Context, req *drummerpb.GetBalanceStatusRequest) (*drummerpb.GetBalanceStatusResponse, error) {
	st, err := s.requireLeader(ctx)
	if err != nil {
		return nil, err
	}
	size := balancePageDefault
	if req.PageSize > 0 {
		size = min(int(req.PageSize), balancePageMax)
	}
	var bs scheduler.BalanceStatus
	now := time.Now()
	if err := s.loop.do(ctx, func(n *scheduler.Node) {
		s.absorb(n, st)
		bs = n.BalanceStatus(st, req.PageToken, size, now)
	}); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return balanceStatus(bs), nil
}

func balanceStatus(bs scheduler.BalanceStatus) *drummerpb.GetBalanceStatusResponse {
	out := &drummerpb.GetBalanceStatusResponse{
		Settings:              balanceSettings(bs.Settings),
		MovesInFlight:         uint32(bs.MovesInFlight),
		LeaderTransfersRecent: uint32(bs.LeaderTransfersRecent),
		Explanation:           bs.Why,
		NextPageToken:         bs.Next,
		Hosts:                 make([]*drummerpb.BalanceHost, 0, len(bs.Hosts)),
	}
	for _, h := range bs.Hosts {
		out.Hosts = append(out.Hosts, &drummerpb.BalanceHost{
			HostId:        h.HostID,
			RaftAddress:   h.Address,
			Replicas:      uint64(h.Replicas),
			ReplicaTarget: h.ReplicaTarget,
			Leaders:       uint64(h.Leaders),
			LeaderTarget:  h.LeaderTarget,
			MovesIn:       uint32(h.MovesIn),
			MovesOut:      uint32(h.MovesOut),
			Explanation:   h.Why,
		})
	}
	return out
}

func balanceSettings(b db.BalanceSettings) *drummerpb.BalanceSettings {
	return &drummerpb.BalanceSettings{
		Replicas:           b.Replicas,
		Leaders:            b.Leaders,
		ThresholdPct:       uint32(b.ThresholdPct),
		MinExcess:          uint32(b.MinExcess),
		MaxMoves:           uint32(b.MaxMoves),
		MaxLeaderTransfers: uint32(b.MaxLeaderTransfers),
		CooldownMs:         uint64(b.Cooldown.Milliseconds()),
	}
}
