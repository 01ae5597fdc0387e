package server

import (
	"context"
	"encoding/binary"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/planner"
)

// scheduler runs the planner on the DB shard's leader. It first wins a
// scheduler epoch through Raft; every decision it proposes carries that
// epoch, and it stops as soon as the DB shows another holder or Raft
// leadership moves.
type scheduler struct {
	s *Server

	mu          sync.Mutex
	active      bool
	epoch       uint64
	leaderSince time.Time
	lastSweep   time.Time
	again       []uint64
	patrol      *patrol
	round       uint64
	// Orders currently in force, by shard and by host (cleanups).
	shardOrders map[uint64][]planner.HostOrder
	hostOrders  map[string][]*drummerpb.Order
	byHost      map[string]map[uint64][]*drummerpb.Order
}

func newScheduler(s *Server) *scheduler {
	sc := &scheduler{s: s}
	sc.reset()
	return sc
}

func (sc *scheduler) reset() {
	sc.active = false
	sc.epoch = 0
	sc.again = nil
	sc.patrol = newPatrol()
	sc.shardOrders = map[uint64][]planner.HostOrder{}
	sc.hostOrders = map[string][]*drummerpb.Order{}
	sc.byHost = map[string]map[uint64][]*drummerpb.Order{}
}

func (sc *scheduler) isActive() bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.active
}

func (sc *scheduler) currentEpoch() uint64 {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !sc.active {
		return 0
	}
	return sc.epoch
}

func (sc *scheduler) deactivate(why string) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.active {
		sc.s.log.Info("scheduler stopped", "epoch", sc.epoch, "reason", why)
	}
	sc.reset()
}

// raftLeader reports whether this server's DB replica is the Raft leader.
func (s *Server) raftLeader() (uint64, bool) {
	id, _, valid, err := s.nh.GetLeaderID(DBShardID)
	if err != nil || !valid {
		return 0, false
	}
	return id, id == s.cfg.ReplicaID
}

func (sc *scheduler) run(ctx context.Context) {
	t := time.NewTicker(sc.s.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-sc.s.leaderKick:
		}
		sc.step(ctx)
	}
}

func (sc *scheduler) step(ctx context.Context) {
	s := sc.s
	if s.isRemoved.Load() {
		sc.deactivate("removed from the cluster")
		return
	}
	st, dbDirty, _ := s.sm.ViewIfChanged()
	if _, leader := s.raftLeader(); !leader {
		sc.deactivate("not the Raft leader")
		s.obs.takeDirty()
		return
	}
	sc.mu.Lock()
	active, epoch := sc.active, sc.epoch
	sc.mu.Unlock()
	if active && (st.Epoch != epoch || st.EpochHolder != s.cfg.ReplicaID) {
		sc.deactivate("another server took the scheduler epoch")
		active = false
	}
	if !active {
		sc.acquire(ctx, st)
		return
	}
	sc.plan(ctx, st, dbDirty)
}

// acquire wins the scheduler epoch through Raft.
func (sc *scheduler) acquire(ctx context.Context, st *db.State) {
	s := sc.s
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	r, err := s.propose(pctx, &dbpb.Command{Op: &dbpb.Command_AcquireEpoch{AcquireEpoch: &dbpb.AcquireEpoch{
		Holder: s.cfg.ReplicaID, ExpectEpoch: st.Epoch, DeploymentId: randomID()}}})
	if err != nil || r.Code != dbpb.Code_CODE_OK || len(r.Data) != 8 {
		return
	}
	epoch := binary.LittleEndian.Uint64(r.Data)
	sc.mu.Lock()
	sc.reset()
	sc.active, sc.epoch = true, epoch
	sc.leaderSince = time.Now()
	sc.lastSweep = time.Time{}
	sc.mu.Unlock()
	s.log.Info("scheduler started", "epoch", epoch)
}

// input builds a planner input from the current view.
func (sc *scheduler) input(st *db.State, epoch uint64) planner.Input {
	sc.round++
	return planner.Input{
		Now:      time.Now(),
		State:    st,
		Obs:      sc.s.obs.o,
		ObsSince: sc.s.started,
		Epoch:    epoch,
		Seed:     sc.round*0x9e3779b97f4a7c15 + sc.s.cfg.ReplicaID,
	}
}

