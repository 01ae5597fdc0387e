// Package devcluster runs a whole Drummer deployment in one process on
// loopback: three drummer servers and N nodehost agents. It backs the
// in-process tests (internal/itest), and `drummer dev` runs its drummer
// servers with it (its nodehosts are child processes, internal/playground).
package devcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/drummerhq/drummer/agent"
	"github.com/drummerhq/drummer/internal/metrics"
	"github.com/drummerhq/drummer/internal/tlsflags"
	"github.com/drummerhq/drummer/internal/web"
	"github.com/drummerhq/drummer/server"
)

// Options configure a dev cluster.
type Options struct {
	// Nodehosts is the number of in-process nodehost agents (0: none).
	Nodehosts int
	// DataDir keeps state across runs; empty means a temporary directory
	// removed by Close.
	DataDir string
	// Host is the loopback address to bind (default 127.0.0.1).
	Host string
	// BasePort lays out the ports: drummer gRPC BasePort+1..3, drummer
	// Raft BasePort+11..13, nodehost Raft BasePort+100+i, nodehost API
	// BasePort+200+i. Default 7100.
	BasePort int
	// RTTMillisecond for every NodeHost (default 50).
	RTTMillisecond uint64
	Logger         *slog.Logger
	// Apps for the nodehosts (default: the built-in kv app).
	Apps func() *agent.Registry
	// CertsDir holds ca.crt, drummer-N.crt/key for server N and
	// nodehost-N.crt/key for agent N (bound to its raft address); every
	// listener then uses mutual TLS. Without it, Insecure is required.
	CertsDir string
	// Insecure runs every server and agent without TLS.
	Insecure bool
	// TickInterval is the servers' planning tick (default: the server's).
	TickInterval time.Duration
	// HTTP gives server i an --http-address listener on BasePort+20+i
	// (metrics, /api/v1, the dashboard).
	HTTP bool
	// Dashboard, when set with HTTP, serves the dashboard at /
	// (internal/dashboard; a hook so that this package does not depend
	// on it).
	Dashboard func(grpc.ClientConnInterface, func() string) (http.Handler, error)
}

// tls returns the TLS files of certificate name (none when insecure).
func (o Options) tls(name string) (ca, cert, key string) {
	if o.CertsDir == "" {
		return "", "", ""
	}
	return filepath.Join(o.CertsDir, "ca.crt"), filepath.Join(o.CertsDir, name+".crt"), filepath.Join(o.CertsDir, name+".key")
}

// Cluster is a running dev cluster.
type Cluster struct {
	opts     Options
	tmp      bool
	Servers  []*server.Server
	Agents   []*agent.Agent
	mu       sync.Mutex
	closed   bool
	DataDir  string
	Drummers []string // gRPC endpoints
	// Web are the servers' HTTP listeners (with Options.HTTP), and
	// Metrics their metrics.
	Web     []*web.Server
	Metrics []*metrics.Drummer
}

// HTTPAddr is the --http-address of server i (1-based).
func (o Options) HTTPAddr(i int) string { return fmt.Sprintf("%s:%d", o.Host, o.BasePort+20+i) }

// URLs are the base URLs of the servers' HTTP listeners.
func (c *Cluster) URLs() []string {
	var out []string
	for _, w := range c.Web {
		out = append(out, w.URL())
	}
	return out
}

// Ports returns (drummer gRPC, drummer Raft) for server i (1-based) and
// (nodehost Raft, nodehost API) for agent i.
func (o Options) serverAddrs(i int) (grpcAddr, raftAddr string) {
	return fmt.Sprintf("%s:%d", o.Host, o.BasePort+i), fmt.Sprintf("%s:%d", o.Host, o.BasePort+10+i)
}

func (o Options) agentAddrs(i int) (raftAddr, apiAddr string) {
	return NodehostAddrs(o.Host, o.BasePort, i)
}

// NodehostAddrs returns the Raft and API addresses of nodehost i (1-based,
// at most 99) in the port layout of BasePort.
func NodehostAddrs(host string, basePort, i int) (raftAddr, apiAddr string) {
	return fmt.Sprintf("%s:%d", host, basePort+100+i), fmt.Sprintf("%s:%d", host, basePort+200+i)
}

func (o *Options) setDefaults() {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.BasePort == 0 {
		o.BasePort = 7100
	}
	if o.RTTMillisecond == 0 {
		o.RTTMillisecond = 50
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// checkPorts fails early, with a useful message, when a port is taken.
func (o Options) checkPorts() error {
	var addrs []string
	for i := 1; i <= 3; i++ {
		g, r := o.serverAddrs(i)
		addrs = append(addrs, g, r)
	}
	for i := 1; i <= o.Nodehosts; i++ {
		r, a := o.agentAddrs(i)
		addrs = append(addrs, r, a)
	}
	if o.HTTP {
		for i := 1; i <= 3; i++ {
			addrs = append(addrs, o.HTTPAddr(i))
		}
	}
	return CheckPorts(addrs...)
}

// CheckPorts fails, saying which and what to do, when one of addrs cannot
// be listened on.
func CheckPorts(addrs ...string) error {
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("port %s is in use (%v); stop what uses it or choose other ports with --base-port", a, err)
		}
		l.Close()
	}
	return nil
}

