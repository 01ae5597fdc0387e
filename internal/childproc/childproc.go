// Package childproc starts child processes that cannot outlive their
// parent: each runs in its own process group (a terminal's Ctrl-C reaches
// only the parent, which stops its children in order) with SIGKILL as its
// parent-death signal (a killed parent takes its children with it).
// `drummer dev` runs its nodehosts with it; the multi-process tests start
// theirs through Start as well.
//
// Linux only, like the rest of the module's process handling.
package childproc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The parent-death signal is tied to the OS thread that forked the child,
// not to the process: if that thread ever exited, the child would be
// killed (golang/go#27505). Every fork therefore happens on one thread
// locked for the life of the process.
var (
	spawnOnce sync.Once
	spawnC    chan spawnReq
)

type spawnReq struct {
	cmd  *exec.Cmd
	errC chan error
}

func spawner() {
	runtime.LockOSThread() // never unlocked: the thread lives as long as the process
	for r := range spawnC {
		r.errC <- r.cmd.Start()
	}
}

// Start starts cmd in a new process group with SIGKILL as its parent-death
// signal. Wait for it as usual.
func Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	spawnOnce.Do(func() {
		spawnC = make(chan spawnReq)
		go spawner()
	})
	r := spawnReq{cmd: cmd, errC: make(chan error, 1)}
	spawnC <- r
	return <-r.errC
}

// State is what the kernel says about a process.
type State int

const (
	// Stopped: no process (never started, exited or killed).
	Stopped State = iota
	// Running: alive (running or sleeping).
	Running
	// Paused: stopped by a signal (SIGSTOP); SIGCONT resumes it.
	Paused
)

func (s State) String() string {
	switch s {
	case Running:
		return "running"
	case Paused:
		return "paused"
	default:
		return "stopped"
	}
}

// Process is a child process that can be started, paused, resumed,
// stopped and started again; its output is appended to a log file.
type Process struct {
	Name    string
	Path    string
	Args    []string
	Env     []string // added to the parent's environment
	LogPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	starts  int
	started time.Time
}

// Start starts (or starts again) the process, appending to its log.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.done) {
		return fmt.Errorf("%s is already running (pid %d)", p.Name, p.cmd.Process.Pid)
	}
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("%s: log file: %w", p.Name, err)
	}
	p.starts++
	fmt.Fprintf(f, "=== %s start #%d at %s: %s %s\n", p.Name, p.starts, time.Now().Format(time.RFC3339Nano), p.Path, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(p.Env) > 0 {
		cmd.Env = append(os.Environ(), p.Env...)
	}
	if err := Start(cmd); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.err, p.started = cmd, done, nil, time.Now()
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// PID is the process ID of the current run, 0 when it is not running.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.done) {
		return 0
	}
	return p.cmd.Process.Pid
}

// StartedAt is when the current (or last) run started.
func (p *Process) StartedAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started
}

// State asks the kernel whether the process runs, is paused or is gone.
func (p *Process) State() State {
	pid := p.PID()
	if pid == 0 {
		return Stopped
	}
	return StateOf(pid)
}

// StateOf reads /proc/PID/stat: "T" (stopped by a signal) is Paused, a
// zombie or a missing process is Stopped.
func StateOf(pid int) State {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stopped
	}
	// The command name is in parentheses and may contain spaces; the
	// state is the field after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return Stopped
	}
	switch b[i+2] {
	case 'T', 't':
		return Paused
	case 'Z', 'X', 'x':
		return Stopped
	default:
		return Running
	}
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

// ExitErr is the last run's exit error (nil while running or after a
// clean exit).
func (p *Process) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// ErrNotRunning is returned when a signal is meant for a process that
// does not run.
var ErrNotRunning = errors.New("not running")

// Signal sends sig to the process's group.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.done) {
		return fmt.Errorf("%s: %w", p.Name, ErrNotRunning)
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("%s: signal %v: %w", p.Name, sig, err)
	}
	return nil
}

// Pause stops the process with SIGSTOP and waits (up to a second) until
// the kernel shows it stopped.
func (p *Process) Pause() error {
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	return p.waitState(Paused)
}

// Resume continues a paused process with SIGCONT.
func (p *Process) Resume() error {
	if err := p.Signal(syscall.SIGCONT); err != nil {
		return err
	}
	return p.waitState(Running)
}

func (p *Process) waitState(want State) error {
	for range 100 {
		s := p.State()
		if s == want {
			return nil
		}
		if s == Stopped {
			return fmt.Errorf("%s: %w", p.Name, ErrNotRunning)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s is still %s, not %s, after 1s", p.Name, p.State(), want)
}

// Kill sends SIGKILL and waits for the exit.
func (p *Process) Kill() {
	_ = p.Signal(syscall.SIGKILL)
	<-p.Done()
}

// Stop sends SIGTERM (and SIGCONT, so that a paused process can act on
// it), and SIGKILL if the process has not exited within grace. It returns
// nil after a clean exit, and at once when the process does not run.
func (p *Process) Stop(grace time.Duration) error {
	if p.PID() == 0 {
		return nil
	}
	_ = p.Signal(syscall.SIGTERM)
	_ = p.Signal(syscall.SIGCONT)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.Done():
		return p.ExitErr()
	case <-t.C:
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
