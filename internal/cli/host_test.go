package cli

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
)

func TestHostListTable(t *testing.T) {
	f := newFake()
	f.hosts = fixtureHosts()
	r := runAt(t, serve(t, f), "host", "list")
	r.wantCode(t, 0)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want header + 3 rows:\n%s", r.stdout)
	}
	hdr := strings.Fields(lines[0])
	want := []string{"ID", "RAFT", "ADDRESS", "API", "ADDRESS", "STATE", "ADMIN", "STATE", "REPLICAS", "LAST", "HEARTBEAT", "LABELS", "EXPLANATION"}
	if !slices.Equal(hdr, want) {
		t.Errorf("header %q, want %q", hdr, want)
	}
	// Sorted by ID; columns aligned.
	for i, id := range []string{hostA, hostB, hostC} {
		if !strings.HasPrefix(lines[i+1], id) {
			t.Errorf("row %d = %q, want host %s", i+1, lines[i+1], id)
		}
	}
	col := strings.Index(lines[0], "STATE")
	for _, l := range lines[1:] {
		if l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("column STATE not aligned at %d in %q", col, l)
		}
	}
	wantContains(t, "row A", lines[1], "10.0.0.1:7001", "up", "active", " 3 ", "2s ago", "region=r1,zone=a")
	if !strings.HasSuffix(lines[1], "  -") {
		t.Errorf("empty explanation not shown as -: %q", lines[1])
	}
	wantContains(t, "row B", lines[2], "suspect", "cordoned", "30s ago", "region=r2")
	wantContains(t, "row C", lines[3], "dead", "never", "silent for 10m")
	if r.stderr != "" {
		t.Errorf("stderr: %q", r.stderr)
	}
}

func TestHostListJSON(t *testing.T) {
	f := newFake()
	f.hosts = fixtureHosts()
	f.hosts[0].MaintenanceUntilUnixMs = ms(testNow.Add(time.Hour))
	addr := serve(t, f)
	for _, flag := range []string{"-o", "--output", "-w", "--write-out"} {
		r := runAt(t, addr, "host", "list", flag, "json")
		r.wantCode(t, 0)
		var got []map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("%s: %v\n%s", flag, err, r.stdout)
		}
		if len(got) != 3 {
			t.Fatalf("%d hosts", len(got))
		}
		keys := []string{"id", "raft_address", "api_address", "labels", "state", "admin_state", "replicas",
			"last_heartbeat", "maintenance_until", "apps", "explanation"}
		for _, h := range got {
			for _, k := range keys {
				if _, ok := h[k]; !ok {
					t.Errorf("host %v lacks %q", h["id"], k)
				}
			}
			if len(h) != len(keys) {
				t.Errorf("host has fields %v, want exactly %v", h, keys)
			}
		}
		a, c := got[0], got[2]
		if a["id"] != hostA || a["state"] != "up" || a["replicas"] != float64(3) ||
			a["last_heartbeat"] != "2026-11-24T11:59:58.000Z" || a["labels"].(map[string]any)["zone"] != "a" {
			t.Errorf("host A: %v", a)
		}
		// Unset times are null, empty maps and lists are {} and [].
		if c["last_heartbeat"] != nil || c["maintenance_until"] != "2026-11-24T13:00:00.000Z" {
			t.Errorf("host C times: %v %v", c["last_heartbeat"], c["maintenance_until"])
		}
		if !strings.Contains(r.stdout, `"labels": {}`) || !strings.Contains(r.stdout, `"apps": []`) {
			t.Errorf("empty labels/apps not {} / []:\n%s", r.stdout)
		}
	}
	// No hosts: [] rather than null.
	f.hosts = nil
	r := runAt(t, addr, "host", "list", "-o", "json")
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("empty list = %q", r.stdout)
	}
}

func TestHostCordonUncordon(t *testing.T) {
	f := newFake()
	f.hosts = fixtureHosts()
	addr := serve(t, f)
	for _, tc := range []struct {
		args   []string
		action drummerpb.HostAdminAction
		host   string
		out    string
	}{
		{[]string{"host", "cordon", "3f2a"}, drummerpb.HostAdminAction_HOST_ADMIN_ACTION_CORDON, hostA,
			"host " + hostA + " (10.0.0.1:7001) cordoned; admin state cordoned"},
		{[]string{"host", "cordon", "10.0.0.2:7001"}, drummerpb.HostAdminAction_HOST_ADMIN_ACTION_CORDON, hostB, "cordoned"},
		{[]string{"host", "uncordon", hostC}, drummerpb.HostAdminAction_HOST_ADMIN_ACTION_UNCORDON, hostC,
			"uncordoned; admin state active"},
	} {
		r := runAt(t, addr, tc.args...)
		r.wantCode(t, 0)
		wantContains(t, "stdout", r.stdout, tc.out)
		req := f.lastReq("SetHostState").(*drummerpb.SetHostStateRequest)
		if req.HostId != tc.host || req.Action != tc.action {
			t.Errorf("%v sent %v", tc.args, req)
		}
	}
	// JSON: the host as the server returns it.
	r := runAt(t, addr, "-o", "json", "host", "cordon", "c0ff")
	r.wantCode(t, 0)
	var h hostJSON
	if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || h.ID != hostC || h.AdminState != "cordoned" {
		t.Errorf("json %q: %v %+v", r.stdout, err, h)
	}
}

