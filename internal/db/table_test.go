package db

import (
	"slices"
	"testing"

	"github.com/drummerhq/drummer/internal/dbpb"
)

func TestShardTableCopyOnWrite(t *testing.T) {
	tb := newShardTable()
	for _, id := range []uint64{1, 2, 255, 256, 257, 10_000} {
		tb.put(&dbpb.Shard{Id: id, Replicas: 3})
	}
	view := tb.clone()
	// Writes to either side after the clone stay on that side.
	tb.put(&dbpb.Shard{Id: 2, Replicas: 5})
	tb.remove(256)
	tb.put(&dbpb.Shard{Id: 9})
	view.put(&dbpb.Shard{Id: 1, Replicas: 7})
	view.remove(10_000)

	if got := tb.Get(2).Replicas; got != 5 {
		t.Errorf("original shard 2 has %d replicas, want 5", got)
	}
	if got := view.Get(2).Replicas; got != 3 {
		t.Errorf("clone sees the original's later write: shard 2 has %d replicas, want 3", got)
	}
	if !view.Has(256) || tb.Has(256) {
		t.Errorf("remove of 256: original has it %v (want false), clone %v (want true)", tb.Has(256), view.Has(256))
	}
	if view.Has(9) {
		t.Error("clone sees a shard added to the original after the clone")
	}
	if got := tb.Get(1).Replicas; got != 3 {
		t.Errorf("original sees the clone's write: shard 1 has %d replicas, want 3", got)
	}
	if !tb.Has(10_000) || view.Has(10_000) {
		t.Error("a removal in the clone reached the original, or did not happen")
	}
	if got, want := slices.Collect(tb.IDs()), []uint64{1, 2, 9, 255, 257, 10_000}; !slices.Equal(got, want) {
		t.Errorf("original IDs %v, want %v (ascending)", got, want)
	}
	if got, want := slices.Collect(view.IDs()), []uint64{1, 2, 255, 256, 257}; !slices.Equal(got, want) {
		t.Errorf("clone IDs %v, want %v", got, want)
	}
	if tb.Len() != 6 || view.Len() != 5 {
		t.Errorf("Len: original %d (want 6), clone %d (want 5)", tb.Len(), view.Len())
	}
	// Removing the last shard of a chunk drops the chunk; a missing ID
	// is a no-op.
	tb.remove(10_000)
	tb.remove(123_456)
	if _, ok := tb.chunks[10_000>>chunkBits]; ok {
		t.Error("an empty chunk is kept")
	}
	if tb.Get(123_456) != nil {
		t.Error("Get of a missing ID is not nil")
	}
}
