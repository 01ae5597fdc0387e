package db

import (
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/internal/dbpb"
)

// applyDecisions applies scheduler decisions. The whole batch is refused
// when its epoch is not the current one: a deposed scheduler can never
// change anything. Each decision is then validated against the state left by
// the ones before it and gets its own result code.
func (s *State) applyDecisions(epoch uint64, d *dbpb.Decisions, now int64) Result {
	if d == nil || len(d.Items) == 0 || len(d.Items) > MaxDecisions {
		return code(dbpb.Code_CODE_INVALID)
	}
	if epoch == 0 || epoch != s.Epoch {
		return code(dbpb.Code_CODE_STALE_EPOCH)
	}
	out := make([]byte, len(d.Items))
	for i, it := range d.Items {
		out[i] = byte(s.applyDecision(it, now))
	}
	return Result{Code: dbpb.Code_CODE_OK, Data: out}
}

func (s *State) applyDecision(d *dbpb.Decision, now int64) dbpb.Code {
	if d == nil {
		return dbpb.Code_CODE_INVALID
	}
	switch k := d.Kind.(type) {
	case *dbpb.Decision_RegisterHost:
		return s.registerHost(k.RegisterHost, now)
	case *dbpb.Decision_PlaceShard:
		return s.placeShard(k.PlaceShard, now)
	case *dbpb.Decision_StartRepair:
		return s.startRepair(k.StartRepair, now)
	case *dbpb.Decision_AdvanceRepair:
		return s.advanceRepair(k.AdvanceRepair, now)
	case *dbpb.Decision_FinishRepair:
		return s.finishRepair(k.FinishRepair, now)
	case *dbpb.Decision_AddCleanup:
		return s.addCleanupDecision(k.AddCleanup, now)
	case *dbpb.Decision_DoneCleanup:
		return s.doneCleanup(k.DoneCleanup)
	case *dbpb.Decision_ReplaceHost:
		return s.replaceHost(k.ReplaceHost, now)
	case *dbpb.Decision_ForgetHost:
		return s.forgetHostDecision(k.ForgetHost)
	case *dbpb.Decision_EndMaintenance:
		return s.endMaintenance(k.EndMaintenance)
	case *dbpb.Decision_MarkDrained:
		return s.markDrained(k.MarkDrained, now)
	case *dbpb.Decision_MarkBootstrapped:
		return s.markBootstrapped(k.MarkBootstrapped)
	case *dbpb.Decision_RecordFailure:
		return s.recordFailure(k.RecordFailure, now)
	}
	return dbpb.Code_CODE_INVALID
}

// ValidateHostRegistration checks the identity a nodehost reports.
func ValidateHostRegistration(r *dbpb.RegisterHost) error {
	switch {
	case r == nil:
		return errf("missing registration")
	case r.HostId == "" || len(r.HostId) > MaxNameLen:
		return errf("host_id must be 1-%d characters", MaxNameLen)
	case len(r.Apps) > MaxApps:
		return errf("%d apps, at most %d allowed", len(r.Apps), MaxApps)
	}
	if err := ValidateAddress(r.RaftAddress); err != nil {
		return errf("raft_address: %v", err)
	}
	if r.ApiAddress != "" {
		if err := ValidateAddress(r.ApiAddress); err != nil {
			return errf("api_address: %v", err)
		}
		if r.ApiAddress == r.RaftAddress {
			return errf("api_address must differ from raft_address %s", r.RaftAddress)
		}
	}
	if err := ValidateLabels(r.Labels); err != nil {
		return err
	}
	for _, a := range r.Apps {
		if !ValidName(a) {
			return errf("invalid app name %q", a)
		}
	}
	return nil
}

