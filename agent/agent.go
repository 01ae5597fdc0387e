// Package agent is the embeddable nodehost agent: it runs one dragonboat
// NodeHost with the applications' state machines, reports to every drummer
// server, carries out the scheduler leader's orders, and serves the data
// API (NodehostAPI) for applications.
//
// Users build their own nodehost binary by registering their state machines
// in a Registry and calling New:
//
//	apps := agent.DefaultRegistry() // includes the built-in "kv" app
//	apps.Register(agent.App{Name: "orders", Regular: newOrdersSM})
//	a, err := agent.New(ctx, agent.Config{
//		RaftAddress:      "10.0.0.5:7001",
//		APIAddress:       "10.0.0.5:7002",
//		DataDir:          "/var/lib/nodehost",
//		DrummerEndpoints: []string{"10.0.0.1:7101", "10.0.0.2:7101", "10.0.0.3:7101"},
//		Labels:           map[string]string{"region": "r1"},
//		Apps:             apps,
//	})
//
// Every order is validated before it reaches dragonboat (several dragonboat
// calls panic on bad input) and is idempotent: executing one twice, late,
// or after a restart does no harm.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/drummerhq/drummer/agent/nodehostapi"
	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/events"
	"github.com/drummerhq/drummer/internal/grpcutil"
)

// Config configures a nodehost agent.
type Config struct {
	// RaftAddress is the host:port other nodehosts reach this one's Raft
	// transport on. It is tied to the data directory for good.
	RaftAddress string
	// ListenAddress optionally binds the Raft transport elsewhere (e.g.
	// 0.0.0.0:7001); default RaftAddress.
	ListenAddress string
	// APIAddress is where the NodehostAPI data plane listens.
	APIAddress string
	DataDir    string
	// DrummerEndpoints are drummer gRPC endpoints; more are learned from
	// their replies.
	DrummerEndpoints []string
	Labels           map[string]string
	// Apps are the state machines this nodehost can run (default: kv).
	Apps *Registry
	// RTTMillisecond is the NodeHost tick (default 100ms; election and
	// heartbeat timeouts of shards are counted in ticks).
	RTTMillisecond uint64
	// ReportInterval is the initial report period (default 1s); the
	// drummers' runtime configuration overrides it.
	ReportInterval time.Duration
	// FullReportEvery and DiskInventoryEvery pace full reports and on-disk
	// inventories (defaults 30s and 60s).
	FullReportEvery    time.Duration
	DiskInventoryEvery time.Duration
	// DeploymentID, when non-zero, must match the drummers'; when zero it
	// is learned from them on first start and then kept.
	DeploymentID uint64
	// RegisterAPI, when set, registers extra services on the API server.
	RegisterAPI func(*grpc.Server)
	// DataAPI configures the NodehostAPI service.
	DataAPI nodehostapi.Options
	// APIInterceptors wrap every unary call of the API server (logging,
	// authorization, fault injection in tests).
	APIInterceptors []grpc.UnaryServerInterceptor
	// DrummerDialOptions are added to every connection to the drummer
	// servers (credentials, client interceptors, fault injection in tests).
	DrummerDialOptions []grpc.DialOption
	// NodeHostStarted, when set, is called with the NodeHost as soon as it
	// has started, before any replica runs (fault injection in tests).
	NodeHostStarted func(*dragonboat.NodeHost)
	Logger          *slog.Logger
	Version         string

	// Mutual TLS on the NodehostAPI, the Raft transport and the
	// connections to the drummers: the CA bundle, and this nodehost's
	// certificate (role nodehost, bound to RaftAddress: `drummer cert
	// create-nodehost`) and key. Either all three or Insecure.
	CAFile, CertFile, KeyFile string
	// Insecure runs plaintext without authentication (--insecure).
	Insecure bool
	// CertCheckEvery is how often the certificate files are checked for
	// rotation (default 5s).
	CertCheckEvery time.Duration
	// APIMethodRoles give the role allowed to call each method of the
	// services RegisterAPI adds ("/pkg.Service/Method" → "app", "admin",
	// ...); with mutual TLS a method without a role is refused.
	APIMethodRoles map[string]string
	// OpenSessionsPerSecond limits OpenSession per caller (default 200,
	// burst twice that).
	OpenSessionsPerSecond float64
}