func (sc *scheduler) plan(ctx context.Context, st *db.State, dbDirty db.Dirty) {
	s := sc.s
	now := time.Now()
	obsDirty := s.obs.takeDirty()
	sc.mu.Lock()
	epoch := sc.epoch
	in := sc.input(st, epoch)
	shards := map[uint64]struct{}{}
	hosts := map[string]struct{}{}
	for id := range dbDirty.Shards {
		shards[id] = struct{}{}
	}
	for id := range obsDirty.Shards {
		shards[id] = struct{}{}
	}
	for _, id := range sc.again {
		shards[id] = struct{}{}
	}
	for id := range dbDirty.Hosts {
		hosts[id] = struct{}{}
	}
	for id := range obsDirty.Hosts {
		hosts[id] = struct{}{}
	}
	sc.patrol.update(st, dbDirty)
	s.obs.mu.RLock()
	sc.patrol.transitions(st, s.obs.o, s.started, now, shards, hosts)
	s.obs.mu.RUnlock()
	sc.patrol.chunk(s.cfg.TickInterval, s.cfg.SweepInterval, shards)
	hostSweep := now.Sub(sc.lastSweep) >= s.cfg.SweepInterval
	if hostSweep {
		sc.lastSweep = now
		for _, id := range st.SortedHostIDs() {
			hosts[id] = struct{}{}
		}
		s.obs.mu.RLock()
		for id := range s.obs.o.Hosts {
			hosts[id] = struct{}{}
		}
		s.obs.mu.RUnlock()
	}
	in.Shards = slices.Sorted(maps.Keys(shards))
	in.Hosts = slices.Sorted(maps.Keys(hosts))
	sc.mu.Unlock()
	if len(in.Shards) == 0 && len(in.Hosts) == 0 {
		return
	}
	s.obs.mu.RLock()
	planStart := time.Now()
	out := planner.Plan(in)
	s.obs.mu.RUnlock()
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.PlanRound(time.Since(planStart), len(in.Shards), len(in.Hosts), len(out.Decisions))
	}

	sc.mu.Lock()
	if !sc.active || sc.epoch != epoch {
		sc.mu.Unlock()
		return
	}
	for id, orders := range out.ShardOrders {
		sc.setShardOrders(id, orders)
	}
	for _, id := range in.Hosts {
		if orders, ok := out.HostOrders[id]; ok {
			sc.hostOrders[id] = orders
		} else if _, registered := st.Hosts[id]; !registered {
			delete(sc.hostOrders, id)
		}
	}
	sc.again = out.Again
	sc.mu.Unlock()

	if hostSweep {
		s.obs.prune(st, now)
	}
	if len(out.Decisions) == 0 {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := s.propose(pctx, &dbpb.Command{Epoch: epoch, Op: &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: out.Decisions}}})
	switch {
	case err != nil:
		if !errors.Is(err, context.Canceled) {
			s.log.Warn("proposing decisions failed", "decisions", len(out.Decisions), "err", err)
		}
	case r.Code == dbpb.Code_CODE_STALE_EPOCH:
		sc.deactivate("decisions rejected: stale epoch")
	case r.Code != dbpb.Code_CODE_OK:
		s.log.Error("decisions rejected", "code", r.Code.String())
	default:
		for i, c := range r.Data {
			if dbpb.Code(c) != dbpb.Code_CODE_OK && dbpb.Code(c) != dbpb.Code_CODE_NOOP && i < len(out.Decisions) {
				s.log.Debug("decision not applied", "decision", out.Decisions[i].String(), "code", dbpb.Code(c).String())
			}
		}
	}
}

// setShardOrders replaces a shard's orders; callers hold sc.mu.
func (sc *scheduler) setShardOrders(shardID uint64, orders []planner.HostOrder) {
	for _, ho := range sc.shardOrders[shardID] {
		if m := sc.byHost[ho.HostID]; m != nil {
			delete(m, shardID)
			if len(m) == 0 {
				delete(sc.byHost, ho.HostID)
			}
		}
	}
	if len(orders) == 0 {
		delete(sc.shardOrders, shardID)
		return
	}
	sc.shardOrders[shardID] = orders
	for _, ho := range orders {
		m := sc.byHost[ho.HostID]
		if m == nil {
			m = map[uint64][]*drummerpb.Order{}
			sc.byHost[ho.HostID] = m
		}
		m[shardID] = append(m[shardID], ho.Order)
	}
}

// ordersFor returns the orders in force for a host.
func (sc *scheduler) ordersFor(hostID string) (uint64, []*drummerpb.Order) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !sc.active {
		return 0, nil
	}
	out := slices.Clone(sc.hostOrders[hostID])
	m := sc.byHost[hostID]
	for _, id := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[id]...)
	}
	return sc.epoch, out
}

// report runs the planner without acting on its decisions, to answer status
// queries with the current verdicts and explanations.
func (sc *scheduler) report(st *db.State, shards []uint64, all bool) *planner.Output {
	sc.mu.Lock()
	in := sc.input(st, sc.epoch)
	sc.mu.Unlock()
	in.All = all
	in.Shards = shards
	if all {
		in.Hosts = nil
	} else {
		in.Hosts = []string{}
	}
	sc.s.obs.mu.RLock()
	defer sc.s.obs.mu.RUnlock()
	return planner.Plan(in)
}

// hostReports judges every registered or reporting host.
func (sc *scheduler) hostReports(st *db.State) *planner.Output {
	sc.mu.Lock()
	in := sc.input(st, sc.epoch)
	sc.mu.Unlock()
	sc.s.obs.mu.RLock()
	defer sc.s.obs.mu.RUnlock()
	ids := st.SortedHostIDs()
	for id := range sc.s.obs.o.Hosts {
		ids = append(ids, id)
	}
	in.Hosts = ids
	in.Shards = []uint64{}
	return planner.Plan(in)
}

// drainCheck refuses a drain that could never finish.
func (sc *scheduler) drainCheck(st *db.State, hostID string) error {
	sc.mu.Lock()
	in := sc.input(st, sc.epoch)
	sc.mu.Unlock()
	sc.s.obs.mu.RLock()
	defer sc.s.obs.mu.RUnlock()
	return planner.DrainCheck(in, hostID)
}
