package chaos

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/kv"
)

// history records operations with invoke and return times relative to a
// common base (monotonic clock).
type history struct {
	base time.Time
	mu   sync.Mutex
	ops  []Op
}

func newHistory() *history { return &history{base: time.Now()} }

func (h *history) now() int64 { return int64(time.Since(h.base)) }

func (h *history) add(op Op) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.ID = len(h.ops)
	h.ops = append(h.ops, op)
	return op.ID
}

// bound sets the return time of unknown operations that cannot take
// effect after ret.
func (h *history) bound(ids []int, ret int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		if h.ops[id].Return > ret {
			h.ops[id].Return = ret
		}
	}
}

func (h *history) snapshot() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// workload runs concurrent kv clients against the shards and records
// their history. Writes go through one session per (worker, shard), so
// each is applied at most once; an operation with an unknown outcome is
// bounded by the next proposal of its session that returns (dragonboat
// never applies an abandoned series after a later one).
type workload struct {
	cfg    *Config
	c      *client.Client
	h      *history
	shards []uint64
	// clients numbers porcupine clients: a worker continues under a new
	// client after an operation with an unknown outcome.
	clients atomic.Int64

	stats workloadStats
}

type workloadStats struct {
	mu                                  sync.Mutex
	ok, unknown, failed, sessionsFailed int
	byKind                              map[string]int
}

func (s *workloadStats) count(kind, outcome string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byKind == nil {
		s.byKind = map[string]int{}
	}
	s.byKind[kind+"/"+outcome]++
	switch outcome {
	case OutcomeOK:
		s.ok++
	case OutcomeUnknown:
		s.unknown++
	default:
		s.failed++
	}
}

type worker struct {
	w        *workload
	id       int
	client   int
	rng      *rand.Rand
	seq      int
	sessions map[uint64]*workerSession
	lastSeen map[string]*kvState
}

type workerSession struct {
	s *client.Session
	// pending are unknown operations of this session not yet bounded.
	pending []int
}

func (w *workload) keyFor(rng *rand.Rand, elapsed time.Duration) (string, uint64) {
	if rng.Float64() < w.cfg.HotFraction && w.cfg.HotKeys > 0 {
		i := rng.IntN(w.cfg.HotKeys)
		// Hot keys rotate every HotKeyPeriod so that no key's history
		// grows without bound in long runs.
		epoch := int(elapsed / w.cfg.HotKeyPeriod)
		shard := w.shards[(i*len(w.shards)/w.cfg.HotKeys+epoch)%len(w.shards)]
		return fmt.Sprintf("hot-%d-e%d", i, epoch), shard
	}
	j := rng.IntN(w.cfg.ColdKeys)
	return fmt.Sprintf("k-%d", j), w.shards[j%len(w.shards)]
}

// run runs the workers until ctx ends, then finishes in-flight operations
// and bounds what it can of the unknown outcomes.
func (w *workload) run(ctx context.Context, seed uint64) {
	var wg sync.WaitGroup
	workers := make([]*worker, w.cfg.Workers)
	for i := range workers {
		wk := &worker{w: w, id: i, rng: rand.New(rand.NewPCG(seed, uint64(i)+1)),
			sessions: map[uint64]*workerSession{}, lastSeen: map[string]*kvState{}}
		wk.client = int(w.clients.Add(1) - 1)
		workers[i] = wk
		wg.Add(1)
		go func() {
			defer wg.Done()
			wk.loop(ctx)
		}()
	}
	wg.Wait()
	// Flush: one more write on every session with unknown outcomes
	// bounds them (bounded tries; what stays unknown stays unbounded).
	for _, wk := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wk.flush()
		}()
	}
	wg.Wait()
}

