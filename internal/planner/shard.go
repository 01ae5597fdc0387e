package planner

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

// memberState is how the planner judges a recorded member now.
type memberState int

const (
	// memberStarting: its host is up but does not run it (yet).
	memberStarting memberState = iota
	memberLive
	memberSuspect
	memberDead
	// memberAway: not live while its host is in maintenance; not repaired.
	memberAway
)

func (s memberState) String() string {
	switch s {
	case memberLive:
		return "live"
	case memberSuspect:
		return "suspect"
	case memberDead:
		return "dead"
	case memberAway:
		return "away"
	}
	return "starting"
}

// member is one recorded member of a shard as the planner sees it now.
type member struct {
	rec   *dbpb.Replica
	host  *dbpb.Host // nil if the host was removed
	state memberState
	since time.Duration
	obs   *drummerpb.ReplicaReport
}

func (m *member) live() bool { return m.state == memberLive }

// shardView gathers what the planner needs about one shard.
type shardView struct {
	sh            *dbpb.Shard
	suspect, dead uint64 // timeouts in ms
	members       []*member
	byID          map[uint64]*member
	ms            *drummerpb.Membership // observed, may be nil
	distrusted    bool                  // members claimed memberships, none believed
	voters        []uint64              // membership voters (observed, else recorded)
	liveVoters    int
	leader, term  uint64
	report        *ShardReport
	explain       []string
	orders        []HostOrder
	priority      int // lower = more endangered
	plan          *repairPlan
}

func (v *shardView) say(format string, args ...any) {
	v.explain = append(v.explain, fmt.Sprintf(format, args...))
}

func (p *planner) memberState(v *shardView, rec *dbpb.Replica) *member {
	m := &member{rec: rec, host: p.st.Hosts[rec.HostId]}
	o := p.obs.Hosts[rec.HostId] // nil if the host never reported
	if o != nil {
		if r := o.Replicas[v.sh.Id]; r != nil && r.ReplicaId == rec.ReplicaId {
			m.obs = r
		}
	}
	hl, silence := p.hostLiveness(rec.HostId, v.suspect, v.dead)
	away := p.inMaintenance(m.host)
	switch {
	case m.host == nil || m.host.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED:
		m.state, m.since = memberDead, silence
	case hl == Dead:
		m.state, m.since = memberDead, silence
	case hl == Suspect:
		m.state, m.since = memberSuspect, silence
	case m.obs != nil && !m.obs.Pending:
		m.state = memberLive
	case p.startRejected(v.sh.Id, rec):
		// The host refused to start it for good (e.g. its data was
		// removed there): no point waiting.
		m.state = memberDead
	default:
		// The host is up but does not run the replica.
		since := p.in.ObsSince
		if t := p.obs.LastRunning[ReplicaKey{v.sh.Id, rec.ReplicaId}]; t.After(since) {
			since = t
		}
		if t := p.unixMs(rec.AddedUnixMs); t.After(since) {
			since = t
		}
		if r := p.startResult(v.sh.Id, rec); r != nil && r.Outcome == drummerpb.OrderOutcome_ORDER_OUTCOME_DONE {
			// Its host started it then: the timeouts count from there,
			// not from the placement. An order rides on the answer to
			// its host's next report, so under load it can arrive late,
			// and a replica started a few seconds before the host's next
			// report was replaced as "dead for 32 s" (10,000 hosts).
			if t := p.in.ResultAt[rec.HostId][r.Id]; t.After(since) {
				since = t
			}
		}
		// Missing as far as the host's last recorded replicas tell: a host
		// heard from whose reports were not taken, or whose deltas came
		// out of sequence, has an unknown replica list, not an empty one.
		// At 10,000 hosts replicas on hosts that were up were judged dead
		// and replaced mid-launch.
		seen := p.now
		if o != nil && !o.ReplicasAt.IsZero() && o.ReplicasAt.Before(seen) {
			seen = o.ReplicasAt
		}
		gap := max(0, seen.Sub(since))
		m.since = gap
		starting := o != nil && o.Starting
		// A replica that never ran, on a host that has not answered its
		// start order yet, waits for the order, not for itself: the
		// delay is the control plane's (a launch of 333,334 shards on a
		// busy machine took longer than dead_timeout to deliver some
		// orders, and replacing those replicas only added work).
		awaiting := p.obs.LastRunning[ReplicaKey{v.sh.Id, rec.ReplicaId}].IsZero() && p.startResult(v.sh.Id, rec) == nil
		switch {
		case (starting || awaiting) && gap < StartGrace:
			// Still working through its starts, or not yet told to
			// start: not dead yet.
			m.state = memberStarting
		case gap >= p.ms(v.dead):
			m.state = memberDead
		case gap >= p.ms(v.suspect):
			m.state = memberSuspect
		default:
			m.state = memberStarting
		}
	}
	if away && !m.live() {
		m.state = memberAway
	}
	return m
}

