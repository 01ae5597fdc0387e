package scheduler

import (
	"google.golang.org/protobuf/reflect/protoreflect"
	"maps"
	"slices"
	"time"

	"github.com/google/btree"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/planner"
	"github.com/drummerhq/drummer/internal/reportproto"
)

// Config tunes a Node. The zero value of every field but Started is
// usable.
type Config struct {
	// Started is when this node's observations began: silence from before
	// it is not evidence of death (planner.Input.ObsSince).
	Started time.Time
	// Salt makes this node's tie-breaking differ from its peers'.
	Salt uint64
	// Tick is the planning period the driver uses (default 200ms), Sweep
	// the period within which the patrol visits every shard and host when
	// its rate allows (default 2s).
	Tick, Sweep time.Duration
	// PatrolPerSecond bounds the shards the patrol adds per second of
	// rounds (default 2,000, a few percent of a core), so its cost stays
	// bounded at any shard count; with more shards than Sweep allows, a patrol pass takes
	// longer. Time-driven changes that matter sooner (liveness, repair
	// step deadlines) have their own timers.
	PatrolPerSecond int
	// PatrolHostsPerSecond bounds the hosts the patrol adds per second
	// (default 250): a host's evaluation reads every replica it reports and
	// has on disk (the zombie check), so at 10,000 hosts of 100 replicas a
	// pass every Sweep would cost more than the shards' patrol; at 1,000 a
	// second it was a quarter of the leader's loop. What changes on a host
	// is planned when it changes; the patrol only catches what time alone
	// changes (a maintenance window's end, a dead host's forgetting), and
	// zombies no change revealed, within hosts/250 seconds.
	PatrolHostsPerSecond int
	// MaxShardsPerRound bounds a round (default 20,000): what does not fit
	// is carried to the next round.
	MaxShardsPerRound int
	// PruneEvery is the soft-state pruning period (default 10s).
	PruneEvery time.Duration
	// ShardConfig and Limits are passed to the planner. Zero Limits are
	// the planner's defaults with MaxPlacements raised to DefaultPlacements.
	ShardConfig *planner.ShardConfig
	Limits      planner.Limits
}

// DefaultPlacements is the default number of initial placements per round.
// The planner's own default (512) made a 333,334-shard launch take at least
// 130 s of rounds, and every round evaluated MaxShardsPerRound pending
// shards to place 512 of them: the rest waited, and were evaluated again,
// in the next round. Each host is still protected by the per-host order
// limit.
const DefaultPlacements = 10_000

func (c *Config) setDefaults() {
	if c.Tick <= 0 {
		c.Tick = 200 * time.Millisecond
	}
	if c.Sweep <= 0 {
		c.Sweep = 2 * time.Second
	}
	if c.PatrolPerSecond == 0 {
		c.PatrolPerSecond = 2_000
	}
	if c.PatrolHostsPerSecond == 0 {
		c.PatrolHostsPerSecond = 250
	}
	if c.MaxShardsPerRound <= 0 {
		c.MaxShardsPerRound = 20_000
	}
	if c.PruneEvery <= 0 {
		c.PruneEvery = 10 * time.Second
	}
	if c.Limits == (planner.Limits{}) {
		c.Limits = planner.DefaultLimits()
		c.Limits.MaxPlacements = DefaultPlacements
	}
}

