package db

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/internal/dbpb"
)

const now = int64(1_700_000_000_000)

func apply(t testing.TB, s *State, cmd *dbpb.Command) Result {
	t.Helper()
	cmd.Version = CommandVersion
	if cmd.NowUnixMs == 0 {
		cmd.NowUnixMs = now
	}
	b, err := Encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return s.Apply(b)
}

func mustOK(t testing.TB, r Result) {
	t.Helper()
	if r.Code != dbpb.Code_CODE_OK {
		t.Fatalf("code = %v, want OK", r.Code)
	}
	for i, c := range r.Data {
		_ = i
		_ = c
	}
}

func decide(t testing.TB, s *State, ds ...*dbpb.Decision) []dbpb.Code {
	t.Helper()
	r := apply(t, s, &dbpb.Command{Epoch: s.Epoch, Op: &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: ds}}})
	if r.Code != dbpb.Code_CODE_OK {
		t.Fatalf("decisions: %v", r.Code)
	}
	out := make([]dbpb.Code, len(r.Data))
	for i, b := range r.Data {
		out[i] = dbpb.Code(b)
	}
	return out
}

func acquire(t testing.TB, s *State, holder uint64) {
	t.Helper()
	r := apply(t, s, &dbpb.Command{Op: &dbpb.Command_AcquireEpoch{AcquireEpoch: &dbpb.AcquireEpoch{Holder: holder, ExpectEpoch: s.Epoch, DeploymentId: 42}}})
	mustOK(t, r)
}

func regHost(id, addr, region string) *dbpb.Decision {
	return &dbpb.Decision{Kind: &dbpb.Decision_RegisterHost{RegisterHost: &dbpb.RegisterHost{
		HostId: id, RaftAddress: addr, ApiAddress: strings.Replace(addr, ":7", ":8", 1), Labels: map[string]string{"region": region}, Apps: []string{"kv"},
	}}}
}

// fixture: epoch 1, hosts h1..h4, shard 1 (3 replicas) placed on h1..h3.
func fixture(t testing.TB) *State {
	s := New()
	acquire(t, s, 1)
	codes := decide(t, s,
		regHost("h1", "127.0.0.1:7001", "r1"), regHost("h2", "127.0.0.1:7002", "r2"),
		regHost("h3", "127.0.0.1:7003", "r3"), regHost("h4", "127.0.0.1:7004", "r1"))
	for _, c := range codes {
		if c != dbpb.Code_CODE_OK {
			t.Fatalf("register: %v", codes)
		}
	}
	mustOK(t, apply(t, s, &dbpb.Command{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{
		Shards: []*dbpb.ShardSpec{{ShardId: 1, App: "kv", Replicas: 3}}}}}))
	if c := decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_PlaceShard{PlaceShard: &dbpb.PlaceShard{ShardId: 1, HostIds: []string{"h1", "h2", "h3"}}}}); c[0] != dbpb.Code_CODE_OK {
		t.Fatalf("place: %v", c)
	}
	return s
}

func TestAcquireEpochFencesDecisions(t *testing.T) {
	s := fixture(t)
	old := s.Epoch
	r := apply(t, s, &dbpb.Command{Op: &dbpb.Command_AcquireEpoch{AcquireEpoch: &dbpb.AcquireEpoch{Holder: 2, ExpectEpoch: old}}})
	mustOK(t, r)
	if got := binary.LittleEndian.Uint64(r.Data); got != old+1 || s.EpochHolder != 2 {
		t.Fatalf("epoch %d holder %d", got, s.EpochHolder)
	}
	if s.DeploymentID != 42 {
		t.Fatalf("deployment id changed to %d", s.DeploymentID)
	}
	// A competing acquisition against the old epoch loses.
	r = apply(t, s, &dbpb.Command{Op: &dbpb.Command_AcquireEpoch{AcquireEpoch: &dbpb.AcquireEpoch{Holder: 3, ExpectEpoch: old}}})
	if r.Code != dbpb.Code_CODE_STALE_EPOCH {
		t.Fatalf("stale acquire: %v", r.Code)
	}
	// The deposed holder's decisions are refused and change nothing.
	before := s.Hash()
	r = apply(t, s, &dbpb.Command{Epoch: old, Op: &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: []*dbpb.Decision{
		{Kind: &dbpb.Decision_ForgetHost{ForgetHost: &dbpb.ForgetHost{HostId: "h4"}}}}}}})
	if r.Code != dbpb.Code_CODE_STALE_EPOCH || s.Hash() != before {
		t.Fatalf("stale decision: %v, state changed %v", r.Code, s.Hash() != before)
	}
}

