// Command drummer runs a Drummer server, or with `drummer dev` a whole
// local deployment to play with (three drummer servers in this process, a
// few nodehosts as child processes).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/dashboard"
	"github.com/drummerhq/drummer/internal/debugserver"
	"github.com/drummerhq/drummer/internal/flagconf"
	"github.com/drummerhq/drummer/internal/logging"
	"github.com/drummerhq/drummer/internal/metrics"
	"github.com/drummerhq/drummer/internal/nodehostcmd"
	"github.com/drummerhq/drummer/internal/tlsflags"
	"github.com/drummerhq/drummer/internal/web"
	"github.com/drummerhq/drummer/server"
)

// startDebug starts the --debug-address listener with the program's TLS
// settings (HTTPS and role checks, or plaintext with --insecure).
func startDebug(addr string, f tlsflags.Flags, role auth.Role, log *slog.Logger) (*debugserver.Server, error) {
	if addr == "" {
		return nil, nil
	}
	cfg, mw, err := f.HTTP(role, auth.DebugRoutes, log)
	if err != nil {
		return nil, fmt.Errorf("--debug-address: %w", err)
	}
	return debugserver.Start(debugserver.Options{Address: addr, TLS: cfg, Middleware: mw, Logger: log})
}

// startHTTP starts the --http-address listener of server s.
func startHTTP(addr string, f tlsflags.Flags, s *server.Server, m *metrics.Drummer, log *slog.Logger) (*web.Server, error) {
	return web.StartDrummer(web.DrummerOptions{Address: addr, Security: f, Server: s, Metrics: m, Logger: log,
		Dashboard: dashboard.Handler(dashboard.Options{Logger: log})})
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type usageError struct{ error }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	root := rootCmd(stdout, stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "drummer:", err)
	var ee exitError
	if errors.As(err, &ee) && ee.code != exitUsage {
		return ee.code
	}
	var ue usageError
	if errors.As(err, &ue) || isFlagError(err) || nodehostcmd.IsUsage(err) || errors.As(err, &ee) {
		fmt.Fprintln(stderr, "Run 'drummer --help' for usage.")
		return exitUsage
	}
	return exitFailure
}

func isFlagError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown flag", "unknown shorthand", "flag needs an argument", "invalid argument", "unknown command", "accepts "} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

type serverFlags struct {
	id             uint64
	raftAddress    string
	grpcAddress    string
	dataDir        string
	initialMembers string
	join           bool
	config         string
	rtt            uint64
	logLevel       string
	logFormat      string
	debugAddress   string
	httpAddress    string
	tls            tlsflags.Flags
}

func rootCmd(stdout, stderr io.Writer) *cobra.Command {
	var f serverFlags
	cmd := &cobra.Command{
		Use:   "drummer",
		Short: "Drummer server: the control plane of a fleet of dragonboat NodeHosts",
		Long: `drummer runs one Drummer server. Three (or five) servers keep a Raft-replicated
DB of shards, hosts and decisions; the leader places shards on nodehosts,
notices dead hosts and replicas, and repairs them.

Start the initial servers with the same --initial-members, e.g.:

  drummer --id 1 --raft-address 127.0.0.1:7111 --grpc-address 127.0.0.1:7101 \
    --data-dir /var/lib/drummer1 \
    --initial-members 1=127.0.0.1:7111,2=127.0.0.1:7112,3=127.0.0.1:7113

A server added later with 'drummercmd member add' is started with --join.
Every flag can also be set in a YAML file given with --config (keys are the
flag names); flags on the command line win.

'drummer dev' runs a whole local deployment to play with.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServer(cmd, &f, stderr)
		},
	}
	fs := cmd.Flags()
	fs.Uint64Var(&f.id, "id", 0, "this server's replica ID in the drummer DB shard (>= 1)")
	fs.StringVar(&f.raftAddress, "raft-address", "", "host:port for the DB shard's Raft traffic")
	fs.StringVar(&f.grpcAddress, "grpc-address", "", "host:port of the Drummer gRPC API")
	fs.StringVar(&f.dataDir, "data-dir", "", "directory for this server's data")
	fs.StringVar(&f.initialMembers, "initial-members", "", `initial servers' raft addresses: "1=host:port,2=host:port,3=host:port"`)
	fs.BoolVar(&f.join, "join", false, "start a server added with 'drummercmd member add'")
	fs.StringVar(&f.config, "config", "", "YAML file setting any of these flags")
	fs.Uint64Var(&f.rtt, "rtt", 50, "Raft tick in milliseconds")
	fs.StringVar(&f.debugAddress, "debug-address", "", "serve /debug/pprof/ and /metrics on this host:port (off by default; HTTPS with mutual TLS)")
	fs.StringVar(&f.httpAddress, "http-address", "", "serve the dashboard, /api/v1 (JSON), /metrics, /livez and /readyz on this host:port (off by default; HTTPS with mutual TLS or web tokens)")
	f.tls.Register(fs)
	addLogFlags(fs, &f.logLevel, &f.logFormat)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	cmd.AddCommand(devCmd(stdout, stderr), versionCmd(stdout), certCmd(stdout, stderr))
	return cmd
}

func addLogFlags(fs *pflag.FlagSet, level, format *string) {
	fs.StringVar(level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(format, "log-format", "text", "text or json")
}

func versionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run:   func(*cobra.Command, []string) { fmt.Fprintln(stdout, "drummer", version) },
	}
}

func runServer(cmd *cobra.Command, f *serverFlags, stderr io.Writer) error {
	if f.config != "" {
		if err := flagconf.Apply(cmd.Flags(), f.config, "config"); err != nil {
			return usageError{err}
		}
	}
	log, err := logging.New(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return usageError{err}
	}
	members, err := server.ParseMembers(f.initialMembers)
	if err != nil {
		return usageError{fmt.Errorf("--initial-members: %w", err)}
	}
	cfg := server.Config{
		ReplicaID:      f.id,
		RaftAddress:    f.raftAddress,
		GRPCAddress:    f.grpcAddress,
		DataDir:        f.dataDir,
		InitialMembers: members,
		Join:           f.join,
		RTTMillisecond: f.rtt,
		Logger:         log,
		Version:        version,
		CAFile:         f.tls.CAFile,
		CertFile:       f.tls.CertFile,
		KeyFile:        f.tls.KeyFile,
		Insecure:       f.tls.Insecure,
	}
	m := metrics.NewDrummer(nil)
	cfg.Metrics = m
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dbg, err := startDebug(f.debugAddress, f.tls, auth.RoleServer, log)
	if err != nil {
		return usageError{err}
	}
	defer dbg.Close()
	s, err := server.New(cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	m.SetSource(s)
	httpSrv, err := startHTTP(f.httpAddress, f.tls, s, m, log)
	if err != nil {
		return usageError{err}
	}
	defer httpSrv.Close()
	if httpSrv != nil {
		log.Info("HTTP listener started", "url", httpSrv.URL())
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case <-s.Removed():
		log.Warn("this server was removed from the drummer cluster; exiting")
	}
	return nil
}
