package devctl

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRequestValidate(t *testing.T) {
	for _, c := range []struct {
		req Request
		ok  bool
	}{
		{Request{Op: OpStatus}, true},
		{Request{Op: OpAdd}, true},
		{Request{Op: OpKill, Host: 1}, true},
		{Request{Op: OpWipe, Host: 99, Force: true}, true},
		{Request{Op: OpKill}, false},
		{Request{Op: OpKill, Host: 100}, false},
		{Request{Op: OpRestart, Host: -1}, false},
		{Request{Op: OpStatus, Host: 2}, false},
		{Request{Op: OpKill, Host: 2, Force: true}, false},
		{Request{Op: "rm -rf"}, false},
		{Request{}, false},
	} {
		if err := c.req.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: Validate = %v, want ok=%v", c.req, err, c.ok)
		}
	}
}

func TestSocketPath(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	p, err := SocketPath("/tmp/x")
	if err != nil || p != "/tmp/x/dev.sock" {
		t.Fatalf("short: %q %v", p, err)
	}
	long := "/" + strings.Repeat("d", 150)
	p, err = SocketPath(long)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) > maxSocketPath || !strings.HasPrefix(p, os.Getenv("XDG_RUNTIME_DIR")) {
		t.Fatalf("long data dir: socket %q", p)
	}
	q, _ := SocketPath(long)
	r, _ := SocketPath(long + "x")
	if p != q || p == r {
		t.Fatalf("socket paths not derived from the data dir: %q %q %q", p, q, r)
	}
}

func TestRuntimeDirRefusesOpenDirectory(t *testing.T) {
	x := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", x)
	dir, err := RuntimeDir(true)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("runtime dir mode %v, want 0700", st.Mode().Perm())
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := RuntimeDir(true); err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("world-writable runtime dir accepted: %v", err)
	}
}

func TestDiscover(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	if _, err := Discover(""); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("no pointer: %v", err)
	}
	if d, err := Discover("rel"); err != nil || !filepath.IsAbs(d) {
		t.Fatalf("relative --data-dir: %q %v", d, err)
	}
	if _, err := Publish("/data/a"); err != nil {
		t.Fatal(err)
	}
	if d, err := Discover(""); err != nil || d != "/data/a" {
		t.Fatalf("published: %q %v", d, err)
	}
	// A dev that started later replaced the pointer: the first one's exit
	// leaves it alone.
	if _, err := Publish("/data/b"); err != nil {
		t.Fatal(err)
	}
	Unpublish("/data/a")
	if d, _ := Discover(""); d != "/data/b" {
		t.Fatalf("pointer after the other dev's Unpublish: %q", d)
	}
	Unpublish("/data/b")
	if _, err := Discover(""); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("after Unpublish: %v", err)
	}
}

func TestServeAndCall(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := Call(ctx, dir, Request{Op: OpStatus}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("no dev: %v", err)
	}
	// A stale socket (a dev killed with SIGKILL) is replaced.
	stale, err := net.Listen("unix", filepath.Join(dir, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := Call(ctx, dir, Request{Op: OpStatus}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("stale socket: %v", err)
	}
	s, err := Listen(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(s.Path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	if _, err := Listen(dir, nil); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Listen: %v", err)
	}
	s.Start(ctx, func(_ context.Context, req Request) Response {
		if req.Op == OpKill {
			return Response{Code: CodeConflict, Error: "not running"}
		}
		return Response{Output: "ok " + req.Op, Hosts: []HostInfo{{N: 1, Process: "running"}}}
	})
	r, err := Call(ctx, dir, Request{Op: OpStatus})
	if err != nil || r.Output != "ok status" || len(r.Hosts) != 1 {
		t.Fatalf("status: %+v %v", r, err)
	}
	r, err = Call(ctx, dir, Request{Op: OpKill, Host: 3})
	if err != nil || r.Code != CodeConflict || r.Error != "not running" {
		t.Fatalf("kill: %+v %v", r, err)
	}
	// The server checks what it receives, whatever the client did.
	r, err = Call(ctx, dir, Request{Op: OpKill, Host: 1000})
	if err != nil || r.Code != CodeUsage {
		t.Fatalf("bad host number: %+v %v", r, err)
	}
	c, err := net.Dial("unix", s.Path)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("{not json\n"))
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, _ := c.Read(buf)
	c.Close()
	if !strings.Contains(string(buf[:n]), `"code":2`) {
		t.Fatalf("garbage request answered %q", buf[:n])
	}
	s.Close()
	if _, err := os.Stat(s.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after Close: %v", err)
	}
	if _, err := Call(ctx, dir, Request{Op: OpStatus}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("after Close: %v", err)
	}
}