func TestReplicaIDsNeverReused(t *testing.T) {
	s := fixture(t)
	sh := s.Shards.Get(1)
	if sh.NextReplicaId != 4 || len(sh.Members) != 3 {
		t.Fatalf("after placement: next %d members %d", sh.NextReplicaId, len(sh.Members))
	}
	// Replace replica 3 (on h3) by a new one on h4.
	c := decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_StartRepair{StartRepair: &dbpb.StartRepair{
		ShardId: 1, Kind: dbpb.RepairKind_REPAIR_KIND_REPLACE, NewHostId: "h4", OldReplicaId: 3}}})
	if c[0] != dbpb.Code_CODE_OK {
		t.Fatalf("start repair: %v", c)
	}
	rep := s.Shards.Get(1).Repair
	if rep.NewReplicaId != 4 || rep.OldHostId != "h3" {
		t.Fatalf("repair %v", rep)
	}
	// A second repair while one is in flight is refused.
	c = decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_StartRepair{StartRepair: &dbpb.StartRepair{
		ShardId: 1, Kind: dbpb.RepairKind_REPAIR_KIND_ADD, NewHostId: "h4"}}})
	if c[0] != dbpb.Code_CODE_CONFLICT {
		t.Fatalf("second repair: %v", c)
	}
	// Walk the steps; skipping one is refused.
	step := func(from, to dbpb.RepairStep) dbpb.Code {
		return decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_AdvanceRepair{AdvanceRepair: &dbpb.AdvanceRepair{
			ShardId: 1, RepairId: rep.Id, From: from, To: to}}})[0]
	}
	if c := step(dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING, dbpb.RepairStep_REPAIR_STEP_PROMOTE); c != dbpb.Code_CODE_CONFLICT {
		t.Fatalf("skip: %v", c)
	}
	for _, p := range [][2]dbpb.RepairStep{
		{dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING, dbpb.RepairStep_REPAIR_STEP_START},
		{dbpb.RepairStep_REPAIR_STEP_START, dbpb.RepairStep_REPAIR_STEP_CATCH_UP},
		{dbpb.RepairStep_REPAIR_STEP_CATCH_UP, dbpb.RepairStep_REPAIR_STEP_PROMOTE},
		{dbpb.RepairStep_REPAIR_STEP_PROMOTE, dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD},
	} {
		if c := step(p[0], p[1]); c != dbpb.Code_CODE_OK {
			t.Fatalf("%v->%v: %v", p[0], p[1], c)
		}
	}
	if m := Member(s.Shards.Get(1), 4); m == nil || m.Role != dbpb.Role_ROLE_VOTER {
		t.Fatalf("new member after promote: %v", m)
	}
	c = decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_FinishRepair{FinishRepair: &dbpb.FinishRepair{
		ShardId: 1, RepairId: rep.Id, Outcome: dbpb.RepairOutcome_REPAIR_OUTCOME_DONE}}})
	if c[0] != dbpb.Code_CODE_OK {
		t.Fatalf("finish: %v", c)
	}
	if Member(s.Shards.Get(1), 3) != nil {
		t.Fatal("old member still recorded")
	}
	if _, ok := s.Cleanups[CleanupKey{"h3", 1, 3}]; !ok {
		t.Fatal("no cleanup recorded for the old replica")
	}
	// Delete and re-create the shard: its replica IDs continue above the old ones.
	mustOK(t, apply(t, s, &dbpb.Command{Op: &dbpb.Command_DeleteShards{DeleteShards: &dbpb.DeleteShards{ShardIds: []uint64{1}}}}))
	mustOK(t, apply(t, s, &dbpb.Command{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{
		Shards: []*dbpb.ShardSpec{{ShardId: 1, App: "kv", Replicas: 3}}}}}))
	if got := s.Shards.Get(1).NextReplicaId; got != 5 {
		t.Fatalf("re-created shard starts replica IDs at %d, want 5", got)
	}
	for _, k := range []CleanupKey{{"h1", 1, 1}, {"h2", 1, 2}, {"h4", 1, 4}} {
		if _, ok := s.Cleanups[k]; !ok {
			t.Fatalf("deleted shard left no cleanup %v", k)
		}
	}
}

