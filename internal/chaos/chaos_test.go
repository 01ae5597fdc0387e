package chaos

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drummerhq/drummer/internal/testcluster"
)

var (
	binsOnce sync.Once
	bins     testcluster.Binaries
	binsErr  error
	binDir   string
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func buildBins(t *testing.T) testcluster.Binaries {
	t.Helper()
	binsOnce.Do(func() {
		binDir, binsErr = os.MkdirTemp("", "drummer-chaos-bin-")
		if binsErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		start := time.Now()
		bins, binsErr = Build(ctx, binDir)
		t.Logf("built the monkey-test binaries in %s", time.Since(start).Round(time.Millisecond))
	})
	if binsErr != nil {
		t.Fatal(binsErr)
	}
	return bins
}

// seedFor returns DRUMMER_CHAOS_SEED if set (to replay a failed run), else
// a fresh seed.
func seedFor(t *testing.T) uint64 {
	if s := os.Getenv("DRUMMER_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("DRUMMER_CHAOS_SEED=%q: %v", s, err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

func runChaos(t *testing.T, cfg Config) *Report {
	t.Helper()
	testcluster.Exclusive(t)
	start := time.Now()
	defer func() {
		t.Logf("%s took %s (after taking the exclusive lock)", t.Name(), time.Since(start).Round(time.Second))
	}()
	cfg.Bins = buildBins(t)
	cfg.Seed = seedFor(t)
	cfg.Logf = t.Logf
	cfg.Replay = fmt.Sprintf("DRUMMER_CHAOS_SEED=%d go test ./internal/chaos -run '^%s$' -v -timeout 20m", cfg.Seed, t.Name())
	// An interrupt (^C) or the test deadline stops the run, which then
	// stops every process and removes its directory.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if dl, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-30*time.Second))
		defer cancel()
	}
	rep, err := Run(ctx, cfg)
	if rep != nil {
		t.Logf("\n%s", rep.Summary())
	}
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestChaos is the short chaos run of the default test suite: 3 drummer
// servers, 5 nodehosts and 32 shards under every fault kind for 100s of
// workload, then convergence and linearizability checks (about three
// minutes). Replay a failure with DRUMMER_CHAOS_SEED (see the summary);
// cmd/drummer-chaos runs the long version.
func TestChaos(t *testing.T) {
	rep := runChaos(t, Short())
	if rep.Failed() {
		t.Fatalf("chaos run failed (seed %d); data, logs and history kept in %s:\n  %s",
			rep.Seed, rep.Dir, strings.Join(rep.Failures, "\n  "))
	}
}

// TestChaosCatchesUnsafeAck runs a deliberately broken nodehost
// (--test-unsafe-ack: proposals are acknowledged before they commit) and
// requires the checker to report a linearizability violation.
func TestChaosCatchesUnsafeAck(t *testing.T) {
	if testing.Short() {
		t.Skip("a second multi-process run; skipped in -short")
	}
	cfg := Short()
	cfg.UnsafeAck = true
	cfg.Duration = 30 * time.Second
	cfg.Shards = 8
	cfg.Faults = []string{FaultNodehostPause, FaultPartition, FaultMessageLoss}
	rep := runChaos(t, cfg)
	if !rep.DirRemoved {
		defer os.RemoveAll(rep.Dir)
	}
	lin := rep.Linearizability
	if len(lin.Illegal) == 0 {
		t.Fatalf("the checker did not catch proposals acknowledged before commit: %s", lin)
	}
	t.Logf("caught: %s", lin)
}

// TestChaosCatchesDivergence runs a deliberately broken nodehost whose kv
// replicas apply an extra hidden write (--test-diverge): no client can see
// it, so only the replica comparison (state machine hashes at equal applied
// indexes) can catch it, and must.
func TestChaosCatchesDivergence(t *testing.T) {
	if testing.Short() {
		t.Skip("a multi-process run; skipped in -short")
	}
	cfg := Short()
	cfg.Diverge = true
	cfg.Duration = 15 * time.Second
	cfg.Shards = 4
	cfg.Faults = []string{}
	rep := runChaos(t, cfg)
	if !rep.DirRemoved {
		defer os.RemoveAll(rep.Dir)
	}
	found := ""
	for _, f := range rep.Failures {
		if strings.Contains(f, "diverged") {
			found = f
		}
	}
	if found == "" {
		t.Fatalf("the checker did not catch diverging replicas; failures: %q", rep.Failures)
	}
	if !rep.Linearizability.OK() {
		t.Errorf("the hidden divergence is not visible to clients, yet: %s", rep.Linearizability)
	}
	t.Logf("caught: %s", found)
}

func op(kind string, call, ret int64, f func(*Op)) Op {
	o := Op{Key: "k", Kind: kind, Call: call, Return: ret, Outcome: OutcomeOK}
	if f != nil {
		f(&o)
	}
	return o
}

// TestModel checks the checker on small histories with known answers.
func TestModel(t *testing.T) {
	put := func(call, ret int64, v string) Op { return op(OpPut, call, ret, func(o *Op) { o.Value = v }) }
	get := func(call, ret int64, v string) Op {
		return op(OpGet, call, ret, func(o *Op) { o.Found, o.Result = v != "", v })
	}
	unknown := func(o Op) Op { o.Outcome, o.Return = OutcomeUnknown, math.MaxInt64; return o }
	cas := func(call, ret int64, expect, value string, swapped bool, cur string) Op {
		return op(OpCAS, call, ret, func(o *Op) {
			o.Expect, o.ExpectAbsent, o.Value, o.OK = expect, expect == "", value, swapped
			if !swapped {
				o.Found, o.Result = cur != "", cur
			}
		})
	}
	del := func(call, ret int64, existed bool) Op { return op(OpDelete, call, ret, func(o *Op) { o.OK = existed }) }
	for _, tc := range []struct {
		name string
		ops  []Op
		ok   bool
	}{
		{"sequential", []Op{put(0, 1, "a"), get(2, 3, "a"), put(4, 5, "b"), get(6, 7, "b")}, true},
		{"stale read", []Op{put(0, 1, "a"), put(2, 3, "b"), get(4, 5, "a")}, false},
		{"read of a value never written", []Op{put(0, 1, "a"), get(2, 3, "z")}, false},
		{"concurrent read sees either", []Op{put(0, 10, "a"), get(1, 2, ""), get(3, 4, "a"), get(11, 12, "a")}, true},
		{"value flips back", []Op{put(0, 10, "a"), get(1, 2, "a"), get(3, 4, "")}, false},
		{"unknown write seen late", []Op{unknown(put(0, 1, "a")), get(50, 51, ""), get(60, 61, "a")}, true},
		{"unknown write never seen", []Op{unknown(put(0, 1, "a")), get(50, 51, "")}, true},
		{"unknown write flips back", []Op{unknown(put(0, 1, "a")), get(50, 51, "a"), get(60, 61, "")}, false},
		{"bounded unknown write seen after its bound", []Op{
			func() Op { o := put(0, 1, "a"); o.Outcome, o.Return = OutcomeUnknown, 20; return o }(),
			get(30, 31, ""), get(40, 41, "a")}, false},
		{"cas swaps", []Op{put(0, 1, "a"), cas(2, 3, "a", "b", true, ""), get(4, 5, "b")}, true},
		{"cas swap that cannot have happened", []Op{put(0, 1, "a"), cas(2, 3, "x", "b", true, "")}, false},
		{"cas mismatch reports current", []Op{put(0, 1, "a"), cas(2, 3, "x", "b", false, "a"), get(4, 5, "a")}, true},
		{"cas mismatch with wrong current", []Op{put(0, 1, "a"), cas(2, 3, "x", "b", false, "c")}, false},
		{"cas on absent", []Op{cas(0, 1, "", "a", true, ""), get(2, 3, "a"), cas(4, 5, "", "b", false, "a")}, true},
		{"cas delete", []Op{put(0, 1, "a"), op(OpCAS, 2, 3, func(o *Op) { o.Expect, o.CASDelete, o.OK = "a", true, true }), get(4, 5, "")}, true},
		{"delete", []Op{put(0, 1, "a"), del(2, 3, true), get(4, 5, ""), del(6, 7, false)}, true},
		{"delete reports a missing key as existing", []Op{del(0, 1, true)}, false},
		{"failed ops are ignored", []Op{put(0, 1, "a"), op(OpGet, 2, 3, func(o *Op) { o.Outcome, o.Result, o.Found = OutcomeFailed, "zz", true })}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range tc.ops {
				tc.ops[i].Client = i
			}
			res := CheckLinearizable(tc.ops, 10*time.Second, "")
			if res.OK() != tc.ok {
				t.Fatalf("linearizable = %v, want %v: %s", res.OK(), tc.ok, res)
			}
		})
	}
}

func TestParseFaults(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		err  bool
	}{
		{"all", len(AllFaults), false},
		{"none", 0, false},
		{"all,-nodehost-wipe", len(AllFaults) - 1, false},
		{"partition,nodehost-kill", 2, false},
		{"bogus", 0, true},
	} {
		got, err := ParseFaults(tc.in)
		if (err != nil) != tc.err || len(got) != tc.want {
			t.Errorf("ParseFaults(%q) = %v, %v", tc.in, got, err)
		}
	}
}
