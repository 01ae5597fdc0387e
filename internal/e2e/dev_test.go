package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drummerhq/drummer/internal/childproc"
	"github.com/drummerhq/drummer/internal/testcluster"
)

// devRun is a `drummer dev` started as a user would, with its output in
// files.
type devRun struct {
	t         *testing.T
	cmd       *exec.Cmd
	done      chan struct{}
	dataDir   string
	endpoints string
	out, errf string
}

type devHost struct {
	N           int    `json:"host"`
	HostID      string `json:"host_id"`
	PID         int    `json:"pid"`
	Process     string `json:"process"`
	State       string `json:"state"`
	Replicas    int    `json:"replicas"`
	Region      string `json:"region"`
	RaftAddress string `json:"raft_address"`
}

// portsFree reports whether the ports drummer dev lays out for base (and
// `extra` more nodehosts) can be listened on.
func portsFree(base, nodehosts int) bool {
	var ports []int
	for i := 1; i <= 3; i++ {
		ports = append(ports, base+i, base+10+i, base+20+i)
	}
	for i := 1; i <= nodehosts; i++ {
		ports = append(ports, base+100+i, base+200+i, base+300+i)
	}
	for _, p := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

// startDev runs `drummer dev --data-dir DIR --base-port B args...` on a
// free port range and waits until it says it runs. Cleanup kills it and
// anything it started if the test did not stop them.
func startDev(t *testing.T, nodehosts int, args ...string) *devRun {
	t.Helper()
	dir := t.TempDir()
	for attempt := range 10 {
		// Below the kernel's ephemeral range (32768-60999 by default), so
		// no outgoing connection takes a port a restarted host needs.
		base := 20000 + rand.IntN(124)*100
		if !portsFree(base, nodehosts+1) {
			continue
		}
		if d := tryDev(t, dir, attempt, base, nodehosts, args); d != nil {
			return d
		}
	}
	t.Fatal("no free port range for drummer dev after 10 attempts")
	return nil
}

// tryDev starts drummer dev on base; nil means its ports were taken.
func tryDev(t *testing.T, dir string, attempt, base, nodehosts int, args []string) *devRun {
	t.Helper()
	d := &devRun{t: t, dataDir: filepath.Join(dir, fmt.Sprintf("data-%d", attempt)),
		out: filepath.Join(dir, fmt.Sprintf("dev-%d.out", attempt)), errf: filepath.Join(dir, fmt.Sprintf("dev-%d.err", attempt))}
	d.endpoints = fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", base+1, base+2, base+3)
	full := append([]string{"dev", "--data-dir", d.dataDir, "--base-port", strconv.Itoa(base),
		"--nodehosts", strconv.Itoa(nodehosts), "--log-level", "info"}, args...)
	outf, err := os.Create(d.out)
	if err != nil {
		t.Fatal(err)
	}
	errf, err := os.Create(d.errf)
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(bins.Drummer, full...)
	d.cmd.Stdout, d.cmd.Stderr = outf, errf
	err = childproc.Start(d.cmd) // own process group, killed with the test binary
	outf.Close()
	errf.Close()
	if err != nil {
		t.Fatal(err)
	}
	d.done = make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			<-d.done
		}
		for _, pid := range processesMentioning(d.dataDir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			d.logTails()
		}
	})
	deadline := time.Now().Add(4 * time.Minute)
	for {
		b, _ := os.ReadFile(d.out)
		if bytes.Contains(b, []byte("Press Ctrl-C to stop everything.")) {
			return d
		}
		select {
		case <-d.done:
			eb, _ := os.ReadFile(d.errf)
			if bytes.Contains(eb, []byte("in use")) {
				t.Logf("drummer dev on base port %d: ports taken, trying others: %s", base, lastLine(eb))
				return nil
			}
			t.Fatalf("drummer dev exited during start-up: %v\nstdout:\n%s\nstderr:\n%s", d.cmd.ProcessState, b, tail(eb, 4000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("drummer dev not running after 4 minutes; stdout:\n%s", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (d *devRun) logTails() {
	for _, p := range []string{d.out, d.errf} {
		b, _ := os.ReadFile(p)
		d.t.Logf("----- %s -----\n%s", p, tail(b, 6000))
	}
	logs, _ := filepath.Glob(filepath.Join(d.dataDir, "nodehost-*.log"))
	for _, p := range logs {
		b, _ := os.ReadFile(p)
		d.t.Logf("----- %s -----\n%s", p, tail(b, 3000))
	}
}

// dev runs `drummer dev ARGS` (a control command).
func (d *devRun) dev(args ...string) testcluster.Result {
	return testcluster.RunCLI(ctxFor(d.t, 3*time.Minute), bins.Drummer, append([]string{"dev"}, args...)...)
}

// devOK runs a control command and fails the test unless it exits 0.
func (d *devRun) devOK(args ...string) string {
	d.t.Helper()
	r := d.dev(args...)
	if r.Code != 0 {
		d.t.Fatalf("drummer dev %s: %s", strings.Join(args, " "), r)
	}
	d.t.Logf("drummer dev %s:\n%s", strings.Join(args, " "), r.Stdout)
	return r.Stdout
}

func (d *devRun) cli(args ...string) testcluster.Result {
	return d.cliAs("admin", args...)
}

// cliAs runs drummercmd with the dev's certificate of a role.
func (d *devRun) cliAs(role string, args ...string) testcluster.Result {
	certs := filepath.Join(d.dataDir, "certs")
	tls := []string{"--ca-file", filepath.Join(certs, "ca.crt"), "--cert-file", filepath.Join(certs, role+".crt"), "--key-file", filepath.Join(certs, role+".key")}
	return testcluster.RunCLI(ctxFor(d.t, 2*time.Minute), bins.Drummercmd, append(append([]string{"--endpoints", d.endpoints}, tls...), args...)...)
}

func (d *devRun) cliOK(args ...string) string {
	d.t.Helper()
	r := d.cli(args...)
	if r.Code != 0 {
		d.t.Fatalf("drummercmd %s: %s", strings.Join(args, " "), r)
	}
	return r.Stdout
}

func (d *devRun) status() []devHost {
	d.t.Helper()
	var resp struct {
		Hosts []devHost `json:"hosts"`
	}
	r := d.dev("status", "-o", "json", "--data-dir", d.dataDir)
	if r.Code != 0 {
		d.t.Fatalf("drummer dev status: %s", r)
	}
	out := r.Stdout
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		d.t.Fatalf("status -o json: %v\n%s", err, out)
	}
	return resp.Hosts
}

// waitStatus polls `drummer dev status` until ok accepts it.
func (d *devRun) waitStatus(timeout time.Duration, what string, ok func([]devHost) bool) []devHost {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	var hs []devHost
	for {
		hs = d.status()
		if ok(hs) {
			return hs
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("timed out after %s waiting for %s; hosts: %+v", timeout, what, hs)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (d *devRun) waitShards(timeout time.Duration, what string, ok func([]shard) (bool, string)) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		r := d.cli("shard", "list", "-o", "json")
		if r.Code == 0 {
			var ss []shard
			if err := json.Unmarshal([]byte(r.Stdout), &ss); err == nil {
				done, msg := ok(ss)
				if done {
					return
				}
				last = msg
			}
		} else {
			last = r.String()
		}
		time.Sleep(300 * time.Millisecond)
	}
	d.t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, last)
}

// processesMentioning lists the processes whose command line contains s.
func processesMentioning(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) {
			out = append(out, pid)
		}
	}
	return out
}

// leftovers lists the live processes of a stopped dev: those whose
// command line names its data directory (every nodehost's does), and
// those in its or its nodehosts' process groups running the drummer
// binary under test (a check on the binary keeps a process that reused
// one of those numbers from counting). A dev that exited has been reaped,
// and its orphans' parent is no longer the dev, so the parent is no clue.
func leftovers(dataDir string, groups map[int]bool) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		// state ppid pgrp ...
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		pgrp, _ := strconv.Atoi(f[2])
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Contains(cmdline, []byte(dataDir)) || (groups[pgrp] && bytes.HasPrefix(cmdline, []byte(bins.Drummer+"\x00"))) {
			out = append(out, fmt.Sprintf("pid %d (pgrp %d, state %s): %s", p, pgrp, f[0], bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		}
	}
	return out
}

// waitNoProcess waits (bounded) until no process of the dev is left.
func (d *devRun) waitNoProcess(pids map[int]bool) {
	d.t.Helper()
	groups := map[int]bool{d.cmd.Process.Pid: true}
	for p := range pids {
		groups[p] = true // each nodehost leads its own process group
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		left := leftovers(d.dataDir, groups)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("processes left behind by drummer dev after 15 s: %s", strings.Join(left, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func hostN(hs []devHost, n int) devHost {
	for _, h := range hs {
		if h.N == n {
			return h
		}
	}
	return devHost{}
}

// TestDevPlayground is the playground minute as a user lives it: start
// `drummer dev`, write through `drummercmd kv`, kill a host with `drummer
// dev kill` and watch every shard heal without it, restart it, wipe
// another (new identity, its replicas re-created), pause and resume one,
// add one; the data is still there; Ctrl-C (SIGINT) stops everything and
// leaves no process behind.
func TestDevPlayground(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testcluster.Exclusive(t)
	rt := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", rt) // the pointer to the running dev goes here, not to the user's
	const shards = 6
	d := startDev(t, 5, "--shards", strconv.Itoa(shards))
	out, _ := os.ReadFile(d.out)
	for _, want := range []string{"suspect", "dead", "PID", "REGION", "dev kill 2", "shard list", "wait --healthy", "dev restart 2", "DRUMMER_ENDPOINTS=" + d.endpoints,
		"DRUMMER_CA_FILE=", "DRUMMER_CERT_FILE=", "Web token:"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("start-up output lacks %q:\n%s", want, out)
		}
	}
	checkDevDashboard(t, d, out)
	// Secure by default: the dev's own certificates, roles enforced.
	if r := d.cliAs("viewer", "shard", "delete", "1", "--yes"); r.Code != 6 {
		t.Errorf("viewer shard delete on the dev: want exit 6, got %s", r)
	}
	if r := testcluster.RunCLI(ctxFor(t, time.Minute), bins.Drummercmd, "--endpoints", d.endpoints, "--insecure", "--command-timeout", "3s", "shard", "list"); r.Code == 0 {
		t.Errorf("plaintext drummercmd answered by the dev: %s", r)
	}

	// Five nodehost processes, each in its own process group.
	hs := d.status()
	if len(hs) != 5 {
		t.Fatalf("want 5 hosts, got %+v", hs)
	}
	pids := map[int]bool{}
	for _, h := range hs {
		if h.PID == 0 || h.Process != "running" || h.State != "up" {
			t.Fatalf("host not running and up: %+v", h)
		}
		if pg, err := syscall.Getpgid(h.PID); err != nil || pg != h.PID {
			t.Errorf("host %d (pid %d) is in process group %d (%v), not its own", h.N, h.PID, pg, err)
		}
		pids[h.PID] = true
	}

	for i := 1; i <= shards; i++ {
		d.cliOK("kv", "put", "--shard-id", strconv.Itoa(i), fmt.Sprintf("key-%d", i), fmt.Sprintf("value-%d", i))
	}

	// Kill the host with the most replicas, found without --data-dir
	// (through the pointer in XDG_RUNTIME_DIR).
	victim := hs[0]
	for _, h := range hs {
		if h.Replicas > victim.Replicas {
			victim = h
		}
	}
	if victim.Replicas == 0 {
		t.Fatalf("no host holds replicas: %+v", hs)
	}
	got := d.devOK("kill", strconv.Itoa(victim.N))
	for _, want := range []string{fmt.Sprintf("pid %d", victim.PID), "declared dead", fmt.Sprintf("its %d replica", victim.Replicas), "re-created"} {
		if !strings.Contains(got, want) {
			t.Errorf("kill output lacks %q", want)
		}
	}
	if r := d.dev("kill", strconv.Itoa(victim.N)); r.Code != 5 {
		t.Errorf("killing a killed host: want exit 5, got %s", r)
	}
	start := time.Now()
	d.waitShards(3*time.Minute, "every shard healthy without the killed host", allHealthyWithout(victim.HostID, shards))
	t.Logf("all %d shards healthy without killed host %d after %s", shards, victim.N, time.Since(start).Round(time.Millisecond))
	if st := childproc.StateOf(victim.PID); st != childproc.Stopped {
		t.Errorf("killed pid %d is %s", victim.PID, st)
	}

	// Restart it: same identity, up again.
	got = d.devOK("restart", strconv.Itoa(victim.N), "--data-dir", d.dataDir)
	if !strings.Contains(got, "same data directory") || !strings.Contains(got, "is up as host "+victim.HostID[:8]) {
		t.Errorf("restart output unexpected")
	}
	hs = d.waitStatus(time.Minute, "the restarted host up", func(hs []devHost) bool {
		h := hostN(hs, victim.N)
		return h.Process == "running" && h.State == "up" && h.HostID == victim.HostID
	})
	pids[hostN(hs, victim.N).PID] = true
	d.cliOK("wait", "--healthy", "--timeout", "180s")

	// Wipe another host that holds replicas: a new identity on the same
	// addresses; the old one's replicas are re-created.
	var wiped devHost
	for _, h := range hs {
		if h.N != victim.N && h.Replicas > wiped.Replicas {
			wiped = h
		}
	}
	if wiped.N == 0 {
		t.Fatalf("no other host holds replicas: %+v", hs)
	}
	got = d.devOK("wipe", strconv.Itoa(wiped.N))
	if !strings.Contains(got, "new nodehost identity") || !strings.Contains(got, "replaced") {
		t.Errorf("wipe output unexpected")
	}
	hs = d.waitStatus(time.Minute, "the wiped host up with a new identity", func(hs []devHost) bool {
		h := hostN(hs, wiped.N)
		return h.Process == "running" && h.State == "up" && h.HostID != "" && h.HostID != wiped.HostID
	})
	pids[hostN(hs, wiped.N).PID] = true
	d.waitShards(3*time.Minute, "every shard healthy without the wiped identity", allHealthyWithout(wiped.HostID, shards))

	// Pause and resume one (briefly: nothing moves).
	paused := hostN(hs, 1)
	if paused.N == victim.N || paused.N == wiped.N {
		paused = hostN(hs, 3)
		if paused.N == victim.N || paused.N == wiped.N {
			paused = hostN(hs, 5)
		}
	}
	got = d.devOK("pause", strconv.Itoa(paused.N))
	if !strings.Contains(got, "SIGSTOP") || !strings.Contains(got, "resume") {
		t.Errorf("pause output unexpected")
	}
	if st := childproc.StateOf(paused.PID); st != childproc.Paused {
		t.Errorf("paused pid %d is %s", paused.PID, st)
	}
	if r := d.dev("pause", strconv.Itoa(paused.N)); r.Code != 5 {
		t.Errorf("pausing a paused host: want exit 5, got %s", r)
	}
	d.devOK("resume", strconv.Itoa(paused.N))
	if st := childproc.StateOf(paused.PID); st != childproc.Running {
		t.Errorf("resumed pid %d is %s", paused.PID, st)
	}

	// One more host.
	got = d.devOK("add")
	if !strings.Contains(got, "Added host 6") {
		t.Errorf("add output unexpected")
	}
	hs = d.waitStatus(time.Minute, "host 6 up", func(hs []devHost) bool {
		return len(hs) == 6 && hostN(hs, 6).State == "up"
	})
	for _, h := range hs {
		pids[h.PID] = true
	}

	// Bad input: exit codes 2 (usage) and 4 (no such host); no dev: 3.
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"kill"}, 2},
		{[]string{"kill", "two"}, 2},
		{[]string{"kill", "0"}, 2},
		{[]string{"status", "-o", "yaml"}, 2},
		{[]string{"kill", "42"}, 4},
		{[]string{"status", "--data-dir", t.TempDir()}, 3},
	} {
		if r := d.dev(c.args...); r.Code != c.code || r.Stderr == "" {
			t.Errorf("drummer dev %s: want exit %d with a message, got %s", strings.Join(c.args, " "), c.code, r)
		}
	}

	// The data written before the kill is still there.
	d.cliOK("wait", "--healthy", "--timeout", "180s")
	for i := 1; i <= shards; i++ {
		v := strings.TrimSpace(d.cliOK("kv", "get", "--shard-id", strconv.Itoa(i), fmt.Sprintf("key-%d", i)))
		if v != fmt.Sprintf("value-%d", i) {
			t.Errorf("shard %d: key-%d = %q, want value-%d", i, i, v, i)
		}
	}

	// Ctrl-C: everything stops, nothing is left.
	if err := syscall.Kill(d.cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(90 * time.Second):
		t.Fatal("drummer dev did not exit within 90 s of SIGINT")
	}
	if !d.cmd.ProcessState.Success() {
		t.Errorf("drummer dev exited with %v after SIGINT", d.cmd.ProcessState)
	}
	out, _ = os.ReadFile(d.out)
	if !bytes.Contains(out, []byte("Stopped.")) {
		t.Errorf("no 'Stopped.' after SIGINT:\n%s", tail(out, 2000))
	}
	d.waitNoProcess(pids)
	if _, err := os.Stat(filepath.Join(d.dataDir, "dev.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
	if r := d.dev("status"); r.Code != 3 {
		t.Errorf("status after the dev stopped: want exit 3, got %s", r)
	}
}

// TestDevKilledLeavesNoProcess: a `drummer dev` killed with SIGKILL
// (no chance to clean up) takes its nodehost processes with it.
func TestDevKilledLeavesNoProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testcluster.Exclusive(t)
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	d := startDev(t, 2, "--shards", "1")
	pids := map[int]bool{}
	for _, h := range d.status() {
		if h.PID == 0 {
			t.Fatalf("host %d has no process", h.N)
		}
		pids[h.PID] = true
	}
	if err := syscall.Kill(d.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.done
	d.waitNoProcess(pids)
	// The socket it left answers no one: the CLI says so with exit 3.
	if r := d.dev("status"); r.Code != 3 || !strings.Contains(r.Stderr, "no running drummer dev") {
		t.Errorf("status after SIGKILL: want exit 3, got %s", r)
	}
}

// checkDevDashboard opens the dashboard URL the dev printed, as a browser
// would: the token is traded for a cookie, then the page loads.
func checkDevDashboard(t *testing.T, d *devRun, out []byte) {
	t.Helper()
	m := regexp.MustCompile(`Dashboard: (https://127\.0\.0\.1:\d+/\?token=\S+)`).FindSubmatch(out)
	if m == nil {
		t.Errorf("start-up output lacks the dashboard URL:\n%s", out)
		return
	}
	pem, err := os.ReadFile(filepath.Join(d.dataDir, "certs", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Jar: jar, Timeout: 20 * time.Second}
	resp, err := hc.Get(string(m[1]))
	if err != nil {
		t.Fatalf("GET %s: %v", m[1], err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`id="hosts-up"`)) || resp.Request.URL.Query().Has("token") {
		t.Errorf("dashboard URL: %s, final URL %s:\n%s", resp.Status, resp.Request.URL, body)
	}
}
