package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/grpcutil"
)

// Limits of the nodehost's API server.
const (
	maxAPIStreams    = 1024
	maxSmallRequest  = 64 << 10
	defaultOpenRate  = 200
	defaultAPIDeadln = 30 * time.Second
)

func (a *Agent) raftCAFile() string { return filepath.Join(a.cfg.DataDir, "tls", "raft-ca.crt") }

func (a *Agent) newTLSSource() (*auth.Source, error) {
	if a.cfg.Insecure {
		return nil, nil
	}
	return auth.NewSource(auth.SourceOptions{
		Files:       auth.Files{CAFile: a.cfg.CAFile, CertFile: a.cfg.CertFile, KeyFile: a.cfg.KeyFile},
		Roles:       []auth.Role{auth.RoleNodehost},
		RaftAddress: a.cfg.RaftAddress,
		RaftCAFile:  a.raftCAFile(),
		CheckEvery:  a.cfg.CertCheckEvery,
		Logger:      a.cfg.Logger,
	})
}

// drummerCredentials secure the connections to the drummer servers: the
// nodehost's certificate, and only servers with a server certificate.
func (a *Agent) drummerCredentials() grpc.DialOption {
	if a.tls == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(a.tls.ClientCredentials(auth.RoleServer))
}

// apiServerOptions are the security and limit options of the API server.
func (a *Agent) apiServerOptions(data []grpc.ServerOption) ([]grpc.ServerOption, error) {
	rate := float64(defaultOpenRate)
	if a.cfg.OpenSessionsPerSecond > 0 {
		rate = a.cfg.OpenSessionsPerSecond
	}
	noCap := time.Duration(0) // the service caps data calls itself (nodehostapi.Options.MaxTimeout)
	limits := grpcutil.Limits{
		DefaultDeadline: defaultAPIDeadln,
		Deadlines: map[string]time.Duration{
			drummerpb.NodehostAPI_OpenSession_FullMethodName:  noCap,
			drummerpb.NodehostAPI_CloseSession_FullMethodName: noCap,
			drummerpb.NodehostAPI_Propose_FullMethodName:      noCap,
			drummerpb.NodehostAPI_Read_FullMethodName:         noCap,
		},
		MaxRequestBytes: map[string]int{
			drummerpb.NodehostAPI_OpenSession_FullMethodName:     maxSmallRequest,
			drummerpb.NodehostAPI_CloseSession_FullMethodName:    maxSmallRequest,
			drummerpb.NodehostAPI_ListLocalShards_FullMethodName: maxSmallRequest,
		},
		Rates: map[string]grpcutil.Rate{drummerpb.NodehostAPI_OpenSession_FullMethodName: {PerSecond: rate, Burst: int(2 * rate)}},
		Key: func(ctx context.Context) string {
			if id, ok := auth.FromContext(ctx); ok {
				return id.Name
			}
			return ""
		},
	}
	opts := append(data, grpc.MaxConcurrentStreams(maxAPIStreams), grpc.ConnectionTimeout(10*time.Second))
	if a.tls == nil {
		return append(opts, grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{limits.UnaryInterceptor()}, a.cfg.APIInterceptors...)...)), nil
	}
	extra := map[string]auth.Rule{}
	for m, name := range a.cfg.APIMethodRoles {
		r, err := auth.ParseRole(name)
		if err != nil {
			return nil, fmt.Errorf("APIMethodRoles[%s]: %w", m, err)
		}
		extra[m] = auth.RuleFor(r)
	}
	authz := auth.NewAuthorizer(extra)
	return append(opts,
		grpc.Creds(a.tls.ServerCredentials()),
		grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{authz.UnaryInterceptor(), limits.UnaryInterceptor()}, a.cfg.APIInterceptors...)...),
		grpc.ChainStreamInterceptor(authz.StreamInterceptor()),
	), nil
}

// ---------------------------------------------------------------------------
// Destructive orders.

// epochHolder remembers which drummer server holds the newest scheduler
// epoch this agent has seen. Orders that delete data are taken only from
// that server, over a connection whose peer proved a server certificate
// (in secure mode): a second endpoint claiming the same epoch, a
// connection to something that is not a drummer server, or a deposed
// epoch cannot make this host delete anything.
type epochHolder struct {
	mu       sync.Mutex
	epoch    uint64
	endpoint string
}

