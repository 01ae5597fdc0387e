// Package cli implements drummercmd, the operator command-line tool of
// Drummer. Everything is reachable through Main, which takes its
// environment as arguments so that tests can run commands in-process.
//
// Commands are nouns with verbs (host list, shard create, ...), built by the
// new*Cmd functions of this package and assembled in newRootCmd. To add a
// command group (e.g. kv get|put|delete|cas), write a newKVCmd(a *app) in
// its own file and add it to the list in newRootCmd; use a.drummer() for the
// leader-following client, a.ctx() for the per-command timeout,
// a.rpcError for RPC failures and a.printJSON / table for output.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/auth"
)

// Defaults of the global flags. The endpoints are those of `drummer dev`.
const (
	DefaultEndpoints      = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
	DefaultDialTimeout    = 2 * time.Second
	DefaultCommandTimeout = 10 * time.Second
)

// Environment variables read when the matching flag is not given.
const (
	EnvEndpoints      = "DRUMMER_ENDPOINTS"
	EnvDialTimeout    = "DRUMMER_DIAL_TIMEOUT"
	EnvCommandTimeout = "DRUMMER_COMMAND_TIMEOUT"
	EnvCAFile         = "DRUMMER_CA_FILE"
	EnvCertFile       = "DRUMMER_CERT_FILE"
	EnvKeyFile        = "DRUMMER_KEY_FILE"
	EnvInsecure       = "DRUMMER_INSECURE"
)

// Main runs drummercmd with args (without the program name) and returns the
// process exit code. Data goes to stdout, errors and warnings to stderr.
// env looks up environment variables (os.Getenv; nil means none).
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer, env func(string) string) int {
	return run(args, options{
		stdin:      stdin,
		stdout:     stdout,
		stderr:     stderr,
		env:        env,
		isTerminal: isTerminal,
		now:        time.Now,
	})
}

// options are Main's inputs plus the seams tests use.
type options struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	env            func(string) string
	// isTerminal reports whether a stream (stdin, stdout or stderr) is a
	// terminal: progress is rewritten in place and prompts are shown only
	// then.
	isTerminal func(stream any) bool
	now        func() time.Time
}

// isTerminal is the real terminal test: an *os.File that is a TTY.
func isTerminal(stream any) bool {
	f, ok := stream.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// app holds the state of one drummercmd invocation.
type app struct {
	options

	// Global flags.
	endpoints      string
	dialTimeout    time.Duration
	commandTimeout time.Duration
	output         string
	tls            auth.Files
	insecure       bool

	// started is set when a command's own code starts running: errors
	// before that come from cobra (unknown command, bad flag, bad number of
	// arguments) and are usage errors.
	started bool

	root *cobra.Command
	conn *client.Conn
	src  *auth.Source
}

func run(args []string, opts options) int {
	if opts.env == nil {
		opts.env = func(string) string { return "" }
	}
	if opts.stdin == nil {
		opts.stdin = strings.NewReader("")
	}
	if opts.isTerminal == nil {
		opts.isTerminal = func(any) bool { return false }
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	a := &app{options: opts}
	root := newRootCmd(a)
	root.SetArgs(args)
	root.SetIn(opts.stdin)
	root.SetOut(opts.stdout)
	root.SetErr(opts.stderr)

	cmd, err := root.ExecuteC()
	if a.conn != nil {
		_ = a.conn.Close()
	}
	if err == nil {
		return ExitOK
	}
	var ce *cliError
	if !errors.As(err, &ce) && !a.started {
		// cobra's own errors: unknown command or flag, wrong arguments.
		err = &cliError{code: ExitUsage, err: err}
	}
	code := exitCode(err)
	fmt.Fprintf(a.stderr, "Error: %s\n", strings.TrimRight(err.Error(), "\n"))
	if errors.As(err, &ce) && ce.hint != "" {
		for _, l := range strings.Split(ce.hint, "\n") {
			fmt.Fprintf(a.stderr, "Hint: %s\n", l)
		}
	}
	if code == ExitUsage {
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

const rootLong = `drummercmd operates a Drummer deployment: it defines shards, inspects and
drains nodehosts, follows repairs and changes runtime settings.

Every command talks to the scheduler leader among the drummer servers given
by --endpoints (or DRUMMER_ENDPOINTS); any server of the deployment will do,
calls are redirected to the leader.

Output is a table by default; -o json (alias -w json) prints stable
snake_case JSON for scripts. Data goes to stdout, errors to stderr.

` + exitCodesHelp

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:           "drummercmd",
		Short:         "Operate a Drummer deployment",
		Long:          rootLong,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRunE,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			switch a.output {
			case "table", "json":
				return nil
			}
			return usageErrorf("invalid output format %q; use -o table or -o json", a.output)
		},
	}
	a.root = root
	root.CompletionOptions.HiddenDefaultCmd = true
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &cliError{code: ExitUsage, err: err}
	})

	pf := root.PersistentFlags()
	pf.StringVar(&a.endpoints, "endpoints", DefaultEndpoints,
		"comma-separated drummer server gRPC endpoints (env "+EnvEndpoints+")")
	pf.DurationVar(&a.dialTimeout, "dial-timeout", DefaultDialTimeout,
		"timeout for connecting to one endpoint (env "+EnvDialTimeout+")")
	pf.DurationVar(&a.commandTimeout, "command-timeout", DefaultCommandTimeout,
		"timeout for one request, including finding the leader (env "+EnvCommandTimeout+")")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	pf.StringVarP(&a.output, "write-out", "w", "table", "alias of --output (etcdctl style)")
	pf.StringVar(&a.tls.CAFile, "ca-file", "", "CA certificates of the deployment, ca.crt (env "+EnvCAFile+")")
	pf.StringVar(&a.tls.CertFile, "cert-file", "", "your client certificate; its role decides what you may do (env "+EnvCertFile+")")
	pf.StringVar(&a.tls.KeyFile, "key-file", "", "your client certificate's key (env "+EnvKeyFile+")")
	pf.BoolVar(&a.insecure, "insecure", false, "connect without TLS, to a deployment started with --insecure (env "+EnvInsecure+"=true)")

	root.AddCommand(
		newHostCmd(a),
		newShardCmd(a),
		newRegionsCmd(a),
		newLaunchCmd(a),
		newInfoCmd(a),
		newMemberCmd(a),
		newEndpointCmd(a),
		newConfigCmd(a),
		newRepairCmd(a),
		newBalanceCmd(a),
		newWaitCmd(a),
		newVersionCmd(a),
		newKVCmd(a),
	)
	return root
}

