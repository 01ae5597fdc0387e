package db

import (
	"encoding/binary"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/internal/dbpb"
)

// Result is the outcome of applying one command.
type Result struct {
	Code dbpb.Code
	// Data carries command-specific output: for Decisions one code byte per
	// decision, for AcquireEpoch the new epoch (8 bytes, little endian).
	Data []byte
}

// Encode marshals a command for proposal.
func Encode(cmd *dbpb.Command) ([]byte, error) {
	if cmd.Version == 0 {
		cmd.Version = CommandVersion
	}
	return proto.Marshal(cmd)
}

// Apply decodes and applies one command. It never panics on bad input; a
// command that fails validation changes nothing and returns its code.
func (s *State) Apply(data []byte) Result {
	var cmd dbpb.Command
	if err := proto.Unmarshal(data, &cmd); err != nil {
		return Result{Code: dbpb.Code_CODE_INVALID}
	}
	return s.ApplyCommand(&cmd)
}

// ApplyCommand applies a decoded command.
func (s *State) ApplyCommand(cmd *dbpb.Command) Result {
	if cmd.Version != CommandVersion {
		return Result{Code: dbpb.Code_CODE_INVALID}
	}
	now := cmd.NowUnixMs
	switch op := cmd.Op.(type) {
	case *dbpb.Command_AcquireEpoch:
		return s.acquireEpoch(op.AcquireEpoch)
	case *dbpb.Command_RegisterDrummer:
		return code(s.registerDrummer(op.RegisterDrummer))
	case *dbpb.Command_UnregisterDrummer:
		return code(s.unregisterDrummer(op.UnregisterDrummer))
	case *dbpb.Command_KvPut:
		return code(s.kvPut(op.KvPut))
	case *dbpb.Command_CreateShards:
		return code(s.createShards(op.CreateShards, now))
	case *dbpb.Command_DeleteShards:
		return code(s.deleteShards(op.DeleteShards, now))
	case *dbpb.Command_SetRegions:
		return code(s.setRegions(op.SetRegions))
	case *dbpb.Command_Launch:
		if s.Launched {
			return code(dbpb.Code_CODE_NOOP)
		}
		s.Launched = true
		s.dirty.All = true
		return code(dbpb.Code_CODE_OK)
	case *dbpb.Command_SetConfig:
		return code(s.setConfig(op.SetConfig))
	case *dbpb.Command_SetHostAdmin:
		return code(s.setHostAdmin(op.SetHostAdmin, now))
	case *dbpb.Command_RemoveHost:
		return code(s.removeHost(op.RemoveHost))
	case *dbpb.Command_Decisions:
		return s.applyDecisions(cmd.Epoch, op.Decisions, now)
	}
	return Result{Code: dbpb.Code_CODE_INVALID}
}

func code(c dbpb.Code) Result { return Result{Code: c} }

func (s *State) acquireEpoch(a *dbpb.AcquireEpoch) Result {
	if a == nil || a.Holder == 0 {
		return code(dbpb.Code_CODE_INVALID)
	}
	if a.ExpectEpoch != s.Epoch {
		return code(dbpb.Code_CODE_STALE_EPOCH)
	}
	s.Epoch++
	s.EpochHolder = a.Holder
	if s.DeploymentID == 0 && a.DeploymentId != 0 {
		s.DeploymentID = a.DeploymentId
	}
	// A new scheduler re-plans everything.
	s.dirty.All = true
	return Result{Code: dbpb.Code_CODE_OK, Data: binary.LittleEndian.AppendUint64(nil, s.Epoch)}
}

func (s *State) registerDrummer(r *dbpb.RegisterDrummer) dbpb.Code {
	if r == nil || r.ReplicaId == 0 || ValidateAddress(r.RaftAddress) != nil || ValidateAddress(r.GrpcAddress) != nil {
		return dbpb.Code_CODE_INVALID
	}
	if len(s.Drummers) >= 16 {
		if _, ok := s.Drummers[r.ReplicaId]; !ok {
			return dbpb.Code_CODE_CONFLICT
		}
	}
	if old, ok := s.Drummers[r.ReplicaId]; ok && proto.Equal(old, r) {
		return dbpb.Code_CODE_NOOP
	}
	s.putDrummer(&dbpb.Drummer{ReplicaId: r.ReplicaId, RaftAddress: r.RaftAddress, GrpcAddress: r.GrpcAddress})
	return dbpb.Code_CODE_OK
}

