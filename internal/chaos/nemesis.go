package chaos

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/testcluster"
)

// FaultEvent is one injected (or healed) fault.
type FaultEvent struct {
	At     time.Duration `json:"at"` // since the start of the fault phase
	Kind   string        `json:"kind"`
	Target string        `json:"target"`
	Detail string        `json:"detail,omitempty"`
	Healed bool          `json:"healed,omitempty"`
	Err    string        `json:"err,omitempty"`
}

// active is a fault in force, healed at until.
type active struct {
	kind   string
	target string
	until  time.Time
	heal   func() error
	hosts  []int // nodehosts it impairs
	drumer int   // drummer it impairs (-1: none)
}

// nemesis injects random faults from a seeded schedule, keeping the
// deployment recoverable: at most cfg.MaxImpaired nodehosts and one
// drummer impaired at a time, and a data directory wiped only when no
// shard can lose the data of a second replica (see wipeSafe).
type nemesis struct {
	h     *harness
	rng   *rand.Rand
	start time.Time
	// wipeUntil, when set, holds back new faults while a wipe that was
	// drawn waits for a moment when it is safe (see run).
	wipeUntil time.Time

	mu       sync.Mutex
	active   []*active
	dropping bool
	wiped    map[string]bool // host identities wiped, still members somewhere
	counts   map[string]int
	log      []FaultEvent
}

func newNemesis(h *harness, seed uint64) *nemesis {
	return &nemesis{h: h, rng: rand.New(rand.NewPCG(seed, 0x6e656d65736973)), counts: map[string]int{}, wiped: map[string]bool{}}
}

func (n *nemesis) dur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(n.rng.Int64N(int64(hi-lo)+1))
}

func (n *nemesis) record(e FaultEvent) {
	e.At = time.Since(n.start).Round(time.Millisecond)
	n.mu.Lock()
	n.log = append(n.log, e)
	if !e.Healed && e.Err == "" {
		n.counts[e.Kind]++
	}
	n.mu.Unlock()
	what := "inject"
	if e.Healed {
		what = "heal"
	}
	msg := fmt.Sprintf("%s %s %s %s", what, e.Kind, e.Target, e.Detail)
	if e.Err != "" {
		msg += " ERROR: " + e.Err
	}
	n.h.logf("[%s] %s", e.At, msg)
}

func (n *nemesis) impaired() (hosts map[int]bool, drummers map[int]bool) {
	hosts, drummers = map[int]bool{}, map[int]bool{}
	for _, a := range n.active {
		for _, i := range a.hosts {
			hosts[i] = true
		}
		if a.drumer >= 0 {
			drummers[a.drumer] = true
		}
	}
	return hosts, drummers
}

// run injects faults until ctx ends. Healing is left to healAll.
func (n *nemesis) run(ctx context.Context) {
	n.start = time.Now()
	cfg := &n.h.cfg
	if len(cfg.Faults) == 0 {
		<-ctx.Done()
		return
	}
	next := time.Now().Add(n.dur(cfg.FaultGapMin, cfg.FaultGapMax))
	for {
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return
		}
		n.healExpired(ctx, false)
		if time.Now().Before(next) {
			continue
		}
		if !n.wipeUntil.IsZero() {
			// A wipe is rarely safe while other faults keep repairs
			// going; rather than never exercising it, hold back other
			// faults for a while so that the deployment settles.
			if n.inject(ctx, FaultNodehostWipe) || time.Now().After(n.wipeUntil) {
				n.wipeUntil = time.Time{}
				next = time.Now().Add(n.dur(cfg.FaultGapMin, cfg.FaultGapMax))
			} else {
				next = time.Now().Add(time.Second)
			}
			continue
		}
		n.injectOne(ctx)
		next = time.Now().Add(n.dur(cfg.FaultGapMin, cfg.FaultGapMax))
	}
}

