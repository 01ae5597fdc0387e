package planner

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

type planner struct {
	in  Input
	st  *db.State
	obs *Observed
	now time.Time
	cfg *dbpb.Config
	rng *rand.Rand
	lim Limits
	sc  *ShardConfig
	out *Output

	// Replicas planned this round, per host (on top of the DB's count),
	// and the load index adjusted by them (taken on first use).
	added map[string]int
	loads *db.LoadIndex
	// Repairs in flight, overall and by the host receiving the new replica.
	inFlight        int
	inFlightPerHost map[string]int
	ordersPerHost   map[string]int
	placements      int
	newRepairs      int
	cleanups        int
	// Hosts forgotten by a decision of this round.
	forgotten map[string]bool
	// Repairs held back by a limit this round (balancing waits for them).
	deferred int
	bal      balancer
}

// Plan runs one planning round. It does not modify its input.
func Plan(in Input) *Output {
	p := newPlanner(in)
	p.hosts()
	p.shards()
	p.out.balanceWhy = p.bal.why
	return p.out
}

func newPlanner(in Input) *planner {
	p := &planner{
		in:              in,
		st:              in.State,
		obs:             in.Obs,
		now:             in.Now,
		cfg:             in.State.Config,
		rng:             rand.New(rand.NewPCG(in.Seed, in.Seed^0x9e3779b97f4a7c15)),
		lim:             in.Limits,
		sc:              in.ShardConfig,
		added:           map[string]int{},
		inFlightPerHost: map[string]int{},
		ordersPerHost:   map[string]int{},
		forgotten:       map[string]bool{},
		out: &Output{
			ShardOrders: map[uint64][]HostOrder{},
			HostOrders:  map[string][]*drummerpb.Order{},
			Shards:      map[uint64]*ShardReport{},
			Hosts:       map[string]*HostReport{},
		},
	}
	if p.obs == nil {
		p.obs = NewObserved()
	}
	if p.lim == (Limits{}) {
		p.lim = DefaultLimits()
	}
	if p.sc == nil {
		p.sc = DefaultShardConfig()
	}
	p.initBalance()
	// O(repairs in flight), not O(shards): the DB keeps the index.
	for _, id := range p.st.RepairingShards() {
		sh := p.st.Shards.Get(id)
		p.bal.countMove(sh.Repair)
		if !p.stalled(sh) {
			p.inFlight++
			if sh.Repair.NewHostId != "" {
				p.inFlightPerHost[sh.Repair.NewHostId]++
			}
		}
	}
	return p
}

// load is the number of replicas on a host, counting those planned this
// round.
func (p *planner) load(hostID string) int { return p.st.HostMembers(hostID) + p.added[hostID] }

// stalled reports whether a shard's repair cannot progress because the
// shard has no live quorum or no leader: no membership change commits, no
// data moves. Such a repair does not hold a repair slot; otherwise shards
// that lost their quorum for good would hold the slots forever and starve
// every other repair. It takes a slot again when its quorum and leader
// return (possibly exceeding the limits until other repairs finish).
func (p *planner) stalled(sh *dbpb.Shard) bool {
	v := p.newShardView(sh)
	return v.liveVoters < db.Quorum(len(v.voters)) || v.leader == 0
}

func (p *planner) decide(d *dbpb.Decision) { p.out.Decisions = append(p.out.Decisions, d) }

func (p *planner) ms(d uint64) time.Duration { return time.Duration(d) * time.Millisecond }

func (p *planner) unixMs(ms int64) time.Time { return time.UnixMilli(ms) }

// lastHeard is when the host was last heard from, never earlier than the
// moment this scheduler's observations became complete.
func (p *planner) lastHeard(hostID string) time.Time {
	last := p.in.ObsSince
	if o := p.obs.Hosts[hostID]; o != nil && o.LastHeard.After(last) {
		last = o.LastHeard
	}
	return last
}

