package scheduler

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/planner"
)

// balance is the node's memory of leader transfers, which are soft state
// (the DB records replica moves, not leaderships): when each shard's
// leadership last moved, for the cool-down, and the transfers in time
// order, for max_leader_transfers per second.
type balance struct {
	lastFeed time.Time
	feedFrom uint64 // shard ID the feed continues from
	moved    map[uint64]time.Time
	queue    []transfer // oldest first
	why      string     // why the last round held a wanted move back
	whyAt    time.Time
	total    uint64 // transfers ordered since the node was made
	// Transfer orders kept in force until the leader's host has surely
	// reported once (keep): a round that re-evaluates the shard within
	// the cool-down orders nothing for it, and would otherwise withdraw
	// the transfer before the host saw it.
	inForce map[uint64]keptTransfer
	keep    time.Duration
	// placedAt is when a round last placed a new shard (Input.PlacedAt).
	placedAt time.Time
}

type keptTransfer struct {
	order planner.HostOrder
	at    time.Time
}

type transfer struct {
	at    time.Time
	shard uint64
}

func (b *balance) reset() { *b = balance{total: b.total} }

// note records the transfers a round ordered.
func (b *balance) note(shards []uint64, now time.Time) {
	if b.moved == nil {
		b.moved = map[uint64]time.Time{}
	}
	b.total += uint64(len(shards))
	for _, id := range shards {
		b.moved[id] = now
		b.queue = append(b.queue, transfer{now, id})
	}
}

// expire forgets transfers older than the cool-down; O(expired).
func (b *balance) expire(cooldown time.Duration, now time.Time) {
	i := 0
	for ; i < len(b.queue) && !now.Before(b.queue[i].at.Add(cooldown)); i++ {
		if t := b.queue[i]; b.moved[t.shard].Equal(t.at) {
			delete(b.moved, t.shard)
		}
	}
	if i > 0 {
		b.queue = slices.Delete(b.queue, 0, i)
	}
}

// budget is how many transfers may start now: the limit per second less
// those of the last second; O(that limit).
func (b *balance) budget(limit int, now time.Time) int {
	n := 0
	for i := len(b.queue) - 1; i >= 0 && now.Sub(b.queue[i].at) < time.Second; i-- {
		n++
	}
	return max(0, limit-n)
}

// recent counts the transfers within d before now.
func (b *balance) recent(d time.Duration, now time.Time) int {
	n := 0
	for i := len(b.queue) - 1; i >= 0 && now.Sub(b.queue[i].at) < d; i-- {
		n++
	}
	return n
}

// Balancing judges the shards a round evaluates; the patrol alone may
// visit them slowly (a full pass over 333,334 shards takes minutes). So
// once a second, while moves may start and the replica counts spread
// beyond the tolerance, the round also evaluates some shards of the most
// loaded hosts: twice the moves that may start, from at most
// feedHosts hosts; O(that) per second.
const feedHosts = 8

func (n *Node) feedBalance(st *db.State, shards map[uint64]struct{}, now time.Time) {
	if now.Sub(n.bal.lastFeed) < time.Second {
		return
	}
	n.bal.lastFeed = now
	set := db.BalanceOf(st.Config)
	if !set.Replicas {
		return
	}
	room := set.MaxMoves
	for _, id := range st.RepairingShards() {
		if st.Shards.Get(id).Repair.Kind == dbpb.RepairKind_REPAIR_KIND_BALANCE {
			room--
		}
	}
	pool := st.PoolOf("")
	if room <= 0 || pool.Hosts == 0 {
		return
	}
	share := float64(pool.Members) / float64(pool.Hosts)
	tol := set.Tolerance(share)
	least, most := st.LoadRange()
	if float64(most)-share <= tol && share-float64(least) <= tol {
		return
	}
	per := max(1, (2*room+feedHosts-1)/feedHosts)
	from, next, hosts := n.bal.feedFrom, uint64(0), 0
	for id := range st.MostLoaded() {
		if hosts++; hosts > feedHosts {
			break
		}
		took := 0
		take := func(sid uint64) bool {
			if _, ok := shards[sid]; !ok {
				shards[sid] = struct{}{}
				took++
			}
			next = max(next, sid+1)
			return took < per
		}
		// From the cursor to the end of the host's shards, then from the
		// start, so successive feeds visit different shards.
		for sid := range st.ShardsOnHostFrom(id, from) {
			if !take(sid) {
				break
			}
		}
		for sid := range st.ShardsOnHost(id) {
			if took >= per || sid >= from || !take(sid) {
				break
			}
		}
	}
	n.bal.feedFrom = next
}

