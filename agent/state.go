package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/drummerhq/drummer/api/drummerpb"
)

const stateFile = "drummer-agent.json"

// persisted is what the agent keeps across restarts in its data directory:
// its identity, its deployment, and the replicas Drummer assigned to it, so
// that it brings them back after a restart even while no drummer answers.
type persisted struct {
	HostID       string            `json:"host_id"`
	DeploymentID uint64            `json:"deployment_id"`
	RaftAddress  string            `json:"raft_address"`
	Assignments  []json.RawMessage `json:"assignments"`
}

// store guards the persisted state and its file.
type store struct {
	path string

	mu          sync.Mutex
	hostID      string
	deployment  uint64
	raftAddress string
	assigned    map[uint64]*drummerpb.StartReplicaOrder // by shard
}

func loadStore(dir string) (*store, error) {
	s := &store{path: filepath.Join(dir, stateFile), assigned: map[uint64]*drummerpb.StartReplicaOrder{}}
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
	s.hostID, s.deployment, s.raftAddress = p.HostID, p.DeploymentID, p.RaftAddress
	for _, raw := range p.Assignments {
		var o drummerpb.StartReplicaOrder
		if err := protojson.Unmarshal(raw, &o); err != nil {
			return nil, fmt.Errorf("agent state %s: bad assignment: %w", s.path, err)
		}
		s.assigned[o.ShardId] = &o
	}
	return s, nil
}

// save writes the state atomically; callers hold s.mu.
func (s *store) save() error {
	p := persisted{HostID: s.hostID, DeploymentID: s.deployment, RaftAddress: s.raftAddress, Assignments: []json.RawMessage{}}
	ids := make([]uint64, 0, len(s.assigned))
	for id := range s.assigned {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		b, err := protojson.Marshal(s.assigned[id])
		if err != nil {
			return err
		}
		p.Assignments = append(p.Assignments, b)
	}
	b, err := json.MarshalIndent(p, "", "  ")
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
	return nil
}

func (s *store) setIdentity(hostID string, deployment uint64, raftAddress string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hostID, s.deployment, s.raftAddress = hostID, deployment, raftAddress
	return s.save()
}

func (s *store) assign(o *drummerpb.StartReplicaOrder) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.assigned[o.ShardId]; old != nil && old.ReplicaId == o.ReplicaId {
		return nil
	}
	s.assigned[o.ShardId] = o
	return s.save()
}

func (s *store) unassign(shardID, replicaID uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.assigned[shardID]; old == nil || old.ReplicaId != replicaID {
		return nil
	}
	delete(s.assigned, shardID)
	return s.save()
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
