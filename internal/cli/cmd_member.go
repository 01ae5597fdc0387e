package cli

import (
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/drummerhq/drummer/api/drummerpb"
)

func newMemberCmd(a *app) *cobra.Command {
	c := newGroupCmd("member", "List, add and remove drummer servers",
		`The drummer servers themselves are the members of Drummer's own Raft group
(the DB shard). Add or remove one at a time and keep an odd number.`)
	var (
		id          uint64
		raftAddress string
		grpcAddress string
	)
	add := &cobra.Command{
		Use:   "add --id N --raft-address HOST:PORT --grpc-address HOST:PORT",
		Short: "Add a drummer server to the DB's Raft group",
		Long: `Add a drummer server as member N of the DB's Raft group. Then start that
server with --join (and the same --id and addresses) so that it joins the
existing members; add it to the --endpoints lists of clients and agents.`,
		Example: "  drummercmd member add --id 4 --raft-address 10.0.0.4:7201 --grpc-address 10.0.0.4:7101",
		Args:    args(cobra.NoArgs, "flags only"),
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			if err := checkMemberID(cmd, id); err != nil {
				return err
			}
			if err := validateAddress("--raft-address", raftAddress); err != nil {
				return usageErrorf("%v", err)
			}
			if err := validateAddress("--grpc-address", grpcAddress); err != nil {
				return usageErrorf("%v", err)
			}
			d, err := a.drummer()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := d.AddMember(ctx, &drummerpb.AddMemberRequest{ReplicaId: id, RaftAddress: raftAddress, GrpcAddress: grpcAddress})
			if err != nil {
				return a.rpcError(err, "add member %d", id)
			}
			if a.jsonOutput() {
				return a.printJSON(toMembersJSON(resp.GetMembers()))
			}
			fmt.Fprintf(a.stdout, "member %d added; now start it so that it joins:\n  drummer --id %d --raft-address %s --grpc-address %s --data-dir DIR --join\n\n",
				id, id, raftAddress, grpcAddress)
			return writeMembers(a, resp.GetMembers())
		}),
	}
	add.Flags().Uint64Var(&id, "id", 0, "replica ID of the new member (required, not used before)")
	add.Flags().StringVar(&raftAddress, "raft-address", "", "Raft address of the new server (required)")
	add.Flags().StringVar(&grpcAddress, "grpc-address", "", "gRPC address of the new server (required)")

	var removeID uint64
	remove := &cobra.Command{
		Use:     "remove --id N",
		Short:   "Remove a drummer server from the DB's Raft group",
		Example: "  drummercmd member remove --id 4",
		Args:    args(cobra.NoArgs, "flags only (--id N)"),
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			if err := checkMemberID(cmd, removeID); err != nil {
				return err
			}
			d, err := a.drummer()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := d.RemoveMember(ctx, &drummerpb.RemoveMemberRequest{ReplicaId: removeID})
			if err != nil {
				return a.rpcError(err, "remove member %d", removeID)
			}
			if a.jsonOutput() {
				return a.printJSON(toMembersJSON(resp.GetMembers()))
			}
			fmt.Fprintf(a.stdout, "member %d removed; stop that drummer server and remove it from --endpoints lists\n\n", removeID)
			return writeMembers(a, resp.GetMembers())
		}),
	}
	remove.Flags().Uint64Var(&removeID, "id", 0, "replica ID of the member to remove (required)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the drummer servers",
		Args:  args(cobra.NoArgs, "no arguments"),
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			d, err := a.drummer()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := d.ListMembers(ctx, &drummerpb.ListMembersRequest{})
			if err != nil {
				return a.rpcError(err, "list members")
			}
			if a.jsonOutput() {
				return a.printJSON(toMembersJSON(sortedMembers(resp.GetMembers())))
			}
			return writeMembers(a, resp.GetMembers())
		}),
	}
	c.AddCommand(list, add, remove)
	return c
}

func checkMemberID(cmd *cobra.Command, id uint64) error {
	if !cmd.Flags().Changed("id") {
		return usageErrorf("--id is required: the member's replica ID (see 'drummercmd member list')")
	}
	if id == 0 {
		return usageErrorf("--id 0 is not a valid replica ID; IDs start at 1")
	}
	return nil
}

func sortedMembers(ms []*drummerpb.Member) []*drummerpb.Member {
	ms = slices.Clone(ms)
	slices.SortFunc(ms, func(x, y *drummerpb.Member) int { return compareUint(x.GetReplicaId(), y.GetReplicaId()) })
	return ms
}

func writeMembers(a *app, ms []*drummerpb.Member) error {
	t := newTable("id", "raft address", "grpc address", "role", "leader")
	for _, m := range sortedMembers(ms) {
		l := ""
		if m.GetIsLeader() {
			l = "*"
		}
		t.add(fmt.Sprint(m.GetReplicaId()), m.GetRaftAddress(), m.GetGrpcAddress(), m.GetRole(), l)
	}
	return t.write(a.stdout)
}
