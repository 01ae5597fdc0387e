package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
)

const (
	// A failed order is not retried before this pause.
	failedRetryAfter = 2 * time.Second
	// A completed order is not repeated within this window (the drummer
	// stops sending it once its effect shows in a report).
	doneMemory = 30 * time.Second
	resultTTL  = 2 * time.Minute
	workers    = 8
	// maxResults bounds the results kept for the reporters (the oldest go
	// first); maxReportResults and maxReportResultBytes bound those one
	// report carries, the rest going with the next ones. The drummer takes
	// at most 50,000 per report and 64 MiB per message.
	maxResults           = 20_000
	maxReportResults     = 2_000
	maxReportResultBytes = 4 << 20
)

type result struct {
	seq uint64
	at  time.Time
	res *drummerpb.OrderResult
}

type finished struct {
	at      time.Time
	outcome drummerpb.OrderOutcome
}

// executor carries out orders. Orders are deduplicated by ID (one
// execution at a time, completed ones not repeated), serialized per shard,
// and refused when they come from an epoch older than one already seen:
// a deposed scheduler cannot order this host around.
type executor struct {
	a     *Agent
	queue chan *drummerpb.Order
	// starts counts start orders queued or running; restoring is set while
	// the replicas of the previous run are brought back. Either makes the
	// host report that it is still starting replicas.
	starts    atomic.Int64
	restoring atomic.Bool
	// active is when orders last arrived or finished (unix nanoseconds).
	active atomic.Int64

	// timeouts bound the dragonboat calls of one order.
	timeouts execTimeouts

	mu       sync.Mutex
	maxEpoch uint64
	inflight map[string]bool
	busy     map[uint64]bool // shards with an order executing
	done     map[string]finished
	addrs    map[replicaKey]string    // addresses given to dragonboat, by replica
	stopped  map[replicaKey]time.Time // replicas stopped here, until restartAfterStop
	// results are in seq order, consecutive (only the oldest are dropped);
	// latest is each order's newest result among them.
	results []result
	latest  map[string]result
	seq     uint64
}

type execTimeouts struct {
	configChange, membership, removeData time.Duration
}

var defaultExecTimeouts = execTimeouts{configChange: 5 * time.Second, membership: 3 * time.Second, removeData: 30 * time.Second}

func newExecutor(a *Agent) *executor {
	var epoch uint64
	if a.store != nil {
		epoch = a.store.epochSeen() // the fence survives restarts
	}
	return &executor{
		a:        a,
		timeouts: defaultExecTimeouts,
		maxEpoch: epoch,
		queue:    make(chan *drummerpb.Order, 4096),
		inflight: map[string]bool{},
		busy:     map[uint64]bool{},
		done:     map[string]finished{},
		latest:   map[string]result{},
		addrs:    map[replicaKey]string{},
		stopped:  map[replicaKey]time.Time{},
	}
}

func (e *executor) epochSeen() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.maxEpoch
}

// submit queues the orders of a leader's reply.
func (e *executor) submit(epoch uint64, orders []*drummerpb.Order) {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if epoch < e.maxEpoch {
		return // a deposed leader; the current one will send its own
	}
	if epoch > e.maxEpoch && e.a.store != nil {
		e.a.store.noteEpoch(epoch)
	}
	e.maxEpoch = epoch
	for id, f := range e.done {
		keep := doneMemory
		if f.outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_DONE {
			keep = failedRetryAfter
		}
		if now.Sub(f.at) > keep {
			delete(e.done, id)
		}
	}
	for _, o := range orders {
		if o == nil || o.Id == "" || e.inflight[o.Id] {
			continue
		}
		if _, recent := e.done[o.Id]; recent {
			continue
		}
		if o.Epoch != epoch {
			e.record(&drummerpb.OrderResult{Id: o.Id, Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED,
				Error: fmt.Sprintf("order epoch %d differs from its reply's epoch %d", o.Epoch, epoch)})
			continue
		}
		if o.GetStart() != nil {
			e.starts.Add(1)
		}
		select {
		case e.queue <- o:
			e.inflight[o.Id] = true
			e.active.Store(time.Now().UnixNano())
		default:
			if o.GetStart() != nil {
				e.starts.Add(-1)
			}
			return // full: the orders come again with the next reply
		}
	}
}

