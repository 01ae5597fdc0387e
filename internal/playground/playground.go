// Package playground is `drummer dev`: a local deployment to break and
// mend. Three drummer servers run in the dev's process (internal/devcluster);
// every nodehost is a child process, the same binary re-executed as the
// hidden `drummer dev nodehost` (internal/nodehostcmd), in its own process
// group and killed with the dev if the dev dies (internal/childproc). A
// control socket (internal/devctl) lets `drummer dev kill|pause|resume|
// restart|wipe|add|status` act on the hosts by number, and each action
// says what Drummer will do next, from the deployment's real runtime
// configuration and replica placement.
package playground

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/childproc"
	"github.com/drummerhq/drummer/internal/devcluster"
	"github.com/drummerhq/drummer/internal/devctl"
	"github.com/drummerhq/drummer/internal/pki"
)

// Liveness settings a new playground starts with: short, so that a killed
// host is repaired within seconds (a deployment's defaults are 1s, 5s and
// 30s). They are ordinary runtime settings: `drummercmd config set`
// changes them.
var devConfig = map[string]string{
	"report_interval": "500ms",
	"suspect_timeout": "2s",
	"dead_timeout":    "6s",
}

// Options configure a playground.
type Options struct {
	// Nodehosts is the number of nodehosts to run; a resumed data
	// directory keeps at least the ones it had.
	Nodehosts int
	// Shards is the number of demo kv shards defined on first start.
	Shards int
	// DataDir keeps the state across runs; empty means a temporary
	// directory removed by Close.
	DataDir  string
	BasePort int
	// NodehostCommand is the program and leading arguments that run one
	// nodehost with nodehostcmd's flags appended, e.g.
	// {"/path/to/drummer", "dev", "nodehost"}.
	NodehostCommand []string
	// NodehostLogLevel and NodehostLogFormat are passed to the nodehosts
	// (their logs go to files in the data directory).
	NodehostLogLevel  string
	NodehostLogFormat string
	// Commands spell the programs in printed hints.
	Commands Commands
	// Progress receives start-up messages (default: discarded).
	Progress io.Writer
	Logger   *slog.Logger
	// Insecure runs everything without TLS; by default the playground
	// makes its own CA and certificates in DataDir/certs.
	Insecure bool
	// Dashboard serves the dashboard on the servers' HTTP listeners
	// (devcluster.Options.Dashboard).
	Dashboard func(grpc.ClientConnInterface, func() string) (http.Handler, error)
}

// Playground is a running `drummer dev`.
type Playground struct {
	opts    Options
	tmp     bool
	DataDir string
	cluster *devcluster.Cluster
	conn    *client.Conn
	d       drummerpb.DrummerClient
	ctl     *devctl.Server
	pointer string
	certs   string // DataDir/certs; "" when insecure

	// actMu serializes the actions (kill, restart, ...); status reads
	// need only mu.
	actMu sync.Mutex
	mu    sync.Mutex
	hosts []*host

	// ctx lives until Close: the control socket's requests run in it.
	ctx    context.Context
	cancel context.CancelFunc

	closeOnce sync.Once
}

type host struct {
	n       int
	region  string
	raft    string
	api     string
	http    string // --http-address (metrics)
	dataDir string
	proc    *childproc.Process

	// Guarded by Playground.mu.
	ids       []string  // drummer host IDs this host had, newest last
	pausedAt  time.Time // zero unless paused by the playground
	stoppedAt time.Time // when the playground stopped it (kill), zero while running
	stoppedBy string    // "killed" when the playground stopped it
}

var nodehostDir = regexp.MustCompile(`^nodehost-([0-9]+)$`)

// existingHosts returns the highest N of the nodehost-N directories in dir.
func existingHosts(dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	most := 0
	for _, e := range ents {
		if m := nodehostDir.FindStringSubmatch(e.Name()); m != nil && e.IsDir() {
			if n, err := strconv.Atoi(m[1]); err == nil && n <= devctl.MaxHost {
				most = max(most, n)
			}
		}
	}
	return most
}

