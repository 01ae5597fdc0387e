package agent

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/events"
	"github.com/drummerhq/drummer/internal/reportproto"
)

type replicaKey struct{ shard, replica uint64 }

// view is an immutable picture of what the host runs, shared by the
// reporters (one per drummer server); memberships are fetched by every
// local replica whose ConfigChangeID moved (the scheduler believes a
// membership claim only when the other members do not contradict it).
type view = reportproto.View

// collector polls the NodeHost (cheap: GetNodeHostInfo without LogInfo),
// fetches a shard's membership where the ConfigChangeID moved, checks whether joining non-voting replicas caught
// up, and takes the on-disk inventory now and then.
type collector struct {
	a    *Agent
	kick chan struct{}
	sem  chan struct{}

	mu         sync.Mutex
	cur        *view
	fetchedCCI map[uint64]uint64
	caughtUp   map[replicaKey]bool
	checking   map[replicaKey]bool
	diskDue    bool
	lastDisk   time.Time
	// deleted records when replicas here applied their own removal
	// (NodeDeleted), for the result of the order that removed them.
	deleted map[replicaKey]time.Time
}

// deletedKeep bounds how long a replica's own removal is remembered.
const deletedKeep = 5 * time.Minute

func newCollector(a *Agent) *collector {
	return &collector{
		a:          a,
		kick:       make(chan struct{}, 1),
		sem:        make(chan struct{}, 8),
		cur:        &view{Replicas: map[uint64]*drummerpb.ReplicaReport{}, Memberships: map[uint64]*drummerpb.Membership{}},
		fetchedCCI: map[uint64]uint64{},
		caughtUp:   map[replicaKey]bool{},
		checking:   map[replicaKey]bool{},
		diskDue:    true,
	}
}

