// Package settings is the one table of Drummer's runtime settings (the keys
// of `drummercmd config set`): each key's kind, whether it may be set per
// shard, its help text, the values it allows, how it is parsed and where it
// lives in the DB's config and in the API's RuntimeConfig. The server
// applies `SetConfig` values with it and the CLI checks them with it before
// sending, so the two can never disagree on what a key accepts.
//
// The DB (internal/db) keeps its own apply-time checks (ValidateConfig):
// they are part of the replicated state machine, must not change with the
// operator-facing rules, and also check the settings against each other.
// This table's ranges lie within them (settings_test.go checks that).
package settings

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

// Kind is how a setting's value is written.
type Kind int

const (
	// Duration: Go syntax with a unit (500ms, 45s, 2m), whole
	// milliseconds; stored in milliseconds.
	Duration Kind = iota
	// Count: a positive integer.
	Count
	// Percent: 1-100, with or without a trailing "%".
	Percent
	// Switch: on|off (also true|false); stored as 1 or 0.
	Switch
)

func (k Kind) String() string {
	switch k {
	case Duration:
		return "duration"
	case Count:
		return "integer"
	case Percent:
		return "percent"
	case Switch:
		return "on|off"
	}
	return "unknown"
}

// Setting is one runtime setting.
type Setting struct {
	Key      string
	Kind     Kind
	PerShard bool // also settable for one shard (the liveness timeouts)
	Help     string
	// Min and Max bound the value in the kind's unit (milliseconds,
	// count, percent; 0 or 1 for a switch).
	Min, Max uint64

	// get is the value in force in a DB config (defaults resolved); set
	// stores one; api reads it from the API's RuntimeConfig and setAPI
	// writes it there.
	get    func(*dbpb.Config) uint64
	set    func(*dbpb.Config, uint64)
	api    func(*drummerpb.RuntimeConfig) uint64
	setAPI func(*drummerpb.RuntimeConfig, uint64)
	// shard gives the field of a per-shard override.
	shard func(*dbpb.ShardTimeouts) *uint64
}

