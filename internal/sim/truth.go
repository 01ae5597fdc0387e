package sim

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/planner"
)

type key = planner.ReplicaKey

// group is the true Raft state of one incarnation of a shard. A shard ID
// deleted and created again is a new group; replica IDs of the incarnations
// never overlap (the DB's replica ID floor), so a (shard, replica) pair
// belongs to the newest incarnation whose base is not above the replica ID.
type group struct {
	shard    uint64
	base     uint64
	replicas uint32
	deleted  bool // deleted from the DB: its data may be removed

	formed    bool // some replica bootstrapped with the initial membership
	initial   map[uint64]string
	voters    map[uint64]string
	nonVoting map[uint64]string
	removed   map[uint64]bool
	ccid      uint64
	logIndex  uint64
	leader    uint64
	term      uint64
	electAt   time.Time
	// leaderAt is when the group last got a leader after having none, ccAt
	// when its membership last changed (the invariants allow the
	// scheduler the grace to notice).
	leaderAt, ccAt time.Time

	// everData: the replica had initialized data at some point; starting it
	// again with an empty log would make it forget its votes and log.
	everData map[uint64]bool
	// live is the last computed liveness of each member (runs, initialized,
	// on an alive host), liveChanged when it last flipped.
	live        map[uint64]bool
	liveChanged map[uint64]time.Time
	// noQuorumSince is when the group last lost a live quorum (zero while
	// it has one).
	noQuorumSince time.Time
	// The last leader and until when followers still believe in it (they
	// notice a dead leader only after an election timeout).
	staleLeader, staleTerm uint64
	staleTill              time.Time
	// Sorted member IDs, the host at each member's address, and the
	// membership as reported, refreshed on every membership change.
	voterIDs, nonVotingIDs []uint64
	hostOf                 map[uint64]*Host
	ms                     *drummerpb.Membership
}

// refresh recomputes the cached member data after a membership change.
func (w *World) refresh(g *group) {
	g.voterIDs = sortedKeys(g.voters)
	g.nonVotingIDs = sortedKeys(g.nonVoting)
	g.hostOf = make(map[uint64]*Host, len(g.voters)+len(g.nonVoting))
	for _, m := range []map[uint64]string{g.voters, g.nonVoting} {
		for id, a := range m {
			g.hostOf[id] = w.byAddr[a]
		}
	}
	g.ms = nil
}

func newGroup(shard, base uint64, replicas uint32) *group {
	return &group{
		shard: shard, base: base, replicas: replicas,
		voters: map[uint64]string{}, nonVoting: map[uint64]string{}, removed: map[uint64]bool{},
		everData: map[uint64]bool{}, live: map[uint64]bool{}, liveChanged: map[uint64]time.Time{},
	}
}

func (g *group) isMember(id uint64) bool {
	_, v := g.voters[id]
	_, n := g.nonVoting[id]
	return v || n
}

func (g *group) addrOf(id uint64) string {
	if a, ok := g.voters[id]; ok {
		return a
	}
	return g.nonVoting[id]
}

// membership returns the membership as dragonboat reports it (shared and
// never modified: a new one is built after each change).
func (g *group) membership() *drummerpb.Membership {
	if g.ms != nil && g.ms.ConfigChangeId == g.ccid {
		return g.ms
	}
	m := &drummerpb.Membership{
		ConfigChangeId: g.ccid,
		Voters:         maps.Clone(g.voters),
		NonVoting:      maps.Clone(g.nonVoting),
	}
	if len(m.NonVoting) == 0 {
		m.NonVoting = nil
	}
	for _, id := range sortedKeys(g.removed) {
		m.Removed = append(m.Removed, id)
	}
	g.ms = m
	return m
}

func (g *group) String() string {
	return fmt.Sprintf("shard %d{voters %v non_voting %v ccid %d leader %d}", g.shard, sortedKeys(g.voters), sortedKeys(g.nonVoting), g.ccid, g.leader)
}

// leaderView is the leader and term a member replica reports: the
// current leader, or for a moment after its loss the previous one.
func (w *World) leaderView(g *group) (uint64, uint64) {
	if g.leader == 0 && w.now.Before(g.staleTill) {
		return g.staleLeader, g.staleTerm
	}
	return g.leader, g.term
}

// groupFor finds the incarnation a replica belongs to.
func (w *World) groupFor(shard, replica uint64) *group {
	gs := w.groups[shard]
	for i := len(gs) - 1; i >= 0; i-- {
		if replica >= gs[i].base {
			return gs[i]
		}
	}
	return nil
}

