package server

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/scheduler"
)

// loop is the goroutine that owns the scheduler Node (the one the
// simulator drives too). Everything reaches the Node through it: reports
// are queued and applied between rounds, so a report never waits for a
// planning round; a round's decisions are proposed asynchronously (the
// next round waits for them, reports do not); status calls run on the loop
// between rounds. The orders in force are published on a board that
// report handlers read under a short lock.
type loop struct {
	s    *Server
	node *scheduler.Node
	ses  scheduler.Sessions

	reports chan reportIn
	calls   chan func()
	stopped chan struct{} // closed when run returns

	// Owned by the loop goroutine.
	proposing bool
	acquiring bool

	mu     sync.RWMutex
	active bool
	epoch  uint64
	board  map[string]posted
	// version numbers the board's entries; it starts at the clock so that
	// a restarted server never hands out a version it gave before.
	version uint64
	// expect holds the hosts taking part in repairs in flight
	// (scheduler.Node.Attention); replaced, never modified.
	expect map[string]struct{}

	// counts are the verdict counts as of the last round, for a status
	// call the loop cannot answer in time; replaced, never modified.
	counts atomic.Pointer[publishedCounts]

	// heard holds when the latest report of each registered host arrived,
	// noted by the report handler before it queues the report and taken by
	// the loop before every round (scheduler.Node.Heard): a report that
	// waits in a full queue, or gives up waiting, still shows its host
	// alive. Bounded by the registered hosts.
	heardMu sync.Mutex
	heard   map[string]time.Time
	spare   map[string]time.Time
}

// noteHeard records a report's arrival for the loop's next round.
func (l *loop) noteHeard(hostID string, at time.Time) {
	l.heardMu.Lock()
	l.heard[hostID] = at
	l.heardMu.Unlock()
}

// takeHeard hands the arrivals noted since the last call to the node.
func (l *loop) takeHeard() {
	l.heardMu.Lock()
	m := l.heard
	l.heard = l.spare
	l.heardMu.Unlock()
	for id, at := range m {
		l.node.Heard(id, at)
	}
	clear(m)
	l.spare = m // only the loop goroutine touches spare
}

// posted is a host's entry on the board: the orders in force and the
// version that names them in reports (ReportRequest.orders_version).
type posted struct {
	orders  []*drummerpb.Order
	version uint64
}

// publishedCounts are a leader's shard and host verdict counts after a
// round.
type publishedCounts struct {
	epoch  uint64
	health map[string]int
	hosts  map[string]int
}

// publish stores the node's counts after a round (O(health states)).
func (l *loop) publish() {
	epoch, active := l.node.Active()
	if !active {
		l.counts.Store(nil)
		return
	}
	l.counts.Store(&publishedCounts{epoch: epoch, health: l.node.Counts(), hosts: l.node.HostCounts()})
}

type reportIn struct {
	r          *drummerpb.ReportRequest
	at         time.Time
	inSequence bool
}

// reportQueue bounds the reports waiting for the loop; a full queue makes
// report handlers wait (backpressure) rather than drop reports. It holds
// what 10,000 hosts send while a long round runs: at 8,192, reports at
// 10,000 hosts waited for rounds (seconds) instead of being answered.
const reportQueue = 32768

// drainBatch bounds the reports applied at once, so status calls and rounds
// get their turn.
const drainBatch = 8192

func newLoop(s *Server) *loop {
	return &loop{
		s: s,
		node: scheduler.New(scheduler.Config{
			Started: s.started, Salt: s.cfg.ReplicaID, Tick: s.cfg.TickInterval, Sweep: s.cfg.SweepInterval,
		}),
		reports: make(chan reportIn, reportQueue),
		calls:   make(chan func(), 64),
		stopped: make(chan struct{}),
		board:   map[string]posted{},
		heard:   map[string]time.Time{},
		spare:   map[string]time.Time{},
		version: uint64(time.Now().UnixNano()),
	}
}

func (l *loop) isActive() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.active
}

// ordersFor returns the epoch (0 if not leading), the orders in force for
// a host with the version that names them (0: none), and whether more are
// expected soon (it takes part in a repair).
func (l *loop) ordersFor(hostID string) (uint64, posted, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if !l.active {
		return 0, posted{}, false
	}
	_, expect := l.expect[hostID]
	return l.epoch, l.board[hostID], expect
}

// enqueue hands a validated report to the loop.
func (l *loop) enqueue(ctx context.Context, in reportIn) error {
	select {
	case l.reports <- in:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-l.stopped:
		return errors.New("drummer server is stopping")
	}
}

