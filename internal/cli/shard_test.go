package cli

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
)

func TestShardCreate(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	r := runAt(t, addr, "shard", "create", "--shard-id", "10", "--count", "5", "--replicas", "3", "--app", "kv",
		"--regions", "r1:1,r2:1,r3:1", "--allow-pending")
	r.wantCode(t, 0)
	req := f.lastReq("CreateShards").(*drummerpb.CreateShardsRequest)
	if req.FirstShardId != 10 || req.Count != 5 || req.Replicas != 3 || req.App != "kv" || !req.AllowPending ||
		!maps.Equal(req.Regions, map[string]uint32{"r1": 1, "r2": 1, "r3": 1}) {
		t.Errorf("sent %v", req)
	}
	if got := strings.TrimSpace(r.stdout); got != "created shards 10-14: app kv, 3 replicas, regions r1:1,r2:1,r3:1" {
		t.Errorf("stdout %q", got)
	}

	r = runAt(t, addr, "-o", "json", "shard", "create", "--shard-id", "1", "--replicas", "5", "--app", "kv")
	r.wantCode(t, 0)
	req = f.lastReq("CreateShards").(*drummerpb.CreateShardsRequest)
	if req.Count != 1 || req.Regions != nil || req.AllowPending {
		t.Errorf("sent %v", req)
	}
	if strings.TrimSpace(r.stdout) != "{\n  \"shard_ids\": [\n    1\n  ]\n}" {
		t.Errorf("json %q", r.stdout)
	}

	// Even replica counts work, with a warning.
	r = runAt(t, addr, "shard", "create", "--shard-id", "3", "--replicas", "4", "--app", "kv")
	r.wantCode(t, 0)
	wantContains(t, "stderr", r.stderr, "Warning: 4 replicas tolerate no more failures than 3")
	wantContains(t, "stdout", r.stdout, "created shard 3: app kv, 4 replicas")

	f.setErr("CreateShards", status.Error(codes.AlreadyExists, "shard 3 already exists"))
	r = runAt(t, addr, "shard", "create", "--shard-id", "3", "--replicas", "3", "--app", "kv")
	r.wantCode(t, ExitConflict)
	wantContains(t, "stderr", r.stderr, "Error: create shard 3: shard 3 already exists (AlreadyExists)")
	f.setErr("CreateShards", status.Error(codes.InvalidArgument, "no host runs app kv"))
	r = runAt(t, addr, "shard", "create", "--shard-id", "3", "--replicas", "3", "--app", "kv")
	r.wantCode(t, ExitUsage)
}

// Bad input is caught locally: exit 2, a message that says what to fix,
// and no request reaches the server.
func TestShardCreateValidation(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	base := map[string]string{"--shard-id": "1", "--replicas": "3", "--app": "kv"}
	for _, tc := range []struct {
		set  map[string]string
		drop string
		msg  string
	}{
		{set: map[string]string{"--shard-id": "0"}, msg: "shard ID 0 is reserved"},
		{drop: "--shard-id", msg: "--shard-id is required"},
		{set: map[string]string{"--shard-id": "-1"}, msg: `invalid argument "-1" for "--shard-id"`},
		{set: map[string]string{"--replicas": "0"}, msg: "--replicas 0 is out of range; a shard has 1 to 9 replicas"},
		{set: map[string]string{"--replicas": "10"}, msg: "--replicas 10 is out of range"},
		{drop: "--replicas", msg: "--replicas is required"},
		{set: map[string]string{"--count": "0"}, msg: "--count must be at least 1"},
		{set: map[string]string{"--count": "100001"}, msg: "more than 100000 shards"},
		{set: map[string]string{"--shard-id": "18446744073709551615", "--count": "2"}, msg: "overflow"},
		{drop: "--app", msg: "--app is required"},
		{set: map[string]string{"--app": "my app"}, msg: `invalid --app "my app"`},
		{set: map[string]string{"--regions": "r1:1,r2:1"}, msg: "--regions r1:1,r2:1 place 2 replicas but --replicas is 3; make the counts add up to 3"},
		{set: map[string]string{"--regions": "r1:2,r2:2"}, msg: "place 4 replicas but --replicas is 3"},
		{set: map[string]string{"--regions": "r1"}, msg: "--regions: region \"r1\" has no replica count"},
		{set: map[string]string{"--regions": "r1:0,r2:3"}, msg: "must be a number from 1 to 9"},
		{set: map[string]string{"--regions": ""}, msg: "empty region spec"},
		{set: map[string]string{"--regions": "r1:1,r1:2"}, msg: "given twice"},
	} {
		var args []string
		for _, k := range []string{"--shard-id", "--replicas", "--app", "--count", "--regions"} {
			v, ok := base[k]
			if s, set := tc.set[k]; set {
				v, ok = s, true
			}
			if ok && k != tc.drop {
				args = append(args, k+"="+v)
			}
		}
		r := runAt(t, addr, append([]string{"shard", "create"}, args...)...)
		r.wantCode(t, ExitUsage)
		wantContains(t, "stderr", r.stderr, tc.msg, "Run 'drummercmd shard create --help' for usage.")
	}
	if m := f.mutations(); len(m) != 0 {
		t.Errorf("bad input reached the server: %v", m)
	}
	r := runAt(t, addr, "shard", "create", "extra", "--shard-id", "1", "--replicas", "3", "--app", "kv")
	r.wantCode(t, ExitUsage)
}

