package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

var faultNames = []string{"crash", "permanent_death", "disk_wipe", "partition", "slow_orders", "failing_orders", "failover", "operator", "shard_churn", "config_change", "hostile_host", "host_churn"}

// FaultNames lists the fault kinds ParseFaults knows.
func FaultNames() []string { return slices.Clone(faultNames) }

// ParseFaults parses "all", "none" (or "") or a comma list of FaultNames.
func ParseFaults(s string) (Faults, error) {
	switch s {
	case "all":
		return AllFaults(), nil
	case "", "none":
		return Faults{}, nil
	}
	var f Faults
	ptr := map[string]*bool{
		"crash": &f.Crash, "permanent_death": &f.PermanentDeath, "disk_wipe": &f.DiskWipe, "partition": &f.Partition,
		"slow_orders": &f.SlowOrders, "failing_orders": &f.FailingOrders, "failover": &f.Failover, "operator": &f.Operator,
		"shard_churn": &f.ShardChurn, "config_change": &f.ConfigChange, "hostile_host": &f.Hostile,
		"host_churn": &f.HostChurn,
	}
	for _, name := range strings.Split(s, ",") {
		p := ptr[strings.TrimSpace(name)]
		if p == nil {
			return Faults{}, fmt.Errorf("unknown fault %q (known: %s)", name, strings.Join(faultNames, ", "))
		}
		*p = true
	}
	return f, nil
}

// rates are per-second probabilities of each fault, drawn per seed so
// that some runs are calm and some are stormy.
type rates struct {
	crash, permDeath, wipe, partition, slow, failover float64
	operator, churn, config, hostChurn                float64
	orderFail                                         float64
	lostProposal                                      float64 // per decision batch
}

func newRates(r *rand.Rand, f Faults) rates {
	scale := []float64{0.5, 1, 1, 2}[r.IntN(4)]
	pick := func(on bool, p float64) float64 {
		if !on {
			return 0
		}
		return p * scale * (0.5 + r.Float64())
	}
	return rates{
		crash:        pick(f.Crash, 0.035),
		permDeath:    pick(f.PermanentDeath, 0.005),
		wipe:         pick(f.DiskWipe, 0.006),
		partition:    pick(f.Partition, 0.02),
		slow:         pick(f.SlowOrders, 0.01),
		failover:     pick(f.Failover, 0.012),
		operator:     pick(f.Operator, 0.03),
		churn:        pick(f.ShardChurn, 0.01),
		config:       pick(f.ConfigChange, 0.006),
		hostChurn:    pick(f.HostChurn, 0.015),
		orderFail:    pick(f.FailingOrders, 0.06),
		lostProposal: pick(f.Failover, 0.02),
	}
}

func (w *World) aliveHosts() []*Host {
	var out []*Host
	for _, h := range w.hosts {
		if h.alive {
			out = append(out, h)
		}
	}
	return out
}

func (w *World) downHosts() int {
	n := 0
	for _, h := range w.hosts {
		if !h.alive {
			n++
		}
	}
	return n
}

func (w *World) permanentlyLost() int {
	n := 0
	for _, h := range w.hosts {
		if h.permDead || h.gen > 0 || h.wipe {
			n++
		}
	}
	return n
}

func (w *World) randomHost(alive bool) *Host {
	var c []*Host
	for _, h := range w.hosts {
		if h.alive == alive && !h.permDead {
			c = append(c, h)
		}
	}
	if len(c) == 0 {
		return nil
	}
	return c[w.rng.IntN(len(c))]
}

