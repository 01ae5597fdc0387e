package sim

// Invariants and how they are judged.
//
// Quorum rule. A REMOVE of a voter or a PROMOTE is checked when it is
// applied, against the true liveness of the voters it leaves (a voter is
// live when its replica runs on an alive host at its address; one that
// joined and has no log yet still votes). If fewer than
// a quorum are live the change broke the shard's availability, and that is
// a planner bug unless the planner could not have known: the planner only
// learns that a replica stopped when its host stops reporting for
// suspect_timeout (or reports it stopped), so a voter whose liveness flipped
// after (decision time - grace) is given the benefit of the doubt, with
// grace = suspect_timeout (the larger of the global and the shard's) +
// report_interval + 2 ticks. Precisely: the change is excused when the live
// voters plus the recently flipped non-live voters still make a quorum.
// The decision time of an order is the planning round whose output the
// agent received (orders are re-issued every round while still wanted).
//
// Placement rule. A PlaceShard host or a StartRepair target must, at
// decision time, be registered and active (not cordoned, draining, drained
// or replaced), not in a maintenance window, Up in the scheduler's own view
// (heard within suspect_timeout), and not dead in truth for longer than the
// grace (the scheduler cannot know sooner).
//
// Other rules: at most one config change order per shard per round; start
// orders only for recorded members on their own host; stop+RemoveData only
// for non-members; RemoveData of a true member of a live shard (not deleted
// by the operator) is DATA LOSS; a member whose data was lost is never
// started again with an empty log; replica IDs only grow per shard ID (across
// deletion and re-creation); DB members of a shard are on distinct hosts and
// addresses and never more than replicas+1; a new scheduler (fresh
// ObsSince) declares no member dead before the dead timeout; no repair is
// started for a shard that has lacked a live quorum for longer than the
// grace (a minority never repairs); a deposed epoch's decisions are refused
// without changing the state.
//
// Convergence: once faults stop, within Config.SettleBound (extended by
// repair backoff up to MaxBackoffSlack) every shard that lost its quorum for
// good is reported unavailable naming what it waits for, every repairable
// shard is reported healthy by the planner and truly is (truth voters = DB members, all live,
// a leader, no non-voting members), no repair is in flight on it, the DB
// has no cleanups left except on dead hosts that still hold members, dead
// hosts without members are forgotten, and no alive host runs or stores a
// replica that is not a member. A shard is repairable when a quorum of its
// true voters have their data on hosts that are (or will be) alive, and
// enough usable hosts exist to satisfy its size and region placement.
// Balancing has its own invariants and its part of convergence (balance.go).

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/planner"
	"github.com/drummerhq/drummer/internal/scheduler"
)

// grace is how long the scheduler may take to notice a liveness change.
func (w *World) grace(shardID uint64) time.Duration {
	c := w.st.Config
	suspect, _ := w.st.ShardTimeouts(shardID)
	suspect = max(suspect, c.SuspectTimeoutMs)
	return time.Duration(suspect+c.ReportIntervalMs)*time.Millisecond + 2*w.cfg.Tick
}

// mayLookLive counts the voters the scheduler may still believe live: the
// live ones, plus those whose liveness flipped after since (or this very
// tick, not yet noted) - the scheduler cannot have noticed yet.
func (w *World) mayLookLive(g *group, voters map[uint64]string, since time.Time) (live, maybe int) {
	for v := range voters {
		if w.live(g, v) {
			live++
			continue
		}
		if t, ok := g.liveChanged[v]; !ok || t.After(since) || g.live[v] {
			maybe++
		}
	}
	return live, live + maybe
}

