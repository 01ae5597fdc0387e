package sim

// Balancing in the simulator: random balancing settings (changed at run
// time by the config-change fault), hosts that join and leave, and the
// balancing invariants.
//
// Safety, judged on every planner output before it is applied (the state
// the planner saw is in.State):
//
//   - A balancing move (a StartRepair of kind BALANCE) or a leader transfer
//     for balance starts only with balance_replicas (balance_leaders) on,
//     for a shard without a repair in flight, that is not unhealthy in
//     truth for longer than the grace (a member that is not a live voter at
//     its host, members not matching the replica count), and while no
//     registered host holding replicas and not in maintenance is suspect or
//     dead as the scheduler judges it (silent for suspect_timeout since it
//     was last heard or since the scheduler started), nor down in truth for
//     longer than the grace after the scheduler started. A transfer off a
//     host that may not lead (cordoned, draining, in maintenance, not heard
//     from) is not for balance: it is allowed always. A transfer never goes
//     to a replica on a host that may not lead.
//   - No thrash: a balancing move never takes a replica to the host that
//     the shard's last balancing move took a replica off within the
//     cool-down (since that move finished; the DB remembers only the last
//     one, Shard.balanced_from_host, and a failed move clears it, so a move
//     back to an earlier move's source is counted in
//     Stats.BackMovesEarlier, not judged), nor moves a replica a move or
//     repair added within the cool-down (initial replicas may move at once); a shard's leadership is not moved for balance twice
//     within the cool-down. Leader transfers are the scheduler's soft
//     state: a new scheduler (failover) starts without that memory, so the
//     leader rule is judged per epoch, and with the shortest cool-down in
//     force since the transfer (the scheduler forgets a transfer as soon as
//     it is older than the cool-down of a round).
//   - Limits: a balancing move starts only below max_balance_moves (every
//     BALANCE repair in flight counts); a repair or move starts only below
//     max_concurrent_repairs and, on its target host, below
//     max_repairs_per_host, and a balancing move only from a host whose
//     moves out and repairs in are below max_repairs_per_host. The planner
//     does not count a repair whose shard has no live quorum or leader, so
//     only repairs of shards that have had both for the grace are counted
//     here. Quorum is judged on every applied config change
//     (checkQuorumChange) for balancing moves as for repairs.
//
// Convergence: the run is settled only when, besides everything
// invariants.go requires, no balancing work is left. With balance_replicas
// on, no healthy shard has a balancing move that the planner's rules allow
// and that improves the balance: the source is the member whose host is
// furthest above its fair share (every such member, when several tie),
// among those on active, up hosts that were not added within the
// cool-down; the target is the host the placement rules would pick (active,
// up, heard, runs the app, holds no member and no member's address, in the
// region the shard's placement wants, fewest of the shard's replicas in its
// region first, then least loaded); the move improves the balance when the
// loads e and f differ by more than the tolerance and e is above the fair
// share, or f below it, by more than the tolerance. Fair shares are
// db.State.PoolOf (a region's when the shard's placement is exact). Moves
// back within the cool-down and moves of replicas still cooling wait (the
// bound is extended to the end of the cool-down). Where every active host
// can hold every shard (one region, no placement, one set of apps, all
// shards healthy and of more than one replica, since single-replica shards
// are not balanced), the check is also absolute: every active host holds its
// fair share within the tolerance (a host above it holds a shard the least
// loaded host does not, so a move always exists). With balance_leaders on
// (and no hostile host, whose forged leaderships the planner counts), no
// healthy shard outside its leader cool-down has a transfer that the
// planner's leader rule allows, counting leaders in truth; with any
// setting, no healthy shard is led from a host that may not lead while
// another voter's host may. Shards whose report explains a repair plan
// that cannot start (a stuck drain) are not judged for balance: the
// planner balances only shards without a plan. Balancing is excused while
// a host holding replicas is suspect or dead (the planner rightly waits
// for its repairs), and while repairs of shards the hostile host is a
// member of (which may never finish) fill max_concurrent_repairs or
// max_balance_moves; the hosts of such repairs are left out of the
// judgement (their repair slots may be held).
//
// The bound: balancing work extends the settle deadline like repairs do,
// by 25 s per round of moves the limits allow at once (the moves needed are
// estimated from the loads), and past the end of any cool-down that holds
// a wanted move back, up to MaxBackoffSlack.

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/planner"
)

// balTrack is the simulator's memory of balancing.
type balTrack struct {
	// movedOff: per shard, the hosts balancing moves took a replica off,
	// and when each move finished.
	movedOff map[uint64]map[string]time.Time
	// transfers: per shard, the last leader transfer for balance under
	// epoch.
	transfers map[uint64]xfer
	epoch     uint64
	// lastOff: per shard, the source of its last balancing move, as the
	// DB remembers it (Shard.balanced_from_host; a failed move clears it).
	lastOff map[uint64]hostAt
	// lastTransfer: per shard, when its leadership was last ordered to
	// move, for any reason and under any epoch.
	lastTransfer map[uint64]time.Time
	// What the last convergence judgement checked.
	judged judgement
}

func newBalTrack() balTrack {
	return balTrack{movedOff: map[uint64]map[string]time.Time{}, transfers: map[uint64]xfer{}, lastOff: map[uint64]hostAt{}, lastTransfer: map[uint64]time.Time{}}
}

type hostAt struct {
	host string
	at   time.Time
}

// xfer is a leader transfer for balance: when, and the shortest cool-down
// in force since (the scheduler forgets a transfer once it is older than
// the cool-down of a round, so a cool-down raised later does not bring it
// back).
type xfer struct {
	at   time.Time
	cool time.Duration
}

