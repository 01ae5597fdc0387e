// Package nodehostcmd is the nodehost command: its flags, their checks,
// the agent.Config they make and running the agent until SIGINT or
// SIGTERM. cmd/nodehost is a thin wrapper around it, and `drummer dev`
// re-executes itself as the hidden `drummer dev nodehost` with the same
// command, so a playground nodehost runs exactly like a deployed one.
package nodehostcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/drummerhq/drummer/agent"
	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/debugserver"
	"github.com/drummerhq/drummer/internal/flagconf"
	"github.com/drummerhq/drummer/internal/logging"
	"github.com/drummerhq/drummer/internal/metrics"
	"github.com/drummerhq/drummer/internal/tlsflags"
	"github.com/drummerhq/drummer/internal/web"
)

// UsageError marks an error in the flags or the configuration file: the
// caller exits with the usage code (2).
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// IsUsage reports whether err is a usage error: bad flags, values or
// configuration file.
func IsUsage(err error) bool {
	var ue UsageError
	if errors.As(err, &ue) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "unknown flag") || strings.Contains(msg, "unknown shorthand") ||
		strings.Contains(msg, "flag needs an argument") || strings.Contains(msg, "invalid argument") ||
		strings.Contains(msg, "unknown command")
}

// Hooks, when set, adds flags to the command and returns a function that
// adjusts the agent configuration before it starts (test builds use it for
// fault injection).
type Hooks func(fs *pflag.FlagSet) func(cfg *agent.Config) error

// Options configure the command.
type Options struct {
	// Use is the command's name (default "nodehost").
	Use     string
	Version string
	Hooks   Hooks
	// Stderr receives the logs (default os.Stderr).
	Stderr io.Writer
}

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
	httpAddress   string
	tls           tlsflags.Flags
}

// Command returns the nodehost command.
func Command(opts Options) *cobra.Command {
	if opts.Use == "" {
		opts.Use = "nodehost"
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	var f flags
	var applyHooks func(cfg *agent.Config) error
	cmd := &cobra.Command{
		Use:   opts.Use,
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
					return UsageError{err}
				}
			}
			return serve(&f, opts, applyHooks)
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
	fs.StringVar(&f.httpAddress, "http-address", "", "serve /metrics, /livez and /readyz on this host:port (off by default; HTTPS with mutual TLS or web tokens)")
	f.tls.Register(fs)
	fs.DurationVar(&f.startTimeout, "start-timeout", 5*time.Minute, "how long to wait for a drummer on first start")
	if opts.Hooks != nil {
		applyHooks = opts.Hooks(fs)
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return UsageError{err} })
	return cmd
}

// ParseLabels parses "k=v,k2=v2".
func ParseLabels(s string) (map[string]string, error) {
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

func serve(f *flags, opts Options, hooks func(cfg *agent.Config) error) error {
	log, err := logging.New(opts.Stderr, f.logFormat, f.logLevel)
	if err != nil {
		return UsageError{err}
	}
	labels, err := ParseLabels(f.labels)
	if err != nil {
		return UsageError{fmt.Errorf("--labels: %w", err)}
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
		Version:          opts.Version,
		CAFile:           f.tls.CAFile,
		CertFile:         f.tls.CertFile,
		KeyFile:          f.tls.KeyFile,
		Insecure:         f.tls.Insecure,
	}
	if hooks != nil {
		if err := hooks(&cfg); err != nil {
			return UsageError{err}
		}
	}
	m := metrics.NewNodehost()
	cfg.APIInterceptors = append(cfg.APIInterceptors, m.APIInterceptor())
	cfg.DrummerDialOptions = append(cfg.DrummerDialOptions, grpc.WithChainUnaryInterceptor(m.ReportInterceptor()))
	started := cfg.NodeHostStarted
	cfg.NodeHostStarted = func(nh *dragonboat.NodeHost) {
		m.SetNodeHost(nh)
		if started != nil {
			started(nh)
		}
	}
	if err := cfg.Validate(); err != nil {
		return UsageError{err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, f.startTimeout)
	defer cancel()
	var dbg *debugserver.Server
	if f.debugAddress != "" {
		tcfg, mw, err := f.tls.HTTP(auth.RoleNodehost, auth.DebugRoutes, log)
		if err != nil {
			return UsageError{fmt.Errorf("--debug-address: %w", err)}
		}
		if dbg, err = debugserver.Start(debugserver.Options{Address: f.debugAddress, TLS: tcfg, Middleware: mw, Logger: log}); err != nil {
			return UsageError{err}
		}
	}
	defer dbg.Close()
	var running atomic.Bool
	httpSrv, err := web.StartNodehost(web.NodehostOptions{Address: f.httpAddress, Security: f.tls, Metrics: m, Logger: log,
		Ready: func(context.Context) error {
			if !running.Load() {
				return errors.New("the nodehost is starting (waiting for a drummer server, or restoring its replicas)")
			}
			return nil
		}})
	if err != nil {
		return UsageError{err}
	}
	defer httpSrv.Close()
	a, err := agent.New(sctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()
	running.Store(true)
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}
