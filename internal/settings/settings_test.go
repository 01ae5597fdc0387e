package settings

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

func TestApply(t *testing.T) {
	base := db.DefaultConfig()
	c, err := Apply(base, map[string]string{"dead_timeout": "45s", "max_repairs_per_host": "3"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.DeadTimeoutMs != 45000 || c.MaxRepairsPerHost != 3 || base.DeadTimeoutMs == 45000 {
		t.Fatalf("got %v (base changed: %v)", c, base.DeadTimeoutMs == 45000)
	}
	c, err = Apply(c, map[string]string{"dead_timeout": "2m"}, 7)
	if err != nil || c.ShardOverrides[7].GetDeadTimeoutMs() != 120000 {
		t.Fatalf("override: %v %v", c, err)
	}
	c, err = Apply(c, map[string]string{"dead_timeout": "default"}, 7)
	if err != nil || c.ShardOverrides[7] != nil {
		t.Fatalf("override not removed: %v %v", c.ShardOverrides, err)
	}
	if _, err := Apply(base, map[string]string{"report_interval": "2s"}, 7); err == nil || !strings.Contains(err.Error(), "cannot be set per shard") {
		t.Errorf("deployment-wide key accepted per shard: %v", err)
	}
	if _, err := Apply(base, map[string]string{"balance_replicas": "off"}, 7); err == nil || !strings.Contains(err.Error(), "balance_replicas is deployment-wide") {
		t.Errorf("balancing key accepted per shard: %v", err)
	}
}

func TestApplyBalance(t *testing.T) {
	base := db.DefaultConfig()
	c, err := Apply(base, map[string]string{
		"balance_replicas": "off", "balance-leaders": "false", "balance_threshold": "10%",
		"balance_min_excess": "3", "max_balance_moves": "8", "max_leader_transfers": "5", "balance_cooldown": "30s",
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := db.BalanceSettings{Replicas: false, Leaders: false, ThresholdPct: 10, MinExcess: 3, MaxMoves: 8, MaxLeaderTransfers: 5, Cooldown: 30e9}
	if got := db.BalanceOf(c); got != want {
		t.Errorf("BalanceOf = %+v, want %+v", got, want)
	}
	if !proto.Equal(base, db.DefaultConfig()) {
		t.Error("Apply changed its input")
	}
	c, err = Apply(c, map[string]string{"balance_replicas": "on", "balance_leaders": "TRUE", "balance_threshold": "7"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b := db.BalanceOf(c); !b.Replicas || !b.Leaders || b.ThresholdPct != 7 || b.MaxMoves != 8 {
		t.Errorf("BalanceOf = %+v", b)
	}
}

// Bad values are refused with the key and what it allows, and change
// nothing.
func TestApplyRefuses(t *testing.T) {
	base := db.DefaultConfig()
	for _, tc := range []struct {
		values map[string]string
		msg    string
	}{
		{map[string]string{}, "no settings given"},
		{map[string]string{"dead_timeout": "1s"}, "dead_timeout must be longer than suspect_timeout"},
		{map[string]string{"nosuch": "1"}, `unknown setting "nosuch"; known settings: report_interval`},
		{map[string]string{"max_concurrent_repairs": "0"}, `max_concurrent_repairs="0": out of range; want an integer between 1 and 100000`},
		{map[string]string{"report_interval": "soon"}, `report_interval: invalid duration "soon"`},
		{map[string]string{"report_interval": "10ms"}, `report_interval="10ms": out of range; want a duration with a unit between 100ms and 1m`},
		{map[string]string{"balance_replicas": "maybe"}, `balance_replicas="maybe": not a switch; want on or off (or true or false)`},
		{map[string]string{"balance_threshold": "0"}, `balance_threshold="0": out of range; want a percentage between 1% and 100%`},
		{map[string]string{"balance_threshold": "101%"}, "out of range"},
		{map[string]string{"balance_threshold": "5.5%"}, "not a whole number"},
		{map[string]string{"balance_min_excess": "-1"}, "balance_min_excess=\"-1\": not a whole number; want an integer between 1 and 10000"},
		{map[string]string{"max_balance_moves": "0"}, "max_balance_moves"},
		{map[string]string{"max_leader_transfers": "100001"}, "max_leader_transfers"},
		{map[string]string{"balance_cooldown": "5"}, `balance_cooldown: duration "5" has no unit`},
		{map[string]string{"balance_cooldown": "8d"}, "balance_cooldown"},
		{map[string]string{"balance_cooldown": "200h"}, "out of range"},
		{map[string]string{"dead_timeout": "1m", "dead-timeout": "2m"}, "given twice"},
		{map[string]string{"balance_cooldown": "1m", "balance_threshold": "0"}, "balance_threshold"},
	} {
		before := proto.CloneOf(base)
		c, err := Apply(base, tc.values, 0)
		if err == nil || !strings.Contains(err.Error(), tc.msg) || c != nil {
			t.Errorf("Apply(%v) = %v, %v; want an error mentioning %q", tc.values, c, err, tc.msg)
		}
		if !proto.Equal(before, base) {
			t.Errorf("Apply(%v) changed its input", tc.values)
		}
	}
}

// Check is what the CLI runs before sending: the same syntax and range
// rules as Apply.
func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		k, v     string
		perShard bool
		msg      string // "" = accepted
	}{
		{"report_interval", "1s", false, ""},
		{"dead_timeout", "default", true, ""},
		{"dead_timeout", "default", false, "invalid duration"},
		{"dead_timeout", "45", false, "has no unit"},
		{"dead_timeout", "0", true, "must be positive"},
		{"dead_timeout", "1500us", false, "finer than a millisecond"},
		{"balance_threshold", "5%", false, ""},
		{"balance_threshold", "100", false, ""},
		{"balance_threshold", "1", false, ""},
		{"balance_threshold", "0%", false, "out of range"},
		{"balance_replicas", "off", false, ""},
		{"balance_leaders", "on", false, ""},
		{"balance_leaders", "1", false, "not a switch"},
		{"max_leader_transfers", "50", false, ""},
		{"balance_cooldown", "1m", false, ""},
		{"balance_cooldown", "1m", true, "cannot be set per shard"},
		{"bogus", "1", true, "known settings: suspect_timeout, dead_timeout"},
	} {
		err := Check(tc.k, tc.v, tc.perShard)
		if tc.msg == "" && err != nil || tc.msg != "" && (err == nil || !strings.Contains(err.Error(), tc.msg)) {
			t.Errorf("Check(%s=%s, %v) = %v, want %q", tc.k, tc.v, tc.perShard, err, tc.msg)
		}
	}
}

// The table's ranges lie within what the DB accepts: every setting at its
// Min and Max (applied to a config where the others allow it) passes
// db.ValidateConfig, so the CLI never accepts what the server refuses for
// a reason of that key alone.
func TestRangesWithinTheDB(t *testing.T) {
	for _, s := range All() {
		for _, v := range []uint64{s.Min, s.Max} {
			c := db.DefaultConfig()
			switch s.Key {
			case "suspect_timeout", "dead_timeout", "host_gc_after":
				// The timeouts are ordered against each other; give
				// the others room.
				c.ReportIntervalMs = 100
				c.SuspectTimeoutMs, c.DeadTimeoutMs, c.HostGcAfterMs = 200, 300, 365*day
				if s.Key == "suspect_timeout" && v == s.Max {
					continue // dead_timeout cannot be longer: a cross-setting rule
				}
				if s.Key == "suspect_timeout" && v < 200 {
					c.ReportIntervalMs, c.SuspectTimeoutMs, c.DeadTimeoutMs = 100, 200, 300
					continue // below 2x report_interval: a cross-setting rule
				}
				if s.Key == "dead_timeout" && v <= 200 {
					continue // not longer than suspect_timeout: a cross-setting rule
				}
				if s.Key == "host_gc_after" && v < c.DeadTimeoutMs {
					continue
				}
			case "report_interval":
				c.SuspectTimeoutMs, c.DeadTimeoutMs, c.HostGcAfterMs = 2*v, 2*v+1, 2*v+1
			}
			s.set(c, v)
			if err := db.ValidateConfig(c); err != nil {
				t.Errorf("%s=%s: the DB refuses it: %v", s.Key, s.Format(v), err)
			}
			if got := s.Get(c); got != v && s.Kind != Switch {
				t.Errorf("%s: stored %d, reads back %d", s.Key, v, got)
			}
		}
	}
}

// The API's RuntimeConfig shows the values in force: balancing defaults
// resolved where the DB holds zeros.
func TestRuntimeConfigResolvesDefaults(t *testing.T) {
	rc := RuntimeConfig(db.DefaultConfig())
	if !rc.BalanceReplicas || !rc.BalanceLeaders || rc.BalanceThresholdPct != db.DefaultBalanceThresholdPct ||
		rc.BalanceMinExcess != db.DefaultBalanceMinExcess || rc.MaxBalanceMoves != db.DefaultMaxBalanceMoves ||
		rc.MaxLeaderTransfers != db.DefaultMaxLeaderTransfers || rc.BalanceCooldownMs != uint64(db.DefaultBalanceCooldown.Milliseconds()) {
		t.Errorf("defaults not resolved: %v", rc)
	}
	if rc.ReportIntervalMs != 1000 || rc.DeadTimeoutMs != 30000 || rc.MaxRepairsPerHost != 8 {
		t.Errorf("RuntimeConfig = %v", rc)
	}
	c := &dbpb.Config{BalanceReplicasOff: true, BalanceCooldownMs: 5000, ShardOverrides: map[uint64]*dbpb.ShardTimeouts{3: {DeadTimeoutMs: 9000}}}
	rc = RuntimeConfig(c)
	if rc.BalanceReplicas || !rc.BalanceLeaders || rc.BalanceCooldownMs != 5000 || rc.ShardOverrides[3].GetDeadTimeoutMs() != 9000 {
		t.Errorf("RuntimeConfig = %v", rc)
	}
	// Every setting reads back from the API what the DB holds.
	for _, s := range All() {
		if s.FromAPI(rc) != s.Get(c) {
			t.Errorf("%s: API %d, DB %d", s.Key, s.FromAPI(rc), s.Get(c))
		}
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		key  string
		v    uint64
		want string
	}{
		{"balance_threshold", 5, "5%"},
		{"balance_replicas", 1, "on"},
		{"balance_leaders", 0, "off"},
		{"balance_cooldown", 60000, "1m"},
		{"host_gc_after", 86400000, "24h"},
		{"dead_timeout", 90000, "1m30s"},
		{"max_balance_moves", 64, "64"},
	} {
		s, _ := Lookup(tc.key)
		if got := s.Format(tc.v); got != tc.want {
			t.Errorf("%s %d = %q, want %q", tc.key, tc.v, got, tc.want)
		}
	}
}