// record stores a result for the reporters; callers hold e.mu. A result
// equal to the one already kept for the same order is not stored again
// (orders refused on sight, e.g. for an epoch mismatch, come with every
// reply), and at most maxResults are kept.
func (e *executor) record(r *drummerpb.OrderResult) {
	now := time.Now()
	if old, ok := e.latest[r.Id]; ok && now.Sub(old.at) <= resultTTL && sameResult(old.res, r) {
		return
	}
	e.seq++
	rec := result{seq: e.seq, at: now, res: r}
	e.results = append(e.results, rec)
	e.latest[r.Id] = rec
	i := 0
	for i < len(e.results) && (len(e.results)-i > maxResults || now.Sub(e.results[i].at) > resultTTL) {
		if old := e.results[i]; e.latest[old.res.Id].seq == old.seq {
			delete(e.latest, old.res.Id)
		}
		e.results[i] = result{}
		i++
	}
	e.results = e.results[i:]
}

func sameResult(a, b *drummerpb.OrderResult) bool {
	return a.Outcome == b.Outcome && a.Error == b.Error && a.ShardId == b.ShardId && a.ReplicaId == b.ReplicaId && a.Membership == nil && b.Membership == nil
}

// resultsSince returns the oldest results after seq that fit in one
// report (maxReportResults, maxReportResultBytes), and the seq of the
// last one returned (e.seq when there are none): the results a report
// carries are consecutive in seq.
func (e *executor) resultsSince(seq uint64) ([]*drummerpb.OrderResult, uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i := sort.Search(len(e.results), func(i int) bool { return e.results[i].seq > seq })
	var out []*drummerpb.OrderResult
	size := 0
	for ; i < len(e.results) && len(out) < maxReportResults; i++ {
		r := e.results[i]
		if size += proto.Size(r.res); size > maxReportResultBytes && len(out) > 0 {
			break
		}
		out = append(out, r.res)
		seq = r.seq
	}
	if len(out) == 0 {
		return nil, e.seq
	}
	return out, seq
}

func (e *executor) startWorkers(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(workers)
	for range workers {
		go func() {
			defer wg.Done()
			e.work(ctx)
		}()
	}
}

func orderShard(o *drummerpb.Order) uint64 {
	switch k := o.Kind.(type) {
	case *drummerpb.Order_Start:
		return k.Start.GetShardId()
	case *drummerpb.Order_Stop:
		return k.Stop.GetShardId()
	case *drummerpb.Order_ConfigChange:
		return k.ConfigChange.GetShardId()
	case *drummerpb.Order_TransferLeader:
		return k.TransferLeader.GetShardId()
	}
	return 0
}

func (e *executor) work(ctx context.Context) {
	for {
		var o *drummerpb.Order
		select {
		case <-ctx.Done():
			return
		case o = <-e.queue:
		}
		shard := orderShard(o)
		e.mu.Lock()
		if e.busy[shard] {
			// Another order of this shard is running: let it come back
			// with the next reply instead of blocking a worker.
			delete(e.inflight, o.Id)
			e.mu.Unlock()
			if o.GetStart() != nil {
				e.starts.Add(-1)
			}
			continue
		}
		e.busy[shard] = true
		e.mu.Unlock()

		res := e.execute(ctx, o)
		if o.GetStart() != nil {
			e.starts.Add(-1)
		}
		res.Id = o.Id
		if res.ShardId == 0 {
			res.ShardId = shard
		}

		e.mu.Lock()
		delete(e.busy, shard)
		delete(e.inflight, o.Id)
		e.done[o.Id] = finished{at: time.Now(), outcome: res.Outcome}
		e.record(res)
		e.mu.Unlock()
		if res.Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_DONE {
			e.a.log.Debug("order not carried out", "order", o.Id, "outcome", res.Outcome.String(), "err", res.Error)
		}
		e.active.Store(time.Now().UnixNano())
		e.a.col.onEvent(eventsNudge)
		e.a.reps.nudge()
	}
}

