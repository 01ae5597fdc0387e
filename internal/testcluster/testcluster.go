// Package testcluster runs a Drummer deployment as real processes on
// loopback, built from this module's commands: drummer servers, nodehosts,
// and drummercmd invocations. End-to-end tests, benchmarks and the chaos
// harness use it.
//
// Every process is started in its own process group with a parent-death
// signal, so nothing outlives the test binary even if it is killed; Close
// stops everything (SIGTERM, then SIGKILL) and keeps the logs.
package testcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/childproc"
	"github.com/drummerhq/drummer/internal/pki"
)

// Binaries are the paths of the built commands.
type Binaries struct {
	Drummer, Nodehost, Drummercmd string
}

var (
	buildMu    sync.Mutex
	buildCache = map[string]Binaries{}
)

// ModuleRoot returns the directory of this module's go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the drummer module")
	}
	return filepath.Dir(mod), nil
}

// Build compiles drummer, nodehost and drummercmd into dir (once per dir
// and process). Extra go build flags (e.g. "-race", "-tags=x") may be given.
func Build(ctx context.Context, dir string, flags ...string) (Binaries, error) {
	key := dir + "|" + strings.Join(flags, " ")
	buildMu.Lock()
	defer buildMu.Unlock()
	if b, ok := buildCache[key]; ok {
		return b, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{
		Drummer:    filepath.Join(dir, "drummer"),
		Nodehost:   filepath.Join(dir, "nodehost"),
		Drummercmd: filepath.Join(dir, "drummercmd"),
	}
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, flags...)
	args = append(args, "./cmd/drummer", "./cmd/nodehost", "./cmd/drummercmd")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("go build: %v\n%s", err, out)
	}
	buildCache[key] = b
	return b, nil
}

// FreePorts returns n distinct free TCP ports on host.
func FreePorts(host string, n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Process is a child process with its output in a log file.
type Process struct {
	Name    string
	Path    string
	Args    []string
	LogPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
	logf   *os.File
	starts int
}

// Start starts (or restarts) the process, appending to its log.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !p.exitedLocked() {
		return fmt.Errorf("%s is already running", p.Name)
	}
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.starts++
	fmt.Fprintf(f, "=== %s start #%d at %s: %s %s\n", p.Name, p.starts, time.Now().Format(time.RFC3339Nano), p.Path, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := childproc.Start(cmd); err != nil { // own process group, killed with the test binary
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.cmd, p.logf, p.done, p.err = cmd, f, make(chan struct{}), nil
	done := p.done
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		f.Close()
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func (p *Process) exitedLocked() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Running reports whether the process is alive.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.exitedLocked()
}

// Pid is the process ID of the current (or last) run; 0 before the first
// start.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Done is closed when the current run exits.
func (p *Process) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

// ExitErr is the current run's exit error (nil while running or on success).
func (p *Process) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exitedLocked() {
		return nil
	}
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Kill sends SIGKILL and waits for the exit.
func (p *Process) Kill() {
	_ = p.Signal(syscall.SIGCONT)
	_ = p.Signal(syscall.SIGKILL)
	<-p.Done()
}

// Stop sends SIGTERM, and SIGKILL if the process has not exited within
// grace. It returns the exit error of a graceful exit.
func (p *Process) Stop(grace time.Duration) error {
	_ = p.Signal(syscall.SIGCONT)
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.Done():
		return p.ExitErr()
	case <-time.After(grace):
		p.Kill()
		return fmt.Errorf("%s did not stop within %s; killed", p.Name, grace)
	}
}

// Tail returns the last n bytes of the process's log.
func (p *Process) Tail(n int64) string {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(0, st.Size()-n)
	buf := make([]byte, st.Size()-off)
	_, _ = f.ReadAt(buf, off)
	return string(buf)
}

// Node is a drummer server or a nodehost.
type Node struct {
	*Process
	Index    int
	RaftAddr string
	// GRPCAddr is the drummer API (servers) or the NodehostAPI (nodehosts).
	GRPCAddr string
	DataDir  string
	ID       uint64 // drummer replica ID
	Labels   map[string]string
	// DebugAddr is the --debug-address (with Options.DebugAddresses).
	DebugAddr string
	// HTTPAddr is the --http-address (with Options.HTTPAddresses).
	HTTPAddr string
}

