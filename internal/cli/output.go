package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// JSON output is produced from these structs, never from protojson: field
// names are stable snake_case, arrays and objects are never null, times are
// RFC3339 strings in UTC (null when unset), durations are milliseconds in
// fields ending in _ms. Adding fields is compatible; renaming is not.

type hostJSON struct {
	ID               string            `json:"id"`
	RaftAddress      string            `json:"raft_address"`
	APIAddress       string            `json:"api_address"`
	Labels           map[string]string `json:"labels"`
	State            string            `json:"state"`
	AdminState       string            `json:"admin_state"`
	Replicas         uint64            `json:"replicas"`
	LastHeartbeat    *string           `json:"last_heartbeat"`
	MaintenanceUntil *string           `json:"maintenance_until"`
	Apps             []string          `json:"apps"`
	Explanation      string            `json:"explanation"`
}

type memberStatusJSON struct {
	ReplicaID   uint64 `json:"replica_id"`
	HostID      string `json:"host_id"`
	RaftAddress string `json:"raft_address"`
	APIAddress  string `json:"api_address"`
	Role        string `json:"role"`
	State       string `json:"state"`
	IsLeader    bool   `json:"is_leader"`
}

type repairJSON struct {
	ID           uint64  `json:"id"`
	ShardID      uint64  `json:"shard_id"`
	Kind         string  `json:"kind"`
	NewReplicaID uint64  `json:"new_replica_id"`
	NewHostID    string  `json:"new_host_id"`
	OldReplicaID uint64  `json:"old_replica_id"`
	OldHostID    string  `json:"old_host_id"`
	Step         string  `json:"step"`
	StepIndex    uint32  `json:"step_index"`
	StepCount    uint32  `json:"step_count"`
	StartedAt    *string `json:"started_at"`
	StepDeadline *string `json:"step_deadline"`
	Outcome      string  `json:"outcome"`
	Reason       string  `json:"reason"`
	FinishedAt   *string `json:"finished_at"`
}

type shardJSON struct {
	ShardID         uint64             `json:"shard_id"`
	App             string             `json:"app"`
	ReplicasDesired uint32             `json:"replicas_desired"`
	Regions         map[string]uint32  `json:"regions"`
	Health          string             `json:"health"`
	LeaderReplicaID uint64             `json:"leader_replica_id"`
	Term            uint64             `json:"term"`
	ConfigChangeID  uint64             `json:"config_change_id"`
	Members         []memberStatusJSON `json:"members"`
	Explanation     []string           `json:"explanation"`
	Repair          *repairJSON        `json:"repair"`
}

type repairsJSON struct {
	InFlight []repairJSON `json:"in_flight"`
	Recent   []repairJSON `json:"recent"`
}

type clusterInfoJSON struct {
	DeploymentID    uint64            `json:"deployment_id"`
	Launched        bool              `json:"launched"`
	Regions         map[string]uint32 `json:"regions"`
	Epoch           uint64            `json:"epoch"`
	LeaderReplicaID uint64            `json:"leader_replica_id"`
	LeaderEndpoint  string            `json:"leader_endpoint"`
	Shards          uint64            `json:"shards"`
	Hosts           uint64            `json:"hosts"`
	Health          map[string]uint64 `json:"health"`
	DBAppliedIndex  uint64            `json:"db_applied_index"`
	// Hex string: a 64-bit hash does not survive JSON tools that use doubles.
	DBHash  string `json:"db_hash"`
	Version string `json:"version"`
}

type memberJSON struct {
	ReplicaID   uint64 `json:"replica_id"`
	RaftAddress string `json:"raft_address"`
	GRPCAddress string `json:"grpc_address"`
	Role        string `json:"role"`
	IsLeader    bool   `json:"is_leader"`
}

type shardOverrideJSON struct {
	ShardID uint64 `json:"shard_id"`
	// 0: the deployment-wide value applies.
	SuspectTimeoutMs uint64 `json:"suspect_timeout_ms"`
	DeadTimeoutMs    uint64 `json:"dead_timeout_ms"`
}

type configJSON struct {
	ReportIntervalMs     uint64              `json:"report_interval_ms"`
	SuspectTimeoutMs     uint64              `json:"suspect_timeout_ms"`
	DeadTimeoutMs        uint64              `json:"dead_timeout_ms"`
	MaxConcurrentRepairs uint32              `json:"max_concurrent_repairs"`
	MaxRepairsPerHost    uint32              `json:"max_repairs_per_host"`
	HostGCAfterMs        uint64              `json:"host_gc_after_ms"`
	BalanceReplicas      bool                `json:"balance_replicas"`
	BalanceLeaders       bool                `json:"balance_leaders"`
	BalanceThresholdPct  uint32              `json:"balance_threshold_pct"`
	BalanceMinExcess     uint32              `json:"balance_min_excess"`
	MaxBalanceMoves      uint32              `json:"max_balance_moves"`
	MaxLeaderTransfers   uint32              `json:"max_leader_transfers"` // per second
	BalanceCooldownMs    uint64              `json:"balance_cooldown_ms"`
	ShardOverrides       []shardOverrideJSON `json:"shard_overrides"`
}

