package cli

import (
	"encoding/json"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
)

func TestRegions(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	r := runAt(t, addr, "regions", "set", "r1:1,r2:1,r3:1")
	r.wantCode(t, 0)
	if req := f.lastReq("SetRegions").(*drummerpb.SetRegionsRequest); !maps.Equal(req.Regions, map[string]uint32{"r1": 1, "r2": 1, "r3": 1}) {
		t.Errorf("sent %v", req)
	}
	wantContains(t, "stdout", r.stdout, "regions set: r1:1,r2:1,r3:1 (3 replicas per shard)")
	for _, bad := range []string{"r1", "r1:0", ":1", "r1:1,r1:1", "r/1:1"} {
		r := runAt(t, addr, "regions", "set", bad)
		r.wantCode(t, ExitUsage)
	}
	r = runAt(t, addr, "regions", "set")
	r.wantCode(t, ExitUsage)
	wantContains(t, "stderr", r.stderr, "want one region spec")
	if f.called("SetRegions") != 1 {
		t.Error("bad regions reached the server")
	}

	r = runAt(t, addr, "regions", "show")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, "no regions set")
	r = runAt(t, addr, "-o", "json", "regions", "show")
	if strings.TrimSpace(r.stdout) != "{\n  \"regions\": {}\n}" {
		t.Errorf("json %q", r.stdout)
	}
	f.info = &drummerpb.ClusterInfo{Regions: map[string]uint32{"b": 2, "a": 1}}
	r = runAt(t, addr, "regions", "show")
	r.wantCode(t, 0)
	if r.stdout != "REGION  REPLICAS\na       1\nb       2\n" {
		t.Errorf("table %q", r.stdout)
	}
}

func TestLaunch(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	r := runAt(t, addr, "launch")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, "launched; follow the placement with 'drummercmd wait --healthy'")
	f.launched = true
	r = runAt(t, addr, "launch")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, "already launched")
	r = runAt(t, addr, "launch", "-o", "json")
	if !strings.Contains(r.stdout, `"already_launched": true`) {
		t.Errorf("json %q", r.stdout)
	}
}

func TestInfo(t *testing.T) {
	f := newFake()
	f.info = &drummerpb.ClusterInfo{
		DeploymentId: 42, Launched: true, Regions: map[string]uint32{"r1": 2, "r2": 1}, Epoch: 7,
		LeaderReplicaId: 2, LeaderEndpoint: "127.0.0.1:7102", Shards: 20, Hosts: 5,
		Health:         map[string]uint64{"healthy": 12, "under_replicated": 3, "pending": 5},
		DbAppliedIndex: 1234, DbHash: 0xfedcba9876543210, Version: "v0.1.0",
	}
	addr := serve(t, f)
	r := runAt(t, addr, "info")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout,
		"Deployment ID:     42\n", "Launched:          yes\n", "Regions:           r1:2,r2:1\n",
		"Scheduler leader:  replica 2 at 127.0.0.1:7102\n", "Scheduler epoch:   7\n",
		"Shards:            20 (12 healthy, 3 under_replicated, 5 pending)\n", "Hosts:             5\n",
		"DB applied index:  1234\n", "DB hash:           fedcba9876543210\n", "Server version:    v0.1.0\n")
	r = runAt(t, addr, "info", "-o", "json")
	r.wantCode(t, 0)
	var got map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"deployment_id": float64(42), "launched": true, "epoch": float64(7),
		"leader_replica_id": float64(2), "leader_endpoint": "127.0.0.1:7102", "shards": float64(20), "hosts": float64(5),
		"db_applied_index": float64(1234), "db_hash": "fedcba9876543210", "version": "v0.1.0"} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if got["health"].(map[string]any)["pending"] != float64(5) || got["regions"].(map[string]any)["r1"] != float64(2) {
		t.Errorf("maps: %v", got)
	}
}