// onEvent runs on dragonboat's event goroutine: only nudge the collector.
func (c *collector) onEvent(e events.Event) {
	if e.Kind == events.NodeDeleted || e.Kind == events.NodeUnloaded {
		c.mu.Lock()
		c.diskDue = true
		if e.Kind == events.NodeDeleted {
			now := time.Now()
			if c.deleted == nil {
				c.deleted = map[replicaKey]time.Time{}
			}
			maps.DeleteFunc(c.deleted, func(_ replicaKey, t time.Time) bool { return now.Sub(t) > deletedKeep })
			c.deleted[replicaKey{e.ShardID, e.ReplicaID}] = now
		}
		c.mu.Unlock()
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// deletedItself tells whether the replica applied its own removal here
// (dragonboat then stops it, and the call that removed it may fail as
// the shard closes under it).
func (c *collector) deletedItself(shardID, replicaID uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.deleted[replicaKey{shardID, replicaID}]
	return ok
}

// inventoryDue asks for a fresh on-disk inventory (after data removal).
func (c *collector) inventoryDue() {
	c.mu.Lock()
	c.diskDue = true
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *collector) view() *view {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

func (c *collector) run(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c.collect(ctx, &wg)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}

func (c *collector) collect(ctx context.Context, wg *sync.WaitGroup) {
	nh := c.a.nh
	info := nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
	if info == nil {
		return
	}
	reps := make(map[uint64]*drummerpb.ReplicaReport, len(info.ShardInfoList))
	c.mu.Lock()
	prev := c.cur
	for _, si := range info.ShardInfoList {
		k := replicaKey{si.ShardID, si.ReplicaID}
		role := drummerpb.ReplicaRole_REPLICA_ROLE_VOTER
		switch {
		case si.IsNonVoting:
			role = drummerpb.ReplicaRole_REPLICA_ROLE_NON_VOTING
		case si.IsWitness:
			role = drummerpb.ReplicaRole_REPLICA_ROLE_WITNESS
		}
		r := &drummerpb.ReplicaReport{
			ShardId: si.ShardID, ReplicaId: si.ReplicaID, LeaderId: si.LeaderID, Term: si.Term,
			ConfigChangeId: si.ConfigChangeIndex, Role: role, Pending: si.Pending,
			CaughtUp: c.caughtUp[k],
		}
		if len(si.Replicas) > 0 {
			// Voters as this replica's dragonboat sees them: the scheduler
			// checks membership claims against them.
			r.Voters = slices.Sorted(maps.Keys(si.Replicas))
		}
		if o := c.a.store.assignment(si.ShardID); o != nil && o.ReplicaId == si.ReplicaID {
			r.App = o.App
		}
		reps[si.ShardID] = r
		if role == drummerpb.ReplicaRole_REPLICA_ROLE_NON_VOTING && !si.Pending && !c.caughtUp[k] && !c.checking[k] {
			c.checking[k] = true
			c.async(ctx, wg, func() { c.checkCaughtUp(k) })
		}
		if !si.Pending && si.LeaderID != 0 && c.fetchedCCI[si.ShardID] != si.ConfigChangeIndex {
			c.fetchedCCI[si.ShardID] = si.ConfigChangeIndex
			shard := si.ShardID
			c.async(ctx, wg, func() { c.fetchMembership(ctx, shard) })
		}
	}
	for k := range c.caughtUp {
		if r := reps[k.shard]; r == nil || r.ReplicaId != k.replica {
			delete(c.caughtUp, k)
		}
	}
	for id := range c.fetchedCCI {
		if r := reps[id]; r == nil || r.LeaderId == 0 {
			delete(c.fetchedCCI, id)
		}
	}
	next := &view{Replicas: reps, Memberships: prev.Memberships, Disk: prev.Disk, DiskVersion: prev.DiskVersion}
	diskDue := c.diskDue || time.Since(c.lastDisk) >= c.a.cfg.DiskInventoryEvery
	c.diskDue = false
	c.mu.Unlock()

	if diskDue {
		full := nh.GetNodeHostInfo(dragonboat.DefaultNodeHostInfoOption)
		if full != nil {
			disk := make([]*drummerpb.ReplicaKey, 0, len(full.LogInfo))
			for _, li := range full.LogInfo {
				disk = append(disk, &drummerpb.ReplicaKey{ShardId: li.ShardID, ReplicaId: li.ReplicaID})
			}
			next.Disk = disk
			next.DiskVersion = prev.DiskVersion + 1
		}
	}
	c.mu.Lock()
	if diskDue {
		c.lastDisk = time.Now()
	}
	// Memberships may have been updated by a fetch meanwhile; keep only
	// those of shards this host still runs.
	next.Memberships = c.cur.Memberships
	for id := range next.Memberships {
		if r := reps[id]; r == nil {
			next.Memberships = maps.Clone(next.Memberships)
			maps.DeleteFunc(next.Memberships, func(id uint64, _ *drummerpb.Membership) bool {
				return reps[id] == nil
			})
			break
		}
	}
	c.cur = next
	c.mu.Unlock()
}

// async runs f with bounded concurrency unless the agent is stopping.
func (c *collector) async(ctx context.Context, wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-c.sem }()
		f()
	}()
}

// checkCaughtUp runs a ReadIndex on a local non-voting replica: once it
// completes, the replica has applied everything the leader had committed.
func (c *collector) checkCaughtUp(k replicaKey) {
	ok := false
	defer func() {
		c.mu.Lock()
		delete(c.checking, k)
		if ok {
			c.caughtUp[k] = true
		}
		c.mu.Unlock()
	}()
	rs, err := c.a.nh.ReadIndex(k.shard, 3*time.Second)
	if err != nil {
		time.Sleep(200 * time.Millisecond)
		return
	}
	defer rs.Release()
	r := <-rs.ResultC()
	ok = r.Completed()
}

func (c *collector) fetchMembership(ctx context.Context, shardID uint64) {
	fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	m, err := c.a.nh.SyncGetShardMembership(fctx, shardID)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		delete(c.fetchedCCI, shardID) // try again next round
		return
	}
	ms := toMembership(m)
	cur := *c.cur
	cur.Memberships = maps.Clone(c.cur.Memberships)
	cur.Memberships[shardID] = ms
	c.cur = &cur
}

func toMembership(m *dragonboat.Membership) *drummerpb.Membership {
	out := &drummerpb.Membership{
		ConfigChangeId: m.ConfigChangeID,
		Voters:         maps.Clone(m.Nodes),
		NonVoting:      maps.Clone(m.NonVotings),
		Witnesses:      maps.Clone(m.Witnesses),
	}
	for id := range m.Removed {
		out.Removed = append(out.Removed, id)
	}
	slices.Sort(out.Removed)
	return out
}