// running is a replica loaded on a host.
type running struct {
	g         *group
	id        uint64
	nonVoting bool // started with IsNonVoting
	// initialized: the replica knows its membership (restarted from its
	// log, bootstrapped, or contacted by a leader after joining).
	initialized bool
	caughtUp    bool
	catchUpAt   time.Time
	lastCCID    uint64
	lastVoter   bool
}

// diskRec is a replica's bootstrap record and log on a host's disk.
type diskRec struct {
	nonVoting bool
	// removedSelf: the log holds the replica's own removal (it applied it
	// while running): restarted, it replays it and stops again.
	removedSelf bool
}

// Host is a simulated nodehost with its agent.
type Host struct {
	slot      int
	gen       int
	id        string
	addr, api string
	region    string
	apps      []string
	alive     bool
	permDead  bool
	downAt    time.Time
	restartAt time.Time // crashed: when it comes back (zero: never)
	wipe      bool      // comes back with an empty disk and a new identity
	leaving   bool      // being drained to leave the fleet (balance.go)
	partTill  time.Time // partitioned from Drummer until then
	slowTill  time.Time

	disk     map[key]*diskRec
	removed  map[key]bool
	running  map[uint64]*running
	assigned map[uint64]*drummerpb.StartReplicaOrder // the agent's persisted assignments

	// Agent soft state (lost on crash).
	session    uint64
	seq        uint64
	nextReport time.Time
	nextDisk   time.Time
	queue      []*queued
	seen       map[string]drummerpb.OrderOutcome
	results    []*drummerpb.OrderResult
	epochSeen  uint64
}

type queued struct {
	o         *drummerpb.Order
	at        time.Time
	decidedAt time.Time
}

func newHost(w *World, slot int, region string) *Host {
	h := &Host{
		slot:   slot,
		addr:   fmt.Sprintf("10.0.0.%d:7100", slot+1),
		api:    fmt.Sprintf("10.0.0.%d:7200", slot+1),
		region: region,
		apps:   []string{"kv"},
		alive:  true,
	}
	h.id = hostID(slot, 0)
	h.disk = map[key]*diskRec{}
	h.removed = map[key]bool{}
	h.running = map[uint64]*running{}
	h.assigned = map[uint64]*drummerpb.StartReplicaOrder{}
	h.bootAgent(w)
	return h
}

func hostID(slot, gen int) string { return fmt.Sprintf("nh%d-%d", slot+1, gen) }

// bootAgent starts the agent process: new session, empty soft state.
func (h *Host) bootAgent(w *World) {
	h.session = w.rng.Uint64() | 1
	h.seq = 0
	h.nextReport = w.now.Add(w.dur(50*time.Millisecond, time.Second))
	h.nextDisk = h.nextReport
	h.queue = nil
	h.seen = map[string]drummerpb.OrderOutcome{}
	h.results = nil
	h.epochSeen = 0
}

func (h *Host) partitioned(now time.Time) bool { return now.Before(h.partTill) }

// live reports whether replica id of g runs on an alive host at the
// member's address. A replica that joined and has no log yet counts: it
// cannot campaign, but it grants votes and acknowledges the leader.
func (w *World) live(g *group, id uint64) bool {
	return w.runningOf(g, id) != nil
}

func (w *World) runningOf(g *group, id uint64) *running {
	h := g.hostOf[id]
	if h == nil || !h.alive {
		return nil
	}
	if r := h.running[g.shard]; r != nil && r.g == g && r.id == id {
		return r
	}
	return nil
}

func (w *World) liveVoters(g *group, voters map[uint64]string) int {
	n := 0
	for id := range voters {
		if w.live(g, id) {
			n++
		}
	}
	return n
}

// truthTick advances Raft in every group: liveness bookkeeping, elections,
// log growth, initialization and catch-up of new replicas.
func (w *World) truthTick() {
	for _, g := range w.groupList {
		w.tickGroup(g)
	}
}

func (w *World) noteLive(g *group, id uint64, l bool) {
	if old, ok := g.live[id]; !ok || old != l {
		g.live[id] = l
		g.liveChanged[id] = w.now
	}
}