func TestShardDelete(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	for _, tc := range []struct {
		args []string
		want []uint64
		out  string
	}{
		{[]string{"7"}, []uint64{7}, "deleted shard 7;"},
		{[]string{"1-3", "--yes"}, []uint64{1, 2, 3}, "deleted shards 1-3;"},
		{[]string{"1,5", "9", "-y"}, []uint64{1, 5, 9}, "deleted shards 1,5,9;"},
		{[]string{"--shard-id", "4", "--count", "3", "--yes"}, []uint64{4, 5, 6}, "deleted shards 4-6;"},
		{[]string{"4", "--count", "2", "--yes"}, []uint64{4, 5}, "deleted shards 4-5;"},
		{[]string{"--shard-id", "8"}, []uint64{8}, "deleted shard 8;"},
	} {
		r := runAt(t, addr, append([]string{"shard", "delete"}, tc.args...)...)
		r.wantCode(t, 0)
		wantContains(t, "stdout", r.stdout, tc.out)
		if req := f.lastReq("DeleteShards").(*drummerpb.DeleteShardsRequest); !slices.Equal(req.ShardIds, tc.want) {
			t.Errorf("%v sent %v", tc.args, req.ShardIds)
		}
	}
	r := runAt(t, addr, "-o", "json", "shard", "delete", "7")
	r.wantCode(t, 0)
	var got shardIDsJSON
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || !slices.Equal(got.ShardIDs, []uint64{7}) {
		t.Errorf("json %q", r.stdout)
	}

	n := f.called("DeleteShards")
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"1-3"}, "refusing to delete 3 shards (1-3) without confirmation; pass --yes"},
		{[]string{"--shard-id", "1", "--count", "2"}, "refusing to delete 2 shards"},
		{nil, "no shards given"},
		{[]string{"0"}, "shard ID 0 is reserved"},
		{[]string{"1", "--shard-id", "1"}, "either as arguments or with --shard-id"},
		{[]string{"1", "2", "--count", "2"}, "--count needs exactly one first shard ID"},
		{[]string{"1", "--count", "0"}, "--count must be at least 1"},
		{[]string{"1,1"}, "given twice"},
		{[]string{"x"}, `invalid shard ID "x"`},
	} {
		r := runAt(t, addr, append([]string{"shard", "delete"}, tc.args...)...)
		r.wantCode(t, ExitUsage)
		wantContains(t, "stderr", r.stderr, tc.msg)
	}
	if f.called("DeleteShards") != n {
		t.Error("bad input reached the server")
	}

	f.setErr("DeleteShards", status.Error(codes.NotFound, "shard 99 not found"))
	r = runAt(t, addr, "shard", "delete", "99")
	r.wantCode(t, ExitNotFound)
	wantContains(t, "stderr", r.stderr, "Error: delete shards 99: shard 99 not found (NotFound)")
}

