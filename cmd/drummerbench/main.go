// Command drummerbench measures Drummer on real processes on loopback:
// how long launching N shards takes, how long from a nodehost's SIGKILL to
// its dead verdict and to every shard healthy again, and the drummer leader
// failover gap. Results are printed as Markdown table rows for
// docs/benchmarks.md.
//
//	go run ./cmd/drummerbench launch --shards 100,1000 --nodehosts 5
//	go run ./cmd/drummerbench heal --shards 30,300 --nodehosts 5
//	go run ./cmd/drummerbench failover --shards 30 --runs 5
//	go run ./cmd/drummerbench fleet --hosts 300 --scenario steady,kill,leader-kill
//
// fleet simulates thousands of nodehosts in this process (internal/fleet)
// against three real drummer processes; see docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/testcluster"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	// Measure alone: tests and other runs take the same lock.
	unlock, _, err := testcluster.Lock(time.Now().Add(time.Hour))
	if err != nil {
		fmt.Fprintln(os.Stderr, "drummerbench:", err)
		os.Exit(1)
	}
	defer unlock()
	switch os.Args[1] {
	case "launch":
		err = launch(os.Args[2:])
	case "heal":
		err = heal(os.Args[2:])
	case "failover":
		err = failover(os.Args[2:])
	case "fleet":
		err = fleetCmd(os.Args[2:])
		if errors.Is(err, errUsage) {
			unlock()
			os.Exit(2)
		}
	default:
		usage()
	}
	if err != nil {
		unlock()
		fmt.Fprintln(os.Stderr, "drummerbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: drummerbench launch|heal|failover|fleet [flags]  (see the package doc)")
	os.Exit(2)
}

type common struct {
	nodehosts int
	shards    string
	rtt       int
	keep      bool
	dir       string
}

func (c *common) register(fs *flag.FlagSet, shards string) {
	fs.IntVar(&c.nodehosts, "nodehosts", 5, "nodehost processes")
	fs.StringVar(&c.shards, "shards", shards, "comma-separated shard counts, one run each")
	fs.IntVar(&c.rtt, "rtt", 100, "nodehost Raft tick in ms")
	fs.BoolVar(&c.keep, "keep", false, "keep data and logs")
	fs.StringVar(&c.dir, "dir", "", "work directory (default: a temporary one)")
}

func (c *common) counts() ([]int, error) {
	var out []int
	for _, p := range strings.Split(c.shards, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--shards: bad count %q", p)
		}
		out = append(out, n)
	}
	return out, nil
}

type env struct {
	c    *testcluster.Cluster
	conn *client.Conn
	d    drummerpb.DrummerClient
	dir  string
	keep bool
}

func (e *env) close() {
	e.conn.Close()
	e.c.Close()
	if !e.keep {
		os.RemoveAll(e.dir)
	} else {
		fmt.Fprintln(os.Stderr, "kept", e.dir)
	}
}

