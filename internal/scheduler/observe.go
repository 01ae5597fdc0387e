package scheduler

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/planner"
)

// Limits on one report, so a broken or hostile agent cannot make a server
// allocate without bound.
const (
	MaxReportReplicas = 200_000
	MaxReportResults  = 50_000
)

// ValidateReport checks a report before anything in it is used.
func ValidateReport(r *drummerpb.ReportRequest) error {
	reg := &dbpb.RegisterHost{HostId: r.HostId, RaftAddress: r.RaftAddress, ApiAddress: r.ApiAddress, Labels: r.Labels, Apps: r.Apps}
	if err := db.ValidateHostRegistration(reg); err != nil {
		return err
	}
	if len(r.Replicas) > MaxReportReplicas || len(r.Disk) > MaxReportReplicas || len(r.Stopped) > MaxReportReplicas {
		return fmt.Errorf("report lists more than %d replicas", MaxReportReplicas)
	}
	if len(r.Results) > MaxReportResults {
		// The server takes at most this many and asks for the rest
		// (ReportResponse.results_left) before validating.
		return fmt.Errorf("report carries more than %d order results", MaxReportResults)
	}
	if r.Session == 0 {
		return errors.New("session must be non-zero")
	}
	for _, rr := range r.Replicas {
		if rr == nil || rr.ShardId == 0 || rr.ReplicaId == 0 {
			return errors.New("replica with shard_id or replica_id 0")
		}
		if rr.Membership != nil && len(rr.Membership.Voters)+len(rr.Membership.NonVoting)+len(rr.Membership.Witnesses) > 1000 {
			return fmt.Errorf("shard %d: membership too large", rr.ShardId)
		}
	}
	for _, k := range r.Stopped {
		if k == nil || k.ShardId == 0 || k.ReplicaId == 0 {
			return errors.New("stopped replica key with shard_id or replica_id 0")
		}
	}
	for _, k := range r.Disk {
		if k == nil || k.ShardId == 0 || k.ReplicaId == 0 {
			return errors.New("disk replica key with shard_id or replica_id 0")
		}
	}
	for _, res := range r.Results {
		if res == nil || res.Id == "" || len(res.Id) > 256 || len(res.Error) > 4096 {
			return errors.New("malformed order result")
		}
	}
	return nil
}

// Sessions tracks each host's report session and sequence number, to tell
// whether a report's deltas apply on top of what was received before. It
// is safe for concurrent use, so a server's report handler can answer
// "send a full report" without waiting for the scheduler loop.
type Sessions struct {
	mu  sync.Mutex
	ses map[string]session
}

type session struct{ id, seq uint64 }

// Check records a report's session and sequence and reports whether its
// deltas follow the previous report's (a full report always applies and
// starts the sequence again).
func (s *Sessions) Check(r *drummerpb.ReportRequest) (inSequence bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ses == nil {
		s.ses = map[string]session{}
	}
	prev, known := s.ses[r.HostId]
	inSequence = known && prev.id == r.Session && r.Seq == prev.seq+1
	if r.Full || inSequence {
		s.ses[r.HostId] = session{id: r.Session, seq: r.Seq}
	}
	return inSequence
}

// Forget drops a host's session (the host was forgotten).
func (s *Sessions) Forget(hostID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ses, hostID)
}

