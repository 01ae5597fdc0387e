package db

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/internal/dbpb"
)

func startRepair(sid uint64, kind dbpb.RepairKind, host string, old uint64) *dbpb.Decision {
	return &dbpb.Decision{Kind: &dbpb.Decision_StartRepair{StartRepair: &dbpb.StartRepair{
		ShardId: sid, Kind: kind, NewHostId: host, OldReplicaId: old}}}
}

func finish(sid, rid uint64, o dbpb.RepairOutcome) *dbpb.Decision {
	return &dbpb.Decision{Kind: &dbpb.Decision_FinishRepair{FinishRepair: &dbpb.FinishRepair{ShardId: sid, RepairId: rid, Outcome: o}}}
}

func advance(sid, rid uint64, from, to dbpb.RepairStep) *dbpb.Decision {
	return &dbpb.Decision{Kind: &dbpb.Decision_AdvanceRepair{AdvanceRepair: &dbpb.AdvanceRepair{ShardId: sid, RepairId: rid, From: from, To: to}}}
}

// removeVoter runs a REMOVE repair of a recorded voter to its end and
// returns the codes of its start and finish.
func removeVoter(t *testing.T, s *State, sid, id uint64) (start, done dbpb.Code) {
	t.Helper()
	start = decide(t, s, startRepair(sid, dbpb.RepairKind_REPAIR_KIND_REMOVE, "", id))[0]
	if start != dbpb.Code_CODE_OK {
		return start, start
	}
	return start, decide(t, s, finish(sid, s.Shards.Get(sid).Repair.Id, dbpb.RepairOutcome_REPAIR_OUTCOME_DONE))[0]
}

func TestVoterDropAllowed(t *testing.T) {
	voters := func(replicas uint32, ids ...uint64) *dbpb.Shard {
		sh := &dbpb.Shard{Id: 1, Replicas: replicas}
		for _, id := range ids {
			sh.Members = append(sh.Members, &dbpb.Replica{ReplicaId: id, Role: dbpb.Role_ROLE_VOTER})
		}
		sh.Members = append(sh.Members, &dbpb.Replica{ReplicaId: 99, Role: dbpb.Role_ROLE_NON_VOTING})
		return sh
	}
	for _, c := range []struct {
		sh   *dbpb.Shard
		drop []uint64
		want bool
	}{
		{voters(3, 1, 2, 3), []uint64{3}, true},
		{voters(3, 1, 2, 3), []uint64{2, 3}, false},
		{voters(3, 1, 2), []uint64{2}, false},
		{voters(3, 1, 2, 3, 4), []uint64{4}, true},
		{voters(5, 1, 2, 3), []uint64{3}, false},
		{voters(1, 1, 2), []uint64{1}, true},
		{voters(1, 1), []uint64{1}, false},
		{voters(1, 1), []uint64{99}, true}, // not a voter
		{voters(3, 1), []uint64{7}, true},  // not recorded
		{voters(0, 1), []uint64{1}, false}, // never the last voter
		{nil, []uint64{1}, false},
	} {
		if got := VoterDropAllowed(c.sh, c.drop...); got != c.want {
			t.Errorf("VoterDropAllowed(%v, %v) = %v, want %v", c.sh, c.drop, got, c.want)
		}
	}
}

// The DB refuses, with CODE_QUORUM and without changing anything, every
// decision that would leave fewer recorded voters than a quorum of the
// shard's replica count, whatever the scheduler believed it observed.
func TestQuorumGuardOnRemove(t *testing.T) {
	s := fixture(t) // shard 1: voters 1, 2, 3 on h1..h3, 3 replicas wanted
	mustOK(t, apply(t, s, &dbpb.Command{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{
		Shards: []*dbpb.ShardSpec{{ShardId: 2, App: "kv", Replicas: 3}}}}}))

	// One voter of three may go (2 left = quorum of 3)...
	if start, done := removeVoter(t, s, 1, 3); start != dbpb.Code_CODE_OK || done != dbpb.Code_CODE_OK {
		t.Fatalf("removing the first voter: start %v, done %v", start, done)
	}
	if Voters(s.Shards.Get(1)) != 2 {
		t.Fatalf("voters after one removal: %d", Voters(s.Shards.Get(1)))
	}
	// ...but not a second one: starting it is refused.
	before := s.Hash()
	if c := decide(t, s, startRepair(1, dbpb.RepairKind_REPAIR_KIND_REMOVE, "", 2))[0]; c != dbpb.Code_CODE_QUORUM {
		t.Fatalf("removing a second voter: %v, want CODE_QUORUM", c)
	}
	if s.Hash() != before {
		t.Fatal("a refused removal changed the state")
	}
	// Removing an unrecorded replica (a late config change) drops no voter.
	if c := decide(t, s, startRepair(1, dbpb.RepairKind_REPAIR_KIND_REMOVE, "", 3))[0]; c != dbpb.Code_CODE_OK {
		t.Fatalf("removing an unrecorded replica: %v", c)
	}
	if c := decide(t, s, finish(1, s.Shards.Get(1).Repair.Id, dbpb.RepairOutcome_REPAIR_OUTCOME_DONE))[0]; c != dbpb.Code_CODE_OK {
		t.Fatalf("finishing the removal of an unrecorded replica: %v", c)
	}
}

