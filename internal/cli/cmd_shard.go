package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/drummerhq/drummer/api/drummerpb"
)

func newShardCmd(a *app) *cobra.Command {
	c := newGroupCmd("shard", "Define, delete and inspect shards",
		`Define, delete and inspect the shards Drummer schedules onto nodehosts.

SHARDS arguments are IDs and ranges, comma-separated or as several
arguments: 7, 1-10, 1,2,5-7.`)
	c.AddCommand(
		newShardCreateCmd(a),
		newShardDeleteCmd(a),
		newShardListCmd(a),
		newShardStatusCmd(a),
	)
	return c
}

func newShardCreateCmd(a *app) *cobra.Command {
	var (
		shardID      uint64
		count        uint64
		replicas     uint32
		app          string
		regions      string
		allowPending bool
	)
	c := &cobra.Command{
		Use:   "create --shard-id N [--count K] --replicas R --app NAME [--regions SPEC]",
		Short: "Define shards",
		Long: `Define shards N, N+1, ..., N+K-1, each with R replicas running application
NAME. Drummer places them on nodehosts that run NAME (after 'launch').

--regions places replicas by region label (REGION:COUNT,...; the counts must
add up to --replicas); without it the deployment's regions apply ('regions
show'), or replicas are spread over any hosts.

Without --allow-pending the server refuses shards no eligible host is known
for yet.`,
		Example: "  drummercmd shard create --shard-id 1 --count 10 --replicas 3 --app kv\n" +
			"  drummercmd shard create --shard-id 100 --replicas 3 --app kv --regions us-east:2,us-west:1",
		Args: args(cobra.NoArgs, "flags only (e.g. --shard-id 1 --replicas 3 --app kv)"),
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("shard-id") {
				return usageErrorf("--shard-id is required: the first shard ID to define (1 or more)")
			}
			ids, err := shardRange(shardID, count)
			if err != nil {
				return usageErrorf("%v", err)
			}
			if !cmd.Flags().Changed("replicas") {
				return usageErrorf("--replicas is required: replicas per shard, 1-%d (3 or 5 usually)", maxReplicas)
			}
			if replicas == 0 || replicas > maxReplicas {
				return usageErrorf("--replicas %d is out of range; a shard has 1 to %d replicas (3 or 5 usually)", replicas, maxReplicas)
			}
			if app == "" {
				return usageErrorf("--app is required: the application the replicas run (as the nodehosts register it)")
			}
			if !validName(app) {
				return usageErrorf("invalid --app %q: use 1-%d letters, digits, '.', '_' or '-'", app, maxNameLen)
			}
			var placement map[string]uint32
			if cmd.Flags().Changed("regions") {
				placement, err = parseRegions(regions)
				if err != nil {
					return usageErrorf("--regions: %v", err)
				}
				if sum := sumRegions(placement); sum != replicas {
					return usageErrorf("--regions %s place %d replicas but --replicas is %d; make the counts add up to %d",
						formatRegions(placement), sum, replicas, replicas)
				}
			}
			if replicas%2 == 0 {
				a.warnf("%d replicas tolerate no more failures than %d; an odd count is usually better", replicas, replicas-1)
			}
			d, err := a.drummer()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := d.CreateShards(ctx, &drummerpb.CreateShardsRequest{
				FirstShardId: shardID,
				Count:        count,
				Replicas:     replicas,
				App:          app,
				Regions:      placement,
				AllowPending: allowPending,
			})
			if err != nil {
				return a.rpcError(err, "create %s %s", noun(len(ids), "shard", "shards"), formatShardIDs(ids))
			}
			created := nonNil(resp.GetShardIds())
			if len(created) == 0 {
				created = ids
			}
			if a.jsonOutput() {
				return a.printJSON(shardIDsJSON{ShardIDs: created})
			}
			msg := fmt.Sprintf("created %s %s: app %s, %d replicas", noun(len(created), "shard", "shards"),
				formatShardIDs(created), app, replicas)
			if placement != nil {
				msg += ", regions " + formatRegions(placement)
			}
			_, err = fmt.Fprintln(a.stdout, msg)
			return err
		}),
	}
	f := c.Flags()
	f.Uint64Var(&shardID, "shard-id", 0, "first shard ID to define (required)")
	f.Uint64Var(&count, "count", 1, "number of consecutive shards to define")
	f.Uint32Var(&replicas, "replicas", 0, fmt.Sprintf("replicas per shard, 1-%d (required)", maxReplicas))
	f.StringVar(&app, "app", "", "application the replicas run (required)")
	f.StringVar(&regions, "regions", "", "replicas per region, e.g. r1:1,r2:1,r3:1")
	f.BoolVar(&allowPending, "allow-pending", false, "define the shards even if no eligible host is known yet")
	return c
}