func (w *World) tickGroup(g *group) {
	if !g.formed {
		return
	}
	// Joining replicas learn the membership from the leader; restarted
	// ones know it from their log.
	live := 0
	leaderLive := false
	var cands []uint64
	for _, ids := range [2][]uint64{g.voterIDs, g.nonVotingIDs} {
		for _, id := range ids {
			r := w.runningOf(g, id)
			if r != nil && !r.initialized && g.leader != 0 {
				r.initialized = true
				g.everData[id] = true
			}
			w.noteLive(g, id, r != nil)
		}
	}
	for _, id := range g.voterIDs {
		if r := w.runningOf(g, id); r != nil {
			live++
			if id == g.leader {
				leaderLive = true
			}
			if r.initialized {
				cands = append(cands, id)
			}
		}
	}
	q := db.Quorum(len(g.voters))
	has := len(g.voters) > 0 && live >= q
	if g.leader != 0 && (!has || !leaderLive) {
		w.tracef("truth: shard %d lost leader %d (live voters %d/%d)", g.shard, g.leader, live, len(g.voters))
		g.staleLeader, g.staleTerm = g.leader, g.term
		g.staleTill = w.now.Add(w.dur(0, 2*time.Second))
		g.leader = 0
		g.electAt = time.Time{}
	}
	if !has {
		if g.noQuorumSince.IsZero() {
			g.noQuorumSince = w.now
		}
		g.electAt = time.Time{}
	} else {
		g.noQuorumSince = time.Time{}
		if g.leader == 0 {
			if g.electAt.IsZero() {
				g.electAt = w.now.Add(w.dur(200*time.Millisecond, 1500*time.Millisecond))
			} else if !w.now.Before(g.electAt) {
				// Only a replica with a log campaigns.
				if len(cands) > 0 {
					g.leader = cands[w.rng.IntN(len(cands))]
					g.leaderAt = w.now
					g.term++
					g.electAt = time.Time{}
					w.tracef("truth: shard %d elected leader %d term %d", g.shard, g.leader, g.term)
				}
			}
		}
	}
	if g.leader != 0 {
		g.logIndex += uint64(w.rng.IntN(3))
	}
	// Catch-up of non-voting replicas.
	for _, id := range g.nonVotingIDs {
		r := w.runningOf(g, id)
		if r == nil || !r.initialized || g.leader == 0 {
			if r != nil && g.leader == 0 {
				r.catchUpAt = time.Time{}
			}
			continue
		}
		if r.caughtUp {
			continue
		}
		if r.catchUpAt.IsZero() {
			d := w.dur(500*time.Millisecond, 6*time.Second)
			if w.chance(0.05) {
				d = w.dur(10*time.Second, 40*time.Second)
			}
			r.catchUpAt = w.now.Add(d)
		} else if !w.now.Before(r.catchUpAt) {
			r.caughtUp = true
		}
	}
}

// ---------------------------------------------------------------------------
// Host lifecycle.

// crash stops a host; its disk survives.
func (w *World) crash(h *Host, down time.Duration, why string) {
	h.alive = false
	h.downAt = w.now
	h.running = map[uint64]*running{}
	h.queue = nil
	if down > 0 {
		h.restartAt = w.now.Add(down)
	} else {
		h.restartAt = time.Time{}
	}
	w.tracef("host %s (%s) down: %s, back in %s", h.id, h.addr, why, down)
}

// restart brings a crashed host back. The agent restarts the replicas it
// was assigned, from their data (like agent.executor.restore).
func (w *World) restart(h *Host) {
	if h.wipe {
		old := h.id
		h.gen++
		h.id = hostID(h.slot, h.gen)
		h.disk = map[key]*diskRec{}
		h.removed = map[key]bool{}
		h.assigned = map[uint64]*drummerpb.StartReplicaOrder{}
		h.wipe = false
		w.hostDeadAt[old] = w.now
		w.tracef("host %s back with a wiped disk as %s", old, h.id)
	} else {
		w.tracef("host %s back", h.id)
	}
	h.alive = true
	h.restartAt = time.Time{}
	h.bootAgent(w)
	for _, sid := range sortedKeys(h.assigned) {
		so := h.assigned[sid]
		out, msg := w.start(h, so, true)
		w.tracef("  restore %s on %s: %s %s", orderStr(&drummerpb.Order{Kind: &drummerpb.Order_Start{Start: so}}), h.id, out, msg)
	}
}

func (w *World) lifecycle() {
	for _, h := range w.hosts {
		if !h.alive && !h.permDead && !h.restartAt.IsZero() && !w.now.Before(h.restartAt) {
			w.restart(h)
		}
	}
}

// ---------------------------------------------------------------------------
// Order execution, with dragonboat's rules.

