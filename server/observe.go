package server

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
	maxReportReplicas = 200_000
	maxReportResults  = 50_000 // more are left for the next report (admitResults)
)

// observations is the soft state built from agent reports: in memory only,
// never written through Raft. Every drummer server keeps one (agents report
// to all of them), so a newly elected leader starts warm.
type observations struct {
	mu  sync.RWMutex
	o   *planner.Observed
	ses map[string]session
	// resultAt records when each result arrived, for expiry.
	resultAt map[string]map[string]time.Time
	dirty    dirtySet
}

type session struct {
	id, seq uint64
}

func newObservations() *observations {
	return &observations{
		o:        planner.NewObserved(),
		ses:      map[string]session{},
		resultAt: map[string]map[string]time.Time{},
		dirty:    newDirtySet(),
	}
}

// validateReport checks a report before anything in it is used.
func validateReport(r *drummerpb.ReportRequest) error {
	reg := &dbpb.RegisterHost{HostId: r.HostId, RaftAddress: r.RaftAddress, ApiAddress: r.ApiAddress, Labels: r.Labels, Apps: r.Apps}
	if err := db.ValidateHostRegistration(reg); err != nil {
		return err
	}
	if len(r.Replicas) > maxReportReplicas || len(r.Disk) > maxReportReplicas || len(r.Stopped) > maxReportReplicas {
		return fmt.Errorf("report lists more than %d replicas", maxReportReplicas)
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
	for _, k := range append(append([]*drummerpb.ReplicaKey(nil), r.Stopped...), r.Disk...) {
		if k == nil || k.ShardId == 0 || k.ReplicaId == 0 {
			return errors.New("replica key with shard_id or replica_id 0")
		}
	}
	for _, res := range r.Results {
		if res == nil || res.Id == "" || len(res.Id) > 256 || len(res.Error) > 4096 {
			return errors.New("malformed order result")
		}
	}
	return nil
}

// ingest records a validated report received at now. It returns true when
// the report's deltas could not be applied because earlier ones were missed:
// the agent must send a full report.
func (s *observations) ingest(r *drummerpb.ReportRequest, now time.Time) (needFull bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.o.Hosts[r.HostId]
	if h == nil {
		h = &planner.HostObs{ID: r.HostId, Replicas: map[uint64]*drummerpb.ReplicaReport{}, Results: map[string]*drummerpb.OrderResult{}}
		s.o.Hosts[r.HostId] = h
		s.dirty.Hosts[r.HostId] = struct{}{}
	}
	wasSilent := h.LastHeard.IsZero() || now.Sub(h.LastHeard) > 2*time.Second
	if h.RaftAddress != r.RaftAddress || h.APIAddress != r.ApiAddress || !maps.Equal(h.Labels, r.Labels) || !slices.Equal(h.Apps, r.Apps) {
		s.dirty.Hosts[r.HostId] = struct{}{}
	}
	h.RaftAddress, h.APIAddress, h.Labels, h.Apps = r.RaftAddress, r.ApiAddress, r.Labels, r.Apps
	h.LastHeard = now
	if h.Starting != r.Starting {
		h.Starting = r.Starting
		for id := range h.Replicas {
			s.dirty.Shards[id] = struct{}{}
		}
		s.dirty.Hosts[r.HostId] = struct{}{}
	}
	if wasSilent {
		s.dirty.Hosts[r.HostId] = struct{}{}
		for id := range h.Replicas {
			s.dirty.Shards[id] = struct{}{}
		}
	}

	prev, known := s.ses[r.HostId]
	inSequence := known && prev.id == r.Session && r.Seq == prev.seq+1
	switch {
	case r.Full:
		for id, old := range h.Replicas {
			s.stopped(h, old, now)
			delete(h.Replicas, id)
		}
	case !inSequence:
		// Deltas on top of a state we do not have would be wrong; keep the
		// host alive, ignore the replica deltas, and ask for a full report.
		needFull = true
	}
	if !needFull {
		s.ses[r.HostId] = session{id: r.Session, seq: r.Seq}
		for _, k := range r.Stopped {
			if old := h.Replicas[k.ShardId]; old != nil && old.ReplicaId == k.ReplicaId {
				s.stopped(h, old, now)
				delete(h.Replicas, k.ShardId)
			}
		}
		for _, rr := range r.Replicas {
			if old := h.Replicas[rr.ShardId]; old != nil && old.ReplicaId != rr.ReplicaId {
				s.stopped(h, old, now)
			}
			h.Replicas[rr.ShardId] = rr
			s.dirty.Shards[rr.ShardId] = struct{}{}
			s.mergeMembership(r.HostId, rr.ShardId, rr.ReplicaId, rr.Membership)
		}
	}
	if r.HasDiskInventory {
		h.DiskKnown, h.DiskAt = true, now
		h.Disk = make(map[planner.ReplicaKey]struct{}, len(r.Disk))
		for _, k := range r.Disk {
			h.Disk[planner.ReplicaKey{ShardID: k.ShardId, ReplicaID: k.ReplicaId}] = struct{}{}
		}
		s.dirty.Hosts[r.HostId] = struct{}{}
	}
	if len(r.Results) > 0 {
		at := s.resultAt[r.HostId]
		if at == nil {
			at = map[string]time.Time{}
			s.resultAt[r.HostId] = at
		}
		for _, res := range r.Results {
			h.Results[res.Id] = res
			at[res.Id] = now
			if res.ShardId != 0 {
				s.dirty.Shards[res.ShardId] = struct{}{}
				s.mergeMembership(r.HostId, res.ShardId, 0, res.Membership)
			}
		}
		s.dirty.Hosts[r.HostId] = struct{}{}
	}
	return needFull
}

func (s *observations) stopped(h *planner.HostObs, r *drummerpb.ReplicaReport, now time.Time) {
	s.o.LastRunning[planner.ReplicaKey{ShardID: r.ShardId, ReplicaID: r.ReplicaId}] = now
	s.dirty.Shards[r.ShardId] = struct{}{}
}

// mergeMembership records a membership claim of a host (from its replica
// replicaID, 0 if unknown); the planner decides whether to believe it
// (planner.Observed.AddClaim).
func (s *observations) mergeMembership(hostID string, shardID, replicaID uint64, m *drummerpb.Membership) {
	if s.o.AddClaim(shardID, hostID, replicaID, m) {
		s.dirty.Shards[shardID] = struct{}{}
	}
}

// takeDirty returns the shards and hosts whose observations changed.
func (s *observations) takeDirty() dirtySet {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.dirty
	s.dirty = newDirtySet()
	return d
}

// prune bounds the soft state (see planner.Prune), and forgets the report
// sessions of the hosts it drops.
func (s *observations) prune(st *db.State, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range planner.Prune(s.o, s.resultAt, st, now) {
		delete(s.ses, id)
	}
}

func (s *observations) lastHeard(hostID string) time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if h := s.o.Hosts[hostID]; h != nil {
		return h.LastHeard
	}
	return time.Time{}
}

// dirtySet names shards and hosts to re-plan.
type dirtySet struct {
	Shards map[uint64]struct{}
	Hosts  map[string]struct{}
}

func newDirtySet() dirtySet {
	return dirtySet{Shards: map[uint64]struct{}{}, Hosts: map[string]struct{}{}}
}
