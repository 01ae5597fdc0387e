package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/dashboard"
	"github.com/drummerhq/drummer/internal/devctl"
	"github.com/drummerhq/drummer/internal/logging"
	"github.com/drummerhq/drummer/internal/nodehostcmd"
	"github.com/drummerhq/drummer/internal/playground"
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
	insecure  bool
}

// Exit codes of the control commands besides 0, 1 and 2.
const (
	exitUnavailable = 3
)

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

func devCmd(stdout, stderr io.Writer) *cobra.Command {
	var f devFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local deployment to play with: 3 drummers, 5 nodehost processes, demo shards",
		Long: `drummer dev runs a whole deployment on 127.0.0.1: three drummer servers in
this process and --nodehosts nodehosts as child processes (this program
re-executed). It sets short liveness timeouts (a silent host is suspect after
2s and dead after 6s), launches a few demo 'kv' shards, prints the hosts, the
endpoints and a short tour, and runs until Ctrl-C, which stops everything.

While it runs, break and mend it from another terminal:

  drummer dev kill N       SIGKILL host N, as when a machine dies
  drummer dev pause N      freeze host N (SIGSTOP): alive, but silent
  drummer dev resume N     continue a paused host (SIGCONT)
  drummer dev restart N    stop host N cleanly and start it with the same data
  drummer dev wipe N       restart host N with an empty data directory: a new identity
  drummer dev add          start one more nodehost
  drummer dev status       the hosts: PIDs, process state, liveness, replicas

Each says what Drummer will do next. They talk to the running dev over a
unix socket in its data directory; without --data-dir they find the dev that
started last through $XDG_RUNTIME_DIR/drummer-dev/current (or, without
XDG_RUNTIME_DIR, $TMPDIR/drummer-dev-$UID/current). With no dev running they
exit with code 3.

Without --data-dir the state lives in a temporary directory removed on exit;
with --data-dir it is kept and the next run resumes it (same --base-port,
and at least as many nodehosts as it had).`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.nodehosts < 1 || f.nodehosts > devctl.MaxHost {
				return usageError{fmt.Errorf("--nodehosts %d: want 1 to %d", f.nodehosts, devctl.MaxHost)}
			}
			if f.basePort < 1 || f.basePort > 65535-400 {
				return usageError{fmt.Errorf("--base-port %d: want 1 to %d", f.basePort, 65535-400)}
			}
			if f.shards < 0 || f.shards > 10000 {
				return usageError{fmt.Errorf("--shards %d: want 0 to 10000", f.shards)}
			}
			return runDev(cmd.Context(), &f, stdout, stderr)
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&f.nodehosts, "nodehosts", 5, "number of nodehost processes")
	fs.StringVar(&f.dataDir, "data-dir", "", "keep state here across runs (default: a temporary directory)")
	fs.IntVar(&f.basePort, "base-port", 7100, "drummer gRPC on base+1..3, Raft base+11..13, HTTP base+21..23; nodehost N Raft base+100+N, API base+200+N, HTTP base+300+N")
	fs.IntVar(&f.shards, "shards", 4, "demo kv shards to launch on first start")
	fs.StringVar(&f.logLevel, "log-level", "warn", "debug, info, warn or error (this process; the nodehosts' log files get at least info)")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&f.debug, "debug-address", "", "serve /debug/pprof/ and /metrics on this host:port (off by default; HTTPS with the dev's certificates)")
	fs.BoolVar(&f.insecure, "insecure", false, "no TLS and no authentication (by default the dev makes its own CA and certificates in its data directory)")
	fs.DurationVar(&f.exitAfter, "exit-after", 0, "stop by itself after this long (for scripts and tests)")
	_ = fs.MarkHidden("exit-after")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	cmd.AddCommand(
		devCtlCmd(devctl.OpStatus, "status", "Show the playground's hosts: PIDs, process state, liveness, replicas", stdout),
		devCtlCmd(devctl.OpKill, "kill N", "Kill host N with SIGKILL and say when Drummer repairs it", stdout),
		devCtlCmd(devctl.OpPause, "pause N", "Freeze host N with SIGSTOP: alive but silent", stdout),
		devCtlCmd(devctl.OpResume, "resume N", "Continue paused host N with SIGCONT", stdout),
		devCtlCmd(devctl.OpRestart, "restart N", "Stop host N cleanly (or start a killed one) with the same data and identity", stdout),
		devCtlCmd(devctl.OpWipe, "wipe N", "Restart host N with an empty data directory: a new identity", stdout),
		devCtlCmd(devctl.OpAdd, "add", "Start one more nodehost", stdout),
		devNodehostCmd(stderr),
	)
	return cmd
}

