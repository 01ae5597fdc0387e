package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
)

// resolveHost finds the host an operator means by ref: its full ID, its
// raft address, or a unique prefix of its ID (case-insensitive), in that
// order of precedence. No match is exit 4; an ambiguous prefix is exit 2.
func resolveHost(hosts []*drummerpb.HostStatus, ref string) (*drummerpb.HostStatus, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return nil, usageErrorf("empty host ID; give a host ID, a unique prefix of one, or a raft address (see 'drummercmd host list')")
	}
	for _, h := range hosts {
		if h.GetId() == ref {
			return h, nil
		}
	}
	for _, h := range hosts {
		if h.GetRaftAddress() == ref {
			return h, nil
		}
	}
	lref := strings.ToLower(ref)
	var matches []*drummerpb.HostStatus
	for _, h := range hosts {
		if strings.HasPrefix(strings.ToLower(h.GetId()), lref) {
			matches = append(matches, h)
		}
	}
	switch len(matches) {
	case 1:
		return matches[0], nil
	case 0:
		return nil, codedErrorf(ExitNotFound, "no host matches %q (by ID, ID prefix or raft address); see 'drummercmd host list'", ref)
	}
	const show = 5
	var names []string
	for i, h := range matches {
		if i == show {
			names = append(names, fmt.Sprintf("and %d more", len(matches)-show))
			break
		}
		names = append(names, fmt.Sprintf("%s (%s)", h.GetId(), h.GetRaftAddress()))
	}
	return nil, usageErrorf("host %q is ambiguous: it matches %s; give more characters of the ID or the raft address",
		ref, strings.Join(names, ", "))
}

// lookupHost resolves ref against the server's host list.
func (a *app) lookupHost(cmd *cobra.Command, d drummerpb.DrummerClient, ref string) (*drummerpb.HostStatus, error) {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	hosts, err := client.ListAllHosts(ctx, d, &drummerpb.ListHostsRequest{})
	if err != nil {
		return nil, a.rpcError(err, "list hosts to resolve %q", ref)
	}
	return resolveHost(hosts, ref)
}