func TestMember(t *testing.T) {
	f := newFake()
	f.members = []*drummerpb.Member{
		{ReplicaId: 2, RaftAddress: "127.0.0.1:7202", GrpcAddress: "127.0.0.1:7102", Role: "voter"},
		{ReplicaId: 1, RaftAddress: "127.0.0.1:7201", GrpcAddress: "127.0.0.1:7101", Role: "voter", IsLeader: true},
	}
	addr := serve(t, f)
	r := runAt(t, addr, "member", "list")
	r.wantCode(t, 0)
	want := "ID  RAFT ADDRESS    GRPC ADDRESS    ROLE   LEADER\n" +
		"1   127.0.0.1:7201  127.0.0.1:7101  voter  *\n" +
		"2   127.0.0.1:7202  127.0.0.1:7102  voter  -\n"
	if r.stdout != want {
		t.Errorf("table:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = runAt(t, addr, "member", "list", "-o", "json")
	var ms []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &ms); err != nil || len(ms) != 2 || ms[0]["replica_id"] != float64(1) ||
		ms[0]["grpc_address"] != "127.0.0.1:7101" || ms[0]["raft_address"] != "127.0.0.1:7201" || ms[0]["is_leader"] != true || ms[0]["role"] != "voter" {
		t.Errorf("json %s", r.stdout)
	}

	r = runAt(t, addr, "member", "add", "--id", "4", "--raft-address", "127.0.0.1:7204", "--grpc-address", "127.0.0.1:7104")
	r.wantCode(t, 0)
	if req := f.lastReq("AddMember").(*drummerpb.AddMemberRequest); req.ReplicaId != 4 || req.RaftAddress != "127.0.0.1:7204" || req.GrpcAddress != "127.0.0.1:7104" {
		t.Errorf("sent %v", req)
	}
	wantContains(t, "stdout", r.stdout, "member 4 added", "4   127.0.0.1:7204  127.0.0.1:7104")

	r = runAt(t, addr, "member", "remove", "--id", "2")
	r.wantCode(t, 0)
	if req := f.lastReq("RemoveMember").(*drummerpb.RemoveMemberRequest); req.ReplicaId != 2 {
		t.Errorf("sent %v", req)
	}
	wantContains(t, "stdout", r.stdout, "member 2 removed")

	n := len(f.mutations())
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"add", "--raft-address", "h:1", "--grpc-address", "h:2"}, "--id is required"},
		{[]string{"add", "--id", "0", "--raft-address", "h:1", "--grpc-address", "h:2"}, "--id 0 is not a valid replica ID"},
		{[]string{"add", "--id", "4", "--grpc-address", "h:2"}, "--raft-address is required"},
		{[]string{"add", "--id", "4", "--raft-address", "h", "--grpc-address", "h:2"}, `--raft-address "h": want host:port`},
		{[]string{"add", "--id", "4", "--raft-address", "h:1", "--grpc-address", ":2"}, "has no host"},
		{[]string{"remove"}, "--id is required"},
		{[]string{"remove", "--id", "0"}, "--id 0"},
		{[]string{"remove", "3"}, "want flags only"},
	} {
		r := runAt(t, addr, append([]string{"member"}, tc.args...)...)
		r.wantCode(t, ExitUsage)
		wantContains(t, "stderr", r.stderr, tc.msg)
	}
	if len(f.mutations()) != n {
		t.Error("bad input reached the server")
	}
	f.setErr("RemoveMember", status.Error(codes.NotFound, "no member 9"))
	r = runAt(t, addr, "member", "remove", "--id", "9")
	r.wantCode(t, ExitNotFound)
}

