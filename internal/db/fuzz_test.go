package db

import (
	"bytes"
	"fmt"
	"maps"
	"testing"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/drummerhq/drummer/internal/dbpb"
)

// byteSource turns fuzz input into small choices, so the structured fuzzer
// explores sequences of plausible commands over a tiny ID space (where the
// interesting collisions are) instead of mostly undecodable bytes.
type byteSource struct {
	b []byte
	i int
}

func (s *byteSource) next() byte {
	if s.i >= len(s.b) {
		return 0
	}
	v := s.b[s.i]
	s.i++
	return v
}
func (s *byteSource) done() bool       { return s.i >= len(s.b) }
func (s *byteSource) n(k int) int      { return int(s.next()) % k }
func (s *byteSource) u64(k int) uint64 { return uint64(s.n(k)) }
func (s *byteSource) host() string     { return fmt.Sprintf("h%d", s.n(5)) }
func (s *byteSource) step() dbpb.RepairStep {
	return dbpb.RepairStep(s.n(8))
}

func (s *byteSource) decision(st *State) *dbpb.Decision {
	sid := s.u64(5)
	var rid uint64
	if sh, ok := st.Shards.Lookup(sid); ok && sh.Repair != nil && s.n(4) != 0 {
		rid = sh.Repair.Id
	} else {
		rid = s.u64(6)
	}
	switch s.n(13) {
	case 0:
		h := s.host()
		return &dbpb.Decision{Kind: &dbpb.Decision_RegisterHost{RegisterHost: &dbpb.RegisterHost{
			HostId: h, RaftAddress: fmt.Sprintf("127.0.0.1:%d", 7000+s.n(6)), ApiAddress: fmt.Sprintf("127.0.0.1:%d", 8000+s.n(3)),
			Labels: map[string]string{"region": fmt.Sprintf("r%d", s.n(3))}, Apps: []string{"kv"}}}}
	case 1:
		var hosts []string
		for range s.n(5) {
			hosts = append(hosts, s.host())
		}
		return &dbpb.Decision{Kind: &dbpb.Decision_PlaceShard{PlaceShard: &dbpb.PlaceShard{ShardId: sid, HostIds: hosts}}}
	case 2:
		return &dbpb.Decision{Kind: &dbpb.Decision_StartRepair{StartRepair: &dbpb.StartRepair{
			ShardId: sid, Kind: dbpb.RepairKind(s.n(6)), NewHostId: s.host(), OldReplicaId: s.u64(8)}}}
	case 3:
		return &dbpb.Decision{Kind: &dbpb.Decision_AdvanceRepair{AdvanceRepair: &dbpb.AdvanceRepair{
			ShardId: sid, RepairId: rid, From: s.step(), To: s.step()}}}
	case 4:
		return &dbpb.Decision{Kind: &dbpb.Decision_FinishRepair{FinishRepair: &dbpb.FinishRepair{
			ShardId: sid, RepairId: rid, Outcome: dbpb.RepairOutcome(s.n(5))}}}
	case 5:
		return &dbpb.Decision{Kind: &dbpb.Decision_AddCleanup{AddCleanup: &dbpb.AddCleanup{
			HostId: s.host(), ShardId: sid, ReplicaId: s.u64(8)}}}
	case 6:
		return &dbpb.Decision{Kind: &dbpb.Decision_DoneCleanup{DoneCleanup: &dbpb.DoneCleanup{
			HostId: s.host(), ShardId: sid, ReplicaId: s.u64(8)}}}
	case 7:
		return &dbpb.Decision{Kind: &dbpb.Decision_ReplaceHost{ReplaceHost: &dbpb.ReplaceHost{OldHostId: s.host(), NewHostId: s.host()}}}
	case 8:
		return &dbpb.Decision{Kind: &dbpb.Decision_ForgetHost{ForgetHost: &dbpb.ForgetHost{HostId: s.host()}}}
	case 9:
		return &dbpb.Decision{Kind: &dbpb.Decision_EndMaintenance{EndMaintenance: &dbpb.EndMaintenance{HostId: s.host()}}}
	case 10:
		return &dbpb.Decision{Kind: &dbpb.Decision_MarkDrained{MarkDrained: &dbpb.MarkDrained{HostId: s.host()}}}
	case 11:
		return &dbpb.Decision{Kind: &dbpb.Decision_MarkBootstrapped{MarkBootstrapped: &dbpb.MarkBootstrapped{ShardId: sid}}}
	default:
		return &dbpb.Decision{Kind: &dbpb.Decision_RecordFailure{RecordFailure: &dbpb.RecordFailure{ShardId: sid}}}
	}
}

