// Package fleet simulates thousands of nodehosts in one process against
// real drummer servers (`drummerbench fleet`), like PD's heartbeat bench:
// every simulated host speaks the real Report protocol to every drummer
// server with the agent's own report builder (internal/reportproto:
// sessions, deltas, full reports every 30 s, disk inventory, order
// results, the faster cadence while orders flow), over its own gRPC
// connection with its own nodehost certificate (or plaintext), and carries
// out the leader's orders on an in-memory model of each shard's Raft group
// (start, stop, remove data, config changes checked against the
// ConfigChangeID, a leader only while a quorum of voters runs, leader
// transfer). No dragonboat runs: what is measured is the control plane.
//
// Run starts three drummer processes from the built cmd/drummer, the
// fleet, and the scenarios (steady, launch, kill, leader-kill), and
// returns what the agents measured (report latency, errors) and what the
// drummers cost (CPU and RSS from /proc).
package fleet

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/pki"
)

// Fleet is a set of simulated hosts reporting to a set of drummer servers.
type Fleet struct {
	cfg       Config
	endpoints []string
	model     *model
	hosts     []*Host
	creds     []grpc.DialOption // per host
	orders    atomic.Int64
	stats     atomic.Pointer[stats]

	errMu    sync.Mutex
	errCodes map[string]int64
	errFirst map[string]string

	mu    sync.Mutex
	conns [][]*grpc.ClientConn
	// shared holds the connections hosts share (Config.HostsPerConn > 1),
	// by group of hosts; they are closed only at the end.
	shared [][]*grpc.ClientConn
}

// newFleet lays out cfg.Hosts hosts and the cfg.Join the join scenario
// adds; with certsDir it makes a nodehost
// certificate for each (bound to its raft address) with internal/pki.
func newFleet(cfg Config, endpoints []string, certsDir string) (*Fleet, error) {
	f := &Fleet{cfg: cfg, endpoints: endpoints, model: newModel(cfg.ElectionDelay),
		errCodes: map[string]int64{}, errFirst: map[string]string{}}
	f.stats.Store(newStats(len(endpoints)))
	f.hosts = make([]*Host, cfg.Hosts+cfg.Join)
	for i := range f.hosts {
		f.hosts[i] = newHost(f, i)
		f.model.byAddr[f.hosts[i].raft] = f.hosts[i]
	}
	f.creds = make([]grpc.DialOption, len(f.hosts))
	if certsDir == "" {
		for i := range f.creds {
			f.creds[i] = grpc.WithTransportCredentials(insecure.NewCredentials())
		}
		return f, nil
	}
	dir := certsDir
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		errs = make([]error, runtime.GOMAXPROCS(0))
	)
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(f.hosts) || errs[w] != nil {
					return
				}
				errs[w] = f.makeCert(dir, i)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("fleet certificates: %w", err)
	}
	return f, nil
}

func (f *Fleet) makeCert(dir string, i int) error {
	h := f.hosts[i]
	name := fmt.Sprintf("fleet-%05d", i)
	if _, err := pki.Create(pki.Request{Dir: dir, Name: name, Role: auth.RoleNodehost, RaftAddress: h.raft, Overwrite: true}); err != nil {
		return err
	}
	src, err := auth.NewSource(auth.SourceOptions{
		Files:       auth.Files{CAFile: filepath.Join(dir, pki.CACertFile), CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key")},
		Roles:       []auth.Role{auth.RoleNodehost},
		RaftAddress: h.raft,
		CheckEvery:  time.Hour,
	})
	if err != nil {
		return err
	}
	f.creds[i] = grpc.WithTransportCredentials(src.ClientCredentials(auth.RoleServer))
	return nil
}

// start connects the first cfg.Hosts hosts to every endpoint and starts
// their reporters (the join scenario starts the others).
func (f *Fleet) start(ctx context.Context) error {
	f.conns = make([][]*grpc.ClientConn, len(f.hosts))
	for i := range f.cfg.Hosts {
		if err := f.startHost(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// startHost connects host i to every endpoint (or to its group's shared
// connections) and starts its reporters. Hosts start in index order.
func (f *Fleet) startHost(ctx context.Context, i int) error {
	h := f.hosts[i]
	per := max(1, f.cfg.HostsPerConn)
	var conns []*grpc.ClientConn
	if per > 1 && i%per != 0 {
		conns = f.shared[i/per]
	} else {
		conns = make([]*grpc.ClientConn, len(f.endpoints))
		for j, ep := range f.endpoints {
			cc, err := grpc.NewClient(ep, f.creds[i],
				grpc.WithReadBufferSize(16<<10), grpc.WithWriteBufferSize(16<<10))
			if err != nil {
				for _, c := range conns[:j] {
					c.Close()
				}
				return fmt.Errorf("connect to %s: %w", ep, err)
			}
			conns[j] = cc
		}
	}
	f.mu.Lock()
	if per > 1 {
		if i%per == 0 {
			f.shared = append(f.shared, conns)
		}
	} else {
		f.conns[i] = conns
	}
	f.mu.Unlock()
	hctx, cancel := context.WithCancel(ctx)
	h.cancel = cancel
	go h.run(hctx, conns)
	return nil
}

// kill crashes host i: its reporters stop, its replicas stop running.
func (f *Fleet) kill(i int) {
	h := f.hosts[i]
	h.crash()
	if h.cancel != nil {
		h.cancel()
		<-h.done
	}
	f.mu.Lock()
	conns := f.conns[i]
	f.conns[i] = nil
	f.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// close stops every host and waits for their goroutines.
func (f *Fleet) close() {
	f.model.closed.Store(true)
	for _, h := range f.hosts {
		if h.cancel != nil {
			h.cancel()
		}
	}
	for _, h := range f.hosts {
		if h.cancel != nil {
			<-h.done
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, conns := range f.conns {
		for _, c := range conns {
			c.Close()
		}
		f.conns[i] = nil
	}
	for _, conns := range f.shared {
		for _, c := range conns {
			c.Close()
		}
	}
	f.shared = nil
}

func (f *Fleet) noteError(ep int, code string, err error) {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	k := fmt.Sprintf("%s %s", f.endpoints[ep], code)
	f.errCodes[k]++
	if _, ok := f.errFirst[k]; !ok {
		f.errFirst[k] = err.Error()
	}
}

// takeStats returns the statistics since the last call and starts anew.
func (f *Fleet) takeStats() *stats {
	return f.stats.Swap(newStats(len(f.endpoints)))
}