func TestHostRefErrors(t *testing.T) {
	f := newFake()
	f.hosts = fixtureHosts()
	addr := serve(t, f)
	r := runAt(t, addr, "host", "cordon", "3f")
	r.wantCode(t, ExitUsage)
	wantContains(t, "stderr", r.stderr, `host "3f" is ambiguous`, hostA, hostB)
	r = runAt(t, addr, "host", "drain", "nope")
	r.wantCode(t, ExitNotFound)
	wantContains(t, "stderr", r.stderr, `no host matches "nope"`)
	r = runAt(t, addr, "host", "cordon")
	r.wantCode(t, ExitUsage)
	wantContains(t, "stderr", r.stderr, "want one HOST", "Run 'drummercmd host cordon --help' for usage.")
	r = runAt(t, addr, "host", "cordon", "a", "b")
	r.wantCode(t, ExitUsage)
	if m := f.mutations(); len(m) != 0 {
		t.Errorf("mutations sent: %v", m)
	}
}

func TestHostMaintenance(t *testing.T) {
	f := newFake()
	f.hosts = fixtureHosts()
	addr := serve(t, f)
	r := runAt(t, addr, "host", "maintenance", "3f2a", "--for", "10m")
	r.wantCode(t, 0)
	req := f.lastReq("SetHostState").(*drummerpb.SetHostStateRequest)
	if req.Action != drummerpb.HostAdminAction_HOST_ADMIN_ACTION_MAINTENANCE || req.DurationMs != 600_000 || req.HostId != hostA {
		t.Errorf("sent %v", req)
	}
	wantContains(t, "stdout", r.stdout, "in maintenance for 10m, until 2026-11-24 12:10:00 UTC")

	r = runAt(t, addr, "host", "maintenance", "3f2a", "--end")
	r.wantCode(t, 0)
	req = f.lastReq("SetHostState").(*drummerpb.SetHostStateRequest)
	if req.Action != drummerpb.HostAdminAction_HOST_ADMIN_ACTION_END_MAINTENANCE || req.DurationMs != 0 {
		t.Errorf("sent %v", req)
	}
	wantContains(t, "stdout", r.stdout, "maintenance of host "+hostA)

	n := f.called("SetHostState")
	for _, args := range [][]string{
		{"3f2a"},
		{"3f2a", "--for", "10m", "--end"},
		{"3f2a", "--for", "0s"},
		{"3f2a", "--for", "-5m"},
		{"3f2a", "--for", "ten"},
	} {
		r := runAt(t, addr, append([]string{"host", "maintenance"}, args...)...)
		r.wantCode(t, ExitUsage)
	}
	if f.called("SetHostState") != n {
		t.Error("bad maintenance flags reached the server")
	}
}

func TestHostRemove(t *testing.T) {
	f := newFake()
	f.hosts = fixtureHosts()
	addr := serve(t, f)
	r := runAt(t, addr, "host", "remove", "c0ff")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, "host "+hostC+" (10.0.0.3:7001) removed")
	if req := f.lastReq("RemoveHost").(*drummerpb.RemoveHostRequest); req.HostId != hostC || req.Force {
		t.Errorf("sent %v", req)
	}
	r = runAt(t, addr, "-o", "json", "host", "remove", "--force", "3f2a")
	r.wantCode(t, 0)
	if req := f.lastReq("RemoveHost").(*drummerpb.RemoveHostRequest); req.HostId != hostA || !req.Force {
		t.Errorf("sent %v", req)
	}
	if !strings.Contains(r.stdout, `"removed": true`) {
		t.Errorf("json: %s", r.stdout)
	}
	f.setErr("RemoveHost", status.Error(codes.FailedPrecondition, "host still holds 3 replicas"))
	r = runAt(t, addr, "host", "remove", "3f2a")
	r.wantCode(t, ExitConflict)
	wantContains(t, "stderr", r.stderr, "host still holds 3 replicas (FailedPrecondition)", "Hint: drain the host first", "and stop its nodehost; --force removes it anyway")
}

// drainFake scripts a drain of host A: its replica count falls by one per
// ListHosts call from start, and shard 2 is under-replicated until the
// count reaches 0 and one more poll has happened.
func drainFake(start uint64) *fakeDrummer {
	f := newFake()
	f.hosts = fixtureHosts()
	f.listHosts = func(n int) []*drummerpb.HostStatus {
		hs := fixtureHosts()
		a := hs[1]
		a.AdminState = "draining"
		left := int(start) - (n - 1)
		a.Replicas = uint64(max(left, 0))
		if a.Replicas == 0 {
			a.AdminState = "drained"
		}
		return hs
	}
	f.listShards = func(n int, _ *drummerpb.ListShardsRequest) []*drummerpb.ShardStatus {
		h := "under_replicated"
		if n > int(start)+1 {
			h = "healthy"
		}
		return []*drummerpb.ShardStatus{healthyShard(1), shardWithHealth(2, h)}
	}
	return f
}