const (
	day = 24 * 3600 * 1000 // ms
	// Percent limits.
	minPct, maxPct = 1, 100
)

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// table is every setting, in the order `config get` shows them.
var table = []Setting{
	{Key: "report_interval", Kind: Duration, Help: "how often agents report to the scheduler leader (to the other drummer servers every 2 intervals)", Min: 100, Max: 60_000,
		get: func(c *dbpb.Config) uint64 { return c.GetReportIntervalMs() }, set: func(c *dbpb.Config, v uint64) { c.ReportIntervalMs = v },
		api: (*drummerpb.RuntimeConfig).GetReportIntervalMs, setAPI: func(r *drummerpb.RuntimeConfig, v uint64) { r.ReportIntervalMs = v }},
	{Key: "suspect_timeout", Kind: Duration, PerShard: true, Help: "silence after which a host is suspect (at least 2x report_interval)", Min: 1, Max: 7 * day,
		get: func(c *dbpb.Config) uint64 { return c.GetSuspectTimeoutMs() }, set: func(c *dbpb.Config, v uint64) { c.SuspectTimeoutMs = v },
		api: (*drummerpb.RuntimeConfig).GetSuspectTimeoutMs, setAPI: func(r *drummerpb.RuntimeConfig, v uint64) { r.SuspectTimeoutMs = v },
		shard: func(o *dbpb.ShardTimeouts) *uint64 { return &o.SuspectTimeoutMs }},
	{Key: "dead_timeout", Kind: Duration, PerShard: true, Help: "silence after which a host is dead and its replicas are repaired (longer than suspect_timeout)", Min: 1, Max: 7 * day,
		get: func(c *dbpb.Config) uint64 { return c.GetDeadTimeoutMs() }, set: func(c *dbpb.Config, v uint64) { c.DeadTimeoutMs = v },
		api: (*drummerpb.RuntimeConfig).GetDeadTimeoutMs, setAPI: func(r *drummerpb.RuntimeConfig, v uint64) { r.DeadTimeoutMs = v },
		shard: func(o *dbpb.ShardTimeouts) *uint64 { return &o.DeadTimeoutMs }},
	{Key: "max_concurrent_repairs", Kind: Count, Help: "repairs in flight in the whole deployment", Min: 1, Max: 100_000,
		get: func(c *dbpb.Config) uint64 { return uint64(c.GetMaxConcurrentRepairs()) }, set: func(c *dbpb.Config, v uint64) { c.MaxConcurrentRepairs = uint32(v) },
		api:    func(r *drummerpb.RuntimeConfig) uint64 { return uint64(r.GetMaxConcurrentRepairs()) },
		setAPI: func(r *drummerpb.RuntimeConfig, v uint64) { r.MaxConcurrentRepairs = uint32(v) }},
	{Key: "max_repairs_per_host", Kind: Count, Help: "repairs in flight touching one host (balancing moves included)", Min: 1, Max: 10_000,
		get: func(c *dbpb.Config) uint64 { return uint64(c.GetMaxRepairsPerHost()) }, set: func(c *dbpb.Config, v uint64) { c.MaxRepairsPerHost = uint32(v) },
		api:    func(r *drummerpb.RuntimeConfig) uint64 { return uint64(r.GetMaxRepairsPerHost()) },
		setAPI: func(r *drummerpb.RuntimeConfig, v uint64) { r.MaxRepairsPerHost = uint32(v) }},
	{Key: "host_gc_after", Kind: Duration, Help: "dead hosts with no replicas are forgotten after this long (at least dead_timeout)", Min: 1, Max: 365 * day,
		get: func(c *dbpb.Config) uint64 { return c.GetHostGcAfterMs() }, set: func(c *dbpb.Config, v uint64) { c.HostGcAfterMs = v },
		api: (*drummerpb.RuntimeConfig).GetHostGcAfterMs, setAPI: func(r *drummerpb.RuntimeConfig, v uint64) { r.HostGcAfterMs = v }},

	// Balancing. The DB stores zero for "default" (db.BalanceOf resolves
	// it), so get reports the value in force.
	{Key: "balance_replicas", Kind: Switch, Help: "move replicas from hosts above their fair share to hosts below it", Min: 0, Max: 1,
		get: func(c *dbpb.Config) uint64 { return b2u(db.BalanceOf(c).Replicas) }, set: func(c *dbpb.Config, v uint64) { c.BalanceReplicasOff = v == 0 },
		api:    func(r *drummerpb.RuntimeConfig) uint64 { return b2u(r.GetBalanceReplicas()) },
		setAPI: func(r *drummerpb.RuntimeConfig, v uint64) { r.BalanceReplicas = v != 0 }},
	{Key: "balance_leaders", Kind: Switch, Help: "transfer leadership so each host leads its fair share of the shards it holds", Min: 0, Max: 1,
		get: func(c *dbpb.Config) uint64 { return b2u(db.BalanceOf(c).Leaders) }, set: func(c *dbpb.Config, v uint64) { c.BalanceLeadersOff = v == 0 },
		api:    func(r *drummerpb.RuntimeConfig) uint64 { return b2u(r.GetBalanceLeaders()) },
		setAPI: func(r *drummerpb.RuntimeConfig, v uint64) { r.BalanceLeaders = v != 0 }},
	{Key: "balance_threshold", Kind: Percent, Help: "a host is out of balance when its count strays from its fair share by more than this share of it (and by more than balance_min_excess)", Min: minPct, Max: maxPct,
		get: func(c *dbpb.Config) uint64 { return uint64(db.BalanceOf(c).ThresholdPct) }, set: func(c *dbpb.Config, v uint64) { c.BalanceThresholdPct = uint32(v) },
		api:    func(r *drummerpb.RuntimeConfig) uint64 { return uint64(r.GetBalanceThresholdPct()) },
		setAPI: func(r *drummerpb.RuntimeConfig, v uint64) { r.BalanceThresholdPct = uint32(v) }},
	{Key: "balance_min_excess", Kind: Count, Help: "a host is out of balance only when its replica count strays from its fair share by more than this many", Min: 1, Max: 10_000,
		get: func(c *dbpb.Config) uint64 { return uint64(db.BalanceOf(c).MinExcess) }, set: func(c *dbpb.Config, v uint64) { c.BalanceMinExcess = uint32(v) },
		api:    func(r *drummerpb.RuntimeConfig) uint64 { return uint64(r.GetBalanceMinExcess()) },
		setAPI: func(r *drummerpb.RuntimeConfig, v uint64) { r.BalanceMinExcess = uint32(v) }},
	{Key: "max_balance_moves", Kind: Count, Help: "balancing moves in flight in the whole deployment", Min: 1, Max: 100_000,
		get: func(c *dbpb.Config) uint64 { return uint64(db.BalanceOf(c).MaxMoves) }, set: func(c *dbpb.Config, v uint64) { c.MaxBalanceMoves = uint32(v) },
		api:    func(r *drummerpb.RuntimeConfig) uint64 { return uint64(r.GetMaxBalanceMoves()) },
		setAPI: func(r *drummerpb.RuntimeConfig, v uint64) { r.MaxBalanceMoves = uint32(v) }},
	{Key: "max_leader_transfers", Kind: Count, Help: "leader transfers for balancing started per second", Min: 1, Max: 100_000,
		get: func(c *dbpb.Config) uint64 { return uint64(db.BalanceOf(c).MaxLeaderTransfers) }, set: func(c *dbpb.Config, v uint64) { c.MaxLeaderTransfers = uint32(v) },
		api:    func(r *drummerpb.RuntimeConfig) uint64 { return uint64(r.GetMaxLeaderTransfers()) },
		setAPI: func(r *drummerpb.RuntimeConfig, v uint64) { r.MaxLeaderTransfers = uint32(v) }},
	{Key: "balance_cooldown", Kind: Duration, Help: "a replica or leader that moved is not moved again for this long", Min: 1, Max: 7 * day,
		get: func(c *dbpb.Config) uint64 { return uint64(db.BalanceOf(c).Cooldown.Milliseconds()) }, set: func(c *dbpb.Config, v uint64) { c.BalanceCooldownMs = v },
		api: (*drummerpb.RuntimeConfig).GetBalanceCooldownMs, setAPI: func(r *drummerpb.RuntimeConfig, v uint64) { r.BalanceCooldownMs = v }},
}