var faultWeights = map[string]int{
	FaultNodehostKill: 3, FaultNodehostPause: 2, FaultPartition: 3, FaultMessageLoss: 1,
	FaultNodehostWipe: 2, FaultSlowStateMachine: 1, FaultDrummerKill: 2, FaultDrummerPause: 1, FaultSnapshot: 2,
}

// injectOne picks a fault kind by weight among those possible now; a few
// draws are tried before giving up for this round.
func (n *nemesis) injectOne(ctx context.Context) {
	cfg := &n.h.cfg
	total := 0
	for _, f := range cfg.Faults {
		total += faultWeights[f]
	}
	for range 4 {
		x := n.rng.IntN(total)
		var kind string
		for _, f := range cfg.Faults {
			if x < faultWeights[f] {
				kind = f
				break
			}
			x -= faultWeights[f]
		}
		if n.inject(ctx, kind) {
			return
		}
		if kind == FaultNodehostWipe {
			n.wipeUntil = time.Now().Add(wipeWait)
			return
		}
	}
}

// wipeWait bounds how long the nemesis holds back other faults for a wipe
// that waits for a safe moment.
const wipeWait = 20 * time.Second

// pickHost returns a random nodehost not impaired now, or -1 when the
// impairment budget is used up.
func (n *nemesis) pickHost(exclude map[int]bool) int {
	n.mu.Lock()
	hosts, _ := n.impaired()
	n.mu.Unlock()
	if len(hosts) >= n.h.cfg.MaxImpaired {
		return -1
	}
	var free []int
	for i := range n.h.cl.Nodehosts {
		if !hosts[i] && !exclude[i] {
			free = append(free, i)
		}
	}
	if len(free) == 0 {
		return -1
	}
	return free[n.rng.IntN(len(free))]
}

func (n *nemesis) add(a *active) {
	n.mu.Lock()
	n.active = append(n.active, a)
	n.mu.Unlock()
}

