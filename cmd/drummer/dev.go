package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/debugserver"
	"github.com/drummerhq/drummer/internal/devcluster"
	"github.com/drummerhq/drummer/internal/logging"
)

type devFlags struct {
	nodehosts int
	dataDir   string
	basePort  int
	shards    int
	logLevel  string
	logFormat string
	exitAfter time.Duration
	debug     string
}

func devCmd(stdout, stderr io.Writer) *cobra.Command {
	var f devFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a whole local deployment in one process",
		Long: `drummer dev runs three drummer servers and --nodehosts nodehosts in this
process, on 127.0.0.1, launches a few demo 'kv' shards, prints the endpoints
and a status table, and runs until Ctrl-C.

Without --data-dir the state lives in a temporary directory removed on exit;
with --data-dir it is kept and the next run resumes it (same ports needed).`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.nodehosts < 1 || f.nodehosts > 99 {
				return usageError{fmt.Errorf("--nodehosts %d: want 1 to 99", f.nodehosts)}
			}
			if f.basePort < 1 || f.basePort > 65535-300 {
				return usageError{fmt.Errorf("--base-port %d: want 1 to %d", f.basePort, 65535-300)}
			}
			if f.shards < 0 || f.shards > 10000 {
				return usageError{fmt.Errorf("--shards %d: want 0 to 10000", f.shards)}
			}
			return runDev(cmd.Context(), &f, stdout, stderr)
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&f.nodehosts, "nodehosts", 3, "number of nodehosts")
	fs.StringVar(&f.dataDir, "data-dir", "", "keep state here across runs (default: a temporary directory)")
	fs.IntVar(&f.basePort, "base-port", 7100, "drummer gRPC on base+1..3, drummer Raft base+11..13, nodehost Raft base+101.., API base+201..")
	fs.IntVar(&f.shards, "shards", 4, "demo kv shards to launch on first start")
	fs.StringVar(&f.logLevel, "log-level", "warn", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&f.debug, "debug-address", "", "serve /debug/pprof/ and /metrics on this host:port (off by default)")
	fs.DurationVar(&f.exitAfter, "exit-after", 0, "stop by itself after this long (for scripts and tests)")
	_ = fs.MarkHidden("exit-after")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	return cmd
}

func runDev(parent context.Context, f *devFlags, stdout, stderr io.Writer) error {
	if parent == nil {
		parent = context.Background()
	}
	log, err := logging.New(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.exitAfter > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.exitAfter)
		defer cancel()
	}
	dbg, err := debugserver.Start(f.debug, log)
	if err != nil {
		return usageError{err}
	}
	defer dbg.Close()
	fmt.Fprintf(stdout, "Starting 3 drummer servers and %d nodehosts on 127.0.0.1...\n", f.nodehosts)
	startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := devcluster.Start(startCtx, devcluster.Options{
		Nodehosts: f.nodehosts, DataDir: f.dataDir, BasePort: f.basePort, Logger: log,
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(stdout, "Stopping...")
		c.Close()
		fmt.Fprintln(stdout, "Stopped.")
	}()
	conn, err := client.NewConn(c.Drummers, client.Options{})
	if err != nil {
		return err
	}
	defer conn.Close()
	d := conn.Drummer()
	if err := devBootstrap(startCtx, d, f, stdout); err != nil {
		return err
	}
	eps := strings.Join(c.Drummers, ",")
	fmt.Fprintf(stdout, "\nDrummer endpoints: %s\n", eps)
	fmt.Fprintf(stdout, "Data directory:    %s\n", c.DataDir)
	fmt.Fprintf(stdout, "Nodehost APIs:     ")
	for i, a := range c.Agents {
		if i > 0 {
			fmt.Fprint(stdout, ",")
		}
		fmt.Fprint(stdout, a.APIAddress())
	}
	fmt.Fprintln(stdout)
	fmt.Fprintf(stdout, "\nTry:\n  export DRUMMER_ENDPOINTS=%s\n  go run ./cmd/drummercmd shard list\n  go run ./cmd/drummercmd host list\n\n", eps)
	printStatus(ctx, d, stdout)
	fmt.Fprintln(stdout, "\nRunning. Press Ctrl-C to stop.")
	<-ctx.Done()
	return nil
}

// devBootstrap waits for every nodehost to register and, on a fresh
// deployment, sets regions, defines the demo shards and launches them.
func devBootstrap(ctx context.Context, d drummerpb.DrummerClient, f *devFlags, stdout io.Writer) error {
	for {
		hosts, err := d.ListHosts(ctx, &drummerpb.ListHostsRequest{})
		if err == nil {
			up := 0
			for _, h := range hosts.Hosts {
				if h.State == "up" && h.AdminState != "unregistered" {
					up++
				}
			}
			if up >= f.nodehosts {
				break
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodehosts did not register: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	info, err := d.GetClusterInfo(ctx, &drummerpb.GetClusterInfoRequest{})
	if err != nil {
		return err
	}
	if info.Shards == 0 && f.shards > 0 {
		replicas := uint32(min(3, f.nodehosts))
		if f.nodehosts >= 3 {
			if _, err := d.SetRegions(ctx, &drummerpb.SetRegionsRequest{Regions: map[string]uint32{"r1": 1, "r2": 1, "r3": 1}}); err != nil {
				return fmt.Errorf("set regions: %w", err)
			}
		}
		if _, err := d.CreateShards(ctx, &drummerpb.CreateShardsRequest{FirstShardId: 1, Count: uint64(f.shards), Replicas: replicas, App: "kv"}); err != nil {
			return fmt.Errorf("create demo shards: %w", err)
		}
		fmt.Fprintf(stdout, "Defined %d demo kv shards with %d replicas each.\n", f.shards, replicas)
	}
	if !info.Launched {
		if _, err := d.Launch(ctx, &drummerpb.LaunchRequest{}); err != nil {
			return fmt.Errorf("launch: %w", err)
		}
		fmt.Fprintln(stdout, "Launched.")
	}
	for {
		info, err := d.GetClusterInfo(ctx, &drummerpb.GetClusterInfoRequest{})
		if err == nil && info.Health["healthy"] == info.Shards {
			return nil
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout, "Not every shard is healthy yet; see the table below.")
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func printStatus(ctx context.Context, d drummerpb.DrummerClient, w io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	shards, err := client.ListAllShards(ctx, d, &drummerpb.ListShardsRequest{})
	if err != nil {
		fmt.Fprintln(w, "status:", err)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tAPP\tHEALTH\tLEADER\tMEMBERS")
	for _, s := range shards {
		var ms []string
		for _, m := range s.Members {
			ms = append(ms, fmt.Sprintf("%d@%s", m.ReplicaId, m.RaftAddress))
		}
		slices.Sort(ms)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\n", s.ShardId, s.App, s.Health, s.LeaderReplicaId, strings.Join(ms, " "))
	}
	tw.Flush()
}