// verify records a leader reply's epoch from ep and reports whether its
// destructive orders may be executed.
func (g *epochHolder) verify(secure bool, epoch uint64, ep string, p *peer.Peer) (bool, string) {
	if secure {
		if p == nil || p.AuthInfo == nil {
			return false, "the reply's connection has no verified peer"
		}
		id, err := auth.PeerIdentity(p.AuthInfo)
		if err != nil {
			return false, err.Error()
		}
		if id.Role != auth.RoleServer {
			return false, fmt.Sprintf("the reply came from %s, not a drummer server", id)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case epoch > g.epoch:
		g.epoch, g.endpoint = epoch, ep
		return true, ""
	case epoch < g.epoch:
		return false, fmt.Sprintf("epoch %d is older than epoch %d held by %s", epoch, g.epoch, g.endpoint)
	case g.endpoint == "" && epoch > 0:
		// The epoch was restored from disk after a restart; its holder's
		// endpoint was not.
		g.endpoint = ep
		return true, ""
	case ep != g.endpoint:
		return false, fmt.Sprintf("epoch %d is held by %s, not %s", epoch, g.endpoint, ep)
	}
	return true, ""
}

func isDestructive(o *drummerpb.Order) bool { return o.GetStop().GetRemoveData() }

// filterUnverified drops the destructive orders of a reply that did not
// come from the verified epoch holder, recording each as rejected.
func (e *executor) filterUnverified(orders []*drummerpb.Order, why string) []*drummerpb.Order {
	var keep []*drummerpb.Order
	for _, o := range orders {
		if o == nil || !isDestructive(o) {
			keep = append(keep, o)
			continue
		}
		e.a.log.Warn("refusing to delete replica data on an unverified order", "order", o.Id, "reason", why)
		e.mu.Lock()
		e.record(&drummerpb.OrderResult{Id: o.Id, Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED,
			ShardId: o.GetStop().GetShardId(), ReplicaId: o.GetStop().GetReplicaId(), Error: "not from the verified epoch holder: " + why})
		e.mu.Unlock()
	}
	return keep
}

// refuseRemoveData checks, before a replica's data is deleted, that this
// host's own dragonboat does not show it as a member: the shard's
// linearizable membership (when the replica runs here and the shard
// answers) must not list it. When the shard cannot answer while this
// replica still sees a leader, the deletion waits (FAILED, retried); a
// replica that sees no leader is cut off from its shard (typically
// removed while it was away: its stale local view still lists itself) and
// the drummer's own checks stand. It returns nil when the deletion may go
// ahead.
func (e *executor) refuseRemoveData(ctx context.Context, o *drummerpb.StopReplicaOrder) *drummerpb.OrderResult {
	id, ok := e.running(o.ShardId)
	if !ok || id != o.ReplicaId {
		return nil // not loaded here: dragonboat holds no view of it
	}
	nh := e.a.nh
	mctx, cancel := context.WithTimeout(ctx, e.timeouts.membership)
	defer cancel()
	m, err := nh.SyncGetShardMembership(mctx, o.ShardId)
	if err == nil {
		if isMember(m, o.ReplicaId) {
			e.a.log.Error("refusing to delete the data of a replica that is still a member of its shard",
				"shard_id", o.ShardId, "replica_id", o.ReplicaId, "config_change_id", m.ConfigChangeID)
			res := rejected("replica %d of shard %d is still a member of its shard (ConfigChangeID %d); its data is not deleted", o.ReplicaId, o.ShardId, m.ConfigChangeID)
			res.ShardId, res.ReplicaId = o.ShardId, o.ReplicaId
			res.Membership = toMembership(m)
			return res
		}
		return nil
	}
	info := e.a.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
	if info == nil {
		return failed("NodeHost closed")
	}
	for _, si := range info.ShardInfoList {
		if si.ShardID != o.ShardId || si.ReplicaID != o.ReplicaId {
			continue
		}
		_, voter := si.Replicas[o.ReplicaId]
		if si.LeaderID != 0 && (voter || si.IsNonVoting) {
			res := failed("cannot confirm that replica %d of shard %d is no longer a member (%v) while it sees leader %d; not deleting its data yet", o.ReplicaId, o.ShardId, err, si.LeaderID)
			res.ShardId, res.ReplicaId = o.ShardId, o.ReplicaId
			return res
		}
	}
	return nil
}

func isMember(m *dragonboat.Membership, replicaID uint64) bool {
	if _, ok := m.Nodes[replicaID]; ok {
		return true
	}
	if _, ok := m.NonVotings[replicaID]; ok {
		return true
	}
	_, ok := m.Witnesses[replicaID]
	return ok
}
