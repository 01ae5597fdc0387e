// Package devctl is the control channel of a running `drummer dev`: a unix
// socket in its data directory (mode 0600, and only the user who runs the
// dev may talk to it), one JSON request and one JSON response per
// connection. `drummer dev kill|pause|resume|restart|wipe|add|status` use
// it.
//
// The CLI finds the socket from --data-dir. Without it, it reads the
// pointer file the running dev writes: $XDG_RUNTIME_DIR/drummer-dev/current,
// or, without XDG_RUNTIME_DIR, $TMPDIR/drummer-dev-$UID/current (a
// directory of mode 0700 owned by the user); it holds the dev's data
// directory. When the data directory's path is too long for a unix socket
// the socket lives in that per-user directory instead, under a name derived
// from the data directory.
package devctl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SocketName is the control socket's name in the data directory.
const SocketName = "dev.sock"

// Ops a running dev answers.
const (
	OpStatus  = "status"
	OpKill    = "kill"
	OpPause   = "pause"
	OpResume  = "resume"
	OpRestart = "restart"
	OpWipe    = "wipe"
	OpAdd     = "add"
)

// MaxHost is the highest host number (nodehost ports are laid out for 99).
const MaxHost = 99

// Request is one command for the running dev.
type Request struct {
	Op string `json:"op"`
	// Host is the host number (1-based) for kill, pause, resume, restart
	// and wipe.
	Host int `json:"host,omitempty"`
	// Force lets wipe go ahead when it destroys a shard's quorum.
	Force bool `json:"force,omitempty"`
}

// Validate checks a request, as the dev receives it from the socket.
func (r Request) Validate() error {
	switch r.Op {
	case OpStatus, OpAdd:
		if r.Host != 0 {
			return fmt.Errorf("%s takes no host number", r.Op)
		}
	case OpKill, OpPause, OpResume, OpRestart, OpWipe:
		if r.Host < 1 || r.Host > MaxHost {
			return fmt.Errorf("%s: host number %d: want 1 to %d (see 'drummer dev status')", r.Op, r.Host, MaxHost)
		}
	default:
		return fmt.Errorf("unknown operation %q", r.Op)
	}
	if r.Force && r.Op != OpWipe {
		return fmt.Errorf("%s has no --force", r.Op)
	}
	return nil
}

// Exit codes a response carries (the CLI's conventions).
const (
	CodeOK          = 0
	CodeFailure     = 1
	CodeUsage       = 2
	CodeUnavailable = 3
	CodeNotFound    = 4
	CodeConflict    = 5
)

// Response is the dev's answer. Output is what the CLI prints on stdout,
// Error (with a non-zero Code) what it prints on stderr.
type Response struct {
	Code   int        `json:"code"`
	Output string     `json:"output,omitempty"`
	Error  string     `json:"error,omitempty"`
	Hosts  []HostInfo `json:"hosts,omitempty"`
}

// HostInfo describes one playground nodehost.
type HostInfo struct {
	N      int    `json:"host"`
	HostID string `json:"host_id,omitempty"`
	PID    int    `json:"pid,omitempty"`
	// Process is what the kernel says: running, paused or stopped.
	Process string `json:"process"`
	// State is the drummers' view: up, suspect or dead ("" before the
	// host has registered).
	State       string `json:"state,omitempty"`
	Replicas    int    `json:"replicas"`
	Region      string `json:"region"`
	RaftAddress string `json:"raft_address"`
	APIAddress  string `json:"api_address"`
	DataDir     string `json:"data_dir"`
	Log         string `json:"log"`
}

// ErrNotRunning means no dev answers on the socket.
var ErrNotRunning = errors.New("no running drummer dev")

// ErrRunning means a dev already runs with this data directory.
var ErrRunning = errors.New("a drummer dev is already running with this data directory")

// maxSocketPath leaves room under the kernel's 108-byte sun_path.
const maxSocketPath = 100

// RuntimeDir is the per-user directory of the pointer file (and of
// sockets whose data directory path is too long). With create it is made
// (mode 0700) if missing; either way an existing one must be a directory
// owned by this user that no one else may write to.
func RuntimeDir(create bool) (string, error) {
	var dir string
	if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" && filepath.IsAbs(x) {
		dir = filepath.Join(x, "drummer-dev")
	} else {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("drummer-dev-%d", os.Getuid()))
	}
	if create {
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("runtime directory: %w", err)
		}
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return dir, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	switch {
	case !st.IsDir():
		return "", fmt.Errorf("runtime directory %s is not a directory; remove it", dir)
	case ok && int(sys.Uid) != os.Getuid():
		return "", fmt.Errorf("runtime directory %s belongs to uid %d, not to you (uid %d); remove it or set XDG_RUNTIME_DIR", dir, sys.Uid, os.Getuid())
	case st.Mode().Perm()&0o022 != 0:
		return "", fmt.Errorf("runtime directory %s is writable by others (mode %v); chmod 700 it", dir, st.Mode().Perm())
	}
	return dir, nil
}

// SocketPath is the control socket of the dev with data directory
// dataDir (an absolute path).
func SocketPath(dataDir string) (string, error) {
	p := filepath.Join(dataDir, SocketName)
	if len(p) <= maxSocketPath {
		return p, nil
	}
	rt, err := RuntimeDir(true)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(dataDir))
	return filepath.Join(rt, "dev-"+hex.EncodeToString(sum[:8])+".sock"), nil
}