func (wk *worker) loop(ctx context.Context) {
	start := time.Now()
	for ctx.Err() == nil {
		key, shard := wk.w.keyFor(wk.rng, time.Since(start))
		wk.one(key, shard)
		if d := wk.w.cfg.ThinkTime; d > 0 {
			t := time.NewTimer(time.Duration(wk.rng.Int64N(int64(d))))
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}

func (wk *worker) value() string {
	wk.seq++
	return fmt.Sprintf("w%d-%d", wk.id, wk.seq)
}

// one runs one random operation on key.
func (wk *worker) one(key string, shard uint64) {
	p := wk.rng.Float64()
	op := Op{Worker: wk.id, Shard: shard, Key: key}
	switch {
	case p < 0.40:
		op.Kind = OpGet
	case p < 0.70:
		op.Kind, op.Value = OpPut, wk.value()
	case p < 0.95:
		op.Kind, op.Value = OpCAS, wk.value()
		if seen := wk.lastSeen[key]; seen != nil && seen.Exists && wk.rng.IntN(8) != 0 {
			op.Expect = seen.Value
		} else if seen != nil && !seen.Exists {
			op.ExpectAbsent = true
		} else {
			op.ExpectAbsent = wk.rng.IntN(2) == 0
			op.Expect = fmt.Sprintf("w%d-%d", wk.rng.IntN(wk.w.cfg.Workers), wk.rng.IntN(max(wk.seq, 1))+1)
		}
		if wk.rng.IntN(10) == 0 {
			op.CASDelete, op.Value = true, ""
		}
	default:
		op.Kind = OpDelete
	}
	wk.do(&op)
}

func (wk *worker) session(shard uint64) *workerSession {
	if s := wk.sessions[shard]; s != nil {
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), wk.w.cfg.OpTimeout)
	defer cancel()
	s, err := wk.w.c.OpenSession(ctx, shard)
	if err != nil {
		wk.w.stats.mu.Lock()
		wk.w.stats.sessionsFailed++
		wk.w.stats.mu.Unlock()
		return nil
	}
	ws := &workerSession{s: s}
	wk.sessions[shard] = ws
	return ws
}

func (wk *worker) do(op *Op) {
	w := wk.w
	var sess *workerSession
	if op.Kind != OpGet {
		if sess = wk.session(op.Shard); sess == nil {
			time.Sleep(50 * time.Millisecond)
			return
		}
		if op.Kind == OpDelete && len(sess.pending) > 0 {
			// The client continues a session's unknown series when it is
			// given the same command again; a delete repeats its bytes, so
			// write a unique value instead.
			op.Kind, op.Value = OpPut, wk.value()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.OpTimeout)
	defer cancel()
	op.Client = wk.client
	op.Call = w.h.now()
	var err error
	key := []byte(op.Key)
	switch op.Kind {
	case OpGet:
		var v []byte
		v, op.Found, err = w.c.KV(op.Shard).Get(ctx, key)
		op.Result = string(v)
	case OpPut:
		err = sess.s.KV().Put(ctx, key, []byte(op.Value))
	case OpDelete:
		op.OK, err = sess.s.KV().Delete(ctx, key)
	case OpCAS:
		var r client.CASResult
		c := kv.CAS{Key: key, ExpectAbsent: op.ExpectAbsent, Value: []byte(op.Value), Delete: op.CASDelete}
		if !op.ExpectAbsent {
			c.Expected = []byte(op.Expect)
		}
		r, err = sess.s.KV().CAS(ctx, c)
		op.OK, op.Found, op.Result = r.Swapped, r.Exists, string(r.Current)
	}
	op.Return = w.h.now()
	switch {
	case err == nil:
		op.Outcome = OutcomeOK
	case op.Kind == OpGet:
		op.Outcome = OutcomeFailed
	case errors.Is(err, client.ErrSessionRejected):
		op.Outcome = OutcomeFailed
		delete(wk.sessions, op.Shard)
	case errors.Is(err, client.ErrSessionLost):
		op.Outcome = OutcomeUnknown
		delete(wk.sessions, op.Shard)
	default:
		var ce *client.Error
		if errors.As(err, &ce) && !ce.MaybeApplied && !errors.Is(err, client.ErrOutcomeUnknown) {
			op.Outcome = OutcomeFailed
		} else {
			op.Outcome = OutcomeUnknown
		}
	}
	if err != nil {
		op.Err = err.Error()
	}
	ret := op.Return
	if op.Outcome == OutcomeUnknown {
		op.Return = math.MaxInt64
	}
	id := w.h.add(*op)
	w.stats.count(op.Kind, op.Outcome)
	switch op.Outcome {
	case OutcomeOK:
		if sess != nil {
			// Dragonboat never applies an abandoned series once a later one
			// of the same session is applied.
			w.h.bound(sess.pending, ret)
			sess.pending = nil
		}
		wk.observe(op)
	case OutcomeUnknown:
		sess.pending = append(sess.pending, id)
		delete(wk.lastSeen, op.Key)
		wk.client = int(w.clients.Add(1) - 1)
	}
}

// observe remembers the key's value as this worker last saw it, to build
// CAS operations that succeed now and then.
func (wk *worker) observe(op *Op) {
	switch {
	case op.Kind == OpGet || (op.Kind == OpCAS && !op.OK):
		wk.lastSeen[op.Key] = &kvState{Exists: op.Found, Value: op.Result}
	case op.Kind == OpPut || op.Kind == OpCAS && !op.CASDelete:
		wk.lastSeen[op.Key] = &kvState{Exists: true, Value: op.Value}
	default:
		wk.lastSeen[op.Key] = &kvState{}
	}
}

func (wk *worker) flush() {
	for shard, s := range wk.sessions {
		for try := 0; try < 3 && len(s.pending) > 0; try++ {
			if wk.sessions[shard] != s {
				break
			}
			op := Op{Worker: wk.id, Shard: shard, Key: fmt.Sprintf("flush-w%d-s%d", wk.id, shard), Kind: OpPut, Value: wk.value()}
			wk.do(&op)
		}
	}
}
