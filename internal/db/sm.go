package db

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/drummerhq/drummer/internal/dbpb"
)

// StateMachine adapts State to dragonboat's IConcurrentStateMachine. The
// scheduler reads the local replica's state through View, which is cheap:
// records are immutable, so a view shares them and copies only the maps.
type StateMachine struct {
	log *slog.Logger

	mu      sync.RWMutex
	st      *State
	applied uint64
	// view caches the last View: records are immutable, so a view stays
	// valid until the next applied batch or snapshot recovery replaces it.
	// It is made under viewMu and the read lock (so that report handlers'
	// Read calls are not held up by a copy of the maps), and dropped under
	// the write lock. viewMu serializes every Clone of the live state.
	viewMu sync.Mutex
	view   *State
	// hash caches the state's hash until the next change.
	hash     uint64
	hashIdx  uint64
	hashOK   bool
	hashedAt time.Time
	// changed is closed and replaced after every applied batch, so readers
	// can wait for the state to move.
	changed chan struct{}
}

var _ sm.IConcurrentStateMachine = (*StateMachine)(nil)
var _ sm.IHash = (*StateMachine)(nil)

// NewStateMachine returns an empty DB state machine.
func NewStateMachine(log *slog.Logger) *StateMachine {
	if log == nil {
		log = slog.Default()
	}
	return &StateMachine{log: log, st: New(), changed: make(chan struct{})}
}

// Update applies a batch of committed entries.
func (m *StateMachine) Update(entries []sm.Entry) ([]sm.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range entries {
		r := m.applyOne(entries[i].Cmd)
		entries[i].Result = sm.Result{Value: uint64(r.Code), Data: r.Data}
		m.applied = entries[i].Index
	}
	m.view, m.hashOK = nil, false
	close(m.changed)
	m.changed = make(chan struct{})
	return entries, nil
}

// applyOne applies one command. Apply validates everything and is fuzzed;
// the recover is the last line of defence so that a bug in it becomes a
// rejected command (deterministically, on every replica) instead of a crash
// loop of the whole drummer cluster.
func (m *StateMachine) applyOne(cmd []byte) (r Result) {
	defer func() {
		if p := recover(); p != nil {
			m.log.Error("BUG: Drummer DB apply panicked; command rejected", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			r = Result{Code: dbpb.Code_CODE_INTERNAL}
		}
	}()
	return m.st.Apply(cmd)
}

// Query types accepted by Lookup (through dragonboat's SyncRead).
type (
	// QueryView asks for a View of the whole state.
	QueryView struct{}
)

// Lookup serves linearizable reads.
func (m *StateMachine) Lookup(q interface{}) (interface{}, error) {
	switch q.(type) {
	case QueryView:
		v, _ := m.View()
		return v, nil
	}
	return nil, fmt.Errorf("unknown DB query %T", q)
}

// View returns a read-only copy of the state and the index it reflects.
// Views are shared: a view is cloned once per applied batch and handed to
// every caller until the next one, so reading the DB costs nothing while it
// does not change. Callers must not modify a view.
func (m *StateMachine) View() (*State, uint64) {
	m.viewMu.Lock()
	defer m.viewMu.Unlock()
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.viewLocked(), m.applied
}

// viewLocked returns the cached view, made if needed; the caller holds
// viewMu and at least the read lock.
func (m *StateMachine) viewLocked() *State {
	if m.view == nil {
		m.view = m.st.Clone()
	}
	return m.view
}

// TakeDirty discards what changed since the previous call, for a replica
// that does not plan (so the record of changes stays bounded).
func (m *StateMachine) TakeDirty() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st.TakeDirty()
}

// Read calls f with the live state under the read lock: for small lookups
// on hot paths (a heartbeat needs one host record), without copying the
// maps. f must not keep references to the maps or modify anything.
func (m *StateMachine) Read(f func(*State)) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	f(m.st)
}

// ViewIfChanged returns a view and what changed since the previous call.
func (m *StateMachine) ViewIfChanged() (*State, Dirty, uint64) {
	m.viewMu.Lock()
	defer m.viewMu.Unlock()
	// TakeDirty changes the state's change record: the write lock, but
	// only for that; the copy is made under the read lock.
	m.mu.Lock()
	d := m.st.TakeDirty()
	m.mu.Unlock()
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.viewLocked(), d, m.applied
}

// Changed returns a channel closed when the next batch is applied.
func (m *StateMachine) Changed() <-chan struct{} {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.changed
}

// Applied is the index of the last applied entry.
func (m *StateMachine) Applied() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.applied
}

// PrepareSnapshot captures the state to write; Update may run while the
// capture is being written.
func (m *StateMachine) PrepareSnapshot() (interface{}, error) {
	// Cloning the B-tree indexes writes to the original (their
	// copy-on-write context), so clones of the live state are serialized
	// by viewMu; apply is excluded by the read lock.
	m.viewMu.Lock()
	defer m.viewMu.Unlock()
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.st.Clone(), nil
}

// SaveSnapshot writes a prepared capture.
func (m *StateMachine) SaveSnapshot(ctx interface{}, w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	st, ok := ctx.(*State)
	if !ok {
		return errors.New("DB snapshot: unexpected snapshot context")
	}
	b, err := st.MarshalSnapshot()
	if err != nil {
		return fmt.Errorf("DB snapshot: %w", err)
	}
	_, err = w.Write(b)
	return err
}

// RecoverFromSnapshot replaces the state with a snapshot's.
func (m *StateMachine) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("DB snapshot: %w", err)
	}
	st, err := FromSnapshot(b)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st = st
	m.view, m.hashOK = nil, false
	close(m.changed)
	m.changed = make(chan struct{})
	return nil
}

// GetHash returns the state hash, equal on replicas at the same index.
func (m *StateMachine) GetHash() (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rehash()
	return m.hash, nil
}

func (m *StateMachine) rehash() {
	if !m.hashOK {
		m.hash, m.hashIdx, m.hashOK = m.st.Hash(), m.applied, true
		m.hashedAt = time.Now()
	}
}

// HashAt returns a recent hash of the state and the applied index it was
// computed at (the pair is consistent: replicas at the same index have the
// same hash). Hashing reads the whole DB, so while it changes a hash is
// computed at most once a second, whoever asks how often.
func (m *StateMachine) HashAt() (uint64, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.hashOK && (m.hashedAt.IsZero() || time.Since(m.hashedAt) >= time.Second) {
		m.rehash()
	}
	return m.hash, m.hashIdx
}

// Close releases nothing; the state lives in memory.
func (m *StateMachine) Close() error { return nil }
