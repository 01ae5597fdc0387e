package db

import (
	"iter"
	"maps"
	"slices"

	"github.com/drummerhq/drummer/internal/dbpb"
)

// ShardTable holds the shard records by ID, copy-on-write in chunks of
// consecutive IDs, so that a view of the DB (Clone) costs O(shards/256)
// instead of O(shards): at 333,334 shards a map copy took 30 ms per applied
// batch and made as much garbage, and every reader of the DB waited behind
// it. Shard IDs are dense (the DB never reuses one, and most deployments
// create them in runs), so chunks are mostly full. Records are immutable
// once stored (apply replaces them), so a view shares them too.
type ShardTable struct {
	chunks map[uint64]*shardChunk
	n      int
	// token marks the chunks this table may write in place; a chunk of
	// another token is shared with a clone and copied on first write.
	token *tableToken
}

const (
	chunkBits = 8
	chunkSize = 1 << chunkBits
)

type shardChunk struct {
	owner *tableToken
	n     int
	items [chunkSize]*dbpb.Shard
}

// tableToken is an identity: its one byte keeps distinct tokens at
// distinct addresses.
type tableToken struct{ _ byte }

func newShardTable() ShardTable {
	return ShardTable{chunks: map[uint64]*shardChunk{}, token: &tableToken{}}
}

// Get returns the shard with the ID, or nil.
func (t *ShardTable) Get(id uint64) *dbpb.Shard {
	if c := t.chunks[id>>chunkBits]; c != nil {
		return c.items[id&(chunkSize-1)]
	}
	return nil
}

// Lookup returns the shard with the ID and whether it exists.
func (t *ShardTable) Lookup(id uint64) (*dbpb.Shard, bool) {
	sh := t.Get(id)
	return sh, sh != nil
}

// Has tells whether a shard with the ID exists.
func (t *ShardTable) Has(id uint64) bool { return t.Get(id) != nil }

// Len is the number of shards.
func (t *ShardTable) Len() int { return t.n }

// All yields every shard in ascending ID order.
func (t *ShardTable) All() iter.Seq2[uint64, *dbpb.Shard] {
	return func(yield func(uint64, *dbpb.Shard) bool) {
		for _, k := range slices.Sorted(maps.Keys(t.chunks)) {
			c := t.chunks[k]
			for i, sh := range c.items {
				if sh != nil && !yield(k<<chunkBits|uint64(i), sh) {
					return
				}
			}
		}
	}
}

// IDs yields every shard ID in ascending order.
func (t *ShardTable) IDs() iter.Seq[uint64] {
	return func(yield func(uint64) bool) {
		for id := range t.All() {
			if !yield(id) {
				return
			}
		}
	}
}

// writable returns the chunk for key, copied first if it is shared.
func (t *ShardTable) writable(key uint64, create bool) *shardChunk {
	c := t.chunks[key]
	switch {
	case c == nil && !create:
		return nil
	case c == nil:
		c = &shardChunk{owner: t.token}
		t.chunks[key] = c
	case c.owner != t.token:
		cp := *c
		cp.owner = t.token
		c = &cp
		t.chunks[key] = c
	}
	return c
}

func (t *ShardTable) put(sh *dbpb.Shard) {
	c := t.writable(sh.Id>>chunkBits, true)
	i := sh.Id & (chunkSize - 1)
	if c.items[i] == nil {
		c.n++
		t.n++
	}
	c.items[i] = sh
}

func (t *ShardTable) remove(id uint64) {
	c := t.writable(id>>chunkBits, false)
	i := id & (chunkSize - 1)
	if c == nil || c.items[i] == nil {
		return
	}
	c.items[i] = nil
	c.n--
	t.n--
	if c.n == 0 {
		delete(t.chunks, id>>chunkBits)
	}
}

// clone returns a table sharing every chunk with t. Both take new tokens,
// so each copies a shared chunk before writing it: clone writes to t, and
// clones of one table must not run concurrently (State.Clone's rule).
func (t *ShardTable) clone() ShardTable {
	t.token = &tableToken{}
	return ShardTable{chunks: maps.Clone(t.chunks), n: t.n, token: &tableToken{}}
}
