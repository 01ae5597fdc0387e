package client

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/auth"
)

// minRelocateInterval: a location younger than this is not fetched again
// on errors (the answer would be the same).
const minRelocateInterval = 50 * time.Millisecond

// locatorRetryInterval: after the locator failed, callers holding a known
// location do not wait for it again for this long.
const locatorRetryInterval = time.Second

// locations caches shard locations. Concurrent misses for one shard share
// a single LocateShards call, made in the background so that a caller can
// give up waiting. An expired location is used while it is refreshed in
// the background, and when the locator fails a known location keeps being
// used: the data plane does not depend on Drummer being up.
type locations struct {
	loc Locator
	cfg Config

	ctx    context.Context // canceled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	m  map[uint64]*locEntry
}

type locEntry struct {
	loc       *drummerpb.ShardLocation
	fetched   time.Time
	stale     bool          // invalidated by a routing error
	inflight  chan struct{} // closed when the running fetch ends
	lastErr   error         // outcome of the last fetch
	failedAt  time.Time
	preferred string // API address that served the shard last
}

func newLocations(l Locator, cfg Config) *locations {
	ctx, cancel := context.WithCancel(context.Background())
	return &locations{loc: l, cfg: cfg, ctx: ctx, cancel: cancel, m: map[uint64]*locEntry{}}
}

// close stops background refreshes.
func (l *locations) close() {
	l.cancel()
	l.wg.Wait()
}

func (l *locations) entry(id uint64) *locEntry {
	e, ok := l.m[id]
	if !ok {
		e = &locEntry{}
		l.m[id] = e
	}
	return e
}

// get returns a usable location of the shard, fetching it when unknown or
// invalidated, and refreshing it in the background when expired.
func (l *locations) get(ctx context.Context, id uint64) (*drummerpb.ShardLocation, error) {
	l.mu.Lock()
	e := l.entry(id)
	known := e.loc != nil && e.loc.GetFound()
	if known && !e.stale && time.Since(e.fetched) < l.cfg.LocationTTL {
		loc := e.loc
		l.mu.Unlock()
		return loc, nil
	}
	if known && (!e.stale || time.Since(e.failedAt) < locatorRetryInterval) {
		// Expired, or invalidated while the locator is failing: go on
		// with what is known.
		l.startFetch(id, e)
		loc := e.loc
		l.mu.Unlock()
		return loc, nil
	}
	ch := l.startFetch(id, e)
	l.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		return l.fallback(id, ctx.Err())
	}
	l.mu.Lock()
	err, loc := e.lastErr, e.loc
	l.mu.Unlock()
	if err != nil {
		return l.fallback(id, err)
	}
	if loc == nil || !loc.GetFound() {
		return nil, ErrShardNotFound
	}
	return loc, nil
}

// startFetch starts a background fetch of id unless one is running, and
// returns the channel closed when it ends. l.mu must be held.
func (l *locations) startFetch(id uint64, e *locEntry) chan struct{} {
	if e.inflight != nil {
		return e.inflight
	}
	ch := make(chan struct{})
	e.inflight = ch
	if l.ctx.Err() != nil {
		e.inflight, e.lastErr = nil, ErrClientClosed
		close(ch)
		return ch
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		err := l.fetch(l.ctx, []uint64{id})
		l.mu.Lock()
		defer l.mu.Unlock()
		e.inflight, e.lastErr = nil, err
		if err != nil {
			e.failedAt = time.Now()
		}
		close(ch)
	}()
	return ch
}

// fallback returns the last known location of a found shard, if any, when
// it cannot be refreshed.
func (l *locations) fallback(id uint64, err error) (*drummerpb.ShardLocation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[id]; e != nil && e.loc != nil && e.loc.GetFound() {
		return e.loc, nil
	}
	return nil, err
}