// hostLiveness judges a host with the given timeouts.
func (p *planner) hostLiveness(hostID string, suspectMs, deadMs uint64) (Liveness, time.Duration) {
	h := p.st.Hosts[hostID]
	silence := max(0, p.now.Sub(p.lastHeard(hostID)))
	if h == nil || h.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED {
		return Dead, silence
	}
	switch {
	case silence >= p.ms(deadMs):
		return Dead, silence
	case silence >= p.ms(suspectMs):
		return Suspect, silence
	}
	return Up, silence
}

// heard reports whether this scheduler received a report from the host
// within the suspect timeout. Liveness gives a host that has not reported
// since ObsSince the benefit of the doubt (a new scheduler must not declare
// hosts dead on missing memory), but only a host actually heard from may
// register or receive a new replica.
func (p *planner) heard(hostID string) bool {
	o := p.obs.Hosts[hostID]
	return o != nil && !o.LastHeard.IsZero() && p.now.Sub(o.LastHeard) < p.ms(p.cfg.SuspectTimeoutMs)
}

func (p *planner) globalLiveness(hostID string) (Liveness, time.Duration) {
	return p.hostLiveness(hostID, p.cfg.SuspectTimeoutMs, p.cfg.DeadTimeoutMs)
}

func (p *planner) inMaintenance(h *dbpb.Host) bool {
	return h != nil && h.MaintenanceUntilUnixMs != 0 && p.now.Before(p.unixMs(h.MaintenanceUntilUnixMs))
}