func TestShardDeletePrompt(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	r := runCLI(t, runOpts{tty: true, stdin: "y\n"}, "--endpoints", addr, "shard", "delete", "1-3")
	r.wantCode(t, 0)
	wantContains(t, "stderr", r.stderr, "Delete 3 shards (1-3) and all their data? This cannot be undone. [y/N] ")
	if f.called("DeleteShards") != 1 {
		t.Fatal("confirmed delete not sent")
	}
	for _, answer := range []string{"n\n", "\n", "", "yess\n"} {
		r = runCLI(t, runOpts{tty: true, stdin: answer}, "--endpoints", addr, "shard", "delete", "1-3")
		r.wantCode(t, ExitFailure)
		wantContains(t, "stderr", r.stderr, "aborted; nothing deleted")
	}
	if f.called("DeleteShards") != 1 {
		t.Error("declined delete was sent")
	}
}

func TestShardListTable(t *testing.T) {
	f := newFake()
	f.shards = []*drummerpb.ShardStatus{repairingShard(), healthyShard(2), shardWithHealth(1, "pending")}
	f.shards[2].LeaderReplicaId = 0
	addr := serve(t, f)
	r := runAt(t, addr, "shard", "list")
	r.wantCode(t, 0)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%q", r.stdout)
	}
	if got := strings.Fields(lines[0]); !slices.Equal(got, []string{"SHARD", "APP", "HEALTH", "REPLICAS", "LEADER", "TERM", "REPAIR"}) {
		t.Errorf("header %q", got)
	}
	for i, want := range [][]string{
		{"1", "kv", "pending", "2/3", "-", "4", "-"},
		{"2", "kv", "healthy", "3/3", "1", "4", "-"},
		{"7", "kv", "under_replicated", "2/3", "1", "4", "repair", "catch_up", "3/6"},
	} {
		if got := strings.Fields(lines[i+1]); !slices.Equal(got, want) {
			t.Errorf("row %d = %q, want %q", i+1, got, want)
		}
	}
	// Shard selection is passed on.
	r = runAt(t, addr, "shard", "list", "2,7")
	r.wantCode(t, 0)
	if req := f.lastReq("ListShards").(*drummerpb.ListShardsRequest); !slices.Equal(req.ShardIds, []uint64{2, 7}) {
		t.Errorf("sent %v", req)
	}
	r = runAt(t, addr, "shard", "list", "0")
	r.wantCode(t, ExitUsage)
}

func TestShardListJSON(t *testing.T) {
	f := newFake()
	f.shards = []*drummerpb.ShardStatus{repairingShard(), healthyShard(2)}
	r := runAt(t, serve(t, f), "shard", "list", "-o", "json")
	r.wantCode(t, 0)
	var got []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err, r.stdout)
	}
	if len(got) != 2 || got[0]["shard_id"] != float64(2) || got[1]["shard_id"] != float64(7) {
		t.Fatalf("order/ids: %v", got)
	}
	keys := []string{"shard_id", "app", "replicas_desired", "regions", "health", "leader_replica_id", "term",
		"config_change_id", "members", "explanation", "repair"}
	for _, s := range got {
		for _, k := range keys {
			if _, ok := s[k]; !ok {
				t.Errorf("shard %v lacks %q", s["shard_id"], k)
			}
		}
		if len(s) != len(keys) {
			t.Errorf("shard %v has extra fields: %v", s["shard_id"], slices.Collect(maps.Keys(s)))
		}
	}
	healthy := got[0]
	if healthy["repair"] != nil || healthy["health"] != "healthy" || healthy["leader_replica_id"] != float64(1) ||
		healthy["replicas_desired"] != float64(3) || healthy["app"] != "kv" {
		t.Errorf("healthy shard: %v", healthy)
	}
	if ex, ok := healthy["explanation"].([]any); !ok || len(ex) != 0 {
		t.Errorf("explanation of a healthy shard must be []: %v", healthy["explanation"])
	}
	if rg, ok := healthy["regions"].(map[string]any); !ok || len(rg) != 0 {
		t.Errorf("regions must be {}: %v", healthy["regions"])
	}
	m := healthy["members"].([]any)[0].(map[string]any)
	for k, v := range map[string]any{"replica_id": float64(1), "host_id": hostA, "raft_address": "10.0.0.1:7001",
		"api_address": "10.0.0.1:7011", "role": "voter", "state": "live", "is_leader": true} {
		if m[k] != v {
			t.Errorf("member %s = %v, want %v", k, m[k], v)
		}
	}
	rep := got[1]["repair"].(map[string]any)
	for k, v := range map[string]any{"id": float64(12), "shard_id": float64(7), "kind": "repair", "step": "catch_up",
		"step_index": float64(3), "step_count": float64(6), "old_replica_id": float64(3), "old_host_id": hostC,
		"new_replica_id": float64(4), "new_host_id": hostB, "started_at": "2026-11-24T11:59:00.000Z",
		"step_deadline": "2026-11-24T12:00:42.000Z", "finished_at": nil, "outcome": "", "reason": ""} {
		if rep[k] != v {
			t.Errorf("repair %s = %v, want %v", k, rep[k], v)
		}
	}
	if ex := got[1]["explanation"].([]any); len(ex) != 2 {
		t.Errorf("explanation %v", ex)
	}
}