func done() *drummerpb.OrderResult {
	return &drummerpb.OrderResult{Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_DONE}
}

func failed(format string, args ...any) *drummerpb.OrderResult {
	return &drummerpb.OrderResult{Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_FAILED, Error: fmt.Sprintf(format, args...)}
}

func rejected(format string, args ...any) *drummerpb.OrderResult {
	return &drummerpb.OrderResult{Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED, Error: fmt.Sprintf(format, args...)}
}

// execute carries out one order; it never panics.
func (e *executor) execute(ctx context.Context, o *drummerpb.Order) (res *drummerpb.OrderResult) {
	defer func() {
		if p := recover(); p != nil {
			e.a.log.Error("BUG: order execution panicked", "order", o.Id, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			res = failed("panic: %v", p)
		}
	}()
	switch k := o.Kind.(type) {
	case *drummerpb.Order_Start:
		return e.start(k.Start)
	case *drummerpb.Order_Stop:
		return e.stop(ctx, k.Stop)
	case *drummerpb.Order_ConfigChange:
		return e.configChange(ctx, k.ConfigChange)
	case *drummerpb.Order_TransferLeader:
		t := k.TransferLeader
		if t == nil || t.ShardId == 0 || t.ToReplicaId == 0 {
			return rejected("malformed leader transfer")
		}
		if err := e.a.nh.RequestLeaderTransfer(t.ShardId, t.ToReplicaId); err != nil {
			return failed("leader transfer: %v", err)
		}
		return done()
	}
	return rejected("unknown order kind")
}

// running returns the replica ID of the shard's replica running here.
func (e *executor) running(shardID uint64) (uint64, bool) {
	if r := e.a.col.view().Replicas[shardID]; r != nil {
		return r.ReplicaId, true
	}
	// The view may lag a start that just happened; ask the NodeHost.
	info := e.a.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
	if info == nil {
		return 0, false
	}
	for _, si := range info.ShardInfoList {
		if si.ShardID == shardID {
			return si.ReplicaID, true
		}
	}
	return 0, false
}

// replicaConfig builds and validates a dragonboat replica config; an
// invalid one would panic inside dragonboat after the bootstrap record is
// written.
func replicaConfig(o *drummerpb.StartReplicaOrder) (config.Config, error) {
	c := o.GetConfig()
	rc := config.Config{
		ShardID:             o.ShardId,
		ReplicaID:           o.ReplicaId,
		ElectionRTT:         c.GetElectionRtt(),
		HeartbeatRTT:        c.GetHeartbeatRtt(),
		CheckQuorum:         c.GetCheckQuorum(),
		PreVote:             c.GetPreVote(),
		SnapshotEntries:     c.GetSnapshotEntries(),
		CompactionOverhead:  c.GetCompactionOverhead(),
		OrderedConfigChange: true,
		IsNonVoting:         o.NonVoting,
	}
	if rc.ElectionRTT == 0 || rc.HeartbeatRTT == 0 {
		return rc, errors.New("missing election/heartbeat RTT")
	}
	if err := rc.Validate(); err != nil {
		return rc, err
	}
	return rc, nil
}

func (e *executor) start(o *drummerpb.StartReplicaOrder) *drummerpb.OrderResult {
	if o == nil || o.ShardId == 0 || o.ReplicaId == 0 {
		return rejected("malformed start order")
	}
	res := &drummerpb.OrderResult{ShardId: o.ShardId, ReplicaId: o.ReplicaId}
	app, ok := e.a.cfg.Apps.Get(o.App)
	if !ok {
		return rejected("app %q is not registered on this nodehost (registered: %v)", o.App, e.a.cfg.Apps.Names())
	}
	rc, err := replicaConfig(o)
	if err != nil {
		return rejected("invalid shard config: %v", err)
	}
	if err := checkInitialMembers(o.InitialMembers); err != nil {
		return rejected("%v", err)
	}
	if wait := e.justStopped(o.ShardId, o.ReplicaId); wait > 0 {
		// Dragonboat panics ("from two incarnations found") when a
		// replica starts again while its stopped incarnation is still
		// loaded in its workers.
		return failed("replica %d of shard %d was stopped %v ago; starting it again once dragonboat has unloaded it", o.ReplicaId, o.ShardId, restartAfterStop-wait)
	}
	if id, ok := e.running(o.ShardId); ok {
		if id == o.ReplicaId {
			e.a.store.assign(o)
			return done()
		}
		return failed("replica %d of shard %d runs here; it must be stopped first", id, o.ShardId)
	}
	var members map[uint64]dragonboat.Target
	join := o.Join
	if e.a.nh.HasNodeInfo(o.ShardId, o.ReplicaId) {
		// Restart from the data on disk; the bootstrap record decides.
		join = false
	} else {
		switch {
		case join && len(o.InitialMembers) > 0:
			return rejected("start order has both join and initial members")
		case !join && len(o.InitialMembers) == 0:
			return rejected("replica %d of shard %d has no data here and the order gives no initial members", o.ReplicaId, o.ShardId)
		case !join:
			if addr := o.InitialMembers[o.ReplicaId]; addr != e.a.cfg.RaftAddress {
				return rejected("initial members give %q for replica %d, but this host is %s", addr, o.ReplicaId, e.a.cfg.RaftAddress)
			}
			members = map[uint64]dragonboat.Target{}
			for id, addr := range o.InitialMembers {
				if id == 0 || db.ValidateAddress(addr) != nil {
					return rejected("invalid initial member %d=%q", id, addr)
				}
				members[id] = addr
			}
		}
	}
	if err := e.bindAddresses(o.ShardId, o.InitialMembers); err != nil {
		return rejected("%v", err)
	}
	// Record the assignment first, so a restart brings the replica back.
	e.a.store.assign(o)
	err = e.startReplica(app, members, join, rc)
	switch {
	case err == nil:
	case errors.Is(err, dragonboat.ErrShardAlreadyExist):
		return failed("shard %d is still being unloaded here; retrying later", o.ShardId)
	case errors.Is(err, dragonboat.ErrReplicaRemoved):
		e.a.store.unassign(o.ShardId, o.ReplicaId)
		return rejected("replica %d of shard %d was removed from this host for good", o.ReplicaId, o.ShardId)
	case errors.Is(err, dragonboat.ErrInvalidShardSettings):
		return rejected("dragonboat refused the start: %v", err)
	default:
		return failed("start replica: %v", err)
	}
	res.Outcome = drummerpb.OrderOutcome_ORDER_OUTCOME_DONE
	e.a.log.Info("replica started", "shard_id", o.ShardId, "replica_id", o.ReplicaId, "join", join, "non_voting", o.NonVoting)
	return res
}

// restartAfterStop is how long a stopped replica is not started again.
const restartAfterStop = 5 * time.Second

// justStopped returns how much longer the replica must stay stopped (0:
// it may start), forgetting stops that are old enough.
func (e *executor) justStopped(shardID, replicaID uint64) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := replicaKey{shardID, replicaID}
	at, ok := e.stopped[k]
	if !ok {
		return 0
	}
	if left := restartAfterStop - time.Since(at); left > 0 {
		return left
	}
	delete(e.stopped, k)
	return 0
}