// do runs f on the loop goroutine, between rounds, and waits for it.
func (l *loop) do(ctx context.Context, f func(n *scheduler.Node)) error {
	done := make(chan struct{})
	select {
	case l.calls <- func() { f(l.node); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-l.stopped:
		return errors.New("drummer server is stopping")
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		// f may still run later: callers use what it sets only on success.
		return ctx.Err()
	case <-l.stopped:
		return errors.New("drummer server is stopping")
	}
}

func (l *loop) run(ctx context.Context) {
	defer close(l.stopped)
	t := time.NewTicker(l.s.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case in := <-l.reports:
			l.node.Step(in.r, in.at, in.inSequence)
			l.drain()
		case f := <-l.calls:
			l.drain() // a call sees the reports taken before it
			f()
		case <-t.C:
			l.catchUp()
			l.step(ctx)
		case <-l.s.leaderKick:
			l.catchUp()
			l.step(ctx)
		}
	}
}

// slowLoopWork is how long a round or a catch-up on queued reports may
// take before the loop logs it: either holds up reports and status calls.
const slowLoopWork = time.Second

// catchUp takes the queued reports and the noted arrivals before a round.
func (l *loop) catchUp() {
	start, queued := time.Now(), len(l.reports)
	l.drainAll()
	l.takeHeard()
	if took := time.Since(start); took >= slowLoopWork {
		l.s.log.Info("slow catch-up on queued reports", "took", took.Round(time.Millisecond), "reports", queued)
	}
}

// drainAll applies every report queued before a round: liveness is judged
// from the reports the loop has taken, so a report still queued when the
// round runs counts as not received. At 10,000 hosts the queue held
// seconds of reports after a long round, and rounds that ran before it
// was drained judged 1,300 reporting hosts suspect. Bounded by the
// queue's capacity.
func (l *loop) drainAll() {
	for range reportQueue / drainBatch {
		if len(l.reports) == 0 {
			return
		}
		l.drain()
	}
}

// drain applies the queued reports (a bounded number per call).
func (l *loop) drain() {
	for range drainBatch {
		select {
		case in := <-l.reports:
			l.node.Step(in.r, in.at, in.inSequence)
		default:
			return
		}
	}
}

func (l *loop) demote(why string) {
	if epoch, active := l.node.Active(); active {
		l.s.log.Info("scheduler stopped", "epoch", epoch, "reason", why)
	}
	l.node.Demote()
	l.counts.Store(nil)
	l.mu.Lock()
	l.active, l.epoch = false, 0
	clear(l.board)
	l.expect = nil
	l.mu.Unlock()
}

func (l *loop) become(epoch uint64) {
	l.node.Become(epoch)
	l.mu.Lock()
	l.active, l.epoch = true, epoch
	clear(l.board)
	l.expect = nil
	l.mu.Unlock()
	l.s.log.Info("scheduler started", "epoch", epoch)
}

