// Package sim is a deterministic simulator of a Drummer deployment: a fleet
// of simulated nodehosts running simulated Raft shards, driven by the real
// planner (internal/planner) and the real Drummer DB state machine
// (internal/db), under a fake clock and seeded faults.
//
// Everything is single-threaded and draws randomness from one PCG stream
// seeded by Config.Seed, so a run is a pure function of its Config: a failing
// seed replays exactly.
//
// The world has three layers:
//
//   - truth: for every shard the real Raft state (voters, non-voting
//     members, removed IDs, ConfigChangeID as a growing log index, leader,
//     term), and for every host its disk (bootstrap records, removed data)
//     and the replicas it runs. Dragonboat's rules are enforced here: config
//     changes need a leader and the current ConfigChangeID, removed IDs are
//     never re-added, a target address is used by at most one member, a host
//     runs at most one replica of a shard, a RemoveData'd replica never
//     starts again, a replica that applied its own removal stops again when
//     restarted from its log (one removed while down comes back stranded),
//     a joined replica with no log yet votes but cannot lead, and so on.
//   - agents: each alive host reports to Drummer once per report interval
//     (unless partitioned from Drummer) and executes the orders it receives
//     after a small random delay, like agent/.
//   - Drummer: observations built from the reports (mirroring
//     server/observe.go), a scheduler that calls planner.Plan with dirty sets
//     every PlanEvery and a full sweep every SweepEvery (mirroring
//     server/scheduler.go), and the decisions applied to a db.State under the
//     scheduler epoch.
//
// Invariants are checked after every step (see invariants.go, and
// balance.go for balancing); the run ends when every repairable shard is
// healthy after the faults stopped and no balancing work is left, or fails
// when that takes longer than Config.SettleBound (extended for repair
// backoff, queued repairs and balancing work, up to MaxBackoffSlack).
//
// Balancing is on in most seeds, with random settings (randomBalance) that
// the config-change fault redraws at run time, and hosts join (new, empty)
// and leave (drained, then stopped and removed) as operator events
// (Faults.HostChurn). Balancing invariants (balance.go): a balancing move
// or a transfer for balance starts only with its kind on, for a healthy
// shard without a repair, while no host holding replicas is suspect or
// dead as the scheduler judges it; no replica added within the cool-down
// moves, no move goes back to the host the shard's last balancing move
// left within the cool-down, no shard's leadership moves twice for
// balance within the cool-down; moves stay within max_balance_moves,
// max_concurrent_repairs and max_repairs_per_host; and once settled no
// improving move or transfer that the planner's rules allow is left (in
// fleets where every host can hold every shard, every host is within the
// tolerance of its fair share).
//
// Running it:
//
//	go test ./internal/sim                                   # 2,000 seeds (~2 min of CPU; 2-3.5 min on 2 loaded cores)
//	go test ./internal/sim -run TestSimSeeds -sim.seed=N -v  # replay seed N, with its trace
//	go test ./internal/sim -run TestSimSeeds -sim.seed=N -sim.trace -v  # stream the whole trace
//	go test ./internal/sim -run TestSimSeeds -sim.seeds=10000 -sim.first=2001 -timeout=2h -v  # soak (~15 min)
//	go test ./internal/sim -run TestSimSeeds -sim.duration=10m  # longer fault phases
//	go test ./internal/sim -run TestSimSeeds -sim.faults=crash,partition  # some faults only
//
// Other programs (a soak runner under cmd/) call Run with a Config.
package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/planner"
)

// Faults switches fault kinds on and off.
type Faults struct {
	// Host crashes with the disk kept; the host restarts later.
	Crash bool
	// Hosts that die for good.
	PermanentDeath bool
	// Disk wipes: the host comes back with a new identity on its address.
	DiskWipe bool
	// Hosts partitioned from Drummer (Raft traffic still flows).
	Partition bool
	// Orders that take long to execute.
	SlowOrders bool
	// Orders that fail transiently.
	FailingOrders bool
	// Drummer leader failover (new epoch, cold or warm observations), and
	// decision proposals lost (timed out) on the way to the DB.
	Failover bool
	// Operator actions: cordon, drain, maintenance windows.
	Operator bool
	// Shards created and deleted while running.
	ShardChurn bool
	// Runtime configuration changes (timeouts, limits, shard overrides).
	ConfigChange bool
	// A hostile host (in half of the seeds) that forges membership claims
	// among its reports.
	Hostile bool
	// Operator host changes: new empty hosts join, and hosts leave (drained,
	// then stopped and removed).
	HostChurn bool
}