// bindAddresses checks that no replica of members is given an address
// other than the one dragonboat already knows for it on this NodeHost
// (from an earlier start or membership change, or the running replica's
// membership), and remembers the addresses. Dragonboat panics, taking the
// whole nodehost down, when a membership change applies a second address
// for a replica it has registered; Drummer never reuses a replica ID, so
// only a bad order can do it, and it is refused.
func (e *executor) bindAddresses(shardID uint64, members map[uint64]string) error {
	known := map[uint64]string{}
	if info := e.a.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true}); info != nil {
		for _, si := range info.ShardInfoList {
			if si.ShardID == shardID {
				maps.Copy(known, si.Replicas)
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(members)) {
		addr := members[id]
		k := replicaKey{shardID, id}
		if old, ok := e.addrs[k]; ok && old != addr {
			return fmt.Errorf("replica %d of shard %d was given address %s before, now %s: a replica's address never changes", id, shardID, old, addr)
		}
		if old, ok := known[id]; ok && old != addr {
			return fmt.Errorf("replica %d of shard %d is at %s in the shard's membership, not %s", id, shardID, old, addr)
		}
	}
	for id, addr := range members {
		e.addrs[replicaKey{shardID, id}] = addr
	}
	return nil
}

// checkInitialMembers validates a start order's initial members before
// dragonboat sees them: valid addresses, no replica ID 0, and no address
// twice (two members on one NodeHost cannot both run).
func checkInitialMembers(members map[uint64]string) error {
	byAddr := make(map[string]uint64, len(members))
	for _, id := range slices.Sorted(maps.Keys(members)) {
		addr := members[id]
		if id == 0 || db.ValidateAddress(addr) != nil {
			return fmt.Errorf("invalid initial member %d=%q", id, addr)
		}
		if other, dup := byAddr[addr]; dup {
			return fmt.Errorf("initial members %d and %d share the address %s", other, id, addr)
		}
		byAddr[addr] = id
	}
	return nil
}

func (e *executor) startReplica(app App, members map[uint64]dragonboat.Target, join bool, rc config.Config) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("dragonboat panicked starting shard %d replica %d: %v", rc.ShardID, rc.ReplicaID, p)
		}
	}()
	nh := e.a.nh
	switch {
	case app.Regular != nil:
		return nh.StartReplica(members, join, app.Regular, rc)
	case app.Concurrent != nil:
		return nh.StartConcurrentReplica(members, join, app.Concurrent, rc)
	case app.OnDisk != nil:
		return nh.StartOnDiskReplica(members, join, app.OnDisk, rc)
	}
	return errors.New("app has no state machine factory")
}

