package planner

import (
	"fmt"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

// repairStep is one step of a repair, as one table entry (tikv/pd's
// operator steps): its name, its deadline, when it is done, and what it
// orders, waits for or rolls back while it is not. The order of the steps
// of each repair kind is the DB's (db.RepairSteps), which checks every
// transition when it applies it.
type repairStep struct {
	name    string
	timeout time.Duration // 0: none
	// done reports whether the observed state shows the step complete.
	done func(p *planner, v *shardView, s *stepState) bool
	// act runs while the step is not done.
	act func(p *planner, v *shardView, s *stepState)
}

// stepState is what every step looks at, gathered once per evaluation.
type stepState struct {
	r                *dbpb.Repair
	name             string
	timeout          time.Duration
	newM             *member
	late             bool // the step missed its deadline
	newLost          bool // the new replica's record is gone or dead
	hostLost         bool // the new replica's host is not up (not the shard's fault)
	voter, nonVoting bool // the new replica in the observed membership
}

var repairSteps = map[dbpb.RepairStep]repairStep{
	dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING: {
		name: "add_non_voting", timeout: 30 * time.Second,
		done: func(_ *planner, _ *shardView, s *stepState) bool { return s.voter || s.nonVoting },
		act: func(p *planner, v *shardView, s *stepState) {
			r := s.r
			if v.ms != nil && contains(v.ms.Removed, r.NewReplicaId) {
				p.finishRepair(v, dbpb.RepairOutcome_REPAIR_OUTCOME_FAILED, "new replica was removed from the membership")
				return
			}
			if l, _ := p.globalLiveness(r.NewHostId); l != Up || s.late {
				p.rollbackLost(v, s.why("target host is "+l.String()), s.hostLost)
				return
			}
			if why := p.refused(v, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_ADD_NON_VOTING, r.NewReplicaId); why != "" {
				p.rollback(v, why)
				return
			}
			p.configChange(v, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_ADD_NON_VOTING, r.NewReplicaId, p.addr(r.NewHostId), 0)
		},
	},
	dbpb.RepairStep_REPAIR_STEP_START: {
		name: "start", timeout: 60 * time.Second,
		done: func(_ *planner, _ *shardView, s *stepState) bool { return s.newM != nil && s.newM.obs != nil },
		act: func(p *planner, v *shardView, s *stepState) {
			if s.newLost || s.late {
				p.rollbackLost(v, s.why("target host is dead"), s.hostLost)
				return
			}
			v.say("waiting for %s to start replica %d", p.addr(s.r.NewHostId), s.r.NewReplicaId)
		},
	},
	dbpb.RepairStep_REPAIR_STEP_CATCH_UP: {
		name: "catch_up", timeout: 5 * time.Minute,
		done: func(_ *planner, _ *shardView, s *stepState) bool {
			return s.newM != nil && s.newM.obs != nil && (s.newM.obs.CaughtUp || s.newM.obs.Role == drummerpb.ReplicaRole_REPLICA_ROLE_VOTER)
		},
		act: func(p *planner, v *shardView, s *stepState) {
			if s.newLost || s.late {
				p.rollbackLost(v, s.why("new replica is dead"), s.hostLost)
				return
			}
			v.say("waiting for replica %d to catch up with the leader", s.r.NewReplicaId)
		},
	},
	dbpb.RepairStep_REPAIR_STEP_PROMOTE: {
		name: "promote", timeout: 30 * time.Second,
		done: func(_ *planner, _ *shardView, s *stepState) bool { return s.voter },
		act: func(p *planner, v *shardView, s *stepState) {
			r, newM := s.r, s.newM
			if s.newLost || s.late {
				p.rollbackLost(v, s.why("new replica is "+stateOf(newM)), s.hostLost)
				return
			}
			if !newM.live() {
				v.say("waiting: new replica %d is %s", r.NewReplicaId, newM.state)
				return
			}
			if !v.safeAfter(+1, true) {
				v.say("waiting: promoting replica %d now would leave %d live of %d voters, below quorum", r.NewReplicaId, v.liveVoters+1, len(v.voters)+1)
				return
			}
			if why := p.refused(v, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_PROMOTE, r.NewReplicaId); why != "" {
				p.rollback(v, why)
				return
			}
			p.configChange(v, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_PROMOTE, r.NewReplicaId, p.addr(r.NewHostId), 0)
		},
	},
	dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD: {
		name: "remove_old",
		done: func(_ *planner, v *shardView, s *stepState) bool {
			oldVoter, oldNonVoting := v.inMembership(s.r.OldReplicaId)
			return v.ms != nil && !oldVoter && !oldNonVoting
		},
		act: func(p *planner, v *shardView, s *stepState) {
			r := s.r
			if m := v.byID[r.OldReplicaId]; r.Kind == dbpb.RepairKind_REPAIR_KIND_REMOVE && v.isVoter(r.OldReplicaId) &&
				!v.safeAfter(-1, m != nil && m.live()) {
				// A removal is only planned when it is safe; things changed
				// since (say the member's host came back and another died).
				// Waiting could block the shard's other repairs for ever, and
				// a removal that added nothing can always be called off.
				p.finishRepair(v, dbpb.RepairOutcome_REPAIR_OUTCOME_CANCELLED,
					fmt.Sprintf("removing replica %d would now leave fewer live voters than a quorum", r.OldReplicaId))
				return
			}
			p.remove(v, r.OldReplicaId)
		},
	},
	dbpb.RepairStep_REPAIR_STEP_ROLLBACK: {
		name: "rollback",
		// Done once the half-added member is out of the membership; the
		// repair then ends as failed rather than moving on.
		done: func(_ *planner, v *shardView, s *stepState) bool { return v.ms != nil && !s.voter && !s.nonVoting },
		act:  func(p *planner, v *shardView, s *stepState) { p.remove(v, s.r.NewReplicaId) },
	},
}

// StepName is the user-facing name of a repair step.
func StepName(s dbpb.RepairStep) string { return repairSteps[s].name }

var kindNames = map[dbpb.RepairKind]string{
	dbpb.RepairKind_REPAIR_KIND_REPLACE: "replace",
	dbpb.RepairKind_REPAIR_KIND_ADD:     "add",
	dbpb.RepairKind_REPAIR_KIND_REMOVE:  "remove",
	dbpb.RepairKind_REPAIR_KIND_MOVE:    "move",
	dbpb.RepairKind_REPAIR_KIND_BALANCE: "balance",
}

// KindName is the user-facing name of a repair kind.
func KindName(k dbpb.RepairKind) string { return kindNames[k] }

// StepDeadline is when a repair's current step times out (zero: never).
func StepDeadline(r *dbpb.Repair) time.Time {
	d := repairSteps[r.Step].timeout
	if d == 0 {
		return time.Time{}
	}
	return time.UnixMilli(r.StepStartedUnixMs).Add(d)
}

func (p *planner) advance(v *shardView, from, to dbpb.RepairStep, reason string) {
	p.advanceLost(v, from, to, reason, false)
}

func (p *planner) advanceLost(v *shardView, from, to dbpb.RepairStep, reason string, targetLost bool) {
	r := v.sh.Repair
	p.decide(&dbpb.Decision{Kind: &dbpb.Decision_AdvanceRepair{AdvanceRepair: &dbpb.AdvanceRepair{
		ShardId: v.sh.Id, RepairId: r.Id, From: from, To: to, Reason: reason, TargetLost: targetLost}}})
}

func (p *planner) finishRepair(v *shardView, outcome dbpb.RepairOutcome, reason string) {
	p.finishLost(v, outcome, reason, false)
}

// finishLost finishes a repair; targetLost says a failure was only the
// loss of the new replica's host, which the shard does not back off for.
func (p *planner) finishLost(v *shardView, outcome dbpb.RepairOutcome, reason string, targetLost bool) {
	r := v.sh.Repair
	d := &dbpb.Decision{Kind: &dbpb.Decision_FinishRepair{FinishRepair: &dbpb.FinishRepair{
		ShardId: v.sh.Id, RepairId: r.Id, Outcome: outcome, Reason: reason, TargetLost: targetLost}}}
	if why := p.voterDropRefused(v, d); why != "" {
		v.say("waiting: %s", why)
		return
	}
	p.decide(d)
}

// next moves to the step after the current one, or finishes the repair.
func (p *planner) next(v *shardView) {
	r := v.sh.Repair
	if n := db.NextStep(r.Kind, r.Step); n != dbpb.RepairStep_REPAIR_STEP_UNSPECIFIED {
		p.advance(v, r.Step, n, "")
		return
	}
	p.finishRepair(v, dbpb.RepairOutcome_REPAIR_OUTCOME_DONE, "")
}

func (p *planner) hostUp(id string) bool {
	l, _ := p.globalLiveness(id)
	return l == Up
}

// rollback undoes a repair whose new replica cannot be completed.
func (p *planner) rollback(v *shardView, why string) { p.rollbackLost(v, why, false) }

// rollbackLost is rollback, saying whether the cause is only that the new
// replica's host was lost (then the shard does not back off).
func (p *planner) rollbackLost(v *shardView, why string, targetLost bool) {
	r := v.sh.Repair
	voter, nonVoting := v.inMembership(r.NewReplicaId)
	if r.Step == dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING && !voter && !nonVoting {
		// Nothing was added; a late add is caught as an unexpected member.
		p.finishLost(v, dbpb.RepairOutcome_REPAIR_OUTCOME_FAILED, why, targetLost)
		return
	}
	p.advanceLost(v, r.Step, dbpb.RepairStep_REPAIR_STEP_ROLLBACK, why, targetLost)
	v.say("rolling back: %s", why)
}

// driveRepair moves a repair in flight forward by one step when the
// observed state shows the current step done, and otherwise lets the step
// order what it needs, wait, or roll back (repairSteps).
func (p *planner) driveRepair(v *shardView) {
	r := v.sh.Repair
	idx, n := db.StepIndex(r.Kind, r.Step)
	desc := fmt.Sprintf("%s repair %d", KindName(r.Kind), r.Id)
	if r.NewReplicaId != 0 {
		desc += fmt.Sprintf(": adding replica %d on %s", r.NewReplicaId, p.addr(r.NewHostId))
	}
	if r.OldReplicaId != 0 {
		desc += fmt.Sprintf(", replacing replica %d", r.OldReplicaId)
		if r.Kind == dbpb.RepairKind_REPAIR_KIND_REMOVE {
			desc = fmt.Sprintf("remove repair %d: removing replica %d", r.Id, r.OldReplicaId)
		}
	}
	v.say("%s; step %d/%d %s", desc, idx, n, StepName(r.Step))
	step, ok := repairSteps[r.Step]
	if !ok {
		v.say("unknown repair step %d; waiting for an operator", r.Step)
		return
	}
	s := &stepState{r: r, name: step.name, timeout: step.timeout, newM: v.byID[r.NewReplicaId]}
	deadline := StepDeadline(r)
	s.late = !deadline.IsZero() && !p.now.Before(deadline)
	s.newLost = s.newM == nil || s.newM.state == memberDead
	s.hostLost = !s.late && !p.hostUp(r.NewHostId)
	s.voter, s.nonVoting = v.inMembership(r.NewReplicaId)
	if r.Kind == dbpb.RepairKind_REPAIR_KIND_BALANCE && r.Step != dbpb.RepairStep_REPAIR_STEP_ROLLBACK &&
		r.Step != dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD && v.report.Health != "healthy" {
		// Repairs pre-empt balancing: a member failed during the move, so
		// the move is undone and the shard's repair can start.
		p.rollback(v, "the shard is no longer healthy; repairs first")
		return
	}
	switch {
	case !step.done(p, v, s):
		step.act(p, v, s)
	case r.Step == dbpb.RepairStep_REPAIR_STEP_ROLLBACK:
		p.finishRepair(v, dbpb.RepairOutcome_REPAIR_OUTCOME_FAILED, r.RollbackReason+"; rolled back")
	default:
		p.next(v)
	}
}

// refused reports why Raft refused the membership change this step would
// order, if it did: a member host answered REJECTED for the very order (same
// ConfigChangeID) and the membership it read afterwards still has that
// ConfigChangeID, so the change was illegal rather than stale. Waiting for
// the step deadline would only delay the rollback.
func (p *planner) refused(v *shardView, typ drummerpb.ConfigChangeType, replicaID uint64) string {
	if v.ms == nil {
		return ""
	}
	id := ccOrderID(p.in.Epoch, v.sh.Id, typ, replicaID, v.ms.ConfigChangeId)
	for _, m := range v.members {
		o := p.obs.Hosts[m.rec.HostId]
		if o == nil {
			continue
		}
		if r := o.Results[id]; r != nil && r.Outcome == drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED &&
			r.Membership != nil && r.Membership.ConfigChangeId == v.ms.ConfigChangeId {
			return fmt.Sprintf("Raft refused the change at ConfigChangeID %d: %s", v.ms.ConfigChangeId, r.Error)
		}
	}
	return ""
}

func contains(s []uint64, x uint64) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

func stateOf(m *member) string {
	if m == nil {
		return "unknown"
	}
	return m.state.String()
}

// why explains a rollback: the missed deadline, else other.
func (s *stepState) why(other string) string {
	if s.late {
		return fmt.Sprintf("step %s did not finish within %s", s.name, s.timeout)
	}
	return other
}

// remove takes a member out of the membership, unless that would leave the
// shard without a live quorum. A leader being removed first hands its
// leadership to another live voter.
func (p *planner) remove(v *shardView, id uint64) {
	m := v.byID[id]
	isVoter := v.isVoter(id)
	if isVoter && !v.safeAfter(-1, m != nil && m.live()) {
		v.say("waiting: removing replica %d now would leave fewer live voters than a quorum", id)
		return
	}
	if isVoter && v.sh.Replicas <= 1 {
		// A one-replica shard has no second host to confirm that its old
		// voter is gone: the new replica's host alone could claim it. So
		// the old replica's own host carries out the removal, and its
		// result is what the trust rules accept (distrust).
		if m == nil || !m.live() {
			v.say("waiting: replica %d must carry out its own removal (the shard has one replica), and it is %s", id, stateOf(m))
			return
		}
		p.changeBy(v, m, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE, id, "")
		return
	}
	if id == v.leader {
		for _, vid := range v.voters {
			if c := v.byID[vid]; c != nil && c.live() && vid != id {
				o := p.newOrder(transferOrderID(p.in.Epoch, v.sh.Id, id, vid))
				o.Kind = &drummerpb.Order_TransferLeader{TransferLeader: &drummerpb.TransferLeaderOrder{ShardId: v.sh.Id, ToReplicaId: vid}}
				v.orders = append(v.orders, HostOrder{HostID: m.rec.HostId, Order: o})
				v.say("moving leadership from replica %d to %d before removing it", id, vid)
				return
			}
		}
	}
	p.configChange(v, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE, id, "", id)
}

// repairPlan is a repair a checker wants started: a value, started (or
// held back by the limits) after every shard of the round was checked,
// most endangered first.
type repairPlan struct {
	kind dbpb.RepairKind
	// old is the member replaced, moved or removed (nil: none, or oldID
	// names a member the DB has no record of).
	old   *member
	oldID uint64
	// place: a host must be chosen for a new replica (replacing old).
	place  bool
	reason string
	// removeIfNoHost: when no host is eligible, remove old instead.
	removeIfNoHost string
	// target: the host chosen already (balancing chooses it to judge the
	// move); re-checked when the plan starts.
	target string
}

func (r *repairPlan) oldReplica() uint64 {
	if r.old != nil {
		return r.old.rec.ReplicaId
	}
	return r.oldID
}

// startPlan starts a planned repair, choosing its host; false when it
// could not start (the explanation says why).
func (p *planner) startPlan(v *shardView, r *repairPlan) bool {
	if !r.place {
		return p.startRepair(v, r.kind, "", r.oldReplica(), r.reason)
	}
	host := r.target
	if host == "" {
		host = p.pickHost(v, r.old)
	}
	if host == "" {
		if r.removeIfNoHost != "" {
			return p.startRepair(v, dbpb.RepairKind_REPAIR_KIND_REMOVE, "", r.oldReplica(), r.removeIfNoHost)
		}
		return false
	}
	return p.startRepair(v, r.kind, host, r.oldReplica(), r.reason)
}

// planRepair decides whether a shard without a repair in flight needs one
// and returns it (nil: none needed, or none possible now, explained).
func (p *planner) planRepair(v *shardView) *repairPlan {
	sh := v.sh
	q := db.Quorum(len(v.voters))
	v.priority = (v.liveVoters-q)*100 - (int(sh.Replicas) - v.liveVoters)
	if until := p.unixMs(sh.RetryAfterUnixMs); sh.RetryAfterUnixMs != 0 && p.now.Before(until) {
		v.say("backing off for %s after %d failed repairs (last: %s)", until.Sub(p.now).Round(time.Second), sh.Failures, sh.LastFailure)
		return nil
	}
	if v.distrusted && sh.Bootstrapped {
		// What the members claim disagrees with itself or with the DB: the
		// recorded membership may be out of date, so no repair is planned
		// from it (trust.go).
		v.say("no repair planned until a membership claim can be believed")
		return nil
	}
	remove := func(id uint64, reason string) *repairPlan {
		return &repairPlan{kind: dbpb.RepairKind_REPAIR_KIND_REMOVE, old: v.byID[id], oldID: id, reason: reason}
	}
	// 1. Members in the membership that the DB does not know (a late or
	//    duplicated config change): remove them.
	if v.ms != nil {
		for _, id := range sortedIDs(v.ms.NonVoting, v.ms.Voters) {
			if v.byID[id] == nil && id < sh.NextReplicaId {
				return remove(id, fmt.Sprintf("replica %d is in the membership without a record", id))
			}
		}
	}
	// 1b. Recorded members the membership lists as removed (a removal
	//    applied although its repair was called off): drop the record; the
	//    removal step sees the replica gone and completes at once.
	if v.ms != nil {
		for _, m := range v.members {
			if id := m.rec.ReplicaId; contains(v.ms.Removed, id) {
				return remove(id, fmt.Sprintf("replica %d was removed from the membership", id))
			}
		}
	}
	// 2. Dead voters: replace (add before remove).
	for _, m := range v.members {
		if m.state == memberDead && v.isVoter(m.rec.ReplicaId) {
			reason := fmt.Sprintf("replica %d on %s dead for %s", m.rec.ReplicaId, p.addr(m.rec.HostId), m.since.Round(time.Second))
			r := &repairPlan{kind: dbpb.RepairKind_REPAIR_KIND_REPLACE, old: m, place: true, reason: reason}
			if m.host == nil || m.host.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED {
				// Its host identity is gone for good and no other host may
				// be able to take its place; often the only candidate is
				// that host's new identity, on the raft address the dead
				// member still holds (dragonboat refuses two members on one
				// address). Then remove it first: removing a dead voter
				// never lowers the live count, and the add follows.
				r.removeIfNoHost = reason + "; its host is gone for good and no other host is eligible"
			}
			return r
		}
	}
	recordedVoters := db.Voters(sh)
	// 3. Too few voters: add one.
	if recordedVoters < int(sh.Replicas) {
		return &repairPlan{kind: dbpb.RepairKind_REPAIR_KIND_ADD, place: true, reason: fmt.Sprintf("%d of %d replicas", recordedVoters, sh.Replicas)}
	}
	// 4. Too many voters: remove the least useful one.
	if recordedVoters > int(sh.Replicas) {
		if victim := p.removalVictim(v); victim != nil {
			return remove(victim.rec.ReplicaId, fmt.Sprintf("%d voters, %d wanted", recordedVoters, sh.Replicas))
		}
		return nil
	}
	// 5. Members on draining hosts: move them (add before remove).
	for _, m := range v.members {
		if m.host != nil && m.host.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINING && m.state != memberDead {
			v.priority += 1000 // below every real repair
			return &repairPlan{kind: dbpb.RepairKind_REPAIR_KIND_MOVE, old: m, place: true, reason: fmt.Sprintf("host %s is draining", p.addr(m.rec.HostId))}
		}
	}
	return nil
}

func sortedIDs(ms ...map[uint64]string) []uint64 {
	var ids []uint64
	for _, m := range ms {
		for id := range m {
			ids = append(ids, id)
		}
	}
	return sortU64(ids)
}

func (p *planner) removalVictim(v *shardView) *member {
	var best *member
	score := func(m *member) int {
		s := 0
		switch {
		case m.state == memberDead:
			s = 3
		case m.host != nil && m.host.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINING:
			s = 2
		case !m.live():
			s = 1
		}
		return s*1_000_000 + p.load(m.rec.HostId)
	}
	for _, m := range v.members {
		if m.rec.Role != dbpb.Role_ROLE_VOTER {
			continue
		}
		if best == nil || score(m) > score(best) {
			best = m
		}
	}
	return best
}

func (p *planner) startRepair(v *shardView, kind dbpb.RepairKind, host string, old uint64, reason string) bool {
	d := &dbpb.Decision{Kind: &dbpb.Decision_StartRepair{StartRepair: &dbpb.StartRepair{
		ShardId: v.sh.Id, Kind: kind, NewHostId: host, OldReplicaId: old, Reason: reason}}}
	if why := p.voterDropRefused(v, d); why != "" {
		v.say("not starting %s repair (%s): %s", KindName(kind), reason, why)
		return false
	}
	p.decide(d)
	if host != "" {
		p.addLoad(host)
		p.inFlightPerHost[host]++
		v.say("starting %s repair on %s: %s", KindName(kind), p.addr(host), reason)
	} else {
		v.say("starting %s repair: %s", KindName(kind), reason)
	}
	return true
}