type shardIDsJSON struct {
	ShardIDs []uint64 `json:"shard_ids"`
}

// ---------------------------------------------------------------------------
// Conversions.

// rfc3339 renders Unix milliseconds as an RFC3339 UTC time with
// milliseconds; nil for 0 (never / unset).
func rfc3339(ms int64) *string {
	if ms == 0 {
		return nil
	}
	s := time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
	return &s
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func cloneMapNonNil[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return map[K]V{}
	}
	return maps.Clone(m)
}

func toHostJSON(h *drummerpb.HostStatus) hostJSON {
	return hostJSON{
		ID:               h.GetId(),
		RaftAddress:      h.GetRaftAddress(),
		APIAddress:       h.GetApiAddress(),
		Labels:           cloneMapNonNil(h.GetLabels()),
		State:            h.GetState(),
		AdminState:       h.GetAdminState(),
		Replicas:         h.GetReplicas(),
		LastHeartbeat:    rfc3339(h.GetLastHeartbeatUnixMs()),
		MaintenanceUntil: rfc3339(h.GetMaintenanceUntilUnixMs()),
		Apps:             nonNil(slices.Clone(h.GetApps())),
		Explanation:      h.GetExplanation(),
	}
}

func toRepairJSON(r *drummerpb.Repair) repairJSON {
	return repairJSON{
		ID:           r.GetId(),
		ShardID:      r.GetShardId(),
		Kind:         r.GetKind(),
		NewReplicaID: r.GetNewReplicaId(),
		NewHostID:    r.GetNewHostId(),
		OldReplicaID: r.GetOldReplicaId(),
		OldHostID:    r.GetOldHostId(),
		Step:         r.GetStep(),
		StepIndex:    r.GetStepIndex(),
		StepCount:    r.GetStepCount(),
		StartedAt:    rfc3339(r.GetStartedUnixMs()),
		StepDeadline: rfc3339(r.GetStepDeadlineUnixMs()),
		Outcome:      r.GetOutcome(),
		Reason:       r.GetReason(),
		FinishedAt:   rfc3339(r.GetFinishedUnixMs()),
	}
}

func toRepairsJSON(rs []*drummerpb.Repair) []repairJSON {
	out := make([]repairJSON, 0, len(rs))
	for _, r := range rs {
		out = append(out, toRepairJSON(r))
	}
	return out
}

func toShardJSON(s *drummerpb.ShardStatus) shardJSON {
	out := shardJSON{
		ShardID:         s.GetShardId(),
		App:             s.GetApp(),
		ReplicasDesired: s.GetReplicasDesired(),
		Regions:         cloneMapNonNil(s.GetRegions()),
		Health:          s.GetHealth(),
		LeaderReplicaID: s.GetLeaderReplicaId(),
		Term:            s.GetTerm(),
		ConfigChangeID:  s.GetConfigChangeId(),
		Members:         make([]memberStatusJSON, 0, len(s.GetMembers())),
		Explanation:     nonNil(slices.Clone(s.GetExplanation())),
	}
	for _, m := range s.GetMembers() {
		out.Members = append(out.Members, memberStatusJSON{
			ReplicaID:   m.GetReplicaId(),
			HostID:      m.GetHostId(),
			RaftAddress: m.GetRaftAddress(),
			APIAddress:  m.GetApiAddress(),
			Role:        m.GetRole(),
			State:       m.GetState(),
			IsLeader:    m.GetIsLeader(),
		})
	}
	if s.GetRepair() != nil {
		r := toRepairJSON(s.GetRepair())
		out.Repair = &r
	}
	return out
}

func toMembersJSON(ms []*drummerpb.Member) []memberJSON {
	out := make([]memberJSON, 0, len(ms))
	for _, m := range ms {
		out = append(out, memberJSON{
			ReplicaID:   m.GetReplicaId(),
			RaftAddress: m.GetRaftAddress(),
			GRPCAddress: m.GetGrpcAddress(),
			Role:        m.GetRole(),
			IsLeader:    m.GetIsLeader(),
		})
	}
	return out
}