// Node is the scheduler's state machine. It is not safe for concurrent
// use: one goroutine (the server's loop, or the simulator) owns it.
type Node struct {
	cfg Config
	obs *planner.Observed
	// resultAt records when each order result first arrived (with its
	// outcome), for expiry and for the planner's start timeouts.
	resultAt map[string]map[string]time.Time
	dirtyS   map[uint64]struct{}
	dirtyH   map[string]struct{}
	// dirtyP holds the shards marked by progress reports (markProgress);
	// starting ones wait in settle.
	dirtyP map[uint64]struct{}
	settle settle

	active bool
	epoch  uint64
	round  uint64
	// credit is set by Become: the first round credits the reports taken
	// while following (creditFollowerReports).
	credit bool
	// backlog holds the shards waiting to be planned, in ID order: what
	// changed, what the planner asked to see again, and what did not fit
	// in a round; sweep holds the patrol's, planned after them (a new
	// shard does not wait behind a new leader's first pass). A round takes
	// the lowest MaxShardsPerRound, so its cost is that of what it takes
	// and what was added, never of the whole backlog (a launch makes every
	// shard dirty at once).
	backlog, sweep *btree.BTreeG[uint64]
	// unplaced holds the changed shards that wait for their initial
	// placement; a round takes up to Limits.MaxPlacements of them before
	// the backlog. In a launch the backlog's lowest IDs are the shards
	// already placed, re-planned as their hosts report them starting, so
	// the shards still to place waited behind them in ID order: placement
	// crept through the ID space as a wave (400 shards a second at
	// 333,334 shards) instead of handing every host its orders at once.
	unplaced *btree.BTreeG[uint64]
	// queued holds the shards in backlog or unplaced. A launch re-marks
	// a starting shard on every report of each of its replicas, 100,000
	// shards a round at 10,000 hosts, most of them queued already: a map
	// lookup settles those, where the trees' inserts were a quarter of
	// the leader's loop.
	queued map[uint64]struct{}

	// silentAfter is the gap between two reports after which a host's
	// shards are re-planned when it reports again: two report intervals
	// (at least 2 s). A fixed 2 s re-planned every shard of every host on
	// every report once report_interval was 5 s.
	silentAfter time.Duration

	patrol patrol
	live   liveness
	bal    balance
	// Hosts taking part in repairs in flight (attention.go).
	attention        map[string]struct{}
	attentionChanged bool
	status           status
	lastPrune        time.Time
	lastFullPrune    time.Time
	pruneMark        db.PruneMark // the DB's mark at the last full prune
	forgotten        []string     // hosts pruned, until TakeForgotten
	lastRep          time.Time    // repairing shards last re-planned

	// Orders in force: per shard (repairs, starts) and per host (cleanups).
	shardOrders map[uint64][]planner.HostOrder
	hostOrders  map[string][]*drummerpb.Order
	byHost      map[string]map[uint64][]*drummerpb.Order
	changed     map[string]struct{} // hosts whose orders changed this round
}

// New returns a Node that is not leading.
func New(cfg Config) *Node {
	cfg.setDefaults()
	n := &Node{
		cfg:      cfg,
		obs:      planner.NewObserved(),
		resultAt: map[string]map[string]time.Time{},
		dirtyS:   map[uint64]struct{}{},
		dirtyH:   map[string]struct{}{},
		dirtyP:   map[uint64]struct{}{},

		silentAfter: 2 * time.Second,
	}
	n.status.init()
	n.settle.reset()
	n.resetOrders()
	return n
}

func (n *Node) resetOrders() {
	n.shardOrders = map[uint64][]planner.HostOrder{}
	n.hostOrders = map[string][]*drummerpb.Order{}
	n.byHost = map[string]map[uint64][]*drummerpb.Order{}
	n.changed = map[string]struct{}{}
	n.backlog = btree.NewOrderedG[uint64](32)
	n.sweep = btree.NewOrderedG[uint64](32)
	n.unplaced = btree.NewOrderedG[uint64](32)
	n.queued = map[uint64]struct{}{}
}

// queue puts a shard to be planned in the backlog, or with the shards
// awaiting their initial placement.
func (n *Node) queue(st *db.State, id uint64) {
	n.settle.release(id)
	if _, ok := n.queued[id]; ok {
		return // planned when its queue reaches it, placed or not
	}
	n.queued[id] = struct{}{}
	if unplaced(st, id) {
		n.unplaced.ReplaceOrInsert(id)
		n.backlog.Delete(id)
	} else {
		n.backlog.ReplaceOrInsert(id)
		n.unplaced.Delete(id)
	}
	n.sweep.Delete(id)
}

// unplaced tells whether a shard waits for its initial placement.
func unplaced(st *db.State, id uint64) bool {
	sh := st.Shards.Get(id)
	return sh != nil && st.Launched && db.AwaitsPlacement(sh)
}

// Become makes the node the scheduler under epoch: it forgets the orders
// of any earlier epoch and re-plans everything (the patrol and liveness
// restart from the DB on the next round).
func (n *Node) Become(epoch uint64) {
	n.resetOrders()
	n.active, n.epoch, n.credit = true, epoch, true
	n.patrol.reset()
	n.live.reset()
	n.bal.reset()
	n.attention, n.attentionChanged = nil, true
}

// Demote stops the node planning; its observations stay warm.
func (n *Node) Demote() {
	n.resetOrders()
	n.active, n.epoch = false, 0
	n.patrol.reset()
	n.live.reset()
	n.bal.reset()
	n.attention, n.attentionChanged = nil, true
	n.status.reset()
	n.settle.reset()
	clear(n.dirtyP)
}

// Active reports whether the node holds an epoch, and which.
func (n *Node) Active() (uint64, bool) { return n.epoch, n.active }

// Observed is the soft state, for read-only use by the owner's goroutine.
func (n *Node) Observed() *planner.Observed { return n.obs }