// injectFaults runs once per simulated second during the fault phase.
func (w *World) injectFaults() {
	r := w.rates
	maxDown := 2
	if len(w.hosts) <= 4 {
		maxDown = 1
	}
	if w.chance(r.crash) && w.downHosts() < maxDown {
		if h := w.randomHost(true); h != nil {
			var down time.Duration
			switch x := w.rng.IntN(10); {
			case x < 3:
				down = w.dur(time.Second, 4*time.Second)
			case x < 7:
				down = w.dur(5*time.Second, 25*time.Second)
			default:
				down = w.dur(30*time.Second, 100*time.Second)
			}
			w.stats.Crashes++
			w.crash(h, down, "crash")
		}
	}
	if w.chance(r.permDeath) && w.downHosts() < maxDown && w.permanentlyLost() < max(1, len(w.hosts)-4) {
		if h := w.randomHost(true); h != nil {
			w.stats.PermanentDeaths++
			w.crash(h, 0, "dead for good")
			h.permDead = true
			w.hostDeadAt[h.id] = w.now
		}
	}
	if w.chance(r.wipe) && w.downHosts() < maxDown && w.permanentlyLost() < max(1, len(w.hosts)-4) {
		if h := w.randomHost(true); h != nil {
			w.stats.Wipes++
			w.crash(h, w.dur(2*time.Second, 60*time.Second), "disk replaced")
			h.wipe = true
		}
	}
	if w.chance(r.partition) {
		if h := w.randomHost(true); h != nil && !h.partitioned(w.now) {
			w.stats.Partitions++
			d := w.dur(2*time.Second, 60*time.Second)
			h.partTill = w.now.Add(d)
			w.tracef("host %s partitioned from drummer for %s", h.id, d)
		}
	}
	if w.chance(r.slow) {
		if h := w.randomHost(true); h != nil {
			d := w.dur(5*time.Second, 60*time.Second)
			h.slowTill = w.now.Add(d)
			w.tracef("host %s executes orders slowly for %s", h.id, d)
		}
	}
	if w.chance(r.failover) {
		w.failover()
	}
	if w.chance(r.operator) {
		w.operatorAction()
	}
	if w.chance(r.churn) {
		w.shardChurn()
	}
	if w.chance(r.config) {
		w.runtimeConfigChange()
	}
	if w.chance(r.hostChurn) {
		if w.chance(0.6) {
			w.joinHost()
		} else {
			w.leaveHost()
		}
	}
}

func (w *World) dbHost(h *Host) *dbpb.Host { return w.st.Hosts[h.id] }

func (w *World) setAdmin(h *Host, a dbpb.HostAdmin) bool {
	return w.operator(&dbpb.Command_SetHostAdmin{SetHostAdmin: &dbpb.SetHostAdmin{HostId: h.id, Admin: a}}, false)
}