// All returns every setting, in display order.
func All() []Setting { return slices.Clone(table) }

// Keys returns the keys of every setting (with perShard, of those that can
// be set per shard).
func Keys(perShard bool) []string {
	var out []string
	for _, s := range table {
		if !perShard || s.PerShard {
			out = append(out, s.Key)
		}
	}
	return out
}

// NormalizeKey lower-cases a key and turns '-' into '_' (max-balance-moves
// is max_balance_moves).
func NormalizeKey(k string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimSpace(k)), "-", "_")
}

// Lookup finds a setting by key (normalized).
func Lookup(key string) (Setting, bool) {
	key = NormalizeKey(key)
	for _, s := range table {
		if s.Key == key {
			return s, true
		}
	}
	return Setting{}, false
}

// Find is Lookup with the error an operator should see: unknown keys list
// the known ones, keys not settable per shard say which are.
func Find(key string, perShard bool) (Setting, error) {
	s, ok := Lookup(key)
	if !ok {
		return Setting{}, fmt.Errorf("unknown setting %q; known settings: %s", key, strings.Join(Keys(perShard), ", "))
	}
	if perShard && !s.PerShard {
		return Setting{}, fmt.Errorf("%s is deployment-wide and cannot be set per shard; with --shard-id only %s are allowed",
			s.Key, strings.Join(Keys(true), ", "))
	}
	return s, nil
}

