package childproc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the child processes: with CHILDPROC_HELPER
// set it runs a helper instead of the tests.
func TestMain(m *testing.M) {
	switch os.Getenv("CHILDPROC_HELPER") {
	case "sleep":
		// Runs until SIGTERM, then exits cleanly (exit 0).
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		fmt.Println("ready")
		<-c
		os.Exit(0)
	case "stubborn":
		// Ignores SIGTERM.
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		time.Sleep(time.Hour)
	case "parent":
		// Starts a "sleep" child through Start, prints its pid, waits.
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "CHILDPROC_HELPER=sleep")
		if err := Start(cmd); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println(cmd.Process.Pid)
		time.Sleep(time.Hour)
	}
	os.Exit(m.Run())
}

func helper(t *testing.T, kind string) *Process {
	t.Helper()
	p := &Process{Name: kind, Path: os.Args[0], Env: []string{"CHILDPROC_HELPER=" + kind}, LogPath: filepath.Join(t.TempDir(), kind+".log")}
	t.Cleanup(p.Kill)
	return p
}

func waitLog(t *testing.T, p *Process, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.Tail(1<<16), s) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q in its log after 30s:\n%s", p.Name, s, p.Tail(4096))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLifecycle(t *testing.T) {
	p := helper(t, "sleep")
	if p.State() != Stopped || p.PID() != 0 {
		t.Fatalf("before start: %v pid %d", p.State(), p.PID())
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	waitLog(t, p, "ready")
	pid := p.PID()
	if pg, err := syscall.Getpgid(pid); err != nil || pg != pid {
		t.Errorf("process group %d (%v), want its own (%d)", pg, err, pid)
	}
	if err := p.Start(); err == nil {
		t.Error("a second Start of a running process succeeded")
	}
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	if s := p.State(); s != Paused {
		t.Fatalf("after Pause: %v", s)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	if s := p.State(); s != Running {
		t.Fatalf("after Resume: %v", s)
	}
	// A paused process still stops cleanly: Stop continues it.
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(30 * time.Second); err != nil {
		t.Fatalf("Stop: %v\n%s", err, p.Tail(4096))
	}
	if p.State() != Stopped || p.PID() != 0 || StateOf(pid) != Stopped {
		t.Fatalf("after Stop: %v pid %d, kernel %v", p.State(), p.PID(), StateOf(pid))
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Signal on a stopped process: %v", err)
	}
	// Start again: the log keeps both runs.
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	waitLog(t, p, "start #2")
	p.Kill()
	if p.State() != Stopped || p.ExitErr() == nil {
		t.Fatalf("after Kill: %v, exit %v", p.State(), p.ExitErr())
	}
}

func TestStopKillsAfterGrace(t *testing.T) {
	p := helper(t, "stubborn")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	waitLog(t, p, "ready")
	start := time.Now()
	if err := p.Stop(300 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Stop of a process ignoring SIGTERM: %v", err)
	}
	if p.State() != Stopped {
		t.Fatalf("still %v", p.State())
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("Stop took %s", d)
	}
}

// A parent killed with SIGKILL takes the child it started with Start
// along (the parent-death signal).
func TestChildDiesWithParent(t *testing.T) {
	parent := exec.Command(os.Args[0])
	parent.Env = append(os.Environ(), "CHILDPROC_HELPER=parent")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := Start(parent); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = parent.Process.Kill(); _ = parent.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("parent said %q", line)
	}
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
	if StateOf(child) != Running {
		t.Fatalf("child %d is %v", child, StateOf(child))
	}
	if err := parent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = parent.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for StateOf(child) != Stopped {
		if time.Now().After(deadline) {
			t.Fatalf("child %d outlived its killed parent by 30s", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStateOfMissing(t *testing.T) {
	if s := StateOf(1 << 30); s != Stopped {
		t.Fatalf("StateOf(no such pid) = %v", s)
	}
	if s := StateOf(os.Getpid()); s != Running {
		t.Fatalf("StateOf(self) = %v", s)
	}
}