// randomBalance draws balancing settings: mostly on, thresholds and limits
// from strict to loose, cool-downs of 10 s to 2 min (0 takes the default).
func (w *World) randomBalance(c *dbpb.Config) {
	c.BalanceReplicasOff = w.chance(0.15)
	c.BalanceLeadersOff = w.chance(0.15)
	c.BalanceThresholdPct = uint32([]int{0, 5, 10, 25}[w.rng.IntN(4)])
	c.BalanceMinExcess = uint32([]int{0, 1, 2, 3}[w.rng.IntN(4)])
	c.MaxBalanceMoves = uint32([]int{0, 1, 2, 4}[w.rng.IntN(4)])
	c.MaxLeaderTransfers = uint32([]int{0, 1, 2, 5}[w.rng.IntN(4)])
	c.BalanceCooldownMs = uint64(10_000 + 1000*w.rng.IntN(111))
}

// ---------------------------------------------------------------------------
// Hosts joining and leaving.

// maxJoins bounds the hosts that join one run.
const maxJoins = 3

// joinHost starts a new, empty host that registers on its first report.
func (w *World) joinHost() {
	if w.stats.HostsJoined >= maxJoins {
		return
	}
	var regions []string
	for _, h := range w.hosts {
		if !slices.Contains(regions, h.region) {
			regions = append(regions, h.region)
		}
	}
	slices.Sort(regions)
	h := newHost(w, len(w.hosts), regions[w.rng.IntN(len(regions))])
	w.hosts = append(w.hosts, h)
	w.byAddr[h.addr] = h
	w.stats.HostsJoined++
	w.tracef("host %s (%s, region %s) joins the fleet", h.id, h.addr, h.region)
}

// leaveHost starts draining a host that then leaves the fleet
// (hostChurnTick): one host out of service at a time, and only while
// enough hosts remain for every shard.
func (w *World) leaveHost() {
	for _, o := range w.st.Hosts {
		if o.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINING || o.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINED {
			return
		}
	}
	need := 4
	for _, sh := range w.st.Shards.All() {
		if sh.Replicas >= 5 {
			need = 6
		}
	}
	var cands []*Host
	for _, h := range w.hosts {
		if dh := w.dbHost(h); h.alive && !h.permDead && !h.leaving && dh != nil && dh.Admin == dbpb.HostAdmin_HOST_ADMIN_ACTIVE {
			cands = append(cands, h)
		}
	}
	if len(cands) <= need {
		return
	}
	h := cands[w.rng.IntN(len(cands))]
	if w.setAdmin(h, dbpb.HostAdmin_HOST_ADMIN_DRAINING) {
		h.leaving = true
		w.tracef("host %s leaves the fleet: draining", h.id)
	}
}

// hostChurnTick completes the leaves: a drained host that holds nothing is
// stopped for good and removed.
func (w *World) hostChurnTick() {
	for _, h := range w.hosts {
		if !h.leaving || h.permDead {
			continue
		}
		dh := w.dbHost(h)
		if dh != nil && dh.Admin != dbpb.HostAdmin_HOST_ADMIN_DRAINED {
			if dh.Admin != dbpb.HostAdmin_HOST_ADMIN_DRAINING {
				h.leaving = false // the operator changed their mind
			}
			continue
		}
		if dh != nil && w.st.HostHasMembers(h.id) {
			continue
		}
		if h.alive {
			w.crash(h, 0, "left the fleet")
		}
		h.permDead, h.leaving = true, false
		w.hostDeadAt[h.id] = w.now
		if dh != nil && w.operator(&dbpb.Command_RemoveHost{RemoveHost: &dbpb.RemoveHost{HostId: h.id}}, false) {
			w.stats.HostsLeft++
		}
	}
}

// ---------------------------------------------------------------------------
// Safety.

// schedUp is plannerUp; schedHeard adds that the host was heard at all
// (a host that may lead must have been).
func schedHeard(in planner.Input, hostID string) bool {
	o := in.Obs.Hosts[hostID]
	return o != nil && !o.LastHeard.IsZero() && in.Now.Sub(o.LastHeard) < time.Duration(in.State.Config.SuspectTimeoutMs)*time.Millisecond
}

// repairableOn reports whether a shard with a member on hostID keeps a
// quorum of voters on other hosts the scheduler judges up.
func repairableOn(in planner.Input, hostID string) bool {
	st := in.State
	for _, sh := range st.Shards.All() {
		if db.MemberOnHost(sh, hostID) == nil {
			continue
		}
		voters, live := 0, 0
		for _, m := range sh.Members {
			if m.Role != dbpb.Role_ROLE_VOTER {
				continue
			}
			voters++
			if h := st.Hosts[m.HostId]; m.HostId != hostID && h != nil && h.Admin != dbpb.HostAdmin_HOST_ADMIN_REPLACED && plannerUp(in, m.HostId) {
				live++
			}
		}
		if voters > 0 && live >= db.Quorum(voters) {
			return true
		}
	}
	return false
}

func inMaintenance(h *dbpb.Host, now time.Time) bool {
	return h != nil && h.MaintenanceUntilUnixMs != 0 && now.Before(time.UnixMilli(h.MaintenanceUntilUnixMs))
}