func (s *State) registerHost(r *dbpb.RegisterHost, now int64) dbpb.Code {
	if ValidateHostRegistration(r) != nil {
		return dbpb.Code_CODE_INVALID
	}
	if other := s.HostByRaftAddress(r.RaftAddress); other != nil && other.Id != r.HostId &&
		other.Admin != dbpb.HostAdmin_HOST_ADMIN_REPLACED {
		return dbpb.Code_CODE_CONFLICT
	}
	apps := slices.Clone(r.Apps)
	slices.Sort(apps)
	apps = slices.Compact(apps)
	old, ok := s.Hosts[r.HostId]
	if ok {
		if old.RaftAddress != r.RaftAddress {
			// dragonboat ties a data directory to its raft address.
			return dbpb.Code_CODE_CONFLICT
		}
		if old.ApiAddress == r.ApiAddress && maps.Equal(old.Labels, r.Labels) && slices.Equal(old.Apps, apps) {
			return dbpb.Code_CODE_NOOP
		}
		nh := proto.CloneOf(old)
		nh.ApiAddress = r.ApiAddress
		nh.Labels = cloneMap(r.Labels)
		nh.Apps = apps
		s.putHost(nh)
	} else {
		if len(s.Hosts) >= 100_000 {
			return dbpb.Code_CODE_CONFLICT
		}
		s.putHost(&dbpb.Host{
			Id:               r.HostId,
			RaftAddress:      r.RaftAddress,
			ApiAddress:       r.ApiAddress,
			Labels:           cloneMap(r.Labels),
			Apps:             apps,
			RegisteredUnixMs: now,
		})
	}
	s.touchHost(r.HostId)
	s.touchShardsOn(r.HostId)
	return dbpb.Code_CODE_OK
}

// placeable reports whether a host may receive a new replica at all (the
// scheduler applies the finer liveness rules before deciding).
func placeable(h *dbpb.Host) bool {
	return h != nil && h.Admin == dbpb.HostAdmin_HOST_ADMIN_ACTIVE
}

// AwaitsPlacement tells whether a shard waits for its initial placement
// (what PlaceShard applies to).
func AwaitsPlacement(sh *dbpb.Shard) bool {
	return sh.Phase == dbpb.ShardPhase_SHARD_PHASE_PENDING && len(sh.Members) == 0
}

func (s *State) placeShard(p *dbpb.PlaceShard, now int64) dbpb.Code {
	if p == nil || p.ShardId == 0 || len(p.HostIds) == 0 {
		return dbpb.Code_CODE_INVALID
	}
	sh, ok := s.Shards.Lookup(p.ShardId)
	if !ok {
		return dbpb.Code_CODE_NOT_FOUND
	}
	if !AwaitsPlacement(sh) {
		return dbpb.Code_CODE_CONFLICT
	}
	if len(p.HostIds) != int(sh.Replicas) {
		return dbpb.Code_CODE_INVALID
	}
	addrs := map[string]struct{}{}
	for _, hid := range p.HostIds {
		h, ok := s.Hosts[hid]
		if !ok {
			return dbpb.Code_CODE_NOT_FOUND
		}
		if !placeable(h) {
			return dbpb.Code_CODE_CONFLICT
		}
		if _, dup := addrs[h.RaftAddress]; dup {
			return dbpb.Code_CODE_INVALID
		}
		addrs[h.RaftAddress] = struct{}{}
	}
	ns := proto.CloneOf(sh)
	for _, hid := range p.HostIds {
		ns.Members = append(ns.Members, &dbpb.Replica{
			ReplicaId:   ns.NextReplicaId,
			HostId:      hid,
			Role:        dbpb.Role_ROLE_VOTER,
			Initial:     true,
			AddedUnixMs: now,
		})
		ns.NextReplicaId++
	}
	ns.Phase = dbpb.ShardPhase_SHARD_PHASE_ACTIVE
	s.putShard(ns)
	s.touchShard(sh.Id)
	for _, hid := range p.HostIds {
		s.touchHost(hid)
	}
	return dbpb.Code_CODE_OK
}

// canHostNewReplica checks that hostID can take a new replica of sh: it is
// registered and active, and neither it nor its raft address already holds a
// member (dragonboat refuses two members on one target).
func (s *State) canHostNewReplica(sh *dbpb.Shard, hostID string) dbpb.Code {
	h, ok := s.Hosts[hostID]
	if !ok {
		return dbpb.Code_CODE_NOT_FOUND
	}
	if !placeable(h) {
		return dbpb.Code_CODE_CONFLICT
	}
	for _, m := range sh.Members {
		if m.HostId == hostID {
			return dbpb.Code_CODE_CONFLICT
		}
		if mh, ok := s.Hosts[m.HostId]; ok && mh.RaftAddress == h.RaftAddress {
			return dbpb.Code_CODE_CONFLICT
		}
	}
	return dbpb.Code_CODE_OK
}