// inject tries one fault of the given kind; false when it is not
// possible now.
func (n *nemesis) inject(ctx context.Context, kind string) bool {
	h := n.h
	cfg := &h.cfg
	nhs := h.cl.Nodehosts
	switch kind {
	case FaultNodehostKill, FaultNodehostPause:
		i := n.pickHost(nil)
		if i < 0 {
			return false
		}
		node := nhs[i]
		d := n.dur(time.Second, 20*time.Second)
		if kind == FaultNodehostPause {
			d = n.dur(time.Second, 10*time.Second)
			if err := node.Signal(syscall.SIGSTOP); err != nil {
				n.record(FaultEvent{Kind: kind, Target: node.Name, Err: err.Error()})
				return true
			}
			n.add(&active{kind: kind, target: node.Name, until: time.Now().Add(d), hosts: []int{i}, drumer: -1,
				heal: func() error { return node.Signal(syscall.SIGCONT) }})
		} else {
			node.Kill()
			n.add(&active{kind: kind, target: node.Name, until: time.Now().Add(d), hosts: []int{i}, drumer: -1,
				heal: func() error { return n.restartNodehost(i) }})
		}
		n.record(FaultEvent{Kind: kind, Target: node.Name, Detail: "for " + d.String()})
	case FaultPartition:
		i := n.pickHost(nil)
		if i < 0 {
			return false
		}
		idx := []int{i}
		if n.rng.IntN(3) == 0 {
			if j := n.pickHost(map[int]bool{i: true}); j >= 0 && len(n.impairedHosts())+2 <= cfg.MaxImpaired {
				idx = append(idx, j)
			}
		}
		d := n.dur(3*time.Second, 20*time.Second)
		var names []string
		var done []int
		for _, k := range idx {
			if err := n.setPartition(ctx, k, true); err != nil {
				n.record(FaultEvent{Kind: kind, Target: nhs[k].Name, Err: err.Error()})
				continue
			}
			done = append(done, k)
			names = append(names, nhs[k].Name)
		}
		if len(done) == 0 {
			return true
		}
		n.add(&active{kind: kind, target: fmt.Sprint(names), until: time.Now().Add(d), hosts: done, drumer: -1,
			heal: func() error {
				var first error
				for _, k := range done {
					if err := n.setPartition(context.Background(), k, false); err != nil && first == nil {
						first = err
					}
				}
				return first
			}})
		n.record(FaultEvent{Kind: kind, Target: fmt.Sprint(names), Detail: "for " + d.String()})
	case FaultNodehostWipe:
		i := n.pickHost(nil)
		if i < 0 {
			return false
		}
		ids, ok := n.wipeSafe(ctx, i)
		if !ok {
			return false
		}
		node := nhs[i]
		n.mu.Lock()
		for _, id := range ids {
			n.wiped[id] = true
		}
		n.mu.Unlock()
		node.Kill()
		err := os.RemoveAll(node.DataDir)
		d := n.dur(time.Second, 5*time.Second)
		n.add(&active{kind: kind, target: node.Name, until: time.Now().Add(d), hosts: []int{i}, drumer: -1,
			heal: func() error { return n.restartNodehost(i) }})
		e := FaultEvent{Kind: kind, Target: node.Name, Detail: "data directory removed; restart as a new identity after " + d.String()}
		if err != nil {
			e.Err = err.Error()
		}
		n.record(e)
	case FaultDrummerKill, FaultDrummerPause:
		n.mu.Lock()
		_, dr := n.impaired()
		n.mu.Unlock()
		if len(dr) > 0 {
			return false
		}
		i := n.rng.IntN(len(h.cl.Drummers))
		leader := false
		if kind == FaultDrummerKill && n.rng.IntN(2) == 0 {
			if l := n.h.schedulerLeader(ctx); l >= 0 {
				i, leader = l, true
			}
		}
		node := h.cl.Drummers[i]
		var d time.Duration
		if kind == FaultDrummerPause {
			d = n.dur(time.Second, 8*time.Second)
			if err := node.Signal(syscall.SIGSTOP); err != nil {
				n.record(FaultEvent{Kind: kind, Target: node.Name, Err: err.Error()})
				return true
			}
			n.add(&active{kind: kind, target: node.Name, until: time.Now().Add(d), drumer: i,
				heal: func() error { return node.Signal(syscall.SIGCONT) }})
		} else {
			d = n.dur(time.Second, 15*time.Second)
			node.Kill()
			n.add(&active{kind: kind, target: node.Name, until: time.Now().Add(d), drumer: i,
				heal: func() error { return startProc(node) }})
		}
		k := kind
		if leader {
			k = faultDrummerKillLeader
		}
		n.record(FaultEvent{Kind: k, Target: node.Name, Detail: "for " + d.String()})
	case FaultMessageLoss:
		n.mu.Lock()
		dropping := n.dropping
		n.mu.Unlock()
		if dropping {
			return false
		}
		rate := cfg.DropRateMin + n.rng.Float64()*(cfg.DropRateMax-cfg.DropRateMin)
		d := n.dur(5*time.Second, 30*time.Second)
		n.mu.Lock()
		n.dropping = true
		n.mu.Unlock()
		n.setDropAll(ctx, rate)
		n.add(&active{kind: kind, target: "all nodehosts", until: time.Now().Add(d), drumer: -1,
			heal: func() error {
				n.mu.Lock()
				n.dropping = false
				n.mu.Unlock()
				n.setDropAll(context.Background(), 0)
				return nil
			}})
		n.record(FaultEvent{Kind: kind, Target: "all nodehosts", Detail: fmt.Sprintf("rate %.2f%% for %s", 100*rate, d)})
	case FaultSlowStateMachine:
		i := n.rng.IntN(len(nhs))
		n.mu.Lock()
		for _, a := range n.active {
			if a.kind == kind && a.target == nhs[i].Name {
				n.mu.Unlock()
				return false
			}
		}
		n.mu.Unlock()
		d := n.dur(5*time.Second, 30*time.Second)
		if err := n.setSlow(ctx, i, true); err != nil {
			n.record(FaultEvent{Kind: kind, Target: nhs[i].Name, Err: err.Error()})
			return true
		}
		n.add(&active{kind: kind, target: nhs[i].Name, until: time.Now().Add(d), drumer: -1,
			heal: func() error {
				if !nhs[i].Running() {
					return nil // killed meanwhile: it restarts without the delays
				}
				return n.setSlow(context.Background(), i, false)
			}})
		n.record(FaultEvent{Kind: kind, Target: nhs[i].Name, Detail: "slow applies and snapshots for " + d.String()})
	case FaultSnapshot:
		shard := uint64(1 + n.rng.IntN(cfg.Shards))
		i := n.rng.IntN(len(nhs))
		overhead := uint64(n.rng.IntN(20))
		cctx, cancel := context.WithTimeout(ctx, 8*time.Second)
		resp, err := h.monkeys[i].RequestSnapshot(cctx, &drummerpb.MonkeySnapshotRequest{ShardId: shard, CompactionOverhead: overhead})
		cancel()
		if err != nil {
			// The host may not run that shard: not a fault injected.
			return false
		}
		n.record(FaultEvent{Kind: kind, Target: nhs[i].Name, Detail: fmt.Sprintf("shard %d snapshot at %d, log compacted to overhead %d", shard, resp.Index, overhead)})
	default:
		return false
	}
	return true
}