// Started is when the node's observations began.
func (n *Node) Started() time.Time { return n.cfg.Started }

// Ready is the effect of a round.
type Ready struct {
	// Epoch the decisions and orders were made under.
	Epoch uint64
	// Decisions to propose, in order, in one command.
	Decisions []*dbpb.Decision
	// OrderHosts lists the hosts whose orders in force changed; read them
	// with OrdersFor.
	OrderHosts []string
	// Planned is how many shards and hosts the round evaluated.
	PlannedShards, PlannedHosts int
	// Output is the planner's output, for tests and the simulator.
	Output *planner.Output
	// Input is what the planner was given (the simulator's oracle).
	Input planner.Input
}

// Round runs one planning round on st (a view the caller will not modify
// while the round runs) given what the DB changed since the previous
// round. A node that is not leading only tracks the DB (cheaply) and
// returns an empty Ready.
func (n *Node) Round(st *db.State, dirty db.Dirty, now time.Time) Ready {
	if !n.active {
		return Ready{}
	}
	if n.credit {
		n.credit = false
		n.creditFollowerReports(st, now)
	}
	n.Absorb(st, dirty, now)
	shards := n.dirtyS
	hosts := n.dirtyH
	n.dirtyS = map[uint64]struct{}{}
	n.dirtyH = map[string]struct{}{}
	window := settleWindow(st.Config.ReportIntervalMs)
	for id := range n.dirtyP {
		switch {
		case hasKey(shards, id):
		case window > 0 && starting(st, id):
			n.settle.hold(id, now.Add(window))
		default:
			shards[id] = struct{}{}
		}
	}
	clear(n.dirtyP)
	n.settle.due(now, shards)
	for _, c := range n.live.fire(st, n.obs, n.cfg.Started, now) {
		hosts[c.host] = struct{}{}
		if c.shards {
			for sid := range n.patrol.hostShards[c.host] {
				shards[sid] = struct{}{}
			}
		}
	}
	// Repairs in flight have step deadlines: re-plan them every second
	// (bounded by the DB's max_concurrent_repairs).
	if now.Sub(n.lastRep) >= time.Second {
		n.lastRep = now
		for _, id := range st.RepairingShards() {
			shards[id] = struct{}{}
		}
		n.updateAttention(st)
		for id := range n.live.unreg {
			hosts[id] = struct{}{}
		}
	}
	swept := map[uint64]struct{}{}
	n.patrol.chunk(st, now, n.cfg, swept, hosts)
	n.feedBalance(st, shards, now)

	in := n.input(st, now)
	n.balanceInput(&in, st, now)
	in.Seed = n.round*0x9e3779b97f4a7c15 + n.cfg.Salt
	n.round++
	for id := range shards {
		n.queue(st, id)
	}
	for id := range swept {
		switch {
		case hasKey(n.queued, id):
		case unplaced(st, id):
			// Found by the patrol: placed first all the same.
			n.unplaced.ReplaceOrInsert(id)
			n.queued[id] = struct{}{}
		default:
			n.sweep.ReplaceOrInsert(id)
		}
	}
	in.Shards = make([]uint64, 0, min(n.unplaced.Len()+n.backlog.Len()+n.sweep.Len(), n.cfg.MaxShardsPerRound))
	for len(in.Shards) < min(n.cfg.MaxShardsPerRound, in.Limits.MaxPlacements) {
		id, ok := n.unplaced.DeleteMin()
		if !ok {
			break
		}
		delete(n.queued, id)
		in.Shards = append(in.Shards, id)
	}
	for _, q := range []*btree.BTreeG[uint64]{n.backlog, n.sweep, n.unplaced} {
		for len(in.Shards) < n.cfg.MaxShardsPerRound {
			id, ok := q.DeleteMin()
			if !ok {
				break
			}
			delete(n.queued, id)
			in.Shards = append(in.Shards, id)
		}
	}
	slices.Sort(in.Shards)
	in.Hosts = slices.Sorted(maps.Keys(hosts))
	if in.Hosts == nil {
		in.Hosts = []string{}
	}
	if len(in.Shards) == 0 && len(in.Hosts) == 0 {
		n.maybePrune(st, now)
		return Ready{Epoch: n.epoch, Input: in}
	}
	out := planner.Plan(in)
	n.balanceOutput(out, now)
	for id, orders := range out.ShardOrders {
		n.setShardOrders(id, orders)
	}
	for _, id := range in.Shards {
		if _, ok := out.ShardOrders[id]; !ok {
			n.setShardOrders(id, nil)
		}
	}
	for _, id := range in.Hosts {
		orders, ok := out.HostOrders[id]
		if !ok && st.Hosts[id] != nil {
			continue
		}
		if !slices.EqualFunc(n.hostOrders[id], orders, sameOrder) {
			n.changed[id] = struct{}{}
		}
		if len(orders) == 0 {
			delete(n.hostOrders, id)
		} else {
			n.hostOrders[id] = orders
		}
	}
	n.status.record(st, in.Shards, out.Shards)
	for _, id := range out.Again {
		n.queue(st, id)
	}
	n.maybePrune(st, now)
	r := Ready{Epoch: n.epoch, Decisions: out.Decisions, Output: out, Input: in,
		PlannedShards: len(in.Shards), PlannedHosts: len(in.Hosts)}
	r.OrderHosts = slices.Sorted(maps.Keys(n.changed))
	clear(n.changed)
	return r
}