// fetch asks the locator about ids (one attempt, bounded by the attempt
// timeout) and stores the answers.
func (l *locations) fetch(ctx context.Context, ids []uint64) error {
	fctx, cancel := context.WithTimeout(ctx, l.cfg.AttemptTimeout)
	defer cancel()
	locs, err := l.loc.LocateShards(fctx, ids)
	if err != nil {
		return fmt.Errorf("locate shards: %w", err)
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	got := map[uint64]bool{}
	for _, loc := range locs {
		if loc == nil || !slices.Contains(ids, loc.GetShardId()) {
			continue
		}
		got[loc.GetShardId()] = true
		e := l.entry(loc.GetShardId())
		e.loc, e.fetched, e.stale = loc, now, false
	}
	for _, id := range ids {
		if !got[id] {
			e := l.entry(id)
			e.loc, e.fetched, e.stale = &drummerpb.ShardLocation{ShardId: id}, now, false
		}
	}
	return nil
}

// preload locates ids in one call, retrying until ctx ends.
func (l *locations) preload(ctx context.Context, ids []uint64) error {
	backoff := l.cfg.MinBackoff
	for {
		err := l.fetch(ctx, ids)
		if err == nil {
			l.mu.Lock()
			defer l.mu.Unlock()
			for _, id := range ids {
				if !l.m[id].loc.GetFound() {
					return fmt.Errorf("shard %d: %w", id, ErrShardNotFound)
				}
			}
			return nil
		}
		if !sleep(ctx, jitter(backoff)) {
			return fmt.Errorf("preloading shard locations: %w", err)
		}
		backoff = min(2*backoff, l.cfg.MaxBackoff)
	}
}

// invalidate asks for a fresh location on the next get.
func (l *locations) invalidate(id uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[id]; e != nil && time.Since(e.fetched) >= minRelocateInterval {
		e.stale = true
	}
}

func (l *locations) succeeded(id uint64, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[id]; e != nil {
		e.preferred = addr
	}
}

func (l *locations) preferred(id uint64) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[id]; e != nil {
		return e.preferred
	}
	return ""
}

// stateRank orders members by how likely they are to answer.
func stateRank(state string) int {
	switch state {
	case "live", "":
		return 0
	case "starting", "joining":
		return 1
	case "suspect":
		return 2
	case "away", "removing":
		return 3
	case "dead":
		return 4
	}
	return 2
}

// targets orders the API addresses of the shard's members: hosts marked
// down last, then by state (live first); among equals the leader first,
// then the host that answered last, then at random.
func (c *Client) targets(id uint64, loc *drummerpb.ShardLocation) []string {
	type cand struct {
		addr  string
		score int
		tie   uint32
	}
	pref := c.locs.preferred(id)
	var cs []cand
	seen := map[string]bool{}
	for _, m := range loc.GetMembers() {
		addr := m.GetApiAddress()
		if addr == "" || seen[addr] {
			continue
		}
		seen[addr] = true
		score := 20 * stateRank(m.GetState())
		if m.GetIsLeader() || (m.GetReplicaId() != 0 && m.GetReplicaId() == loc.GetLeaderReplicaId()) {
			score -= 10
		}
		if addr == pref {
			score -= 5
		}
		if c.pool.isDown(addr) {
			score += 1000
		}
		cs = append(cs, cand{addr, score, rand.Uint32()})
	}
	slices.SortFunc(cs, func(a, b cand) int {
		if a.score != b.score {
			return a.score - b.score
		}
		return int(int64(a.tie) - int64(b.tie))
	})
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.addr
	}
	return out
}

// pool holds one gRPC connection per nodehost API address.
type pool struct {
	opts []grpc.DialOption

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	down   map[string]time.Time
	closed bool
}

func newPool(cfg Config, src *auth.Source) *pool {
	opts := []grpc.DialOption{
		credentials(src, auth.RoleNodehost),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxMessageBytes), grpc.MaxCallSendMsgSize(cfg.MaxMessageBytes)),
	}
	opts = append(opts, cfg.DialOptions...)
	return &pool{opts: opts, conns: map[string]*grpc.ClientConn{}, down: map[string]time.Time{}}
}

func (p *pool) get(addr string) (drummerpb.NodehostAPIClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClientClosed
	}
	cc, ok := p.conns[addr]
	if !ok {
		var err error
		if cc, err = grpc.NewClient(addr, p.opts...); err != nil {
			return nil, fmt.Errorf("nodehost %s: %w", addr, err)
		}
		p.conns[addr] = cc
	}
	return drummerpb.NewNodehostAPIClient(cc), nil
}

func (p *pool) markDown(addr string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down[addr] = time.Now().Add(d)
}

func (p *pool) markUp(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.down, addr)
}

func (p *pool) isDown(addr string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	until, ok := p.down[addr]
	if ok && time.Now().After(until) {
		delete(p.down, addr)
		return false
	}
	return ok
}

func (p *pool) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

func (p *pool) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var first error
	for addr, cc := range p.conns {
		if err := cc.Close(); err != nil && first == nil {
			first = err
		}
		delete(p.conns, addr)
	}
	return first
}