func (s *State) unregisterDrummer(r *dbpb.UnregisterDrummer) dbpb.Code {
	if r == nil || r.ReplicaId == 0 {
		return dbpb.Code_CODE_INVALID
	}
	if _, ok := s.Drummers[r.ReplicaId]; !ok {
		return dbpb.Code_CODE_NOT_FOUND
	}
	s.dropDrummer(r.ReplicaId)
	return dbpb.Code_CODE_OK
}

// kvPut implements the seed's KV semantics: an absent key is created; a
// finalized record never changes; otherwise the record is overwritten when
// its instance ID equals the writer's (renewal) or the writer's old instance
// ID (compare-and-swap takeover), and the write is rejected otherwise.
func (s *State) kvPut(p *dbpb.KVPut) dbpb.Code {
	if p == nil || p.Key == "" || len(p.Key) > MaxKVKeyLen || len(p.Value) > MaxKVValueLen {
		return dbpb.Code_CODE_INVALID
	}
	rec := &dbpb.KVRecord{Key: p.Key, Value: slices.Clone(p.Value), InstanceId: p.InstanceId, Finalized: p.Finalize}
	old, ok := s.KV[p.Key]
	if !ok {
		if len(s.KV) >= MaxKVEntries {
			return dbpb.Code_CODE_CONFLICT
		}
		s.putKV(rec)
		return dbpb.Code_CODE_OK
	}
	if old.Finalized {
		return dbpb.Code_CODE_KV_FINALIZED
	}
	if old.InstanceId == p.InstanceId || (p.OldInstanceId != 0 && old.InstanceId == p.OldInstanceId) {
		s.putKV(rec)
		return dbpb.Code_CODE_OK
	}
	return dbpb.Code_CODE_KV_REJECTED
}

// ValidateShardSpec checks one shard definition.
func ValidateShardSpec(sp *dbpb.ShardSpec) error {
	switch {
	case sp == nil:
		return errf("missing shard spec")
	case sp.ShardId == 0:
		return errf("shard ID 0 is reserved; shard IDs start at 1")
	case !ValidName(sp.App):
		return errf("invalid application name %q", sp.App)
	case sp.Replicas == 0 || sp.Replicas > MaxReplicas:
		return errf("replica count %d out of range 1-%d", sp.Replicas, MaxReplicas)
	}
	if err := ValidateRegions(sp.Regions, sp.Replicas); err != nil {
		return err
	}
	return nil
}

func (s *State) createShards(c *dbpb.CreateShards, now int64) dbpb.Code {
	if c == nil || len(c.Shards) == 0 || len(c.Shards) > MaxShardsPerCommand {
		return dbpb.Code_CODE_INVALID
	}
	seen := make(map[uint64]struct{}, len(c.Shards))
	for _, sp := range c.Shards {
		if ValidateShardSpec(sp) != nil {
			return dbpb.Code_CODE_INVALID
		}
		if _, dup := seen[sp.ShardId]; dup {
			return dbpb.Code_CODE_INVALID
		}
		seen[sp.ShardId] = struct{}{}
	}
	for _, sp := range c.Shards {
		if _, ok := s.Shards.Lookup(sp.ShardId); ok {
			return dbpb.Code_CODE_ALREADY_EXISTS
		}
	}
	for _, sp := range c.Shards {
		var regions map[string]uint32
		if len(sp.Regions) > 0 {
			regions = cloneMap(sp.Regions)
		}
		s.putShard(&dbpb.Shard{
			Id:            sp.ShardId,
			App:           sp.App,
			Replicas:      sp.Replicas,
			Regions:       regions,
			Phase:         dbpb.ShardPhase_SHARD_PHASE_PENDING,
			NextReplicaId: max(1, s.ReplicaIDFloor),
			CreatedUnixMs: now,
		})
		s.touchShard(sp.ShardId)
	}
	return dbpb.Code_CODE_OK
}

