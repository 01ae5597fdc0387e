package cli

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/settings"
)

func configKeysHelp() string {
	var b strings.Builder
	for _, k := range settings.All() {
		per := ""
		if k.PerShard {
			per = "; per shard too"
		}
		fmt.Fprintf(&b, "  %-24s %s (%s%s)\n", k.Key, k.Help, k.Range(), per)
	}
	return b.String()
}

func newConfigCmd(a *app) *cobra.Command {
	c := newGroupCmd("config", "Show or change runtime settings",
		"Runtime settings are stored in Drummer's DB and apply to the whole deployment.\n\nSettings:\n"+configKeysHelp())
	show := &cobra.Command{
		Use:     "get",
		Aliases: []string{"show"},
		Short:   "Show the runtime settings in force and per-shard overrides",
		Long: `Show every runtime setting with the value in force (a setting never
changed shows its default), then the per-shard overrides.`,
		Args: args(cobra.NoArgs, "no arguments"),
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			d, err := a.drummer()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			cfg, err := d.GetConfig(ctx, &drummerpb.GetConfigRequest{})
			if err != nil {
				return a.rpcError(err, "get config")
			}
			return a.printConfig(cfg)
		}),
	}
	var shardID uint64
	set := &cobra.Command{
		Use:   "set [--shard-id N] KEY=VALUE...",
		Short: "Change runtime settings",
		Long: `Change runtime settings. Durations take a unit (500ms, 45s, 2m, 1h);
counts are positive integers; percentages are 1-100, with or without "%";
switches are on or off (or true or false). The server checks the values
together (e.g. dead_timeout must be longer than suspect_timeout) and
applies all or none. The settings apply to the whole deployment.

With --shard-id N, suspect_timeout and dead_timeout are set for shard N
only; the value "default" removes that override (a shard's overrides go
away when the shard is deleted).

Settings:
` + configKeysHelp(),
		Example: "  drummercmd config set dead_timeout=2m max_concurrent_repairs=8\n" +
			"  drummercmd config set balance_leaders=off balance_threshold=10% balance_cooldown=5m\n" +
			"  drummercmd config set --shard-id 7 suspect_timeout=5s dead_timeout=30s",
		Args: cobra.ArbitraryArgs,
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			perShard := cmd.Flags().Changed("shard-id")
			if perShard && shardID == 0 {
				return usageErrorf("--shard-id 0 is not a shard; shard IDs start at 1")
			}
			kvs, err := parseKeyValues(args)
			if err != nil {
				return usageErrorf("%v", err)
			}
			values := map[string]string{}
			for _, kv := range kvs {
				if err := validateConfigSetting(kv.Key, kv.Value, perShard); err != nil {
					return usageErrorf("%v", err)
				}
				values[kv.Key] = kv.Value
			}
			d, err := a.drummer()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			cfg, err := d.SetConfig(ctx, &drummerpb.SetConfigRequest{Values: values, ShardId: shardID})
			if err != nil {
				what := "set config"
				if perShard {
					what += fmt.Sprintf(" of shard %d", shardID)
				}
				return a.rpcError(err, "%s", what)
			}
			return a.printConfig(cfg)
		}),
	}
	set.Flags().Uint64Var(&shardID, "shard-id", 0, "set suspect_timeout/dead_timeout for this shard only")
	c.AddCommand(show, set)
	return c
}

func (a *app) printConfig(cfg *drummerpb.RuntimeConfig) error {
	if a.jsonOutput() {
		return a.printJSON(toConfigJSON(cfg))
	}
	t := newTable("key", "value")
	for _, k := range settings.All() {
		t.add(k.Key, k.Format(k.FromAPI(cfg)))
	}
	if err := t.write(a.stdout); err != nil {
		return err
	}
	if len(cfg.GetShardOverrides()) == 0 {
		return nil
	}
	fmt.Fprintln(a.stdout, "\nPer-shard overrides:")
	ov := newTable("shard", "suspect timeout", "dead timeout")
	inherit := func(ms uint64) string {
		if ms == 0 {
			return "(default)"
		}
		return fmtMillis(ms)
	}
	for _, id := range slices.Sorted(maps.Keys(cfg.GetShardOverrides())) {
		o := cfg.GetShardOverrides()[id]
		ov.add(fmt.Sprint(id), inherit(o.GetSuspectTimeoutMs()), inherit(o.GetDeadTimeoutMs()))
	}
	return ov.write(a.stdout)
}