// Start brings up the servers and the nodehost processes and serves the
// control socket until Close; ctx bounds the start only. Bootstrap then
// waits for the hosts and launches the demo shards.
func Start(ctx context.Context, opts Options) (p *Playground, err error) {
	if len(opts.NodehostCommand) == 0 {
		return nil, errors.New("playground: no nodehost command")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	p = &Playground{opts: opts}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if opts.DataDir == "" {
		dir, err := os.MkdirTemp("", "drummer-dev-data-")
		if err != nil {
			return nil, err
		}
		p.DataDir, p.tmp = dir, true
	} else {
		dir, err := filepath.Abs(opts.DataDir)
		if err != nil {
			return nil, fmt.Errorf("--data-dir: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("--data-dir: %w", err)
		}
		p.DataDir = dir
	}
	if err := p.ensureCerts(); err != nil {
		return nil, err
	}
	n := max(opts.Nodehosts, existingHosts(p.DataDir))
	fmt.Fprintf(opts.Progress, "Starting 3 drummer servers and %d nodehosts on 127.0.0.1...\n", n)
	var addrs []string
	for i := 1; i <= n; i++ {
		h, err := p.newHost(i)
		if err != nil {
			return nil, err
		}
		p.hosts = append(p.hosts, h)
		addrs = append(addrs, h.raft, h.api, h.http)
	}
	// A second dev on the same directory fails here, before any port is
	// touched.
	if p.ctl, err = devctl.Listen(p.DataDir, opts.Logger); err != nil {
		return nil, err
	}
	if err := devcluster.CheckPorts(addrs...); err != nil {
		return nil, err
	}
	if p.cluster, err = devcluster.Start(ctx, devcluster.Options{DataDir: p.DataDir, BasePort: opts.BasePort, Logger: opts.Logger,
		CertsDir: p.certs, Insecure: opts.Insecure, HTTP: true, Dashboard: opts.Dashboard}); err != nil {
		return nil, err
	}
	if p.conn, err = client.NewConn(p.cluster.Drummers, client.Options{Security: p.Security("admin")}); err != nil {
		return nil, err
	}
	p.d = p.conn.Drummer()
	for _, h := range p.hosts {
		if err := h.proc.Start(); err != nil {
			return nil, err
		}
	}
	p.ctl.Start(p.ctx, p.handle)
	if p.pointer, err = devctl.Publish(p.DataDir); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Playground) newHost(n int) (*host, error) {
	raft, api := devcluster.NodehostAddrs("127.0.0.1", p.opts.BasePort, n)
	if !p.opts.Insecure {
		if err := p.ensureCert(pki.Request{Name: fmt.Sprintf("nodehost-%d", n), Role: auth.RoleNodehost, RaftAddress: raft}); err != nil {
			return nil, err
		}
	}
	h := &host{
		n:       n,
		region:  fmt.Sprintf("r%d", (n-1)%3+1),
		raft:    raft,
		api:     api,
		http:    fmt.Sprintf("127.0.0.1:%d", p.opts.BasePort+300+n),
		dataDir: filepath.Join(p.DataDir, fmt.Sprintf("nodehost-%d", n)),
	}
	h.proc = &childproc.Process{
		Name:    fmt.Sprintf("host %d", n),
		Path:    p.opts.NodehostCommand[0],
		Args:    p.nodehostArgs(h),
		LogPath: filepath.Join(p.DataDir, fmt.Sprintf("nodehost-%d.log", n)),
	}
	return h, nil
}

// nodehostArgs are the command line of host h: the one place that knows
// what every playground nodehost is given (credentials or other options
// every nodehost needs belong here).
func (p *Playground) nodehostArgs(h *host) []string {
	args := append([]string(nil), p.opts.NodehostCommand[1:]...)
	args = append(args,
		"--raft-address", h.raft,
		"--api-address", h.api,
		"--http-address", h.http,
		"--drummer-endpoints", strings.Join(p.drummerEndpoints(), ","),
		"--data-dir", h.dataDir,
		"--labels", "region="+h.region,
		"--rtt", "50",
		"--log-level", orDefault(p.opts.NodehostLogLevel, "info"),
		"--log-format", orDefault(p.opts.NodehostLogFormat, "text"),
	)
	return append(args, p.tlsArgs(fmt.Sprintf("nodehost-%d", h.n))...)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// drummerEndpoints are the drummer servers' gRPC addresses (known before
// they start: the port layout fixes them).
func (p *Playground) drummerEndpoints() []string {
	var eps []string
	for i := 1; i <= 3; i++ {
		eps = append(eps, fmt.Sprintf("127.0.0.1:%d", p.opts.BasePort+i))
	}
	return eps
}

// Close stops the nodehosts (SIGTERM, SIGKILL after 10 s), then the
// servers, removes the control socket and a temporary data directory.
func (p *Playground) Close() {
	p.closeOnce.Do(func() {
		p.cancel()
		if p.ctl != nil {
			p.ctl.Close()
		}
		if p.pointer != "" {
			devctl.Unpublish(p.DataDir)
		}
		p.mu.Lock()
		hosts := append([]*host(nil), p.hosts...)
		p.mu.Unlock()
		var wg sync.WaitGroup
		for _, h := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := h.proc.Stop(10 * time.Second); err != nil {
					p.opts.Logger.Warn("stopping nodehost", "host", h.n, "err", err)
				}
			}()
		}
		wg.Wait()
		if p.conn != nil {
			p.conn.Close()
		}
		if p.cluster != nil {
			p.cluster.Close()
		}
		if p.tmp {
			_ = os.RemoveAll(p.DataDir)
		}
	})
}

// Bootstrap waits until every nodehost has registered and, on a fresh
// deployment, sets the short dev liveness timeouts, defines the demo
// shards and launches them; then it waits (within ctx) for every shard to
// be healthy. Progress goes to w.
func (p *Playground) Bootstrap(ctx context.Context, w io.Writer) error {
	n := len(p.snapshotHosts())
	if err := p.waitRegistered(ctx, n); err != nil {
		return err
	}
	info, err := p.d.GetClusterInfo(ctx, &drummerpb.GetClusterInfoRequest{})
	if err != nil {
		return fmt.Errorf("cluster info: %w", err)
	}
	if !info.Launched {
		if _, err := p.d.SetConfig(ctx, &drummerpb.SetConfigRequest{Values: devConfig}); err != nil {
			return fmt.Errorf("set dev liveness timeouts: %w", err)
		}
	}
	if info.Shards == 0 && p.opts.Shards > 0 {
		replicas := uint32(min(3, n))
		if _, err := p.d.CreateShards(ctx, &drummerpb.CreateShardsRequest{FirstShardId: 1, Count: uint64(p.opts.Shards), Replicas: replicas, App: "kv"}); err != nil {
			return fmt.Errorf("create demo shards: %w", err)
		}
		fmt.Fprintf(w, "Defined %d demo kv shards with %d replicas each.\n", p.opts.Shards, replicas)
	}
	if !info.Launched {
		if _, err := p.d.Launch(ctx, &drummerpb.LaunchRequest{}); err != nil {
			return fmt.Errorf("launch: %w", err)
		}
		fmt.Fprintln(w, "Launched.")
	}
	for {
		info, err := p.d.GetClusterInfo(ctx, &drummerpb.GetClusterInfoRequest{})
		if err == nil && info.Health["healthy"] == info.Shards {
			return nil
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(w, "Not every shard is healthy yet; 'drummercmd shard list' says why.")
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitRegistered waits until n distinct raft addresses of the
// playground's hosts are registered and up.
func (p *Playground) waitRegistered(ctx context.Context, n int) error {
	for {
		var last error
		hs, err := p.d.ListHosts(ctx, &drummerpb.ListHostsRequest{})
		if err == nil {
			up := 0
			for _, h := range p.snapshotHosts() {
				if registered(current(hs.Hosts, h.raft)) {
					up++
				}
			}
			if up >= n {
				return nil
			}
			last = fmt.Errorf("%d of %d nodehosts registered", up, n)
		} else {
			last = err
		}
		for _, h := range p.snapshotHosts() {
			if h.proc.State() == childproc.Stopped {
				return fmt.Errorf("host %d exited: %v; its log %s ends with:\n%s", h.n, h.proc.ExitErr(), h.proc.LogPath, h.proc.Tail(2000))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodehosts did not register (%v): %w; see the logs in %s", last, ctx.Err(), p.DataDir)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (p *Playground) snapshotHosts() []*host {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*host(nil), p.hosts...)
}

func (p *Playground) hostByN(n int) *host {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n < 1 || n > len(p.hosts) {
		return nil
	}
	return p.hosts[n-1]
}

// current is the drummers' record of the identity that now runs on raft
// address addr: of the records with that address (a wiped host leaves its
// old identity behind), the one not replaced that reported last.
func current(hs []*drummerpb.HostStatus, addr string) *drummerpb.HostStatus {
	var best *drummerpb.HostStatus
	for _, h := range hs {
		if h.RaftAddress == addr && (best == nil || better(h, best)) {
			best = h
		}
	}
	return best
}

func better(a, b *drummerpb.HostStatus) bool {
	if ar, br := a.AdminState == "replaced", b.AdminState == "replaced"; ar != br {
		return !ar
	}
	return a.LastHeartbeatUnixMs > b.LastHeartbeatUnixMs
}

// registered reports whether h is a registered identity that is up.
func registered(h *drummerpb.HostStatus) bool {
	return h != nil && h.State == "up" && h.AdminState != "unregistered" && h.AdminState != "replaced"
}

// DashboardURL is the first server's dashboard address: with TLS it
// carries a viewer web token valid for a day (the browser trades it for
// a cookie on first load).
func (p *Playground) DashboardURL() (string, error) {
	urls := p.cluster.URLs()
	if len(urls) == 0 {
		return "", errors.New("the drummer servers serve no HTTP")
	}
	if p.certs == "" {
		return urls[0] + "/", nil
	}
	tok, err := pki.CreateToken(p.certs, auth.RoleViewer, "drummer-dev", 24*time.Hour, time.Now())
	if err != nil {
		return "", err
	}
	return urls[0] + "/?token=" + tok, nil
}

// HTTPURLs are the servers' HTTP base URLs (metrics, /api/v1, dashboard).
func (p *Playground) HTTPURLs() []string { return p.cluster.URLs() }