func start(ctx context.Context, c *common) (*env, error) {
	dir := c.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "drummerbench-")
		if err != nil {
			return nil, err
		}
		dir = d
	}
	bins, err := testcluster.Build(ctx, filepath.Join(dir, "bin"))
	if err != nil {
		return nil, err
	}
	tc, err := testcluster.New(testcluster.Options{Bins: bins, Dir: filepath.Join(dir, fmt.Sprint(time.Now().UnixNano())),
		Nodehosts: c.nodehosts, RTT: c.rtt, LogLevel: "warn"})
	if err != nil {
		return nil, err
	}
	if err := tc.Start(); err != nil {
		tc.Close()
		return nil, err
	}
	conn, err := client.NewConn(strings.Split(tc.Endpoints, ","), client.Options{Security: tc.Security("admin")})
	if err != nil {
		tc.Close()
		return nil, err
	}
	e := &env{c: tc, conn: conn, d: conn.Drummer(), dir: dir, keep: c.keep}
	if err := e.waitHosts(ctx, c.nodehosts); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *env) waitHosts(ctx context.Context, n int) error {
	for {
		hs, err := client.ListAllHosts(ctx, e.d, &drummerpb.ListHostsRequest{})
		if err == nil {
			up := 0
			for _, h := range hs {
				if h.State == "up" && h.AdminState != "unregistered" {
					up++
				}
			}
			if up >= n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("nodehosts did not register")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitHealthy polls until every shard is healthy and none has a member
// on avoid.
func (e *env) waitHealthy(ctx context.Context, want int, avoid string) error {
	last := ""
	begin, lastPrint := time.Now(), time.Now()
	for {
		if time.Since(lastPrint) >= 5*time.Second {
			fmt.Fprintf(os.Stderr, "  %5.1fs: %s\n", time.Since(begin).Seconds(), last)
			lastPrint = time.Now()
		}
		ls, err := client.ListAllShards(ctx, e.d, &drummerpb.ListShardsRequest{})
		if err == nil {
			h := 0
			for _, s := range ls {
				ok := s.Health == "healthy"
				for _, m := range s.Members {
					if m.HostId == avoid {
						ok = false
					}
				}
				if ok {
					h++
				}
			}
			if h == want && len(ls) == want {
				return nil
			}
			byHealth := map[string]int{}
			for _, s := range ls {
				byHealth[s.Health]++
			}
			last = fmt.Sprintf("%d/%d healthy %v", h, len(ls), byHealth)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not healthy in time: %s", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (e *env) createAndLaunch(ctx context.Context, n int) (time.Duration, error) {
	begin := time.Now()
	if _, err := e.d.CreateShards(ctx, &drummerpb.CreateShardsRequest{FirstShardId: 1, Count: uint64(n), Replicas: 3, App: "kv"}); err != nil {
		return 0, err
	}
	if _, err := e.d.Launch(ctx, &drummerpb.LaunchRequest{}); err != nil {
		return 0, err
	}
	if err := e.waitHealthy(ctx, n, ""); err != nil {
		return 0, err
	}
	return time.Since(begin), nil
}

func machine() string {
	return fmt.Sprintf("%d CPUs, %s/%s, %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

func launch(args []string) error {
	fs := flag.NewFlagSet("launch", flag.ExitOnError)
	var c common
	c.register(fs, "100,1000")
	fs.Parse(args)
	counts, err := c.counts()
	if err != nil {
		return err
	}
	fmt.Printf("<!-- %s -->\n| shards | replicas | nodehosts | define+launch to all healthy |\n|---|---|---|---|\n", machine())
	for _, n := range counts {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		e, err := start(ctx, &c)
		if err != nil {
			cancel()
			return err
		}
		d, err := e.createAndLaunch(ctx, n)
		e.close()
		cancel()
		if err != nil {
			return err
		}
		fmt.Printf("| %d | 3 | %d | %.1f s |\n", n, c.nodehosts, d.Seconds())
	}
	return nil
}

func heal(args []string) error {
	fs := flag.NewFlagSet("heal", flag.ExitOnError)
	var c common
	c.register(fs, "30,300")
	suspect := fs.Duration("suspect-timeout", 5*time.Second, "suspect_timeout to configure")
	dead := fs.Duration("dead-timeout", 30*time.Second, "dead_timeout to configure")
	fs.Parse(args)
	counts, err := c.counts()
	if err != nil {
		return err
	}
	fmt.Printf("<!-- %s; suspect_timeout=%s dead_timeout=%s -->\n", machine(), *suspect, *dead)
	fmt.Println("| shards | replicas on killed host | SIGKILL to dead verdict | verdict to all healthy | SIGKILL to all healthy |\n|---|---|---|---|---|")
	for _, n := range counts {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		e, err := start(ctx, &c)
		if err != nil {
			cancel()
			return err
		}
		err = func() error {
			defer e.close()
			if _, err := e.d.SetConfig(ctx, &drummerpb.SetConfigRequest{Values: map[string]string{
				"suspect_timeout": suspect.String(), "dead_timeout": dead.String()}}); err != nil {
				return err
			}
			if _, err := e.createAndLaunch(ctx, n); err != nil {
				return err
			}
			// The victim: the nodehost with the most replicas.
			hs, err := client.ListAllHosts(ctx, e.d, &drummerpb.ListHostsRequest{})
			if err != nil {
				return err
			}
			slices.SortFunc(hs, func(a, b *drummerpb.HostStatus) int { return int(b.Replicas) - int(a.Replicas) })
			vh := hs[0]
			var victim *testcluster.Node
			for _, nd := range e.c.Nodehosts {
				if nd.RaftAddr == vh.RaftAddress {
					victim = nd
				}
			}
			victim.Kill()
			killed := time.Now()
			var verdict time.Duration
			for verdict == 0 {
				hs, err := client.ListAllHosts(ctx, e.d, &drummerpb.ListHostsRequest{})
				if err == nil {
					for _, h := range hs {
						if h.Id == vh.Id && h.State == "dead" {
							verdict = time.Since(killed)
						}
					}
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err := e.waitHealthy(ctx, n, vh.Id); err != nil {
				return err
			}
			total := time.Since(killed)
			fmt.Printf("| %d | %d | %.1f s | %.1f s | %.1f s |\n", n, vh.Replicas, verdict.Seconds(), (total - verdict).Seconds(), total.Seconds())
			return nil
		}()
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

func failover(args []string) error {
	fs := flag.NewFlagSet("failover", flag.ExitOnError)
	var c common
	c.register(fs, "30")
	runs := fs.Int("runs", 5, "leader kills to measure")
	fs.Parse(args)
	counts, err := c.counts()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	e, err := start(ctx, &c)
	if err != nil {
		return err
	}
	defer e.close()
	n := counts[0]
	if _, err := e.createAndLaunch(ctx, n); err != nil {
		return err
	}
	fmt.Printf("<!-- %s; %d shards, %d nodehosts -->\n", machine(), n, c.nodehosts)
	fmt.Println("| run | SIGKILL to new leader answering | SIGKILL to a new shard healthy |\n|---|---|---|")
	next := uint64(n + 1)
	for i := 1; i <= *runs; i++ {
		ci, err := e.d.GetClusterInfo(ctx, &drummerpb.GetClusterInfoRequest{})
		if err != nil {
			return err
		}
		old := ci.LeaderReplicaId
		victim := e.c.Drummers[old-1]
		victim.Kill()
		killed := time.Now()
		var gap time.Duration
		for {
			actx, acancel := context.WithTimeout(ctx, 2*time.Second)
			ci, err := e.d.GetClusterInfo(actx, &drummerpb.GetClusterInfoRequest{})
			acancel()
			if err == nil && ci.LeaderReplicaId != old && ci.LeaderReplicaId != 0 {
				gap = time.Since(killed)
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := e.d.CreateShards(ctx, &drummerpb.CreateShardsRequest{FirstShardId: next, Replicas: 3, App: "kv"}); err != nil {
			return err
		}
		next++
		if err := e.waitHealthy(ctx, int(next-1), ""); err != nil {
			return err
		}
		resumed := time.Since(killed)
		fmt.Printf("| %d | %.2f s | %.2f s |\n", i, gap.Seconds(), resumed.Seconds())
		if err := victim.Start(); err != nil {
			return err
		}
		time.Sleep(5 * time.Second) // let it catch up before the next kill
	}
	return nil
}