// devNodehostCmd is how `drummer dev` runs its nodehosts: this binary
// re-executed, running the nodehost command itself.
func devNodehostCmd(stderr io.Writer) *cobra.Command {
	c := nodehostcmd.Command(nodehostcmd.Options{Use: "nodehost", Version: version, Stderr: stderr})
	c.Hidden = true
	c.Short = "Run one nodehost (how drummer dev starts its nodehosts; same flags as the nodehost command)"
	return c
}

func devCtlCmd(op, use, short string, stdout io.Writer) *cobra.Command {
	var (
		dataDir string
		output  string
		force   bool
	)
	takesHost := strings.HasSuffix(use, " N")
	cmd := &cobra.Command{
		Use:           use,
		Short:         short,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(_ *cobra.Command, args []string) error {
			if takesHost && len(args) != 1 {
				return usageError{fmt.Errorf("%s: give one host number, e.g. 'drummer dev %s 2' (see 'drummer dev status')", op, op)}
			}
			if !takesHost && len(args) != 0 {
				return usageError{fmt.Errorf("%s takes no arguments", op)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req := devctl.Request{Op: op, Force: force}
			if takesHost {
				n, err := strconv.Atoi(args[0])
				if err != nil || n < 1 || n > devctl.MaxHost {
					return usageError{fmt.Errorf("%s %q: want a host number from 1 to %d (see 'drummer dev status')", op, args[0], devctl.MaxHost)}
				}
				req.Host = n
			}
			if output != "table" && output != "json" {
				return usageError{fmt.Errorf("-o %q: want table or json", output)}
			}
			if err := req.Validate(); err != nil {
				return usageError{err}
			}
			dir, err := devctl.Discover(dataDir)
			if err != nil {
				if errors.Is(err, devctl.ErrNotRunning) {
					return exitError{exitUnavailable, err}
				}
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			resp, err := devctl.Call(ctx, dir, req)
			if err != nil {
				if errors.Is(err, devctl.ErrNotRunning) || errors.Is(err, context.DeadlineExceeded) {
					return exitError{exitUnavailable, err}
				}
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(resp); err != nil {
					return err
				}
			} else {
				fmt.Fprint(stdout, resp.Output)
			}
			if resp.Code != 0 {
				return exitError{resp.Code, errors.New(resp.Error)}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&dataDir, "data-dir", "", "data directory of the running dev (default: the dev that started last)")
	fs.StringVarP(&output, "output", "o", "table", "table or json")
	if op == devctl.OpWipe {
		fs.BoolVar(&force, "force", false, "wipe even when some shard then keeps fewer than a quorum of replicas anywhere")
	}
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
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find this program to start the nodehosts: %w", err)
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if f.exitAfter > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.exitAfter)
		defer cancel()
	}
	nhLevel := "info"
	if strings.EqualFold(f.logLevel, "debug") {
		nhLevel = "debug"
	}
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	p, err := playground.Start(startCtx, playground.Options{
		Nodehosts:         f.nodehosts,
		Shards:            f.shards,
		DataDir:           f.dataDir,
		BasePort:          f.basePort,
		NodehostCommand:   []string{exe, "dev", "nodehost"},
		NodehostLogLevel:  nhLevel,
		NodehostLogFormat: f.logFormat,
		Commands:          playground.DetectCommands(exe),
		Progress:          stdout,
		Logger:            log,
		Insecure:          f.insecure,
		Dashboard:         dashboard.Handler(dashboard.Options{Logger: log}),
	})
	if err != nil {
		if errors.Is(err, devctl.ErrRunning) {
			return fmt.Errorf("%w; stop it first, or give this one another --data-dir and --base-port", err)
		}
		return err
	}
	defer func() {
		stop() // a second Ctrl-C now kills at once (the nodehosts die with this process)
		fmt.Fprintln(stdout, "Stopping the nodehosts and the drummer servers (Ctrl-C again to kill at once)...")
		p.Close()
		fmt.Fprintln(stdout, "Stopped.")
	}()
	dbg, err := startDebug(f.debug, p.TLS("drummer-1"), auth.RoleServer, log)
	if err != nil {
		return usageError{err}
	}
	defer dbg.Close()
	if err := p.Bootstrap(startCtx, stdout); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	p.PrintIntro(ctx, stdout)
	if u, err := p.DashboardURL(); err == nil {
		fmt.Fprintf(stdout, "\nDashboard: %s\n", u)
		fmt.Fprintf(stdout, "Metrics and JSON API: %s (/metrics, /api/v1/...)\n", strings.Join(p.HTTPURLs(), ", "))
	} else {
		log.Warn("no dashboard URL", "err", err)
	}
	fmt.Fprintln(stdout, "\nRunning. Press Ctrl-C to stop everything.")
	<-ctx.Done()
	return nil
}