// mayNotLead says why a host may not lead a shard, or "".
func mayNotLead(in planner.Input, hostID string) string {
	h := in.State.Hosts[hostID]
	switch {
	case h == nil:
		return "is not registered"
	case h.Admin != dbpb.HostAdmin_HOST_ADMIN_ACTIVE:
		return "is " + strings.ToLower(strings.TrimPrefix(h.Admin.String(), "HOST_ADMIN_"))
	case inMaintenance(h, in.Now):
		return "is in maintenance"
	case !schedHeard(in, hostID) || !plannerUp(in, hostID):
		return "was not heard from within suspect_timeout"
	}
	return ""
}

// balanceBlocker names a registered host holding replicas, not in
// maintenance, that is suspect or dead as the scheduler can judge it and
// holds a member of a shard that a repair could fix (a live quorum of
// voters on other hosts), or returns "". Shards that lost their quorum
// are not repairs to wait for: they wait for their hosts or an operator.
func (w *World) balanceBlocker(in planner.Input) string {
	st := in.State
	c := st.Config
	grace := time.Duration(c.SuspectTimeoutMs+c.ReportIntervalMs)*time.Millisecond + 2*w.cfg.Tick
	for _, id := range st.SortedHostIDs() {
		h := st.Hosts[id]
		n := st.HostMembers(id)
		if n == 0 || inMaintenance(h, in.Now) || !repairableOn(in, id) {
			continue
		}
		if !plannerUp(in, id) {
			return fmt.Sprintf("host %s, holding %d replicas, is suspect or dead in the scheduler's view", id, n)
		}
		var down time.Time
		if th := w.hostByID(id); th != nil {
			if !th.alive {
				down = th.downAt
			}
		} else if t, ok := w.hostDeadAt[id]; ok {
			down = t
		}
		if !down.IsZero() {
			if down.Before(in.ObsSince) {
				down = in.ObsSince
			}
			if in.Now.Sub(down) > grace {
				return fmt.Sprintf("host %s, holding %d replicas, has been down for %s", id, n, in.Now.Sub(down))
			}
		}
	}
	return ""
}

// surelyActive tells whether the planner surely counts a repair of the
// shard against the limits (it does not count a shard without a live
// quorum or a leader in its view): for the grace, the shard has had its
// leader and a quorum of voters running initialized on hosts that were not
// partitioned from Drummer, are registered (not replaced) and up in the
// scheduler's view, and the scheduler has been observing.
func (w *World) surelyActive(in planner.Input, sid uint64) bool {
	g := w.newestGroup(sid)
	sh := in.State.Shards.Get(sid)
	if g == nil || sh == nil || !g.formed || g.leader == 0 || w.hostileMember(sid) {
		// (The hostile host's claims can make the planner fall back on
		// the DB's membership, whose quorum may differ from the truth's.)
		return false
	}
	since := w.now.Add(-w.grace(sid))
	if g.leaderAt.After(since) || g.ccAt.After(since) || in.ObsSince.After(since) {
		return false
	}
	stable := func(id uint64) bool {
		r := w.runningOf(g, id)
		h := g.hostOf[id]
		m := db.Member(sh, id)
		if r == nil || !r.initialized || g.liveChanged[id].After(since) || h.partTill.After(since) || m == nil || m.HostId != h.id {
			return false
		}
		dh := in.State.Hosts[h.id]
		return dh != nil && dh.Admin != dbpb.HostAdmin_HOST_ADMIN_REPLACED && plannerUp(in, h.id)
	}
	if !stable(g.leader) {
		return false
	}
	// The planner judges the observed membership, or the DB's when it
	// believes no claim: a quorum of either.
	n := 0
	for _, id := range g.voterIDs {
		if stable(id) {
			n++
		}
	}
	return n >= db.Quorum(max(len(g.voters), len(sh.Members)))
}

// surelyUnhealthy says why the shard has been unhealthy in truth for
// longer than the grace (so the planner cannot believe it healthy), or "".
func (w *World) surelyUnhealthy(st *db.State, sh *dbpb.Shard) string {
	if len(sh.Members) != int(sh.Replicas) {
		return fmt.Sprintf("%d members for %d replicas", len(sh.Members), sh.Replicas)
	}
	g := w.newestGroup(sh.Id)
	if g == nil || !g.formed {
		return ""
	}
	since := w.now.Add(-w.grace(sh.Id))
	if g.ccAt.After(since) {
		return "" // the membership just changed: the scheduler may not know yet
	}
	for _, m := range sh.Members {
		h := st.Hosts[m.HostId]
		if h == nil {
			return fmt.Sprintf("the host of member %d was removed", m.ReplicaId)
		}
		if g.voters[m.ReplicaId] != h.RaftAddress {
			return fmt.Sprintf("member %d is not a voter at %s (%s)", m.ReplicaId, h.RaftAddress, g)
		}
		if t, ok := g.liveChanged[m.ReplicaId]; !w.live(g, m.ReplicaId) && ok && t.Before(since) {
			return fmt.Sprintf("member %d on %s has not been live for %s", m.ReplicaId, m.HostId, w.now.Sub(t))
		}
	}
	if len(g.voters) != len(sh.Members) {
		return fmt.Sprintf("%d voters in truth for %d members (%s)", len(g.voters), len(sh.Members), g)
	}
	return ""
}

