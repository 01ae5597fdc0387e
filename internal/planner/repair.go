package planner

import (
	"fmt"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

var stepNames = map[dbpb.RepairStep]string{
	dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING: "add_non_voting",
	dbpb.RepairStep_REPAIR_STEP_START:          "start",
	dbpb.RepairStep_REPAIR_STEP_CATCH_UP:       "catch_up",
	dbpb.RepairStep_REPAIR_STEP_PROMOTE:        "promote",
	dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD:     "remove_old",
	dbpb.RepairStep_REPAIR_STEP_ROLLBACK:       "rollback",
}

// StepName is the user-facing name of a repair step.
func StepName(s dbpb.RepairStep) string { return stepNames[s] }

var kindNames = map[dbpb.RepairKind]string{
	dbpb.RepairKind_REPAIR_KIND_REPLACE: "replace",
	dbpb.RepairKind_REPAIR_KIND_ADD:     "add",
	dbpb.RepairKind_REPAIR_KIND_REMOVE:  "remove",
	dbpb.RepairKind_REPAIR_KIND_MOVE:    "move",
}

// KindName is the user-facing name of a repair kind.
func KindName(k dbpb.RepairKind) string { return kindNames[k] }

// StepDeadline is when a repair's current step times out (zero: never).
func StepDeadline(r *dbpb.Repair) time.Time {
	d, ok := StepTimeouts[StepName(r.Step)]
	if !ok {
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
// observed state shows the current step done, orders what the step needs
// otherwise, and rolls back a step that missed its deadline or lost its
// target host.
func (p *planner) driveRepair(v *shardView) {
	r := v.sh.Repair
	idx, n := db.StepIndex(r.Kind, r.Step)
	newM := v.byID[r.NewReplicaId]
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
	deadline := StepDeadline(r)
	late := !deadline.IsZero() && !p.now.Before(deadline)
	newLost := newM == nil || newM.state == "dead"
	// hostLost: the new replica's host is not up, so a rollback is no
	// fault of the shard's and does not make it back off.
	hostLost := !late && !p.hostUp(r.NewHostId)
	voter, nonVoting := v.inMembership(r.NewReplicaId)

	switch r.Step {
	case dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING:
		if voter || nonVoting {
			p.next(v)
			return
		}
		if v.ms != nil && contains(v.ms.Removed, r.NewReplicaId) {
			p.finishRepair(v, dbpb.RepairOutcome_REPAIR_OUTCOME_FAILED, "new replica was removed from the membership")
			return
		}
		if l, _ := p.globalLiveness(r.NewHostId); l != Up || late {
			p.rollbackLost(v, p.why(late, r, "target host is "+l.String()), hostLost)
			return
		}
		if why := p.refused(v, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_ADD_NON_VOTING, r.NewReplicaId); why != "" {
			p.rollback(v, why)
			return
		}
		p.configChange(v, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_ADD_NON_VOTING, r.NewReplicaId, p.addr(r.NewHostId), 0)
	case dbpb.RepairStep_REPAIR_STEP_START:
		if newM != nil && newM.obs != nil {
			p.next(v)
			return
		}
		if newLost || late {
			p.rollbackLost(v, p.why(late, r, "target host is dead"), hostLost)
			return
		}
		v.say("waiting for %s to start replica %d", p.addr(r.NewHostId), r.NewReplicaId)
	case dbpb.RepairStep_REPAIR_STEP_CATCH_UP:
		if newM != nil && newM.obs != nil && (newM.obs.CaughtUp || newM.obs.Role == drummerpb.ReplicaRole_REPLICA_ROLE_VOTER) {
			p.next(v)
			return
		}
		if newLost || late {
			p.rollbackLost(v, p.why(late, r, "new replica is dead"), hostLost)
			return
		}
		v.say("waiting for replica %d to catch up with the leader", r.NewReplicaId)
	case dbpb.RepairStep_REPAIR_STEP_PROMOTE:
		if voter {
			p.next(v)
			return
		}
		if newLost || late {
			p.rollbackLost(v, p.why(late, r, "new replica is "+stateOf(newM)), hostLost)
			return
		}
		if !newM.live() {
			v.say("waiting: new replica %d is %s", r.NewReplicaId, newM.state)
			return
		}
		if !v.safeAfter(+1, newM != nil && newM.live()) {
			v.say("waiting: promoting replica %d now would leave %d live of %d voters, below quorum", r.NewReplicaId, v.liveVoters+1, len(v.voters)+1)
			return
		}
		if why := p.refused(v, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_PROMOTE, r.NewReplicaId); why != "" {
			p.rollback(v, why)
			return
		}
		p.configChange(v, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_PROMOTE, r.NewReplicaId, p.addr(r.NewHostId), 0)
	case dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD:
		oldVoter, oldNonVoting := v.inMembership(r.OldReplicaId)
		if v.ms != nil && !oldVoter && !oldNonVoting {
			p.next(v)
			return
		}
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
	case dbpb.RepairStep_REPAIR_STEP_ROLLBACK:
		if v.ms != nil && !voter && !nonVoting {
			p.finishRepair(v, dbpb.RepairOutcome_REPAIR_OUTCOME_FAILED, r.RollbackReason+"; rolled back")
			return
		}
		p.remove(v, r.NewReplicaId)
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
	return m.state
}

func (p *planner) why(late bool, r *dbpb.Repair, other string) string {
	if late {
		return fmt.Sprintf("step %s did not finish within %s", StepName(r.Step), StepTimeouts[StepName(r.Step)])
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
	if id == v.leader {
		for _, vid := range v.voters {
			if c := v.byID[vid]; c != nil && c.live() && vid != id {
				o := p.newOrder(fmt.Sprintf("%d/transfer/%d/%d/%d", p.in.Epoch, v.sh.Id, id, vid))
				o.Kind = &drummerpb.Order_TransferLeader{TransferLeader: &drummerpb.TransferLeaderOrder{ShardId: v.sh.Id, ToReplicaId: vid}}
				v.orders = append(v.orders, HostOrder{HostID: m.rec.HostId, Order: o})
				v.say("moving leadership from replica %d to %d before removing it", id, vid)
				return
			}
		}
	}
	p.configChange(v, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE, id, "", id)
}

// planRepair decides whether a shard without a repair in flight needs one,
// and registers it as a candidate; candidates are started most endangered
// first within the limits.
func (p *planner) planRepair(v *shardView) {
	sh := v.sh
	q := db.Quorum(len(v.voters))
	v.priority = (v.liveVoters-q)*100 - (int(sh.Replicas) - v.liveVoters)
	if until := p.unixMs(sh.RetryAfterUnixMs); sh.RetryAfterUnixMs != 0 && p.now.Before(until) {
		v.say("backing off for %s after %d failed repairs (last: %s)", until.Sub(p.now).Round(time.Second), sh.Failures, sh.LastFailure)
		return
	}
	if v.distrusted && sh.Bootstrapped {
		// What the members claim disagrees with itself or with the DB: the
		// recorded membership may be out of date, so no repair is planned
		// from it (trust.go).
		v.say("no repair planned until a membership claim can be believed")
		return
	}
	// 1. Members in the membership that the DB does not know (a late or
	//    duplicated config change): remove them.
	if v.ms != nil {
		for _, id := range sortedIDs(v.ms.NonVoting, v.ms.Voters) {
			if v.byID[id] == nil && id < sh.NextReplicaId {
				id := id
				v.candidateSummary = fmt.Sprintf("remove unexpected member %d", id)
				v.candidate = func() bool {
					return p.startRepair(v, dbpb.RepairKind_REPAIR_KIND_REMOVE, "", id, fmt.Sprintf("replica %d is in the membership without a record", id))
				}
				return
			}
		}
	}
	// 1b. Recorded members the membership lists as removed (a removal
	//    applied although its repair was called off): drop the record; the
	//    removal step sees the replica gone and completes at once.
	if v.ms != nil {
		for _, m := range v.members {
			if id := m.rec.ReplicaId; contains(v.ms.Removed, id) {
				v.candidate = func() bool {
					return p.startRepair(v, dbpb.RepairKind_REPAIR_KIND_REMOVE, "", id, fmt.Sprintf("replica %d was removed from the membership", id))
				}
				return
			}
		}
	}
	// 2. Dead voters: replace (add before remove).
	for _, m := range v.members {
		if m.state == "dead" && v.isVoter(m.rec.ReplicaId) {
			m := m
			v.candidate = func() bool {
				reason := fmt.Sprintf("replica %d on %s dead for %s", m.rec.ReplicaId, p.addr(m.rec.HostId), m.since.Round(time.Second))
				host := p.pickHost(v, m)
				if host == "" {
					if m.host == nil || m.host.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED {
						// Its host identity is gone for good and no other host
						// can take its place; often the only candidate is that
						// host's new identity, on the raft address the dead
						// member still holds (dragonboat refuses two members on
						// one address). Remove it first: removing a dead voter
						// never lowers the live count, and the add follows.
						return p.startRepair(v, dbpb.RepairKind_REPAIR_KIND_REMOVE, "", m.rec.ReplicaId, reason+"; its host is gone for good and no other host is eligible")
					}
					return false
				}
				return p.startRepair(v, dbpb.RepairKind_REPAIR_KIND_REPLACE, host, m.rec.ReplicaId, reason)
			}
			return
		}
	}
	recordedVoters := db.Voters(sh)
	// 3. Too few voters: add one.
	if recordedVoters < int(sh.Replicas) {
		v.candidate = func() bool {
			host := p.pickHost(v, nil)
			if host == "" {
				return false
			}
			return p.startRepair(v, dbpb.RepairKind_REPAIR_KIND_ADD, host, 0, fmt.Sprintf("%d of %d replicas", recordedVoters, sh.Replicas))
		}
		return
	}
	// 4. Too many voters: remove the least useful one.
	if recordedVoters > int(sh.Replicas) {
		victim := p.removalVictim(v)
		if victim != nil {
			v.candidate = func() bool {
				return p.startRepair(v, dbpb.RepairKind_REPAIR_KIND_REMOVE, "", victim.rec.ReplicaId, fmt.Sprintf("%d voters, %d wanted", recordedVoters, sh.Replicas))
			}
		}
		return
	}
	// 5. Members on draining hosts: move them (add before remove).
	for _, m := range v.members {
		if m.host != nil && m.host.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINING && m.state != "dead" {
			m := m
			v.priority += 1000 // below every real repair
			v.candidate = func() bool {
				host := p.pickHost(v, m)
				if host == "" {
					return false
				}
				return p.startRepair(v, dbpb.RepairKind_REPAIR_KIND_MOVE, host, m.rec.ReplicaId, fmt.Sprintf("host %s is draining", p.addr(m.rec.HostId)))
			}
			return
		}
	}
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
		case m.state == "dead":
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