func (w *World) operatorAction() {
	h := w.hosts[w.rng.IntN(len(w.hosts))]
	dh := w.dbHost(h)
	if dh == nil || dh.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED {
		return
	}
	// At most one host (two in larger fleets) out of service at a time.
	inactive := 0
	for _, o := range w.st.Hosts {
		if o.Admin != dbpb.HostAdmin_HOST_ADMIN_ACTIVE && o.Admin != dbpb.HostAdmin_HOST_ADMIN_REPLACED {
			inactive++
		}
	}
	canDisable := inactive < 1+len(w.hosts)/6
	switch x := w.rng.IntN(11); {
	case x == 10:
		// Remove a host for good (force: it may still hold replicas, which
		// are then repaired elsewhere). Usually a dead one; rarely one that
		// is still running, which registers again on its next report.
		for _, c := range w.hosts {
			if c.permDead && w.dbHost(c) != nil {
				h = c
				break
			}
		}
		if !h.permDead && !w.chance(0.2) {
			return
		}
		if w.operator(&dbpb.Command_RemoveHost{RemoveHost: &dbpb.RemoveHost{HostId: h.id, Force: true}}, false) {
			w.stats.HostsRemoved++
		}
	case x < 3:
		// Cordon or uncordon.
		if dh.Admin == dbpb.HostAdmin_HOST_ADMIN_CORDONED {
			w.setAdmin(h, dbpb.HostAdmin_HOST_ADMIN_ACTIVE)
		} else if canDisable && dh.Admin == dbpb.HostAdmin_HOST_ADMIN_ACTIVE && w.setAdmin(h, dbpb.HostAdmin_HOST_ADMIN_CORDONED) {
			w.stats.Cordons++
		}
	case x < 4:
		// Drain one host at a time, only in fleets large enough.
		if len(w.hosts) < 5 || dh.Admin != dbpb.HostAdmin_HOST_ADMIN_ACTIVE || !canDisable {
			return
		}
		for _, o := range w.st.Hosts {
			if o.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINING || o.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINED {
				return
			}
		}
		if w.setAdmin(h, dbpb.HostAdmin_HOST_ADMIN_DRAINING) {
			w.stats.Drains++
		}
	case x < 5:
		// Bring a drained host back (not one leaving the fleet).
		if h.leaving {
			return
		}
		if dh.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINED || dh.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINING {
			w.setAdmin(h, dbpb.HostAdmin_HOST_ADMIN_ACTIVE)
		}
	default:
		// Maintenance window, usually with a reboot inside it.
		win := w.dur(15*time.Second, 90*time.Second)
		until := w.now.Add(win)
		if !w.operator(&dbpb.Command_SetHostAdmin{SetHostAdmin: &dbpb.SetHostAdmin{HostId: h.id, MaintenanceUntilUnixMs: until.UnixMilli(), MaintenanceOnly: true}}, false) {
			return
		}
		w.stats.Maintenances++
		if h.alive && w.chance(0.7) && w.downHosts() < 2 {
			w.stats.Crashes++
			w.crash(h, w.dur(2*time.Second, win), "maintenance reboot")
		}
	}
}

func (w *World) shardChurn() {
	if w.chance(0.5) || w.st.Shards.Len() <= 2 {
		regions := map[string]bool{}
		for _, h := range w.hosts {
			regions[h.region] = true
		}
		// Sometimes the operator re-creates a deleted shard ID (its old
		// replicas may still run, waiting for their cleanup).
		var reuse []uint64
		if w.chance(0.3) {
			for _, id := range sortedKeys(w.groups) {
				if w.st.Shards.Get(id) == nil {
					reuse = append(reuse, id)
					break
				}
			}
		}
		w.createShardsWithIDs(1+w.rng.IntN(3), len(regions), reuse)
		return
	}
	ids := w.st.SortedShardIDs()
	id := ids[w.rng.IntN(len(ids))]
	if w.operator(&dbpb.Command_DeleteShards{DeleteShards: &dbpb.DeleteShards{ShardIds: []uint64{id}}}, false) {
		w.stats.ShardsDeleted++
		w.forgetShard(id)
		if gs := w.groups[id]; len(gs) > 0 {
			gs[len(gs)-1].deleted = true
		}
	}
}

func (w *World) runtimeConfigChange() {
	c := proto.CloneOf(w.st.Config)
	switch w.rng.IntN(5) {
	case 4:
		// Balancing switched, re-tuned or made stricter while moves run.
		w.randomBalance(c)
	case 0:
		nc := w.randomDBConfig()
		nc.ShardOverrides = c.ShardOverrides
		c = nc
	case 1:
		c.DeadTimeoutMs = c.SuspectTimeoutMs + uint64(3000+1000*w.rng.IntN(30))
		c.HostGcAfterMs = max(c.HostGcAfterMs, c.DeadTimeoutMs)
	case 2:
		ids := w.st.SortedShardIDs()
		if len(ids) == 0 {
			return
		}
		id := ids[w.rng.IntN(len(ids))]
		if c.ShardOverrides == nil {
			c.ShardOverrides = map[uint64]*dbpb.ShardTimeouts{}
		}
		c.ShardOverrides[id] = &dbpb.ShardTimeouts{DeadTimeoutMs: c.SuspectTimeoutMs + uint64(2000+1000*w.rng.IntN(40))}
	case 3:
		c.MaxConcurrentRepairs = uint32([]int{1, 2, 3, 64}[w.rng.IntN(4)])
		c.MaxRepairsPerHost = uint32(1 + w.rng.IntN(4))
	}
	if w.operator(&dbpb.Command_SetConfig{SetConfig: &dbpb.SetConfig{Config: c}}, false) {
		w.stats.ConfigChanges++
	}
}