func pointerPath(create bool) (string, error) {
	rt, err := RuntimeDir(create)
	if err != nil {
		return "", err
	}
	return filepath.Join(rt, "current"), nil
}

// Publish records dataDir as the running dev's, for commands without
// --data-dir. It returns the pointer file's path.
func Publish(dataDir string) (string, error) {
	p, err := pointerPath(true)
	if err != nil {
		return "", err
	}
	tmp := p + fmt.Sprintf(".%d", os.Getpid())
	if err := os.WriteFile(tmp, []byte(dataDir+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("pointer file: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("pointer file: %w", err)
	}
	return p, nil
}

// Unpublish removes the pointer file if it still names dataDir (a dev
// started later may have replaced it).
func Unpublish(dataDir string) {
	p, err := pointerPath(false)
	if err != nil {
		return
	}
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == dataDir {
		os.Remove(p)
	}
}

// Discover returns the data directory to talk to: dataDir made absolute,
// or, when it is empty, the one the running dev published.
func Discover(dataDir string) (string, error) {
	if dataDir != "" {
		return filepath.Abs(dataDir)
	}
	p, err := pointerPath(false)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%w: %s does not exist; start one with 'drummer dev' (or give the --data-dir of a running one)", ErrNotRunning, filepath.Dir(p))
		}
		return "", err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: %s does not exist; start one with 'drummer dev' (or give the --data-dir of a running one)", ErrNotRunning, p)
	}
	if err != nil {
		return "", err
	}
	d := strings.TrimSpace(string(b))
	if !filepath.IsAbs(d) {
		return "", fmt.Errorf("%s holds %q, not an absolute data directory; remove it", p, d)
	}
	return d, nil
}

// Handler answers one request.
type Handler func(ctx context.Context, req Request) Response

// Server serves the control socket.
type Server struct {
	Path string
	l    *net.UnixListener
	log  *slog.Logger
	wg   sync.WaitGroup
	once sync.Once
}

// Listen creates the control socket of dataDir. It fails with ErrRunning
// when a dev answers there already, and replaces a stale socket left by
// a dev that was killed.
func Listen(dataDir string, log *slog.Logger) (*Server, error) {
	path, err := SocketPath(dataDir)
	if err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%w (%s answers)", ErrRunning, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove stale control socket: %w", err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// Until this chmod the socket has the umask's mode, which (as for any
	// unix socket) only lets others connect when it grants them write.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Server{Path: path, l: l, log: log}, nil
}

// Start answers requests with h, each in its own goroutine, until Close.
func (s *Server) Start(ctx context.Context, h Handler) {
	s.wg.Add(1) // held by the accept loop, so the Adds below never race Close's Wait
	go func() {
		defer s.wg.Done()
		s.serve(ctx, h)
	}()
}

func (s *Server) serve(ctx context.Context, h Handler) {
	for {
		c, err := s.l.AcceptUnix()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			if err := checkPeer(c); err != nil {
				s.log.Warn("control socket: refused a connection", "err", err)
				writeResponse(c, Response{Code: CodeFailure, Error: err.Error()})
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var req Request
			if err := json.NewDecoder(io.LimitReader(c, 64<<10)).Decode(&req); err != nil {
				writeResponse(c, Response{Code: CodeUsage, Error: fmt.Sprintf("bad request: %v", err)})
				return
			}
			if err := req.Validate(); err != nil {
				writeResponse(c, Response{Code: CodeUsage, Error: err.Error()})
				return
			}
			hctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			resp := h(hctx, req)
			cancel()
			writeResponse(c, resp)
		}()
	}
}

// Close stops accepting, waits for the requests in progress and removes
// the socket.
func (s *Server) Close() {
	s.once.Do(func() {
		s.l.Close() // removes the socket file too
		s.wg.Wait()
	})
}

func writeResponse(c net.Conn, r Response) {
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_ = json.NewEncoder(c).Encode(r)
}

// checkPeer admits only processes of the user who runs the dev (the
// socket's mode says so too; this holds even if the mode is changed).
func checkPeer(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("peer credentials: %w", cerr)
	}
	if int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("uid %d may not control this dev (it runs as uid %d)", cred.Uid, os.Getuid())
	}
	return nil
}

// Call sends req to the dev whose data directory is dataDir. It fails
// with ErrNotRunning when no dev answers.
func Call(ctx context.Context, dataDir string, req Request) (Response, error) {
	path, err := SocketPath(dataDir)
	if err != nil {
		return Response{}, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return Response{}, fmt.Errorf("control socket %s: %w", path, err)
		}
		why := err
		var errno syscall.Errno
		if errors.As(err, &errno) {
			why = errno
		}
		return Response{}, fmt.Errorf("%w with data directory %s (control socket %s: %v); start one with 'drummer dev'", ErrNotRunning, dataDir, path, why)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return Response{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	var resp Response
	if err := json.NewDecoder(io.LimitReader(c, 16<<20)).Decode(&resp); err != nil {
		return Response{}, fmt.Errorf("control socket %s: no answer: %w", path, err)
	}
	return resp, nil
}