func TestRollbackOnlyFromAddedState(t *testing.T) {
	s := fixture(t)
	decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_StartRepair{StartRepair: &dbpb.StartRepair{
		ShardId: 1, Kind: dbpb.RepairKind_REPAIR_KIND_REPLACE, NewHostId: "h4", OldReplicaId: 3}}})
	rep := s.Shards.Get(1).Repair
	decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_AdvanceRepair{AdvanceRepair: &dbpb.AdvanceRepair{
		ShardId: 1, RepairId: rep.Id, From: dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING, To: dbpb.RepairStep_REPAIR_STEP_START}}})
	// Failing while the new member may be in the membership is refused:
	// it must be rolled back (removed) first.
	fail := &dbpb.Decision{Kind: &dbpb.Decision_FinishRepair{FinishRepair: &dbpb.FinishRepair{
		ShardId: 1, RepairId: rep.Id, Outcome: dbpb.RepairOutcome_REPAIR_OUTCOME_FAILED, Reason: "host died"}}}
	if c := decide(t, s, fail); c[0] != dbpb.Code_CODE_CONFLICT {
		t.Fatalf("fail from START: %v", c)
	}
	if c := decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_AdvanceRepair{AdvanceRepair: &dbpb.AdvanceRepair{
		ShardId: 1, RepairId: rep.Id, From: dbpb.RepairStep_REPAIR_STEP_START, To: dbpb.RepairStep_REPAIR_STEP_ROLLBACK}}}); c[0] != dbpb.Code_CODE_OK {
		t.Fatalf("rollback: %v", c)
	}
	if c := decide(t, s, fail); c[0] != dbpb.Code_CODE_OK {
		t.Fatalf("fail after rollback: %v", c)
	}
	sh := s.Shards.Get(1)
	if Member(sh, 4) != nil || sh.Failures != 1 || sh.RetryAfterUnixMs != now+5000 {
		t.Fatalf("after failure: members %v failures %d retry %d", sh.Members, sh.Failures, sh.RetryAfterUnixMs)
	}
	if _, ok := s.Cleanups[CleanupKey{"h4", 1, 4}]; !ok {
		t.Fatal("rolled-back replica not scheduled for cleanup")
	}
	if len(s.Recent) != 1 || s.Recent[0].Outcome != dbpb.RepairOutcome_REPAIR_OUTCOME_FAILED {
		t.Fatalf("history %v", s.Recent)
	}
	// A failure only because the target host was lost (the rollback says
	// so) neither counts nor resets the shard's failures; it pauses briefly.
	decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_StartRepair{StartRepair: &dbpb.StartRepair{
		ShardId: 1, Kind: dbpb.RepairKind_REPAIR_KIND_REPLACE, NewHostId: "h4", OldReplicaId: 3}}})
	rep = s.Shards.Get(1).Repair
	decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_AdvanceRepair{AdvanceRepair: &dbpb.AdvanceRepair{
		ShardId: 1, RepairId: rep.Id, From: dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING, To: dbpb.RepairStep_REPAIR_STEP_ROLLBACK,
		Reason: "target host is dead", TargetLost: true}}})
	decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_FinishRepair{FinishRepair: &dbpb.FinishRepair{
		ShardId: 1, RepairId: rep.Id, Outcome: dbpb.RepairOutcome_REPAIR_OUTCOME_FAILED, Reason: "target host is dead; rolled back"}}})
	if sh := s.Shards.Get(1); sh.Failures != 1 || sh.RetryAfterUnixMs != now+TargetLostDelay || sh.LastFailure != "target host is dead; rolled back" {
		t.Fatalf("after a lost target: failures %d retry %d (%q)", sh.Failures, sh.RetryAfterUnixMs, sh.LastFailure)
	}
}

