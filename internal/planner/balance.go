package planner

import (
	"fmt"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

// Balancing moves replicas from hosts above their fair share to hosts
// below it, and leadership to the hosts that lead less than their share of
// the shards they hold. It only ever touches healthy shards, runs after
// every repair of the round (a repair waiting for a slot holds it back)
// and not while a host that holds replicas is suspect or dead.
//
// A fair share is the mean over the active hosts the shard could use (its
// region's when its placement is exact, else all of them), and no move
// lowers the number of regions the shard covers: the DB keeps
// those counts (db.State.PoolOf), so judging a shard is O(its members).
// A move must improve the balance by more than the tolerance
// (db.BalanceSettings.Tolerance): it goes from a host with e replicas to
// one with f only if e-f exceeds the tolerance and either e is above the
// share by more than the tolerance or f below it by more. Each such move
// lowers the sum of squared loads, so balancing converges; a moved
// replica is not moved again within the cool-down, nor moved back to the
// host it left (Shard.balanced_from_host), and a shard's leadership is not
// moved again within the cool-down (Input.LeaderMoves).

// balancePriority sorts balancing moves after every repair and drain.
const balancePriority = 1_000_000

// transferSettle is how many report intervals leader balancing waits after
// a leader transfer: the order reaches the leader's host with its next
// report, and the new counts come with the next reports of both hosts.
const transferSettle = 3

// placementSettle is how many report intervals balancing waits after the
// last placement of a new shard. Placement puts every new replica on the
// least loaded hosts, so while a launch places shards a few a round the
// hosts' counts differ only by what is still to come: moves judged on them
// would be undone by the next placements (at 10,000 hosts, balancing during
// a launch started thousands of moves that slowed the launch tenfold).
const placementSettle = 2

// balancer is the per-round state of balancing.
type balancer struct {
	set db.BalanceSettings
	// Replicas leaving each host in moves in flight (still counted in the
	// DB's member count until the move removes them).
	movingOut map[string]int
	moves     int // balancing moves in flight
	// down is the first host holding replicas that is suspect or dead, and
	// how many there are, counting only hosts with a repairable shard
	// (repairableOn): balancing waits for their repairs.
	down     string
	downN    int
	leadMove map[string]int // leadership moved this round, per host
	budget   int            // leader transfers still allowed this round
	// settling: a leader transfer was ordered so recently that the
	// reported leader counts may not show it yet.
	settling bool
	// placing: new shards were placed within placementSettle report
	// intervals.
	placing bool
	why     string // why a wanted move was held back this round
}

func (p *planner) initBalance() {
	b := &p.bal
	b.set = db.BalanceOf(p.cfg)
	b.movingOut = map[string]int{}
	b.leadMove = map[string]int{}
	b.budget = p.in.TransferBudget
	settle := transferSettle * p.ms(p.cfg.ReportIntervalMs)
	for _, t := range p.in.LeaderMoves {
		if p.now.Sub(t) < settle {
			b.settling = true
			break
		}
	}
	b.placing = !p.in.PlacedAt.IsZero() && p.now.Sub(p.in.PlacedAt) < placementSettle*p.ms(p.cfg.ReportIntervalMs)
	for _, id := range p.in.Down {
		h := p.st.Hosts[id]
		if h == nil || p.st.HostMembers(id) == 0 || p.inMaintenance(h) {
			continue
		}
		if l, _ := p.globalLiveness(id); l == Up || !p.repairableOn(id) {
			continue
		}
		if b.downN++; b.down == "" {
			b.down = id
		}
	}
}

// repairableOn reports whether a down host holds a member of a shard that
// still has a live quorum of voters, so a repair of it can commit. Balancing
// waits for those repairs; it does not wait for shards that lost their
// quorum (those wait for their hosts to return, or for an operator), or
// one such shard would hold every move back for good. It stops at the
// first repairable shard, so a host with repairs to come costs O(1).
func (p *planner) repairableOn(hostID string) bool {
	for sid := range p.st.ShardsOnHost(hostID) {
		sh := p.st.Shards.Get(sid)
		if sh == nil {
			continue
		}
		voters, live := 0, 0
		for _, m := range sh.Members {
			if m.Role != dbpb.Role_ROLE_VOTER {
				continue
			}
			voters++
			if m.HostId == hostID {
				continue
			}
			if l, _ := p.globalLiveness(m.HostId); l == Up {
				live++
			}
		}
		if voters > 0 && live >= db.Quorum(voters) {
			return true
		}
	}
	return false
}

// countMove notes a repair in flight for the balance (newPlanner).
func (b *balancer) countMove(r *dbpb.Repair) {
	if r.Kind != dbpb.RepairKind_REPAIR_KIND_BALANCE && r.Kind != dbpb.RepairKind_REPAIR_KIND_MOVE {
		return
	}
	if r.Kind == dbpb.RepairKind_REPAIR_KIND_BALANCE {
		b.moves++
	}
	if r.OldHostId != "" && r.Step != dbpb.RepairStep_REPAIR_STEP_ROLLBACK {
		b.movingOut[r.OldHostId]++
	}
}

// effLoad is a host's replica count once the moves in flight and those
// planned this round are done.
func (p *planner) effLoad(id string) int { return p.load(id) - p.bal.movingOut[id] }

// share is the fair share of replicas of a host in the pool of region
// ("" for every active host), and the tolerance around it.
func (p *planner) share(region string) (share, tol float64, ok bool) {
	pool := p.st.PoolOf(region)
	if pool.Hosts == 0 {
		return 0, 0, false
	}
	share = float64(pool.Members) / float64(pool.Hosts)
	return share, p.bal.set.Tolerance(share), true
}

// poolRegion is the pool a member of sh is judged in: its region's when
// the shard's placement per region is exact, else every active host.
func (p *planner) poolRegion(sh *dbpb.Shard, m *member) string {
	if _, exact := p.desiredRegions(sh); exact && m.host != nil {
		return m.host.Labels[RegionLabel]
	}
	return ""
}

// spread is how many regions the shard's members cover, with the member
// out replaced by a member on host in (in == "": as it is).
func (p *planner) spread(v *shardView, out *member, in string) int {
	regions := map[string]bool{}
	for _, m := range v.members {
		if m.host != nil && (in == "" || m != out) {
			regions[m.host.Labels[RegionLabel]] = true
		}
	}
	if h := p.st.Hosts[in]; h != nil {
		regions[h.Labels[RegionLabel]] = true
	}
	return len(regions)
}

// movable tells whether balancing may take this member off its host.
func (p *planner) movable(v *shardView, m *member) bool {
	if !m.live() || m.host == nil || m.host.Admin != dbpb.HostAdmin_HOST_ADMIN_ACTIVE || p.inMaintenance(m.host) {
		return false
	}
	if l, _ := p.globalLiveness(m.rec.HostId); l != Up {
		return false
	}
	// A replica that a move or repair added recently stays put (the
	// initial replicas of a shard did not move: they may go at once).
	return m.rec.Initial || !p.now.Before(p.unixMs(m.rec.AddedUnixMs).Add(p.bal.set.Cooldown))
}

// planBalance returns a balancing move for a healthy shard, or nil. The
// target host is chosen when the move starts (startBalance), after the
// round's repairs took theirs.
func (p *planner) planBalance(v *shardView) *repairPlan {
	sh := v.sh
	switch {
	case v.distrusted:
		return nil // no membership claim believed: nothing is planned from it
	case sh.RetryAfterUnixMs != 0 && p.now.Before(p.unixMs(sh.RetryAfterUnixMs)):
		return nil // backing off after a failure
	case sh.BalancedFromHost == "" && sh.BalancedUnixMs != 0 && p.now.Before(p.unixMs(sh.BalancedUnixMs).Add(p.bal.set.Cooldown)):
		return nil // its last balancing move failed: not again within the cool-down
	}
	if !p.bal.set.Replicas || v.sh.Replicas < 2 {
		// A single-replica shard is not balanced: the last step of its
		// move (the old voter's removal) can be confirmed only by the new
		// member's host (trust.go waives the two-host rule for shards of
		// one replica), so one lying host would make the planner drop the
		// only other copy. Repairs and drains must take that risk;
		// balancing, being optional, does not.
		return nil
	}
	var src *member
	excess := 0.0
	for _, m := range v.members {
		if !p.movable(v, m) {
			continue
		}
		share, tol, ok := p.share(p.poolRegion(v.sh, m))
		if !ok {
			continue
		}
		e := float64(p.effLoad(m.rec.HostId)) - share
		// Cheap test first: a move needs this host above its share, or some
		// host below it, by more than the tolerance.
		if e <= tol && float64(p.minLoad()) >= share-tol {
			continue
		}
		if src == nil || e > excess {
			src, excess = m, e
		}
	}
	if src == nil {
		return nil
	}
	v.priority += balancePriority
	return &repairPlan{kind: dbpb.RepairKind_REPAIR_KIND_BALANCE, old: src, place: true}
}

// minLoad is the smallest member count of any registered host (a lower
// bound for the hosts a move could go to); O(log hosts).
func (p *planner) minLoad() int {
	least := 0
	first := true
	p.loadIndex().Ascend(func(_ string, load int) bool {
		least, first = load, false
		return false
	})
	if first {
		return 0
	}
	return least
}

// startBalance starts a planned balancing move if it still improves the
// balance by more than the tolerance with the loads of this round so far.
// When none starts, the shard's leadership is judged instead (it is judged
// only for shards without a plan, and a plan that cannot start, e.g. for
// lack of an eligible target, would otherwise hold it back for ever).
func (p *planner) startBalance(v *shardView, r *repairPlan) bool {
	if p.tryBalance(v, r) {
		return true
	}
	v.plan = nil
	p.balanceLeader(v)
	return false
}

func (p *planner) tryBalance(v *shardView, r *repairPlan) bool {
	b := &p.bal
	src := r.old
	switch {
	case b.moves >= b.set.MaxMoves:
		b.hold(v, fmt.Sprintf("%d balancing moves in flight, the limit (max_balance_moves)", b.moves))
		return false
	case b.downN > 0:
		b.hold(v, fmt.Sprintf("%d hosts holding replicas of shards with a live quorum are suspect or dead (%s); repairs first", b.downN, p.addr(b.down)))
		return false
	case p.placing():
		b.hold(v, "new shards are being placed (on the least loaded hosts); balancing waits until placements stop")
		return false
	case p.deferred > 0:
		b.hold(v, fmt.Sprintf("%d repairs are waiting for a slot; repairs first", p.deferred))
		return false
	case b.movingOut[src.rec.HostId]+p.inFlightPerHost[src.rec.HostId] >= int(p.cfg.MaxRepairsPerHost):
		return false // the source host is busy; another member may move
	}
	n := len(v.explain)
	host := p.pickHostIn(v, src, p.poolRegion(v.sh, src))
	if host != "" && p.spread(v, src, host) < p.spread(v, nil, "") {
		// Balancing never undoes placement's spread over regions (a lone
		// host in a region keeps a replica of every shard it was given).
		host = ""
	}
	v.explain = v.explain[:n] // no eligible host is no news for a healthy shard
	if host == "" {
		return false
	}
	if host == v.sh.BalancedFromHost && p.now.Before(p.unixMs(v.sh.BalancedUnixMs).Add(b.set.Cooldown)) {
		v.say("balance: not moving a replica back to %s within the cool-down", p.addr(host))
		return false
	}
	share, tol, _ := p.share(p.poolRegion(v.sh, src))
	e, f := float64(p.effLoad(src.rec.HostId)), float64(p.effLoad(host))
	if !(e-f > tol && (e > share+tol || f < share-tol)) {
		return false
	}
	reason := fmt.Sprintf("balance: %s holds %.0f replicas, %s holds %.0f (fair share %.1f, tolerance %.1f)",
		p.addr(src.rec.HostId), e, p.addr(host), f, share, tol)
	if !p.startRepair(v, dbpb.RepairKind_REPAIR_KIND_BALANCE, host, src.rec.ReplicaId, reason) {
		return false
	}
	b.moves++
	b.movingOut[src.rec.HostId]++
	return true
}

// placing tells whether new shards were placed within placementSettle
// report intervals, this round included.
func (p *planner) placing() bool { return p.bal.placing || p.placements > 0 }

func (b *balancer) hold(v *shardView, why string) {
	b.why = why
	v.say("balance: a replica would move; waiting: %s", why)
}

// leaderShare is a host's fair share of leaders: its share of the
// replicas times shards per replica.
func (p *planner) leaderShare(id string) float64 {
	members, membered := p.st.Members()
	if members == 0 {
		return 0
	}
	return float64(p.effLoad(id)) * float64(membered) / float64(members)
}

// leading is how many shards a host leads, as reported, with this round's
// transfers.
func (p *planner) leading(id string) int {
	n := p.bal.leadMove[id]
	if o := p.obs.Hosts[id]; o != nil {
		n += o.Leading
	}
	return n
}

// leaderHost tells whether a host may lead: active, up, heard from, not in
// maintenance.
func (p *planner) leaderHost(id string) bool {
	h := p.st.Hosts[id]
	if h == nil || h.Admin != dbpb.HostAdmin_HOST_ADMIN_ACTIVE || p.inMaintenance(h) || !p.heard(id) {
		return false
	}
	l, _ := p.globalLiveness(id)
	return l == Up
}

// balanceLeader moves a healthy shard's leadership off a host that may
// not lead (cordoned, draining, in maintenance) or, with leader balancing
// on, to the member whose host leads the least below its share.
func (p *planner) balanceLeader(v *shardView) {
	b := &p.bal
	l := v.byID[v.leader]
	if l == nil || !l.live() || b.budget <= 0 || transferring(v) {
		return
	}
	// Leaders leave a host that may not lead first, before its replicas
	// move (drain); otherwise one change at a time per shard.
	off := !p.leaderHost(l.rec.HostId)
	if !off && (v.plan != nil || !b.set.Leaders || p.cooling(v.sh.Id) || b.downN > 0 || b.settling || p.placing()) {
		// Leaders are not balanced while a host holding replicas is
		// suspect or dead (they would move again when it returns), while
		// new shards are placed (their elections are still to come), nor
		// until the reports show the last transfers (judged on stale
		// counts, the rounds in between would all move leadership off the
		// same hosts, overshoot, and swing back after the cool-down).
		return
	}
	xl := float64(p.leading(l.rec.HostId)) - p.leaderShare(l.rec.HostId)
	var to *member
	var xt float64
	for _, id := range v.voters {
		m := v.byID[id]
		if m == nil || id == v.leader || !m.live() || !p.leaderHost(m.rec.HostId) {
			continue
		}
		x := float64(p.leading(m.rec.HostId)) - p.leaderShare(m.rec.HostId)
		if to == nil || x < xt {
			to, xt = m, x
		}
	}
	if to == nil {
		if off {
			v.say("leader on %s, which may not lead; no other live voter on an active host", p.addr(l.rec.HostId))
		}
		return
	}
	tol := b.set.LeaderTolerance(p.leaderShare(l.rec.HostId))
	why := fmt.Sprintf("%s may not lead", p.addr(l.rec.HostId))
	if !off {
		if !(xl-xt > max(tol, 1) && (xl > tol || xt < -tol)) {
			return
		}
		why = fmt.Sprintf("%s leads %d shards, %.1f above its share; %s leads %d, %.1f from its share",
			p.addr(l.rec.HostId), p.leading(l.rec.HostId), xl, p.addr(to.rec.HostId), p.leading(to.rec.HostId), xt)
	}
	o := p.newOrder(transferOrderID(p.in.Epoch, v.sh.Id, v.leader, to.rec.ReplicaId))
	o.Kind = &drummerpb.Order_TransferLeader{TransferLeader: &drummerpb.TransferLeaderOrder{ShardId: v.sh.Id, ToReplicaId: to.rec.ReplicaId}}
	v.orders = append(v.orders, HostOrder{HostID: l.rec.HostId, Order: o})
	v.say("moving leadership from replica %d to %d: %s", v.leader, to.rec.ReplicaId, why)
	b.budget--
	b.leadMove[l.rec.HostId]--
	b.leadMove[to.rec.HostId]++
	p.out.Transfers = append(p.out.Transfers, v.sh.Id)
}

// cooling tells whether the shard's leadership moved within the cool-down.
func (p *planner) cooling(shardID uint64) bool {
	t, ok := p.in.LeaderMoves[shardID]
	return ok && p.now.Before(t.Add(p.bal.set.Cooldown))
}

// BalanceWhy is the reason a wanted balancing move was held back in the
// round that produced out, or "".
func (out *Output) BalanceWhy() string { return out.balanceWhy }

// transferring tells whether the round already moves the shard's
// leadership (balanceLeader may be called twice for a shard: before its
// balancing plan and when the plan does not start).
func transferring(v *shardView) bool {
	for _, ho := range v.orders {
		if ho.Order.GetTransferLeader() != nil {
			return true
		}
	}
	return false
}