func (s *State) startRepair(r *dbpb.StartRepair, now int64) dbpb.Code {
	if r == nil || r.ShardId == 0 || len(r.Reason) > 1024 {
		return dbpb.Code_CODE_INVALID
	}
	sh, ok := s.Shards.Lookup(r.ShardId)
	if !ok {
		return dbpb.Code_CODE_NOT_FOUND
	}
	if sh.Phase != dbpb.ShardPhase_SHARD_PHASE_ACTIVE || sh.Repair != nil {
		return dbpb.Code_CODE_CONFLICT
	}
	rep := &dbpb.Repair{
		Id:                s.NextRepairID,
		Kind:              r.Kind,
		StartedUnixMs:     now,
		StepStartedUnixMs: now,
		Reason:            r.Reason,
	}
	ns := proto.CloneOf(sh)
	switch r.Kind {
	case dbpb.RepairKind_REPAIR_KIND_REPLACE, dbpb.RepairKind_REPAIR_KIND_MOVE, dbpb.RepairKind_REPAIR_KIND_BALANCE, dbpb.RepairKind_REPAIR_KIND_ADD:
		if r.Kind == dbpb.RepairKind_REPAIR_KIND_ADD {
			if r.OldReplicaId != 0 {
				return dbpb.Code_CODE_INVALID
			}
		} else {
			old := Member(sh, r.OldReplicaId)
			if old == nil {
				return dbpb.Code_CODE_NOT_FOUND
			}
			rep.OldReplicaId, rep.OldHostId = old.ReplicaId, old.HostId
		}
		if c := s.canHostNewReplica(sh, r.NewHostId); c != dbpb.Code_CODE_OK {
			return c
		}
		if len(sh.Members) >= 2*MaxReplicas {
			return dbpb.Code_CODE_CONFLICT
		}
		rep.NewReplicaId, rep.NewHostId = ns.NextReplicaId, r.NewHostId
		rep.Step = dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING
		ns.NextReplicaId++
		ns.Members = append(ns.Members, &dbpb.Replica{
			ReplicaId:   rep.NewReplicaId,
			HostId:      rep.NewHostId,
			Role:        dbpb.Role_ROLE_NON_VOTING,
			AddedUnixMs: now,
		})
		s.touchHost(rep.NewHostId)
	case dbpb.RepairKind_REPAIR_KIND_REMOVE:
		if r.NewHostId != "" || r.OldReplicaId == 0 {
			return dbpb.Code_CODE_INVALID
		}
		// The replica may be a recorded member, or one the scheduler saw in
		// the observed membership without a record (a late config change).
		// It must have been allocated by this shard.
		if r.OldReplicaId >= sh.NextReplicaId {
			return dbpb.Code_CODE_CONFLICT
		}
		rep.OldReplicaId = r.OldReplicaId
		if old := Member(sh, r.OldReplicaId); old != nil {
			rep.OldHostId = old.HostId
			if !VoterDropAllowed(sh, old.ReplicaId) {
				return dbpb.Code_CODE_QUORUM
			}
		}
		rep.Step = dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD
	default:
		return dbpb.Code_CODE_INVALID
	}
	ns.Repair = rep
	s.NextRepairID++
	s.putShard(ns)
	s.touchShard(sh.Id)
	return dbpb.Code_CODE_OK
}

func (s *State) shardRepair(shardID, repairID uint64) (*dbpb.Shard, dbpb.Code) {
	if shardID == 0 || repairID == 0 {
		return nil, dbpb.Code_CODE_INVALID
	}
	sh, ok := s.Shards.Lookup(shardID)
	if !ok {
		return nil, dbpb.Code_CODE_NOT_FOUND
	}
	if sh.Repair == nil || sh.Repair.Id != repairID {
		return nil, dbpb.Code_CODE_CONFLICT
	}
	return sh, dbpb.Code_CODE_OK
}

