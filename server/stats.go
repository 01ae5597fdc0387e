package server

import (
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/drummerhq/drummer/internal/metrics"
	"github.com/drummerhq/drummer/internal/planner"
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
// fleet counts are filled on the scheduler leader only.
//
// Today this judges every host and shard (like GetClusterInfo), so a
// scrape costs O(shards); it runs once per scrape, off every hot path.
func (s *Server) Stats() metrics.DrummerStats {
	st, idx := s.sm.View()
	out := metrics.DrummerStats{
		Leader:        s.sched.isActive(),
		Epoch:         st.Epoch,
		LeaderChanges: s.leaderChanges.Load(),
		AppliedIndex:  idx,
		DBObjects: map[string]int{
			"shards": len(st.Shards), "hosts": len(st.Hosts), "kv": len(st.KV), "drummers": len(st.Drummers),
		},
	}
	if !out.Leader {
		return out
	}
	out.Hosts = map[metrics.HostKey]int{}
	for id, r := range s.sched.hostReports(st).Hosts {
		if h := st.Hosts[id]; r.Registered && h != nil {
			out.Hosts[metrics.HostKey{Liveness: r.Liveness.String(), Admin: adminState(h.Admin.String(), h.MaintenanceUntilUnixMs)}]++
		}
	}
	out.Shards = map[string]int{}
	rep := s.sched.report(st, nil, true)
	for id := range st.Shards {
		h := "pending"
		if r := rep.Shards[id]; r != nil {
			h = r.Health
		}
		out.Shards[h]++
	}
	out.RepairsInFlight = map[metrics.RepairKey]int{}
	for _, id := range st.RepairingShards() {
		if r := st.Shards[id].Repair; r != nil {
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