// Start brings the cluster up. It returns once every server and agent runs
// (agents learn the deployment from the servers, which needs a leader).
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	opts.setDefaults()
	if opts.Nodehosts > 99 {
		return nil, errors.New("at most 99 nodehosts")
	}
	if err := opts.checkPorts(); err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, DataDir: opts.DataDir}
	if c.DataDir == "" {
		dir, err := os.MkdirTemp("", "drummer-dev-")
		if err != nil {
			return nil, err
		}
		c.DataDir, c.tmp = dir, true
	}
	members := map[uint64]string{}
	for i := 1; i <= 3; i++ {
		g, r := opts.serverAddrs(i)
		members[uint64(i)] = r
		c.Drummers = append(c.Drummers, g)
	}
	for i := 1; i <= 3; i++ {
		g, r := opts.serverAddrs(i)
		cfg := server.Config{
			ReplicaID:      uint64(i),
			RaftAddress:    r,
			GRPCAddress:    g,
			DataDir:        filepath.Join(c.DataDir, fmt.Sprintf("drummer-%d", i)),
			InitialMembers: members,
			RTTMillisecond: opts.RTTMillisecond,
			Logger:         opts.Logger,
			Insecure:       opts.Insecure,
			TickInterval:   opts.TickInterval,
		}
		cfg.CAFile, cfg.CertFile, cfg.KeyFile = opts.tls(fmt.Sprintf("drummer-%d", i))
		m := metrics.NewDrummer(nil)
		cfg.Metrics = m
		s, err := server.New(cfg)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("drummer server %d: %w", i, err)
		}
		m.SetSource(s)
		c.Servers = append(c.Servers, s)
		c.Metrics = append(c.Metrics, m)
		if opts.HTTP {
			sec := tlsflags.Flags{Insecure: opts.Insecure}
			sec.CAFile, sec.CertFile, sec.KeyFile = cfg.CAFile, cfg.CertFile, cfg.KeyFile
			w, err := web.StartDrummer(web.DrummerOptions{Address: opts.HTTPAddr(i), Security: sec, Server: s, Metrics: m,
				Dashboard: opts.Dashboard, Logger: opts.Logger})
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("drummer server %d: %w", i, err)
			}
			c.Web = append(c.Web, w)
		}
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	agents := make([]*agent.Agent, opts.Nodehosts)
	for i := 1; i <= opts.Nodehosts; i++ {
		cfg := c.AgentConfig(i - 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ag, err := agent.New(ctx, cfg)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("nodehost %d: %w", i, err))
				return
			}
			agents[i-1] = ag
		}()
	}
	wg.Wait()
	for _, a := range agents {
		if a != nil {
			c.Agents = append(c.Agents, a)
		}
	}
	if len(errs) > 0 {
		c.Close()
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// Close stops every agent and server and removes a temporary data dir.
func (c *Cluster) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range c.Agents {
		wg.Add(1)
		go func() { defer wg.Done(); a.Close() }()
	}
	wg.Wait()
	for _, w := range c.Web {
		w.Close()
	}
	for _, s := range c.Servers {
		wg.Add(1)
		go func() { defer wg.Done(); s.Close() }()
	}
	wg.Wait()
	if c.tmp {
		_ = os.RemoveAll(c.DataDir)
	}
}

// WaitLeader waits until one server holds the scheduler epoch.
func (c *Cluster) WaitLeader(ctx context.Context) (*server.Server, error) {
	for {
		for _, s := range c.Servers {
			if s.IsLeader() {
				return s, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no drummer leader: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// AgentAddrs returns the Raft and API addresses of agent i (0-based).
func (c *Cluster) AgentAddrs(i int) (raftAddr, apiAddr string) { return c.opts.agentAddrs(i + 1) }

// AgentConfig returns the configuration agent i (0-based) was started with,
// to restart it.
func (c *Cluster) AgentConfig(i int) agent.Config {
	r, a := c.opts.agentAddrs(i + 1)
	cfg := agent.Config{
		RaftAddress:      r,
		APIAddress:       a,
		DataDir:          filepath.Join(c.DataDir, fmt.Sprintf("nodehost-%d", i+1)),
		DrummerEndpoints: c.Drummers,
		Labels:           map[string]string{"region": fmt.Sprintf("r%d", i%3+1)},
		RTTMillisecond:   c.opts.RTTMillisecond,
		Logger:           c.opts.Logger,
		Insecure:         c.opts.Insecure,
	}
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = c.opts.tls(fmt.Sprintf("nodehost-%d", i+1))
	if c.opts.Apps != nil {
		cfg.Apps = c.opts.Apps()
	}
	return cfg
}
