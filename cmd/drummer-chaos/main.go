// Command drummer-chaos runs the Drummer chaos (monkey) test for as long as
// asked and prints a summary: 3 drummer servers and 5-6 nodehosts as real
// processes on loopback, kv shards under a recorded client workload, and a
// seeded nemesis that kills, pauses, partitions and wipes nodehosts, kills
// and pauses drummer servers (the scheduler leader too), drops Raft
// messages, slows state machines and forces snapshots. After the faults
// stop it checks that every shard converges (healthy, no zombie, equal
// replicas, equal drummer DB) and that the history is linearizable.
//
//	go run ./cmd/drummer-chaos -duration 30m -seed 42
//
// The binaries are built with -tags=dragonboat_monkeytest. A failing run
// keeps its directory (data, logs, history, porcupine visualization) and
// exits 1; the summary names the seed and the replay command.
//
// With -netns (default auto) the run happens inside a private network
// namespace (unshare -Urn) when the machine allows it, so that no traffic
// can leave loopback; otherwise it runs on the host's loopback.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/drummerhq/drummer/internal/chaos"
	"github.com/drummerhq/drummer/internal/testcluster"
)

func main() { os.Exit(run()) }

func run() int {
	d := chaos.Long()
	var (
		seed      = flag.Uint64("seed", 0, "seed of the fault schedule and workload (0: from the clock)")
		duration  = flag.Duration("duration", d.Duration, "length of the fault phase")
		nodehosts = flag.Int("nodehosts", d.Nodehosts, "number of nodehosts (5 or 6)")
		shards    = flag.Int("shards", d.Shards, "number of kv shards (3 replicas each)")
		workers   = flag.Int("workers", d.Workers, "concurrent clients")
		faults    = flag.String("faults", "all", "fault kinds: all, none, or a comma list; -kind removes one")
		maxImp    = flag.Int("max-impaired", d.MaxImpaired, "nodehosts impaired at the same time at most")
		converge  = flag.Duration("converge-timeout", d.ConvergeTimeout, "bound on convergence after the faults stop")
		dir       = flag.String("dir", "", "working directory (default: a new temporary directory)")
		keep      = flag.Bool("keep", false, "keep the directory of a passing run")
		unsafeAck = flag.Bool("unsafe-ack", false, "run deliberately broken nodehosts that acknowledge proposals before commit")
		diverge   = flag.Bool("diverge", false, "run a deliberately broken nodehost whose kv replicas diverge")
		logLevel  = flag.String("log-level", "info", "log level of the drummer and nodehost processes")
		netns     = flag.String("netns", "auto", "run inside a private network namespace: auto, on or off")
		quiet     = flag.Bool("q", false, "do not print progress")
	)
	flag.Parse()
	fl, err := chaos.ParseFaults(*faults)
	if err != nil {
		fmt.Fprintln(os.Stderr, "drummer-chaos:", err)
		return 2
	}
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano())
	}
	if os.Getenv("DRUMMER_CHAOS_IN_NETNS") == "" {
		switch *netns {
		case "on", "auto":
			if code, ok := reexecInNetns(*netns == "on"); ok {
				return code
			}
		case "off":
		default:
			fmt.Fprintln(os.Stderr, "drummer-chaos: -netns: want auto, on or off")
			return 2
		}
	} else if err := exec.Command("ip", "link", "set", "lo", "up").Run(); err != nil {
		fmt.Fprintln(os.Stderr, "drummer-chaos: bringing up loopback in the network namespace:", err)
		return 1
	} else {
		fmt.Fprintln(os.Stderr, "drummer-chaos: running inside a private network namespace (unshare -Urn): only its loopback exists")
	}
	cfg := chaos.Long()
	cfg.Seed, cfg.Duration, cfg.Nodehosts, cfg.Shards, cfg.Workers = *seed, *duration, *nodehosts, *shards, *workers
	cfg.Faults, cfg.MaxImpaired, cfg.ConvergeTimeout = fl, *maxImp, *converge
	cfg.Dir, cfg.Keep, cfg.UnsafeAck, cfg.Diverge, cfg.LogLevel = *dir, *keep, *unsafeAck, *diverge, *logLevel
	if !*quiet {
		start := time.Now()
		cfg.Logf = func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "%7s "+format+"\n", append([]any{time.Since(start).Round(time.Second)}, args...)...)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *dir != "" {
		if abs, err := filepath.Abs(*dir); err == nil {
			cfg.Dir = abs
		}
	}
	unlock, err := lock(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "drummer-chaos:", err)
		return 1
	}
	defer unlock()
	rep, err := chaos.Run(ctx, cfg)
	if rep != nil {
		fmt.Println(rep.Summary())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "drummer-chaos:", err)
		return 1
	}
	if rep.Failed() {
		return 1
	}
	return 0
}

// reexecInNetns runs this command again inside `unshare -Urn` (a new user
// and network namespace where only loopback exists). ok is false when the
// namespace cannot be created and the caller should run here instead.
func reexecInNetns(required bool) (code int, ok bool) {
	if err := exec.Command("unshare", "-Urn", "true").Run(); err != nil {
		if required {
			fmt.Fprintln(os.Stderr, "drummer-chaos: -netns on: cannot create a network namespace:", err)
			return 1, true
		}
		fmt.Fprintln(os.Stderr, "drummer-chaos: no network namespace available (unshare -Urn failed); running on the host's loopback")
		return 0, false
	}
	self, err := os.Executable()
	if err != nil {
		return 0, false
	}
	cmd := exec.Command("unshare", append([]string{"-Urn", "--kill-child", self}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "DRUMMER_CHAOS_IN_NETNS=1")
	// Forward interrupts to the child, which cleans up and prints its
	// summary.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, false
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	if ee, isExit := err.(*exec.ExitError); isExit {
		return ee.ExitCode(), true
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "drummer-chaos:", err)
		return 1, true
	}
	return 0, true
}

// lock takes testcluster's exclusive lock, so that a chaos run does not
// overlap with the multi-process tests or benchmarks; ctx interrupts the
// wait.
func lock(ctx context.Context) (func(), error) {
	type result struct {
		unlock func()
		err    error
	}
	ch := make(chan result, 1)
	go func() {
		unlock, _, err := testcluster.Lock(time.Now().Add(24 * time.Hour))
		ch <- result{unlock, err}
	}()
	select {
	case r := <-ch:
		return r.unlock, r.err
	case <-time.After(time.Second):
		fmt.Fprintf(os.Stderr, "drummer-chaos: waiting for %s (another multi-process run holds it)\n", testcluster.LockPath())
	}
	select {
	case r := <-ch:
		return r.unlock, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