// AllFaults turns every fault kind on.
func AllFaults() Faults {
	return Faults{true, true, true, true, true, true, true, true, true, true, true, true}
}

// Config describes one simulation run. Zero fields get defaults from the
// seed (see Normalize).
type Config struct {
	Seed uint64
	// Hosts and Shards at the start (0: random, 4-7 hosts, 3-20 shards).
	Hosts  int
	Shards int
	// FaultTime is how long faults are injected (0: random 60-120 s).
	FaultTime time.Duration
	// SettleBound: once faults stop, every repairable shard must be healthy,
	// with no repair or cleanup left, within this (0: 3 minutes). Backoff
	// after failed repairs and throttling by max_concurrent_repairs extend
	// it, up to MaxBackoffSlack.
	SettleBound time.Duration
	Faults      Faults
	// Tick is the simulation step (0: 100 ms).
	Tick time.Duration
	// PlanEvery is the dirty-set planning period, SweepEvery the full sweep
	// period (0: 200 ms and 3 s, like the server).
	PlanEvery  time.Duration
	SweepEvery time.Duration
	// TraceLen is how many trace lines are kept for a failure report (0:
	// 400; negative: none).
	TraceLen int
	// TraceOut, when set, receives every trace line as it happens.
	TraceOut func(string)
}

// MaxBackoffSlack bounds how far repair backoff and repair throttling
// (max_concurrent_repairs) may extend SettleBound.
const MaxBackoffSlack = 6 * time.Minute

// Normalize fills in the zero fields from the seed.
func (c Config) Normalize() Config {
	r := rand.New(rand.NewPCG(c.Seed, 0x5eed))
	if c.Hosts == 0 {
		c.Hosts = 4 + r.IntN(4)
	}
	if c.Shards == 0 {
		c.Shards = 3 + r.IntN(18)
	}
	if c.FaultTime == 0 {
		c.FaultTime = time.Duration(60+r.IntN(61)) * time.Second
	}
	if c.SettleBound == 0 {
		c.SettleBound = 3 * time.Minute
	}
	if c.Tick == 0 {
		c.Tick = 100 * time.Millisecond
	}
	if c.PlanEvery == 0 {
		c.PlanEvery = 200 * time.Millisecond
	}
	if c.SweepEvery == 0 {
		c.SweepEvery = 3 * time.Second
	}
	if c.TraceLen == 0 {
		c.TraceLen = 400
	}
	return c
}

// Result is the outcome of a run.
type Result struct {
	Seed       uint64
	Violations []string
	// Trace holds the last trace lines (oldest first) when the run failed.
	Trace []string
	Stats Stats
	// SimTime is the simulated duration; Converged tells whether the run
	// reached the settled state, and SettleTime how long after the faults
	// stopped.
	SimTime    time.Duration
	Converged  bool
	SettleTime time.Duration
	// DBHash is the final DB state hash (for determinism checks).
	DBHash uint64
}

// Failed reports whether the run found a violation.
func (r *Result) Failed() bool { return len(r.Violations) > 0 }

// Stats counts what a run exercised.
type Stats struct {
	Steps, PlanRounds, Sweeps, Decisions                                                     int
	Crashes, PermanentDeaths, Wipes, Partitions, Failovers, ColdFailovers                    int
	Cordons, Drains, Maintenances, ShardsCreated, ShardsDeleted, ConfigChanges, HostsRemoved int
	OrdersExecuted, OrdersFailed, OrdersRejected, OrdersStale                                int
	CCApplied, CCRejected, Transfers, Starts, Stops, Removes                                 int
	RepairsStarted, RepairsDone, RepairsFailed, RollBacks                                    int
	Cleanups, ZombiesFound                                                                   int
	DecisionCodes                                                                            map[string]int
	ExcusedQuorumChanges                                                                     int
	LostProposals                                                                            int
	StaleEpochRejected                                                                       int
	Unrepairable                                                                             int
	ForgedReports, ForgedClaims                                                              int
	// Balancing (balance.go): hosts that joined and left, balancing moves
	// started, done and failed (rolled back), leader transfers ordered for
	// balance and off hosts that may not lead, and what the convergence
	// judgement checked in the runs that settled.
	HostsJoined, HostsLeft                                       int
	BalanceMoves, BalanceDone, BalanceFailed                     int
	BalanceTransfers, OffTransfers                               int
	BalanceChecked, BalanceStrict, BalanceExcused, LeaderChecked int
	// Balancing moves back to a host an earlier (not the last) balancing
	// move of the shard left within the cool-down.
	BackMovesEarlier int
}