// startRejected reports whether the member's host refused its start order
// for good.
func (p *planner) startRejected(shardID uint64, rec *dbpb.Replica) bool {
	r := p.startResult(shardID, rec)
	return r != nil && r.Outcome == drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED
}

// startResult is the member's host's result of this epoch's start order
// for it, or nil.
func (p *planner) startResult(shardID uint64, rec *dbpb.Replica) *drummerpb.OrderResult {
	o := p.obs.Hosts[rec.HostId]
	if o == nil {
		return nil
	}
	return o.Results[startOrderID(p.in.Epoch, shardID, rec.ReplicaId)]
}

func (p *planner) newShardView(sh *dbpb.Shard) *shardView {
	v := &shardView{sh: sh, byID: map[uint64]*member{}}
	v.suspect, v.dead = p.st.ShardTimeouts(sh.Id)
	for _, rec := range sh.Members {
		m := p.memberState(v, rec)
		v.members = append(v.members, m)
		v.byID[rec.ReplicaId] = m
	}
	// The observed membership: the newest claim that passes the trust
	// rules (trust.go), else none (the DB's membership stands).
	v.ms = p.trustedMembership(v)
	if v.ms != nil {
		for id := range v.ms.Voters {
			v.voters = append(v.voters, id)
		}
		slices.Sort(v.voters)
	} else {
		for _, m := range v.members {
			if m.rec.Role == dbpb.Role_ROLE_VOTER {
				v.voters = append(v.voters, m.rec.ReplicaId)
			}
		}
	}
	for _, id := range v.voters {
		if m := v.byID[id]; m != nil && m.live() {
			v.liveVoters++
		}
	}
	// The leader is the one named with the highest term by a live member,
	// and only if that replica is itself live.
	for _, m := range v.members {
		if m.live() && m.obs.LeaderId != 0 && m.obs.Term >= v.term {
			v.leader, v.term = m.obs.LeaderId, m.obs.Term
		}
	}
	if l := v.byID[v.leader]; l == nil || !l.live() {
		v.leader = 0
	}
	return v
}

func (v *shardView) inMembership(id uint64) (voter, nonVoting bool) {
	if v.ms == nil {
		return false, false
	}
	_, voter = v.ms.Voters[id]
	_, nonVoting = v.ms.NonVoting[id]
	return voter, nonVoting
}

func (v *shardView) isVoter(id uint64) bool { return slices.Contains(v.voters, id) }

// safeAfter reports whether the shard keeps a live quorum when the voter
// set changes by adding (+1) or removing (-1) one voter whose liveness is
// given.
func (v *shardView) safeAfter(delta int, changedLive bool) bool {
	n := len(v.voters) + delta
	live := v.liveVoters
	if changedLive {
		live += delta
	}
	return n > 0 && live >= db.Quorum(n)
}