// Allowed says in words what the setting accepts.
func (s Setting) Allowed() string {
	switch s.Kind {
	case Duration:
		return fmt.Sprintf("a duration with a unit between %s and %s, e.g. 45s or 5m", FormatMillis(s.Min), FormatMillis(s.Max))
	case Count:
		return fmt.Sprintf("an integer between %d and %d", s.Min, s.Max)
	case Percent:
		return fmt.Sprintf("a percentage between %d%% and %d%%, e.g. 5%% or 5", s.Min, s.Max)
	case Switch:
		return "on or off (or true or false)"
	}
	return ""
}

// Range is the kind and the allowed values in short, for help texts:
// "duration 100ms-1m", "integer 1-64", "percent 1-100", "on|off".
func (s Setting) Range() string {
	switch s.Kind {
	case Duration:
		return fmt.Sprintf("duration %s-%s", FormatMillis(s.Min), FormatMillis(s.Max))
	case Count, Percent:
		return fmt.Sprintf("%s %d-%d", s.Kind, s.Min, s.Max)
	}
	return s.Kind.String()
}

// Parse parses and range-checks a value of the setting. The error names
// the key and says what is allowed.
func (s Setting) Parse(value string) (uint64, error) {
	v := strings.TrimSpace(value)
	bad := func(why string) error {
		return fmt.Errorf("%s=%q: %s; want %s", s.Key, value, why, s.Allowed())
	}
	var n uint64
	switch s.Kind {
	case Duration:
		d, err := ParseDuration(s.Key, v)
		if err != nil {
			return 0, fmt.Errorf("%w; want %s", err, s.Allowed())
		}
		n = uint64(d.Milliseconds())
	case Count, Percent:
		digits := v
		if s.Kind == Percent {
			digits = strings.TrimSpace(strings.TrimSuffix(v, "%"))
		}
		u, err := strconv.ParseUint(digits, 10, 64)
		if err != nil {
			return 0, bad("not a whole number")
		}
		n = u
	case Switch:
		switch strings.ToLower(v) {
		case "on", "true":
			n = 1
		case "off", "false":
			n = 0
		default:
			return 0, bad("not a switch")
		}
	}
	if n < s.Min || n > s.Max {
		return 0, bad("out of range")
	}
	return n, nil
}

// Format renders a value of the setting as `config get` shows it.
func (s Setting) Format(v uint64) string {
	switch s.Kind {
	case Duration:
		return FormatMillis(v)
	case Percent:
		return fmt.Sprintf("%d%%", v)
	case Switch:
		if v != 0 {
			return "on"
		}
		return "off"
	}
	return strconv.FormatUint(v, 10)
}

// Get returns the setting's value in force in a DB config (defaults
// resolved).
func (s Setting) Get(c *dbpb.Config) uint64 { return s.get(c) }

// FromAPI returns the setting's value from the API's RuntimeConfig.
func (s Setting) FromAPI(r *drummerpb.RuntimeConfig) uint64 { return s.api(r) }

// Check validates one "key=value" as `config set` would send it, without
// a DB config: the syntax and range of the value. With perShard the
// value "default" is allowed for the per-shard keys (it removes the
// shard's override). Whether the values fit together (dead_timeout longer
// than suspect_timeout...) is checked by Apply.
func Check(key, value string, perShard bool) error {
	s, err := Find(key, perShard)
	if err != nil {
		return err
	}
	if perShard && strings.TrimSpace(value) == "default" {
		return nil
	}
	_, err = s.Parse(value)
	return err
}