func TestConfig(t *testing.T) {
	f := newFake()
	f.cfg = &drummerpb.RuntimeConfig{
		ReportIntervalMs: 1000, SuspectTimeoutMs: 10_000, DeadTimeoutMs: 90_000,
		MaxConcurrentRepairs: 16, MaxRepairsPerHost: 2, HostGcAfterMs: 24 * 3600_000,
		BalanceReplicas: true, BalanceLeaders: false, BalanceThresholdPct: 5, BalanceMinExcess: 2,
		MaxBalanceMoves: 64, MaxLeaderTransfers: 50, BalanceCooldownMs: 60_000,
		ShardOverrides: map[uint64]*drummerpb.ShardTimeouts{9: {SuspectTimeoutMs: 5000}, 3: {SuspectTimeoutMs: 4000, DeadTimeoutMs: 30_000}},
	}
	addr := serve(t, f)
	r := runAt(t, addr, "config", "get")
	r.wantCode(t, 0)
	want := `KEY                     VALUE
report_interval         1s
suspect_timeout         10s
dead_timeout            1m30s
max_concurrent_repairs  16
max_repairs_per_host    2
host_gc_after           24h
balance_replicas        on
balance_leaders         off
balance_threshold       5%
balance_min_excess      2
max_balance_moves       64
max_leader_transfers    50
balance_cooldown        1m

Per-shard overrides:
SHARD  SUSPECT TIMEOUT  DEAD TIMEOUT
3      4s               30s
9      5s               (default)
`
	if r.stdout != want {
		t.Errorf("config get:\n%s\nwant:\n%s", r.stdout, want)
	}
	if r2 := runAt(t, addr, "config", "show"); r2.stdout != want {
		t.Errorf("config show (alias of get):\n%s", r2.stdout)
	}
	r = runAt(t, addr, "config", "get", "-o", "json")
	r.wantCode(t, 0)
	var got configJSON
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err)
	}
	if got.DeadTimeoutMs != 90_000 || got.HostGCAfterMs != 86_400_000 || len(got.ShardOverrides) != 2 ||
		got.ShardOverrides[0] != (shardOverrideJSON{ShardID: 3, SuspectTimeoutMs: 4000, DeadTimeoutMs: 30_000}) {
		t.Errorf("json %+v", got)
	}
	wantContains(t, "json", r.stdout, `"report_interval_ms": 1000`, `"suspect_timeout_ms": 10000`, `"max_concurrent_repairs": 16`,
		`"max_repairs_per_host": 2`, `"host_gc_after_ms": 86400000`, `"shard_overrides": [`, `"shard_id": 3`,
		`"balance_replicas": true`, `"balance_leaders": false`, `"balance_threshold_pct": 5`, `"balance_min_excess": 2`,
		`"max_balance_moves": 64`, `"max_leader_transfers": 50`, `"balance_cooldown_ms": 60000`)

	r = runAt(t, addr, "config", "set", "balance_replicas=off", "balance-leaders=true", "balance_threshold=10%",
		"balance_min_excess=3", "max_balance_moves=8", "max_leader_transfers=5", "balance_cooldown=5m")
	r.wantCode(t, 0)
	req := f.lastReq("SetConfig").(*drummerpb.SetConfigRequest)
	if !maps.Equal(req.Values, map[string]string{"balance_replicas": "off", "balance_leaders": "true", "balance_threshold": "10%",
		"balance_min_excess": "3", "max_balance_moves": "8", "max_leader_transfers": "5", "balance_cooldown": "5m"}) {
		t.Errorf("sent %v", req)
	}

	r = runAt(t, addr, "config", "set", "dead_timeout=2m", "Max-Concurrent-Repairs=8", "report_interval=500ms")
	r.wantCode(t, 0)
	req = f.lastReq("SetConfig").(*drummerpb.SetConfigRequest)
	if req.ShardId != 0 || !maps.Equal(req.Values, map[string]string{"dead_timeout": "2m", "max_concurrent_repairs": "8", "report_interval": "500ms"}) {
		t.Errorf("sent %v", req)
	}
	wantContains(t, "stdout", r.stdout, "KEY", "dead_timeout")

	r = runAt(t, addr, "config", "set", "--shard-id", "7", "suspect_timeout=5s", "dead_timeout=30s")
	r.wantCode(t, 0)
	req = f.lastReq("SetConfig").(*drummerpb.SetConfigRequest)
	if req.ShardId != 7 || !maps.Equal(req.Values, map[string]string{"suspect_timeout": "5s", "dead_timeout": "30s"}) {
		t.Errorf("sent %v", req)
	}

	n := f.called("SetConfig")
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{nil, "no settings given"},
		{[]string{"dead_timeout"}, "is not key=value"},
		{[]string{"dead_timeout=45"}, "dead_timeout: duration \"45\" has no unit; write e.g. 45s"},
		{[]string{"bogus=1"}, `unknown setting "bogus"`},
		{[]string{"max_repairs_per_host=0"}, `max_repairs_per_host="0": out of range; want an integer between 1 and 10000`},
		{[]string{"balance_replicas=maybe"}, `balance_replicas="maybe": not a switch; want on or off (or true or false)`},
		{[]string{"balance_threshold=0%"}, `balance_threshold="0%": out of range; want a percentage between 1% and 100%`},
		{[]string{"balance_threshold=150"}, "balance_threshold"},
		{[]string{"max_leader_transfers=lots"}, `max_leader_transfers="lots": not a whole number`},
		{[]string{"balance_cooldown=60"}, `balance_cooldown: duration "60" has no unit`},
		{[]string{"--shard-id", "7", "balance_leaders=off"}, "balance_leaders is deployment-wide and cannot be set per shard"},
		{[]string{"--shard-id", "7", "max_concurrent_repairs=3"}, "cannot be set per shard"},
		{[]string{"--shard-id", "0", "dead_timeout=1m"}, "--shard-id 0 is not a shard"},
		{[]string{"--shard-id", "7", "dead_timeout=0"}, "dead_timeout: duration \"0\" must be positive"},
		{[]string{"dead_timeout=1m", "dead_timeout=2m"}, "given twice"},
	} {
		r := runAt(t, addr, append([]string{"config", "set"}, tc.args...)...)
		r.wantCode(t, ExitUsage)
		wantContains(t, "stderr", r.stderr, tc.msg)
	}
	if f.called("SetConfig") != n {
		t.Error("bad settings reached the server")
	}
	f.setErr("SetConfig", status.Error(codes.InvalidArgument, "dead_timeout must be longer than suspect_timeout"))
	r = runAt(t, addr, "config", "set", "dead_timeout=1s")
	r.wantCode(t, ExitUsage)
	wantContains(t, "stderr", r.stderr, "Error: set config: dead_timeout must be longer than suspect_timeout (InvalidArgument)")
	f.setErr("SetConfig", status.Error(codes.NotFound, "shard 7 not found"))
	r = runAt(t, addr, "config", "set", "--shard-id", "7", "dead_timeout=1m")
	r.wantCode(t, ExitNotFound)
	wantContains(t, "stderr", r.stderr, "set config of shard 7: shard 7 not found")
}