func newShardDeleteCmd(a *app) *cobra.Command {
	var (
		shardID uint64
		count   uint64
		yes     bool
	)
	c := &cobra.Command{
		Use:   "delete (SHARDS... | --shard-id N) [--count K]",
		Short: "Delete shards and their data",
		Long: `Delete shards: Drummer forgets them, stops their replicas and deletes the
replicas' data. This cannot be undone.

Deleting more than one shard asks for confirmation on a terminal; without a
terminal pass --yes.`,
		Example: "  drummercmd shard delete 7\n  drummercmd shard delete 1-10 --yes\n  drummercmd shard delete --shard-id 1 --count 10 --yes",
		Args:    cobra.ArbitraryArgs,
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			ids, err := shardSelection(cmd, args, shardID, count)
			if err != nil {
				return err
			}
			if len(ids) > 1 && !yes {
				if !a.isTerminal(a.stdin) {
					return usageErrorf("refusing to delete %d shards (%s) without confirmation; pass --yes", len(ids), formatShardIDs(ids))
				}
				ok, err := a.confirm(fmt.Sprintf("Delete %d shards (%s) and all their data? This cannot be undone. [y/N] ", len(ids), formatShardIDs(ids)))
				if err != nil {
					return err
				}
				if !ok {
					return codedErrorf(ExitFailure, "aborted; nothing deleted")
				}
			}
			d, err := a.drummer()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := d.DeleteShards(ctx, &drummerpb.DeleteShardsRequest{ShardIds: ids})
			if err != nil {
				return a.rpcError(err, "delete shards %s", formatShardIDs(ids))
			}
			deleted := nonNil(resp.GetShardIds())
			if len(deleted) == 0 {
				deleted = ids
			}
			if a.jsonOutput() {
				return a.printJSON(shardIDsJSON{ShardIDs: deleted})
			}
			_, err = fmt.Fprintf(a.stdout, "deleted %s %s; their replicas are being stopped and their data removed\n",
				noun(len(deleted), "shard", "shards"), formatShardIDs(deleted))
			return err
		}),
	}
	c.Flags().Uint64Var(&shardID, "shard-id", 0, "first shard ID to delete (instead of SHARDS)")
	c.Flags().Uint64Var(&count, "count", 1, "number of consecutive shards from the shard given")
	c.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return c
}

// shardSelection reads the shards of "shard delete": positional IDs and
// ranges, or --shard-id, either with --count for a run of K shards.
func shardSelection(cmd *cobra.Command, args []string, shardID, count uint64) ([]uint64, error) {
	countSet := cmd.Flags().Changed("count")
	idSet := cmd.Flags().Changed("shard-id")
	switch {
	case idSet && len(args) > 0:
		return nil, usageErrorf("give the shards either as arguments or with --shard-id, not both")
	case idSet:
		ids, err := shardRange(shardID, count)
		if err != nil {
			return nil, usageErrorf("%v", err)
		}
		return ids, nil
	case len(args) == 0:
		return nil, usageErrorf("no shards given; e.g. 'shard delete 7', 'shard delete 1-10' or 'shard delete --shard-id 1 --count 10'")
	}
	ids, err := parseShardIDs(args)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	if countSet {
		if len(ids) != 1 {
			return nil, usageErrorf("--count needs exactly one first shard ID, got %s", formatShardIDs(ids))
		}
		ids, err = shardRange(ids[0], count)
		if err != nil {
			return nil, usageErrorf("%v", err)
		}
	}
	return ids, nil
}