// checkBalanceOutput judges the repairs, balancing moves and leader
// transfers of a planner output (see the top of this file).
func (w *World) checkBalanceOutput(in planner.Input, out *planner.Output) {
	st := in.State
	set := db.BalanceOf(st.Config)
	if in.Epoch != w.bal.epoch {
		w.bal.epoch = in.Epoch
		clear(w.bal.transfers)
	}
	for _, sid := range sortedKeys(w.bal.transfers) {
		x := w.bal.transfers[sid]
		if x.cool = min(x.cool, set.Cooldown); !in.Now.Before(x.at.Add(x.cool)) {
			delete(w.bal.transfers, sid)
		} else {
			w.bal.transfers[sid] = x
		}
	}
	blocker := ""
	blocked := func() string {
		if blocker == "" {
			blocker = w.balanceBlocker(in)
			if blocker == "" {
				blocker = "-"
			}
		}
		return strings.TrimPrefix(blocker, "-")
	}
	moves, active := 0, 0
	activeTo, movingOut := map[string]int{}, map[string]int{}
	for _, id := range st.RepairingShards() {
		r := st.Shards.Get(id).Repair
		if r.Kind == dbpb.RepairKind_REPAIR_KIND_BALANCE {
			moves++
		}
		if (r.Kind == dbpb.RepairKind_REPAIR_KIND_BALANCE || r.Kind == dbpb.RepairKind_REPAIR_KIND_MOVE) &&
			r.OldHostId != "" && r.Step != dbpb.RepairStep_REPAIR_STEP_ROLLBACK {
			movingOut[r.OldHostId]++
		}
		if w.surelyActive(in, id) {
			active++
			if r.NewHostId != "" {
				activeTo[r.NewHostId]++
			}
		}
	}
	perHost := int(st.Config.MaxRepairsPerHost)
	for _, d := range out.Decisions {
		sr := d.GetStartRepair()
		if sr == nil {
			continue
		}
		what := fmt.Sprintf("%s repair of shard %d", planner.KindName(sr.Kind), sr.ShardId)
		if active >= int(st.Config.MaxConcurrentRepairs) {
			w.violate("LIMITS: %s started with %d repairs in flight (max_concurrent_repairs %d)", what, active, st.Config.MaxConcurrentRepairs)
		}
		if sr.NewHostId != "" && activeTo[sr.NewHostId] >= perHost {
			w.violate("LIMITS: %s started on %s, which receives %d repairs (max_repairs_per_host %d)", what, sr.NewHostId, activeTo[sr.NewHostId], perHost)
		}
		if sr.Kind == dbpb.RepairKind_REPAIR_KIND_BALANCE {
			src := w.checkBalanceStart(in, set, sr, what, blocked, moves)
			if src != "" {
				if n := movingOut[src] + activeTo[src]; n >= perHost {
					w.violate("LIMITS: %s takes a replica off %s, which has %d moves out and repairs in (max_repairs_per_host %d)", what, src, n, perHost)
				}
				movingOut[src]++
			}
			moves++
		}
		active++
		if sr.NewHostId != "" {
			activeTo[sr.NewHostId]++
		}
	}
	for _, sid := range out.Transfers {
		w.checkTransfer(in, out, set, sid, blocked)
	}
}

// checkBalanceStart judges a balancing move about to start and returns the
// host it takes a replica off.
func (w *World) checkBalanceStart(in planner.Input, set db.BalanceSettings, sr *dbpb.StartRepair, what string,
	blocked func() string, moves int) string {
	st := in.State
	if !set.Replicas {
		w.violate("BALANCE: %s started with balance_replicas off", what)
	}
	if moves >= set.MaxMoves {
		w.violate("LIMITS: %s started with %d balancing moves in flight (max_balance_moves %d)", what, moves, set.MaxMoves)
	}
	if b := blocked(); b != "" {
		w.violate("BALANCE: %s started while %s", what, b)
	}
	sh := st.Shards.Get(sr.ShardId)
	if sh == nil {
		return ""
	}
	if sh.Repair != nil {
		w.violate("BALANCE: %s started while %s repair %d of the shard runs", what, planner.KindName(sh.Repair.Kind), sh.Repair.Id)
	}
	if why := w.surelyUnhealthy(st, sh); why != "" {
		w.violate("BALANCE: %s started while the shard is not healthy: %s", what, why)
	}
	if t, ok := w.bal.movedOff[sh.Id][sr.NewHostId]; ok && in.Now.Before(t.Add(set.Cooldown)) {
		if last := w.bal.lastOff[sh.Id]; last.host == sr.NewHostId && last.at.Equal(t) {
			w.violate("THRASH: %s moves a replica back to %s, which the shard's last balancing move took a replica off %s ago (cool-down %s)",
				what, sr.NewHostId, in.Now.Sub(t), set.Cooldown)
		} else {
			// An earlier move's source: the DB remembers only the last
			// one (Shard.balanced_from_host), so the planner cannot know.
			// Counted, not judged (a known limitation).
			w.stats.BackMovesEarlier++
			w.tracef("balance: %s moves a replica back to %s, left by an earlier balancing move %s ago", what, sr.NewHostId, in.Now.Sub(t))
		}
	}
	m := db.Member(sh, sr.OldReplicaId)
	if m == nil {
		w.violate("BALANCE: %s moves replica %d, which is not a member", what, sr.OldReplicaId)
		return ""
	}
	if added := time.UnixMilli(m.AddedUnixMs); !m.Initial && in.Now.Before(added.Add(set.Cooldown)) {
		w.violate("THRASH: %s moves replica %d, added %s ago, within the cool-down %s", what, m.ReplicaId, in.Now.Sub(added), set.Cooldown)
	}
	return m.HostId
}