// Options configure a cluster.
type Options struct {
	Bins      Binaries
	Dir       string
	Drummers  int // default 3
	Nodehosts int
	Host      string // default 127.0.0.1
	// Labels for nodehost i (0-based); default region r{i%3+1}.
	Labels func(i int) map[string]string
	// RTT for nodehosts in ms (default 50).
	RTT           int
	DrummerArgs   []string
	NodehostArgs  []string
	LogLevel      string
	StartNodehost bool // start nodehosts in Start (default true via New)
	// DebugAddresses gives every process a --debug-address (Node.DebugAddr).
	DebugAddresses bool
	// HTTPAddresses gives every process an --http-address (Node.HTTPAddr).
	HTTPAddresses bool
	// Insecure runs every process with --insecure; by default the
	// cluster makes a CA and certificates in Dir/certs and every listener
	// uses mutual TLS.
	Insecure bool
}

// Client certificates the cluster makes (one per role), named after the
// role: admin, operator, viewer, app.
var clientRoles = []auth.Role{auth.RoleAdmin, auth.RoleOperator, auth.RoleViewer, auth.RoleApp}

// Cluster is a set of processes.
type Cluster struct {
	opts      Options
	Drummers  []*Node
	Nodehosts []*Node
	Endpoints string
	// CertsDir holds ca.crt and every certificate ("" when insecure).
	CertsDir string
	mu       sync.Mutex
	extra    []*Process
}