// confirm asks a yes/no question on the terminal.
func (a *app) confirm(question string) (bool, error) {
	fmt.Fprint(a.stderr, question)
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return false, err
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}

func newShardListCmd(a *app) *cobra.Command {
	var health []string
	c := &cobra.Command{
		Use:   "list [SHARDS...]",
		Short: "List shards with their health",
		Long: `List shards (all, or the ones given) with their health: healthy,
under_replicated, unavailable or pending. 'shard status ID' shows one shard
in detail. All shards are fetched a page at a time and printed as they
arrive, so the listing starts at once however many shards there are;
--health narrows it (unhealthy: every state but healthy).`,
		Example: "  drummercmd shard list\n  drummercmd shard list --health unhealthy\n  drummercmd shard list 1-10 -o json",
		Args:    cobra.ArbitraryArgs,
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			var ids []uint64
			if len(args) > 0 {
				var err error
				if ids, err = parseShardIDs(args); err != nil {
					return usageErrorf("%v", err)
				}
			}
			for _, h := range health {
				switch h {
				case "healthy", "under_replicated", "unavailable", "pending", "unhealthy":
				default:
					return usageErrorf("--health %q: use healthy, under_replicated, unavailable, pending or unhealthy", h)
				}
			}
			d, err := a.drummer()
			if err != nil {
				return err
			}
			return a.streamShards(cmd, d, &drummerpb.ListShardsRequest{ShardIds: ids, Health: health})
		}),
	}
	c.Flags().StringSliceVar(&health, "health", nil, "only shards in these states (healthy, under_replicated, unavailable, pending, unhealthy)")
	return c
}

// streamShards prints the shards matching req page by page: a JSON array,
// or table rows flushed after every page (each page's deadline is
// --command-timeout, so a long listing is not cut short).
func (a *app) streamShards(cmd *cobra.Command, d drummerpb.DrummerClient, req *drummerpb.ListShardsRequest) error {
	r := &drummerpb.ListShardsRequest{ShardIds: req.ShardIds, Health: req.Health}
	tw := tabwriter.NewWriter(a.stdout, 8, 0, 2, ' ', 0)
	n := 0
	for page := 0; ; page++ {
		ctx, cancel := a.ctx(cmd)
		resp, err := d.ListShards(ctx, r)
		cancel()
		if err != nil {
			if n > 0 && a.jsonOutput() {
				fmt.Fprintln(a.stdout, "]")
			}
			return a.rpcError(err, "list shards")
		}
		shards := slices.Clone(resp.GetShards())
		slices.SortFunc(shards, func(x, y *drummerpb.ShardStatus) int {
			return compareUint(x.GetShardId(), y.GetShardId())
		})
		for _, s := range shards {
			if a.jsonOutput() {
				b, err := json.MarshalIndent(toShardJSON(s), "  ", "  ")
				if err != nil {
					return err
				}
				sep := ",\n  "
				if n == 0 {
					sep = "[\n  "
				}
				fmt.Fprint(a.stdout, sep, string(b))
			} else {
				if n == 0 {
					fmt.Fprintln(tw, "SHARD\tAPP\tHEALTH\tREPLICAS\tLEADER\tTERM\tREPAIR")
				}
				repair := "-"
				if r := s.GetRepair(); r != nil {
					repair = r.GetKind() + " " + repairStep(r)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d/%d\t%s\t%d\t%s\n", s.GetShardId(), s.GetApp(), s.GetHealth(),
					liveMembers(s), s.GetReplicasDesired(), idOrDash(s.GetLeaderReplicaId()), s.GetTerm(), repair)
			}
			n++
		}
		if !a.jsonOutput() {
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if resp.GetNextPageToken() == "" || len(r.ShardIds) > 0 {
			break
		}
		r.PageToken = resp.GetNextPageToken()
	}
	switch {
	case a.jsonOutput() && n == 0:
		fmt.Fprintln(a.stdout, "[]")
	case a.jsonOutput():
		fmt.Fprintln(a.stdout, "\n]")
	case n == 0:
		fmt.Fprintln(tw, "SHARD\tAPP\tHEALTH\tREPLICAS\tLEADER\tTERM\tREPAIR")
		return tw.Flush()
	}
	return nil
}

func compareUint(x, y uint64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// liveMembers counts a shard's members in state live.
func liveMembers(s *drummerpb.ShardStatus) int {
	n := 0
	for _, m := range s.GetMembers() {
		if m.GetState() == "live" {
			n++
		}
	}
	return n
}

func newShardStatusCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status SHARD",
		Short: "Show one shard: members, what is wrong, the repair in flight",
		Args:  args(cobra.ExactArgs(1), "one shard ID"),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			id, err := parseShardID(args[0])
			if err != nil {
				return usageErrorf("%v", err)
			}
			d, err := a.drummer()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			s, err := d.GetShard(ctx, &drummerpb.GetShardRequest{ShardId: id})
			if err != nil {
				return a.rpcError(err, "get shard %d", id)
			}
			if a.jsonOutput() {
				return a.printJSON(toShardJSON(s))
			}
			return writeShardStatus(a.stdout, a, s)
		}),
	}
}

