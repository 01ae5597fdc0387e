package fleet

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// The in-memory model of every shard's Raft group, with dragonboat's rules
// for the orders the simulated agents carry out.
//
// Locking: a host's mutex, then a group's; never the other way round. A
// change in a group bumps the view version of every host running one of
// its replicas (an atomic add), and those hosts rebuild their views when
// they next report.

type key struct{ shard, replica uint64 }

const appName = "kv"

// group is the true Raft state of one shard.
type group struct {
	m     *model
	shard uint64

	mu        sync.Mutex
	formed    bool
	initial   map[uint64]string
	voters    map[uint64]string
	nonVoting map[uint64]string
	removed   map[uint64]bool
	index     uint64 // log index of the last config change
	ccid      uint64
	leader    uint64
	term      uint64
	electing  bool
	// run holds the replicas of this group that run (on alive hosts).
	run map[uint64]*replica
	ms  *drummerpb.Membership // cached, immutable
}

// replica is a replica loaded on a host.
type replica struct {
	host      *Host
	g         *group
	id        uint64
	nonVoting bool // started with IsNonVoting
	// Guarded by g.mu: initialized (knows its membership: bootstrapped,
	// restarted from its log, or contacted by a leader after joining),
	// its last view, and whether it applied its own removal.
	initialized bool
	lastCCID    uint64
	lastVoter   bool
	removedSelf bool
}

// diskRec is a replica's data on a host's disk.
type diskRec struct {
	nonVoting   bool
	removedSelf bool // its log holds its own removal
}

// model is the ground truth of all shards.
type model struct {
	electionDelay time.Duration
	closed        atomic.Bool

	mu     sync.RWMutex
	groups map[uint64]*group
	byAddr map[string]*Host

	violMu     sync.Mutex
	violations []string
	violCount  int
}

func newModel(electionDelay time.Duration) *model {
	return &model{electionDelay: electionDelay, groups: map[uint64]*group{}, byAddr: map[string]*Host{}}
}

// violate records a safety violation by the control plane (data loss, a
// change that loses quorum, an inconsistent bootstrap).
func (m *model) violate(format string, args ...any) {
	m.violMu.Lock()
	defer m.violMu.Unlock()
	m.violCount++
	if len(m.violations) < 20 {
		m.violations = append(m.violations, fmt.Sprintf(format, args...))
	}
}