func (n *nemesis) impairedHosts() map[int]bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	hosts, _ := n.impaired()
	return hosts
}

// wipeSafe tells whether nodehost i's data can be destroyed without any
// shard losing the data of two replicas: every shard with a member on i
// must have its full replica count, no repair in flight, no member still
// joining (catching up) and no member on an identity wiped earlier and not
// yet repaired around. Kills, pauses and partitions elsewhere keep their
// data and do not matter. It returns the host identities about to be lost.
//
// A nodehost has had one identity per wipe, all on the same raft address,
// and Drummer may list several of them for a while (replaced, or only
// remembered from reports); every one of them counts as this host, so that
// a stale identity cannot make a host with fresh replicas look empty.
func (n *nemesis) wipeSafe(ctx context.Context, i int) ([]string, bool) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	hs, err := n.h.api.ListHosts(cctx, &drummerpb.ListHostsRequest{})
	if err != nil {
		return nil, false
	}
	here := map[string]bool{}
	for _, x := range hs.Hosts {
		if x.RaftAddress == n.h.cl.Nodehosts[i].RaftAddr {
			here[x.Id] = true
		}
	}
	// The identity the process runs as now, which Drummer may not list
	// yet.
	if r, err := n.h.monkeys[i].GetReplicaStates(cctx, &drummerpb.GetReplicaStatesRequest{}); err != nil {
		return nil, false
	} else if id := r.State.GetHostId(); id != "" {
		here[id] = true
	}
	ss, err := n.h.listShards(ctx)
	if err != nil {
		return nil, false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	stillThere := map[string]bool{}
	safe := true
	for _, s := range ss {
		onHost, risky := false, s.Repair != nil || len(s.Members) < int(s.ReplicasDesired)
		if s.Repair != nil && (here[s.Repair.NewHostId] || here[s.Repair.OldHostId]) {
			onHost = true
		}
		for _, m := range s.Members {
			if n.wiped[m.HostId] {
				stillThere[m.HostId] = true
				risky = true
			}
			if m.State == "joining" || m.Role != "voter" {
				risky = true
			}
			onHost = onHost || here[m.HostId]
		}
		if onHost && risky {
			safe = false
		}
	}
	// Forget wiped identities no shard refers to any more.
	for w := range n.wiped {
		if !stillThere[w] {
			delete(n.wiped, w)
		}
	}
	return slices.Sorted(maps.Keys(here)), safe
}