// stopFaults ends the fault phase: crashed hosts come back soon, partitions
// heal, orders are fast again and maintenance windows end. Hosts dead for
// good stay dead; drains stay, and most runs lift the cordons.
func (w *World) stopFaults() {
	w.settled = true
	w.tracef("faults stop")
	if w.cfg.Faults.HostChurn && w.chance(0.3) {
		// The operator adds capacity once the incident is over: balancing
		// must fill the new host within the convergence bound.
		w.joinHost()
	}
	if w.chance(0.7) {
		for _, h := range w.hosts {
			if dh := w.dbHost(h); dh != nil && dh.Admin == dbpb.HostAdmin_HOST_ADMIN_CORDONED {
				w.setAdmin(h, dbpb.HostAdmin_HOST_ADMIN_ACTIVE)
			}
		}
	}
	for _, h := range w.hosts {
		if !h.alive && !h.permDead {
			back := w.now.Add(w.dur(0, 5*time.Second))
			if h.restartAt.IsZero() || h.restartAt.After(back) {
				h.restartAt = back
			}
		}
		if h.partTill.After(w.now) {
			h.partTill = w.now // healed now (the invariants remember when)
		}
		h.slowTill = time.Time{}
		if dh := w.dbHost(h); dh != nil && dh.MaintenanceUntilUnixMs != 0 {
			w.operator(&dbpb.Command_SetHostAdmin{SetHostAdmin: &dbpb.SetHostAdmin{HostId: h.id, MaintenanceOnly: true}}, false)
		}
	}
}

// ---------------------------------------------------------------------------
// Hostile host.
//
// One host of the seed (Faults.Hostile, half of the seeds) holds a valid
// certificate but lies: among its honest reports it sends forged membership
// claims, for the whole run. Claims on its own replicas (random
// ConfigChangeIDs, random voter sets with made-up replica IDs, recorded
// members listed as removed, its own ConfigChangeID and leadership
// inflated), reports of replicas it does not run (shards it is not a member
// of, fake replica IDs), and order results it never executed. Its orders are
// still executed honestly (a host that does not execute them is a host that
// fails, which the other faults cover). The planner must never believe it
// into removing a voter or deleting a member's data; convergence is excused
// only for shards where the hostile host itself holds a member.

// chooseHostile picks the seed's hostile host, if any. It draws from its
// own random stream, so seeds without one run as before.
func (w *World) chooseHostile() {
	if !w.cfg.Faults.Hostile || len(w.hosts) == 0 {
		return
	}
	w.hrng = rand.New(rand.NewPCG(w.cfg.Seed, 0xbad))
	if w.hrng.IntN(2) == 0 {
		return
	}
	w.hostile = w.hosts[w.hrng.IntN(len(w.hosts))]
	w.tracef("host %s is hostile: it forges membership claims", w.hostile.id)
}