// A REMOVE repair started while it was safe cannot finish once it is not
// (here the record is edited directly to want 5 replicas, as only a bug or a
// corrupt input could), and the refusal changes nothing.
func TestQuorumGuardOnFinish(t *testing.T) {
	s := fixture(t)
	if c := decide(t, s, startRepair(1, dbpb.RepairKind_REPAIR_KIND_REMOVE, "", 3))[0]; c != dbpb.Code_CODE_OK {
		t.Fatalf("start: %v", c)
	}
	sh := s.Shards.Get(1)
	ns := proto.CloneOf(sh)
	ns.Replicas = 5 // quorum 3: dropping a voter of 3 leaves 2
	s.putShard(ns)
	before := s.Hash()
	if c := decide(t, s, finish(1, ns.Repair.Id, dbpb.RepairOutcome_REPAIR_OUTCOME_DONE))[0]; c != dbpb.Code_CODE_QUORUM {
		t.Fatalf("finish: %v, want CODE_QUORUM", c)
	}
	if s.Hash() != before || Voters(s.Shards.Get(1)) != 3 || len(s.CleanupsFor("h3")) != 0 {
		t.Fatal("a refused finish changed the state")
	}
	// Calling the removal off is always allowed.
	if c := decide(t, s, finish(1, ns.Repair.Id, dbpb.RepairOutcome_REPAIR_OUTCOME_CANCELLED))[0]; c != dbpb.Code_CODE_OK {
		t.Fatalf("cancel: %v", c)
	}
}

// A replace finishes normally: the new voter takes the old one's place.
func TestQuorumGuardOnReplaceAndRollback(t *testing.T) {
	s := fixture(t)
	if c := decide(t, s, startRepair(1, dbpb.RepairKind_REPAIR_KIND_REPLACE, "h4", 3))[0]; c != dbpb.Code_CODE_OK {
		t.Fatalf("start: %v", c)
	}
	rid := s.Shards.Get(1).Repair.Id
	for _, st := range [][2]dbpb.RepairStep{
		{dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING, dbpb.RepairStep_REPAIR_STEP_START},
		{dbpb.RepairStep_REPAIR_STEP_START, dbpb.RepairStep_REPAIR_STEP_CATCH_UP},
		{dbpb.RepairStep_REPAIR_STEP_CATCH_UP, dbpb.RepairStep_REPAIR_STEP_PROMOTE},
		{dbpb.RepairStep_REPAIR_STEP_PROMOTE, dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD},
	} {
		if c := decide(t, s, advance(1, rid, st[0], st[1]))[0]; c != dbpb.Code_CODE_OK {
			t.Fatalf("advance %v: %v", st, c)
		}
	}
	if Voters(s.Shards.Get(1)) != 4 {
		t.Fatalf("voters after promote: %d", Voters(s.Shards.Get(1)))
	}
	if c := decide(t, s, finish(1, rid, dbpb.RepairOutcome_REPAIR_OUTCOME_DONE))[0]; c != dbpb.Code_CODE_OK {
		t.Fatalf("finish replace: %v", c)
	}
	if Voters(s.Shards.Get(1)) != 3 || Member(s.Shards.Get(1), 3) != nil {
		t.Fatalf("after replace: %v", s.Shards.Get(1).Members)
	}
}