// New lays out a cluster (ports, dirs, args) without starting anything.
func New(opts Options) (*Cluster, error) {
	if opts.Drummers == 0 {
		opts.Drummers = 3
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.RTT == 0 {
		opts.RTT = 50
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	if opts.Labels == nil {
		opts.Labels = func(i int) map[string]string { return map[string]string{"region": fmt.Sprintf("r%d", i%3+1)} }
	}
	ports, err := FreePorts(opts.Host, 4*opts.Drummers+4*opts.Nodehosts)
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts}
	if !opts.Insecure {
		c.CertsDir = filepath.Join(opts.Dir, "certs")
		if _, err := pki.CreateCA(c.CertsDir, 0, false, time.Now()); err != nil {
			return nil, fmt.Errorf("testcluster: %w", err)
		}
		for _, r := range clientRoles {
			if _, err := pki.Create(pki.Request{Dir: c.CertsDir, Name: r.String(), Role: r}); err != nil {
				return nil, fmt.Errorf("testcluster: %w", err)
			}
		}
	}
	addr := func() string {
		p := ports[0]
		ports = ports[1:]
		return net.JoinHostPort(opts.Host, fmt.Sprint(p))
	}
	var members, eps []string
	for i := range opts.Drummers {
		n := &Node{Index: i, ID: uint64(i + 1), RaftAddr: addr(), GRPCAddr: addr(), DataDir: filepath.Join(opts.Dir, fmt.Sprintf("drummer-%d", i+1))}
		members = append(members, fmt.Sprintf("%d=%s", n.ID, n.RaftAddr))
		eps = append(eps, n.GRPCAddr)
		c.Drummers = append(c.Drummers, n)
	}
	c.Endpoints = strings.Join(eps, ",")
	for _, n := range c.Drummers {
		name := fmt.Sprintf("drummer-%d", n.ID)
		if !opts.Insecure {
			if _, err := pki.Create(pki.Request{Dir: c.CertsDir, Name: name, Role: auth.RoleServer, Hosts: []string{opts.Host, "localhost"}}); err != nil {
				return nil, fmt.Errorf("testcluster: %w", err)
			}
		}
		args := []string{"--id", fmt.Sprint(n.ID), "--raft-address", n.RaftAddr, "--grpc-address", n.GRPCAddr,
			"--data-dir", n.DataDir, "--initial-members", strings.Join(members, ","), "--log-level", opts.LogLevel}
		args = append(args, c.TLSArgs(name)...)
		if opts.DebugAddresses {
			n.DebugAddr = addr()
			args = append(args, "--debug-address", n.DebugAddr)
		}
		if opts.HTTPAddresses {
			n.HTTPAddr = addr()
			args = append(args, "--http-address", n.HTTPAddr)
		}
		n.Process = &Process{Name: fmt.Sprintf("drummer-%d", n.ID), Path: opts.Bins.Drummer, Args: append(args, opts.DrummerArgs...),
			LogPath: filepath.Join(opts.Dir, fmt.Sprintf("drummer-%d.log", n.ID))}
	}
	for i := range opts.Nodehosts {
		n, err := c.newNodehost(i, addr(), addr())
		if err != nil {
			return nil, err
		}
		if opts.DebugAddresses {
			n.DebugAddr = addr()
			n.Args = append(n.Args, "--debug-address", n.DebugAddr)
		}
		if opts.HTTPAddresses {
			n.HTTPAddr = addr()
			n.Args = append(n.Args, "--http-address", n.HTTPAddr)
		}
		c.Nodehosts = append(c.Nodehosts, n)
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) newNodehost(i int, raft, api string) (*Node, error) {
	name := fmt.Sprintf("nodehost-%d", i+1)
	if c.CertsDir != "" {
		if _, err := pki.Create(pki.Request{Dir: c.CertsDir, Name: name, Role: auth.RoleNodehost, RaftAddress: raft, Overwrite: true}); err != nil {
			return nil, fmt.Errorf("testcluster: %w", err)
		}
	}
	n := &Node{Index: i, RaftAddr: raft, GRPCAddr: api, DataDir: filepath.Join(c.opts.Dir, fmt.Sprintf("nodehost-%d", i+1)), Labels: c.opts.Labels(i)}
	var labels []string
	for k, v := range n.Labels {
		labels = append(labels, k+"="+v)
	}
	args := []string{"--raft-address", raft, "--api-address", api, "--data-dir", n.DataDir,
		"--drummer-endpoints", c.Endpoints, "--labels", strings.Join(labels, ","), "--rtt", fmt.Sprint(c.opts.RTT),
		"--log-level", c.opts.LogLevel}
	args = append(args, c.TLSArgs(name)...)
	n.Process = &Process{Name: name, Path: c.opts.Bins.Nodehost, Args: append(args, c.opts.NodehostArgs...),
		LogPath: filepath.Join(c.opts.Dir, fmt.Sprintf("nodehost-%d.log", i+1))}
	return n, nil
}

// MakeCert makes certificate NAME with role for a process the test starts
// itself (a server added later, a second nodehost on an address); a no-op
// for an insecure cluster.
func (c *Cluster) MakeCert(name string, role auth.Role, raftAddress string) error {
	if c.CertsDir == "" {
		return nil
	}
	req := pki.Request{Dir: c.CertsDir, Name: name, Role: role, RaftAddress: raftAddress, Overwrite: true}
	if role == auth.RoleServer {
		req.Hosts = []string{c.opts.Host, "localhost"}
	}
	_, err := pki.Create(req)
	return err
}

// TLSArgs are the flags that give a program the certificate NAME of the
// cluster (--insecure for an insecure cluster).
func (c *Cluster) TLSArgs(name string) []string {
	if c.CertsDir == "" {
		return []string{"--insecure"}
	}
	f := c.Files(name)
	return []string{"--ca-file", f.CAFile, "--cert-file", f.CertFile, "--key-file", f.KeyFile}
}

// Files are the paths of certificate NAME and the CA bundle.
func (c *Cluster) Files(name string) auth.Files {
	return auth.Files{CAFile: filepath.Join(c.CertsDir, pki.CACertFile),
		CertFile: filepath.Join(c.CertsDir, name+".crt"), KeyFile: filepath.Join(c.CertsDir, name+".key")}
}

// Security is the client configuration with the certificate of a role
// (admin, operator, viewer, app), or insecure.
func (c *Cluster) Security(role string) client.Security {
	if c.CertsDir == "" {
		return client.Security{Insecure: true}
	}
	f := c.Files(role)
	return client.Security{CAFile: f.CAFile, CertFile: f.CertFile, KeyFile: f.KeyFile}
}

// DialOption secures a raw gRPC connection with the admin certificate
// (any server role accepted), or plaintext.
func (c *Cluster) DialOption() (grpc.DialOption, error) {
	if c.CertsDir == "" {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	src, err := auth.NewSource(auth.SourceOptions{Files: c.Files("admin")})
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(src.ClientCredentials()), nil
}

// AddNodehost lays out (without starting) one more nodehost.
func (c *Cluster) AddNodehost() (*Node, error) {
	ports, err := FreePorts(c.opts.Host, 2)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.newNodehost(len(c.Nodehosts), net.JoinHostPort(c.opts.Host, fmt.Sprint(ports[0])), net.JoinHostPort(c.opts.Host, fmt.Sprint(ports[1])))
	if err != nil {
		return nil, err
	}
	c.Nodehosts = append(c.Nodehosts, n)
	return n, nil
}

// Start starts every drummer server and nodehost.
func (c *Cluster) Start() error {
	for _, n := range c.Drummers {
		if err := n.Start(); err != nil {
			return err
		}
	}
	for _, n := range c.Nodehosts {
		if err := n.Start(); err != nil {
			return err
		}
	}
	return nil
}

// Track adds a process to be stopped by Close.
func (c *Cluster) Track(p *Process) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.extra = append(c.extra, p)
}

// Close stops every process: nodehosts first, then drummer servers.
func (c *Cluster) Close() {
	c.mu.Lock()
	procs := append([]*Process(nil), c.extra...)
	for _, n := range c.Nodehosts {
		procs = append(procs, n.Process)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.Stop(10 * time.Second) }()
	}
	wg.Wait()
	for _, n := range c.Drummers {
		wg.Add(1)
		go func() { defer wg.Done(); _ = n.Stop(10 * time.Second) }()
	}
	wg.Wait()
}

// Logs returns the tails of every process log, for failure reports.
func (c *Cluster) Logs(n int64) string {
	var b strings.Builder
	for _, nd := range append(append([]*Node(nil), c.Drummers...), c.Nodehosts...) {
		fmt.Fprintf(&b, "----- %s (%s) -----\n%s\n", nd.Name, nd.LogPath, nd.Tail(n))
	}
	return b.String()
}

// Result is the outcome of a drummercmd run.
type Result struct {
	Stdout, Stderr string
	Code           int
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// CLI runs drummercmd against the cluster's endpoints, as admin.
func (c *Cluster) CLI(ctx context.Context, args ...string) Result {
	return c.CLIAs(ctx, "admin", args...)
}

// CLIAs runs drummercmd with the certificate NAME (e.g. a role: viewer).
func (c *Cluster) CLIAs(ctx context.Context, name string, args ...string) Result {
	return RunCLI(ctx, c.opts.Bins.Drummercmd, append(append([]string{"--endpoints", c.Endpoints}, c.TLSArgs(name)...), args...)...)
}

// RunCLI runs a command and captures its output and exit code.
func RunCLI(ctx context.Context, path string, args ...string) Result {
	cmd := exec.CommandContext(ctx, path, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		code = -1
		errb.WriteString(err.Error())
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// LockPath is the file whose exclusive flock serializes heavy
// multi-process runs (tests of all packages, benchmarks).
func LockPath() string { return filepath.Join(os.TempDir(), "drummer-testcluster.lock") }

// Lock takes the exclusive lock at LockPath, waiting until deadline; the
// returned function releases it.
func Lock(deadline time.Time) (unlock func(), waited time.Duration, err error) {
	path := LockPath()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, 0, fmt.Errorf("exclusive lock: %w", err)
	}
	start := time.Now()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, 0, fmt.Errorf("exclusive lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, 0, fmt.Errorf("exclusive lock %s: still held by another run after %s", path, time.Since(start).Round(time.Second))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, time.Since(start), nil
}

// Exclusive serializes the heavy multi-process tests of all packages (go
// test runs packages in parallel): it takes the lock at LockPath, waiting
// while another test holds it (at most until shortly before t's deadline),
// and releases it when t's test and its cleanups end. Take it before
// starting any process.
func Exclusive(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(time.Hour)
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			deadline = dl.Add(-time.Minute)
		}
	}
	unlock, waited, err := Lock(deadline)
	if err != nil {
		t.Fatal(err)
	}
	if waited > time.Second {
		t.Logf("waited %s for the exclusive test lock %s", waited.Round(time.Millisecond), LockPath())
	}
	t.Cleanup(unlock)
}
