package server

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/drummerhq/drummer/internal/metrics"
	"github.com/drummerhq/drummer/internal/planner"
	"github.com/drummerhq/drummer/internal/scheduler"
)

// Metrics receive what a server measures besides its Stats
// (internal/metrics.Drummer implements it).
type Metrics interface {
	// UnaryInterceptor wraps every call of the gRPC API.
	UnaryInterceptor() grpc.UnaryServerInterceptor
	// PlanRound records one planning round.
	PlanRound(took time.Duration, shards, hosts, decisions int)
}

// Stats returns the counts the metrics report (metrics.StatsSource). The
// fleet counts are filled on the scheduler leader only, from the scheduler
// Node's liveness states and cached verdicts: a scrape costs O(hosts +
// repairs in flight), not a planning pass over every shard.
func (s *Server) Stats() metrics.DrummerStats {
	st, idx := s.sm.View()
	out := metrics.DrummerStats{
		Leader:        s.loop.isActive(),
		Epoch:         st.Epoch,
		LeaderChanges: s.leaderChanges.Load(),
		AppliedIndex:  idx,
		DBObjects: map[string]int{
			"shards": st.Shards.Len(), "hosts": len(st.Hosts), "kv": len(st.KV), "drummers": len(st.Drummers),
		},
	}
	if !out.Leader {
		return out
	}
	out.Hosts = map[metrics.HostKey]int{}
	out.Shards = map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.loop.do(ctx, func(n *scheduler.Node) {
		s.absorb(n, st)
		for id, h := range st.Hosts {
			l, ok := n.HostLiveness(id)
			if !ok {
				l = planner.Up // not judged yet by this leader
			}
			out.Hosts[metrics.HostKey{Liveness: l.String(), Admin: adminState(h.Admin.String(), h.MaintenanceUntilUnixMs)}]++
		}
		out.LeaderTransfers = n.LeaderTransfers()
		judged := 0
		for h, c := range n.Counts() {
			out.Shards[h] = c
			judged += c
		}
		if rest := st.Shards.Len() - judged; rest > 0 {
			out.Shards["pending"] += rest
		}
	}); err != nil {
		return out
	}
	out.RepairsInFlight = map[metrics.RepairKey]int{}
	for _, id := range st.RepairingShards() {
		if r := st.Shards.Get(id).Repair; r != nil {
			rs := repairStatus(st, id, r)
			out.RepairsInFlight[metrics.RepairKey{Kind: rs.Kind, Step: rs.Step}]++
		}
	}
	for _, f := range st.Recent {
		if f.Repair == nil {
			continue
		}
		kind := planner.KindName(f.Repair.Kind)
		out.Finished = append(out.Finished, metrics.FinishedRepair{
			ID: f.Repair.Id, Kind: kind,
			Outcome:  strings.ToLower(strings.TrimPrefix(f.Outcome.String(), "REPAIR_OUTCOME_")),
			Started:  time.UnixMilli(f.Repair.StartedUnixMs),
			Finished: time.UnixMilli(f.FinishedUnixMs),
		})
	}
	return out
}

// adminState is a host's admin state as the API names it.
func adminState(enum string, maintenanceUntilMs int64) string {
	if maintenanceUntilMs != 0 && time.Now().Before(time.UnixMilli(maintenanceUntilMs)) {
		return "maintenance"
	}
	return strings.ToLower(strings.TrimPrefix(enum, "HOST_ADMIN_"))
}