var (
	done     = drummerpb.OrderOutcome_ORDER_OUTCOME_DONE
	failed   = drummerpb.OrderOutcome_ORDER_OUTCOME_FAILED
	rejected = drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED
)

func (w *World) execOrders() {
	for _, h := range w.hosts {
		if !h.alive || len(h.queue) == 0 {
			continue
		}
		var rest []*queued
		var due []*queued
		for _, q := range h.queue {
			if w.now.Before(q.at) {
				rest = append(rest, q)
			} else {
				due = append(due, q)
			}
		}
		h.queue = rest
		slices.SortStableFunc(due, func(a, b *queued) int { return a.at.Compare(b.at) })
		for _, q := range due {
			if !h.alive {
				break
			}
			w.execute(h, q)
		}
	}
}

func (w *World) execute(h *Host, q *queued) {
	o := q.o
	res := &drummerpb.OrderResult{Id: o.Id}
	var out drummerpb.OrderOutcome
	var msg string
	switch {
	case o.Epoch < h.epochSeen:
		out, msg = rejected, fmt.Sprintf("stale epoch %d < %d", o.Epoch, h.epochSeen)
		w.stats.OrdersStale++
	case w.cfg.Faults.FailingOrders && !w.settled && w.chance(w.rates.orderFail):
		out, msg = failed, "injected transient failure"
	default:
		switch k := o.Kind.(type) {
		case *drummerpb.Order_Start:
			res.ShardId, res.ReplicaId = k.Start.ShardId, k.Start.ReplicaId
			out, msg = w.start(h, k.Start, false)
			w.stats.Starts++
		case *drummerpb.Order_Stop:
			res.ShardId, res.ReplicaId = k.Stop.ShardId, k.Stop.ReplicaId
			out, msg = w.stop(h, k.Stop)
			w.stats.Stops++
		case *drummerpb.Order_ConfigChange:
			res.ShardId, res.ReplicaId = k.ConfigChange.ShardId, k.ConfigChange.ReplicaId
			var ms *drummerpb.Membership
			out, msg, ms = w.configChange(h, k.ConfigChange, q)
			res.Membership = ms
		case *drummerpb.Order_TransferLeader:
			res.ShardId = k.TransferLeader.ShardId
			out, msg = w.transfer(h, k.TransferLeader)
			w.stats.Transfers++
		default:
			out, msg = rejected, "unknown order"
		}
	}
	switch out {
	case done:
		w.stats.OrdersExecuted++
	case failed:
		w.stats.OrdersFailed++
	case rejected:
		w.stats.OrdersRejected++
	}
	res.Outcome, res.Error = out, msg
	h.seen[o.Id] = out
	h.results = append(h.results, res)
	w.tracef("exec on %s: %s [%s] -> %s %s", h.id, orderStr(o), o.Id, outcomeStr(out), msg)
}

func outcomeStr(o drummerpb.OrderOutcome) string {
	switch o {
	case done:
		return "DONE"
	case failed:
		return "FAILED"
	case rejected:
		return "REJECTED"
	}
	return "?"
}