// checkTransfer judges a leader transfer a round ordered.
func (w *World) checkTransfer(in planner.Input, out *planner.Output, set db.BalanceSettings, sid uint64, blocked func() string) {
	st := in.State
	var to uint64
	from := ""
	for _, ho := range out.ShardOrders[sid] {
		if t := ho.Order.GetTransferLeader(); t != nil {
			to, from = t.ToReplicaId, ho.HostID
		}
	}
	sh := st.Shards.Get(sid)
	if from == "" || sh == nil {
		w.violate("LEADER: transfer of shard %d listed without its order or shard", sid)
		return
	}
	w.bal.lastTransfer[sid] = in.Now
	what := fmt.Sprintf("transfer of shard %d's leadership from %s to replica %d", sid, from, to)
	if m := db.Member(sh, to); m == nil {
		w.violate("LEADER: %s, which is not a member", what)
	} else if why := mayNotLead(in, m.HostId); why != "" {
		w.violate("LEADER: %s on %s, which %s", what, m.HostId, why)
	}
	if mayNotLead(in, from) != "" {
		w.stats.OffTransfers++
		return // off a host that may not lead: allowed always
	}
	w.stats.BalanceTransfers++
	if !set.Leaders {
		w.violate("BALANCE: %s for balance with balance_leaders off", what)
	}
	if sh.Repair != nil {
		w.violate("BALANCE: %s for balance while %s repair %d of the shard runs", what, planner.KindName(sh.Repair.Kind), sh.Repair.Id)
	}
	if why := w.surelyUnhealthy(st, sh); why != "" {
		w.violate("BALANCE: %s for balance while the shard is not healthy: %s", what, why)
	}
	if b := blocked(); b != "" {
		w.violate("BALANCE: %s for balance while %s", what, b)
	}
	if x, ok := w.bal.transfers[sid]; ok {
		w.violate("THRASH: %s for balance %s after the previous one (cool-down %s)", what, in.Now.Sub(x.at), x.cool)
	}
	w.bal.transfers[sid] = xfer{at: in.Now, cool: set.Cooldown}
}

// noteRepairs takes, before a decision batch is applied, the repairs its
// FinishRepair decisions end.
func (w *World) noteRepairs(ds []*dbpb.Decision) map[int]*dbpb.Repair {
	out := map[int]*dbpb.Repair{}
	for i, d := range ds {
		if f := d.GetFinishRepair(); f != nil {
			if sh := w.st.Shards.Get(f.ShardId); sh != nil && sh.Repair != nil && sh.Repair.Id == f.RepairId {
				out[i] = sh.Repair
			}
		}
	}
	return out
}

// noteApplied records an applied decision for the balancing invariants.
func (w *World) noteApplied(d *dbpb.Decision, ended *dbpb.Repair) {
	switch k := d.Kind.(type) {
	case *dbpb.Decision_StartRepair:
		if k.StartRepair.Kind == dbpb.RepairKind_REPAIR_KIND_BALANCE {
			w.stats.BalanceMoves++
		}
	case *dbpb.Decision_FinishRepair:
		if ended == nil || ended.Kind != dbpb.RepairKind_REPAIR_KIND_BALANCE {
			return
		}
		if k.FinishRepair.Outcome != dbpb.RepairOutcome_REPAIR_OUTCOME_DONE {
			w.stats.BalanceFailed++
			delete(w.bal.lastOff, k.FinishRepair.ShardId)
			return
		}
		w.stats.BalanceDone++
		sid := k.FinishRepair.ShardId
		if w.bal.movedOff[sid] == nil {
			w.bal.movedOff[sid] = map[string]time.Time{}
		}
		w.bal.movedOff[sid][ended.OldHostId] = w.now
		w.bal.lastOff[sid] = hostAt{ended.OldHostId, w.now}
	}
}

// forgetShard drops the balancing memory of a deleted shard.
func (w *World) forgetShard(sid uint64) {
	delete(w.bal.movedOff, sid)
	delete(w.bal.lastOff, sid)
	delete(w.bal.transfers, sid)
	delete(w.bal.lastTransfer, sid)
}

// ---------------------------------------------------------------------------
// Convergence.

// judgement is what a convergence judgement of balancing found.
type judgement struct {
	probs  []string
	shards []uint64 // the shards of probs
	// work estimates the balancing moves still needed (with those in
	// flight); until is when the last cool-down holding a wanted move or
	// transfer back ends.
	work  int
	until time.Time
	// What was checked, and why balancing is excused, if it is.
	replicas, strict, leaders bool
	excused                   string
}

// schedView is the scheduler's view of hosts for the convergence
// judgement.
type schedView struct {
	w       *World
	in      planner.Input
	suspect time.Duration
	busy    map[string]bool // hosts whose repair slots may be held for ever
}

func (w *World) schedView() schedView {
	d := w.drummer
	in := planner.Input{Now: w.now, State: w.st, Obs: d.node.Observed(), ObsSince: d.node.Started()}
	return schedView{w: w, in: in, suspect: time.Duration(w.st.Config.SuspectTimeoutMs) * time.Millisecond, busy: map[string]bool{}}
}

// canHold tells whether a host may receive a new replica.
func (v schedView) canHold(h *dbpb.Host) bool {
	return h != nil && h.Admin == dbpb.HostAdmin_HOST_ADMIN_ACTIVE && !inMaintenance(h, v.in.Now) &&
		plannerUp(v.in, h.Id) && schedHeard(v.in, h.Id)
}

// shardRegions is the planner's desiredRegions.
func shardRegions(st *db.State, sh *dbpb.Shard) (map[string]uint32, bool) {
	if len(sh.Regions) > 0 {
		return sh.Regions, true
	}
	if len(st.Regions) == 0 {
		return nil, false
	}
	var total uint32
	for _, n := range st.Regions {
		total += n
	}
	return st.Regions, total == sh.Replicas
}