func (s *State) deleteShards(d *dbpb.DeleteShards, now int64) dbpb.Code {
	if d == nil || len(d.ShardIds) == 0 || len(d.ShardIds) > MaxShardsPerCommand {
		return dbpb.Code_CODE_INVALID
	}
	seen := make(map[uint64]struct{}, len(d.ShardIds))
	for _, id := range d.ShardIds {
		if _, ok := s.Shards.Lookup(id); !ok {
			return dbpb.Code_CODE_NOT_FOUND
		}
		if _, dup := seen[id]; dup {
			return dbpb.Code_CODE_INVALID
		}
		seen[id] = struct{}{}
	}
	for _, id := range d.ShardIds {
		sh := s.Shards.Get(id)
		for _, m := range sh.Members {
			s.addCleanup(m.HostId, id, m.ReplicaId, "shard deleted", now)
		}
		s.ReplicaIDFloor = max(s.ReplicaIDFloor, sh.NextReplicaId)
		s.deleteShard(id)
		s.touchShard(id)
	}
	s.dropOverrides(d.ShardIds)
	return dbpb.Code_CODE_OK
}

// dropOverrides removes the deleted shards' timeout overrides. The Config
// record is shared with views and snapshots being written, like every
// record, so it is replaced by a modified copy, never changed in place.
func (s *State) dropOverrides(ids []uint64) {
	has := false
	for _, id := range ids {
		if _, ok := s.Config.ShardOverrides[id]; ok {
			has = true
			break
		}
	}
	if !has {
		return
	}
	c := proto.CloneOf(s.Config)
	for _, id := range ids {
		delete(c.ShardOverrides, id)
	}
	s.Config = c
}

func (s *State) setRegions(r *dbpb.SetRegions) dbpb.Code {
	if r == nil || ValidateRegions(r.Regions, 0) != nil {
		return dbpb.Code_CODE_INVALID
	}
	s.Regions = cloneMap(r.Regions)
	if s.Regions == nil {
		s.Regions = map[string]uint32{}
	}
	s.dirty.All = true
	return dbpb.Code_CODE_OK
}

// ValidateConfig checks runtime configuration values for consistency.
func ValidateConfig(c *dbpb.Config) error {
	switch {
	case c == nil:
		return errf("missing config")
	case c.ReportIntervalMs < 100 || c.ReportIntervalMs > 60_000:
		return errf("report_interval must be between 100ms and 60s")
	case c.SuspectTimeoutMs < 2*c.ReportIntervalMs:
		return errf("suspect_timeout must be at least twice report_interval")
	case c.DeadTimeoutMs <= c.SuspectTimeoutMs:
		return errf("dead_timeout must be longer than suspect_timeout")
	case c.DeadTimeoutMs > 7*24*3600*1000:
		return errf("dead_timeout must be at most 7 days")
	case c.MaxConcurrentRepairs == 0 || c.MaxConcurrentRepairs > 100_000:
		return errf("max_concurrent_repairs must be between 1 and 100000")
	case c.MaxRepairsPerHost == 0 || c.MaxRepairsPerHost > 10_000:
		return errf("max_repairs_per_host must be between 1 and 10000")
	case c.HostGcAfterMs < c.DeadTimeoutMs:
		return errf("host_gc_after must be at least dead_timeout")
	case len(c.ShardOverrides) > 100_000:
		return errf("too many shard overrides")
	case c.BalanceThresholdPct > 100:
		return errf("balance_threshold must be between 1%% and 100%%")
	case c.BalanceMinExcess > 10_000:
		return errf("balance_min_excess must be between 1 and 10000")
	case c.MaxBalanceMoves > 100_000:
		return errf("max_balance_moves must be between 1 and 100000")
	case c.MaxLeaderTransfers > 100_000:
		return errf("max_leader_transfers must be between 1 and 100000")
	case c.BalanceCooldownMs > 7*24*3600*1000:
		return errf("balance_cooldown must be at most 7 days")
	}
	for id, o := range c.ShardOverrides {
		if id == 0 || o == nil {
			return errf("invalid shard override")
		}
		suspect, dead := c.SuspectTimeoutMs, c.DeadTimeoutMs
		if o.SuspectTimeoutMs != 0 {
			suspect = o.SuspectTimeoutMs
		}
		if o.DeadTimeoutMs != 0 {
			dead = o.DeadTimeoutMs
		}
		if suspect < 2*c.ReportIntervalMs || dead <= suspect || dead > 7*24*3600*1000 {
			return errf("shard %d: suspect_timeout must be at least twice report_interval and dead_timeout longer than suspect_timeout", id)
		}
	}
	return nil
}