func (s *State) advanceRepair(a *dbpb.AdvanceRepair, now int64) dbpb.Code {
	if a == nil || len(a.Reason) > 1024 {
		return dbpb.Code_CODE_INVALID
	}
	sh, c := s.shardRepair(a.ShardId, a.RepairId)
	if c != dbpb.Code_CODE_OK {
		return c
	}
	rep := sh.Repair
	if rep.Step != a.From {
		return dbpb.Code_CODE_CONFLICT
	}
	ns := proto.CloneOf(sh)
	switch {
	case a.To == dbpb.RepairStep_REPAIR_STEP_ROLLBACK:
		// Only a repair that added a member can roll back, and only once.
		if rep.NewReplicaId == 0 || rep.Step == dbpb.RepairStep_REPAIR_STEP_ROLLBACK {
			return dbpb.Code_CODE_CONFLICT
		}
	case NextStep(rep.Kind, rep.Step) == a.To:
		if rep.Step == dbpb.RepairStep_REPAIR_STEP_PROMOTE {
			// Leaving PROMOTE: the new member is a voter now.
			m := Member(ns, rep.NewReplicaId)
			if m == nil {
				return dbpb.Code_CODE_CONFLICT
			}
			m.Role = dbpb.Role_ROLE_VOTER
		}
	default:
		return dbpb.Code_CODE_CONFLICT
	}
	ns.Repair.Step = a.To
	ns.Repair.StepStartedUnixMs = now
	if a.To == dbpb.RepairStep_REPAIR_STEP_ROLLBACK {
		ns.Repair.RollbackReason = a.Reason
		ns.Repair.RollbackTargetLost = a.TargetLost
	}
	s.putShard(ns)
	s.touchShard(sh.Id)
	return dbpb.Code_CODE_OK
}

func (s *State) finishRepair(f *dbpb.FinishRepair, now int64) dbpb.Code {
	if f == nil || len(f.Reason) > 1024 {
		return dbpb.Code_CODE_INVALID
	}
	sh, c := s.shardRepair(f.ShardId, f.RepairId)
	if c != dbpb.Code_CODE_OK {
		return c
	}
	rep := sh.Repair
	steps := RepairSteps(rep.Kind)
	ns := proto.CloneOf(sh)
	switch f.Outcome {
	case dbpb.RepairOutcome_REPAIR_OUTCOME_DONE:
		if len(steps) == 0 || rep.Step != steps[len(steps)-1] {
			return dbpb.Code_CODE_CONFLICT
		}
		if rep.NewReplicaId != 0 {
			m := Member(ns, rep.NewReplicaId)
			if m == nil {
				return dbpb.Code_CODE_CONFLICT
			}
			m.Role = dbpb.Role_ROLE_VOTER
		}
		if rep.OldReplicaId != 0 {
			if !VoterDropAllowed(ns, rep.OldReplicaId) {
				return dbpb.Code_CODE_QUORUM
			}
			s.dropMember(ns, rep.OldReplicaId, rep.OldHostId, "removed from membership", now)
		}
		ns.Failures = 0
		ns.RetryAfterUnixMs = 0
		ns.LastFailure = ""
		if rep.Kind == dbpb.RepairKind_REPAIR_KIND_BALANCE {
			ns.BalancedFromHost, ns.BalancedUnixMs = rep.OldHostId, now
		}
	case dbpb.RepairOutcome_REPAIR_OUTCOME_FAILED, dbpb.RepairOutcome_REPAIR_OUTCOME_CANCELLED:
		// Allowed only while the new member cannot be in the membership: it
		// was never added, or the rollback removed it. A REMOVE repair adds
		// nothing, so it can always end here.
		if rep.NewReplicaId != 0 && rep.Step != dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING &&
			rep.Step != dbpb.RepairStep_REPAIR_STEP_ROLLBACK {
			return dbpb.Code_CODE_CONFLICT
		}
		if rep.NewReplicaId != 0 {
			if !VoterDropAllowed(ns, rep.NewReplicaId) {
				return dbpb.Code_CODE_QUORUM
			}
			s.dropMember(ns, rep.NewReplicaId, rep.NewHostId, "repair rolled back", now)
		}
		switch {
		case f.Outcome != dbpb.RepairOutcome_REPAIR_OUTCOME_FAILED:
		case rep.Kind == dbpb.RepairKind_REPAIR_KIND_BALANCE:
			// Balancing is optional: a failed move says nothing against
			// the shard's repairs, so it does not back off; the shard is
			// not balanced again within the cool-down.
			ns.RetryAfterUnixMs = now + TargetLostDelay
			ns.LastFailure = f.Reason
			ns.BalancedFromHost, ns.BalancedUnixMs = "", now
		case f.TargetLost || rep.RollbackTargetLost:
			// The host chosen for the new replica was lost: nothing is
			// wrong with the shard, so it does not back off; a short
			// pause lets liveness settle before it is re-planned.
			ns.RetryAfterUnixMs = now + TargetLostDelay
			ns.LastFailure = f.Reason
		default:
			ns.Failures++
			ns.RetryAfterUnixMs = now + Backoff(ns.Failures)
			ns.LastFailure = f.Reason
		}
	default:
		return dbpb.Code_CODE_INVALID
	}
	ns.Repair = nil
	s.putShard(ns)
	s.touchShard(sh.Id)
	s.Recent = append(s.Recent, &dbpb.FinishedRepair{
		ShardId: sh.Id, Repair: rep, Outcome: f.Outcome, Reason: f.Reason, FinishedUnixMs: now,
	})
	if len(s.Recent) > RecentRepairs {
		s.Recent = slices.Delete(s.Recent, 0, len(s.Recent)-RecentRepairs)
	}
	return dbpb.Code_CODE_OK
}

