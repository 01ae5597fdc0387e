// Command nodehost runs a dragonboat NodeHost managed by Drummer: it
// reports to the drummer servers, runs the shards they assign (the built-in
// "kv" app), and serves the NodehostAPI data plane.
//
// To run your own state machines, build your own binary with the agent
// package (see its documentation); this command is a thin wrapper around it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/drummerhq/drummer/agent"
	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/debugserver"
	"github.com/drummerhq/drummer/internal/flagconf"
	"github.com/drummerhq/drummer/internal/logging"
	"github.com/drummerhq/drummer/internal/tlsflags"
)

var version = "dev"

// testHooks, when a build-tagged file sets it (chaos tests build the
// nodehost with -tags dragonboat_monkeytest), adds test-only flags and
// returns a function that adjusts the agent configuration before start.
var testHooks func(fs *pflag.FlagSet) func(cfg *agent.Config) error

type usageError struct{ error }

type flags struct {
	raftAddress   string
	listenAddress string
	apiAddress    string
	endpoints     string
	dataDir       string
	labels        string
	rtt           uint64
	config        string
	logLevel      string
	logFormat     string
	startTimeout  time.Duration
	debugAddress  string
	tls           tlsflags.Flags
	testHooks     func(cfg *agent.Config) error
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	var f flags
	cmd := &cobra.Command{
		Use:   "nodehost",
		Short: "Run a dragonboat NodeHost managed by Drummer",
		Long: `nodehost runs one dragonboat NodeHost. It reports to every drummer server,
runs the shards the drummer leader assigns to it, restarts them after a
restart, and serves the NodehostAPI (sessions, Propose, Read) on --api-address.

  nodehost --raft-address 127.0.0.1:7201 --api-address 127.0.0.1:7301 \
    --drummer-endpoints 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 \
    --data-dir /var/lib/nodehost1 --labels region=r1,zone=a

Every flag can also be set in a YAML file given with --config.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.config != "" {
				if err := flagconf.Apply(cmd.Flags(), f.config, "config"); err != nil {
					return usageError{err}
				}
			}
			return serve(&f, stderr)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.raftAddress, "raft-address", "", "host:port other nodehosts reach this one's Raft transport on (tied to --data-dir)")
	fs.StringVar(&f.listenAddress, "listen-address", "", "optional bind address for Raft, e.g. 0.0.0.0:7201 (default: --raft-address)")
	fs.StringVar(&f.apiAddress, "api-address", "", "host:port of the NodehostAPI data plane")
	fs.StringVar(&f.endpoints, "drummer-endpoints", "", "drummer gRPC endpoints, comma separated")
	fs.StringVar(&f.dataDir, "data-dir", "", "directory for this nodehost's data")
	fs.StringVar(&f.labels, "labels", "", "labels, e.g. region=r1,zone=a (placement spreads over 'region')")
	fs.Uint64Var(&f.rtt, "rtt", 100, "Raft tick in milliseconds")
	fs.StringVar(&f.config, "config", "", "YAML file setting any of these flags")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&f.debugAddress, "debug-address", "", "serve /debug/pprof/ and /metrics on this host:port (off by default; HTTPS with mutual TLS)")
	f.tls.Register(fs)
	fs.DurationVar(&f.startTimeout, "start-timeout", 5*time.Minute, "how long to wait for a drummer on first start")
	var applyTestHooks func(cfg *agent.Config) error
	if testHooks != nil {
		applyTestHooks = testHooks(fs)
	}
	f.testHooks = func(cfg *agent.Config) error {
		if applyTestHooks == nil {
			return nil
		}
		return applyTestHooks(cfg)
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	cmd.AddCommand(&cobra.Command{
		Use: "version", Short: "Print the version", Args: cobra.NoArgs,
		Run: func(*cobra.Command, []string) { fmt.Fprintln(stdout, "nodehost", version) },
	})
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	err := cmd.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "nodehost:", err)
	var ue usageError
	if errors.As(err, &ue) || strings.Contains(err.Error(), "unknown flag") || strings.Contains(err.Error(), "unknown command") {
		fmt.Fprintln(stderr, "Run 'nodehost --help' for usage.")
		return 2
	}
	return 1
}

// ParseLabels parses "k=v,k2=v2".
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	s = strings.TrimSpace(s)
	if s == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q: want key=value, e.g. region=r1", part)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("label %q given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

func serve(f *flags, stderr io.Writer) error {
	log, err := logging.New(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return usageError{err}
	}
	labels, err := parseLabels(f.labels)
	if err != nil {
		return usageError{fmt.Errorf("--labels: %w", err)}
	}
	cfg := agent.Config{
		RaftAddress:      f.raftAddress,
		ListenAddress:    f.listenAddress,
		APIAddress:       f.apiAddress,
		DataDir:          f.dataDir,
		DrummerEndpoints: []string{f.endpoints},
		Labels:           labels,
		RTTMillisecond:   f.rtt,
		Logger:           log,
		Version:          version,
		CAFile:           f.tls.CAFile,
		CertFile:         f.tls.CertFile,
		KeyFile:          f.tls.KeyFile,
		Insecure:         f.tls.Insecure,
	}
	if err := f.testHooks(&cfg); err != nil {
		return usageError{err}
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, f.startTimeout)
	defer cancel()
	var dbg *debugserver.Server
	if f.debugAddress != "" {
		tcfg, mw, err := f.tls.HTTP(auth.RoleNodehost, auth.DebugRoutes, log)
		if err != nil {
			return usageError{fmt.Errorf("--debug-address: %w", err)}
		}
		if dbg, err = debugserver.Start(debugserver.Options{Address: f.debugAddress, TLS: tcfg, Middleware: mw, Logger: log}); err != nil {
			return usageError{err}
		}
	}
	defer dbg.Close()
	a, err := agent.New(sctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}