// creditFollowerReports moves each host's last report forward by what
// the longer follower cadence (reportproto.FollowerFactor) adds to the
// gap between two reports, up to now: hosts report to a server that is
// not the leader less often, so silence measured from a report taken as a
// follower is longer than the host's real silence by up to that much, and
// a new leader would judge live hosts suspect. Once per term, O(hosts).
func (n *Node) creditFollowerReports(st *db.State, now time.Time) {
	c := time.Duration(reportproto.FollowerFactor-1) * time.Duration(st.Config.ReportIntervalMs) * time.Millisecond
	for _, h := range n.obs.Hosts {
		if h.LastHeard.IsZero() || !h.LastHeard.Before(now) {
			continue
		}
		if t := h.LastHeard.Add(c); t.Before(now) {
			h.LastHeard = t
		} else {
			h.LastHeard = now
		}
	}
}

// Absorb takes DB changes into the node's indexes and dirty sets without
// planning, so that status calls between rounds see new shards. Round
// calls it too.
func (n *Node) Absorb(st *db.State, dirty db.Dirty, now time.Time) {
	if !n.active {
		return
	}
	n.silentAfter = max(2*time.Second, 2*time.Duration(st.Config.ReportIntervalMs)*time.Millisecond)
	for id := range dirty.Shards {
		n.dirtyS[id] = struct{}{}
	}
	for id := range dirty.Hosts {
		n.dirtyH[id] = struct{}{}
	}
	if rebuild := !n.patrol.built || dirty.All; rebuild && st.Launched {
		// A launch (which marks everything changed), a snapshot or a new
		// term: the shards awaiting placement are queued now, not as the
		// patrol reaches them (it visits 2,000 a second: a 333,334-shard
		// launch placed no faster than that). O(shards), as the patrol's
		// own rebuild.
		for id, sh := range st.Shards.All() {
			if db.AwaitsPlacement(sh) {
				n.backlog.Delete(id)
				n.unplaced.ReplaceOrInsert(id)
				n.queued[id] = struct{}{}
			}
		}
	}
	n.patrol.update(st, dirty)
	n.live.update(st, dirty, now)
}

func sameOrder(a, b *drummerpb.Order) bool { return a.Id == b.Id }

func (n *Node) maybePrune(st *db.State, now time.Time) {
	if now.Sub(n.lastPrune) >= n.cfg.PruneEvery {
		n.Prune(st, now)
	}
}

// Prune bounds the soft state now (see planner.Prune) and returns the
// hosts it forgot (TakeForgotten returns them too); rounds do it every
// Config.PruneEvery, and a driver whose node does not lead calls it when
// PruneDue (a follower's observations, order results above all, would
// otherwise only grow). It costs O(observations).
func (n *Node) Prune(st *db.State, now time.Time) []string {
	n.lastPrune = now
	// The per-shard part costs O(everything observed) (1M claims at
	// 333,334 shards, 7 % of a follower): it runs when the DB dropped
	// shards or members since the last one, and at least every
	// FullPruneEvery, which still bounds what reports about shards the DB
	// never had can leave behind.
	mark := st.PruneMark()
	full := mark != n.pruneMark || now.Sub(n.lastFullPrune) >= FullPruneEvery
	if full {
		n.pruneMark, n.lastFullPrune = mark, now
	}
	forgotten := planner.Prune(n.obs, n.resultAt, st, now, full)
	for _, id := range forgotten {
		n.live.forget(id)
	}
	n.forgotten = append(n.forgotten, forgotten...)
	return forgotten
}

// FullPruneEvery bounds the time between two full prunes: soft state about
// shards the DB no longer has (or never had) lives at most this long.
const FullPruneEvery = 2 * time.Minute

// PruneDue reports whether Config.PruneEvery has passed since the last
// Prune.
func (n *Node) PruneDue(now time.Time) bool { return now.Sub(n.lastPrune) >= n.cfg.PruneEvery }