// VoterDropAllowed reports whether the member records ids may be dropped
// from sh as far as its voters go: dropping records that are not voters is
// always allowed; dropping voter records is allowed only if the recorded
// voters left are at least one and at least a quorum of the shard's replica
// count. The scheduler checks the live quorum before deciding; this is the
// DB's own check, so that no observation, forged or stale, can make the DB
// forget the voters a shard needs (decisions that would are refused with
// CODE_QUORUM). The scheduler calls it too, so it never proposes what the DB
// would refuse.
func VoterDropAllowed(sh *dbpb.Shard, ids ...uint64) bool {
	if sh == nil {
		return false
	}
	left, dropped := 0, 0
	for _, m := range sh.Members {
		if m.Role != dbpb.Role_ROLE_VOTER {
			continue
		}
		if slices.Contains(ids, m.ReplicaId) {
			dropped++
		} else {
			left++
		}
	}
	return dropped == 0 || (left >= 1 && left >= Quorum(int(sh.Replicas)))
}

// dropMember removes a member record and records its host's cleanup.
func (s *State) dropMember(ns *dbpb.Shard, replicaID uint64, hostID, reason string, now int64) {
	ns.Members = slices.DeleteFunc(ns.Members, func(m *dbpb.Replica) bool { return m.ReplicaId == replicaID })
	if _, ok := s.Hosts[hostID]; ok {
		s.addCleanup(hostID, ns.Id, replicaID, reason, now)
	}
	if hostID != "" {
		s.touchHost(hostID)
	}
}

// addCleanupDecision records a zombie: a replica found on a host that is
// not (or no longer) a member. Apply re-checks against the current state,
// so even a scheduler working from an old view cannot condemn a member.
func (s *State) addCleanupDecision(a *dbpb.AddCleanup, now int64) dbpb.Code {
	if a == nil || a.HostId == "" || a.ShardId == 0 || a.ReplicaId == 0 || len(a.Reason) > 1024 {
		return dbpb.Code_CODE_INVALID
	}
	if _, ok := s.Hosts[a.HostId]; !ok {
		return dbpb.Code_CODE_NOT_FOUND
	}
	if sh, ok := s.Shards.Lookup(a.ShardId); ok {
		if m := Member(sh, a.ReplicaId); m != nil && m.HostId == a.HostId {
			return dbpb.Code_CODE_CONFLICT
		}
		if a.ReplicaId >= sh.NextReplicaId {
			// Not allocated yet as far as this DB knows: never condemn it.
			return dbpb.Code_CODE_CONFLICT
		}
		if sh.Repair != nil && sh.Repair.NewReplicaId == a.ReplicaId {
			return dbpb.Code_CODE_CONFLICT
		}
	}
	k := CleanupKey{HostID: a.HostId, ShardID: a.ShardId, ReplicaID: a.ReplicaId}
	if _, ok := s.Cleanups[k]; ok {
		return dbpb.Code_CODE_NOOP
	}
	if len(s.Cleanups) >= 10_000_000 {
		return dbpb.Code_CODE_CONFLICT
	}
	s.addCleanup(a.HostId, a.ShardId, a.ReplicaId, a.Reason, now)
	return dbpb.Code_CODE_OK
}

func (s *State) doneCleanup(d *dbpb.DoneCleanup) dbpb.Code {
	if d == nil || d.HostId == "" {
		return dbpb.Code_CODE_INVALID
	}
	k := CleanupKey{HostID: d.HostId, ShardID: d.ShardId, ReplicaID: d.ReplicaId}
	if _, ok := s.Cleanups[k]; !ok {
		return dbpb.Code_CODE_NOT_FOUND
	}
	s.dropCleanup(k)
	s.touchHost(d.HostId)
	return dbpb.Code_CODE_OK
}