// healExpired heals the faults whose time is up (all with force).
func (n *nemesis) healExpired(_ context.Context, force bool) {
	n.mu.Lock()
	var due, keep []*active
	for _, a := range n.active {
		if force || time.Now().After(a.until) {
			due = append(due, a)
		} else {
			keep = append(keep, a)
		}
	}
	n.active = keep
	n.mu.Unlock()
	for _, a := range due {
		e := FaultEvent{Kind: a.kind, Target: a.target, Healed: true}
		if err := a.heal(); err != nil {
			e.Err = err.Error()
		}
		n.record(e)
	}
}

// healAll ends every fault and makes sure every process runs with no
// fault setting left.
func (n *nemesis) healAll() {
	if n.start.IsZero() {
		n.start = time.Now()
	}
	n.healExpired(context.Background(), true)
	h := n.h
	for _, d := range h.cl.Drummers {
		_ = d.Signal(syscall.SIGCONT)
		if !d.Running() {
			if err := startProc(d); err != nil {
				n.record(FaultEvent{Kind: "restart", Target: d.Name, Err: err.Error()})
			}
		}
	}
	for i, nh := range h.cl.Nodehosts {
		_ = nh.Signal(syscall.SIGCONT)
		if !nh.Running() {
			if err := n.restartNodehost(i); err != nil {
				n.record(FaultEvent{Kind: "restart", Target: nh.Name, Err: err.Error()})
			}
		}
	}
	// Clear fault settings everywhere (restarted hosts start clean; the
	// others may still have them if a heal call failed).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i := range h.cl.Nodehosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := retry(ctx, func(ctx context.Context) error {
				m := h.monkeys[i]
				if _, err := m.SetPartition(ctx, &drummerpb.SetPartitionRequest{}); err != nil {
					return err
				}
				if _, err := m.SetDropRate(ctx, &drummerpb.SetDropRateRequest{}); err != nil {
					return err
				}
				_, err := m.SetSlow(ctx, &drummerpb.SetSlowRequest{})
				return err
			})
			if err != nil {
				n.record(FaultEvent{Kind: "heal", Target: h.cl.Nodehosts[i].Name, Err: err.Error()})
			}
		}()
	}
	wg.Wait()
}

func startProc(p *testcluster.Node) error {
	if p.Running() {
		return nil
	}
	return p.Start()
}

// restartNodehost starts a stopped nodehost. Fault settings live in the
// nodehost's memory, so it comes back without message loss or slowness.
func (n *nemesis) restartNodehost(i int) error {
	return startProc(n.h.cl.Nodehosts[i])
}

func (n *nemesis) setPartition(ctx context.Context, i int, on bool) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := n.h.monkeys[i].SetPartition(cctx, &drummerpb.SetPartitionRequest{Partitioned: on})
	return err
}

func (n *nemesis) setSlow(ctx context.Context, i int, on bool) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := n.h.monkeys[i].SetSlow(cctx, &drummerpb.SetSlowRequest{SlowApply: on, SlowSnapshot: on})
	return err
}

// setDropAll sets the drop rate on every nodehost that answers.
func (n *nemesis) setDropAll(ctx context.Context, rate float64) {
	var wg sync.WaitGroup
	for i := range n.h.monkeys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			_, _ = n.h.monkeys[i].SetDropRate(cctx, &drummerpb.SetDropRateRequest{Rate: rate})
		}()
	}
	wg.Wait()
}

// schedulerLeader returns the index of the drummer holding the scheduler
// epoch (-1 if none answers as such).
func (h *harness) schedulerLeader(ctx context.Context) int {
	for i, d := range h.drummers {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := d.GetServerStatus(cctx, &drummerpb.GetServerStatusRequest{})
		cancel()
		if err == nil && st.Scheduler {
			return i
		}
	}
	return -1
}