// groupRunE is the RunE of commands that only group subcommands: without
// arguments they print their help; an unknown subcommand is a usage error
// (cobra would otherwise print help and exit 0).
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
	}
	return &cliError{code: ExitUsage, err: errors.New(msg)}
}

func newGroupCmd(use, short, long string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
}

// action wraps a command's RunE: it marks the command as started (so its
// errors are not taken for cobra usage errors).
func (a *app) action(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.started = true
		return f(cmd, args)
	}
}

// args wraps a cobra argument validator so that its error names the
// expected arguments.
func args(v cobra.PositionalArgs, want string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return usageErrorf("%s: %v; want %s", cmd.CommandPath(), err, want)
		}
		return nil
	}
}

func (a *app) jsonOutput() bool { return a.output == "json" }

func (a *app) printJSON(v any) error { return writeJSON(a.stdout, v) }

// warnf prints a warning on stderr.
func (a *app) warnf(format string, args ...any) {
	fmt.Fprintf(a.stderr, "Warning: "+format+"\n", args...)
}

// endpointList returns the endpoints in effect (flag, then environment,
// then default), unchecked.
func (a *app) endpointList() []string {
	var out []string
	for _, e := range strings.Split(a.effectiveEndpoints(), ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// flagChanged reports whether a global flag was given on the command line.
func (a *app) flagChanged(name string) bool {
	return a.root != nil && a.root.PersistentFlags().Changed(name)
}

func (a *app) effectiveEndpoints() string {
	if !a.flagChanged("endpoints") {
		if e := strings.TrimSpace(a.env(EnvEndpoints)); e != "" {
			return e
		}
	}
	return a.endpoints
}

// settle applies the environment to flags that were not given and checks
// the connection settings. Called before the first RPC, so that help and
// version work whatever the environment holds.
func (a *app) settle() error {
	for _, d := range []struct {
		flag, env string
		v         *time.Duration
	}{
		{"dial-timeout", EnvDialTimeout, &a.dialTimeout},
		{"command-timeout", EnvCommandTimeout, &a.commandTimeout},
	} {
		if !a.flagChanged(d.flag) {
			if s := strings.TrimSpace(a.env(d.env)); s != "" {
				v, err := parseDuration(d.env, s)
				if err != nil {
					return usageErrorf("%v", err)
				}
				*d.v = v
			}
		}
		if *d.v <= 0 {
			return usageErrorf("--%s must be positive, e.g. --%s=5s", d.flag, d.flag)
		}
	}
	for _, f := range []struct {
		flag, env string
		v         *string
	}{
		{"ca-file", EnvCAFile, &a.tls.CAFile},
		{"cert-file", EnvCertFile, &a.tls.CertFile},
		{"key-file", EnvKeyFile, &a.tls.KeyFile},
	} {
		if !a.flagChanged(f.flag) {
			if s := strings.TrimSpace(a.env(f.env)); s != "" {
				*f.v = s
			}
		}
	}
	if !a.flagChanged("insecure") {
		if s := strings.TrimSpace(a.env(EnvInsecure)); s != "" {
			v, err := strconv.ParseBool(s)
			if err != nil {
				return usageErrorf("%s=%q: want true or false", EnvInsecure, s)
			}
			a.insecure = v
		}
	}
	if err := auth.CheckMode(a.tls, a.insecure); err != nil {
		return usageErrorf("%v", err)
	}
	return nil
}

// security is the connection security in effect (after settle).
func (a *app) security() client.Security {
	return client.Security{CAFile: a.tls.CAFile, CertFile: a.tls.CertFile, KeyFile: a.tls.KeyFile, Insecure: a.insecure}
}

// dialCredentials secure a direct connection to one drummer server.
func (a *app) dialCredentials() (grpc.DialOption, error) {
	if a.insecure {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	if a.src == nil {
		src, err := auth.NewSource(auth.SourceOptions{Files: a.tls})
		if err != nil {
			return nil, usageErrorf("%v", err)
		}
		a.src = src
	}
	return grpc.WithTransportCredentials(a.src.ClientCredentials(auth.RoleServer)), nil
}

// drummer returns the leader-following Drummer client, creating the
// connection on first use.
func (a *app) drummer() (drummerpb.DrummerClient, error) {
	if a.conn != nil {
		return a.conn.Drummer(), nil
	}
	if err := a.settle(); err != nil {
		return nil, err
	}
	eps, err := splitEndpoints(a.effectiveEndpoints())
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	conn, err := client.NewConn(eps, client.Options{DialTimeout: a.dialTimeout, Security: a.security()})
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	a.conn = conn
	return conn.Drummer(), nil
}

// ctx returns the context for one request: bounded by --command-timeout.
func (a *app) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), a.commandTimeout)
}
