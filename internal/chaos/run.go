package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/testcluster"
)

// BuildFlags are the go build flags of the binaries a chaos run needs.
var BuildFlags = []string{"-tags=dragonboat_monkeytest"}

// Build compiles the drummer, nodehost and drummercmd binaries with the
// monkey-test hooks into dir.
func Build(ctx context.Context, dir string) (testcluster.Binaries, error) {
	return testcluster.Build(ctx, dir, BuildFlags...)
}

// harness is one chaos run: the processes, connections to them, the
// workload and the nemesis.
type harness struct {
	cfg Config
	rep *Report
	cl  *testcluster.Cluster

	conn     *client.Conn
	api      drummerpb.DrummerClient // follows the scheduler leader
	drummers []drummerpb.DrummerClient
	monkeys  []drummerpb.MonkeyClient
	ccs      []*grpc.ClientConn

	repairs repairTracker
}

func (h *harness) logf(format string, args ...any) {
	h.cfg.Logf("chaos: "+format, args...)
}

// Run runs one chaos test: it starts a deployment (3 drummer servers and
// cfg.Nodehosts nodehosts on 127.0.0.1), creates the shards, runs the
// workload while the nemesis injects faults for cfg.Duration, then heals
// everything and checks that the deployment converges and that the
// history is linearizable. Every process is stopped before Run returns.
//
// The report lists what failed (Report.Failures); the error is for runs
// that could not be carried out (e.g. the build failed).
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	if cfg.Dir == "" {
		if cfg.Dir, err = os.MkdirTemp("", fmt.Sprintf("drummer-chaos-%d-", cfg.Seed)); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	rep = newReport(&cfg)
	h := &harness{cfg: cfg, rep: rep}
	start := time.Now()
	defer func() {
		rep.Total = time.Since(start)
		if errors.Is(ctx.Err(), context.Canceled) && !rep.Interrupted {
			rep.Interrupted = true
			rep.fail("interrupted")
		}
		if werr := rep.writeFiles(); werr != nil {
			h.logf("writing the report: %v", werr)
		}
		// A passing run leaves nothing behind, nor does an interrupted
		// one (its logs prove nothing); a failing run keeps everything.
		if (!rep.Failed() || rep.Interrupted) && !cfg.Keep {
			os.RemoveAll(cfg.Dir)
			rep.DirRemoved = true
		}
	}()
	if cfg.Bins.Nodehost == "" {
		bdir, err := os.MkdirTemp("", "drummer-chaos-bin-")
		if err != nil {
			return rep, err
		}
		defer os.RemoveAll(bdir)
		h.logf("building binaries (%s)", strings.Join(BuildFlags, " "))
		t := time.Now()
		if cfg.Bins, err = Build(ctx, bdir); err != nil {
			rep.fail("build: %v", err)
			return rep, err
		}
		h.cfg.Bins = cfg.Bins
		rep.Phases = append(rep.Phases, Phase{"build", time.Since(t)})
	}
	defer h.close()
	h.run(ctx)
	return rep, nil
}

func (h *harness) phase(name string, start time.Time) {
	d := time.Since(start)
	h.rep.Phases = append(h.rep.Phases, Phase{name, d})
	h.logf("%s took %s", name, d.Round(time.Millisecond))
}