func TestZombieCleanupNeverCondemnsMembers(t *testing.T) {
	s := fixture(t)
	add := func(host string, replica uint64) dbpb.Code {
		return decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_AddCleanup{AddCleanup: &dbpb.AddCleanup{
			HostId: host, ShardId: 1, ReplicaId: replica, Reason: "zombie"}}})[0]
	}
	if c := add("h1", 1); c != dbpb.Code_CODE_CONFLICT {
		t.Fatalf("member condemned: %v", c)
	}
	if c := add("h1", 99); c != dbpb.Code_CODE_CONFLICT {
		t.Fatalf("unallocated replica condemned: %v", c)
	}
	if c := add("h4", 2); c != dbpb.Code_CODE_OK {
		t.Fatalf("replica 2 on the wrong host: %v", c)
	}
	if c := add("h4", 2); c != dbpb.Code_CODE_NOOP {
		t.Fatalf("duplicate: %v", c)
	}
}

func TestKVSeedSemantics(t *testing.T) {
	s := New()
	put := func(key string, inst, old uint64, fin bool) dbpb.Code {
		return apply(t, s, &dbpb.Command{Op: &dbpb.Command_KvPut{KvPut: &dbpb.KVPut{Key: key, Value: []byte("v"), InstanceId: inst, OldInstanceId: old, Finalize: fin}}}).Code
	}
	for _, tc := range []struct {
		inst, old uint64
		fin       bool
		want      dbpb.Code
	}{
		{1, 0, false, dbpb.Code_CODE_OK},          // create
		{1, 0, false, dbpb.Code_CODE_OK},          // renew by the owner
		{2, 0, false, dbpb.Code_CODE_KV_REJECTED}, // someone else
		{2, 1, false, dbpb.Code_CODE_OK},          // compare-and-swap takeover
		{1, 0, false, dbpb.Code_CODE_KV_REJECTED}, // old owner lost it
		{2, 0, true, dbpb.Code_CODE_OK},           // finalize
		{2, 0, false, dbpb.Code_CODE_KV_FINALIZED},
	} {
		if got := put("election", tc.inst, tc.old, tc.fin); got != tc.want {
			t.Fatalf("put(inst=%d old=%d fin=%v) = %v, want %v", tc.inst, tc.old, tc.fin, got, tc.want)
		}
	}
	if got := put("", 1, 0, false); got != dbpb.Code_CODE_INVALID {
		t.Fatalf("empty key: %v", got)
	}
}

func TestBadCommandsChangeNothing(t *testing.T) {
	s := fixture(t)
	before := s.Hash()
	bad := []*dbpb.Command{
		{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{Shards: []*dbpb.ShardSpec{{ShardId: 0, App: "kv", Replicas: 3}}}}},
		{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{Shards: []*dbpb.ShardSpec{{ShardId: 9, App: "kv", Replicas: 3}, {ShardId: 1, App: "kv", Replicas: 3}}}}},
		{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{Shards: []*dbpb.ShardSpec{{ShardId: 9, App: "k v", Replicas: 3}}}}},
		{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{Shards: []*dbpb.ShardSpec{{ShardId: 9, App: "kv", Replicas: 3, Regions: map[string]uint32{"r1": 2}}}}}},
		{Op: &dbpb.Command_DeleteShards{DeleteShards: &dbpb.DeleteShards{ShardIds: []uint64{1, 77}}}},
		{Op: &dbpb.Command_SetConfig{SetConfig: &dbpb.SetConfig{Config: &dbpb.Config{ReportIntervalMs: 1000, SuspectTimeoutMs: 500}}}},
		{Op: &dbpb.Command_RemoveHost{RemoveHost: &dbpb.RemoveHost{HostId: "h1"}}},
		{Op: &dbpb.Command_SetRegions{SetRegions: &dbpb.SetRegions{Regions: map[string]uint32{"r 1": 1}}}},
		{},
	}
	for i, cmd := range bad {
		if r := apply(t, s, cmd); r.Code == dbpb.Code_CODE_OK {
			t.Fatalf("bad command %d accepted", i)
		}
	}
	if s.Hash() != before {
		t.Fatal("rejected commands changed the state")
	}
	if r := s.Apply([]byte{0xff, 0xff, 0xff}); r.Code != dbpb.Code_CODE_INVALID {
		t.Fatalf("garbage: %v", r.Code)
	}
	if r := apply(t, s, &dbpb.Command{Version: 2}); r.Code == dbpb.Code_CODE_OK {
		t.Fatal("unknown version accepted")
	}
}