func toConfigJSON(c *drummerpb.RuntimeConfig) configJSON {
	out := configJSON{
		ReportIntervalMs:     c.GetReportIntervalMs(),
		SuspectTimeoutMs:     c.GetSuspectTimeoutMs(),
		DeadTimeoutMs:        c.GetDeadTimeoutMs(),
		MaxConcurrentRepairs: c.GetMaxConcurrentRepairs(),
		MaxRepairsPerHost:    c.GetMaxRepairsPerHost(),
		HostGCAfterMs:        c.GetHostGcAfterMs(),
		BalanceReplicas:      c.GetBalanceReplicas(),
		BalanceLeaders:       c.GetBalanceLeaders(),
		BalanceThresholdPct:  c.GetBalanceThresholdPct(),
		BalanceMinExcess:     c.GetBalanceMinExcess(),
		MaxBalanceMoves:      c.GetMaxBalanceMoves(),
		MaxLeaderTransfers:   c.GetMaxLeaderTransfers(),
		BalanceCooldownMs:    c.GetBalanceCooldownMs(),
		ShardOverrides:       []shardOverrideJSON{},
	}
	for _, id := range slices.Sorted(maps.Keys(c.GetShardOverrides())) {
		o := c.GetShardOverrides()[id]
		out.ShardOverrides = append(out.ShardOverrides, shardOverrideJSON{
			ShardID:          id,
			SuspectTimeoutMs: o.GetSuspectTimeoutMs(),
			DeadTimeoutMs:    o.GetDeadTimeoutMs(),
		})
	}
	return out
}

func toClusterInfoJSON(ci *drummerpb.ClusterInfo) clusterInfoJSON {
	return clusterInfoJSON{
		DeploymentID:    ci.GetDeploymentId(),
		Launched:        ci.GetLaunched(),
		Regions:         cloneMapNonNil(ci.GetRegions()),
		Epoch:           ci.GetEpoch(),
		LeaderReplicaID: ci.GetLeaderReplicaId(),
		LeaderEndpoint:  ci.GetLeaderEndpoint(),
		Shards:          ci.GetShards(),
		Hosts:           ci.GetHosts(),
		Health:          cloneMapNonNil(ci.GetHealth()),
		DBAppliedIndex:  ci.GetDbAppliedIndex(),
		DBHash:          fmt.Sprintf("%016x", ci.GetDbHash()),
		Version:         ci.GetVersion(),
	}
}

// ---------------------------------------------------------------------------
// Writers.

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table collects rows and prints them aligned under upper-case headers.
// Empty cells are printed as "-" so that columns stay awk-friendly.
type table struct {
	header []string
	rows   [][]string
}

func newTable(header ...string) *table { return &table{header: header} }

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(cells []string) {
		out := make([]string, len(cells))
		for i, c := range cells {
			c = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
			if c == "" {
				c = "-"
			}
			out[i] = c
		}
		fmt.Fprintln(tw, strings.Join(out, "\t"))
	}
	hdr := make([]string, len(t.header))
	for i, h := range t.header {
		hdr[i] = strings.ToUpper(h)
	}
	line(hdr)
	for _, r := range t.rows {
		line(r)
	}
	return tw.Flush()
}

// keyValues prints "Key:  value" lines aligned.
func writeKeyValues(w io.Writer, kvs [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, kv := range kvs {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	return tw.Flush()
}

// ago renders the time since ms relative to now: "3s ago", "never".
func ago(now time.Time, ms int64) string {
	if ms == 0 {
		return "never"
	}
	d := now.Sub(time.UnixMilli(ms))
	if d < 0 {
		return "in " + roundAge(-d)
	}
	return roundAge(d) + " ago"
}

// until renders the time until ms relative to now: "in 42s", "3s ago".
func until(now time.Time, ms int64) string {
	if ms == 0 {
		return "-"
	}
	d := time.UnixMilli(ms).Sub(now)
	if d < 0 {
		return roundAge(-d) + " ago"
	}
	return "in " + roundAge(d)
}

func roundAge(d time.Duration) string {
	switch {
	case d < time.Second:
		return "0s"
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return fmtDuration(d.Truncate(time.Second))
	case d < 48*time.Hour:
		return fmtDuration(d.Truncate(time.Minute))
	default:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
}

func clock(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05 UTC")
}

// shortID shortens a host ID for tables where the raft address is shown
// too; host commands accept any unique prefix.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:8]
	}
	return id
}

func formatLabels(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func idOrDash(id uint64) string {
	if id == 0 {
		return "-"
	}
	return strconv.FormatUint(id, 10)
}

// replicaAt renders "3@abcdef12" (replica 3 on host abcdef12).
func replicaAt(replica uint64, host string) string {
	if replica == 0 && host == "" {
		return "-"
	}
	s := ""
	if replica != 0 {
		s = strconv.FormatUint(replica, 10)
	}
	if host != "" {
		s += "@" + shortID(host)
	}
	return s
}

// repairStep renders an in-flight repair's progress: "catch_up 3/6".
func repairStep(r *drummerpb.Repair) string {
	if r.GetStepCount() == 0 {
		return r.GetStep()
	}
	return fmt.Sprintf("%s %d/%d", r.GetStep(), r.GetStepIndex(), r.GetStepCount())
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// noun picks the singular or plural form for n.
func noun(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