// step runs one round on the leader; on a follower it only keeps the DB's
// change record bounded.
func (l *loop) step(ctx context.Context) {
	s := l.s
	defer l.forget()
	if s.isRemoved.Load() {
		l.demote("removed from the cluster")
		s.sm.TakeDirty()
		l.prune()
		return
	}
	if _, leader := s.raftLeader(); !leader {
		l.demote("not the Raft leader")
		s.sm.TakeDirty()
		l.prune()
		return
	}
	if l.proposing || l.acquiring {
		return // the next round must see the previous decisions applied
	}
	st, dirty, _ := s.sm.ViewIfChanged()
	epoch, active := l.node.Active()
	if active && (st.Epoch != epoch || st.EpochHolder != s.cfg.ReplicaID) {
		l.demote("another server took the scheduler epoch")
		active = false
	}
	if !active {
		l.acquire(ctx, st)
		return
	}
	start := time.Now()
	rd := l.node.Round(st, dirty, start)
	took := time.Since(start)
	l.publish()
	if s.cfg.Metrics != nil && (rd.PlannedShards > 0 || rd.PlannedHosts > 0) {
		s.cfg.Metrics.PlanRound(took, rd.PlannedShards, rd.PlannedHosts, len(rd.Decisions))
	}
	if took >= slowLoopWork {
		// Reports queue behind a round, and status calls wait for it.
		s.log.Info("slow scheduling round", "took", took.Round(time.Millisecond), "shards", rd.PlannedShards,
			"hosts", rd.PlannedHosts, "decisions", len(rd.Decisions), "reports_queued", len(l.reports))
	}
	if a, changed := l.node.Attention(); changed {
		l.mu.Lock()
		l.expect = a
		l.mu.Unlock()
	}
	if len(rd.OrderHosts) > 0 {
		l.mu.Lock()
		for _, h := range rd.OrderHosts {
			if o := l.node.OrdersFor(h); len(o) > 0 {
				l.version++
				l.board[h] = posted{orders: o, version: l.version}
			} else {
				delete(l.board, h)
			}
		}
		l.mu.Unlock()
	}
	if len(rd.Decisions) == 0 {
		return
	}
	l.proposing = true
	ds := rd.Decisions
	l.async(ctx, 5*time.Second, &dbpb.Command{Epoch: epoch, Op: &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: ds}}},
		func(r db.Result, err error) {
			l.proposing = false
			switch {
			case err != nil:
				l.node.Settle(ds, nil, true)
				if !errors.Is(err, context.Canceled) {
					s.log.Warn("proposing decisions failed; planning their shards again", "decisions", len(ds), "err", err)
				}
			case r.Code == dbpb.Code_CODE_STALE_EPOCH:
				l.demote("decisions rejected: stale epoch")
			case r.Code != dbpb.Code_CODE_OK:
				l.node.Settle(ds, nil, true)
				s.log.Error("decisions rejected", "code", r.Code.String())
			default:
				if n := l.node.Settle(ds, r.Data, false); n > 0 {
					un := scheduler.Unapplied(ds, r.Data)
					s.log.Info("decisions not applied (the DB changed since the round); planning their shards again",
						"count", n, "first", un[0])
					for _, u := range un {
						s.log.Debug("decision not applied", "decision", u)
					}
				}
			}
		})
}

// prune bounds a follower's soft state (a leader's rounds do it): a view
// every PruneEvery, O(shards) every 10 s.
func (l *loop) prune() {
	now := time.Now()
	if !l.node.PruneDue(now) {
		return
	}
	st, _ := l.s.sm.View()
	l.node.Prune(st, now)
}

// forget drops the report sessions of the hosts the node pruned.
func (l *loop) forget() {
	for _, id := range l.node.TakeForgotten() {
		l.ses.Forget(id)
	}
}

// acquire wins the scheduler epoch through Raft.
func (l *loop) acquire(ctx context.Context, st *db.State) {
	l.acquiring = true
	l.async(ctx, 3*time.Second, &dbpb.Command{Op: &dbpb.Command_AcquireEpoch{AcquireEpoch: &dbpb.AcquireEpoch{
		Holder: l.s.cfg.ReplicaID, ExpectEpoch: st.Epoch, DeploymentId: randomID()}}},
		func(r db.Result, err error) {
			l.acquiring = false
			if err != nil || r.Code != dbpb.Code_CODE_OK || len(r.Data) != 8 {
				return
			}
			l.become(binary.LittleEndian.Uint64(r.Data))
		})
}

// async proposes cmd off the loop and runs done on the loop with the
// result.
func (l *loop) async(ctx context.Context, timeout time.Duration, cmd *dbpb.Command, done func(db.Result, error)) {
	l.s.wg.Add(1)
	go func() {
		defer l.s.wg.Done()
		pctx, cancel := context.WithTimeout(ctx, timeout)
		r, err := l.s.propose(pctx, cmd)
		cancel()
		select {
		case l.calls <- func() { done(r, err) }:
		case <-ctx.Done():
		}
	}()
}

// lastHeard is when the host last reported to this server.
func (l *loop) lastHeard(ctx context.Context, hostID string) time.Time {
	var t time.Time
	_ = l.do(ctx, func(n *scheduler.Node) { t = n.LastHeard(hostID) })
	return t
}

// sortedHosts lists registered and reporting hosts in ID order; O(hosts),
// for the host listing.
func sortedHosts(st *db.State, n *scheduler.Node) []string {
	ids := make([]string, 0, len(st.Hosts))
	for id := range st.Hosts {
		ids = append(ids, id)
	}
	for id := range n.Observed().Hosts {
		if st.Hosts[id] == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// raftLeader reports whether this server's DB replica is the Raft leader.
func (s *Server) raftLeader() (uint64, bool) {
	id, _, valid, err := s.nh.GetLeaderID(DBShardID)
	if err != nil || !valid {
		return 0, false
	}
	return id, id == s.cfg.ReplicaID
}