func TestHostReplacementAndForget(t *testing.T) {
	s := fixture(t)
	// A wiped host comes back on h3's address with a new identity: while h3
	// holds the address, the registration conflicts.
	if c := decide(t, s, regHost("h3b", "127.0.0.1:7003", "r3")); c[0] != dbpb.Code_CODE_CONFLICT {
		t.Fatalf("duplicate address: %v", c)
	}
	c := decide(t, s,
		&dbpb.Decision{Kind: &dbpb.Decision_ReplaceHost{ReplaceHost: &dbpb.ReplaceHost{OldHostId: "h3", NewHostId: "h3b"}}},
		regHost("h3b", "127.0.0.1:7003", "r3"))
	if c[0] != dbpb.Code_CODE_OK || c[1] != dbpb.Code_CODE_OK {
		t.Fatalf("replace: %v", c)
	}
	if s.Hosts["h3"].Admin != dbpb.HostAdmin_HOST_ADMIN_REPLACED {
		t.Fatal("old identity not marked replaced")
	}
	// h3 still holds a member: it cannot be forgotten yet.
	if c := decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_ForgetHost{ForgetHost: &dbpb.ForgetHost{HostId: "h3"}}}); c[0] != dbpb.Code_CODE_CONFLICT {
		t.Fatalf("forget with members: %v", c)
	}
	if c := decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_ForgetHost{ForgetHost: &dbpb.ForgetHost{HostId: "h4"}}}); c[0] != dbpb.Code_CODE_OK {
		t.Fatalf("forget idle host: %v", c)
	}
	if _, ok := s.Hosts["h4"]; ok {
		t.Fatal("h4 still registered")
	}
}

func TestSnapshotRoundTripIsDeterministic(t *testing.T) {
	s := fixture(t)
	apply(t, s, &dbpb.Command{Op: &dbpb.Command_KvPut{KvPut: &dbpb.KVPut{Key: "a", Value: []byte("1"), InstanceId: 1}}})
	apply(t, s, &dbpb.Command{Op: &dbpb.Command_SetRegions{SetRegions: &dbpb.SetRegions{Regions: map[string]uint32{"r1": 1, "r2": 1, "r3": 1}}}})
	a, err := s.MarshalSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		b, _ := s.MarshalSnapshot()
		if !bytes.Equal(a, b) {
			t.Fatal("snapshot encoding not deterministic")
		}
	}
	r, err := FromSnapshot(a)
	if err != nil {
		t.Fatal(err)
	}
	if r.Hash() != s.Hash() {
		t.Fatal("hash differs after round trip")
	}
	if _, err := FromSnapshot([]byte("garbage")); err == nil {
		t.Fatal("garbage snapshot accepted")
	}
	bad := s.ToSnapshot()
	bad = proto.CloneOf(bad)
	bad.Version = 99
	b, _ := proto.Marshal(bad)
	if _, err := FromSnapshot(b); err == nil {
		t.Fatal("future snapshot version accepted")
	}
}

func TestRecentRepairsBounded(t *testing.T) {
	s := fixture(t)
	for i := range RecentRepairs + 20 {
		decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_StartRepair{StartRepair: &dbpb.StartRepair{
			ShardId: 1, Kind: dbpb.RepairKind_REPAIR_KIND_ADD, NewHostId: "h4", Reason: fmt.Sprint(i)}}})
		rep := s.Shards.Get(1).Repair
		decide(t, s, &dbpb.Decision{Kind: &dbpb.Decision_FinishRepair{FinishRepair: &dbpb.FinishRepair{
			ShardId: 1, RepairId: rep.Id, Outcome: dbpb.RepairOutcome_REPAIR_OUTCOME_CANCELLED}}})
	}
	if len(s.Recent) != RecentRepairs {
		t.Fatalf("recent repairs: %d", len(s.Recent))
	}
	// Every cancelled add left a cleanup, one per allocated replica ID.
	if n := len(s.CleanupsFor("h4")); n != RecentRepairs+20 {
		t.Fatalf("cleanups on h4: %d", n)
	}
}