// Apply returns a copy of c with "key"="value" settings applied and
// validated together (db.ValidateConfig), or an error naming the first bad
// key and what it allows; c is never changed. With shardID != 0 only the
// per-shard keys may be given, as an override for that shard; the value
// "default" (or "") removes that override.
func Apply(c *dbpb.Config, values map[string]string, shardID uint64) (*dbpb.Config, error) {
	if len(values) == 0 {
		return nil, fmt.Errorf("no settings given; e.g. dead_timeout=45s")
	}
	out := proto.CloneOf(c)
	if out == nil {
		out = db.DefaultConfig()
	}
	var ov *dbpb.ShardTimeouts
	if shardID != 0 {
		if out.ShardOverrides == nil {
			out.ShardOverrides = map[uint64]*dbpb.ShardTimeouts{}
		}
		ov = proto.CloneOf(out.ShardOverrides[shardID])
		if ov == nil {
			ov = &dbpb.ShardTimeouts{}
		}
	}
	seen := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(values)) {
		s, err := Find(k, ov != nil)
		if err != nil {
			return nil, err
		}
		if prev, dup := seen[s.Key]; dup {
			return nil, fmt.Errorf("%s is given twice (as %q and %q)", s.Key, prev, k)
		}
		seen[s.Key] = k
		v := strings.TrimSpace(values[k])
		if ov != nil {
			n := uint64(0) // back to the deployment-wide value
			if v != "" && v != "default" {
				if n, err = s.Parse(v); err != nil {
					return nil, err
				}
			}
			*s.shard(ov) = n
			continue
		}
		n, err := s.Parse(v)
		if err != nil {
			return nil, err
		}
		s.set(out, n)
	}
	if ov != nil {
		if ov.SuspectTimeoutMs == 0 && ov.DeadTimeoutMs == 0 {
			delete(out.ShardOverrides, shardID)
		} else {
			out.ShardOverrides[shardID] = ov
		}
	}
	if err := db.ValidateConfig(out); err != nil {
		return nil, err
	}
	return out, nil
}

// RuntimeConfig is the API's view of a DB config: every setting's value
// in force (balancing defaults resolved) and the per-shard overrides.
func RuntimeConfig(c *dbpb.Config) *drummerpb.RuntimeConfig {
	out := &drummerpb.RuntimeConfig{}
	for _, s := range table {
		s.setAPI(out, s.get(c))
	}
	if len(c.GetShardOverrides()) > 0 {
		out.ShardOverrides = map[uint64]*drummerpb.ShardTimeouts{}
		for id, o := range c.GetShardOverrides() {
			out.ShardOverrides[id] = &drummerpb.ShardTimeouts{SuspectTimeoutMs: o.GetSuspectTimeoutMs(), DeadTimeoutMs: o.GetDeadTimeoutMs()}
		}
	}
	return out
}

// ParseDuration parses a Go duration ("45s", "2m", "1h30m") for the
// setting or flag called name. It must be positive and a whole number of
// milliseconds (the API's resolution).
func ParseDuration(name, s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return 0, fmt.Errorf("%s: duration %q has no unit; write e.g. %ss or %sms", name, s, s, s)
		}
		return 0, fmt.Errorf("%s: invalid duration %q; use a number with a unit, e.g. 500ms, 45s, 2m, 1h30m", name, s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%s: duration %q must be positive", name, s)
	}
	if d%time.Millisecond != 0 {
		return 0, fmt.Errorf("%s: duration %q is finer than a millisecond; round it to whole milliseconds", name, s)
	}
	return d, nil
}

// FormatDuration prints a duration without the noise of
// time.Duration.String ("1h" rather than "1h0m0s").
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// FormatMillis is FormatDuration of a count of milliseconds.
func FormatMillis(ms uint64) string {
	if ms > math.MaxInt64/uint64(time.Millisecond) {
		return strconv.FormatUint(ms, 10) + "ms"
	}
	return FormatDuration(time.Duration(ms) * time.Millisecond)
}
