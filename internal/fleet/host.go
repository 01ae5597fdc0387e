package fleet

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/reportproto"
)

// Agent timings, as in package agent.
const (
	failedRetryAfter = 2 * time.Second
	doneMemory       = 30 * time.Second
	resultTTL        = 2 * time.Minute
	workingFor       = 3 * time.Second
)

type finished struct {
	at      time.Time
	outcome drummerpb.OrderOutcome
}

type result struct {
	seq uint64
	at  time.Time
	res *drummerpb.OrderResult
}

// Host is one simulated nodehost: its replicas in the model, and an agent
// that reports to every drummer server and carries out the leader's orders.
type Host struct {
	f     *Fleet
	index int
	ident reportproto.Identity
	raft  string
	// version is bumped whenever something this host reports changes;
	// dirty lists the shards whose report changed since the view was last
	// built (all of them when dirtyAll). dirtyMu is a leaf lock: groups
	// mark their hosts under their own lock.
	version  atomic.Uint64
	dirtyMu  sync.Mutex
	dirty    map[uint64]struct{}
	dirtyAll bool
	// interval is the report period the drummers asked for (nanoseconds);
	// active is when orders last arrived or finished (unix nanoseconds).
	interval atomic.Int64
	active   atomic.Int64
	cancel   context.CancelFunc
	done     chan struct{}

	mu          sync.Mutex
	alive       bool
	running     map[uint64]*replica // by shard
	disk        map[key]*diskRec
	removedKeys map[key]bool
	diskChanged bool
	diskVersion uint64
	lastDisk    time.Time
	view        *reportproto.View
	viewVersion uint64

	// The agent's executor state.
	deployment  uint64
	maxEpoch    uint64
	epochHolder string
	seen        map[string]finished
	results     []result
	seq         uint64

	nudgeMu   sync.Mutex
	nudged    chan struct{}
	lastNudge time.Time
}

func newHost(f *Fleet, i int) *Host {
	ip := hostIP(i)
	h := &Host{
		f: f, index: i,
		ident: reportproto.Identity{
			HostID:      fmt.Sprintf("fleet-%05d-%08x", i, rand.Uint32()),
			RaftAddress: ip + ":7100",
			APIAddress:  ip + ":7200",
			Labels:      map[string]string{"region": fmt.Sprintf("r%d", i%3+1)},
			Apps:        []string{appName},
			Version:     "fleet",
			Session:     rand.Uint64() | 1,
		},
		alive:       true,
		running:     map[uint64]*replica{},
		disk:        map[key]*diskRec{},
		removedKeys: map[key]bool{},
		seen:        map[string]finished{},
		nudged:      make(chan struct{}),
		done:        make(chan struct{}),
	}
	h.raft = h.ident.RaftAddress
	h.interval.Store(int64(f.cfg.InitialInterval))
	h.version.Store(1)
	return h
}

// hostIP gives host i its own loopback address (127.10.0.0/16 and up), so
// every simulated host has a distinct raft address at the same port.
func hostIP(i int) string {
	return fmt.Sprintf("127.%d.%d.%d", 10+i/65536, i/256%256, i%256)
}

// ID is the host's ID.
func (h *Host) ID() string { return h.ident.HostID }

// changed marks the report of the host's replica of shard as changed.
func (h *Host) changed(shard uint64) {
	h.dirtyMu.Lock()
	if h.dirty == nil {
		h.dirty = map[uint64]struct{}{}
	}
	h.dirty[shard] = struct{}{}
	h.dirtyMu.Unlock()
	h.version.Add(1)
}

// changedAll marks every report of the host as changed.
func (h *Host) changedAll() {
	h.dirtyMu.Lock()
	h.dirtyAll = true
	h.dirtyMu.Unlock()
	h.version.Add(1)
}

