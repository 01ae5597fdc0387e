package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/api/drummerpb"
)

const stateFile = "drummer-agent.json"

// persisted is what the agent keeps across restarts in its data directory:
// its identity, its deployment, and the replicas Drummer assigned to it, so
// that it brings them back after a restart even while no drummer answers.
// Assignments are binary StartReplicaOrder messages.
type persisted struct {
	HostID       string   `json:"host_id"`
	DeploymentID uint64   `json:"deployment_id"`
	RaftAddress  string   `json:"raft_address"`
	Assignments  [][]byte `json:"assignments"`
	// EpochSeen is the highest scheduler epoch this agent took orders
	// from: after a restart, orders of an older epoch (a deposed leader's)
	// are still refused.
	EpochSeen uint64 `json:"epoch_seen,omitempty"`
}

// store guards the persisted state and its file. Assignment changes are
// written by a background flusher that coalesces bursts (a launch assigns
// hundreds of replicas in a second): losing the last changes in a crash
// costs nothing but time, because Drummer re-sends the start orders of its
// members and the disk inventory shows replicas with data.
type store struct {
	path string
	kick chan struct{}

	mu          sync.Mutex
	hostID      string
	deployment  uint64
	raftAddress string
	assigned    map[uint64]*drummerpb.StartReplicaOrder // by shard
	epoch       uint64                                  // highest scheduler epoch seen
	version     uint64                                  // bumped on every change
	saved       uint64                                  // version on disk

	fileMu sync.Mutex // serializes writers of the file
}

func loadStore(dir string) (*store, error) {
	s := &store{path: filepath.Join(dir, stateFile), assigned: map[uint64]*drummerpb.StartReplicaOrder{}, kick: make(chan struct{}, 1)}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read agent state: %w", err)
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("agent state %s is corrupt: %w (move it away only if this host's data directory is also discarded)", s.path, err)
	}
	s.hostID, s.deployment, s.raftAddress, s.epoch = p.HostID, p.DeploymentID, p.RaftAddress, p.EpochSeen
	for _, raw := range p.Assignments {
		var o drummerpb.StartReplicaOrder
		if err := proto.Unmarshal(raw, &o); err != nil {
			return nil, fmt.Errorf("agent state %s: bad assignment: %w", s.path, err)
		}
		s.assigned[o.ShardId] = &o
	}
	return s, nil
}

// save writes the current state to the file atomically.
func (s *store) save() error {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	s.mu.Lock()
	p := persisted{HostID: s.hostID, DeploymentID: s.deployment, RaftAddress: s.raftAddress, Assignments: [][]byte{}, EpochSeen: s.epoch}
	ids := make([]uint64, 0, len(s.assigned))
	for id := range s.assigned {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	orders := make([]*drummerpb.StartReplicaOrder, len(ids))
	for i, id := range ids {
		orders[i] = s.assigned[id] // immutable once stored
	}
	version := s.version
	s.mu.Unlock()
	for _, o := range orders {
		b, err := proto.Marshal(o)
		if err != nil {
			return err
		}
		p.Assignments = append(p.Assignments, b)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write agent state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync agent state: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	s.mu.Lock()
	s.saved = max(s.saved, version)
	s.mu.Unlock()
	return nil
}

// flusher writes changes in the background until ctx ends, then once more.
func (s *store) flusher(ctx context.Context, log func(error)) {
	for {
		select {
		case <-ctx.Done():
			if err := s.flush(); err != nil {
				log(err)
			}
			return
		case <-s.kick:
		}
		if err := s.flush(); err != nil {
			log(err)
		}
		// Coalesce: at most a few writes per second under a burst.
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *store) flush() error {
	s.mu.Lock()
	dirty := s.version != s.saved
	s.mu.Unlock()
	if !dirty {
		return nil
	}
	return s.save()
}

func (s *store) changed() {
	s.version++
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *store) setIdentity(hostID string, deployment uint64, raftAddress string) error {
	s.mu.Lock()
	s.hostID, s.deployment, s.raftAddress = hostID, deployment, raftAddress
	s.version++
	s.mu.Unlock()
	return s.save()
}

// noteEpoch raises the highest epoch seen (written by the flusher, or at
// once by flush).
func (s *store) noteEpoch(epoch uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if epoch > s.epoch {
		s.epoch = epoch
		s.changed()
	}
}

// epochSeen is the highest epoch recorded.
func (s *store) epochSeen() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

func (s *store) assign(o *drummerpb.StartReplicaOrder) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.assigned[o.ShardId]; old != nil && old.ReplicaId == o.ReplicaId {
		return
	}
	s.assigned[o.ShardId] = o
	s.changed()
}

func (s *store) unassign(shardID, replicaID uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.assigned[shardID]; old == nil || old.ReplicaId != replicaID {
		return
	}
	delete(s.assigned, shardID)
	s.changed()
}

func (s *store) assignment(shardID uint64) *drummerpb.StartReplicaOrder {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.assigned[shardID]
}

func (s *store) assignments() []*drummerpb.StartReplicaOrder {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*drummerpb.StartReplicaOrder, 0, len(s.assigned))
	for _, o := range s.assigned {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b *drummerpb.StartReplicaOrder) int {
		switch {
		case a.ShardId < b.ShardId:
			return -1
		case a.ShardId > b.ShardId:
			return 1
		}
		return 0
	})
	return out
}