func (m *model) group(shard uint64, create bool) *group {
	m.mu.RLock()
	g := m.groups[shard]
	m.mu.RUnlock()
	if g != nil || !create {
		return g
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if g = m.groups[shard]; g == nil {
		g = &group{m: m, shard: shard, voters: map[uint64]string{}, nonVoting: map[uint64]string{},
			removed: map[uint64]bool{}, run: map[uint64]*replica{}}
		m.groups[shard] = g
	}
	return g
}

func quorum(n int) int { return n/2 + 1 }

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

// membership is the membership as dragonboat reports it (shared, never
// modified).
func (g *group) membership() *drummerpb.Membership {
	if g.ms != nil && g.ms.ConfigChangeId == g.ccid {
		return g.ms
	}
	ms := &drummerpb.Membership{ConfigChangeId: g.ccid, Voters: maps.Clone(g.voters)}
	if len(g.nonVoting) > 0 {
		ms.NonVoting = maps.Clone(g.nonVoting)
	}
	ms.Removed = slices.Sorted(maps.Keys(g.removed))
	g.ms = ms
	return ms
}

func (g *group) liveVoters(voters map[uint64]string) int {
	n := 0
	for id := range voters {
		if g.run[id] != nil {
			n++
		}
	}
	return n
}

// bump makes every host running a replica of g rebuild its view.
func (g *group) bump() {
	for _, r := range g.run {
		r.host.changed(g.shard)
	}
}

// reconsider applies Raft's rules after a change: a leader only while a
// quorum of voters runs; an election electionDelay after a quorum without
// leader appears. The caller holds g.mu.
func (g *group) reconsider() {
	has := len(g.voters) > 0 && g.liveVoters(g.voters) >= quorum(len(g.voters))
	if g.leader != 0 {
		_, voter := g.voters[g.leader]
		if !has || !voter || g.run[g.leader] == nil {
			g.leader = 0
			g.bump()
		}
	}
	if !has || g.leader != 0 || g.electing {
		return
	}
	if g.m.electionDelay <= 0 {
		g.elect()
		return
	}
	g.electing = true
	time.AfterFunc(g.m.electionDelay, func() {
		if g.m.closed.Load() {
			return
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		g.electing = false
		g.elect()
	})
}

// elect picks a leader among the running voters that have a log.
func (g *group) elect() {
	if g.leader != 0 || len(g.voters) == 0 || g.liveVoters(g.voters) < quorum(len(g.voters)) {
		return
	}
	var cands []uint64
	for id := range g.voters {
		if r := g.run[id]; r != nil && r.initialized {
			cands = append(cands, id)
		}
	}
	if len(cands) == 0 {
		return
	}
	g.leader = cands[rand.IntN(len(cands))]
	g.term++
	// The leader's log reaches every running member.
	for id, r := range g.run {
		if g.isMember(id) {
			r.initialized = true
		}
	}
	g.bump()
}

// report is what the replica reports; the caller holds g.mu.
func (r *replica) report(addr string) (*drummerpb.ReplicaReport, *drummerpb.Membership) {
	g := r.g
	rr := &drummerpb.ReplicaReport{ShardId: g.shard, ReplicaId: r.id, App: appName}
	if r.initialized && g.isMember(r.id) && g.addrOf(r.id) == addr {
		_, voter := g.voters[r.id]
		rr.LeaderId, rr.Term, rr.ConfigChangeId = g.leader, g.term, g.ccid
		r.lastCCID, r.lastVoter = g.ccid, voter
		if voter {
			rr.Role = drummerpb.ReplicaRole_REPLICA_ROLE_VOTER
		} else {
			rr.Role = drummerpb.ReplicaRole_REPLICA_ROLE_NON_VOTING
			rr.CaughtUp = g.leader != 0
		}
		if g.leader == r.id {
			return rr, g.membership()
		}
		return rr, nil
	}
	// Stranded (not a member at this address) or not initialized yet: it
	// sees no leader.
	rr.Pending = !r.initialized
	rr.ConfigChangeId = r.lastCCID
	rr.Role = drummerpb.ReplicaRole_REPLICA_ROLE_NON_VOTING
	if r.lastVoter {
		rr.Role = drummerpb.ReplicaRole_REPLICA_ROLE_VOTER
	}
	return rr, nil
}

// ---------------------------------------------------------------------------
// Orders, carried out as dragonboat and the agent would. The caller holds
// h.mu.

var (
	outDone     = drummerpb.OrderOutcome_ORDER_OUTCOME_DONE
	outFailed   = drummerpb.OrderOutcome_ORDER_OUTCOME_FAILED
	outRejected = drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED
)

func (h *Host) start(so *drummerpb.StartReplicaOrder) (drummerpb.OrderOutcome, string) {
	m := h.f.model
	if so == nil || so.ShardId == 0 || so.ReplicaId == 0 {
		return outRejected, "malformed start order"
	}
	if so.App != appName {
		return outRejected, fmt.Sprintf("app %q is not registered on this nodehost (registered: [%s])", so.App, appName)
	}
	k := key{so.ShardId, so.ReplicaId}
	if r := h.running[so.ShardId]; r != nil {
		if r.id == so.ReplicaId {
			return outDone, ""
		}
		return outFailed, fmt.Sprintf("replica %d of shard %d runs here; it must be stopped first", r.id, so.ShardId)
	}
	if h.removedKeys[k] {
		return outRejected, fmt.Sprintf("replica %d of shard %d was removed from this host for good", so.ReplicaId, so.ShardId)
	}
	g := m.group(so.ShardId, true)
	g.mu.Lock()
	defer g.mu.Unlock()
	r := &replica{host: h, g: g, id: so.ReplicaId, nonVoting: so.NonVoting, lastVoter: !so.NonVoting}
	if rec := h.disk[k]; rec != nil {
		// Restart from the log.
		if rec.removedSelf {
			return outDone, ""
		}
		if rec.nonVoting != so.NonVoting {
			m.violate("replica %d/%d on %s restarted with non_voting=%v but was first started with non_voting=%v", k.shard, k.replica, h.raft, so.NonVoting, rec.nonVoting)
			return outRejected, "dragonboat refused the start: ErrInvalidShardSettings"
		}
		r.initialized = true
		r.lastCCID = g.ccid
	} else {
		if g.formed && g.isMember(so.ReplicaId) {
			_, voter := g.voters[so.ReplicaId]
			if voter == so.NonVoting {
				m.violate("replica %d/%d started with non_voting=%v on %s but is a member of the other kind", k.shard, k.replica, so.NonVoting, h.raft)
				return outRejected, "dragonboat refused the start: ErrInvalidShardSettings"
			}
			if g.addrOf(so.ReplicaId) != h.raft {
				m.violate("replica %d/%d started on %s but its member address is %s", k.shard, k.replica, h.raft, g.addrOf(so.ReplicaId))
			}
		}
		switch {
		case so.Join && len(so.InitialMembers) > 0:
			return outRejected, "start order has both join and initial members"
		case !so.Join && len(so.InitialMembers) == 0:
			return outRejected, fmt.Sprintf("replica %d of shard %d has no data here and the order gives no initial members", so.ReplicaId, so.ShardId)
		case so.Join:
			r.initialized = g.leader != 0 && g.isMember(so.ReplicaId)
		default:
			if addr := so.InitialMembers[so.ReplicaId]; addr != h.raft {
				return outRejected, fmt.Sprintf("initial members give %q for replica %d, but this host is %s", addr, so.ReplicaId, h.raft)
			}
			if so.NonVoting {
				m.violate("initial member %d/%d started as non-voting", k.shard, k.replica)
				return outRejected, "dragonboat refused the start: ErrInvalidShardSettings"
			}
			if g.formed && !maps.Equal(g.initial, so.InitialMembers) {
				m.violate("shard %d bootstrapped with initial members %v, now %d starts with %v", g.shard, g.initial, so.ReplicaId, so.InitialMembers)
				return outRejected, "inconsistent bootstrap"
			}
			if !g.formed {
				g.formed = true
				g.initial = maps.Clone(so.InitialMembers)
				g.voters = maps.Clone(so.InitialMembers)
				// dragonboat applies the bootstrap as the first config
				// change: the ConfigChangeID is never 0 once formed.
				g.index, g.ccid = 1, 1
				g.ms = nil
			}
			r.initialized = true
		}
		h.disk[k] = &diskRec{nonVoting: so.NonVoting}
		h.diskChanged = true
	}
	h.running[so.ShardId] = r
	g.run[r.id] = r
	g.bump()
	g.reconsider()
	return outDone, ""
}

func (h *Host) stop(so *drummerpb.StopReplicaOrder) (drummerpb.OrderOutcome, string) {
	if so == nil || so.ShardId == 0 || so.ReplicaId == 0 {
		return outRejected, "malformed stop order"
	}
	k := key{so.ShardId, so.ReplicaId}
	g := h.f.model.group(so.ShardId, false)
	if r := h.running[so.ShardId]; r != nil && r.id == so.ReplicaId {
		g.mu.Lock()
		if so.RemoveData && !r.removedSelf && g.isMember(r.id) {
			// The agent checks its own dragonboat's membership first.
			g.mu.Unlock()
			return outRejected, fmt.Sprintf("replica %d of shard %d is still a member of its shard (ConfigChangeID %d); its data is not deleted", r.id, so.ShardId, g.ccid)
		}
		delete(g.run, r.id)
		g.bump()
		g.reconsider()
		g.mu.Unlock()
		delete(h.running, so.ShardId)
		h.changed(so.ShardId)
	}
	if so.RemoveData {
		if h.disk[k] != nil {
			if g != nil {
				g.mu.Lock()
				if g.isMember(so.ReplicaId) && g.addrOf(so.ReplicaId) == h.raft {
					h.f.model.violate("DATA LOSS: RemoveData of %d/%d on %s, a member (voters %v, non-voting %v)", k.shard, k.replica, h.raft,
						slices.Sorted(maps.Keys(g.voters)), slices.Sorted(maps.Keys(g.nonVoting)))
				}
				g.mu.Unlock()
			}
			delete(h.disk, k)
			h.diskChanged = true
		}
		h.removedKeys[k] = true
	}
	return outDone, ""
}

func (h *Host) configChange(cc *drummerpb.ConfigChangeOrder) (drummerpb.OrderOutcome, string, *drummerpb.Membership) {
	if cc == nil || cc.ShardId == 0 || cc.ReplicaId == 0 {
		return outRejected, "malformed config change", nil
	}
	r := h.running[cc.ShardId]
	if r == nil {
		return outFailed, fmt.Sprintf("shard %d does not run here", cc.ShardId), nil
	}
	g := r.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if !r.initialized || r.removedSelf || !g.isMember(r.id) || g.addrOf(r.id) != h.raft {
		return outFailed, "shard not ready (replica not a member)", nil
	}
	if g.leader == 0 {
		return outFailed, "shard not ready (no leader)", nil
	}
	rej := func(why string) (drummerpb.OrderOutcome, string, *drummerpb.Membership) {
		return outRejected, "rejected (stale ConfigChangeID or illegal change): " + why, g.membership()
	}
	if cc.ConfigChangeId != g.ccid {
		return rej(fmt.Sprintf("config change id %d, current %d", cc.ConfigChangeId, g.ccid))
	}
	id := cc.ReplicaId
	switch cc.Type {
	case drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_ADD_NON_VOTING:
		if g.removed[id] {
			return rej("replica ID was removed")
		}
		if g.isMember(id) {
			return rej("already a member")
		}
		for _, ms := range []map[uint64]string{g.voters, g.nonVoting} {
			for _, a := range ms {
				if a == cc.Target {
					return rej("target address already used by a member")
				}
			}
		}
		g.nonVoting[id] = cc.Target
		if nr := g.run[id]; nr != nil {
			nr.initialized = true
		}
	case drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_PROMOTE:
		a, ok := g.nonVoting[id]
		if !ok || a != cc.Target {
			return rej("not a non-voting member at that target")
		}
		delete(g.nonVoting, id)
		g.voters[id] = a
		if nr := g.run[id]; nr != nil {
			nr.lastVoter = true
		}
	case drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE:
		if _, ok := g.voters[id]; ok {
			if len(g.voters) == 1 {
				return rej("cannot remove the last voter")
			}
			after := maps.Clone(g.voters)
			delete(after, id)
			if g.liveVoters(after) < quorum(len(after)) {
				g.m.violate("shard %d: removing voter %d leaves %d of %d running voters, below quorum", g.shard, id, g.liveVoters(after), len(after))
			}
		}
		// The removed replica applies its own removal and stops; its
		// host notices when it next rebuilds its view.
		if rr := g.run[id]; rr != nil {
			rr.removedSelf = true
			delete(g.run, id)
			rr.host.changed(g.shard)
		}
		delete(g.voters, id)
		delete(g.nonVoting, id)
		g.removed[id] = true
	default:
		return rej("unknown change type")
	}
	g.index++
	g.ccid = g.index
	g.bump()
	g.reconsider()
	return outDone, "", g.membership()
}

func (h *Host) transfer(t *drummerpb.TransferLeaderOrder) (drummerpb.OrderOutcome, string) {
	if t == nil || t.ShardId == 0 || t.ToReplicaId == 0 {
		return outRejected, "malformed leader transfer"
	}
	r := h.running[t.ShardId]
	if r == nil {
		return outFailed, "leader transfer: shard not found"
	}
	g := r.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.leader == 0 {
		return outFailed, "leader transfer: no leader"
	}
	_, voter := g.voters[t.ToReplicaId]
	if tr := g.run[t.ToReplicaId]; !voter || tr == nil || !tr.initialized {
		return outFailed, "leader transfer: target is not a running voter"
	}
	if g.leader != t.ToReplicaId {
		g.leader = t.ToReplicaId
		g.term++
		g.bump()
	}
	return outDone, ""
}

// crash stops every replica of the host (its disk survives).
func (h *Host) crash() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.alive = false
	for sid, r := range h.running {
		g := r.g
		g.mu.Lock()
		if g.run[r.id] == r {
			delete(g.run, r.id)
			g.bump()
			g.reconsider()
		}
		g.mu.Unlock()
		delete(h.running, sid)
	}
	h.changedAll()
}

// stats of the model at one moment.
type modelStats struct {
	Shards, Leaderless, NoQuorum int
}

func (m *model) stats() modelStats {
	m.mu.RLock()
	gs := slices.Collect(maps.Values(m.groups))
	m.mu.RUnlock()
	var s modelStats
	for _, g := range gs {
		g.mu.Lock()
		s.Shards++
		if g.leader == 0 {
			s.Leaderless++
		}
		if len(g.voters) == 0 || g.liveVoters(g.voters) < quorum(len(g.voters)) {
			s.NoQuorum++
		}
		g.mu.Unlock()
	}
	return s
}