func TestShardStatus(t *testing.T) {
	f := newFake()
	f.shards = []*drummerpb.ShardStatus{repairingShard(), healthyShard(2)}
	addr := serve(t, f)
	r := runAt(t, addr, "shard", "status", "7")
	r.wantCode(t, 0)
	wantKV(t, r.stdout, "Shard", "7")
	wantKV(t, r.stdout, "Health", "under_replicated")
	wantKV(t, r.stdout, "Replicas", "2 live of 3 desired")
	wantKV(t, r.stdout, "Regions", "r1:2,r2:1")
	wantKV(t, r.stdout, "Leader", "replica 1 (term 4)")
	wantKV(t, r.stdout, "Config change ID", "9")
	wantContains(t, "stdout", r.stdout,
		"REPLICA  HOST      RAFT ADDRESS   API ADDRESS    ROLE   STATE  LEADER\n",
		"1        3f2a9c1e  10.0.0.1:7001  10.0.0.1:7011  voter  live   *\n",
		"3        c0ffee00  10.0.0.3:7001  10.0.0.3:7011  voter  dead   -\n",
		"Explanation:\n  - replica 3 on 10.0.0.3:7001 dead for 5m0s\n  - repair 12 replacing it\n",
		"Repair in flight: #12 repair (3@c0ffee00 -> 4@3f2b7d00)\n",
		"  step 3/6: catch_up\n",
		"  deadline: 2026-11-24 12:00:42 UTC (in 42s)\n",
		"  started: 2026-11-24 11:59:00 UTC (1m ago)\n")
	r = runAt(t, addr, "shard", "status", "2")
	r.wantCode(t, 0)
	wantKV(t, r.stdout, "Regions", "deployment default")
	wantContains(t, "stdout", r.stdout, "Repair in flight: none")
	if strings.Contains(r.stdout, "Explanation") {
		t.Error("healthy shard has an explanation section")
	}

	r = runAt(t, addr, "shard", "status", "7", "-o", "json")
	r.wantCode(t, 0)
	var s shardJSON
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || s.ShardID != 7 || s.Repair == nil || s.Repair.StepIndex != 3 {
		t.Errorf("json: %v %+v", err, s)
	}

	r = runAt(t, addr, "shard", "status", "99")
	r.wantCode(t, ExitNotFound)
	wantContains(t, "stderr", r.stderr, "Error: get shard 99: shard 99 not found (NotFound)")
	r = runAt(t, addr, "shard", "status", "0")
	r.wantCode(t, ExitUsage)
	r = runAt(t, addr, "shard", "status")
	r.wantCode(t, ExitUsage)
	wantContains(t, "stderr", r.stderr, "want one shard ID")
}