func (h *harness) run(ctx context.Context) {
	cfg := &h.cfg
	rep := h.rep
	t := time.Now()
	if err := h.setup(ctx); err != nil {
		rep.fail("setup: %v", err)
		return
	}
	h.phase("setup", t)
	logf := h.logf
	logf("seed %d: %d fault kinds, %s of faults over %d shards on %d nodehosts; replay: %s",
		cfg.Seed, len(cfg.Faults), cfg.Duration, cfg.Shards, cfg.Nodehosts, cfg.ReplayCommand())

	c, err := client.New(ctx, client.Config{Endpoints: []string{h.cl.Endpoints}, AttemptTimeout: 2 * time.Second, Security: h.cl.Security("app")})
	if err != nil {
		rep.fail("client: %v", err)
		return
	}
	defer c.Close()
	shards := make([]uint64, cfg.Shards)
	for i := range shards {
		shards[i] = uint64(i + 1)
	}
	wl := &workload{cfg: cfg, c: c, h: newHistory(), shards: shards}
	nem := newNemesis(h, cfg.Seed)

	// The fault phase: workload, nemesis and a repair tracker together.
	t = time.Now()
	fctx, stopFaults := context.WithTimeout(ctx, cfg.Duration)
	defer stopFaults()
	wctx, stopWork := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); wl.run(wctx, cfg.Seed^0x5bd1e995) }()
	tctx, stopTracker := context.WithCancel(context.Background())
	var twg sync.WaitGroup
	twg.Add(1)
	go func() { defer twg.Done(); h.repairs.run(tctx, h.api) }()
	nem.run(fctx)
	h.phase("faults", t)
	if ctx.Err() != nil {
		// Interrupted: no healing, no checks; close() stops everything.
		stopWork()
		stopTracker()
		wg.Wait()
		twg.Wait()
		rep.Faults, rep.FaultLog = nem.counts, nem.log
		rep.setWorkload(&wl.stats)
		rep.Interrupted = true
		rep.fail("interrupted: %v", ctx.Err())
		return
	}

	// Heal everything, then let the workload run briefly on the healed
	// deployment, stop it and bound what it can of its unknown outcomes.
	t = time.Now()
	healStart := time.Now()
	nem.healAll()
	h.phase("heal", t)
	sleepCtx(ctx, 2*time.Second)
	stopWork()
	t = time.Now()
	wg.Wait()
	h.phase("drain workload", t)
	rep.Faults = nem.counts
	rep.FaultLog = nem.log
	rep.setWorkload(&wl.stats)

	// Checks: convergence of the control plane and the replicas, then
	// the history.
	t = time.Now()
	lin := make(chan LinearizabilityResult, 1)
	ops := wl.h.snapshot()
	go func() { lin <- CheckLinearizable(ops, cfg.CheckTimeout, cfg.Dir) }()
	writeHistory(filepath.Join(cfg.Dir, "history.jsonl"), ops)
	h.converge(ctx, healStart)
	stopTracker()
	twg.Wait()
	rep.Repairs = h.repairs.summary()
	h.repairs.write(filepath.Join(cfg.Dir, "repairs.json"))
	h.phase("converge", t)
	t = time.Now()
	res := <-lin
	rep.Linearizability = res
	if !res.OK() {
		rep.fail("linearizability: %s", res)
	}
	logf("history: %s", res)
	h.phase("linearizability wait", t)
}

// setup starts the processes and launches the shards.
func (h *harness) setup(ctx context.Context) error {
	cfg := &h.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.SetupTimeout)
	defer cancel()
	args := []string{"--test-monkey"}
	if cfg.UnsafeAck {
		args = append(args, "--test-unsafe-ack")
	}
	cl, err := testcluster.New(testcluster.Options{
		Bins: cfg.Bins, Dir: cfg.Dir, Nodehosts: cfg.Nodehosts, RTT: cfg.RTT, LogLevel: cfg.LogLevel,
		NodehostArgs: args,
	})
	if err != nil {
		return err
	}
	for i, n := range cl.Nodehosts {
		n.Args = append(n.Args, "--test-seed", fmt.Sprint(cfg.Seed+uint64(i)+1))
		if cfg.Diverge && i == 0 {
			n.Args = append(n.Args, "--test-diverge")
		}
	}
	h.cl = cl
	h.conn, err = client.NewConn([]string{cl.Endpoints}, client.Options{Security: cl.Security("admin")})
	if err != nil {
		return err
	}
	h.api = h.conn.Drummer()
	creds, err := cl.DialOption()
	if err != nil {
		return err
	}
	for _, d := range cl.Drummers {
		cc, err := grpc.NewClient(d.GRPCAddr, creds)
		if err != nil {
			return err
		}
		h.ccs = append(h.ccs, cc)
		h.drummers = append(h.drummers, drummerpb.NewDrummerClient(cc))
	}
	for _, n := range cl.Nodehosts {
		cc, err := grpc.NewClient(n.GRPCAddr, creds)
		if err != nil {
			return err
		}
		h.ccs = append(h.ccs, cc)
		h.monkeys = append(h.monkeys, drummerpb.NewMonkeyClient(cc))
	}
	if err := cl.Start(); err != nil {
		return err
	}
	h.logf("started 3 drummer servers and %d nodehosts in %s", cfg.Nodehosts, cfg.Dir)
	if err := h.waitHostsUp(ctx, cfg.Nodehosts); err != nil {
		return err
	}
	if err := retry(ctx, func(ctx context.Context) error {
		_, err := h.api.SetConfig(ctx, &drummerpb.SetConfigRequest{Values: map[string]string{
			"suspect_timeout": cfg.SuspectTimeout.String(), "dead_timeout": cfg.DeadTimeout.String(),
		}})
		return err
	}); err != nil {
		return fmt.Errorf("set config: %w", err)
	}
	if err := retry(ctx, func(ctx context.Context) error {
		_, err := h.api.CreateShards(ctx, &drummerpb.CreateShardsRequest{FirstShardId: 1, Count: uint64(cfg.Shards), Replicas: 3, App: "kv"})
		if err != nil && strings.Contains(err.Error(), "already exists") {
			return nil
		}
		return err
	}); err != nil {
		return fmt.Errorf("create shards: %w", err)
	}
	if err := retry(ctx, func(ctx context.Context) error {
		_, err := h.api.Launch(ctx, &drummerpb.LaunchRequest{})
		return err
	}); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	var last string
	for {
		ss, err := h.listShards(ctx)
		if err == nil {
			healthy := 0
			for _, s := range ss {
				if s.Health == "healthy" {
					healthy++
				}
			}
			if healthy == cfg.Shards {
				return nil
			}
			last = fmt.Sprintf("%d of %d shards healthy", healthy, cfg.Shards)
		} else {
			last = err.Error()
		}
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return fmt.Errorf("shards not healthy after launch: %s", last)
		}
	}
}