// Step records a validated report received at now; it keeps (and may
// modify) the report's replicas. inSequence tells
// whether its deltas follow what was received before (Sessions.Check); a
// delta report out of sequence only keeps the host alive. Only what the
// report changes is marked dirty.
func (n *Node) Step(r *drummerpb.ReportRequest, now time.Time, inSequence bool) {
	h := n.obs.Hosts[r.HostId]
	if h == nil {
		h = &planner.HostObs{ID: r.HostId, Replicas: map[uint64]*drummerpb.ReplicaReport{}, Results: map[string]*drummerpb.OrderResult{}}
		n.obs.Hosts[r.HostId] = h
		n.markH(r.HostId)
	}
	wasSilent := h.LastTaken.IsZero() || now.Sub(h.LastTaken) > n.silentAfter
	if h.RaftAddress != r.RaftAddress || h.APIAddress != r.ApiAddress || !maps.Equal(h.Labels, r.Labels) || !slices.Equal(h.Apps, r.Apps) {
		n.markH(r.HostId)
	}
	h.RaftAddress, h.APIAddress, h.Labels, h.Apps = r.RaftAddress, r.ApiAddress, r.Labels, r.Apps
	h.LastTaken = now
	if now.After(h.LastHeard) { // Heard may have noted a later arrival
		h.LastHeard = now
	}
	n.live.heard(r.HostId, now)
	if h.Starting != r.Starting || wasSilent {
		// The verdicts of the members the host does not run depend on
		// both (a member is "starting" while its host is): plan the
		// shards the DB places on the host, and those it ran.
		h.Starting = r.Starting
		n.markH(r.HostId)
		if n.active {
			for id := range n.patrol.hostShards[r.HostId] {
				n.markS(id)
			}
			for id := range h.Replicas {
				n.markS(id)
			}
		}
	}
	switch {
	case r.Full:
		next := make(map[uint64]*drummerpb.ReplicaReport, len(r.Replicas))
		for _, rr := range r.Replicas {
			next[rr.ShardId] = rr
		}
		for id, old := range h.Replicas {
			if nr := next[id]; nr == nil || nr.ReplicaId != old.ReplicaId {
				n.stopped(old, now)
			}
		}
		for _, rr := range r.Replicas {
			n.replica(h, rr, now)
		}
		h.SetReplicas(next)
		h.ReplicasAt = now
	case inSequence:
		for _, k := range r.Stopped {
			if old := h.Replicas[k.ShardId]; old != nil && old.ReplicaId == k.ReplicaId {
				n.stopped(old, now)
				h.DropReplica(k.ShardId)
			}
		}
		for _, rr := range r.Replicas {
			n.replica(h, rr, now)
			h.SetReplica(rr)
		}
		h.ReplicasAt = now
	}
	if r.HasDiskInventory {
		disk := make(map[planner.ReplicaKey]struct{}, len(r.Disk))
		for _, k := range r.Disk {
			disk[planner.ReplicaKey{ShardID: k.ShardId, ReplicaID: k.ReplicaId}] = struct{}{}
		}
		if !h.DiskKnown || !maps.Equal(disk, h.Disk) {
			n.markH(r.HostId)
		}
		h.DiskKnown, h.DiskAt, h.Disk = true, now, disk
	}
	if len(r.Results) > 0 {
		at := n.resultAt[r.HostId]
		if at == nil {
			at = map[string]time.Time{}
			n.resultAt[r.HostId] = at
		}
		for _, res := range r.Results {
			if old := h.Results[res.Id]; old == nil || old.Outcome != res.Outcome {
				n.markH(r.HostId)
				switch {
				case res.ShardId == 0:
				case res.Outcome == drummerpb.OrderOutcome_ORDER_OUTCOME_DONE:
					n.markProgress(res.ShardId)
				default: // a failure is planned at once
					n.markS(res.ShardId)
				}
				// When it first arrived: an agent re-sends results
				// until a report of them is answered, and a re-sent
				// start result must not restart its replica's timeouts.
				at[res.Id] = now
			}
			h.Results[res.Id] = res
			if res.ShardId != 0 {
				n.mergeMembership(r.HostId, res.ShardId, 0, res.Membership)
			}
		}
	}
}

// Heard notes that a report from a host the node knows arrived at at,
// without taking it (yet): the driver notes every arrival as it happens, so
// that liveness follows what reaches the server, not what planning has
// caught up with. At 10,000 hosts, reports that waited for a busy loop
// until their deadline were dropped, and about 1,000 live hosts at a time
// looked silent. A host the node does not know needs its report taken
// (Step): only a report registers a host.
func (n *Node) Heard(id string, at time.Time) {
	h := n.obs.Hosts[id]
	if h == nil || !at.After(h.LastHeard) {
		return
	}
	h.LastHeard = at
	n.live.heard(id, at)
}

// markS and markH mark a shard or host dirty. A node that is not leading
// plans nothing and re-plans everything when it becomes the scheduler (the
// patrol's first pass), so it keeps no dirty set: on a follower, that set
// only grew and cost a map write per reported replica.
func (n *Node) markS(id uint64) {
	if n.active {
		n.dirtyS[id] = struct{}{}
	}
}