// pickTarget is the host the planner's placement rules choose for a
// replica of sh moving off src, and its load.
func (v schedView) pickTarget(sh *dbpb.Shard, src *dbpb.Replica) (string, int) {
	st := v.in.State
	w := v.w
	regions, exact := shardRegions(st, sh)
	count := map[string]int{}
	used := map[string]bool{}
	for _, m := range sh.Members {
		used[m.HostId] = true
		if h := st.Hosts[m.HostId]; h != nil {
			used["addr:"+h.RaftAddress] = true
			if m.ReplicaId != src.ReplicaId {
				count[h.Labels[db.RegionLabel]]++
			}
		}
	}
	if g := w.newestGroup(sh.Id); g != nil {
		for _, ms := range []map[uint64]string{g.voters, g.nonVoting} {
			for _, a := range ms {
				used["addr:"+a] = true
			}
		}
	}
	var want map[string]bool
	if len(regions) > 0 {
		want = map[string]bool{}
		for r, n := range regions {
			if exact && count[r] < int(n) {
				want[r] = true
			}
		}
		if len(want) == 0 {
			for r := range regions {
				want[r] = true
			}
		}
	}
	best, bs, bl := "", 0, 0
	for _, id := range st.SortedHostIDs() {
		h := st.Hosts[id]
		r := h.Labels[db.RegionLabel]
		if !v.canHold(h) || v.busy[id] || used[id] || used["addr:"+h.RaftAddress] || !slices.Contains(h.Apps, sh.App) || (want != nil && !want[r]) {
			continue
		}
		s, l := count[r], st.HostMembers(id)
		if best == "" || s < bs || (s == bs && l < bl) {
			best, bs, bl = id, s, l
		}
	}
	return best, bl
}

// judgeBalance finds the balancing work left once everything else
// settled (see the top of this file).
func (w *World) judgeBalance() judgement {
	st := w.st
	set := db.BalanceOf(st.Config)
	v := w.schedView()
	var j judgement
	for _, id := range st.SortedHostIDs() {
		if st.HostMembers(id) > 0 && !inMaintenance(st.Hosts[id], w.now) && !plannerUp(v.in, id) {
			j.excused = fmt.Sprintf("host %s holds replicas and is suspect or dead", id)
			return j
		}
	}
	// Repairs of shards the hostile host is a member of may stay in
	// flight for ever (convergence is excused for them): they hold their
	// hosts' repair slots, and all balancing once they fill a limit.
	inFlight, moves, hostile := 0, 0, 0
	for _, id := range st.RepairingShards() {
		r := st.Shards.Get(id).Repair
		inFlight++
		if r.Kind == dbpb.RepairKind_REPAIR_KIND_BALANCE {
			moves++
			j.work++
		}
		if w.hostileMember(id) {
			hostile++
			v.busy[r.NewHostId], v.busy[r.OldHostId] = true, true
		}
	}
	if hostile > 0 && (inFlight >= int(st.Config.MaxConcurrentRepairs) || moves >= set.MaxMoves) {
		j.excused = fmt.Sprintf("%d repairs of shards the hostile host is a member of are in flight, at a limit", hostile)
		return j
	}
	healthy := func(sid uint64) bool {
		r := w.lastOut.Shards[sid]
		return r != nil && r.Health == "healthy" && st.Shards.Get(sid).Repair == nil && !w.hostileMember(sid)
	}
	wait := func(t time.Time) {
		if t.After(j.until) {
			j.until = t
		}
	}
	if set.Replicas {
		j.replicas = true
		j.work += w.movesNeeded(set)
		for _, sid := range st.SortedShardIDs() {
			if healthy(sid) && !pendingPlan(w.lastOut.Shards[sid]) {
				w.judgeShardMove(v, set, st.Shards.Get(sid), &j, wait)
			}
		}
		if len(j.probs) == 0 {
			w.judgeStrict(v, set, &j)
		}
	}
	w.judgeLeaders(v, set, healthy, &j, wait)
	return j
}

// movesNeeded estimates the balancing moves needed from the loads: the
// larger of the replicas above and below the tolerance, over the pools.
func (w *World) movesNeeded(set db.BalanceSettings) int {
	st := w.st
	pools := map[string][]string{"": nil}
	for _, id := range st.SortedHostIDs() {
		if h := st.Hosts[id]; h.Admin == dbpb.HostAdmin_HOST_ADMIN_ACTIVE {
			pools[""] = append(pools[""], id)
			if r := h.Labels[db.RegionLabel]; r != "" && len(st.Regions) > 0 {
				pools[r] = append(pools[r], id)
			}
		}
	}
	need := 0
	for _, r := range sortedKeys(pools) {
		p := st.PoolOf(r)
		if p.Hosts == 0 {
			continue
		}
		share := float64(p.Members) / float64(p.Hosts)
		tol := set.Tolerance(share)
		over, under := 0, 0
		for _, id := range pools[r] {
			l := float64(st.HostMembers(id))
			over += int(math.Max(0, math.Ceil(l-share-tol)))
			under += int(math.Max(0, math.Ceil(share-tol-l)))
		}
		need = max(need, over, under)
	}
	return need
}