// checkQuorumChange judges a REMOVE or PROMOTE about to be applied.
func (w *World) checkQuorumChange(g *group, kind string, id uint64, after map[uint64]string, q *queued) {
	need := db.Quorum(len(after))
	live, maybe := w.mayLookLive(g, after, q.decidedAt.Add(-w.grace(g.shard)))
	if live >= need {
		return
	}
	if maybe >= need {
		w.stats.ExcusedQuorumChanges++
		w.tracef("excused: %s of %d in shard %d leaves %d/%d voters live (liveness changed after the decision)", kind, id, g.shard, live, len(after))
		return
	}
	w.violate("QUORUM: %s of replica %d in %s leaves %d of %d voters live, below quorum %d (decided at %.1fs)",
		kind, id, g, live, len(after), need, q.decidedAt.Sub(epoch0).Seconds())
}

// checkTruthGroup checks a group after a membership change.
func (w *World) checkTruthGroup(g *group) {
	addrs := map[string]uint64{}
	for _, m := range []map[uint64]string{g.voters, g.nonVoting} {
		for id, a := range m {
			if o, ok := addrs[a]; ok {
				w.violate("shard %d: members %d and %d share address %s", g.shard, o, id, a)
			}
			addrs[a] = id
			if g.removed[id] {
				w.violate("shard %d: removed replica %d is a member again", g.shard, id)
			}
		}
	}
}

// plannerUp judges a host the way the scheduler's view can: heard within
// the global suspect timeout (silence before ObsSince does not count).
func plannerUp(in planner.Input, hostID string) bool {
	last := in.ObsSince
	if o := in.Obs.Hosts[hostID]; o != nil && o.LastHeard.After(last) {
		last = o.LastHeard
	}
	return in.Now.Sub(last) < time.Duration(in.State.Config.SuspectTimeoutMs)*time.Millisecond
}

// checkTarget judges a host chosen for a new replica.
func (w *World) checkTarget(in planner.Input, hostID, what string) {
	st := in.State
	h := st.Hosts[hostID]
	switch {
	case h == nil:
		w.violate("%s: host %s is not registered", what, hostID)
		return
	case h.Admin != dbpb.HostAdmin_HOST_ADMIN_ACTIVE:
		w.violate("PLACEMENT: %s on host %s which is %s", what, hostID, h.Admin)
	case h.MaintenanceUntilUnixMs != 0 && in.Now.Before(time.UnixMilli(h.MaintenanceUntilUnixMs)):
		w.violate("PLACEMENT: %s on host %s which is in maintenance", what, hostID)
	case !plannerUp(in, hostID):
		w.violate("PLACEMENT: %s on host %s which the scheduler sees as suspect or dead", what, hostID)
	}
	grace := time.Duration(st.Config.SuspectTimeoutMs+st.Config.ReportIntervalMs)*time.Millisecond + 2*w.cfg.Tick
	if th := w.hostByID(hostID); th != nil {
		if !th.alive && w.now.Sub(th.downAt) > grace {
			w.violate("PLACEMENT: %s on host %s which has been down for %s", what, hostID, w.now.Sub(th.downAt))
		}
	} else if t, ok := w.hostDeadAt[hostID]; !ok || w.now.Sub(t) > grace {
		w.violate("PLACEMENT: %s on host identity %s which no longer exists", what, hostID)
	}
}

