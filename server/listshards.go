package server

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/planner"
)

// listShardsFast answers the ListShards calls that need not judge every
// shard (ok false: use the general path):
//   - without a health filter, a page of the sorted shard IDs: only the
//     page's shards are judged, so a page costs the same at 100,000 shards;
//   - with a health filter, from the HTTP listener (the dashboard and
//     /api/v1, see cachedHealth): the filter reads a health snapshot at
//     most healthMaxAge old, and only the page is judged afresh.
//
// The scheduler rewrite keeps a health index and will replace the
// snapshot.
func (s *Server) listShardsFast(ctx context.Context, st *db.State, req *drummerpb.ListShardsRequest, match func(*planner.ShardReport) bool) (*drummerpb.ListShardsResponse, bool, error) {
	var ids []uint64
	switch {
	case len(req.Health) == 0:
		ids = st.SortedShardIDs()
	case cachedHealthOK(ctx):
		snap := s.healthSnapshot(st)
		for _, id := range st.SortedShardIDs() {
			if match(snap[id]) {
				ids = append(ids, id)
			}
		}
	default:
		return nil, false, nil
	}
	size, start, err := pageParams(req.PageSize, req.PageToken, 500, 2000)
	if err != nil {
		return nil, true, err
	}
	resp := &drummerpb.ListShardsResponse{Total: uint64(len(ids))}
	i, _ := slices.BinarySearch(ids, start)
	page := ids[i:min(len(ids), i+size)]
	if i+size < len(ids) {
		resp.NextPageToken = strconv.FormatUint(ids[i+size], 10)
	}
	out := s.sched.report(st, page, false)
	for _, id := range page {
		resp.Shards = append(resp.Shards, s.shardStatus(st, st.Shards[id], out.Shards[id]))
	}
	return resp, true, nil
}

type cachedHealthKey struct{}

// withCachedHealth marks calls whose health filters may read the health
// snapshot (LocalConn's: the dashboard and /api/v1).
func withCachedHealth(ctx context.Context) context.Context {
	return context.WithValue(ctx, cachedHealthKey{}, true)
}

func cachedHealthOK(ctx context.Context) bool {
	ok, _ := ctx.Value(cachedHealthKey{}).(bool)
	return ok
}

// healthCache is a snapshot of every shard's verdict. It is judged again
// in the background when older than max(1s, 10 × the last judging time),
// and callers meanwhile get the previous one, so at 100,000 shards a
// filtered page neither waits for nor repeats a full judgement.
type healthCache struct {
	mu      sync.Mutex
	at      time.Time
	took    time.Duration
	running bool
	health  map[uint64]*planner.ShardReport
}

func (s *Server) healthSnapshot(st *db.State) map[uint64]*planner.ShardReport {
	c := &s.healthCache
	c.mu.Lock()
	if c.health == nil {
		c.mu.Unlock()
		return c.judge(s, st)
	}
	h := c.health
	stale := time.Since(c.at) >= max(time.Second, 10*c.took)
	if stale && !c.running && !s.closed.Load() {
		c.running = true
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			c.judge(s, st)
		}()
	}
	c.mu.Unlock()
	return h
}

// judge judges every shard and keeps the result.
func (c *healthCache) judge(s *Server, st *db.State) map[uint64]*planner.ShardReport {
	start := time.Now()
	out := s.sched.report(st, nil, true).Shards
	c.mu.Lock()
	defer c.mu.Unlock()
	c.health, c.at, c.took, c.running = out, time.Now(), time.Since(start), false
	return out
}