// start runs StartReplica as the agent would: restart from the data on
// disk if there is any, else join or bootstrap as the order says.
func (w *World) start(h *Host, so *drummerpb.StartReplicaOrder, restore bool) (drummerpb.OrderOutcome, string) {
	k := key{ShardID: so.ShardId, ReplicaID: so.ReplicaId}
	if !slices.Contains(h.apps, so.App) {
		if !restore {
			w.violate("start order for %d/%d with app %q on host %s, which runs only %v", k.ShardID, k.ReplicaID, so.App, h.id, h.apps)
		}
		return rejected, "unknown app"
	}
	if r := h.running[so.ShardId]; r != nil {
		if r.id == so.ReplicaId {
			return done, "already running"
		}
		return failed, fmt.Sprintf("ErrShardAlreadyExist: replica %d of shard %d runs here", r.id, so.ShardId)
	}
	if h.removed[k] {
		return rejected, "ErrReplicaRemoved"
	}
	g := w.groupFor(so.ShardId, so.ReplicaId)
	if g == nil {
		return rejected, "no such shard"
	}
	r := &running{g: g, id: so.ReplicaId, nonVoting: so.NonVoting, lastVoter: !so.NonVoting}
	if rec := h.disk[k]; rec != nil {
		// Restart from the log.
		if rec.removedSelf {
			return done, "replayed its own removal and stopped"
		}
		if rec.nonVoting != so.NonVoting {
			w.violate("replica %d/%d on %s restarted with non_voting=%v but was first started with non_voting=%v",
				k.ShardID, k.ReplicaID, h.id, so.NonVoting, rec.nonVoting)
			return rejected, "ErrInvalidShardSettings"
		}
		r.initialized = true
		r.lastCCID = g.ccid
	} else {
		member := g.formed && g.isMember(so.ReplicaId)
		if member && g.everData[so.ReplicaId] {
			w.violate("replica %d/%d is a member (%s) whose data is gone, started again with an empty log on %s: it would forget its log and votes",
				k.ShardID, k.ReplicaID, g, h.id)
			return rejected, "lost data"
		}
		if member {
			_, isVoter := g.voters[so.ReplicaId]
			if isVoter == so.NonVoting {
				w.violate("replica %d/%d started with non_voting=%v on %s but is a %s", k.ShardID, k.ReplicaID, so.NonVoting, h.id, roleName(isVoter))
				return rejected, "ErrInvalidShardSettings"
			}
			if g.addrOf(so.ReplicaId) != h.addr {
				w.violate("replica %d/%d started on %s (%s) but its member address is %s", k.ShardID, k.ReplicaID, h.id, h.addr, g.addrOf(so.ReplicaId))
				return rejected, "wrong host"
			}
		}
		if so.Join {
			if len(so.InitialMembers) > 0 {
				w.violate("join order for %d/%d with initial members", k.ShardID, k.ReplicaID)
				return rejected, "ErrInvalidShardSettings"
			}
		} else {
			if len(so.InitialMembers) == 0 {
				w.violate("start of %d/%d on %s with join=false, no initial members and no data: dragonboat panics (shard not bootstrapped)", k.ShardID, k.ReplicaID, h.id)
				return rejected, "ErrShardNotBootstrapped"
			}
			if so.InitialMembers[so.ReplicaId] != h.addr {
				w.violate("initial members %v of %d/%d do not map it to its host %s", so.InitialMembers, k.ShardID, k.ReplicaID, h.addr)
				return rejected, "ErrInvalidShardSettings"
			}
			if so.NonVoting {
				w.violate("initial member %d/%d started as non-voting", k.ShardID, k.ReplicaID)
				return rejected, "ErrInvalidShardSettings"
			}
			if g.initial != nil && !maps.Equal(g.initial, so.InitialMembers) {
				w.violate("shard %d bootstrapped with initial members %v, now %d starts with %v", g.shard, g.initial, so.ReplicaId, so.InitialMembers)
				return rejected, "inconsistent bootstrap"
			}
			if !g.formed {
				g.formed = true
				g.ccAt = w.now
				g.initial = maps.Clone(so.InitialMembers)
				g.voters = maps.Clone(so.InitialMembers)
				w.refresh(g)
				g.logIndex = 1 + uint64(w.rng.IntN(5))
				w.tracef("truth: shard %d bootstrapped with %v", g.shard, sortedKeys(g.voters))
			}
			r.initialized = true
			g.everData[so.ReplicaId] = true
		}
		h.disk[k] = &diskRec{nonVoting: so.NonVoting}
	}
	h.running[so.ShardId] = r
	if !restore {
		h.assigned[so.ShardId] = so
	}
	return done, ""
}

func roleName(voter bool) string {
	if voter {
		return "voter"
	}
	return "non-voting member"
}

// stop runs StopReplica and, when asked, RemoveData.
func (w *World) stop(h *Host, so *drummerpb.StopReplicaOrder) (drummerpb.OrderOutcome, string) {
	k := key{ShardID: so.ShardId, ReplicaID: so.ReplicaId}
	if r := h.running[so.ShardId]; r != nil && r.id == so.ReplicaId {
		delete(h.running, so.ShardId)
	}
	if a := h.assigned[so.ShardId]; a != nil && a.ReplicaId == so.ReplicaId {
		delete(h.assigned, so.ShardId)
	}
	if so.RemoveData {
		if h.disk[k] != nil {
			g := w.groupFor(so.ShardId, so.ReplicaId)
			if g != nil && !g.deleted && g.isMember(so.ReplicaId) && g.addrOf(so.ReplicaId) == h.addr {
				w.violate("DATA LOSS: RemoveData of %d/%d on %s, a member of %s", k.ShardID, k.ReplicaID, h.id, g)
			}
			delete(h.disk, k)
		}
		h.removed[k] = true
		w.stats.Removes++
	}
	return done, ""
}

