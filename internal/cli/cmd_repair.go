package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/drummerhq/drummer/api/drummerpb"
)

func newRepairCmd(a *app) *cobra.Command {
	c := newGroupCmd("repair", "Follow Drummer's repairs",
		`Repairs are the membership changes Drummer makes to keep shards healthy:
replacing dead replicas, moving replicas off draining hosts, adding or
removing replicas; balancing moves (kind balance) are listed with them.`)
	c.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List repairs in flight and recently finished ones",
		Long: `List repairs in flight (with their current step and its deadline) and
recently finished ones (with their outcome: done, failed, rolled_back or
cancelled, and the reason). KIND is replace (a dead replica), add, remove,
move (off a draining host) or balance (from a host above its fair share to
one below it; drummercmd balance status).`,
		Args: args(cobra.NoArgs, "no arguments"),
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			d, err := a.drummer()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := d.ListRepairs(ctx, &drummerpb.ListRepairsRequest{})
			if err != nil {
				return a.rpcError(err, "list repairs")
			}
			if a.jsonOutput() {
				return a.printJSON(repairsJSON{
					InFlight: toRepairsJSON(resp.GetInFlight()),
					Recent:   toRepairsJSON(resp.GetRecent()),
				})
			}
			now := a.now()
			t := newTable("id", "shard", "kind", "status", "from", "to", "started", "deadline/finished", "reason")
			for _, r := range resp.GetInFlight() {
				t.add(fmt.Sprint(r.GetId()), fmt.Sprint(r.GetShardId()), r.GetKind(), "in flight: "+repairStep(r),
					replicaAt(r.GetOldReplicaId(), r.GetOldHostId()), replicaAt(r.GetNewReplicaId(), r.GetNewHostId()),
					ago(now, r.GetStartedUnixMs()), "deadline "+until(now, r.GetStepDeadlineUnixMs()), r.GetReason())
			}
			for _, r := range resp.GetRecent() {
				t.add(fmt.Sprint(r.GetId()), fmt.Sprint(r.GetShardId()), r.GetKind(), r.GetOutcome(),
					replicaAt(r.GetOldReplicaId(), r.GetOldHostId()), replicaAt(r.GetNewReplicaId(), r.GetNewHostId()),
					ago(now, r.GetStartedUnixMs()), "finished "+ago(now, r.GetFinishedUnixMs()), r.GetReason())
			}
			return t.write(a.stdout)
		}),
	})
	return c
}