// forgedMembership invents a claim about shard sid.
func (w *World) forgedMembership(sid uint64) *drummerpb.Membership {
	r := w.hrng
	var ids []uint64
	var next, ccid uint64 = 10, 1
	if sh := w.st.Shards.Get(sid); sh != nil {
		for _, m := range sh.Members {
			ids = append(ids, m.ReplicaId)
		}
		next = sh.NextReplicaId
	}
	if g := w.newestGroup(sid); g != nil {
		ccid = g.ccid
	}
	ms := &drummerpb.Membership{Voters: map[uint64]string{}, NonVoting: map[uint64]string{}}
	switch r.IntN(5) {
	case 0:
		ms.ConfigChangeId = ccid
	case 1:
		ms.ConfigChangeId = ccid + 1 + uint64(r.IntN(3))
	case 2:
		ms.ConfigChangeId = uint64(r.IntN(int(ccid) + 1))
	default:
		ms.ConfigChangeId = ccid + uint64(r.Int64N(1<<40))
	}
	fake := func() uint64 {
		if r.IntN(2) == 0 {
			return next + uint64(r.IntN(5)) // not allocated yet
		}
		return uint64(1 + r.IntN(int(next))) // maybe allocated, maybe removed
	}
	for _, id := range ids {
		switch r.IntN(4) {
		case 0:
			ms.Removed = append(ms.Removed, id)
		case 1:
		case 2:
			ms.NonVoting[id] = "10.66.0.1:1"
		default:
			ms.Voters[id] = "10.66.0.1:1"
		}
	}
	for range r.IntN(3) {
		id := fake()
		if r.IntN(2) == 0 {
			ms.Voters[id] = "10.66.0.2:1"
		} else {
			ms.Removed = append(ms.Removed, id)
		}
	}
	return ms
}

// forge adds the hostile host's lies to a report it is about to send.
func (w *World) forge(req *drummerpb.ReportRequest) {
	r := w.hrng
	w.stats.ForgedReports++
	running := map[uint64]bool{}
	for _, rr := range req.Replicas {
		running[rr.ShardId] = true
		if r.IntN(2) == 0 {
			continue
		}
		rr.Membership = w.forgedMembership(rr.ShardId)
		w.stats.ForgedClaims++
		if r.IntN(4) == 0 {
			rr.ConfigChangeId = rr.Membership.ConfigChangeId
			rr.LeaderId, rr.Term = rr.ReplicaId, rr.Term+uint64(r.IntN(100))
			rr.Voters = sortedKeys(rr.Membership.Voters)
		}
	}
	ids := w.st.SortedShardIDs()
	for range r.IntN(3) {
		var sid uint64
		if len(ids) > 0 && r.IntN(4) != 0 {
			sid = ids[r.IntN(len(ids))]
		} else {
			sid = 1 + uint64(r.IntN(int(w.nextShardID)+5))
		}
		if running[sid] {
			continue
		}
		running[sid] = true
		ms := w.forgedMembership(sid)
		// A replica ID no shard has handed out: the report must not be
		// mistaken for a member's (nor condemn one as a zombie).
		rid := 1_000_000 + uint64(r.IntN(1000))
		req.Replicas = append(req.Replicas, &drummerpb.ReplicaReport{ShardId: sid, ReplicaId: rid, LeaderId: rid,
			Term: uint64(r.IntN(1000)), ConfigChangeId: ms.ConfigChangeId, Role: drummerpb.ReplicaRole_REPLICA_ROLE_VOTER,
			Voters: sortedKeys(ms.Voters), Membership: ms, App: "kv"})
		w.stats.ForgedClaims++
	}
	for range r.IntN(2) {
		if len(ids) == 0 {
			break
		}
		sid := ids[r.IntN(len(ids))]
		req.Results = append(req.Results, &drummerpb.OrderResult{Id: fmt.Sprintf("forged/%d/%d", sid, r.Uint64()),
			Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_DONE, ShardId: sid, Membership: w.forgedMembership(sid)})
		w.stats.ForgedClaims++
	}
}

// hostileMember reports whether the hostile host holds a member of the
// shard, in the DB or in truth (convergence is excused for those shards).
func (w *World) hostileMember(sid uint64) bool {
	h := w.hostile
	if h == nil {
		return false
	}
	if sh := w.st.Shards.Get(sid); sh != nil && db.MemberOnHost(sh, h.id) != nil {
		return true
	}
	if g := w.newestGroup(sid); g != nil {
		for _, m := range []map[uint64]string{g.voters, g.nonVoting} {
			for _, a := range m {
				if a == h.addr {
					return true
				}
			}
		}
	}
	return false
}
