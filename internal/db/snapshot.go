package db

import (
	"cmp"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/internal/dbpb"
)

// ToSnapshot converts the state into its canonical, sorted form.
func (s *State) ToSnapshot() *dbpb.Snapshot {
	snap := &dbpb.Snapshot{
		Version:        SnapshotVersion,
		DeploymentId:   s.DeploymentID,
		Epoch:          s.Epoch,
		EpochHolder:    s.EpochHolder,
		Launched:       s.Launched,
		Regions:        s.Regions,
		NextRepairId:   s.NextRepairID,
		ReplicaIdFloor: s.ReplicaIDFloor,
		Config:         s.Config,
		RecentRepairs:  s.Recent,
	}
	for _, id := range s.SortedShardIDs() {
		snap.Shards = append(snap.Shards, s.Shards.Get(id))
	}
	for _, id := range s.SortedHostIDs() {
		snap.Hosts = append(snap.Hosts, s.Hosts[id])
	}
	for _, c := range s.Cleanups {
		snap.Cleanups = append(snap.Cleanups, c)
	}
	slices.SortFunc(snap.Cleanups, func(a, b *dbpb.Cleanup) int {
		return cmp.Or(cmp.Compare(a.HostId, b.HostId), cmp.Compare(a.ShardId, b.ShardId), cmp.Compare(a.ReplicaId, b.ReplicaId))
	})
	for _, d := range s.Drummers {
		snap.Drummers = append(snap.Drummers, d)
	}
	slices.SortFunc(snap.Drummers, func(a, b *dbpb.Drummer) int { return cmp.Compare(a.ReplicaId, b.ReplicaId) })
	for _, kv := range s.KV {
		snap.Kv = append(snap.Kv, kv)
	}
	slices.SortFunc(snap.Kv, func(a, b *dbpb.KVRecord) int { return cmp.Compare(a.Key, b.Key) })
	return snap
}

// MarshalSnapshot encodes the state deterministically: equal states give
// equal bytes on every replica and every run.
func (s *State) MarshalSnapshot() ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(s.ToSnapshot())
}

// FromSnapshot decodes a snapshot written by MarshalSnapshot.
func FromSnapshot(b []byte) (*State, error) {
	var snap dbpb.Snapshot
	if err := proto.Unmarshal(b, &snap); err != nil {
		return nil, fmt.Errorf("decode DB snapshot: %w", err)
	}
	if snap.Version != SnapshotVersion {
		return nil, fmt.Errorf("DB snapshot version %d, this build reads version %d", snap.Version, SnapshotVersion)
	}
	s := New()
	s.DeploymentID = snap.DeploymentId
	s.Epoch = snap.Epoch
	s.EpochHolder = snap.EpochHolder
	s.Launched = snap.Launched
	if snap.Regions != nil {
		s.Regions = snap.Regions
	}
	s.NextRepairID = snap.NextRepairId
	s.ReplicaIDFloor = snap.ReplicaIdFloor
	if snap.Config != nil {
		s.Config = snap.Config
	}
	for _, sh := range snap.Shards {
		s.putShard(sh)
	}
	for _, h := range snap.Hosts {
		s.putHost(h)
	}
	for _, c := range snap.Cleanups {
		s.putCleanup(c)
	}
	for _, d := range snap.Drummers {
		s.putDrummer(d)
	}
	for _, kv := range snap.Kv {
		s.putKV(kv)
	}
	s.Recent = snap.RecentRepairs
	s.dirty.All = true
	return s, nil
}