func (h *harness) waitHostsUp(ctx context.Context, n int) error {
	var last string
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := h.api.ListHosts(cctx, &drummerpb.ListHostsRequest{})
		cancel()
		if err == nil {
			up := 0
			for _, hs := range resp.Hosts {
				if hs.State == "up" {
					up++
				}
			}
			if up >= n {
				return nil
			}
			last = fmt.Sprintf("%d of %d hosts up", up, n)
		} else {
			last = err.Error()
		}
		if !sleepCtx(ctx, 300*time.Millisecond) {
			return fmt.Errorf("hosts not up: %s", last)
		}
	}
}

func (h *harness) listShards(ctx context.Context) ([]*drummerpb.ShardStatus, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := h.api.ListShards(cctx, &drummerpb.ListShardsRequest{})
	if err != nil {
		return nil, err
	}
	return resp.Shards, nil
}

// close stops every process (keeping the logs) and closes connections.
func (h *harness) close() {
	if h.cl != nil {
		// Resume paused processes so that they can stop.
		for _, n := range append(slices.Clone(h.cl.Drummers), h.cl.Nodehosts...) {
			_ = n.Signal(syscall.SIGCONT)
		}
		h.cl.Close()
	}
	if h.conn != nil {
		h.conn.Close()
	}
	for _, cc := range h.ccs {
		cc.Close()
	}
}

// retry calls f until it succeeds or ctx ends.
func retry(ctx context.Context, f func(context.Context) error) error {
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := f(cctx)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		if !sleepCtx(ctx, 300*time.Millisecond) {
			return errors.Join(ctx.Err(), last)
		}
	}
}

// sleepCtx sleeps d or until ctx ends; it reports whether ctx is alive.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// repairTracker polls ListRepairs and keeps every repair it saw.
type repairTracker struct {
	mu   sync.Mutex
	seen map[uint64]*drummerpb.Repair
}

func (r *repairTracker) poll(ctx context.Context, api drummerpb.DrummerClient) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := api.ListRepairs(cctx, &drummerpb.ListRepairsRequest{})
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[uint64]*drummerpb.Repair{}
	}
	for _, x := range append(resp.InFlight, resp.Recent...) {
		if old := r.seen[x.Id]; old == nil || old.Outcome == "" {
			r.seen[x.Id] = x
		}
	}
}

func (r *repairTracker) run(ctx context.Context, api drummerpb.DrummerClient) {
	for {
		r.poll(ctx, api)
		if !sleepCtx(ctx, 2*time.Second) {
			r.poll(context.Background(), api)
			return
		}
	}
}

// RepairStats counts the repairs seen during a run.
type RepairStats struct {
	Total     int            `json:"total"`
	ByKind    map[string]int `json:"by_kind"`
	ByOutcome map[string]int `json:"by_outcome"`
}

// write saves every repair seen, in ID order, as JSON.
func (r *repairTracker) write(path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := protojson.MarshalOptions{}
	var out []json.RawMessage
	for _, id := range slices.Sorted(maps.Keys(r.seen)) {
		if b, err := m.Marshal(r.seen[id]); err == nil {
			out = append(out, b)
		}
	}
	if b, err := json.MarshalIndent(out, "", "  "); err == nil {
		_ = os.WriteFile(path, b, 0o644)
	}
}

func (r *repairTracker) summary() RepairStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := RepairStats{ByKind: map[string]int{}, ByOutcome: map[string]int{}}
	for _, x := range r.seen {
		s.Total++
		s.ByKind[x.Kind]++
		o := x.Outcome
		if o == "" {
			o = "in_flight"
		}
		s.ByOutcome[o]++
	}
	return s
}