func (s *byteSource) command(st *State) *dbpb.Command {
	cmd := &dbpb.Command{Version: CommandVersion, NowUnixMs: int64(s.n(200)) * 1000}
	if s.n(16) == 0 {
		cmd.Version = uint32(s.n(3))
	}
	switch s.n(12) {
	case 0:
		cmd.Op = &dbpb.Command_AcquireEpoch{AcquireEpoch: &dbpb.AcquireEpoch{Holder: s.u64(4), ExpectEpoch: st.Epoch - uint64(s.n(2)), DeploymentId: s.u64(3)}}
	case 1:
		var specs []*dbpb.ShardSpec
		for range 1 + s.n(3) {
			sp := &dbpb.ShardSpec{ShardId: s.u64(5), App: []string{"kv", "", "a b"}[s.n(3)], Replicas: uint32(s.n(5))}
			if s.n(2) == 0 {
				sp.Regions = map[string]uint32{"r1": uint32(s.n(3)), "r2": uint32(s.n(3))}
			}
			specs = append(specs, sp)
		}
		cmd.Op = &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{Shards: specs}}
	case 2:
		cmd.Op = &dbpb.Command_DeleteShards{DeleteShards: &dbpb.DeleteShards{ShardIds: []uint64{s.u64(5)}}}
	case 3:
		cmd.Op = &dbpb.Command_SetRegions{SetRegions: &dbpb.SetRegions{Regions: map[string]uint32{"r1": uint32(s.n(3))}}}
	case 4:
		cmd.Op = &dbpb.Command_Launch{Launch: &dbpb.Launch{}}
	case 5:
		c := DefaultConfig()
		c.DeadTimeoutMs = uint64(s.n(4)) * 10000
		if s.n(2) == 0 {
			c.ShardOverrides = map[uint64]*dbpb.ShardTimeouts{s.u64(5): {DeadTimeoutMs: uint64(s.n(4)) * 10000}}
		}
		cmd.Op = &dbpb.Command_SetConfig{SetConfig: &dbpb.SetConfig{Config: c}}
	case 6:
		cmd.Op = &dbpb.Command_SetHostAdmin{SetHostAdmin: &dbpb.SetHostAdmin{HostId: s.host(), Admin: dbpb.HostAdmin(s.n(6)),
			MaintenanceUntilUnixMs: int64(s.n(3)) * 1000, MaintenanceOnly: s.n(2) == 0}}
	case 7:
		cmd.Op = &dbpb.Command_RemoveHost{RemoveHost: &dbpb.RemoveHost{HostId: s.host(), Force: s.n(2) == 0}}
	case 8:
		cmd.Op = &dbpb.Command_KvPut{KvPut: &dbpb.KVPut{Key: []string{"a", "b", ""}[s.n(3)], Value: []byte{s.next()},
			InstanceId: s.u64(3), OldInstanceId: s.u64(3), Finalize: s.n(4) == 0}}
	case 9:
		cmd.Op = &dbpb.Command_RegisterDrummer{RegisterDrummer: &dbpb.RegisterDrummer{ReplicaId: s.u64(4),
			RaftAddress: fmt.Sprintf("127.0.0.1:%d", 9000+s.n(3)), GrpcAddress: "127.0.0.1:9100"}}
	case 10:
		cmd.Op = &dbpb.Command_UnregisterDrummer{UnregisterDrummer: &dbpb.UnregisterDrummer{ReplicaId: s.u64(4)}}
	default:
		cmd.Epoch = st.Epoch - uint64(s.n(8)/7)
		var items []*dbpb.Decision
		for range 1 + s.n(4) {
			items = append(items, s.decision(st))
		}
		cmd.Op = &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: items}}
	}
	return cmd
}

