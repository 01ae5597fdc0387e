package nodehostapi

import (
	"context"
	"sync"
	"time"
)

// Bounds of the sessions a nodehost opens. Dragonboat keeps at most 4096
// sessions per shard (hard setting LRUMaxSessionCount) and evicts the
// least recently used one to register a new one: a session evicted that
// way loses its exactly-once guarantee. The nodehost therefore refuses to
// open more sessions than its share of that table, so that a flood of
// OpenSession cannot push out live sessions.
const (
	// DefaultMaxSessionsPerShard is each nodehost's share of a shard's 4096
	// sessions when every one of up to 9 members opens its full share.
	DefaultMaxSessionsPerShard = 4096 / 9
	// DefaultMaxSessionsPerOwner bounds one caller identity's sessions of
	// a shard on this nodehost, so one caller cannot take all of them.
	DefaultMaxSessionsPerOwner = 128
	// DefaultSessionIdleTimeout is how long a session must go unused here
	// before the nodehost may close it to make room for a new one.
	DefaultSessionIdleTimeout = 10 * time.Minute
)

// sessionTable records the sessions this nodehost opened, per shard: who
// opened each (the owner: the caller's identity) and when it was last used
// here. It decides whether a new session may be opened and which idle
// session to close first. Sessions opened elsewhere are unknown to it; a
// session used only through other members looks idle here, and closing it
// makes its client see "session rejected" (the client then reports the
// outcome of a pending proposal as unknown, never as not applied).
type sessionTable struct {
	perShard, perOwner int
	idle               time.Duration

	mu     sync.Mutex
	shards map[uint64]*shardSessions
}

type shardSessions struct {
	byClient map[uint64]*sessionEntry
	owners   map[string]int
}

type sessionEntry struct {
	owner    string
	lastUsed time.Time
	opening  bool // registration in flight
}

func newSessionTable(perShard, perOwner int, idle time.Duration) *sessionTable {
	return &sessionTable{perShard: perShard, perOwner: perOwner, idle: idle, shards: map[uint64]*shardSessions{}}
}

// reserve records clientID (about to be registered) for owner. When the
// shard or the owner is at its bound, it evicts the longest-idle session
// (of the owner, or of the shard) unused for the idle timeout, returning
// it for the caller to close in the shard; ok is false when there is no
// room and nothing to evict.
func (t *sessionTable) reserve(shardID, clientID uint64, owner string, now time.Time) (victim uint64, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ss := t.shards[shardID]
	if ss == nil {
		ss = &shardSessions{byClient: map[uint64]*sessionEntry{}, owners: map[string]int{}}
		t.shards[shardID] = ss
	}
	ownerFull := ss.owners[owner] >= t.perOwner
	if ownerFull || len(ss.byClient) >= t.perShard {
		var oldest *sessionEntry
		for id, e := range ss.byClient {
			if e.opening || now.Sub(e.lastUsed) < t.idle || (ownerFull && e.owner != owner) {
				continue
			}
			if oldest == nil || e.lastUsed.Before(oldest.lastUsed) {
				oldest, victim = e, id
			}
		}
		if oldest == nil {
			return 0, false
		}
		ss.remove(victim)
	}
	ss.byClient[clientID] = &sessionEntry{owner: owner, lastUsed: now, opening: true}
	ss.owners[owner]++
	return victim, true
}

// opened marks a reserved session registered (or forgets it when the
// registration failed).
func (t *sessionTable) opened(shardID, clientID uint64, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ss := t.shards[shardID]
	if ss == nil {
		return
	}
	if !ok {
		ss.remove(clientID)
		return
	}
	if e := ss.byClient[clientID]; e != nil {
		e.opening = false
	}
}

// touch records a use of a session.
func (t *sessionTable) touch(shardID, clientID uint64, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ss := t.shards[shardID]; ss != nil {
		if e := ss.byClient[clientID]; e != nil {
			e.lastUsed = now
		}
	}
}

// forget drops a session (closed, or rejected by the shard).
func (t *sessionTable) forget(shardID, clientID uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ss := t.shards[shardID]; ss != nil {
		ss.remove(clientID)
	}
}

func (ss *shardSessions) remove(clientID uint64) {
	e := ss.byClient[clientID]
	if e == nil {
		return
	}
	delete(ss.byClient, clientID)
	if ss.owners[e.owner]--; ss.owners[e.owner] <= 0 {
		delete(ss.owners, e.owner)
	}
}

// ownerOf names the caller of an OpenSession.
func (s *Service) ownerOf(ctx context.Context) string {
	if s.opts.SessionOwner != nil {
		return s.opts.SessionOwner(ctx)
	}
	return ""
}