// LeaderTransfers counts the leader transfers the node ordered (for the
// metrics).
func (n *Node) LeaderTransfers() uint64 { return n.bal.total }

// balanceInput fills the balancing inputs of a planning round.
func (n *Node) balanceInput(in *planner.Input, st *db.State, now time.Time) {
	set := db.BalanceOf(st.Config)
	n.bal.expire(set.Cooldown, now)
	in.Down = slices.Sorted(maps.Keys(n.live.down))
	in.LeaderMoves = n.bal.moved
	in.TransferBudget = n.bal.budget(set.MaxLeaderTransfers, now)
	in.PlacedAt = n.bal.placedAt
	n.bal.keep = 2 * time.Duration(st.Config.ReportIntervalMs) * time.Millisecond
}

// balanceOutput takes what a round did for balancing.
func (n *Node) balanceOutput(out *planner.Output, now time.Time) {
	n.bal.note(out.Transfers, now)
	if out.Placing {
		n.bal.placedAt = now
	}
	n.bal.keepTransfers(out, now)
	if why := out.BalanceWhy(); why != "" {
		n.bal.why, n.bal.whyAt = why, now
	}
}

// BalanceHost is one host's line in the balance status.
type BalanceHost struct {
	HostID, Address   string
	Replicas          int
	ReplicaTarget     float64
	Leaders           int
	LeaderTarget      float64
	MovesIn, MovesOut int
	Why               string // why it is out of balance and nothing moves, or ""
}

// BalanceStatus is the state of balancing (drummercmd balance status).
type BalanceStatus struct {
	Settings              db.BalanceSettings
	Hosts                 []BalanceHost
	Next                  string // raft address to continue from, "" at the end
	MovesInFlight         int
	LeaderTransfersRecent int // in the last minute
	Why                   string
}