// checkInvariants verifies what must hold after any sequence of commands.
func checkInvariants(t *testing.T, st *State) {
	t.Helper()
	if msg := st.CheckIndexes(); msg != "" {
		t.Fatalf("derived indexes: %s", msg)
	}
	for id, sh := range st.Shards.All() {
		if sh.Id != id || id == 0 {
			t.Fatalf("shard key %d holds record %d", id, sh.Id)
		}
		seenR := map[uint64]bool{}
		seenH := map[string]bool{}
		for _, m := range sh.Members {
			if m.ReplicaId == 0 || m.ReplicaId >= sh.NextReplicaId {
				t.Fatalf("shard %d: member %d outside allocated range (next %d)", id, m.ReplicaId, sh.NextReplicaId)
			}
			if seenR[m.ReplicaId] || seenH[m.HostId] {
				t.Fatalf("shard %d: duplicate replica or host in %v", id, sh.Members)
			}
			seenR[m.ReplicaId], seenH[m.HostId] = true, true
		}
		if len(sh.Members) > 2*MaxReplicas {
			t.Fatalf("shard %d: %d members", id, len(sh.Members))
		}
		if r := sh.Repair; r != nil {
			if r.NewReplicaId != 0 && Member(sh, r.NewReplicaId) == nil {
				t.Fatalf("shard %d: repair's new replica %d has no member record", id, r.NewReplicaId)
			}
			if r.Id == 0 || r.Id >= st.NextRepairID {
				t.Fatalf("shard %d: repair id %d (next %d)", id, r.Id, st.NextRepairID)
			}
		}
		if sh.Phase == dbpb.ShardPhase_SHARD_PHASE_PENDING && len(sh.Members) > 0 {
			t.Fatalf("pending shard %d has members", id)
		}
	}
	for k, c := range st.Cleanups {
		if _, ok := st.Hosts[k.HostID]; !ok {
			t.Fatalf("cleanup %v for an unknown host", k)
		}
		if sh, ok := st.Shards.Lookup(k.ShardID); ok {
			if m := Member(sh, k.ReplicaID); m != nil && m.HostId == k.HostID {
				t.Fatalf("cleanup %v condemns a member", k)
			}
		}
		if c.HostId != k.HostID || c.ShardId != k.ShardID || c.ReplicaId != k.ReplicaID {
			t.Fatalf("cleanup key %v holds %v", k, c)
		}
	}
	if len(st.Recent) > RecentRepairs {
		t.Fatalf("%d recent repairs", len(st.Recent))
	}
	// The derived indexes match a recount.
	members, to, repairing := map[string]int{}, map[string]int{}, map[uint64]bool{}
	for id, sh := range st.Shards.All() {
		for _, m := range sh.Members {
			members[m.HostId]++
		}
		if r := sh.Repair; r != nil {
			repairing[id] = true
			if r.NewHostId != "" {
				to[r.NewHostId]++
			}
		}
	}
	if !maps.Equal(members, st.hostMembers) || !maps.Equal(to, st.repairsTo) || !maps.Equal(repairing, st.repairing) {
		t.Fatalf("derived indexes drifted: members %v vs %v, repairsTo %v vs %v, repairing %v vs %v",
			members, st.hostMembers, to, st.repairsTo, repairing, st.repairing)
	}
}

// recordedVoters lists each shard's voter records.
func recordedVoters(st *State) map[uint64]map[uint64]bool {
	out := make(map[uint64]map[uint64]bool, st.Shards.Len())
	for id, sh := range st.Shards.All() {
		v := map[uint64]bool{}
		for _, m := range sh.Members {
			if m.Role == dbpb.Role_ROLE_VOTER {
				v[m.ReplicaId] = true
			}
		}
		out[id] = v
	}
	return out
}

// checkVoterDrops is the oracle of the DB's quorum guard: a command that
// dropped voter records of a shard it did not delete left at least one
// voter and at least a quorum of the shard's replica count.
func checkVoterDrops(t *testing.T, st *State, before map[uint64]map[uint64]bool) {
	t.Helper()
	after := recordedVoters(st)
	for id, was := range before {
		now, ok := after[id]
		if !ok {
			continue // deleted by the operator
		}
		dropped := false
		for rid := range was {
			if !now[rid] {
				dropped = true
			}
		}
		if q := Quorum(int(st.Shards.Get(id).Replicas)); dropped && (len(now) < 1 || len(now) < q) {
			t.Fatalf("shard %d: voters %v dropped to %v, below a quorum (%d) of %d replicas",
				id, was, now, q, st.Shards.Get(id).Replicas)
		}
	}
}