func TestHostDrainNoWait(t *testing.T) {
	f := newFake()
	f.hosts = fixtureHosts()
	r := runAt(t, serve(t, f), "host", "drain", "3f2a")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, "host "+hostA+" (10.0.0.1:7001) is draining: 3 replicas to move")
	if req := f.lastReq("SetHostState").(*drummerpb.SetHostStateRequest); req.Action != drummerpb.HostAdminAction_HOST_ADMIN_ACTION_DRAIN {
		t.Errorf("sent %v", req)
	}
	if f.called("ListShards") != 0 {
		t.Error("drain without --wait polled")
	}
}

func TestHostDrainWaitNonTTY(t *testing.T) {
	f := drainFake(2)
	addr := serve(t, f)
	r := runAt(t, addr, "host", "drain", "3f2a", "--wait", "--interval", "5ms", "--timeout", "20s")
	r.wantCode(t, 0)
	if strings.Contains(r.stdout, "\r") {
		t.Errorf("non-TTY output has \\r: %q", r.stdout)
	}
	// The first ListHosts resolves the reference; polls see 1 then 0.
	want := []string{
		"draining host " + hostA + " (10.0.0.1:7001)",
		"draining " + hostA + ": 1 replica remaining, 1 shard not healthy (1 under_replicated)",
		"draining " + hostA + ": 0 replicas remaining, 1 shard not healthy (1 under_replicated)",
		"draining " + hostA + ": 0 replicas remaining",
		"host " + hostA + " (10.0.0.1:7001) is drained",
	}
	got := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if !slices.Equal(got, want) {
		t.Errorf("output:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestHostDrainWaitTTY(t *testing.T) {
	f := drainFake(2)
	addr := serve(t, f)
	r := runCLI(t, runOpts{tty: true}, "--endpoints", addr, "host", "drain", "3f2a", "--wait", "--interval", "5ms")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout,
		"\rdraining "+hostA+": 1 replica remaining, 1 shard not healthy (1 under_replicated)\x1b[K",
		"\rdraining "+hostA+": 0 replicas remaining\x1b[K\nhost "+hostA+" (10.0.0.1:7001) is drained\n")
	if strings.Count(r.stdout, "\n") != 3 {
		t.Errorf("TTY progress should stay on one line: %q", r.stdout)
	}
}

func TestHostDrainWaitJSON(t *testing.T) {
	f := drainFake(1)
	r := runAt(t, serve(t, f), "-o", "json", "host", "drain", "3f2a", "--wait", "--interval", "5ms")
	r.wantCode(t, 0)
	var h hostJSON
	if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || h.Replicas != 0 || h.AdminState != "drained" {
		t.Errorf("stdout must be the final host only: %q (%v)", r.stdout, err)
	}
	wantContains(t, "stderr (progress)", r.stderr, "draining "+hostA+": 0 replicas remaining")
}

func TestHostDrainWaitTimeout(t *testing.T) {
	f := drainFake(1_000_000)
	r := runAt(t, serve(t, f), "host", "drain", "3f2a", "--wait", "--interval", "10ms", "--timeout", "150ms")
	r.wantCode(t, ExitUnavailable)
	wantContains(t, "stderr", r.stderr, "Error: host "+hostA+" not drained: timed out after 150ms: draining "+hostA+": ",
		"Hint: the drain goes on in the background",
		"Hint: shard 2 is under_replicated: replica 3 on 10.0.0.3:7001 dead for 5m0s")
}

func TestHostDrainCancelled(t *testing.T) {
	f := drainFake(5)
	f.listHosts = func(n int) []*drummerpb.HostStatus {
		hs := fixtureHosts()
		hs[1].AdminState = "draining"
		if n > 2 {
			hs[1].AdminState = "active"
		}
		return hs
	}
	r := runAt(t, serve(t, f), "host", "drain", "3f2a", "--wait", "--interval", "5ms")
	r.wantCode(t, ExitConflict)
	wantContains(t, "stderr", r.stderr, `the drain of host `+hostA+` was cancelled: its admin state is now "active"`)
}

func TestHostDrainWaitSurvivesLeaderLoss(t *testing.T) {
	f := drainFake(1)
	f.errs["ListShards"] = status.Error(codes.Unavailable, "no leader yet")
	f.errUntil["ListShards"] = time.Now().Add(500 * time.Millisecond)
	r := runCLI(t, runOpts{}, "--endpoints", serve(t, f), "--command-timeout", "200ms",
		"host", "drain", "3f2a", "--wait", "--interval", "5ms")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, "waiting for the drummer leader (list shards: no drummer leader answered", "is drained")
}