// markProgress marks a shard whose replicas reported progress (a
// replica's state, an order done, a membership claim). A shard that is
// starting may be held back a little to take several such marks in one
// evaluation (Round, settle.go); what decides something for it (the first
// leader a replica sees, an order that failed) is marked with markS.
func (n *Node) markProgress(id uint64) {
	if n.active {
		n.dirtyP[id] = struct{}{}
	}
}

func (n *Node) markH(id string) {
	if n.active {
		n.dirtyH[id] = struct{}{}
	}
}

// replica records one reported replica (not yet stored in h.Replicas),
// marking its shard dirty if anything the planner reads changed.
func (n *Node) replica(h *planner.HostObs, rr *drummerpb.ReplicaReport, now time.Time) {
	old := h.Replicas[rr.ShardId]
	if old != nil && old.ReplicaId != rr.ReplicaId {
		n.stopped(old, now)
	}
	switch {
	case rr.LeaderId != 0 && (old == nil || old.LeaderId == 0):
		// The first leader a replica sees is what bootstraps a starting
		// shard: planned at once.
		n.markS(rr.ShardId)
	case old == nil || !sameReplica(old, rr):
		n.markProgress(rr.ShardId)
	}
	n.mergeMembership(h.ID, rr.ShardId, rr.ReplicaId, rr.Membership)
	// The claim keeps the membership the planner reads; the stored report
	// need not keep a copy of it. Every member reports its shard's
	// membership (a map per replica), and at 10,000 hosts those copies
	// were a third of a server's heap.
	rr.Membership = nil
}

func sameReplica(a, b *drummerpb.ReplicaReport) bool {
	return a.ReplicaId == b.ReplicaId && a.LeaderId == b.LeaderId && a.Term == b.Term && a.ConfigChangeId == b.ConfigChangeId &&
		a.Role == b.Role && a.Pending == b.Pending && a.CaughtUp == b.CaughtUp && a.App == b.App
}

func (n *Node) stopped(r *drummerpb.ReplicaReport, now time.Time) {
	n.obs.LastRunning[planner.ReplicaKey{ShardID: r.ShardId, ReplicaID: r.ReplicaId}] = now
	n.markS(r.ShardId)
}

// mergeMembership records a membership claim of a host (from its replica
// replicaID, 0 if unknown); the planner decides whether to believe it
// (planner.Observed.AddClaim).
func (n *Node) mergeMembership(hostID string, shardID, replicaID uint64, m *drummerpb.Membership) {
	if m != nil && n.repeatsClaim(hostID, shardID, replicaID, m) {
		return
	}
	if n.obs.AddClaim(shardID, hostID, replicaID, m) {
		n.markProgress(shardID)
	}
}

// repeatsClaim reports whether m repeats the host's latest claim for the
// shard from the same replica and is newer than neither the host's newest
// claim nor the shard's kept membership: then AddClaim would change
// nothing. Full reports repeat every leader's membership; AddClaim's
// proto.Equal on them was 70 % of taking a full report.
func (n *Node) repeatsClaim(hostID string, shardID, replicaID uint64, m *drummerpb.Membership) bool {
	hc := n.obs.Claims[shardID][hostID]
	kept := n.obs.Memberships[shardID]
	return hc != nil && hc.Latest.M != nil && kept != nil && hc.Latest.ReplicaID == replicaID &&
		planner.EqualMembership(hc.Latest.M, m) &&
		!planner.NewerMembership(m, hc.Newest.M) && !planner.NewerMembership(m, kept)
}

// LastHeard is when the host last reported to this node (zero if never).
func (n *Node) LastHeard(hostID string) time.Time {
	if h := n.obs.Hosts[hostID]; h != nil {
		return h.LastHeard
	}
	return time.Time{}
}

// Reporting counts the hosts heard from within d before now; O(hosts), for
// the status call only.
func (n *Node) Reporting(now time.Time, d time.Duration) int {
	c := 0
	for _, h := range n.obs.Hosts {
		if now.Sub(h.LastHeard) < d {
			c++
		}
	}
	return c
}