// TakeForgotten returns the hosts pruned since the previous call, for the
// driver to drop what it keeps per host (report sessions).
func (n *Node) TakeForgotten() []string {
	f := n.forgotten
	n.forgotten = nil
	return f
}

// setShardOrders replaces a shard's orders in force.
func (n *Node) setShardOrders(shardID uint64, orders []planner.HostOrder) {
	old := n.shardOrders[shardID]
	if len(old) == 0 && len(orders) == 0 {
		return
	}
	if slices.EqualFunc(old, orders, func(a, b planner.HostOrder) bool { return a.HostID == b.HostID && a.Order.Id == b.Order.Id }) {
		n.shardOrders[shardID] = orders // same IDs; keep the newest bodies
		for _, ho := range orders {
			n.byHost[ho.HostID][shardID] = nil
		}
		for _, ho := range orders {
			n.byHost[ho.HostID][shardID] = append(n.byHost[ho.HostID][shardID], ho.Order)
		}
		return
	}
	for _, ho := range old {
		n.changed[ho.HostID] = struct{}{}
		if m := n.byHost[ho.HostID]; m != nil {
			delete(m, shardID)
			if len(m) == 0 {
				delete(n.byHost, ho.HostID)
			}
		}
	}
	if len(orders) == 0 {
		delete(n.shardOrders, shardID)
		return
	}
	n.shardOrders[shardID] = orders
	for _, ho := range orders {
		n.changed[ho.HostID] = struct{}{}
		m := n.byHost[ho.HostID]
		if m == nil {
			m = map[uint64][]*drummerpb.Order{}
			n.byHost[ho.HostID] = m
		}
		m[shardID] = append(m[shardID], ho.Order)
	}
}

// OrdersFor returns the orders in force for a host: host-level ones first,
// then by shard ID. The cost is that of the host's orders.
func (n *Node) OrdersFor(hostID string) []*drummerpb.Order {
	if !n.active {
		return nil
	}
	out := slices.Clone(n.hostOrders[hostID])
	m := n.byHost[hostID]
	for _, id := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[id]...)
	}
	return out
}

// Unapplied lists the decisions the DB did not apply (codes other than OK
// and NOOP), for logging; codes are the per-decision result bytes.
func Unapplied(ds []*dbpb.Decision, codes []byte) []string {
	var out []string
	for i, c := range codes {
		if i < len(ds) && dbpb.Code(c) != dbpb.Code_CODE_OK && dbpb.Code(c) != dbpb.Code_CODE_NOOP {
			out = append(out, ds[i].String()+": "+dbpb.Code(c).String())
		}
	}
	return out
}

// Settle takes the outcome of proposing a round's decisions: the codes
// the DB returned per decision, or lost when the proposal failed (timed
// out, lost leadership). The shards and hosts of decisions that did not
// apply go back to be planned next round: nothing in the DB changed for
// them, so no dirty mark would bring them back, and a launch would leave
// them unplaced until the patrol came by (at 333,334 shards, minutes).
// It returns how many decisions did not apply.
func (n *Node) Settle(ds []*dbpb.Decision, codes []byte, lost bool) int {
	missed := 0
	for i, d := range ds {
		if !lost && i < len(codes) {
			if c := dbpb.Code(codes[i]); c == dbpb.Code_CODE_OK || c == dbpb.Code_CODE_NOOP {
				continue
			}
		}
		missed++
		shard, host := decisionSubject(d)
		if shard != 0 {
			n.dirtyS[shard] = struct{}{}
		}
		if host != "" {
			n.dirtyH[host] = struct{}{}
		}
	}
	return missed
}

// decisionSubject returns the shard and host a decision is about (its
// shard_id and host_id fields, zero when it has none).
func decisionSubject(d *dbpb.Decision) (shard uint64, host string) {
	m := d.ProtoReflect()
	f := m.WhichOneof(m.Descriptor().Oneofs().ByName("kind"))
	if f == nil || f.Message() == nil {
		return 0, ""
	}
	inner := m.Get(f).Message()
	fields := inner.Descriptor().Fields()
	if sf := fields.ByName("shard_id"); sf != nil && sf.Kind() == protoreflect.Uint64Kind {
		shard = inner.Get(sf).Uint()
	}
	if hf := fields.ByName("host_id"); hf != nil && hf.Kind() == protoreflect.StringKind {
		host = inner.Get(hf).String()
	}
	return shard, host
}

func hasKey[K comparable, V any](m map[K]V, k K) bool {
	_, ok := m[k]
	return ok
}