// checkOutput judges a planner output before its decisions are applied
// (so in.State is the state the planner saw).
func (w *World) checkOutput(in planner.Input, out *planner.Output) {
	st := in.State
	for _, sid := range sortedKeys(out.ShardOrders) {
		sh := st.Shards.Get(sid)
		ncc := 0
		for _, ho := range out.ShardOrders[sid] {
			o := ho.Order
			if o.Epoch != in.Epoch {
				w.violate("order %s carries epoch %d, planning epoch %d", o.Id, o.Epoch, in.Epoch)
			}
			switch k := o.Kind.(type) {
			case *drummerpb.Order_ConfigChange:
				ncc++
				if k.ConfigChange.ShardId != sid {
					w.violate("order %s for shard %d filed under shard %d", o.Id, k.ConfigChange.ShardId, sid)
				}
			case *drummerpb.Order_Start:
				var m *dbpb.Replica
				if sh != nil {
					m = db.Member(sh, k.Start.ReplicaId)
				}
				if m == nil || m.HostId != ho.HostID || k.Start.ShardId != sid {
					w.violate("start order %s on %s is not for a recorded member there", orderStr(o), ho.HostID)
				}
			case *drummerpb.Order_Stop:
				w.violate("shard-level stop order %s", orderStr(o))
			}
		}
		if ncc > 1 {
			var s []string
			for _, ho := range out.ShardOrders[sid] {
				s = append(s, orderStr(ho.Order))
			}
			w.violate("shard %d: %d membership changes ordered in one round: %v", sid, ncc, s)
		}
	}
	for _, hid := range sortedKeys(out.HostOrders) {
		for _, o := range out.HostOrders[hid] {
			s := o.GetStop()
			if s == nil {
				w.violate("host-level order %s is not a stop", orderStr(o))
				continue
			}
			if sh := st.Shards.Get(s.ShardId); sh != nil {
				if m := db.Member(sh, s.ReplicaId); m != nil && m.HostId == hid {
					w.violate("stop order %s on %s for a recorded member", orderStr(o), hid)
				}
			}
		}
	}
	for _, d := range out.Decisions {
		switch k := d.Kind.(type) {
		case *dbpb.Decision_PlaceShard:
			for _, hid := range k.PlaceShard.HostIds {
				w.checkTarget(in, hid, fmt.Sprintf("place_shard %d", k.PlaceShard.ShardId))
			}
		case *dbpb.Decision_StartRepair:
			r := k.StartRepair
			what := fmt.Sprintf("%s repair of shard %d", planner.KindName(r.Kind), r.ShardId)
			if r.NewHostId != "" {
				w.checkTarget(in, r.NewHostId, what)
			}
			sh := st.Shards.Get(r.ShardId)
			if sh == nil {
				continue
			}
			_, dead := st.ShardTimeouts(r.ShardId)
			if r.Kind == dbpb.RepairKind_REPAIR_KIND_REPLACE && in.Now.Sub(in.ObsSince) < time.Duration(dead)*time.Millisecond {
				if m := db.Member(sh, r.OldReplicaId); m != nil {
					if h := st.Hosts[m.HostId]; h != nil && h.Admin != dbpb.HostAdmin_HOST_ADMIN_REPLACED {
						w.violate("FRESH LEADER: %s declares replica %d dead %s after the scheduler started, before dead_timeout %dms",
							what, r.OldReplicaId, in.Now.Sub(in.ObsSince), dead)
					}
				}
			}
			if g := w.newestGroup(r.ShardId); r.Kind != dbpb.RepairKind_REPAIR_KIND_REMOVE && g != nil && g.formed && !g.noQuorumSince.IsZero() {
				if _, maybe := w.mayLookLive(g, g.voters, w.now.Add(-w.grace(r.ShardId))); maybe < db.Quorum(len(g.voters)) {
					w.violate("MINORITY: %s started while the shard has had no live quorum for %s (%s)", what, w.now.Sub(g.noQuorumSince), g)
				}
			}
		}
	}
	w.checkBalanceOutput(in, out)
}

func (w *World) newestGroup(shardID uint64) *group {
	gs := w.groups[shardID]
	if len(gs) == 0 {
		return nil
	}
	return gs[len(gs)-1]
}

// checkDecisionResult judges the result code of one applied decision. The
// planner decided from the state the batch was applied to, so a decision
// the DB refuses is a disagreement between planner and DB.
func (w *World) checkDecisionResult(d *dbpb.Decision, c dbpb.Code) {
	switch c {
	case dbpb.Code_CODE_OK, dbpb.Code_CODE_NOOP:
		return
	}
	w.violate("decision %s refused by the DB: %s", decisionStr(d), c)
}

