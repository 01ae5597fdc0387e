package cli

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/drummerhq/drummer/api/drummerpb"
)

func newRegionsCmd(a *app) *cobra.Command {
	c := newGroupCmd("regions", "Show or set the deployment's region placement",
		`The region placement says how many replicas of each shard go to each region
(hosts' "region" label), unless a shard has its own (shard create --regions).`)
	c.AddCommand(&cobra.Command{
		Use:     "set SPEC",
		Short:   "Set the deployment's region placement",
		Example: "  drummercmd regions set us-east:1,us-west:1,eu:1",
		Args:    args(cobra.ExactArgs(1), "one region spec REGION:COUNT,... (e.g. r1:1,r2:1,r3:1)"),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			regions, err := parseRegions(args[0])
			if err != nil {
				return usageErrorf("%v", err)
			}
			d, err := a.drummer()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			if _, err := d.SetRegions(ctx, &drummerpb.SetRegionsRequest{Regions: regions}); err != nil {
				return a.rpcError(err, "set regions %s", formatRegions(regions))
			}
			if a.jsonOutput() {
				return a.printJSON(struct {
					Regions map[string]uint32 `json:"regions"`
				}{regions})
			}
			_, err = fmt.Fprintf(a.stdout, "regions set: %s (%d replicas per shard)\n", formatRegions(regions), sumRegions(regions))
			return err
		}),
	}, &cobra.Command{
		Use:   "show",
		Short: "Show the deployment's region placement",
		Args:  args(cobra.NoArgs, "no arguments"),
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			ci, err := a.clusterInfo(cmd)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(struct {
					Regions map[string]uint32 `json:"regions"`
				}{cloneMapNonNil(ci.GetRegions())})
			}
			if len(ci.GetRegions()) == 0 {
				_, err := fmt.Fprintln(a.stdout, "no regions set: replicas are spread over any hosts")
				return err
			}
			t := newTable("region", "replicas")
			for _, r := range slices.Sorted(maps.Keys(ci.GetRegions())) {
				t.add(r, fmt.Sprint(ci.GetRegions()[r]))
			}
			return t.write(a.stdout)
		}),
	})
	return c
}

func (a *app) clusterInfo(cmd *cobra.Command) (*drummerpb.ClusterInfo, error) {
	d, err := a.drummer()
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	ci, err := d.GetClusterInfo(ctx, &drummerpb.GetClusterInfoRequest{})
	if err != nil {
		return nil, a.rpcError(err, "get cluster info")
	}
	return ci, nil
}

func newLaunchCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "launch",
		Short: "End the setup phase: start placing the defined shards",
		Long: `Launch the deployment: Drummer starts placing the shards defined so far
(and any defined later) onto the nodehosts. Define shards and regions first.
Launching twice is harmless.`,
		Args: args(cobra.NoArgs, "no arguments"),
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			d, err := a.drummer()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := d.Launch(ctx, &drummerpb.LaunchRequest{})
			if err != nil {
				return a.rpcError(err, "launch")
			}
			if a.jsonOutput() {
				return a.printJSON(struct {
					Launched        bool `json:"launched"`
					AlreadyLaunched bool `json:"already_launched"`
				}{true, resp.GetAlreadyLaunched()})
			}
			msg := "launched; follow the placement with 'drummercmd wait --healthy'"
			if resp.GetAlreadyLaunched() {
				msg = "already launched"
			}
			_, err = fmt.Fprintln(a.stdout, msg)
			return err
		}),
	}
}

// healthOrder is the order health states are listed in.
var healthOrder = []string{"healthy", "under_replicated", "unavailable", "pending", "deleting"}

func formatHealthCounts(m map[string]uint64) string {
	var parts []string
	for _, h := range healthOrder {
		if n := m[h]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, h))
		}
	}
	for _, h := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(healthOrder, h) && m[h] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", m[h], h))
		}
	}
	return strings.Join(parts, ", ")
}

func newInfoCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show the deployment: launch state, leader, shard and host counts",
		Args:  args(cobra.NoArgs, "no arguments"),
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			ci, err := a.clusterInfo(cmd)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(toClusterInfoJSON(ci))
			}
			leader := "none"
			if ci.GetLeaderReplicaId() != 0 || ci.GetLeaderEndpoint() != "" {
				leader = fmt.Sprintf("replica %s", idOrDash(ci.GetLeaderReplicaId()))
				if ci.GetLeaderEndpoint() != "" {
					leader += " at " + ci.GetLeaderEndpoint()
				}
			}
			shards := fmt.Sprint(ci.GetShards())
			if h := formatHealthCounts(ci.GetHealth()); h != "" {
				shards += " (" + h + ")"
			}
			regions := formatRegions(ci.GetRegions())
			if regions == "-" {
				regions = "none (spread over any hosts)"
			}
			return writeKeyValues(a.stdout, [][2]string{
				{"Deployment ID", fmt.Sprint(ci.GetDeploymentId())},
				{"Launched", yesNo(ci.GetLaunched())},
				{"Regions", regions},
				{"Scheduler leader", leader},
				{"Scheduler epoch", fmt.Sprint(ci.GetEpoch())},
				{"Shards", shards},
				{"Hosts", fmt.Sprint(ci.GetHosts())},
				{"DB applied index", fmt.Sprint(ci.GetDbAppliedIndex())},
				{"DB hash", fmt.Sprintf("%016x", ci.GetDbHash())},
				{"Server version", ci.GetVersion()},
			})
		}),
	}
}