func (e *executor) stop(ctx context.Context, o *drummerpb.StopReplicaOrder) *drummerpb.OrderResult {
	if o == nil || o.ShardId == 0 || o.ReplicaId == 0 {
		return rejected("malformed stop order")
	}
	nh := e.a.nh
	if o.RemoveData {
		if res := e.refuseRemoveData(ctx, o); res != nil {
			return res
		}
	}
	if id, ok := e.running(o.ShardId); ok && id == o.ReplicaId {
		if err := nh.StopReplica(o.ShardId, o.ReplicaId); err != nil && !errors.Is(err, dragonboat.ErrShardNotFound) {
			return failed("stop replica: %v", err)
		}
		e.mu.Lock()
		e.stopped[replicaKey{o.ShardId, o.ReplicaId}] = time.Now()
		e.mu.Unlock()
	}
	e.a.store.unassign(o.ShardId, o.ReplicaId)
	if o.RemoveData && nh.HasNodeInfo(o.ShardId, o.ReplicaId) {
		rctx, cancel := context.WithTimeout(ctx, e.timeouts.removeData)
		defer cancel()
		if err := nh.SyncRemoveData(rctx, o.ShardId, o.ReplicaId); err != nil {
			return failed("remove data: %v", err)
		}
		e.a.log.Info("replica data removed", "shard_id", o.ShardId, "replica_id", o.ReplicaId)
		e.a.col.inventoryDue()
	}
	return &drummerpb.OrderResult{Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_DONE, ShardId: o.ShardId, ReplicaId: o.ReplicaId}
}

