package scheduler

import (
	"time"

	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

// settle holds back the re-planning of starting shards. A shard placed but
// not yet bootstrapped is marked by every step of each replica's start:
// the start order's result, the replica's first report, its membership,
// each change of its state; on three hosts that report at different
// moments, several marks within a few seconds, and each mark was a full
// evaluation. In a launch of 333,334 shards those evaluations filled
// rounds of 20,000 shards for seconds each, a third of them with nothing
// to decide. A held shard is planned once its window ends, with every mark
// that arrived meanwhile: at most one evaluation per window. Only progress
// is held: the first leader a replica sees (which bootstraps the shard), a
// failed order, a replica that stops, a host falling silent or coming
// back, a DB change and the patrol plan the shard at once.
type settle struct {
	// held maps each held shard to the due time of its FIFO entry: a
	// shard released and held again has an older entry too, which must
	// not release it early.
	held map[uint64]time.Time
	fifo []settleEntry // in hold order; due times are monotonic
	head int
}

type settleEntry struct {
	id  uint64
	due time.Time
}

func (s *settle) reset() { *s = settle{held: map[uint64]time.Time{}} }

// hold keeps id back until now+window unless it is held already.
func (s *settle) hold(id uint64, due time.Time) {
	if _, ok := s.held[id]; ok {
		return
	}
	s.held[id] = due
	s.fifo = append(s.fifo, settleEntry{id, due})
}

// release drops id from the held set (it is being planned anyway); its
// entry in the FIFO is skipped when it comes due.
func (s *settle) release(id uint64) { delete(s.held, id) }

// due moves the shards whose window ended by now into out.
func (s *settle) due(now time.Time, out map[uint64]struct{}) {
	for s.head < len(s.fifo) && !s.fifo[s.head].due.After(now) {
		e := s.fifo[s.head]
		s.head++
		if d, ok := s.held[e.id]; ok && d.Equal(e.due) {
			delete(s.held, e.id)
			out[e.id] = struct{}{}
		}
	}
	// Compact once the consumed prefix dominates, so the slice stays
	// bounded by what is held, amortized O(1) per entry.
	if s.head > 1024 && s.head*2 > len(s.fifo) {
		s.fifo = append(s.fifo[:0], s.fifo[s.head:]...)
		s.head = 0
	}
}

// Len is how many shards are held.
func (s *settle) Len() int { return len(s.held) }

// starting tells whether a shard is placed but has not bootstrapped (no
// leader seen yet), with no repair in flight: the shards whose progress
// marks are held.
func starting(st *db.State, id uint64) bool {
	sh := st.Shards.Get(id)
	return sh != nil && sh.Phase != dbpb.ShardPhase_SHARD_PHASE_PENDING && !sh.Bootstrapped && sh.Repair == nil
}

// settleWindow is how long a starting shard's progress marks are held:
// half a report interval, at most 2 s.
func settleWindow(reportIntervalMs uint64) time.Duration {
	return min(2*time.Second, time.Duration(reportIntervalMs)*time.Millisecond/2)
}