// checkDB checks the DB's structural invariants after a change.
func (w *World) checkDB() {
	st := w.st
	for _, sid := range st.SortedShardIDs() {
		sh := st.Shards.Get(sid)
		for i, m := range sh.Members {
			h := st.Hosts[m.HostId]
			for _, o := range sh.Members[:i] {
				if o.HostId == m.HostId {
					w.violate("DB: shard %d has two members on host %s", sid, m.HostId)
				}
				if oh := st.Hosts[o.HostId]; h != nil && oh != nil && oh.RaftAddress == h.RaftAddress {
					w.violate("DB: shard %d has two members on address %s", sid, h.RaftAddress)
				}
			}
			if m.ReplicaId >= sh.NextReplicaId {
				w.violate("DB: shard %d member %d not below next_replica_id %d", sid, m.ReplicaId, sh.NextReplicaId)
			}
		}
		// Replica IDs never come back once dropped (across incarnations of
		// the shard ID too).
		prev := w.dbMembers[sid]
		same := len(prev) == len(sh.Members)
		for _, m := range sh.Members {
			if !prev[m.ReplicaId] {
				same = false
			}
		}
		if !same {
			now := make(map[uint64]bool, len(sh.Members))
			for _, m := range sh.Members {
				now[m.ReplicaId] = true
				if w.dbGone[sid][m.ReplicaId] {
					w.violate("DB: shard %d reuses replica ID %d", sid, m.ReplicaId)
				}
			}
			w.noteGone(sid, now)
		}
		if len(sh.Members) > int(sh.Replicas)+1 {
			w.violate("DB: shard %d has %d members for %d replicas", sid, len(sh.Members), sh.Replicas)
		}
		if g := w.newestGroup(sid); g != nil {
			for _, m := range sh.Members {
				if m.ReplicaId < g.base {
					w.violate("DB: shard %d member %d is below the incarnation's first replica ID %d (reused ID)", sid, m.ReplicaId, g.base)
				}
			}
		}
	}
	for sid := range w.dbMembers {
		if st.Shards.Get(sid) == nil {
			w.noteGone(sid, nil)
		}
	}
	for k := range st.Cleanups {
		if sh := st.Shards.Get(k.ShardID); sh != nil {
			if m := db.Member(sh, k.ReplicaID); m != nil && m.HostId == k.HostID {
				w.violate("DB: cleanup recorded for member %d/%d on its own host %s", k.ShardID, k.ReplicaID, k.HostID)
			}
		}
	}
}

// noteGone records the IDs that left a shard's DB members.
func (w *World) noteGone(sid uint64, now map[uint64]bool) {
	for id := range w.dbMembers[sid] {
		if !now[id] {
			if w.dbGone[sid] == nil {
				w.dbGone[sid] = map[uint64]bool{}
			}
			w.dbGone[sid][id] = true
		}
	}
	if now == nil {
		delete(w.dbMembers, sid)
	} else {
		w.dbMembers[sid] = now
	}
}

// checkHostGC checks that a registered host that has been silent (in the
// scheduler's view) for host_gc_after and holds no member is forgotten, and
// a replaced one as soon as it holds no member: within a few patrol
// sweeps of becoming eligible, once the faults stopped.
func (w *World) checkHostGC() {
	st := w.st
	gc := time.Duration(st.Config.HostGcAfterMs) * time.Millisecond
	if w.gcSince == nil {
		w.gcSince = map[string]time.Time{}
	}
	obs := w.drummer.node.Observed()
	for id := range w.gcSince {
		if st.Hosts[id] == nil {
			delete(w.gcSince, id)
		}
	}
	for _, id := range st.SortedHostIDs() {
		h := st.Hosts[id]
		last := w.drummer.node.Started()
		if o := obs.Hosts[id]; o != nil && o.LastHeard.After(last) {
			last = o.LastHeard
		}
		if st.HostHasMembers(id) || (h.Admin != dbpb.HostAdmin_HOST_ADMIN_REPLACED && w.now.Sub(last) < gc) {
			delete(w.gcSince, id)
			continue
		}
		since, ok := w.gcSince[id]
		if !ok || !w.settled {
			w.gcSince[id] = w.now
			continue
		}
		if w.now.Sub(since) > 3*w.cfg.SweepEvery {
			w.violate("GC: host %s (%s, silent %s, host_gc_after %s) holds nothing but was kept for %s", id, h.Admin, w.now.Sub(last), gc, w.now.Sub(since))
		}
	}
}