// currentView returns the host's view, rebuilt when something changed:
// only the reports of the shards marked changed, since rebuilding all of
// them on every change (each under its group's lock) was 18 % of the
// bench at 10,000 hosts.
func (h *Host) currentView(now time.Time) *reportproto.View {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.lastDisk) >= h.f.cfg.DiskInventoryEvery {
		// The agent takes the on-disk inventory now and then.
		h.lastDisk = now
		h.diskChanged = true
	}
	ver := h.version.Load()
	if h.view != nil && h.viewVersion == ver && !h.diskChanged {
		return h.view
	}
	old := h.view
	h.dirtyMu.Lock()
	dirty, all := h.dirty, h.dirtyAll || old == nil
	h.dirty, h.dirtyAll = nil, false
	h.dirtyMu.Unlock()
	var v *reportproto.View
	if all {
		v = &reportproto.View{Replicas: make(map[uint64]*drummerpb.ReplicaReport, len(h.running)), Memberships: map[uint64]*drummerpb.Membership{}}
		for sid := range h.running {
			h.reportInto(v, old, sid)
		}
	} else {
		v = &reportproto.View{Replicas: maps.Clone(old.Replicas), Memberships: maps.Clone(old.Memberships)}
		for sid := range dirty {
			h.reportInto(v, old, sid)
		}
	}
	if h.diskChanged || old == nil {
		h.diskChanged = false
		h.diskVersion++
		keys := slices.SortedFunc(maps.Keys(h.disk), func(a, b key) int {
			if a.shard != b.shard {
				return cmpU(a.shard, b.shard)
			}
			return cmpU(a.replica, b.replica)
		})
		v.Disk = make([]*drummerpb.ReplicaKey, len(keys))
		for i, k := range keys {
			v.Disk[i] = &drummerpb.ReplicaKey{ShardId: k.shard, ReplicaId: k.replica}
		}
	} else {
		v.Disk = old.Disk
	}
	v.DiskVersion = h.diskVersion
	h.view, h.viewVersion = v, ver
	return v
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func sameReport(a, b *drummerpb.ReplicaReport) bool {
	return a.ReplicaId == b.ReplicaId && a.LeaderId == b.LeaderId && a.Term == b.Term && a.ConfigChangeId == b.ConfigChangeId &&
		a.Role == b.Role && a.Pending == b.Pending && a.CaughtUp == b.CaughtUp && a.App == b.App
}

func (h *Host) status() reportproto.Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	return reportproto.Status{EpochSeen: h.maxEpoch}
}

func (h *Host) resultsSince(seq uint64) ([]*drummerpb.OrderResult, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*drummerpb.OrderResult
	for _, r := range h.results {
		if r.seq > seq {
			out = append(out, r.res)
		}
	}
	return out, h.seq
}

// record stores a result for the reporters; the caller holds h.mu.
func (h *Host) record(r *drummerpb.OrderResult, now time.Time) {
	h.seq++
	h.results = append(h.results, result{seq: h.seq, at: now, res: r})
	i := 0
	for i < len(h.results) && now.Sub(h.results[i].at) > resultTTL {
		i++
	}
	h.results = h.results[i:]
}

func (h *Host) working(now time.Time) bool {
	return now.Sub(time.Unix(0, h.active.Load())) < workingFor
}

func (h *Host) nudgeCh() <-chan struct{} {
	h.nudgeMu.Lock()
	defer h.nudgeMu.Unlock()
	return h.nudged
}

// nudge makes every reporter send now; at most one per 50ms.
func (h *Host) nudge() {
	h.nudgeMu.Lock()
	defer h.nudgeMu.Unlock()
	if time.Since(h.lastNudge) < 50*time.Millisecond {
		return
	}
	h.lastNudge = time.Now()
	close(h.nudged)
	h.nudged = make(chan struct{})
}

// handle takes a reply: the interval, and a leader's orders (the ones in
// force after it: sent with it, or held when unchanged).
func (h *Host) handle(resp *drummerpb.ReportResponse, orders []*drummerpb.Order, ep string) {
	if resp.ReportIntervalMs != 0 {
		h.interval.Store(int64(time.Duration(resp.ReportIntervalMs) * time.Millisecond))
	}
	if !resp.Leader {
		return
	}
	now := time.Now()
	h.mu.Lock()
	if h.deployment == 0 {
		h.deployment = resp.DeploymentId
	}
	if resp.DeploymentId != 0 && resp.DeploymentId != h.deployment || resp.Epoch < h.maxEpoch || !h.alive {
		h.mu.Unlock()
		return
	}
	// Only the epoch holder's destructive orders are taken (the agent's
	// epochHolder; the connection already verified a server certificate).
	verified := resp.Epoch > h.maxEpoch || h.epochHolder == ep
	if resp.Epoch > h.maxEpoch {
		h.epochHolder = ep
	}
	h.maxEpoch = resp.Epoch
	for id, f := range h.seen {
		keep := doneMemory
		if f.outcome != outDone {
			keep = failedRetryAfter
		}
		if now.Sub(f.at) > keep {
			delete(h.seen, id)
		}
	}
	ran := 0
	for _, o := range orders {
		if o == nil || o.Id == "" {
			continue
		}
		if _, recent := h.seen[o.Id]; recent {
			continue
		}
		res := h.execute(resp.Epoch, o, verified)
		res.Id = o.Id
		h.seen[o.Id] = finished{at: now, outcome: res.Outcome}
		h.record(res, now)
		ran++
		h.f.orders.Add(1)
	}
	h.mu.Unlock()
	if ran > 0 {
		h.active.Store(time.Now().UnixNano())
		h.changedAll()
		h.nudge()
	}
}