// Add accumulates o into s.
func (s *Stats) Add(o Stats) {
	s.Steps += o.Steps
	s.PlanRounds += o.PlanRounds
	s.Sweeps += o.Sweeps
	s.Decisions += o.Decisions
	s.Crashes += o.Crashes
	s.PermanentDeaths += o.PermanentDeaths
	s.Wipes += o.Wipes
	s.Partitions += o.Partitions
	s.Failovers += o.Failovers
	s.ColdFailovers += o.ColdFailovers
	s.Cordons += o.Cordons
	s.Drains += o.Drains
	s.Maintenances += o.Maintenances
	s.ShardsCreated += o.ShardsCreated
	s.ShardsDeleted += o.ShardsDeleted
	s.ConfigChanges += o.ConfigChanges
	s.HostsRemoved += o.HostsRemoved
	s.OrdersExecuted += o.OrdersExecuted
	s.OrdersFailed += o.OrdersFailed
	s.OrdersRejected += o.OrdersRejected
	s.OrdersStale += o.OrdersStale
	s.CCApplied += o.CCApplied
	s.CCRejected += o.CCRejected
	s.Transfers += o.Transfers
	s.Starts += o.Starts
	s.Stops += o.Stops
	s.Removes += o.Removes
	s.RepairsStarted += o.RepairsStarted
	s.RepairsDone += o.RepairsDone
	s.RepairsFailed += o.RepairsFailed
	s.RollBacks += o.RollBacks
	s.Cleanups += o.Cleanups
	s.ZombiesFound += o.ZombiesFound
	s.ExcusedQuorumChanges += o.ExcusedQuorumChanges
	s.LostProposals += o.LostProposals
	s.StaleEpochRejected += o.StaleEpochRejected
	s.Unrepairable += o.Unrepairable
	s.ForgedReports += o.ForgedReports
	s.ForgedClaims += o.ForgedClaims
	s.HostsJoined += o.HostsJoined
	s.HostsLeft += o.HostsLeft
	s.BalanceMoves += o.BalanceMoves
	s.BalanceDone += o.BalanceDone
	s.BalanceFailed += o.BalanceFailed
	s.BalanceTransfers += o.BalanceTransfers
	s.OffTransfers += o.OffTransfers
	s.BalanceChecked += o.BalanceChecked
	s.BalanceStrict += o.BalanceStrict
	s.BalanceExcused += o.BalanceExcused
	s.LeaderChecked += o.LeaderChecked
	s.BackMovesEarlier += o.BackMovesEarlier
	for k, v := range o.DecisionCodes {
		if s.DecisionCodes == nil {
			s.DecisionCodes = map[string]int{}
		}
		s.DecisionCodes[k] += v
	}
}