func (c *Config) setDefaults() {
	if c.Apps == nil {
		c.Apps = DefaultRegistry()
	}
	if c.RTTMillisecond == 0 {
		c.RTTMillisecond = 100
	}
	if c.ReportInterval <= 0 {
		c.ReportInterval = time.Second
	}
	if c.FullReportEvery <= 0 {
		c.FullReportEvery = 30 * time.Second
	}
	if c.DiskInventoryEvery <= 0 {
		c.DiskInventoryEvery = 60 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Version == "" {
		c.Version = "dev"
	}
}

// Validate checks the configuration and says how to fix it.
func (c *Config) Validate() error {
	var errs []error
	if err := db.ValidateAddress(c.RaftAddress); err != nil {
		errs = append(errs, fmt.Errorf("--raft-address: %w", err))
	}
	if err := db.ValidateAddress(c.APIAddress); err != nil {
		errs = append(errs, fmt.Errorf("--api-address: %w", err))
	}
	if c.APIAddress != "" && c.APIAddress == c.RaftAddress {
		errs = append(errs, errors.New("--api-address must differ from --raft-address"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	var eps []string
	for _, e := range c.DrummerEndpoints {
		for _, p := range strings.Split(e, ",") {
			if p = strings.TrimSpace(p); p != "" {
				if err := db.ValidateAddress(p); err != nil {
					errs = append(errs, fmt.Errorf("--drummer-endpoints: %w", err))
				}
				eps = append(eps, p)
			}
		}
	}
	if len(eps) == 0 {
		errs = append(errs, errors.New("--drummer-endpoints is required, e.g. 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"))
	}
	if err := db.ValidateLabels(c.Labels); err != nil {
		errs = append(errs, fmt.Errorf("--labels: %w", err))
	}
	if c.RTTMillisecond > 1000 {
		errs = append(errs, errors.New("rtt must be at most 1000ms"))
	}
	if err := auth.CheckMode(auth.Files{CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile}, c.Insecure); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Agent is a running nodehost agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	store   *store
	nh      *dragonboat.NodeHost
	session uint64

	grpc   *grpc.Server
	lis    net.Listener
	health *health.Server
	// tls is nil in insecure mode; leader guards destructive orders.
	tls    *auth.Source
	leader epochHolder

	col  *collector
	exec *executor
	reps *reporters

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

// New starts an agent: it learns its deployment from the drummers if it
// does not know it yet (waiting until ctx ends), starts the NodeHost,
// brings back the replicas it was running, and begins reporting.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create --data-dir: %w", err)
	}
	st, err := loadStore(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if st.raftAddress != "" && st.raftAddress != cfg.RaftAddress {
		return nil, fmt.Errorf("data directory %s belongs to raft address %s, not %s: dragonboat ties its data to the raft address; use --raft-address %s or a new --data-dir",
			cfg.DataDir, st.raftAddress, cfg.RaftAddress, st.raftAddress)
	}
	a := &Agent{
		cfg:     cfg,
		store:   st,
		session: randomUint64(),
	}
	a.leader.epoch = st.epochSeen() // the fence survives restarts
	if st.hostID == "" {
		st.hostID = newUUID()
	}
	a.log = cfg.Logger.With("component", "agent", "host_id", st.hostID)
	if a.tls, err = a.newTLSSource(); err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.APIAddress)
	if err != nil {
		return nil, fmt.Errorf("listen on --api-address %s: %w", cfg.APIAddress, err)
	}
	a.lis = lis
	deployment, err := a.deploymentID(ctx)
	if err != nil {
		lis.Close()
		return nil, err
	}
	if err := st.setIdentity(st.hostID, deployment, cfg.RaftAddress); err != nil {
		lis.Close()
		return nil, err
	}
	// The collector exists before the NodeHost: dragonboat calls the
	// event listener (which nudges it) from its own goroutines as soon as
	// the NodeHost runs.
	a.col = newCollector(a)
	if err := a.startNodeHost(deployment); err != nil {
		lis.Close()
		return nil, err
	}
	a.exec = newExecutor(a)
	a.exec.restoring.Store(len(st.assignments()) > 0)
	a.reps = newReporters(a)

	dataOpts := cfg.DataAPI
	if dataOpts.Logger == nil {
		dataOpts.Logger = a.log
	}
	if dataOpts.SessionOwner == nil {
		// Sessions are bounded per certificate identity (one owner for
		// all callers in insecure mode).
		dataOpts.SessionOwner = func(ctx context.Context) string {
			if id, ok := auth.FromContext(ctx); ok {
				return id.Name
			}
			return ""
		}
	}
	if dataOpts.AppName == nil {
		dataOpts.AppName = func(shardID, replicaID uint64) string {
			if o := a.store.assignment(shardID); o != nil && o.ReplicaId == replicaID {
				return o.App
			}
			return ""
		}
	}
	sopts, err := a.apiServerOptions(nodehostapi.GRPCServerOptions(dataOpts))
	if err != nil {
		lis.Close()
		a.nh.Close()
		return nil, err
	}
	a.grpc = grpc.NewServer(sopts...)
	a.health = health.NewServer()
	healthpb.RegisterHealthServer(a.grpc, a.health)
	drummerpb.RegisterNodehostAPIServer(a.grpc, nodehostapi.New(a.nh, dataOpts))
	if cfg.RegisterAPI != nil {
		cfg.RegisterAPI(a.grpc)
	}
	reflection.Register(a.grpc)
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)

	rctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Add(5)
	if a.tls != nil {
		a.wg.Add(1)
		go func() { defer a.wg.Done(); a.tls.Run(rctx) }()
	}
	go func() {
		defer a.wg.Done()
		a.store.flusher(rctx, func(err error) { a.log.Error("cannot persist the replica assignments", "err", err) })
	}()
	go func() {
		defer a.wg.Done()
		if err := a.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			a.log.Error("API server stopped", "err", err)
		}
	}()
	go func() { defer a.wg.Done(); a.exec.restore(rctx) }()
	go func() { defer a.wg.Done(); a.col.run(rctx) }()
	go func() { defer a.wg.Done(); a.reps.run(rctx) }()
	a.exec.startWorkers(rctx, &a.wg)
	a.log.Info("nodehost agent started", "raft_address", cfg.RaftAddress, "api_address", cfg.APIAddress,
		"deployment_id", deployment, "apps", cfg.Apps.Names())
	return a, nil
}

// deploymentID returns the deployment this host belongs to, asking the
// drummers on first start.
func (a *Agent) deploymentID(ctx context.Context) (uint64, error) {
	known := a.store.deployment
	switch {
	case known != 0 && a.cfg.DeploymentID != 0 && known != a.cfg.DeploymentID:
		return 0, fmt.Errorf("data directory belongs to deployment %d, not %d", known, a.cfg.DeploymentID)
	case known != 0:
		return known, nil
	case a.cfg.DeploymentID != 0:
		return a.cfg.DeploymentID, nil
	}
	backoff := 200 * time.Millisecond
	for {
		for _, ep := range splitEndpoints(a.cfg.DrummerEndpoints) {
			id, err := a.askDeployment(ctx, ep)
			if err == nil && id != 0 {
				return id, nil
			}
		}
		a.log.Info("waiting for a drummer server to report the deployment ID", "endpoints", a.cfg.DrummerEndpoints)
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no drummer server at %s answered with a deployment ID: %w", strings.Join(a.cfg.DrummerEndpoints, ","), ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (a *Agent) askDeployment(ctx context.Context, ep string) (uint64, error) {
	cc, err := grpc.NewClient(ep, a.drummerDialOptions()...)
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := drummerpb.NewDrummerClient(cc).Report(rctx, a.hello())
	if err != nil {
		return 0, err
	}
	return resp.DeploymentId, nil
}

// hello is a report with identity only, used before the NodeHost runs.
func (a *Agent) hello() *drummerpb.ReportRequest {
	return &drummerpb.ReportRequest{
		HostId: a.store.hostID, RaftAddress: a.cfg.RaftAddress, ApiAddress: a.cfg.APIAddress,
		Labels: a.cfg.Labels, Apps: a.cfg.Apps.Names(), Version: a.cfg.Version,
		Session: a.session ^ 0x5555, Seq: 1,
	}
}

func (a *Agent) startNodeHost(deployment uint64) error {
	dir := filepath.Join(a.cfg.DataDir, "nodehost")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	col := a.col // set before the NodeHost starts; never reassigned
	l := events.New(func(e events.Event) { col.onEvent(e) })
	nhc := config.NodeHostConfig{
		DeploymentID:        deployment,
		NodeHostDir:         dir,
		NodeHostID:          a.store.hostID,
		RTTMillisecond:      a.cfg.RTTMillisecond,
		RaftAddress:         a.cfg.RaftAddress,
		ListenAddress:       a.cfg.ListenAddress,
		RaftEventListener:   l,
		SystemEventListener: l,
		Expert:              config.ExpertConfig{LogDB: config.GetSmallMemLogDBConfig()},
	}
	if a.tls != nil {
		// dragonboat reads these files itself: the outgoing side on every
		// new connection, its listener only at start (see docs/security.md).
		nhc.MutualTLS, nhc.CAFile, nhc.CertFile, nhc.KeyFile = true, a.raftCAFile(), a.cfg.CertFile, a.cfg.KeyFile
	}
	if err := nhc.Validate(); err != nil {
		return fmt.Errorf("nodehost config: %w", err)
	}
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		return fmt.Errorf("start NodeHost in %s: %w", dir, err)
	}
	a.nh = nh
	if a.cfg.NodeHostStarted != nil {
		a.cfg.NodeHostStarted(nh)
	}
	return nil
}

func (a *Agent) drummerDialOptions() []grpc.DialOption {
	return append([]grpc.DialOption{a.drummerCredentials()}, a.cfg.DrummerDialOptions...)
}

// NodeHost returns the agent's dragonboat NodeHost.
func (a *Agent) NodeHost() *dragonboat.NodeHost { return a.nh }

// HostID is this nodehost's identity (its dragonboat NodeHostID).
func (a *Agent) HostID() string { return a.store.hostID }

// APIAddress is the address the data API listens on.
func (a *Agent) APIAddress() string { return a.lis.Addr().String() }

// Close stops reporting and the NodeHost. It is safe to call more than once.
func (a *Agent) Close() {
	if a.closed.Swap(true) {
		return
	}
	a.health.Shutdown()
	a.cancel()
	grpcutil.Stop(a.grpc, 3*time.Second)
	a.wg.Wait()
	a.nh.Close()
	a.log.Info("nodehost agent stopped")
}

func randomUint64() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return uint64(time.Now().UnixNano()) | 1
	}
	return binary.LittleEndian.Uint64(b[:]) | 1
}

func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		binary.LittleEndian.PutUint64(b[:], uint64(time.Now().UnixNano()))
	}
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func splitEndpoints(in []string) []string {
	var out []string
	for _, e := range in {
		for _, p := range strings.Split(e, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