func (s *State) replaceHost(r *dbpb.ReplaceHost, now int64) dbpb.Code {
	if r == nil || r.OldHostId == "" || r.NewHostId == "" || r.OldHostId == r.NewHostId {
		return dbpb.Code_CODE_INVALID
	}
	h, ok := s.Hosts[r.OldHostId]
	if !ok {
		return dbpb.Code_CODE_NOT_FOUND
	}
	if h.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED {
		return dbpb.Code_CODE_NOOP
	}
	nh := proto.CloneOf(h)
	nh.Admin = dbpb.HostAdmin_HOST_ADMIN_REPLACED
	nh.AdminSinceUnixMs = now
	s.putHost(nh)
	// The old identity's data went with its disk: nothing to clean there.
	for _, c := range s.CleanupsFor(r.OldHostId) {
		s.dropCleanup(CleanupKey{HostID: c.HostId, ShardID: c.ShardId, ReplicaID: c.ReplicaId})
	}
	s.touchHost(r.OldHostId)
	s.touchShardsOn(r.OldHostId)
	return dbpb.Code_CODE_OK
}

func (s *State) forgetHostDecision(f *dbpb.ForgetHost) dbpb.Code {
	if f == nil || f.HostId == "" {
		return dbpb.Code_CODE_INVALID
	}
	if _, ok := s.Hosts[f.HostId]; !ok {
		return dbpb.Code_CODE_NOT_FOUND
	}
	if s.HostHasMembers(f.HostId) {
		return dbpb.Code_CODE_CONFLICT
	}
	s.forgetHost(f.HostId)
	return dbpb.Code_CODE_OK
}

func (s *State) endMaintenance(e *dbpb.EndMaintenance) dbpb.Code {
	if e == nil || e.HostId == "" {
		return dbpb.Code_CODE_INVALID
	}
	h, ok := s.Hosts[e.HostId]
	if !ok {
		return dbpb.Code_CODE_NOT_FOUND
	}
	if h.MaintenanceUntilUnixMs == 0 {
		return dbpb.Code_CODE_NOOP
	}
	nh := proto.CloneOf(h)
	nh.MaintenanceUntilUnixMs = 0
	s.putHost(nh)
	s.touchHost(e.HostId)
	s.touchShardsOn(e.HostId)
	return dbpb.Code_CODE_OK
}

func (s *State) markDrained(m *dbpb.MarkDrained, now int64) dbpb.Code {
	if m == nil || m.HostId == "" {
		return dbpb.Code_CODE_INVALID
	}
	h, ok := s.Hosts[m.HostId]
	if !ok {
		return dbpb.Code_CODE_NOT_FOUND
	}
	if h.Admin != dbpb.HostAdmin_HOST_ADMIN_DRAINING || s.HostHasMembers(m.HostId) {
		return dbpb.Code_CODE_CONFLICT
	}
	nh := proto.CloneOf(h)
	nh.Admin = dbpb.HostAdmin_HOST_ADMIN_DRAINED
	nh.AdminSinceUnixMs = now
	s.putHost(nh)
	s.touchHost(m.HostId)
	return dbpb.Code_CODE_OK
}

func (s *State) markBootstrapped(m *dbpb.MarkBootstrapped) dbpb.Code {
	if m == nil || m.ShardId == 0 {
		return dbpb.Code_CODE_INVALID
	}
	sh, ok := s.Shards.Lookup(m.ShardId)
	if !ok {
		return dbpb.Code_CODE_NOT_FOUND
	}
	if sh.Bootstrapped {
		return dbpb.Code_CODE_NOOP
	}
	ns := proto.CloneOf(sh)
	ns.Bootstrapped = true
	s.putShard(ns)
	s.touchShard(sh.Id)
	return dbpb.Code_CODE_OK
}

func (s *State) recordFailure(r *dbpb.RecordFailure, now int64) dbpb.Code {
	if r == nil || r.ShardId == 0 || len(r.Reason) > 1024 {
		return dbpb.Code_CODE_INVALID
	}
	sh, ok := s.Shards.Lookup(r.ShardId)
	if !ok {
		return dbpb.Code_CODE_NOT_FOUND
	}
	ns := proto.CloneOf(sh)
	ns.Failures++
	ns.RetryAfterUnixMs = now + Backoff(ns.Failures)
	ns.LastFailure = r.Reason
	s.putShard(ns)
	s.touchShard(sh.Id)
	return dbpb.Code_CODE_OK
}