func (s Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "steps=%d plan_rounds=%d sweeps=%d decisions=%d\n", s.Steps, s.PlanRounds, s.Sweeps, s.Decisions)
	fmt.Fprintf(&b, "faults: crashes=%d permanent_deaths=%d wipes=%d partitions=%d failovers=%d (cold %d)\n",
		s.Crashes, s.PermanentDeaths, s.Wipes, s.Partitions, s.Failovers, s.ColdFailovers)
	fmt.Fprintf(&b, "operator: cordons=%d drains=%d maintenances=%d hosts_removed=%d shards_created=%d shards_deleted=%d config_changes=%d\n",
		s.Cordons, s.Drains, s.Maintenances, s.HostsRemoved, s.ShardsCreated, s.ShardsDeleted, s.ConfigChanges)
	fmt.Fprintf(&b, "orders: executed=%d failed=%d rejected=%d stale_epoch=%d starts=%d stops=%d remove_data=%d config_changes=%d (rejected %d) transfers=%d\n",
		s.OrdersExecuted, s.OrdersFailed, s.OrdersRejected, s.OrdersStale, s.Starts, s.Stops, s.Removes, s.CCApplied, s.CCRejected, s.Transfers)
	fmt.Fprintf(&b, "repairs: started=%d done=%d failed=%d rollbacks=%d cleanups_done=%d zombies_found=%d\n",
		s.RepairsStarted, s.RepairsDone, s.RepairsFailed, s.RollBacks, s.Cleanups, s.ZombiesFound)
	fmt.Fprintf(&b, "excused_quorum_changes=%d stale_epoch_batches_rejected=%d lost_proposals=%d unrepairable_shards=%d\n",
		s.ExcusedQuorumChanges, s.StaleEpochRejected, s.LostProposals, s.Unrepairable)
	fmt.Fprintf(&b, "hostile: forged_reports=%d forged_claims=%d\n", s.ForgedReports, s.ForgedClaims)
	fmt.Fprintf(&b, "balance: hosts_joined=%d hosts_left=%d moves=%d done=%d failed=%d transfers=%d off_host_transfers=%d\n",
		s.HostsJoined, s.HostsLeft, s.BalanceMoves, s.BalanceDone, s.BalanceFailed, s.BalanceTransfers, s.OffTransfers)
	fmt.Fprintf(&b, "balance convergence: replicas_checked=%d strict=%d excused=%d leaders_checked=%d; back_moves_to_earlier_source=%d\n",
		s.BalanceChecked, s.BalanceStrict, s.BalanceExcused, s.LeaderChecked, s.BackMovesEarlier)
	if len(s.DecisionCodes) > 0 {
		keys := make([]string, 0, len(s.DecisionCodes))
		for k := range s.DecisionCodes {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteString("decision results:")
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%d", k, s.DecisionCodes[k])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// epoch0 is the simulated wall clock at the start of every run.
var epoch0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// World is one simulated deployment.
type World struct {
	cfg Config
	rng *rand.Rand
	now time.Time

	faultEnd  time.Time
	settled   bool // faults stopped
	deadline  time.Time
	converged bool
	convAt    time.Time

	hosts     []*Host // by slot
	byAddr    map[string]*Host
	groups    map[uint64][]*group // truth, by shard ID, oldest incarnation first
	groupList []*group            // every group, in creation order

	rates rates
	// The hostile host, if the seed has one, and its random stream.
	hostile *Host
	hrng    *rand.Rand
	// diskEvery is the agents' disk inventory period (upper bound).
	diskEvery time.Duration

	// Drummer.
	st       *db.State
	epoch    uint64
	holder   uint64
	drummer  *drummer
	downTill time.Time // no Drummer leader until then
	warm     bool      // the pending successor keeps ingesting reports
	zombie   *drummer  // deposed scheduler still answering, until zomTill
	zomTill  time.Time
	nextPlan time.Time
	// Decisions of the previous epoch, replayed after a failover.
	lastBatch []*dbpb.Decision
	lastEpoch uint64

	// Bookkeeping for invariants.
	dbMembers   map[uint64]map[uint64]bool // per shard ID: DB members at the last check
	dbGone      map[uint64]map[uint64]bool // per shard ID: IDs dropped from the DB members
	nextShardID uint64
	lastOut     *planner.Output // last full sweep
	lastOutAt   time.Time
	nextSweep   time.Time
	gcSince     map[string]time.Time // hosts eligible for GC, since when
	hostDeadAt  map[string]time.Time // identity → when it died for good (truth)
	bal         balTrack             // balancing bookkeeping (balance.go)

	violations []string
	trace      []string
	traceN     int
	stats      Stats
}

// Run simulates one deployment and returns the outcome.
func Run(cfg Config) *Result {
	cfg = cfg.Normalize()
	w := newWorld(cfg)
	w.setup()
	for !w.finished() {
		w.step()
	}
	w.final()
	res := &Result{
		Seed:       cfg.Seed,
		Violations: w.violations,
		Stats:      w.stats,
		SimTime:    w.now.Sub(epoch0),
		Converged:  w.converged,
		DBHash:     w.st.Hash(),
	}
	if w.converged {
		res.SettleTime = w.convAt.Sub(w.faultEnd)
	}
	if res.Failed() {
		res.Trace = w.traceLines()
	}
	return res
}

func newWorld(cfg Config) *World {
	w := &World{
		cfg:         cfg,
		rng:         rand.New(rand.NewPCG(cfg.Seed, 0xd1ce)),
		now:         epoch0,
		byAddr:      map[string]*Host{},
		groups:      map[uint64][]*group{},
		dbMembers:   map[uint64]map[uint64]bool{},
		dbGone:      map[uint64]map[uint64]bool{},
		hostDeadAt:  map[string]time.Time{},
		bal:         newBalTrack(),
		nextShardID: 1,
	}
	w.stats.DecisionCodes = map[string]int{}
	if cfg.TraceLen > 0 {
		w.trace = make([]string, cfg.TraceLen)
	}
	w.faultEnd = epoch0.Add(cfg.FaultTime)
	w.deadline = w.faultEnd.Add(cfg.SettleBound)
	w.rates = newRates(w.rng, cfg.Faults)
	// Disk inventories every 5-15 s, or like the agent's default (60 s).
	w.diskEvery = 15 * time.Second
	if w.chance(0.5) {
		w.diskEvery = 60 * time.Second
	}
	return w
}

func (w *World) elapsed() time.Duration { return w.now.Sub(epoch0) }

func (w *World) tracef(format string, args ...any) {
	if w.trace == nil && w.cfg.TraceOut == nil {
		return
	}
	line := fmt.Sprintf("%8.1fs ", w.elapsed().Seconds()) + fmt.Sprintf(format, args...)
	if w.cfg.TraceOut != nil {
		w.cfg.TraceOut(line)
	}
	if w.trace != nil {
		w.trace[w.traceN%len(w.trace)] = line
		w.traceN++
	}
}

func (w *World) traceLines() []string {
	if w.trace == nil {
		return nil
	}
	n := min(w.traceN, len(w.trace))
	out := make([]string, 0, n)
	for i := w.traceN - n; i < w.traceN; i++ {
		out = append(out, w.trace[i%len(w.trace)])
	}
	return out
}

// violate records an invariant violation.
func (w *World) violate(format string, args ...any) {
	msg := fmt.Sprintf("t=%.1fs: ", w.elapsed().Seconds()) + fmt.Sprintf(format, args...)
	w.tracef("VIOLATION %s", msg)
	if len(w.violations) < 20 {
		w.violations = append(w.violations, msg)
	}
}

// dur returns a random duration in [lo, hi].
func (w *World) dur(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(w.rng.Int64N(int64(hi-lo)+1))
}

func (w *World) chance(p float64) bool { return p > 0 && w.rng.Float64() < p }

// ---------------------------------------------------------------------------
// Setup and main loop.

func (w *World) setup() {
	w.st = db.New()
	w.holder = 1
	r := w.st.ApplyCommand(&dbpb.Command{Version: db.CommandVersion, NowUnixMs: w.now.UnixMilli(),
		Op: &dbpb.Command_AcquireEpoch{AcquireEpoch: &dbpb.AcquireEpoch{Holder: w.holder, ExpectEpoch: 0, DeploymentId: 7}}})
	if r.Code != dbpb.Code_CODE_OK {
		panic("sim: cannot acquire the first epoch")
	}
	w.epoch = w.st.Epoch
	w.drummer = w.newDrummer()
	w.drummer.resetScheduler(w.epoch)

	// Runtime configuration: short timeouts so runs stay short.
	cfg := w.randomDBConfig()
	w.operator(&dbpb.Command_SetConfig{SetConfig: &dbpb.SetConfig{Config: cfg}}, true)

	// Hosts over 1-3 regions of at least two hosts each; a few seeds have a
	// host that cannot run kv.
	regions := 1 + w.rng.IntN(3)
	regions = max(1, min(regions, w.cfg.Hosts/2))
	for i := range w.cfg.Hosts {
		h := newHost(w, i, fmt.Sprintf("r%d", i%regions+1))
		w.hosts = append(w.hosts, h)
		w.byAddr[h.addr] = h
	}
	if w.cfg.Hosts >= 6 && w.chance(0.15) {
		w.hosts[len(w.hosts)-1].apps = []string{"other"}
	}
	// Deployment regions (exact, loose, or none).
	switch {
	case regions == 3 && w.chance(0.4):
		w.operator(&dbpb.Command_SetRegions{SetRegions: &dbpb.SetRegions{Regions: map[string]uint32{"r1": 1, "r2": 1, "r3": 1}}}, true)
	case regions >= 2 && w.chance(0.2):
		w.operator(&dbpb.Command_SetRegions{SetRegions: &dbpb.SetRegions{Regions: map[string]uint32{"r1": 2, "r2": 1}}}, true)
	}
	w.createShards(w.cfg.Shards, regions)
	w.operator(&dbpb.Command_Launch{Launch: &dbpb.Launch{}}, true)
	w.chooseHostile()
}

func (w *World) randomDBConfig() *dbpb.Config {
	suspect := uint64(2000 + 1000*w.rng.IntN(4))
	dead := suspect + uint64(5000+1000*w.rng.IntN(21))
	c := &dbpb.Config{
		ReportIntervalMs:     1000,
		SuspectTimeoutMs:     suspect,
		DeadTimeoutMs:        dead,
		MaxConcurrentRepairs: uint32([]int{1, 2, 4, 64}[w.rng.IntN(4)]),
		MaxRepairsPerHost:    uint32(1 + w.rng.IntN(8)),
		HostGcAfterMs:        dead + uint64(10000+1000*w.rng.IntN(40)),
	}
	w.randomBalance(c)
	return c
}

// createShards defines n new shards (3 replicas mostly, some 1 or 5).
func (w *World) createShards(n, regions int) {
	w.createShardsWithIDs(n, regions, nil)
}

// createShardsWithIDs defines n shards, taking IDs from reuse first (IDs of
// deleted shards), then new ones.
func (w *World) createShardsWithIDs(n, regions int, reuse []uint64) {
	var specs []*dbpb.ShardSpec
	for i := range n {
		id := w.nextShardID
		if i < len(reuse) {
			id = reuse[i]
		} else {
			w.nextShardID++
		}
		sp := &dbpb.ShardSpec{ShardId: id, App: "kv", Replicas: 3}
		switch x := w.rng.IntN(20); {
		case x == 0:
			sp.Replicas = 1
		case x <= 2 && len(w.hosts) >= 6:
			sp.Replicas = 5
		case x == 3 && regions == 3:
			sp.Regions = map[string]uint32{"r1": 1, "r2": 1, "r3": 1}
		case x == 4 && regions >= 2:
			sp.Regions = map[string]uint32{"r1": 2, "r2": 1}
		}
		specs = append(specs, sp)
	}
	if !w.operator(&dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{Shards: specs}}, true) {
		return
	}
	for _, sp := range specs {
		sh := w.st.Shards.Get(sp.ShardId)
		g := newGroup(sp.ShardId, sh.NextReplicaId, sp.Replicas)
		w.groups[sp.ShardId] = append(w.groups[sp.ShardId], g)
		w.groupList = append(w.groupList, g)
		w.stats.ShardsCreated++
	}
}

// operator applies an operator command (outside the scheduler epoch).
func (w *World) operator(op any, must bool) bool {
	cmd := &dbpb.Command{Version: db.CommandVersion, NowUnixMs: w.now.UnixMilli()}
	switch o := op.(type) {
	case *dbpb.Command_SetConfig:
		cmd.Op = o
	case *dbpb.Command_SetRegions:
		cmd.Op = o
	case *dbpb.Command_CreateShards:
		cmd.Op = o
	case *dbpb.Command_DeleteShards:
		cmd.Op = o
	case *dbpb.Command_Launch:
		cmd.Op = o
	case *dbpb.Command_SetHostAdmin:
		cmd.Op = o
	case *dbpb.Command_RemoveHost:
		cmd.Op = o
	default:
		panic(fmt.Sprintf("sim: unknown operator command %T", op))
	}
	r := w.st.ApplyCommand(cmd)
	w.tracef("operator %s -> %s", shortCmd(cmd), r.Code)
	if r.Code != dbpb.Code_CODE_OK && must {
		panic(fmt.Sprintf("sim: operator command %s failed: %s", shortCmd(cmd), r.Code))
	}
	if r.Code == dbpb.Code_CODE_OK {
		w.checkDB()
	}
	return r.Code == dbpb.Code_CODE_OK
}

func (w *World) finished() bool {
	return w.converged || !w.now.Before(w.deadline)
}

// step advances the world by one tick.
func (w *World) step() {
	w.now = w.now.Add(w.cfg.Tick)
	w.stats.Steps++
	if !w.settled {
		if w.now.Before(w.faultEnd) {
			if w.now.UnixMilli()%1000 == 0 {
				w.injectFaults()
			}
		} else {
			w.stopFaults()
		}
	}
	w.lifecycle()
	if w.now.UnixMilli()%1000 == 0 {
		w.hostChurnTick()
	}
	w.execOrders()
	w.truthTick()
	w.reports()
	w.failoverTick()
	if !w.now.Before(w.nextPlan) {
		w.nextPlan = w.now.Add(w.cfg.PlanEvery)
		w.schedule()
	}
	if w.now.UnixMilli()%1000 == 0 {
		w.checkStep()
	}
	if w.settled {
		w.checkSettled()
	}
}

// hostByID finds the simulated host currently using a Drummer host ID.
func (w *World) hostByID(id string) *Host {
	for _, h := range w.hosts {
		if h.id == id {
			return h
		}
	}
	return nil
}

func sortedKeys[K interface{ ~uint64 | ~string }, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// shortCmd is a compact description of a command for traces.
func shortCmd(c *dbpb.Command) string {
	switch o := c.Op.(type) {
	case *dbpb.Command_SetConfig:
		cf := o.SetConfig.Config
		b := db.BalanceOf(cf)
		return fmt.Sprintf("set_config(suspect=%d dead=%d repairs=%d/host=%d gc=%d overrides=%d balance replicas=%v leaders=%v threshold=%d%% min_excess=%d moves=%d transfers=%d/s cooldown=%s)",
			cf.SuspectTimeoutMs, cf.DeadTimeoutMs, cf.MaxConcurrentRepairs, cf.MaxRepairsPerHost, cf.HostGcAfterMs, len(cf.ShardOverrides),
			b.Replicas, b.Leaders, b.ThresholdPct, b.MinExcess, b.MaxMoves, b.MaxLeaderTransfers, b.Cooldown)
	case *dbpb.Command_CreateShards:
		var ids []string
		for _, s := range o.CreateShards.Shards {
			ids = append(ids, fmt.Sprintf("%d(x%d%v)", s.ShardId, s.Replicas, mapStr(s.Regions)))
		}
		return "create_shards " + strings.Join(ids, ",")
	case *dbpb.Command_DeleteShards:
		return fmt.Sprintf("delete_shards %v", o.DeleteShards.ShardIds)
	case *dbpb.Command_SetHostAdmin:
		a := o.SetHostAdmin
		if a.MaintenanceOnly {
			return fmt.Sprintf("maintenance %s until +%ds", a.HostId, max(0, a.MaintenanceUntilUnixMs-c.NowUnixMs)/1000)
		}
		return fmt.Sprintf("set_admin %s %s", a.HostId, a.Admin)
	case *dbpb.Command_SetRegions:
		return "set_regions " + mapStr(o.SetRegions.Regions)
	case *dbpb.Command_RemoveHost:
		return fmt.Sprintf("remove_host %s force=%v", o.RemoveHost.HostId, o.RemoveHost.Force)
	case *dbpb.Command_Launch:
		return "launch"
	}
	return fmt.Sprintf("%T", c.Op)
}

func mapStr(m map[string]uint32) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// orderStr describes an order for traces.
func orderStr(o *drummerpb.Order) string {
	switch k := o.Kind.(type) {
	case *drummerpb.Order_Start:
		s := k.Start
		mode := "join"
		if !s.Join {
			mode = fmt.Sprintf("initial%v", sortedKeys(s.InitialMembers))
		}
		nv := ""
		if s.NonVoting {
			nv = " non_voting"
		}
		return fmt.Sprintf("start %d/%d %s%s", s.ShardId, s.ReplicaId, mode, nv)
	case *drummerpb.Order_Stop:
		rd := ""
		if k.Stop.RemoveData {
			rd = "+remove_data"
		}
		return fmt.Sprintf("stop%s %d/%d", rd, k.Stop.ShardId, k.Stop.ReplicaId)
	case *drummerpb.Order_ConfigChange:
		c := k.ConfigChange
		return fmt.Sprintf("cc %d %s %d ccid=%d", c.ShardId, strings.TrimPrefix(c.Type.String(), "CONFIG_CHANGE_TYPE_"), c.ReplicaId, c.ConfigChangeId)
	case *drummerpb.Order_TransferLeader:
		return fmt.Sprintf("transfer %d -> %d", k.TransferLeader.ShardId, k.TransferLeader.ToReplicaId)
	}
	return "?"
}