// evalHosts lists the hosts to evaluate: registered or reporting.
func (p *planner) evalHosts() []string {
	if p.in.All {
		set := map[string]struct{}{}
		for id := range p.st.Hosts {
			set[id] = struct{}{}
		}
		for id := range p.obs.Hosts {
			set[id] = struct{}{}
		}
		ids := make([]string, 0, len(set))
		for id := range set {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return ids
	}
	ids := slices.Clone(p.in.Hosts)
	slices.Sort(ids)
	return slices.Compact(ids)
}

func (p *planner) evalShards() []uint64 {
	if p.in.All {
		return p.st.SortedShardIDs()
	}
	ids := slices.Clone(p.in.Shards)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	return ids
}

// hosts registers reporting hosts, keeps the host records tidy and turns
// recorded cleanups into stop orders.
func (p *planner) hosts() {
	for _, id := range p.evalHosts() {
		h := p.st.Hosts[id]
		o := p.obs.Hosts[id]
		rep := &HostReport{HostID: id, Registered: h != nil}
		rep.Liveness, _ = p.globalLiveness(id)
		if h == nil && p.heard(id) {
			rep.Liveness = Up // reporting; registered by this round
		}
		p.out.Hosts[id] = rep
		// Only a current report registers (or re-registers) a host: the
		// observations of a host that went silent, or was forgotten, must
		// not bring it back (nor let it claim its address from the
		// identity now using it).
		if o != nil && p.heard(id) {
			p.register(h, o, rep)
		}
		if h == nil {
			continue
		}
		rep.Replicas = p.load(id)
		p.housekeeping(h, rep)
		p.hostCleanups(h, o, rep)
		if o != nil && rep.Liveness == Up {
			p.findZombies(h, o)
		}
	}
}

func (p *planner) register(h *dbpb.Host, o *HostObs, rep *HostReport) {
	apps := slices.Clone(o.Apps)
	slices.Sort(apps)
	apps = slices.Compact(apps)
	if h != nil {
		if h.RaftAddress != o.RaftAddress {
			rep.Explanation = fmt.Sprintf("reports raft address %s but is registered with %s", o.RaftAddress, h.RaftAddress)
			return
		}
		if h.ApiAddress == o.APIAddress && maps.Equal(h.Labels, o.Labels) && slices.Equal(h.Apps, apps) {
			return
		}
	}
	reg := &dbpb.RegisterHost{HostId: o.ID, RaftAddress: o.RaftAddress, ApiAddress: o.APIAddress, Labels: o.Labels, Apps: apps}
	if db.ValidateHostRegistration(reg) != nil {
		return
	}
	if other := p.st.HostByRaftAddress(o.RaftAddress); other != nil && other.Id != o.ID &&
		other.Admin != dbpb.HostAdmin_HOST_ADMIN_REPLACED {
		// Two processes cannot listen on one address, so if the registered
		// owner has gone quiet this is the same machine with a new identity
		// (its data directory was wiped). Its old replicas are lost for good.
		if l, silence := p.globalLiveness(other.Id); l == Up {
			rep.Explanation = fmt.Sprintf("raft address %s is registered to host %s, which reported %s ago", o.RaftAddress, other.Id, silence.Round(time.Second))
			return
		}
		if !p.forgotten[other.Id] { // forgotten this round: the address is free
			p.decide(&dbpb.Decision{Kind: &dbpb.Decision_ReplaceHost{ReplaceHost: &dbpb.ReplaceHost{OldHostId: other.Id, NewHostId: o.ID}}})
		}
	}
	p.decide(&dbpb.Decision{Kind: &dbpb.Decision_RegisterHost{RegisterHost: reg}})
}

func (p *planner) housekeeping(h *dbpb.Host, rep *HostReport) {
	if h.MaintenanceUntilUnixMs != 0 && !p.inMaintenance(h) {
		p.decide(&dbpb.Decision{Kind: &dbpb.Decision_EndMaintenance{EndMaintenance: &dbpb.EndMaintenance{HostId: h.Id}}})
	}
	members := p.load(h.Id)
	if h.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINING && members == 0 {
		p.decide(&dbpb.Decision{Kind: &dbpb.Decision_MarkDrained{MarkDrained: &dbpb.MarkDrained{HostId: h.Id}}})
	}
	if members == 0 {
		l, silence := p.globalLiveness(h.Id)
		if h.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED || (l == Dead && silence >= p.ms(p.cfg.HostGcAfterMs)) {
			p.decide(&dbpb.Decision{Kind: &dbpb.Decision_ForgetHost{ForgetHost: &dbpb.ForgetHost{HostId: h.Id}}})
			p.forgotten[h.Id] = true
		}
	}
	switch {
	case h.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED:
		rep.Explanation = "replaced: another host identity registered on its raft address"
	case h.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINING:
		rep.Explanation = fmt.Sprintf("draining: %d replicas remaining", members)
	case p.inMaintenance(h):
		rep.Explanation = fmt.Sprintf("maintenance for %s more: its replicas are not repaired", p.unixMs(h.MaintenanceUntilUnixMs).Sub(p.now).Round(time.Second))
	}
}

func compareKeys(a, b ReplicaKey) int {
	return cmp.Or(cmp.Compare(a.ShardID, b.ShardID), cmp.Compare(a.ReplicaID, b.ReplicaID))
}

func (p *planner) newOrder(id string) *drummerpb.Order {
	return &drummerpb.Order{Id: id, Epoch: p.in.Epoch}
}

// hostCleanups orders a host to stop and delete replicas that are no longer
// members, and forgets each cleanup once the host confirms it.
func (p *planner) hostCleanups(h *dbpb.Host, o *HostObs, rep *HostReport) {
	cleanups := p.st.CleanupsFor(h.Id)
	if len(cleanups) == 0 {
		return
	}
	if l, _ := p.globalLiveness(h.Id); l == Dead {
		return // nothing to do until it returns (or is forgotten)
	}
	var orders []*drummerpb.Order
	for _, c := range cleanups {
		id := stopOrderID(p.in.Epoch, c.ShardId, c.ReplicaId)
		if o != nil {
			if r := o.Results[id]; r != nil && r.Outcome == drummerpb.OrderOutcome_ORDER_OUTCOME_DONE {
				p.decide(&dbpb.Decision{Kind: &dbpb.Decision_DoneCleanup{DoneCleanup: &dbpb.DoneCleanup{HostId: h.Id, ShardId: c.ShardId, ReplicaId: c.ReplicaId}}})
				continue
			}
		}
		if p.ordersPerHost[h.Id] >= p.lim.MaxOrdersPerHost {
			break
		}
		p.ordersPerHost[h.Id]++
		ord := p.newOrder(id)
		ord.Kind = &drummerpb.Order_Stop{Stop: &drummerpb.StopReplicaOrder{ShardId: c.ShardId, ReplicaId: c.ReplicaId, RemoveData: true}}
		orders = append(orders, ord)
	}
	p.out.HostOrders[h.Id] = orders
}

// findZombies records replicas that run (or have data) on a host although
// they are not members there. Apply re-checks each one against the DB. It
// runs for every host evaluated, so the common case (every replica a
// member here) allocates nothing and sorts nothing: only the zombies
// found are sorted, for a deterministic order under MaxCleanups.
func (p *planner) findZombies(h *dbpb.Host, o *HostObs) {
	type zombie struct {
		k      ReplicaKey
		reason string
	}
	var running, onDisk []zombie
	for _, r := range o.Replicas {
		k := ReplicaKey{r.ShardId, r.ReplicaId}
		if reason := p.zombieReason(h, k); reason != "" {
			running = append(running, zombie{k, reason})
		}
	}
	if o.DiskKnown {
		var removed map[ReplicaKey]bool
		for k := range o.Disk {
			if r := o.Replicas[k.ShardID]; r != nil && r.ReplicaId == k.ReplicaID {
				continue
			}
			reason := p.zombieReason(h, k)
			if reason == "" {
				continue
			}
			if removed == nil {
				// Replicas the host confirmed stopped and deleted have no
				// data any more (dragonboat never restarts a removed
				// replica), whatever an older disk inventory still lists;
				// re-condemning them would flap.
				removed = map[ReplicaKey]bool{}
				for id, r := range o.Results {
					if r.Outcome == drummerpb.OrderOutcome_ORDER_OUTCOME_DONE && OrderKindOf(id) == OrderStop {
						removed[ReplicaKey{r.ShardId, r.ReplicaId}] = true
					}
				}
			}
			if !removed[k] {
				onDisk = append(onDisk, zombie{k, reason + " (data on disk)"})
			}
		}
	}
	if len(running)+len(onDisk) == 0 {
		return
	}
	slices.SortFunc(running, func(a, b zombie) int { return compareKeys(a.k, b.k) })
	slices.SortFunc(onDisk, func(a, b zombie) int { return compareKeys(a.k, b.k) })
	for _, z := range slices.Concat(running, onDisk) {
		if p.cleanups >= p.lim.MaxCleanups {
			return
		}
		if _, ok := p.st.Cleanups[db.CleanupKey{HostID: h.Id, ShardID: z.k.ShardID, ReplicaID: z.k.ReplicaID}]; ok {
			continue
		}
		p.cleanups++
		p.decide(&dbpb.Decision{Kind: &dbpb.Decision_AddCleanup{AddCleanup: &dbpb.AddCleanup{
			HostId: h.Id, ShardId: z.k.ShardID, ReplicaId: z.k.ReplicaID, Reason: "zombie: " + z.reason}}})
	}
}

// zombieReason tells why replica k on host h is a zombie, or "" when it
// is not one (a member there, or not known to be allocated).
func (p *planner) zombieReason(h *dbpb.Host, k ReplicaKey) string {
	sh, ok := p.st.Shards.Lookup(k.ShardID)
	if !ok {
		return "shard does not exist (deleted)"
	}
	if m := db.Member(sh, k.ReplicaID); m != nil {
		if m.HostId == h.Id {
			return ""
		}
		return fmt.Sprintf("replica belongs to host %s", m.HostId)
	}
	if k.ReplicaID >= sh.NextReplicaId {
		return "" // not allocated as far as we know: never touch it
	}
	if sh.Repair != nil && sh.Repair.NewReplicaId == k.ReplicaID {
		return ""
	}
	return "no longer a member"
}
