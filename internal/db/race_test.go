package db

import (
	"bytes"
	"sync"
	"testing"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/drummerhq/drummer/internal/dbpb"
)

func withOverride(t testing.TB, s *State, shardID uint64) {
	t.Helper()
	c := DefaultConfig()
	c.ShardOverrides = map[uint64]*dbpb.ShardTimeouts{shardID: {DeadTimeoutMs: 60_000}}
	mustOK(t, apply(t, s, &dbpb.Command{Op: &dbpb.Command_SetConfig{SetConfig: &dbpb.SetConfig{Config: c}}}))
}

func deleteCmd(t testing.TB, ids ...uint64) []byte {
	t.Helper()
	b, err := Encode(&dbpb.Command{Version: CommandVersion, NowUnixMs: now,
		Op: &dbpb.Command_DeleteShards{DeleteShards: &dbpb.DeleteShards{ShardIds: ids}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A view (Clone) shares records with the live state; deleting a shard must
// not delete its timeout override from the Config the view holds (it did,
// in place: a data race with the view's readers and the snapshot writer).
func TestDeleteShardsLeavesEarlierViewsConfig(t *testing.T) {
	s := fixture(t)
	withOverride(t, s, 1)
	v := s.Clone()
	before := v.Hash()
	if r := s.Apply(deleteCmd(t, 1)); r.Code != dbpb.Code_CODE_OK {
		t.Fatalf("delete: %v", r.Code)
	}
	if _, ok := v.Config.ShardOverrides[1]; !ok {
		t.Fatal("deleting shard 1 removed its override from a view taken before")
	}
	if v.Hash() != before {
		t.Fatal("applying a command changed a view taken before it")
	}
	if _, ok := s.Config.ShardOverrides[1]; ok {
		t.Fatal("the deleted shard's override is still in force")
	}
}

// A snapshot prepared at index i holds the state of index i, even when the
// next entries are applied before it is written.
func TestSnapshotIsOfThePreparedIndex(t *testing.T) {
	m := NewStateMachine(nil)
	m.st = fixture(t)
	withOverride(t, m.st, 1)
	want := m.st.Hash()
	ctx, err := m.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Update([]sm.Entry{{Index: 1, Cmd: deleteCmd(t, 1)}}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := m.SaveSnapshot(ctx, &buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	back, err := FromSnapshot(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if back.Hash() != want {
		t.Fatalf("snapshot holds a later entry's change: override of shard 1 present %v",
			back.Config.ShardOverrides[1] != nil)
	}
}

// Apply runs concurrently with snapshot writing and with readers of views,
// as it does in a drummer server; run under -race.
func TestApplyConcurrentWithSnapshotAndReads(t *testing.T) {
	m := NewStateMachine(nil)
	m.st = fixture(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(2)
	go func() { // the snapshot writer
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, _ := m.PrepareSnapshot()
			if err := m.SaveSnapshot(ctx, &bytes.Buffer{}, nil, nil); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() { // the scheduler and API readers
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			v, _ := m.View()
			for id := range v.Config.ShardOverrides {
				v.ShardTimeouts(id)
			}
			_ = v.Hash()
		}
	}()
	idx := uint64(0)
	for i := range 200 {
		id := uint64(2 + i)
		idx++
		create, _ := Encode(&dbpb.Command{Version: CommandVersion, NowUnixMs: now, Op: &dbpb.Command_CreateShards{
			CreateShards: &dbpb.CreateShards{Shards: []*dbpb.ShardSpec{{ShardId: id, App: "kv", Replicas: 3}}}}})
		c := DefaultConfig()
		c.ShardOverrides = map[uint64]*dbpb.ShardTimeouts{id: {DeadTimeoutMs: 60_000}}
		cfg, _ := Encode(&dbpb.Command{Version: CommandVersion, NowUnixMs: now, Op: &dbpb.Command_SetConfig{SetConfig: &dbpb.SetConfig{Config: c}}})
		// Separate batches, as separate proposals are: readers see the
		// override between them.
		for _, b := range [][]sm.Entry{{{Index: idx, Cmd: create}, {Index: idx + 1, Cmd: cfg}}, {{Index: idx + 2, Cmd: deleteCmd(t, id)}}} {
			out, err := m.Update(b)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range out {
				if dbpb.Code(e.Result.Value) != dbpb.Code_CODE_OK {
					t.Fatalf("entry %d: %v", e.Index, dbpb.Code(e.Result.Value))
				}
			}
		}
		idx += 2
	}
	close(stop)
	wg.Wait()
}
