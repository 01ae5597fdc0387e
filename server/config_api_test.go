package server

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
)

// GetConfig shows the balancing settings in force (defaults resolved);
// SetConfig changes them, and refuses bad values naming the key without
// changing anything.
func TestConfigBalanceSettings(t *testing.T) {
	_, c := startServer(t)
	ctx := ctxT(t)
	cfg, err := c.GetConfig(ctx, &drummerpb.GetConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.BalanceReplicas || !cfg.BalanceLeaders || cfg.BalanceThresholdPct != db.DefaultBalanceThresholdPct ||
		cfg.BalanceMinExcess != db.DefaultBalanceMinExcess || cfg.MaxBalanceMoves != db.DefaultMaxBalanceMoves ||
		cfg.MaxLeaderTransfers != db.DefaultMaxLeaderTransfers || cfg.BalanceCooldownMs != 60_000 {
		t.Errorf("defaults not shown: %v", cfg)
	}
	cfg, err = c.SetConfig(ctx, &drummerpb.SetConfigRequest{Values: map[string]string{
		"balance_leaders": "off", "balance_threshold": "10%", "max_leader_transfers": "5", "balance_cooldown": "2m",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BalanceLeaders || !cfg.BalanceReplicas || cfg.BalanceThresholdPct != 10 || cfg.MaxLeaderTransfers != 5 || cfg.BalanceCooldownMs != 120_000 {
		t.Errorf("after set: %v", cfg)
	}
	before, err := c.GetConfig(ctx, &drummerpb.GetConfigRequest{})
	if err != nil || !proto.Equal(before, cfg) {
		t.Fatalf("GetConfig after SetConfig: %v %v, want %v", before, err, cfg)
	}
	for _, tc := range []struct {
		values  map[string]string
		shardID uint64
		msg     string
	}{
		{map[string]string{"balance_threshold": "0", "balance_leaders": "on"}, 0, "balance_threshold"},
		{map[string]string{"balance_replicas": "sometimes"}, 0, "balance_replicas"},
		{map[string]string{"max_balance_moves": "0"}, 0, "max_balance_moves"},
		{map[string]string{"balance_cooldown": "8760h"}, 0, "balance_cooldown"},
		{map[string]string{"balance_cooldown": "1m"}, 7, "deployment-wide"},
	} {
		_, err := c.SetConfig(ctx, &drummerpb.SetConfigRequest{Values: tc.values, ShardId: tc.shardID})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("SetConfig(%v): %v, want InvalidArgument naming %s", tc.values, err, tc.msg)
		}
	}
	after, err := c.GetConfig(ctx, &drummerpb.GetConfigRequest{})
	if err != nil || !proto.Equal(before, after) {
		t.Errorf("refused settings changed the config: %v -> %v (%v)", before, after, err)
	}
}