// checkStep runs cheap redundant checks once per simulated second.
func (w *World) checkStep() {
	// Truth: a removed ID never runs as a member, and the agent never runs
	// a replica whose data was removed.
	for _, h := range w.hosts {
		if !h.alive {
			continue
		}
		for sid, r := range h.running {
			if h.removed[key{ShardID: sid, ReplicaID: r.id}] {
				w.violate("host %s runs %d/%d after its data was removed", h.id, sid, r.id)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Convergence.

// repairable tells whether a shard can be brought back to health without
// an operator, and why not.
func (w *World) repairable(sh *dbpb.Shard) (bool, string) {
	g := w.newestGroup(sh.Id)
	if g == nil {
		return false, "no truth"
	}
	if sh.Phase == dbpb.ShardPhase_SHARD_PHASE_ACTIVE {
		if !g.formed {
			// Placed, never bootstrapped: a quorum of the initial members
			// must be able to start, and the planner must know every
			// initial member's address (a known weakness: it cannot build
			// the initial membership once a host record is removed).
			for _, m := range sh.Members {
				if w.st.Hosts[m.HostId] == nil {
					return false, fmt.Sprintf("never bootstrapped and the host of initial replica %d was removed", m.ReplicaId)
				}
			}
			n := 0
			for _, m := range sh.Members {
				if h := w.hostByID(m.HostId); h != nil && !h.permDead {
					n++
				}
			}
			if n < db.Quorum(len(sh.Members)) {
				return false, fmt.Sprintf("never bootstrapped and only %d of %d initial members can start", n, len(sh.Members))
			}
		} else {
			n := 0
			for id, addr := range g.voters {
				h := w.byAddr[addr]
				if h == nil || h.permDead {
					continue
				}
				if w.live(g, id) || (h.disk[key{ShardID: sh.Id, ReplicaID: id}] != nil && !h.wipe) {
					n++
				}
			}
			if n < db.Quorum(len(g.voters)) {
				return false, fmt.Sprintf("quorum lost for good: %d of %d voters have their data (%s)", n, len(g.voters), g)
			}
		}
	}
	if ok, why := w.enoughHosts(sh); !ok {
		return false, why
	}
	return true, ""
}

// enoughHosts tells whether the fleet can hold the shard: usable hosts are
// alive, registered, active (or cordoned while holding a member of the
// shard), not in maintenance, and run the app.
func (w *World) enoughHosts(sh *dbpb.Shard) (bool, string) {
	st := w.st
	count := map[string]int{}
	total := 0
	for _, h := range w.hosts {
		dh := st.Hosts[h.id]
		if !h.alive || dh == nil || !slices.Contains(h.apps, sh.App) {
			continue
		}
		if dh.MaintenanceUntilUnixMs != 0 && w.now.Before(time.UnixMilli(dh.MaintenanceUntilUnixMs)) {
			continue
		}
		ok := dh.Admin == dbpb.HostAdmin_HOST_ADMIN_ACTIVE ||
			(dh.Admin == dbpb.HostAdmin_HOST_ADMIN_CORDONED && db.MemberOnHost(sh, h.id) != nil)
		if !ok {
			continue
		}
		count[h.region]++
		total++
	}
	regions := sh.Regions
	exact := len(regions) > 0
	if !exact && len(st.Regions) > 0 {
		regions = st.Regions
		var sum uint32
		for _, n := range regions {
			sum += n
		}
		exact = sum == sh.Replicas
	}
	switch {
	case exact:
		for _, r := range sortedKeys(regions) {
			if count[r] < int(regions[r]) {
				return false, fmt.Sprintf("region %s has %d usable hosts, needs %d", r, count[r], regions[r])
			}
		}
	case len(regions) > 0:
		n := 0
		for r := range regions {
			n += count[r]
		}
		if n < int(sh.Replicas) {
			return false, fmt.Sprintf("%d usable hosts in regions %v, needs %d", n, sortedKeys(regions), sh.Replicas)
		}
	default:
		if total < int(sh.Replicas) {
			return false, fmt.Sprintf("%d usable hosts, needs %d", total, sh.Replicas)
		}
	}
	return true, ""
}

// problems lists what keeps the world from being settled.
func (w *World) problems() []string {
	var out []string
	st := w.st
	rep := w.lastOut
	for _, sid := range st.SortedShardIDs() {
		sh := st.Shards.Get(sid)
		ok, why := w.repairable(sh)
		if !ok {
			if p := w.lostShardReport(sh, why); p != "" {
				out = append(out, p)
			}
			continue
		}
		if w.hostileMember(sid) {
			// The hostile host's lies about its own replicas may keep the
			// shard from settling (repairs ordered at a forged
			// ConfigChangeID are refused); the safety invariants still
			// hold for it, convergence is excused.
			continue
		}
		var r *planner.ShardReport
		if rep != nil {
			r = rep.Shards[sid]
		}
		g := w.newestGroup(sid)
		switch {
		case r == nil:
			out = append(out, fmt.Sprintf("shard %d: no report", sid))
			continue
		case r.Health != "healthy":
			out = append(out, fmt.Sprintf("shard %d is %s: %s; truth %s", sid, r.Health, strings.Join(r.Explanation, "; "), g))
			continue
		case sh.Repair != nil:
			out = append(out, fmt.Sprintf("shard %d: healthy with repair %d in flight", sid, sh.Repair.Id))
			continue
		}
		// The planner says healthy: so must the truth.
		var ids []uint64
		for _, m := range sh.Members {
			ids = append(ids, m.ReplicaId)
			h := st.Hosts[m.HostId]
			if h == nil || g.voters[m.ReplicaId] != h.RaftAddress || !w.live(g, m.ReplicaId) {
				out = append(out, fmt.Sprintf("shard %d reported healthy but member %d on %s is not a live voter there (%s)", sid, m.ReplicaId, m.HostId, g))
			}
		}
		if !slices.Equal(ids, sortedKeys(g.voters)) || len(g.nonVoting) > 0 || g.leader == 0 {
			out = append(out, fmt.Sprintf("shard %d reported healthy with members %v but truth is %s", sid, ids, g))
		}
	}
	keys := make([]db.CleanupKey, 0, len(st.Cleanups))
	for k := range st.Cleanups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.HostID != b.HostID {
			return a.HostID < b.HostID
		}
		return cmpKey(key{ShardID: a.ShardID, ReplicaID: a.ReplicaID}, key{ShardID: b.ShardID, ReplicaID: b.ReplicaID}) < 0
	})
	for _, k := range keys {
		if w.hostileMember(k.ShardID) {
			continue // excused with its shard
		}
		h := w.hostByID(k.HostID)
		if h == nil || !h.alive {
			if st.HostHasMembers(k.HostID) {
				continue // waits for its host; bounded by the members
			}
		}
		out = append(out, fmt.Sprintf("cleanup of %d/%d on %s pending", k.ShardID, k.ReplicaID, k.HostID))
	}
	for _, id := range st.SortedHostIDs() {
		dh := st.Hosts[id]
		h := w.hostByID(id)
		gone := h == nil || h.permDead
		if gone && !st.HostHasMembers(id) {
			out = append(out, fmt.Sprintf("host %s (%s) is gone and holds nothing but is not forgotten", id, dh.Admin))
		}
	}
	// Zombies: replicas of shards that cannot be repaired are left alone
	// (what is and is not a member there may not even be observable).
	broken := func(sid, rid uint64) bool {
		g := w.groupFor(sid, rid)
		sh := w.st.Shards.Get(sid)
		if g == nil || g.deleted || sh == nil || g != w.newestGroup(sid) {
			return false
		}
		ok, _ := w.repairable(sh)
		return !ok
	}
	for _, h := range w.hosts {
		if !h.alive {
			continue
		}
		for _, sid := range sortedKeys(h.running) {
			r := h.running[sid]
			if !w.isMemberHere(h, sid, r.id) && !broken(sid, r.id) && !w.hostileMember(sid) {
				out = append(out, fmt.Sprintf("host %s runs zombie %d/%d", h.id, sid, r.id))
			}
		}
		keys := make([]key, 0, len(h.disk))
		for k := range h.disk {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, cmpKey)
		for _, k := range keys {
			if !w.isMemberHere(h, k.ShardID, k.ReplicaID) && !broken(k.ShardID, k.ReplicaID) && !w.hostileMember(k.ShardID) {
				out = append(out, fmt.Sprintf("host %s stores zombie data %d/%d", h.id, k.ShardID, k.ReplicaID))
			}
		}
	}
	w.bal.judged = judgement{}
	if len(out) == 0 {
		// Balancing is judged once everything else settled.
		w.bal.judged = w.judgeBalance()
		out = w.bal.judged.probs
	}
	return out
}

// lostShardReport checks that a shard that lost its quorum for good is
// reported unavailable, with what it waits for (it is never repaired from
// the minority); it returns the problem, if any.
func (w *World) lostShardReport(sh *dbpb.Shard, why string) string {
	if !strings.HasPrefix(why, "quorum lost") {
		return ""
	}
	r := w.lastOut.Shards[sh.Id]
	if r != nil && r.Health == "pending" && !sh.Bootstrapped {
		return "" // never seen with a leader: still "starting", naming its dead replicas
	}
	if r == nil || r.Health != "unavailable" || !strings.Contains(strings.Join(r.Explanation, "; "), "waiting for") {
		return fmt.Sprintf("shard %d lost its quorum for good (%s) but is reported %v", sh.Id, why, r)
	}
	return ""
}

// isMemberHere: the replica is a member of a live (not deleted) shard at
// this host, in truth and in the DB.
func (w *World) isMemberHere(h *Host, sid, rid uint64) bool {
	g := w.groupFor(sid, rid)
	if g == nil || g.deleted || !g.isMember(rid) || g.addrOf(rid) != h.addr {
		return false
	}
	sh := w.st.Shards.Get(sid)
	if sh == nil {
		return false
	}
	m := db.Member(sh, rid)
	return m != nil && m.HostId == h.id
}

// checkSettled runs after every full sweep once faults stopped.
func (w *World) checkSettled() {
	if w.lastOutAt != w.now {
		return
	}
	if len(w.problems()) == 0 {
		w.converged = true
		w.convAt = w.now
		w.tracef("settled after %s", w.now.Sub(w.faultEnd))
		switch j := w.bal.judged; {
		case j.excused != "":
			w.stats.BalanceExcused++
			w.tracef("balancing excused: %s", j.excused)
		default:
			if j.replicas {
				w.stats.BalanceChecked++
			}
			if j.strict {
				w.stats.BalanceStrict++
			}
			if j.leaders {
				w.stats.LeaderChecked++
			}
		}
		return
	}
	// Repair backoff and the repair limits are deliberate: allow for them,
	// within bounds. Backoff: a minute after the latest retry time.
	// Throttling: when more shards need a repair than the repair limits allow
	// at once (drain moves included), about 25 s per queued round.
	limit := w.faultEnd.Add(w.cfg.SettleBound + MaxBackoffSlack)
	extend := func(want time.Time) {
		if want.After(limit) {
			want = limit
		}
		if want.After(w.deadline) {
			w.deadline = want
		}
	}
	var retry int64
	waiting := 0
	for _, sid := range w.st.SortedShardIDs() {
		sh := w.st.Shards.Get(sid)
		retry = max(retry, sh.RetryAfterUnixMs)
		if r := sh.Repair; r != nil && r.StepStartedUnixMs != 0 {
			// A repair or move in flight may finish its step: about 25 s,
			// as a queued round. Without it, a balancing move that the
			// judged work no longer counted could run past the deadline.
			extend(time.UnixMilli(r.StepStartedUnixMs).Add(25 * time.Second))
		}
		if ok, _ := w.repairable(sh); ok {
			if r := w.lastOut.Shards[sid]; r == nil || r.Health != "healthy" {
				waiting++
			}
			for _, m := range sh.Members {
				if h := w.st.Hosts[m.HostId]; h != nil && h.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINING {
					waiting++
				}
			}
		}
	}
	if retry != 0 {
		extend(time.UnixMilli(retry).Add(time.Minute))
	}
	// In small fleets the replacements land on a few hosts, so the
	// per-host limit may be the binding one.
	if c := int(min(w.st.Config.MaxConcurrentRepairs, w.st.Config.MaxRepairsPerHost)); waiting > c {
		extend(w.now.Add(time.Duration((waiting+c-1)/c) * 25 * time.Second))
	}
	// Balancing runs after the repairs, within its own limits and
	// cool-downs (balance.go).
	w.balanceSlack(extend)
}

// final runs the end-of-run checks.
func (w *World) final() {
	for _, sid := range w.st.SortedShardIDs() {
		if ok, _ := w.repairable(w.st.Shards.Get(sid)); !ok {
			w.stats.Unrepairable++
		}
	}
	if !w.converged {
		ps := w.problems()
		if len(ps) > 8 {
			ps = append(ps[:8], fmt.Sprintf("... and %d more", len(ps)-8))
		}
		for _, sid := range w.st.SortedShardIDs() {
			sh := w.st.Shards.Get(sid)
			if sh.Repair == nil {
				continue
			}
			line := fmt.Sprintf("context: shard %d has %s repair %d at step %s since %.1fs", sid, planner.KindName(sh.Repair.Kind), sh.Repair.Id,
				planner.StepName(sh.Repair.Step), time.UnixMilli(sh.Repair.StepStartedUnixMs).Sub(epoch0).Seconds())
			if ok, why := w.repairable(sh); !ok {
				line += " (shard unrepairable: " + why + ")"
			}
			if w.lastOut != nil && w.lastOut.Shards[sid] != nil {
				line += ": " + strings.Join(w.lastOut.Shards[sid].Explanation, "; ")
			}
			ps = append(ps, line)
		}
		ps = append(ps, w.balanceContext()...)
		w.violate("CONVERGENCE: not settled %s after the faults stopped:\n    %s", w.now.Sub(w.faultEnd), strings.Join(ps, "\n    "))
		for _, sid := range w.st.SortedShardIDs() {
			if ok, why := w.repairable(w.st.Shards.Get(sid)); !ok {
				w.tracef("unrepairable shard %d: %s", sid, why)
			}
		}
		return
	}
	// Bounded soft state after a final prune: the per-shard part runs when
	// the DB dropped something since the last one, and at least every
	// FullPruneEvery (what reports about deleted shards leave behind lives
	// that long at most).
	d := w.drummer
	d.node.Prune(w.st, w.now.Add(scheduler.FullPruneEvery))
	obs := d.node.Observed()
	for id := range obs.Memberships {
		if w.st.Shards.Get(id) == nil {
			w.violate("BOUNDS: observed membership of deleted shard %d kept", id)
		}
	}
	for k := range obs.LastRunning {
		if sh := w.st.Shards.Get(k.ShardID); sh == nil || db.Member(sh, k.ReplicaID) == nil {
			w.violate("BOUNDS: last_running of non-member %d/%d kept", k.ShardID, k.ReplicaID)
		}
	}
	for id, h := range obs.Hosts {
		if w.st.Hosts[id] == nil && w.now.Sub(h.LastHeard) > planner.UnregisteredTTL {
			w.violate("BOUNDS: observations of forgotten host %s kept", id)
		}
		if len(h.Results) > 10000 {
			w.violate("BOUNDS: %d order results kept for host %s", len(h.Results), id)
		}
	}
}
