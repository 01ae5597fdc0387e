package sim

import (
	"flag"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	flagSeed     = flag.Int64("sim.seed", -1, "run only this seed (replay a failure), with a full trace when -v")
	flagSeeds    = flag.Int("sim.seeds", 2000, "number of seeds TestSimSeeds runs")
	flagFirst    = flag.Uint64("sim.first", 1, "first seed TestSimSeeds runs")
	flagDuration = flag.Duration("sim.duration", 0, "fault phase length of every run (0: random 60-120s per seed)")
	flagHosts    = flag.Int("sim.hosts", 0, "hosts per run (0: random 4-7)")
	flagShards   = flag.Int("sim.shards", 0, "shards per run (0: random 3-20)")
	flagTrace    = flag.Bool("sim.trace", false, "stream the trace of a single-seed run (-sim.seed) to the test log")
	flagFaults   = flag.String("sim.faults", "all", "fault kinds to inject: all, none, or a comma list of "+strings.Join(FaultNames(), ","))
)

func seedConfig(seed uint64) Config {
	f, err := ParseFaults(*flagFaults)
	if err != nil {
		panic(err)
	}
	return Config{
		Seed:      seed,
		Hosts:     *flagHosts,
		Shards:    *flagShards,
		FaultTime: *flagDuration,
		Faults:    f,
	}
}

func replayHint(seed uint64) string {
	return fmt.Sprintf("replay: go test ./internal/sim -run TestSimSeeds -sim.seed=%d -v", seed)
}

func report(t *testing.T, r *Result) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d failed (simulated %s):\n", r.Seed, r.SimTime)
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "  %s\n", v)
	}
	if testing.Verbose() {
		fmt.Fprintf(&b, "last %d trace lines:\n", len(r.Trace))
		for _, l := range r.Trace {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	fmt.Fprintf(&b, "%s", replayHint(r.Seed))
	t.Error(b.String())
}

// TestSimSeeds runs the simulator over many seeds (all faults on). Replay
// one with -sim.seed=N; run a longer soak with -sim.seeds=100000 or longer
// fault phases with -sim.duration=10m.
func TestSimSeeds(t *testing.T) {
	if *flagSeed >= 0 {
		cfg := seedConfig(uint64(*flagSeed))
		if *flagTrace {
			cfg.TraceOut = func(s string) { t.Log(s) }
		}
		r := Run(cfg)
		t.Logf("seed %d: simulated %s, converged=%v after %s\n%s", r.Seed, r.SimTime, r.Converged, r.SettleTime, r.Stats)
		if r.Failed() {
			report(t, r)
		}
		return
	}
	n := *flagSeeds
	if testing.Short() {
		n = min(n, 200)
	}
	batches := max(2, runtime.GOMAXPROCS(0)) * 4
	var mu sync.Mutex
	var total Stats
	var failures []uint64
	var simTime, maxSettle time.Duration
	start := time.Now()
	for b := range batches {
		t.Run(fmt.Sprintf("batch%d", b), func(t *testing.T) {
			t.Parallel()
			for i := b; i < n; i += batches {
				seed := *flagFirst + uint64(i)
				r := Run(seedConfig(seed))
				mu.Lock()
				total.Add(r.Stats)
				simTime += r.SimTime
				maxSettle = max(maxSettle, r.SettleTime)
				if r.Failed() {
					failures = append(failures, seed)
				}
				mu.Unlock()
				if r.Failed() {
					report(t, r)
				}
			}
		})
	}
	t.Cleanup(func() {
		t.Logf("%d seeds, %d failed %v, simulated %s in %s, slowest settle %s\n%s",
			n, len(failures), failures, simTime.Round(time.Second), time.Since(start).Round(time.Millisecond), maxSettle, total)
	})
}

// TestSimDeterministic checks that a seed replays exactly. Go randomizes
// map iteration on every run, so this also catches results (of the planner,
// the DB apply path or the simulator) that depend on map order.
func TestSimDeterministic(t *testing.T) {
	for seed := uint64(1); seed <= 16; seed++ {
		a, b := Run(seedConfig(seed)), Run(seedConfig(seed))
		if a.DBHash != b.DBHash || a.SimTime != b.SimTime || !reflect.DeepEqual(a.Stats, b.Stats) {
			t.Errorf("seed %d is not deterministic: hash %x/%x time %s/%s\n%s\n%s", seed, a.DBHash, b.DBHash, a.SimTime, b.SimTime, a.Stats, b.Stats)
		}
	}
}

func TestParseFaults(t *testing.T) {
	if f, err := ParseFaults("all"); err != nil || f != AllFaults() {
		t.Fatalf("all: %v %v", f, err)
	}
	if f, err := ParseFaults("crash,partition"); err != nil || f != (Faults{Crash: true, Partition: true}) {
		t.Fatalf("crash,partition: %+v %v", f, err)
	}
	if _, err := ParseFaults("crash,bogus"); err == nil {
		t.Fatal("unknown fault accepted")
	}
}

// TestSimNoFaults: without faults every shard is placed, bootstrapped and
// healthy quickly, and nothing is repaired (balancing aside).
func TestSimNoFaults(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		r := Run(Config{Seed: seed, FaultTime: 30 * time.Second})
		if r.Failed() {
			report(t, r)
			continue
		}
		// Balancing may move a replica to a host that registered after
		// the placement (seed 9: a host joined 0.2 s after its peers);
		// nothing else is repaired without faults.
		if n := r.Stats.RepairsStarted - r.Stats.BalanceMoves; n != 0 {
			t.Errorf("seed %d: %d repairs without faults", seed, n)
		}
	}
}