// judgeShardMove looks for a balancing move of a healthy shard that the
// planner's rules allow, first among the members it may move now, then
// among all (the others wait for their cool-down).
func (w *World) judgeShardMove(v schedView, set db.BalanceSettings, sh *dbpb.Shard, j *judgement, wait func(time.Time)) {
	if sh.Replicas < 2 {
		return // single-replica shards are not balanced (planner.planBalance)
	}
	st := w.st
	g := w.newestGroup(sh.Id)
	_, exact := shardRegions(st, sh)
	type cand struct {
		m                *dbpb.Replica
		share, tol, load float64
		cool             time.Time
	}
	var cands []cand
	for _, m := range sh.Members {
		h := st.Hosts[m.HostId]
		if h == nil || h.Admin != dbpb.HostAdmin_HOST_ADMIN_ACTIVE || inMaintenance(h, w.now) || !plannerUp(v.in, h.Id) || g == nil || !w.live(g, m.ReplicaId) {
			continue
		}
		if v.busy[h.Id] {
			return // its repair slots may be held: the planner may not move this shard
		}
		pool := ""
		if r := h.Labels[db.RegionLabel]; exact && r != "" {
			pool = r
		}
		p := st.PoolOf(pool)
		if p.Hosts == 0 {
			continue
		}
		share := float64(p.Members) / float64(p.Hosts)
		c := cand{m: m, share: share, tol: set.Tolerance(share), load: float64(st.HostMembers(m.HostId))}
		if !m.Initial {
			c.cool = time.UnixMilli(m.AddedUnixMs).Add(set.Cooldown)
		}
		cands = append(cands, c)
	}
	// try judges the members the planner may pick as the source (the
	// furthest above their share; all of them when several tie): a move is
	// wanted when each has one.
	try := func(now bool) (string, time.Time, bool) {
		best := math.Inf(-1)
		var top []cand
		for _, c := range cands {
			if now && w.now.Before(c.cool) {
				continue
			}
			switch x := c.load - c.share; {
			case x > best:
				best, top = x, []cand{c}
			case x == best:
				top = append(top, c)
			}
		}
		if len(top) == 0 {
			return "", time.Time{}, false
		}
		var desc []string
		var back, cool time.Time
		for _, c := range top {
			to, f := v.pickTarget(sh, c.m)
			e, ff := c.load, float64(f)
			if to == "" || !(e-ff > c.tol && (e > c.share+c.tol || ff < c.share-c.tol)) {
				return "", time.Time{}, false
			}
			if regionsCovered(st, sh, c.m, to) < regionsCovered(st, sh, nil, "") {
				return "", time.Time{}, false // no move lowers the spread (planner.startBalance)
			}
			if to == sh.BalancedFromHost {
				if t := time.UnixMilli(sh.BalancedUnixMs).Add(set.Cooldown); w.now.Before(t) {
					back = t
				}
			}
			cool = c.cool
			desc = append(desc, fmt.Sprintf("replica %d on %s (%.0f replicas, fair share %.1f ± %.1f) to %s (%d)",
				c.m.ReplicaId, c.m.HostId, e, c.share, c.tol, to, f))
		}
		if !back.IsZero() {
			cool = back
		}
		return strings.Join(desc, " or "), cool, true
	}
	if desc, back, ok := try(true); ok {
		if back.After(w.now) {
			wait(back)
			j.shards = append(j.shards, sh.Id)
			j.probs = append(j.probs, fmt.Sprintf("balance: shard %d would move %s, not back within the cool-down (until %.1fs)", sh.Id, desc, back.Sub(epoch0).Seconds()))
			return
		}
		j.shards = append(j.shards, sh.Id)
		j.probs = append(j.probs, fmt.Sprintf("balance: shard %d should move %s", sh.Id, desc))
		return
	}
	if desc, cool, ok := try(false); ok {
		wait(cool)
		j.shards = append(j.shards, sh.Id)
		j.probs = append(j.probs, fmt.Sprintf("balance: shard %d would move %s after the cool-down (until %.1fs)", sh.Id, desc, cool.Sub(epoch0).Seconds()))
	}
}

// judgeStrict checks every active host against its fair share where every
// active host can hold every shard.
func (w *World) judgeStrict(v schedView, set db.BalanceSettings, j *judgement) {
	st := w.st
	if len(st.Regions) > 0 || w.hostile != nil {
		return
	}
	region, apps := "", ""
	var pool []string
	for _, id := range st.SortedHostIDs() {
		h := st.Hosts[id]
		if h.Admin != dbpb.HostAdmin_HOST_ADMIN_ACTIVE {
			continue
		}
		a := strings.Join(h.Apps, ",")
		if len(pool) == 0 {
			region, apps = h.Labels[db.RegionLabel], a
		}
		if !v.canHold(h) || h.Labels[db.RegionLabel] != region || a != apps || !slices.Contains(h.Apps, "kv") {
			return
		}
		pool = append(pool, id)
	}
	for _, sid := range st.SortedShardIDs() {
		sh := st.Shards.Get(sid)
		if r := w.lastOut.Shards[sid]; len(sh.Regions) > 0 || sh.Repair != nil || r == nil || r.Health != "healthy" || sh.Replicas < 2 {
			return
		}
	}
	p := st.PoolOf("")
	if p.Hosts == 0 {
		return
	}
	j.strict = true
	share := float64(p.Members) / float64(p.Hosts)
	tol := set.Tolerance(share)
	for _, id := range pool {
		// The planner's comparisons, to the bit (6 - 4.8 > 1.2, 6 > 4.8 + 1.2 is not).
		if l := float64(st.HostMembers(id)); l > share+tol || l < share-tol {
			j.probs = append(j.probs, fmt.Sprintf("balance: host %s holds %.0f replicas, outside its fair share %.1f ± %.1f, though every host can hold every shard",
				id, l, share, tol))
		}
	}
}