// configChange runs a membership change through the host's replica of the
// shard (dragonboat forwards it to the leader).
func (w *World) configChange(h *Host, cc *drummerpb.ConfigChangeOrder, q *queued) (drummerpb.OrderOutcome, string, *drummerpb.Membership) {
	r := h.running[cc.ShardId]
	if r == nil {
		return failed, "ErrShardNotFound", nil
	}
	g := r.g
	if !r.initialized || !g.isMember(r.id) || g.addrOf(r.id) != h.addr {
		return failed, "ErrShardNotReady (replica not a member)", nil
	}
	if g.leader == 0 || !w.live(g, g.leader) || w.liveVoters(g, g.voters) < db.Quorum(len(g.voters)) {
		// No leader, or one that just lost its quorum: nothing commits.
		return failed, "ErrShardNotReady (no leader)", nil
	}
	if cc.ConfigChangeId != g.ccid {
		w.stats.CCRejected++
		return rejected, fmt.Sprintf("ErrRejected: config change id %d, current %d", cc.ConfigChangeId, g.ccid), nil
	}
	id := cc.ReplicaId
	rej := func(why string) (drummerpb.OrderOutcome, string, *drummerpb.Membership) {
		w.stats.CCRejected++
		return rejected, "ErrRejected: " + why, nil
	}
	switch cc.Type {
	case drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_ADD_NON_VOTING:
		if id == 0 || g.removed[id] {
			return rej("replica ID was removed")
		}
		if g.isMember(id) {
			return rej("already a member")
		}
		if db.ValidateAddress(cc.Target) != nil {
			return rej("invalid target")
		}
		for _, m := range []map[uint64]string{g.voters, g.nonVoting} {
			for _, a := range m {
				if a == cc.Target {
					return rej("target address already used by a member")
				}
			}
		}
		g.nonVoting[id] = cc.Target
	case drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_PROMOTE:
		a, ok := g.nonVoting[id]
		if !ok || a != cc.Target {
			return rej("not a non-voting member at that target")
		}
		after := maps.Clone(g.voters)
		after[id] = a
		w.checkQuorumChange(g, "promote", id, after, q)
		delete(g.nonVoting, id)
		g.voters[id] = a
		if rr := w.runningOf(g, id); rr != nil {
			rr.lastVoter = true
		}
	case drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE:
		if _, ok := g.voters[id]; ok {
			if len(g.voters) == 1 {
				return rej("cannot remove the last voter")
			}
			after := maps.Clone(g.voters)
			delete(after, id)
			w.checkQuorumChange(g, "remove", id, after, q)
		}
		// The removed replica applies its own removal and stops (if it runs
		// and learns of it now).
		if rr := w.runningOf(g, id); rr != nil {
			if hh := w.byAddr[g.addrOf(id)]; hh != nil {
				delete(hh.running, g.shard)
				if rec := hh.disk[key{ShardID: g.shard, ReplicaID: id}]; rec != nil {
					rec.removedSelf = true
				}
				w.tracef("truth: replica %d/%d on %s stopped itself after its removal", g.shard, id, hh.id)
			}
		}
		delete(g.voters, id)
		delete(g.nonVoting, id)
		delete(g.live, id)
		delete(g.liveChanged, id)
		g.removed[id] = true
		if g.leader == id {
			g.leader = 0
			g.electAt = time.Time{}
		}
	default:
		return rej("unknown change type")
	}
	g.logIndex++
	g.ccid = g.logIndex
	g.ccAt = w.now
	w.refresh(g)
	w.stats.CCApplied++
	w.tracef("truth: %s", g)
	w.checkTruthGroup(g)
	return done, "", g.membership()
}

func (w *World) transfer(h *Host, t *drummerpb.TransferLeaderOrder) (drummerpb.OrderOutcome, string) {
	r := h.running[t.ShardId]
	if r == nil {
		return failed, "ErrShardNotFound"
	}
	g := r.g
	if g.leader == 0 {
		return failed, "no leader"
	}
	if _, ok := g.voters[t.ToReplicaId]; !ok || !w.live(g, t.ToReplicaId) {
		return failed, "target is not a live voter"
	}
	if g.leader != t.ToReplicaId {
		g.leader = t.ToReplicaId
		g.term++
		w.tracef("truth: shard %d leadership moved to %d term %d", g.shard, g.leader, g.term)
	}
	return done, ""
}