// BalanceStatus reports balancing for up to size hosts in raft address
// order from fromAddr. It costs O(page + repairs in flight).
func (n *Node) BalanceStatus(st *db.State, fromAddr string, size int, now time.Time) BalanceStatus {
	set := db.BalanceOf(st.Config)
	out := BalanceStatus{Settings: set, LeaderTransfersRecent: n.bal.recent(time.Minute, now)}
	in, outMoves := map[string]int{}, map[string]int{}
	for _, id := range st.RepairingShards() {
		r := st.Shards.Get(id).Repair
		if r.Kind != dbpb.RepairKind_REPAIR_KIND_BALANCE {
			continue
		}
		out.MovesInFlight++
		in[r.NewHostId]++
		outMoves[r.OldHostId]++
	}
	pool := st.PoolOf("")
	share, tol := 0.0, 0.0
	if pool.Hosts > 0 {
		share = float64(pool.Members) / float64(pool.Hosts)
		tol = set.Tolerance(share)
	}
	members, membered := st.Members()
	ratio := 0.0
	if members > 0 {
		ratio = float64(membered) / float64(members)
	}
	heldBack := ""
	if n.bal.why != "" && now.Sub(n.bal.whyAt) < 10*time.Second {
		heldBack = n.bal.why
	}
	for h := range st.HostsFrom(fromAddr) {
		if len(out.Hosts) == size {
			out.Next = h.RaftAddress
			break
		}
		bh := BalanceHost{HostID: h.Id, Address: h.RaftAddress, Replicas: st.HostMembers(h.Id),
			MovesIn: in[h.Id], MovesOut: outMoves[h.Id]}
		hs, ht := share, tol
		if r := h.Labels[db.RegionLabel]; len(st.Regions) > 0 && r != "" {
			if p := st.PoolOf(r); p.Hosts > 0 {
				hs = float64(p.Members) / float64(p.Hosts)
				ht = set.Tolerance(hs)
			}
		}
		bh.ReplicaTarget = hs
		eff := float64(bh.Replicas - bh.MovesOut)
		bh.LeaderTarget = eff * ratio
		if o := n.obs.Hosts[h.Id]; o != nil {
			bh.Leaders = o.Leading
		}
		lt := set.LeaderTolerance(bh.LeaderTarget)
		var off []string
		if d := eff - hs; d > ht || d < -ht {
			off = append(off, fmt.Sprintf("%.0f replicas, fair share %.1f ± %.1f", eff, hs, ht))
		}
		if d := float64(bh.Leaders) - bh.LeaderTarget; set.Leaders && (d > lt || d < -lt) {
			off = append(off, fmt.Sprintf("leads %d, fair share %.1f ± %.1f", bh.Leaders, bh.LeaderTarget, lt))
		}
		l := n.live.state[h.Id]
		switch {
		case h.Admin != dbpb.HostAdmin_HOST_ADMIN_ACTIVE:
			bh.Why = strings.ToLower(strings.TrimPrefix(h.Admin.String(), "HOST_ADMIN_")) + ": not balanced (receives no replicas, leads none)"
		case l != planner.Up:
			bh.Why = l.String() + ": nothing moves to or from it"
		case len(off) == 0:
		case bh.MovesIn+bh.MovesOut > 0:
			bh.Why = strings.Join(off, "; ") + "; moving"
		case heldBack != "":
			bh.Why = strings.Join(off, "; ") + "; waiting: " + heldBack
		default:
			bh.Why = strings.Join(off, "; ") + "; no move improves the balance by more than the tolerance now (cool-downs, placement, per-host limits)"
		}
		out.Hosts = append(out.Hosts, bh)
	}
	least, most := st.LoadRange()
	switch {
	case !n.active:
		out.Why = "this server does not lead the scheduler"
	case !set.Replicas && !set.Leaders:
		out.Why = "balancing is off (balance_replicas=off, balance_leaders=off)"
	case heldBack != "":
		out.Why = "moves are held back: " + heldBack
	case out.MovesInFlight > 0:
		out.Why = fmt.Sprintf("%d moves in flight", out.MovesInFlight)
	case float64(most)-share <= tol && share-float64(least) <= tol:
		out.Why = fmt.Sprintf("balanced: every host holds %d to %d replicas (fair share %.1f ± %.1f)", least, most, share, tol)
	default:
		out.Why = fmt.Sprintf("hosts hold %d to %d replicas (fair share %.1f ± %.1f); hosts out of balance say why", least, most, share, tol)
	}
	if !set.Replicas && set.Leaders {
		out.Why += "; replica balancing is off (balance_replicas=off)"
	} else if set.Replicas && !set.Leaders {
		out.Why += "; leader balancing is off (balance_leaders=off)"
	}
	return out
}

// keepTransfers keeps the transfer orders of the last rounds in force in
// this round's output for the shards it evaluated and orders nothing for;
// O(transfers kept).
func (b *balance) keepTransfers(out *planner.Output, now time.Time) {
	for _, sid := range out.Transfers {
		for _, ho := range out.ShardOrders[sid] {
			if ho.Order.GetTransferLeader() != nil {
				if b.inForce == nil {
					b.inForce = map[uint64]keptTransfer{}
				}
				b.inForce[sid] = keptTransfer{order: ho, at: now}
			}
		}
	}
	for sid, k := range b.inForce {
		if now.Sub(k.at) >= b.keep {
			delete(b.inForce, sid)
			continue
		}
		if orders, ok := out.ShardOrders[sid]; ok && len(orders) == 0 {
			out.ShardOrders[sid] = []planner.HostOrder{k.order}
		}
	}
}