// shards evaluates every shard in scope: health, repairs in flight, new
// repairs (most endangered first, within the limits), placement and orders.
func (p *planner) shards() {
	var candidates []*shardView
	for _, id := range p.evalShards() {
		sh, ok := p.st.Shards.Lookup(id)
		if !ok {
			p.out.ShardOrders[id] = nil
			continue
		}
		v := p.newShardView(sh)
		p.evaluate(v)
		if v.plan != nil {
			candidates = append(candidates, v)
		} else {
			p.finish(v)
		}
	}
	// Most endangered first: least quorum margin, then most replicas
	// missing, then shard ID for determinism.
	slices.SortStableFunc(candidates, func(a, b *shardView) int {
		return cmp.Or(cmp.Compare(a.priority, b.priority), cmp.Compare(a.sh.Id, b.sh.Id))
	})
	for _, v := range candidates {
		balance := v.plan.kind == dbpb.RepairKind_REPAIR_KIND_BALANCE
		switch {
		case p.inFlight >= int(p.cfg.MaxConcurrentRepairs):
			if !balance {
				p.deferred++
				v.say("waiting: %d repairs in flight, the limit (max_concurrent_repairs)", p.inFlight)
			}
		case p.newRepairs >= p.lim.MaxNewRepairs:
			if !balance {
				p.deferred++
				v.say("waiting: repair queued for the next round")
				p.out.Again = append(p.out.Again, v.sh.Id)
			}
		case balance:
			if p.startBalance(v, v.plan) {
				p.newRepairs++
				p.inFlight++
			}
		case p.startPlan(v, v.plan):
			p.newRepairs++
			p.inFlight++
		}
		p.finish(v)
	}
}

func (p *planner) finish(v *shardView) {
	rep := v.report
	rep.Explanation = append(rep.Explanation, v.explain...)
	p.out.Shards[v.sh.Id] = rep
	p.out.ShardOrders[v.sh.Id] = v.orders
}