func (e *executor) configChange(ctx context.Context, o *drummerpb.ConfigChangeOrder) *drummerpb.OrderResult {
	if o == nil || o.ShardId == 0 || o.ReplicaId == 0 {
		return rejected("malformed config change")
	}
	if o.Type != drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE {
		if err := db.ValidateAddress(o.Target); err != nil {
			return rejected("config change target: %v", err)
		}
	}
	if _, ok := e.running(o.ShardId); !ok {
		return failed("shard %d does not run here", o.ShardId)
	}
	if o.Type != drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE {
		if err := e.bindAddresses(o.ShardId, map[uint64]string{o.ReplicaId: o.Target}); err != nil {
			return rejected("%v", err)
		}
	}
	nh := e.a.nh
	cctx, cancel := context.WithTimeout(ctx, e.timeouts.configChange)
	defer cancel()
	var err error
	switch o.Type {
	case drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_ADD_NON_VOTING:
		err = nh.SyncRequestAddNonVoting(cctx, o.ShardId, o.ReplicaId, o.Target, o.ConfigChangeId)
	case drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_PROMOTE:
		err = nh.SyncRequestAddReplica(cctx, o.ShardId, o.ReplicaId, o.Target, o.ConfigChangeId)
	case drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE:
		err = nh.SyncRequestDeleteReplica(cctx, o.ShardId, o.ReplicaId, o.ConfigChangeId)
	default:
		return rejected("unknown config change type %v", o.Type)
	}
	if err != nil && o.Type == drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE && !errors.Is(err, dragonboat.ErrRejected) {
		// Removing the replica that runs here: it applies its own removal
		// and stops, and the request may fail as its shard closes. The
		// removal happened if the replica reported it (NodeDeleted); for a
		// one-replica shard this host's word is the only confirmation
		// there can be. The event may trail the error a little.
		for i := 0; i < 20 && ctx.Err() == nil; i++ {
			if e.a.col.deletedItself(o.ShardId, o.ReplicaId) {
				e.a.log.Info("replica applied its own removal", "shard_id", o.ShardId, "replica_id", o.ReplicaId, "call_error", firstLine(err))
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	res := &drummerpb.OrderResult{ShardId: o.ShardId, ReplicaId: o.ReplicaId}
	switch {
	case err == nil:
		res.Outcome = drummerpb.OrderOutcome_ORDER_OUTCOME_DONE
	case errors.Is(err, dragonboat.ErrRejected):
		res.Outcome, res.Error = drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED, "rejected (stale ConfigChangeID or illegal change)"
	default:
		res.Outcome, res.Error = drummerpb.OrderOutcome_ORDER_OUTCOME_FAILED, err.Error()
		e.a.log.Info("membership change failed", "shard_id", o.ShardId, "change", o.Type.String(), "replica_id", o.ReplicaId, "err", err)
	}
	// Report the membership as it is now either way: it tells the
	// scheduler whether the change happened.
	mctx, mcancel := context.WithTimeout(ctx, e.timeouts.membership)
	defer mcancel()
	if m, err := nh.SyncGetShardMembership(mctx, o.ShardId); err == nil {
		res.Membership = toMembership(m)
	}
	if res.Outcome == drummerpb.OrderOutcome_ORDER_OUTCOME_DONE {
		e.a.log.Info("membership changed", "shard_id", o.ShardId, "change", o.Type.String(), "replica_id", o.ReplicaId)
	}
	return res
}

// firstLine is an error's first line (dragonboat's errors carry stack
// traces after it).
func firstLine(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return msg
}

// restore brings back, after a restart, the replicas this host was
// assigned, without waiting for a drummer: the data plane stays up while
// the control plane is away.
// working reports whether orders are being carried out here or were very
// recently: the scheduler's next step then follows within a fraction of a
// report interval.
func (e *executor) working() bool {
	return time.Since(time.Unix(0, e.active.Load())) < 3*time.Second
}

// starting reports whether replicas are still being started here.
func (e *executor) starting() bool { return e.restoring.Load() || e.starts.Load() > 0 }

func (e *executor) restore(ctx context.Context) {
	e.restoring.Store(true)
	defer e.restoring.Store(false)
	for _, o := range e.a.store.assignments() {
		if ctx.Err() != nil {
			return
		}
		if !e.a.nh.HasNodeInfo(o.ShardId, o.ReplicaId) && o.Join {
			// A joining replica that never started: wait for the order.
			continue
		}
		res := e.start(o)
		if res.Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_DONE {
			e.a.log.Warn("could not restore replica", "shard_id", o.ShardId, "replica_id", o.ReplicaId, "err", res.Error)
		}
	}
}