func writeShardStatus(w io.Writer, a *app, s *drummerpb.ShardStatus) error {
	now := a.now()
	leader := "none"
	if s.GetLeaderReplicaId() != 0 {
		leader = fmt.Sprintf("replica %d (term %d)", s.GetLeaderReplicaId(), s.GetTerm())
	}
	regions := formatRegions(s.GetRegions())
	if regions == "-" {
		regions = "deployment default"
	}
	if err := writeKeyValues(w, [][2]string{
		{"Shard", fmt.Sprint(s.GetShardId())},
		{"App", s.GetApp()},
		{"Health", s.GetHealth()},
		{"Replicas", fmt.Sprintf("%d live of %d desired", liveMembers(s), s.GetReplicasDesired())},
		{"Regions", regions},
		{"Leader", leader},
		{"Config change ID", fmt.Sprint(s.GetConfigChangeId())},
	}); err != nil {
		return err
	}
	fmt.Fprintln(w)
	t := newTable("replica", "host", "raft address", "api address", "role", "state", "leader")
	for _, m := range s.GetMembers() {
		l := ""
		if m.GetIsLeader() {
			l = "*"
		}
		t.add(fmt.Sprint(m.GetReplicaId()), shortID(m.GetHostId()), m.GetRaftAddress(), m.GetApiAddress(), m.GetRole(), m.GetState(), l)
	}
	if err := t.write(w); err != nil {
		return err
	}
	if len(s.GetExplanation()) > 0 {
		fmt.Fprintln(w, "\nExplanation:")
		for _, e := range s.GetExplanation() {
			fmt.Fprintf(w, "  - %s\n", e)
		}
	}
	if r := s.GetRepair(); r != nil {
		fmt.Fprintf(w, "\nRepair in flight: #%d %s", r.GetId(), r.GetKind())
		if r.GetOldReplicaId() != 0 || r.GetOldHostId() != "" || r.GetNewReplicaId() != 0 || r.GetNewHostId() != "" {
			fmt.Fprintf(w, " (%s -> %s)", replicaAt(r.GetOldReplicaId(), r.GetOldHostId()), replicaAt(r.GetNewReplicaId(), r.GetNewHostId()))
		}
		fmt.Fprintln(w)
		if r.GetStepCount() > 0 {
			fmt.Fprintf(w, "  step %d/%d: %s\n", r.GetStepIndex(), r.GetStepCount(), r.GetStep())
		} else if r.GetStep() != "" {
			fmt.Fprintf(w, "  step: %s\n", r.GetStep())
		}
		if dl := r.GetStepDeadlineUnixMs(); dl != 0 {
			fmt.Fprintf(w, "  deadline: %s (%s)\n", clock(dl), until(now, dl))
		}
		if st := r.GetStartedUnixMs(); st != 0 {
			fmt.Fprintf(w, "  started: %s (%s)\n", clock(st), ago(now, st))
		}
	} else {
		fmt.Fprintln(w, "\nRepair in flight: none")
	}
	return nil
}