// judgeLeaders looks for leader transfers the planner's rules want: off a
// host that may not lead (always), or for balance (balance_leaders on, no
// hostile host), counting leaders in truth.
func (w *World) judgeLeaders(v schedView, set db.BalanceSettings, healthy func(uint64) bool, j *judgement, wait func(time.Time)) {
	st := w.st
	balance := set.Leaders && w.hostile == nil
	j.leaders = balance
	members, membered := st.Members()
	// The planner's leaderShare, to the bit (rounding decides ties).
	share := func(id string) float64 {
		if members == 0 {
			return 0
		}
		return float64(st.HostMembers(id)) * float64(membered) / float64(members)
	}
	leading := map[string]int{}
	for _, g := range w.groupList {
		if g.deleted || g.leader == 0 || g != w.newestGroup(g.shard) {
			continue
		}
		if h := g.hostOf[g.leader]; h != nil {
			leading[h.id]++
		}
	}
	x := func(id string) float64 { return float64(leading[id]) - share(id) }
	for _, sid := range st.SortedShardIDs() {
		if !healthy(sid) {
			continue
		}
		sh := st.Shards.Get(sid)
		g := w.newestGroup(sid)
		lm := db.Member(sh, g.leader)
		if lm == nil {
			continue // the truth leader is not a DB member: not healthy after all
		}
		off := mayNotLead(v.in, lm.HostId) != ""
		if !off && (!balance || pendingPlan(w.lastOut.Shards[sid])) {
			continue
		}
		var to *dbpb.Replica
		xt := 0.0
		for _, m := range sh.Members {
			if m.ReplicaId == lm.ReplicaId || !w.live(g, m.ReplicaId) || mayNotLead(v.in, m.HostId) != "" {
				continue
			}
			if xm := x(m.HostId); to == nil || xm < xt {
				to, xt = m, xm
			}
		}
		if to == nil {
			continue
		}
		xl := x(lm.HostId)
		tol := set.LeaderTolerance(share(lm.HostId))
		if !off && !(xl-xt > max(tol, 1) && (xl > tol || xt < -tol)) {
			continue
		}
		why := fmt.Sprintf("%s leads %d (%.1f from its share), %s %.1f from its share, tolerance %.1f", lm.HostId, leading[lm.HostId], xl, to.HostId, xt, tol)
		if off {
			why = lm.HostId + " may not lead"
		}
		if t, ok := w.bal.lastTransfer[sid]; ok && !off && w.now.Before(t.Add(set.Cooldown)) {
			wait(t.Add(set.Cooldown))
			j.shards = append(j.shards, sid)
			j.probs = append(j.probs, fmt.Sprintf("leaders: shard %d would move its leadership to replica %d after the cool-down: %s", sid, to.ReplicaId, why))
			continue
		}
		j.shards = append(j.shards, sid)
		j.probs = append(j.probs, fmt.Sprintf("leaders: shard %d should move its leadership from replica %d to %d: %s", sid, lm.ReplicaId, to.ReplicaId, why))
	}
}

// balanceSlack extends the settle deadline for the balancing work left
// (checkSettled).
func (w *World) balanceSlack(extend func(time.Time)) {
	j := w.judgeBalance()
	if j.excused != "" {
		return
	}
	c := w.st.Config
	set := db.BalanceOf(c)
	if n := min(set.MaxMoves, int(c.MaxConcurrentRepairs), int(c.MaxRepairsPerHost)); j.work > 0 && n > 0 {
		extend(w.now.Add(time.Duration((j.work+n-1)/n) * 25 * time.Second))
	}
	if !j.until.IsZero() {
		extend(j.until.Add(30 * time.Second))
	}
}

// balanceContext describes, for a failure report, what the planner said
// of the shards with balancing work left and the hosts' loads.
func (w *World) balanceContext() []string {
	j := w.bal.judged
	if len(j.shards) == 0 {
		return nil
	}
	var out []string
	obs := w.drummer.node.Observed()
	var hosts []string
	for _, id := range w.st.SortedHostIDs() {
		lead := -1
		if o := obs.Hosts[id]; o != nil {
			lead = o.Leading
		}
		hosts = append(hosts, fmt.Sprintf("%s(%s %d replicas, leads %d)", id, w.st.Hosts[id].Admin, w.st.HostMembers(id), lead))
	}
	out = append(out, "context: hosts "+strings.Join(hosts, " "))
	for _, sid := range slices.Compact(slices.Clone(j.shards))[:min(3, len(j.shards))] {
		if r := w.lastOut.Shards[sid]; r != nil {
			out = append(out, fmt.Sprintf("context: shard %d (%s): %s", sid, r.Health, strings.Join(r.Explanation, "; ")))
		}
	}
	return out
}

// pendingPlan tells whether a healthy shard's report explains a repair
// plan that could not start (a drain that has no eligible host, say): the
// planner balances only shards without one (their leadership still
// leaves a host that may not lead; balancing's own explanations do not
// count).
func pendingPlan(r *planner.ShardReport) bool {
	for _, e := range r.Explanation {
		if !strings.HasPrefix(e, "balance:") {
			return true
		}
	}
	return false
}

// regionsCovered counts the regions of sh's members' hosts, with member out
// replaced by one on host in (out nil: as they are).
func regionsCovered(st *db.State, sh *dbpb.Shard, out *dbpb.Replica, in string) int {
	regions := map[string]bool{}
	for _, m := range sh.Members {
		if h := st.Hosts[m.HostId]; h != nil && (out == nil || m.ReplicaId != out.ReplicaId) {
			regions[h.Labels[db.RegionLabel]] = true
		}
	}
	if h := st.Hosts[in]; h != nil {
		regions[h.Labels[db.RegionLabel]] = true
	}
	return len(regions)
}