func (p *planner) evaluate(v *shardView) {
	sh := v.sh
	v.report = &ShardReport{ShardID: sh.Id, LeaderID: v.leader, Term: v.term}
	if v.ms != nil {
		v.report.CCI = v.ms.ConfigChangeId
	}
	for _, m := range v.members {
		role := "voter"
		if m.rec.Role == dbpb.Role_ROLE_NON_VOTING {
			role = "non_voting"
		}
		state := m.state.String()
		if sh.Repair != nil && sh.Repair.NewReplicaId == m.rec.ReplicaId && sh.Repair.Step != dbpb.RepairStep_REPAIR_STEP_ROLLBACK && m.state != memberDead {
			state = "joining"
		}
		if sh.Repair != nil && sh.Repair.OldReplicaId == m.rec.ReplicaId && sh.Repair.Step == dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD {
			state = "removing"
		}
		v.report.Members = append(v.report.Members, MemberReport{
			ReplicaID: m.rec.ReplicaId, HostID: m.rec.HostId, Role: role, State: state, IsLeader: m.rec.ReplicaId == v.leader,
		})
	}
	if sh.Phase == dbpb.ShardPhase_SHARD_PHASE_PENDING {
		v.report.Health = "pending"
		if !p.st.Launched {
			v.say("defined; replicas are placed after launch (drummercmd launch)")
			return
		}
		p.place(v)
		return
	}
	p.startOrders(v)
	if !sh.Bootstrapped {
		if v.leader != 0 {
			p.decide(&dbpb.Decision{Kind: &dbpb.Decision_MarkBootstrapped{MarkBootstrapped: &dbpb.MarkBootstrapped{ShardId: sh.Id}}})
		} else {
			v.report.Health = "pending"
			started := 0
			for _, m := range v.members {
				if m.live() {
					started++
				}
			}
			v.say("starting: %d of %d initial replicas running, no leader elected yet", started, len(v.members))
			dead, onLiveHosts := 0, 0
			for _, m := range v.members {
				if m.state == memberDead || m.state == memberSuspect {
					v.say("replica %d on %s is %s (%s)", m.rec.ReplicaId, p.addr(m.rec.HostId), m.state, m.since.Round(time.Second))
				}
				if m.state == memberDead {
					dead++
					if hl, _ := p.hostLiveness(m.rec.HostId, v.suspect, v.dead); hl == Up && m.host != nil {
						onLiveHosts++
					}
				}
			}
			if onLiveHosts > 0 {
				// Not the hosts: they report, but did not start (or did
				// not report starting) these replicas.
				v.say("%d of those hosts are up but have not reported the replica running since it was placed; see their agents' logs and their report errors (drummercmd host list)", onLiveHosts)
			}
			if len(v.members)-dead+onLiveHosts < db.Quorum(len(v.members)) {
				// Never formed, and cannot without hosts that are dead. It
				// is not re-placed automatically: "never formed" cannot be
				// proven from here (a restarted replica reports no term
				// either), and re-placing would delete any data it has.
				v.say("the shard cannot form until the dead hosts return; if they will not, delete and re-create it (drummercmd shard delete %d; shard create --shard-id %d ...)", sh.Id, sh.Id)
			}
			return
		}
	}
	q := db.Quorum(len(v.voters))
	switch {
	case v.liveVoters < q:
		v.report.Health = "unavailable"
		v.say("unavailable: %d of %d voters live, quorum is %d", v.liveVoters, len(v.voters), q)
	case v.leader == 0:
		v.report.Health = "unavailable"
		v.say("no leader elected yet (%d of %d voters live)", v.liveVoters, len(v.voters))
	case p.healthy(v):
		v.report.Health = "healthy"
	default:
		v.report.Health = "under_replicated"
	}
	for _, m := range v.members {
		switch m.state {
		case memberDead:
			if m.host == nil {
				v.say("replica %d: its host %s was removed", m.rec.ReplicaId, m.rec.HostId)
			} else {
				v.say("replica %d on %s dead for %s", m.rec.ReplicaId, p.addr(m.rec.HostId), m.since.Round(time.Second))
			}
		case memberSuspect:
			v.say("replica %d on %s silent for %s; %s until dead", m.rec.ReplicaId, p.addr(m.rec.HostId),
				m.since.Round(time.Second), (p.ms(v.dead) - m.since).Round(time.Second))
		case memberAway:
			v.say("replica %d on %s is away (host in maintenance); not repaired", m.rec.ReplicaId, p.addr(m.rec.HostId))
		case memberStarting:
			v.say("replica %d on %s is starting", m.rec.ReplicaId, p.addr(m.rec.HostId))
		}
	}
	if v.liveVoters < q {
		// Also with a repair in flight: no membership change commits
		// without a quorum, so the repair waits for the same replicas.
		var waiting []string
		for _, id := range v.voters {
			if m := v.byID[id]; m == nil || !m.live() {
				if m != nil {
					waiting = append(waiting, fmt.Sprintf("replica %d on %s", id, p.addr(m.rec.HostId)))
				} else {
					waiting = append(waiting, fmt.Sprintf("replica %d", id))
				}
			}
		}
		v.say("cannot repair without a quorum; waiting for %s to return with its data", strings.Join(waiting, ", "))
	}
	if sh.Repair != nil {
		p.driveRepair(v)
		return
	}
	if v.liveVoters < q {
		return
	}
	v.plan = p.planRepair(v)
	if v.report.Health == "healthy" {
		if v.plan == nil {
			v.plan = p.planBalance(v)
		}
		p.balanceLeader(v)
	}
}

func (p *planner) healthy(v *shardView) bool {
	sh := v.sh
	if r := sh.Repair; r != nil && r.Kind == dbpb.RepairKind_REPAIR_KIND_BALANCE {
		// A balancing move adds before it removes: while every member
		// other than the one joining (and the one leaving, once out of
		// the membership) is a live voter, the shard has all its wanted
		// voters live throughout.
		live := 0
		for _, m := range v.members {
			switch {
			case m.rec.ReplicaId == r.NewReplicaId:
				if v.isVoter(m.rec.ReplicaId) && m.live() {
					live++
				}
			case m.rec.ReplicaId == r.OldReplicaId && r.Step == dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD && !v.isVoter(m.rec.ReplicaId):
			case !m.live() || !v.isVoter(m.rec.ReplicaId):
				return false
			default:
				live++
			}
		}
		return live >= int(sh.Replicas)
	}
	if sh.Repair != nil || len(v.voters) != int(sh.Replicas) || len(v.members) != int(sh.Replicas) {
		return false
	}
	for _, m := range v.members {
		if !m.live() || !v.isVoter(m.rec.ReplicaId) {
			return false
		}
	}
	if v.ms != nil && len(v.ms.NonVoting) > 0 {
		return false
	}
	return v.liveVoters == int(sh.Replicas)
}