// reportInto puts the current report of the host's replica of shard sid
// into v (removing it if the host runs none); the caller holds h.mu.
func (h *Host) reportInto(v, old *reportproto.View, sid uint64) {
	delete(v.Replicas, sid)
	delete(v.Memberships, sid)
	r := h.running[sid]
	if r == nil {
		return
	}
	g := r.g
	g.mu.Lock()
	if r.removedSelf {
		// It applied its own removal: dragonboat unloaded it.
		g.mu.Unlock()
		delete(h.running, sid)
		if rec := h.disk[key{sid, r.id}]; rec != nil {
			rec.removedSelf = true
		}
		h.diskChanged = true
		return
	}
	rr, ms := r.report(h.raft)
	g.mu.Unlock()
	if old != nil {
		if prev := old.Replicas[sid]; prev != nil && sameReport(prev, rr) {
			rr = prev
		}
	}
	v.Replicas[sid] = rr
	if ms != nil {
		v.Memberships[sid] = ms
	}
}

// execute carries out one order on the model; the caller holds h.mu.
func (h *Host) execute(epoch uint64, o *drummerpb.Order, verified bool) *drummerpb.OrderResult {
	res := &drummerpb.OrderResult{}
	if o.Epoch != epoch {
		res.Outcome, res.Error = outRejected, fmt.Sprintf("order epoch %d differs from its reply's epoch %d", o.Epoch, epoch)
		return res
	}
	switch k := o.Kind.(type) {
	case *drummerpb.Order_Start:
		res.ShardId, res.ReplicaId = k.Start.GetShardId(), k.Start.GetReplicaId()
		res.Outcome, res.Error = h.start(k.Start)
	case *drummerpb.Order_Stop:
		res.ShardId, res.ReplicaId = k.Stop.GetShardId(), k.Stop.GetReplicaId()
		if k.Stop.GetRemoveData() && !verified {
			res.Outcome, res.Error = outRejected, "not from the verified epoch holder"
			return res
		}
		res.Outcome, res.Error = h.stop(k.Stop)
	case *drummerpb.Order_ConfigChange:
		res.ShardId, res.ReplicaId = k.ConfigChange.GetShardId(), k.ConfigChange.GetReplicaId()
		res.Outcome, res.Error, res.Membership = h.configChange(k.ConfigChange)
	case *drummerpb.Order_TransferLeader:
		res.ShardId = k.TransferLeader.GetShardId()
		res.Outcome, res.Error = h.transfer(k.TransferLeader)
	default:
		res.Outcome, res.Error = outRejected, "unknown order kind"
	}
	return res
}

// run reports to every endpoint until ctx ends.
func (h *Host) run(ctx context.Context, conns []*grpc.ClientConn) {
	defer close(h.done)
	var wg sync.WaitGroup
	for i, cc := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); h.report(ctx, i, drummerpb.NewDrummerClient(cc)) }()
	}
	wg.Wait()
}

// report is the agent's reporter loop for one drummer server.
func (h *Host) report(ctx context.Context, ep int, dc drummerpb.DrummerClient) {
	st := reportproto.NewEndpoint()
	epName := h.f.endpoints[ep]
	// Spread the hosts' phases over one period, as hosts started at
	// different times would be.
	select {
	case <-ctx.Done():
		return
	case <-time.After(rand.N(time.Duration(h.interval.Load()))):
	}
	for {
		now := time.Now()
		base := time.Duration(h.interval.Load())
		interval := st.Interval(base, h.working(now))
		nudged := st.Nudge(h.nudgeCh())
		rep := st.Build(&h.ident, h.currentView(now), h.status(), h.resultsSince, h.f.cfg.FullReportEvery, now)
		rctx, cancel := context.WithTimeout(ctx, reportproto.Timeout(base))
		begin := time.Now()
		resp, err := dc.Report(rctx, rep.Req)
		took := time.Since(begin)
		cancel()
		if ctx.Err() != nil {
			return
		}
		h.f.stats.Load().record(ep, took, err, rep.Req.Full)
		if err != nil {
			st.Failed(rep, time.Now())
			h.f.noteError(ep, status.Code(err).String(), err)
		} else {
			st.Acked(rep, resp, time.Now())
			h.handle(resp, st.Orders(), epName)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(st.Pause(interval)):
		case <-nudged:
			time.Sleep(20 * time.Millisecond)
		}
	}
}