func TestRepairList(t *testing.T) {
	f := newFake()
	f.flight = []*drummerpb.Repair{repairingShard().Repair}
	f.recent = []*drummerpb.Repair{{
		Id: 11, ShardId: 3, Kind: "move", OldReplicaId: 2, OldHostId: hostA, NewReplicaId: 5, NewHostId: hostB,
		Outcome: "rolled_back", Reason: "new replica did not catch up within 2m",
		StartedUnixMs: ms(testNow.Add(-10 * time.Minute)), FinishedUnixMs: ms(testNow.Add(-5 * time.Minute)),
	}}
	addr := serve(t, f)
	r := runAt(t, addr, "repair", "list")
	r.wantCode(t, 0)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%q", r.stdout)
	}
	wantContains(t, "header", lines[0], "ID", "SHARD", "KIND", "STATUS", "FROM", "TO", "STARTED", "DEADLINE/FINISHED", "REASON")
	wantContains(t, "in flight", lines[1], "12", "repair", "in flight: catch_up 3/6", "3@c0ffee00", "4@3f2b7d00", "1m ago", "deadline in 42s")
	wantContains(t, "recent", lines[2], "11", "move", "rolled_back", "2@3f2a9c1e", "5@3f2b7d00", "10m ago", "finished 5m ago",
		"new replica did not catch up within 2m")

	r = runAt(t, addr, "repair", "list", "-o", "json")
	r.wantCode(t, 0)
	var got struct {
		InFlight []map[string]any `json:"in_flight"`
		Recent   []map[string]any `json:"recent"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got.InFlight) != 1 || len(got.Recent) != 1 {
		t.Fatalf("%v %s", err, r.stdout)
	}
	if got.Recent[0]["outcome"] != "rolled_back" || got.Recent[0]["reason"] != "new replica did not catch up within 2m" ||
		got.Recent[0]["finished_at"] != "2026-11-24T11:55:00.000Z" || got.InFlight[0]["finished_at"] != nil {
		t.Errorf("json %s", r.stdout)
	}
	f.flight, f.recent = nil, nil
	r = runAt(t, addr, "repair", "list", "-o", "json")
	if strings.TrimSpace(r.stdout) != "{\n  \"in_flight\": [],\n  \"recent\": []\n}" {
		t.Errorf("empty json %q", r.stdout)
	}
}

func TestVersion(t *testing.T) {
	// Needs no server.
	r := runCLI(t, runOpts{}, "--endpoints", "127.0.0.1:1", "version")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, "drummercmd version:", "API version:", "drummer.v1", "Go version:")
	old := Version
	Version = "v9.9.9"
	defer func() { Version = old }()
	r = runCLI(t, runOpts{}, "version", "-o", "json")
	r.wantCode(t, 0)
	var v map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v["version"] != "v9.9.9" || v["api_version"] != "drummer.v1" || v["go_version"] == "" {
		t.Errorf("json %q", r.stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  []string
	}{
		{[]string{"hots"}, []string{`unknown command "hots" for "drummercmd"`, "Did you mean this?\n\thost", "Run 'drummercmd --help' for usage."}},
		{[]string{"host", "lst"}, []string{`unknown command "lst" for "drummercmd host"`, "\tlist", "Run 'drummercmd host --help' for usage."}},
		{[]string{"shard", "list", "--bogus"}, []string{"unknown flag: --bogus", "Run 'drummercmd shard list --help' for usage."}},
		{[]string{"--bogus", "info"}, []string{"unknown flag: --bogus"}},
		{[]string{"info", "extra"}, []string{"want no arguments"}},
		{[]string{"-o", "yaml", "info"}, []string{`invalid output format "yaml"; use -o table or -o json`}},
		{[]string{"--dial-timeout", "soon", "info"}, []string{`invalid argument "soon" for "--dial-timeout"`}},
		{[]string{"--command-timeout", "0s", "info"}, []string{"--command-timeout must be positive"}},
		{[]string{"--endpoints", "nohost", "info"}, []string{`endpoint "nohost": want host:port`}},
		{[]string{"--endpoints", ",", "info"}, []string{"no drummer endpoints given"}},
		{[]string{"wait"}, []string{"say what to wait for: --healthy"}},
	} {
		r := runCLI(t, runOpts{}, tc.args...)
		r.wantCode(t, ExitUsage)
		wantContains(t, "stderr", r.stderr, tc.msg...)
		if r.stdout != "" {
			t.Errorf("%v: stdout %q", tc.args, r.stdout)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{nil, {"--help"}, {"help"}, {"host"}, {"shard", "--help"}, {"help", "config", "set"}} {
		r := runCLI(t, runOpts{}, args...)
		r.wantCode(t, 0)
		if !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%v: no usage:\n%s", args, r.stdout)
		}
	}
	r := runCLI(t, runOpts{}, "--help")
	wantContains(t, "root help", r.stdout, "Exit codes:", "2  usage error", "3  unavailable or timed out", "4  not found", "5  conflict",
		"--endpoints", "DRUMMER_ENDPOINTS", "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103", "--dial-timeout", "--command-timeout",
		"-o, --output", "-w, --write-out")
	r = runCLI(t, runOpts{}, "config", "set", "--help")
	wantContains(t, "config set help", r.stdout, "report_interval", "suspect_timeout", "dead_timeout", "max_concurrent_repairs",
		"max_repairs_per_host", "host_gc_after")
}

// The client follows a follower's "drummer-leader" trailer: the command
// succeeds although only the follower is named in --endpoints, and the
// change is made on the leader only.
func TestLeaderRedirect(t *testing.T) {
	f := newFake()
	f.hosts = fixtureHosts()
	f.info = &drummerpb.ClusterInfo{Version: "leader"}
	leader := serve(t, f)
	fol, fl := serveFollower(t, leader)

	r := runAt(t, fol, "info", "-o", "json")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, `"version": "leader"`)

	r = runAt(t, fol, "host", "cordon", "3f2a")
	r.wantCode(t, 0)
	if f.called("SetHostState") != 1 {
		t.Error("cordon did not reach the leader")
	}
	fl.mu.Lock()
	calls := fl.calls
	fl.mu.Unlock()
	if calls < 2 {
		t.Errorf("follower saw %d calls, want the first call of each command", calls)
	}

	// A follower that does not know the leader, and a dead endpoint: the
	// client tries the other endpoints.
	lost, _ := serveFollower(t, "")
	r = runAt(t, strings.Join([]string{lost, deadAddress(t), leader}, ","), "shard", "list")
	r.wantCode(t, 0)
}

func TestUnavailable(t *testing.T) {
	dead := deadAddress(t)
	start := time.Now()
	r := runCLI(t, runOpts{}, "--endpoints", dead, "--command-timeout", "300ms", "host", "list")
	r.wantCode(t, ExitUnavailable)
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %v with --command-timeout 300ms", el)
	}
	wantContains(t, "stderr", r.stderr, "Error: list hosts: ", "Hint: no drummer scheduler leader answered within --command-timeout=300ms",
		"drummer servers at "+dead)
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}

	// A follower that never learns the leader: unavailable as well.
	lost, _ := serveFollower(t, "")
	// (A timeout long enough for the follower's answer on a loaded machine.)
	r = runCLI(t, runOpts{}, "--endpoints", lost, "--command-timeout", "3s", "info")
	r.wantCode(t, ExitUnavailable)
	wantContains(t, "stderr", r.stderr, "not the scheduler leader")
}

func TestEnvironment(t *testing.T) {
	f := newFake()
	f.info = &drummerpb.ClusterInfo{Version: "env"}
	addr := serve(t, f)
	dead := deadAddress(t)

	r := runCLI(t, runOpts{env: map[string]string{EnvEndpoints: addr}}, "info")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, "env")

	// The flag beats the environment.
	r = runCLI(t, runOpts{env: map[string]string{EnvEndpoints: dead}}, "--endpoints", addr, "info")
	r.wantCode(t, 0)
	r = runCLI(t, runOpts{env: map[string]string{EnvEndpoints: addr}}, "--endpoints", dead, "--command-timeout", "200ms", "info")
	r.wantCode(t, ExitUnavailable)

	// Timeouts from the environment.
	r = runCLI(t, runOpts{env: map[string]string{EnvEndpoints: dead, EnvCommandTimeout: "200ms"}}, "info")
	r.wantCode(t, ExitUnavailable)
	wantContains(t, "stderr", r.stderr, "--command-timeout=200ms")
	r = runCLI(t, runOpts{env: map[string]string{EnvEndpoints: addr, EnvCommandTimeout: "ten"}}, "info")
	r.wantCode(t, ExitUsage)
	wantContains(t, "stderr", r.stderr, "DRUMMER_COMMAND_TIMEOUT: invalid duration")
	r = runCLI(t, runOpts{env: map[string]string{EnvEndpoints: addr, EnvDialTimeout: "5"}}, "info")
	r.wantCode(t, ExitUsage)
	wantContains(t, "stderr", r.stderr, "DRUMMER_DIAL_TIMEOUT: duration \"5\" has no unit")
	// A bad environment does not break help or version.
	r = runCLI(t, runOpts{env: map[string]string{EnvCommandTimeout: "ten"}}, "version")
	r.wantCode(t, 0)
}

func TestIsTerminal(t *testing.T) {
	if isTerminal(&strings.Builder{}) || isTerminal(nil) {
		t.Error("a non-file is not a terminal")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if isTerminal(w) {
		t.Error("a pipe is not a terminal")
	}
}