func (p *planner) addr(hostID string) string {
	if h := p.st.Hosts[hostID]; h != nil {
		return h.RaftAddress
	}
	return hostID
}

// startOrders asks each member's host to run the replica if it does not.
// Starting is idempotent on the host; a replica with data on disk restarts
// from it whatever the order says.
func (p *planner) startOrders(v *shardView) {
	sh := v.sh
	initial := map[uint64]string{}
	if !sh.Bootstrapped {
		for _, m := range v.members {
			if m.rec.Initial && m.host != nil {
				initial[m.rec.ReplicaId] = m.host.RaftAddress
			}
		}
	}
	for _, m := range v.members {
		if m.obs != nil || m.host == nil || m.host.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED {
			continue
		}
		if hl, _ := p.globalLiveness(m.rec.HostId); hl == Dead {
			continue
		}
		if r := sh.Repair; r != nil && r.NewReplicaId == m.rec.ReplicaId &&
			(r.Step == dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING || r.Step == dbpb.RepairStep_REPAIR_STEP_ROLLBACK) {
			continue // not in the membership (yet / any more)
		}
		if r := sh.Repair; r != nil && r.OldReplicaId == m.rec.ReplicaId && r.Step == dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD {
			continue
		}
		if p.ordersPerHost[m.rec.HostId] >= p.lim.MaxOrdersPerHost {
			v.say("start of replica %d on %s deferred (order limit)", m.rec.ReplicaId, p.addr(m.rec.HostId))
			continue
		}
		p.ordersPerHost[m.rec.HostId]++
		so := &drummerpb.StartReplicaOrder{
			ShardId:   sh.Id,
			ReplicaId: m.rec.ReplicaId,
			App:       sh.App,
			// A replica that joined as non-voting is always restarted as
			// one; promotion is replayed from its log (dragonboat #204).
			NonVoting: !m.rec.Initial,
			Config:    p.sc,
		}
		if m.rec.Initial && len(initial) == len(v.members) {
			so.InitialMembers = initial
		} else {
			so.Join = true
		}
		o := p.newOrder(startOrderID(p.in.Epoch, sh.Id, m.rec.ReplicaId))
		o.Kind = &drummerpb.Order_Start{Start: so}
		v.orders = append(v.orders, HostOrder{HostID: m.rec.HostId, Order: o})
	}
}

// executor picks the host that should run a membership change: the
// leader's, else any live voter's (dragonboat forwards to the leader).
func (p *planner) executor(v *shardView, avoid uint64) *member {
	if l := v.byID[v.leader]; l != nil && l.live() && l.rec.ReplicaId != avoid {
		return l
	}
	for _, id := range v.voters {
		if m := v.byID[id]; m != nil && m.live() && id != avoid {
			return m
		}
	}
	return nil
}

func (p *planner) configChange(v *shardView, typ drummerpb.ConfigChangeType, replicaID uint64, target string, avoid uint64) bool {
	ex := p.executor(v, avoid)
	if v.ms != nil && ex == nil {
		v.say("waiting for a live member to carry out the change")
		return false
	}
	return p.changeBy(v, ex, typ, replicaID, target)
}

// changeBy orders a membership change from the member ex's host.
func (p *planner) changeBy(v *shardView, ex *member, typ drummerpb.ConfigChangeType, replicaID uint64, target string) bool {
	if v.ms == nil {
		v.say("waiting for the shard's membership to be reported")
		return false
	}
	cc := &drummerpb.ConfigChangeOrder{ShardId: v.sh.Id, Type: typ, ReplicaId: replicaID, Target: target, ConfigChangeId: v.ms.ConfigChangeId}
	o := p.newOrder(ccOrderID(p.in.Epoch, v.sh.Id, typ, replicaID, v.ms.ConfigChangeId))
	o.Kind = &drummerpb.Order_ConfigChange{ConfigChange: cc}
	v.orders = append(v.orders, HostOrder{HostID: ex.rec.HostId, Order: o})
	return true
}