func FuzzApply(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 11, 0, 0, 0, 0, 1, 1, 1, 3, 2, 11, 1, 1, 2, 1, 0, 1, 2})
	f.Add([]byte("\x0a\x02\x08\x01"))
	// create shard 1, set a timeout override for it, delete it: the
	// override used to be deleted in place, under earlier views.
	f.Add([]byte{1, 1, 1, 0, 1, 0, 3, 1, 1, 1, 5, 3, 0, 1, 2, 1, 1, 2, 1})
	for i := range 16 {
		seed := make([]byte, 64)
		for j := range seed {
			seed[j] = byte(i*31 + j*7)
		}
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st := New()
		// Raw bytes first: anything must decode to a code, never a panic.
		before := st.Hash()
		if r := st.Apply(data); r.Code != dbpb.Code_CODE_OK && st.Hash() != before {
			t.Fatalf("rejected raw command (%v) changed the state", r.Code)
		}
		src := &byteSource{b: data}
		for i := 0; !src.done() && i < 200; i++ {
			cmd := src.command(st)
			b, err := Encode(cmd)
			if err != nil {
				t.Fatal(err)
			}
			h := st.Hash()
			voters := recordedVoters(st)
			view := st.Clone()
			r := st.Apply(b)
			if r.Code != dbpb.Code_CODE_OK && r.Code != dbpb.Code_CODE_NOOP && st.Hash() != h {
				t.Fatalf("command %d rejected with %v but changed the state", i, r.Code)
			}
			// Records are immutable: a view taken before a command is
			// not changed by it (views are read without the lock).
			if view.Hash() != h {
				t.Fatalf("command %d (%T) changed a record shared with an earlier view", i, cmd.Op)
			}
			checkInvariants(t, st)
			checkVoterDrops(t, st, voters)
		}
		snap, err := st.MarshalSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		back, err := FromSnapshot(snap)
		if err != nil {
			t.Fatal(err)
		}
		if back.Hash() != st.Hash() {
			t.Fatal("snapshot round trip changed the hash")
		}
	})
}

// FuzzApplyConcurrent applies generated commands through the state machine
// while another goroutine reads views and writes snapshots taken between
// batches, as the scheduler and dragonboat do: each must equal the
// sequential state at its index however apply proceeds meanwhile. Run it
// under -race too.
func FuzzApplyConcurrent(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 11, 0, 0, 0, 0, 1, 1, 1, 3, 2, 11, 1, 1, 2, 1, 0, 1, 2})
	// create shard 1, set an override for it, delete it (the Config race),
	// one command per batch.
	f.Add([]byte{0, 1, 1, 1, 0, 1, 0, 3, 1, 0, 1, 1, 5, 3, 0, 1, 2, 0, 1, 1, 2, 1})
	for i := range 8 {
		seed := make([]byte, 96)
		for j := range seed {
			seed[j] = byte(i*37 + j*11)
		}
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		type capture struct {
			index uint64
			view  *State
			snap  any // a PrepareSnapshot context
		}
		seq := New()
		m := NewStateMachine(nil)
		hashes := []uint64{seq.Hash()} // by index
		captures := make(chan capture, 256)
		// The reader records what it saw; it is compared with the
		// sequential hashes once the writer is done.
		type seen struct {
			index            uint64
			view, snap       uint64
			snapErr, recover error
		}
		var got []seen
		readerDone := make(chan struct{})
		go func() {
			defer close(readerDone)
			for c := range captures {
				for id := range c.view.Shards.All() {
					c.view.ShardTimeouts(id)
				}
				g := seen{index: c.index, view: c.view.Hash()}
				var buf bytes.Buffer
				if g.snapErr = m.SaveSnapshot(c.snap, &buf, nil, nil); g.snapErr == nil {
					var st *State
					if st, g.recover = FromSnapshot(buf.Bytes()); g.recover == nil {
						g.snap = st.Hash()
					}
				}
				got = append(got, g)
			}
		}()
		src := &byteSource{b: data}
		index := uint64(0)
		for i := 0; !src.done() && i < 200; {
			var batch []sm.Entry
			for range 1 + src.n(3) {
				b, err := Encode(src.command(seq))
				if err != nil {
					t.Fatal(err)
				}
				seq.Apply(b)
				index++
				hashes = append(hashes, seq.Hash())
				batch = append(batch, sm.Entry{Index: index, Cmd: b})
				i++
			}
			if _, err := m.Update(batch); err != nil {
				t.Fatal(err)
			}
			v, idx := m.View()
			snap, _ := m.PrepareSnapshot()
			captures <- capture{idx, v, snap}
		}
		close(captures)
		<-readerDone
		for _, g := range got {
			switch {
			case g.snapErr != nil || g.recover != nil:
				t.Fatalf("snapshot at index %d: %v %v", g.index, g.snapErr, g.recover)
			case g.view != hashes[g.index]:
				t.Fatalf("view at index %d differs from the sequential state there", g.index)
			case g.snap != hashes[g.index]:
				t.Fatalf("snapshot prepared at index %d holds another state", g.index)
			}
		}
		if h, _ := m.GetHash(); h != hashes[len(hashes)-1] {
			t.Fatal("state machine and sequential state diverged")
		}
	})
}