func (s *State) setConfig(c *dbpb.SetConfig) dbpb.Code {
	if c == nil || ValidateConfig(c.Config) != nil {
		return dbpb.Code_CODE_INVALID
	}
	for id := range c.Config.ShardOverrides {
		if _, ok := s.Shards.Lookup(id); !ok {
			return dbpb.Code_CODE_NOT_FOUND
		}
	}
	s.Config = proto.CloneOf(c.Config)
	s.dirty.All = true
	return dbpb.Code_CODE_OK
}

func (s *State) setHostAdmin(a *dbpb.SetHostAdmin, now int64) dbpb.Code {
	if a == nil || a.HostId == "" || a.MaintenanceUntilUnixMs < 0 {
		return dbpb.Code_CODE_INVALID
	}
	if _, ok := dbpb.HostAdmin_name[int32(a.Admin)]; !ok {
		return dbpb.Code_CODE_INVALID
	}
	h, ok := s.Hosts[a.HostId]
	if !ok {
		return dbpb.Code_CODE_NOT_FOUND
	}
	if h.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED {
		return dbpb.Code_CODE_CONFLICT
	}
	nh := proto.CloneOf(h)
	if a.MaintenanceOnly {
		nh.MaintenanceUntilUnixMs = a.MaintenanceUntilUnixMs
	} else {
		// Operators may not set the internal states.
		if a.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED || a.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINED {
			return dbpb.Code_CODE_INVALID
		}
		if nh.Admin == a.Admin {
			return dbpb.Code_CODE_NOOP
		}
		nh.Admin = a.Admin
		nh.AdminSinceUnixMs = now
	}
	s.putHost(nh)
	s.touchHost(a.HostId)
	s.touchShardsOn(a.HostId)
	return dbpb.Code_CODE_OK
}

func (s *State) touchShardsOn(hostID string) {
	for id := range s.ShardsOnHost(hostID) {
		s.touchShard(id)
	}
}

// HostHasMembers reports whether any shard still has a member on hostID.
func (s *State) HostHasMembers(hostID string) bool { return s.hostMembers[hostID] > 0 }

func (s *State) removeHost(r *dbpb.RemoveHost) dbpb.Code {
	if r == nil || r.HostId == "" {
		return dbpb.Code_CODE_INVALID
	}
	if _, ok := s.Hosts[r.HostId]; !ok {
		return dbpb.Code_CODE_NOT_FOUND
	}
	if !r.Force && s.HostHasMembers(r.HostId) {
		return dbpb.Code_CODE_CONFLICT
	}
	s.forgetHost(r.HostId)
	return dbpb.Code_CODE_OK
}

func (s *State) forgetHost(hostID string) {
	s.dropHost(hostID)
	for _, c := range s.CleanupsFor(hostID) {
		s.dropCleanup(CleanupKey{HostID: c.HostId, ShardID: c.ShardId, ReplicaID: c.ReplicaId})
	}
	s.touchHost(hostID)
	s.touchShardsOn(hostID)
}

func (s *State) addCleanup(hostID string, shardID, replicaID uint64, reason string, now int64) {
	// Nothing can be cleaned on a host that is gone or replaced (its data
	// went with it), and such a cleanup would never be dropped.
	if h, ok := s.Hosts[hostID]; !ok || h.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED {
		return
	}
	k := CleanupKey{HostID: hostID, ShardID: shardID, ReplicaID: replicaID}
	if _, ok := s.Cleanups[k]; ok {
		return
	}
	s.putCleanup(&dbpb.Cleanup{HostId: hostID, ShardId: shardID, ReplicaId: replicaID, Reason: reason, RecordedUnixMs: now})
	s.touchHost(hostID)
}

func errf(format string, args ...any) error { return fmt.Errorf(format, args...) }
