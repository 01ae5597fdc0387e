package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lni/dragonboat/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/planner"
	"github.com/drummerhq/drummer/internal/scheduler"
	"github.com/drummerhq/drummer/internal/settings"
)

// ---------------------------------------------------------------------------
// Leader gating.

// leaderEndpoint returns the gRPC endpoint of the DB shard's Raft leader.
func (s *Server) leaderEndpoint(st *db.State) string {
	id, _ := s.raftLeader()
	if d := st.Drummers[id]; d != nil {
		return d.GrpcAddress
	}
	return ""
}

// requireLeader answers UNAVAILABLE, naming the leader in a trailer, unless
// this server holds the scheduler epoch. A refused call did nothing, so the
// client may safely repeat it at the leader.
func (s *Server) requireLeader(ctx context.Context) (*db.State, error) {
	if s.isRemoved.Load() {
		return nil, status.Error(codes.FailedPrecondition, "this drummer server was removed from the cluster")
	}
	st, _ := s.sm.View()
	if s.loop.isActive() {
		return st, nil
	}
	ep := s.leaderEndpoint(st)
	if ep != "" && ep != s.advertisedGRPC() {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(client.LeaderTrailer, ep))
		return nil, status.Errorf(codes.Unavailable, "not the drummer leader; the leader is at %s", ep)
	}
	return nil, status.Error(codes.Unavailable, "no drummer leader yet (election in progress); retry shortly")
}

func codeError(c dbpb.Code, what string) error {
	switch c {
	case dbpb.Code_CODE_OK, dbpb.Code_CODE_NOOP:
		return nil
	case dbpb.Code_CODE_INVALID:
		return status.Errorf(codes.InvalidArgument, "%s: invalid request", what)
	case dbpb.Code_CODE_NOT_FOUND:
		return status.Errorf(codes.NotFound, "%s: not found", what)
	case dbpb.Code_CODE_ALREADY_EXISTS:
		return status.Errorf(codes.AlreadyExists, "%s: already exists", what)
	case dbpb.Code_CODE_CONFLICT:
		return status.Errorf(codes.FailedPrecondition, "%s: conflicts with the current state", what)
	case dbpb.Code_CODE_STALE_EPOCH:
		return status.Errorf(codes.Unavailable, "%s: leadership changed; retry", what)
	case dbpb.Code_CODE_QUORUM:
		return status.Errorf(codes.FailedPrecondition, "%s: would leave fewer voters than a quorum of the shard's replicas", what)
	}
	return status.Errorf(codes.Internal, "%s: %s", what, c)
}

// proposeError maps a failed proposal. Unavailable promises that nothing
// was done (clients repeat the call on another server), so it is used only
// where the proposal cannot have been committed; when the outcome is not
// known the answer is DeadlineExceeded, which clients do not repeat.
func proposeError(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, dragonboat.ErrTimeout):
		return status.Errorf(codes.DeadlineExceeded, "the drummer DB did not commit in time; the change may still be applied: %v", err)
	case errors.Is(err, dragonboat.ErrShardClosed), errors.Is(err, dragonboat.ErrClosed):
		// The DB replica stopped with the proposal pending: the other
		// members may still commit it.
		return status.Errorf(codes.DeadlineExceeded, "this drummer server stopped while the change was pending; it may still be applied by the others: check before repeating it (%v)", err)
	case errors.Is(err, context.Canceled), errors.Is(err, dragonboat.ErrCanceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Errorf(codes.Unavailable, "the drummer DB is not available: %v", err)
}

// write proposes an operator command and maps its result.
func (s *Server) write(ctx context.Context, what string, cmd *dbpb.Command) (dbpb.Code, error) {
	r, err := s.propose(ctx, cmd)
	if err != nil {
		return 0, proposeError(err)
	}
	return r.Code, codeError(r.Code, what)
}

// ---------------------------------------------------------------------------
// Agent reports.

// Report takes a nodehost's report (every server takes them) and, on the
// leader, answers with the orders in force for that host.
func (s *Server) Report(ctx context.Context, req *drummerpb.ReportRequest) (*drummerpb.ReportResponse, error) {
	if s.isRemoved.Load() {
		return nil, status.Error(codes.FailedPrecondition, "this drummer server was removed from the cluster")
	}
	left := admitResults(req, scheduler.MaxReportResults)
	if err := scheduler.ValidateReport(req); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "report from %q: %v", req.GetHostId(), err)
	}
	var (
		host    *dbpb.Host
		resp    = &drummerpb.ReportResponse{ResultsLeft: uint32(left)}
		dbEpoch uint64
	)
	s.sm.Read(func(st *db.State) {
		host = st.Hosts[req.HostId]
		resp.ReportIntervalMs = st.Config.ReportIntervalMs
		resp.DeploymentId = st.DeploymentID
		dbEpoch = st.Epoch
		for _, id := range slices.Sorted(maps.Keys(st.Drummers)) {
			resp.DrummerEndpoints = append(resp.DrummerEndpoints, st.Drummers[id].GrpcAddress)
		}
		if id, _ := s.raftLeader(); st.Drummers[id] != nil {
			resp.LeaderEndpoint = st.Drummers[id].GrpcAddress
		}
	})
	if err := checkReporter(ctx, req, host); err != nil {
		return nil, err
	}
	if host != nil && host.RaftAddress != req.RaftAddress {
		return nil, status.Errorf(codes.FailedPrecondition,
			"host %s is registered with raft address %s but reports %s; a data directory is tied to its raft address", req.HostId, host.RaftAddress, req.RaftAddress)
	}
	if host != nil && host.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED {
		return nil, status.Errorf(codes.FailedPrecondition,
			"host identity %s was replaced by another host on %s; this data directory must not be used again", req.HostId, req.RaftAddress)
	}
	inSequence := s.loop.ses.Check(req)
	resp.NeedFull = !req.Full && !inSequence
	at := time.Now()
	if host != nil {
		s.loop.noteHeard(req.HostId, at)
	}
	if err := s.loop.enqueue(ctx, reportIn{r: req, at: at, inSequence: inSequence}); err != nil {
		return nil, status.Errorf(codes.Unavailable, "report not taken: %v", err)
	}
	epoch, p, expect := s.loop.ordersFor(req.HostId)
	if epoch != 0 {
		resp.Leader, resp.Epoch, resp.ExpectOrders = true, epoch, expect
		resp.OrdersVersion = p.version
		// The agent holds these very orders: do not send (and marshal)
		// them again. Most reports during a launch or a repair are such.
		if p.version != 0 && req.OrdersEpoch == epoch && req.OrdersVersion == p.version {
			resp.OrdersUnchanged = true
		} else {
			resp.Orders = p.orders
		}
	} else {
		resp.Epoch = dbEpoch
	}
	return resp, nil
}

// ---------------------------------------------------------------------------
// Deployment.

// countsWait bounds how long GetClusterInfo waits for the loop before it
// answers with the counts of the last round.
const countsWait = time.Second

// GetClusterInfo summarizes the deployment.
func (s *Server) GetClusterInfo(ctx context.Context, _ *drummerpb.GetClusterInfoRequest) (*drummerpb.ClusterInfo, error) {
	st, err := s.requireLeader(ctx)
	if err != nil {
		return nil, err
	}
	var counts, hcounts map[string]int
	// The loop answers between rounds. When it is so busy that it cannot
	// within countsWait (a launch at 10,000 hosts kept it busy for
	// minutes), the counts of its last round answer instead: a summary
	// that may lag a round, rather than a status call that hangs.
	lctx, cancel := context.WithTimeout(ctx, countsWait)
	var lc, lh map[string]int // written by the loop, maybe after a timeout: read only on success
	err = s.loop.do(lctx, func(n *scheduler.Node) {
		s.absorb(n, st)
		lc, lh = n.Counts(), n.HostCounts()
	})
	cancel()
	if err == nil {
		counts, hcounts = lc, lh
	} else {
		p := s.loop.counts.Load()
		if ctx.Err() != nil || p == nil || p.epoch != st.Epoch {
			return nil, status.FromContextError(err).Err()
		}
		counts, hcounts = p.health, p.hosts
	}
	health := map[string]uint64{}
	hostStates := map[string]uint64{}
	judged := 0
	for h, c := range counts {
		health[h] = uint64(c)
		judged += c
	}
	if rest := st.Shards.Len() - judged; rest > 0 {
		health["pending"] += uint64(rest) // not judged yet by this leader
	}
	for l, c := range hcounts {
		hostStates[l] = uint64(c)
	}
	id, _ := s.raftLeader()
	hash, idx := s.DBHash()
	return &drummerpb.ClusterInfo{
		HostsByState:    hostStates,
		RepairsInFlight: uint64(len(st.RepairingShards())),
		DeploymentId:    st.DeploymentID,
		Launched:        st.Launched,
		Regions:         st.Regions,
		Epoch:           st.Epoch,
		LeaderReplicaId: id,
		LeaderEndpoint:  s.leaderEndpoint(st),
		Shards:          uint64(st.Shards.Len()),
		Hosts:           uint64(len(st.Hosts)),
		Health:          health,
		DbAppliedIndex:  idx,
		DbHash:          hash,
		Version:         s.cfg.Version,
	}, nil
}

// SetRegions sets the deployment's default region placement.
func (s *Server) SetRegions(ctx context.Context, req *drummerpb.SetRegionsRequest) (*drummerpb.SetRegionsResponse, error) {
	if _, err := s.requireLeader(ctx); err != nil {
		return nil, err
	}
	if err := db.ValidateRegions(req.Regions, 0); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(req.Regions) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no regions given; e.g. r1:1,r2:1,r3:1")
	}
	if _, err := s.write(ctx, "set regions", &dbpb.Command{Op: &dbpb.Command_SetRegions{SetRegions: &dbpb.SetRegions{Regions: req.Regions}}}); err != nil {
		return nil, err
	}
	return &drummerpb.SetRegionsResponse{}, nil
}

// Launch ends the launch phase: defined shards are placed and started.
func (s *Server) Launch(ctx context.Context, _ *drummerpb.LaunchRequest) (*drummerpb.LaunchResponse, error) {
	if _, err := s.requireLeader(ctx); err != nil {
		return nil, err
	}
	c, err := s.write(ctx, "launch", &dbpb.Command{Op: &dbpb.Command_Launch{Launch: &dbpb.Launch{}}})
	if err != nil {
		return nil, err
	}
	return &drummerpb.LaunchResponse{AlreadyLaunched: c == dbpb.Code_CODE_NOOP}, nil
}

// ---------------------------------------------------------------------------
// Shards.

// eligibleForApp counts hosts that could take a replica of app, by region.
func eligibleForApp(st *db.State, app string) (int, map[string]int) {
	n, byRegion := 0, map[string]int{}
	for _, h := range st.Hosts {
		if h.Admin != dbpb.HostAdmin_HOST_ADMIN_ACTIVE && h.Admin != dbpb.HostAdmin_HOST_ADMIN_CORDONED {
			continue
		}
		if !slices.Contains(h.Apps, app) {
			continue
		}
		n++
		byRegion[h.Labels[planner.RegionLabel]]++
	}
	return n, byRegion
}

func knownApps(st *db.State) []string {
	set := map[string]struct{}{}
	for _, h := range st.Hosts {
		if h.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED {
			continue
		}
		for _, a := range h.Apps {
			set[a] = struct{}{}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// CreateShards defines shards; after launch they are placed at once.
func (s *Server) CreateShards(ctx context.Context, req *drummerpb.CreateShardsRequest) (*drummerpb.CreateShardsResponse, error) {
	st, err := s.requireLeader(ctx)
	if err != nil {
		return nil, err
	}
	count := req.Count
	if count == 0 {
		count = 1
	}
	if req.FirstShardId == 0 {
		return nil, status.Error(codes.InvalidArgument, "shard ID 0 is reserved; shard IDs start at 1")
	}
	if count > db.MaxShardsPerCommand {
		return nil, status.Errorf(codes.InvalidArgument, "count %d: at most %d shards per call", count, db.MaxShardsPerCommand)
	}
	if req.FirstShardId+count-1 < req.FirstShardId {
		return nil, status.Error(codes.InvalidArgument, "shard ID range overflows")
	}
	spec0 := &dbpb.ShardSpec{ShardId: req.FirstShardId, App: req.App, Replicas: req.Replicas, Regions: req.Regions}
	if err := db.ValidateShardSpec(spec0); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	apps := knownApps(st)
	if !slices.Contains(apps, req.App) && !req.AllowPending {
		known := "none yet: no nodehost has reported"
		if len(apps) > 0 {
			known = strings.Join(apps, ", ")
		}
		return nil, status.Errorf(codes.InvalidArgument, "unknown app %q: no registered nodehost runs it (known apps: %s); check --app, or pass --allow-pending to define it before such nodehosts start", req.App, known)
	}
	if !req.AllowPending {
		n, byRegion := eligibleForApp(st, req.App)
		if int(req.Replicas) > n {
			return nil, status.Errorf(codes.FailedPrecondition, "%d replicas wanted but only %d nodehosts can run app %q; start more nodehosts, lower --replicas, or pass --allow-pending to define the shards anyway", req.Replicas, n, req.App)
		}
		regions := req.Regions
		if len(regions) == 0 {
			var total uint32
			for _, c := range st.Regions {
				total += c
			}
			if total == req.Replicas {
				regions = st.Regions
			}
		}
		for _, r := range slices.Sorted(maps.Keys(regions)) {
			if byRegion[r] < int(regions[r]) {
				return nil, status.Errorf(codes.FailedPrecondition, "region %s needs %d nodehosts (label region=%s) but %d are registered; start them, change --regions, or pass --allow-pending", r, regions[r], r, byRegion[r])
			}
		}
	}
	var specs []*dbpb.ShardSpec
	var ids []uint64
	for i := uint64(0); i < count; i++ {
		id := req.FirstShardId + i
		specs = append(specs, &dbpb.ShardSpec{ShardId: id, App: req.App, Replicas: req.Replicas, Regions: req.Regions})
		ids = append(ids, id)
	}
	// A create that finds exactly what it asks for succeeds: it is the
	// repeat of one whose answer was lost.
	if done, err := createdAlready(st, specs); done || err != nil {
		if err != nil {
			return nil, err
		}
		return &drummerpb.CreateShardsResponse{ShardIds: ids}, nil
	}
	if _, err := s.write(ctx, "create shards", &dbpb.Command{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{Shards: specs}}}); err != nil {
		if status.Code(err) == codes.AlreadyExists {
			st, _ := s.sm.View()
			if done, _ := createdAlready(st, specs); done {
				return &drummerpb.CreateShardsResponse{ShardIds: ids}, nil
			}
		}
		return nil, err
	}
	return &drummerpb.CreateShardsResponse{ShardIds: ids}, nil
}

// createdAlready reports whether every shard of specs exists as specified;
// it fails with AlreadyExists when one exists with another definition.
func createdAlready(st *db.State, specs []*dbpb.ShardSpec) (bool, error) {
	found := 0
	for _, sp := range specs {
		sh, ok := st.Shards.Lookup(sp.ShardId)
		if !ok {
			continue
		}
		if sh.App != sp.App || sh.Replicas != sp.Replicas || !maps.Equal(sh.Regions, sp.Regions) {
			return false, status.Errorf(codes.AlreadyExists, "shard %d already exists with another definition (app %s, %d replicas, regions %v)", sp.ShardId, sh.App, sh.Replicas, sh.Regions)
		}
		found++
	}
	switch found {
	case 0:
		return false, nil
	case len(specs):
		return true, nil
	}
	return false, status.Errorf(codes.AlreadyExists, "%d of the %d shards already exist; create the others alone", found, len(specs))
}

// DeleteShards deletes shards: their replicas are stopped and their data
// removed on every host.
func (s *Server) DeleteShards(ctx context.Context, req *drummerpb.DeleteShardsRequest) (*drummerpb.DeleteShardsResponse, error) {
	st, err := s.requireLeader(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.ShardIds) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no shard IDs given")
	}
	seen := map[uint64]bool{}
	for _, id := range req.ShardIds {
		if _, ok := st.Shards.Lookup(id); !ok {
			return nil, status.Errorf(codes.NotFound, "shard %d does not exist", id)
		}
		if seen[id] {
			return nil, status.Errorf(codes.InvalidArgument, "shard %d listed twice", id)
		}
		seen[id] = true
	}
	if _, err := s.write(ctx, "delete shards", &dbpb.Command{Op: &dbpb.Command_DeleteShards{DeleteShards: &dbpb.DeleteShards{ShardIds: req.ShardIds}}}); err != nil {
		return nil, err
	}
	return &drummerpb.DeleteShardsResponse{ShardIds: req.ShardIds}, nil
}

func (s *Server) shardStatus(st *db.State, sh *dbpb.Shard, r *planner.ShardReport) *drummerpb.ShardStatus {
	out := &drummerpb.ShardStatus{
		ShardId:         sh.Id,
		App:             sh.App,
		ReplicasDesired: sh.Replicas,
		Regions:         sh.Regions,
		Health:          "pending",
	}
	if r != nil {
		out.Health, out.LeaderReplicaId, out.Term, out.ConfigChangeId = r.Health, r.LeaderID, r.Term, r.CCI
		out.Explanation = r.Explanation
		for _, m := range r.Members {
			ms := &drummerpb.MemberStatus{ReplicaId: m.ReplicaID, HostId: m.HostID, Role: m.Role, State: m.State, IsLeader: m.IsLeader}
			if h := st.Hosts[m.HostID]; h != nil {
				ms.RaftAddress, ms.ApiAddress = h.RaftAddress, h.ApiAddress
			}
			out.Members = append(out.Members, ms)
		}
	}
	if sh.Repair != nil {
		out.Repair = repairStatus(st, sh.Id, sh.Repair)
	}
	return out
}

func repairStatus(st *db.State, shardID uint64, r *dbpb.Repair) *drummerpb.Repair {
	idx, n := db.StepIndex(r.Kind, r.Step)
	out := &drummerpb.Repair{
		Id: r.Id, ShardId: shardID, Kind: planner.KindName(r.Kind),
		NewReplicaId: r.NewReplicaId, NewHostId: r.NewHostId, OldReplicaId: r.OldReplicaId, OldHostId: r.OldHostId,
		Step: planner.StepName(r.Step), StepIndex: uint32(idx), StepCount: uint32(n),
		StartedUnixMs: r.StartedUnixMs, Reason: r.Reason,
	}
	if r.Step == dbpb.RepairStep_REPAIR_STEP_ROLLBACK {
		out.Kind = "rollback"
		out.Reason = r.RollbackReason
	}
	if d := planner.StepDeadline(r); !d.IsZero() {
		out.StepDeadlineUnixMs = d.UnixMilli()
	}
	return out
}

// ListShards lists shards with their health, members and explanations,
// a page at a time (or the shards asked for).
func (s *Server) ListShards(ctx context.Context, req *drummerpb.ListShardsRequest) (*drummerpb.ListShardsResponse, error) {
	st, err := s.requireLeader(ctx)
	if err != nil {
		return nil, err
	}
	match, err := healthFilter(req.Health)
	if err != nil {
		return nil, err
	}
	if len(req.ShardIds) > maxListIDs {
		return nil, status.Errorf(codes.InvalidArgument, "at most %d shard IDs per call; page through all shards instead", maxListIDs)
	}
	resp := &drummerpb.ListShardsResponse{}
	var (
		page     []uint64
		verdicts map[uint64]*planner.ShardReport
	)
	size, start, err := pageParams(req.PageSize, req.PageToken, 500, 2000)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if err := s.loop.do(ctx, func(n *scheduler.Node) {
		s.absorb(n, st)
		if len(req.ShardIds) > 0 {
			verdicts = n.Verdicts(st, req.ShardIds, now)
			for _, id := range req.ShardIds {
				if st.Shards.Get(id) != nil && match(verdicts[id]) {
					page = append(page, id)
				}
			}
			resp.Total = uint64(len(page))
			return
		}
		var next uint64
		var total int
		page, next, total = n.ShardPage(start, size, healthSet(req.Health))
		resp.Total = uint64(total)
		if next != 0 {
			resp.NextPageToken = strconv.FormatUint(next, 10)
		}
		verdicts = n.Verdicts(st, page, now)
	}); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	for _, id := range page {
		resp.Shards = append(resp.Shards, s.shardStatus(st, st.Shards.Get(id), verdicts[id]))
	}
	return resp, nil
}

// maxListIDs bounds the shard IDs one ListShards call may name.
const maxListIDs = 10_000

// healthFilter returns a predicate for ListShards' health filter.
func healthFilter(want []string) (func(*planner.ShardReport) bool, error) {
	if len(want) == 0 {
		return func(*planner.ShardReport) bool { return true }, nil
	}
	set := map[string]bool{}
	for _, h := range want {
		switch h {
		case "healthy", "under_replicated", "unavailable", "pending":
			set[h] = true
		case "unhealthy":
			set["under_replicated"], set["unavailable"], set["pending"] = true, true, true
		default:
			return nil, status.Errorf(codes.InvalidArgument, "unknown health %q; use healthy, under_replicated, unavailable, pending or unhealthy", h)
		}
	}
	return func(r *planner.ShardReport) bool {
		h := "pending"
		if r != nil {
			h = r.Health
		}
		return set[h]
	}, nil
}

// pageParams parses a page size and token. Tokens are the decimal ID of
// the first shard of the next page (opaque to clients).
func pageParams(size uint32, token string, def, limit int) (int, uint64, error) {
	n := def
	if size > 0 {
		n = min(int(size), limit)
	}
	if token == "" {
		return n, 0, nil
	}
	start, err := strconv.ParseUint(token, 10, 64)
	if err != nil {
		return 0, 0, status.Errorf(codes.InvalidArgument, "bad page_token %q: pass the next_page_token of the previous page", token)
	}
	return n, start, nil
}

// GetShard returns one shard's status.
func (s *Server) GetShard(ctx context.Context, req *drummerpb.GetShardRequest) (*drummerpb.ShardStatus, error) {
	st, err := s.requireLeader(ctx)
	if err != nil {
		return nil, err
	}
	sh, ok := st.Shards.Lookup(req.ShardId)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "shard %d does not exist", req.ShardId)
	}
	var out *planner.Output
	if err := s.loop.do(ctx, func(n *scheduler.Node) { out = n.Assess(st, []uint64{req.ShardId}, time.Now()) }); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return s.shardStatus(st, sh, out.Shards[req.ShardId]), nil
}

// LocateShards tells applications where shards live. Unknown IDs are
// reported per shard (found=false), not as an error.
func (s *Server) LocateShards(ctx context.Context, req *drummerpb.LocateShardsRequest) (*drummerpb.LocateShardsResponse, error) {
	st, err := s.requireLeader(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.ShardIds) > 100_000 {
		return nil, status.Error(codes.InvalidArgument, "at most 100000 shards per call")
	}
	var known []uint64
	for _, id := range req.ShardIds {
		if _, ok := st.Shards.Lookup(id); ok {
			known = append(known, id)
		}
	}
	var verdicts map[uint64]*planner.ShardReport
	if err := s.loop.do(ctx, func(n *scheduler.Node) { s.absorb(n, st); verdicts = n.Verdicts(st, known, time.Now()) }); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	resp := &drummerpb.LocateShardsResponse{}
	for _, id := range req.ShardIds {
		sh, ok := st.Shards.Lookup(id)
		if !ok {
			resp.Shards = append(resp.Shards, &drummerpb.ShardLocation{ShardId: id})
			continue
		}
		ss := s.shardStatus(st, sh, verdicts[id])
		resp.Shards = append(resp.Shards, &drummerpb.ShardLocation{
			ShardId: id, Found: true, Health: ss.Health, LeaderReplicaId: ss.LeaderReplicaId, Term: ss.Term, Members: ss.Members,
		})
	}
	return resp, nil
}

// ---------------------------------------------------------------------------
// Hosts.

// hostStatus describes a host; it runs on the scheduler loop (o is the
// host's observations, may be nil).
func (s *Server) hostStatus(st *db.State, id string, o *planner.HostObs, r *planner.HostReport) *drummerpb.HostStatus {
	out := &drummerpb.HostStatus{Id: id, State: "dead", AdminState: "unregistered"}
	if h := st.Hosts[id]; h != nil {
		out.RaftAddress, out.ApiAddress, out.Labels, out.Apps = h.RaftAddress, h.ApiAddress, h.Labels, h.Apps
		out.AdminState = strings.ToLower(strings.TrimPrefix(h.Admin.String(), "HOST_ADMIN_"))
		if h.MaintenanceUntilUnixMs != 0 && time.Now().Before(time.UnixMilli(h.MaintenanceUntilUnixMs)) {
			out.AdminState = "maintenance"
			out.MaintenanceUntilUnixMs = h.MaintenanceUntilUnixMs
		}
	} else if o != nil {
		out.RaftAddress, out.ApiAddress, out.Labels, out.Apps = o.RaftAddress, o.APIAddress, o.Labels, o.Apps
	}
	if o != nil && !o.LastHeard.IsZero() {
		out.LastHeartbeatUnixMs = o.LastHeard.UnixMilli()
	}
	if r != nil {
		out.State = r.Liveness.String()
		out.Replicas = uint64(r.Replicas)
		out.Explanation = r.Explanation
	}
	return out
}

// ListHosts lists registered (and reporting but unregistered) hosts, a
// page at a time in host ID order.
func (s *Server) ListHosts(ctx context.Context, req *drummerpb.ListHostsRequest) (*drummerpb.ListHostsResponse, error) {
	st, err := s.requireLeader(ctx)
	if err != nil {
		return nil, err
	}
	states := map[string]bool{}
	for _, v := range req.State {
		switch v {
		case "up", "suspect", "dead":
			states[v] = true
		default:
			return nil, status.Errorf(codes.InvalidArgument, "unknown host state %q; use up, suspect or dead", v)
		}
	}
	size := 500
	if req.PageSize > 0 {
		size = min(int(req.PageSize), 5000)
	}
	resp := &drummerpb.ListHostsResponse{}
	now := time.Now()
	if err := s.loop.do(ctx, func(n *scheduler.Node) {
		s.absorb(n, st)
		var ids []string
		for _, id := range sortedHosts(st, n) {
			l, ok := n.HostLiveness(id)
			switch {
			case ok:
			case st.Hosts[id] != nil:
				l = planner.Up // not judged yet: a new leader gives the benefit of the doubt
			case now.Sub(n.LastHeard(id)) < time.Duration(st.Config.SuspectTimeoutMs)*time.Millisecond:
				l = planner.Up // reporting, registered by the next round
			default:
				l = planner.Dead
			}
			if len(states) == 0 || states[l.String()] {
				ids = append(ids, id)
			}
		}
		resp.Total = uint64(len(ids))
		i, _ := slices.BinarySearch(ids, req.PageToken)
		page := ids[i:min(len(ids), i+size)]
		if i+size < len(ids) {
			resp.NextPageToken = ids[i+size]
		}
		out := n.AssessHosts(st, page, now)
		for _, id := range page {
			resp.Hosts = append(resp.Hosts, s.hostStatus(st, id, n.Observed().Hosts[id], out.Hosts[id]))
		}
	}); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return resp, nil
}

// resolveHost finds a host by ID, unique ID prefix, or raft address.
func resolveHost(st *db.State, ref string) (*dbpb.Host, error) {
	if ref == "" {
		return nil, status.Error(codes.InvalidArgument, "no host given")
	}
	if h := st.Hosts[ref]; h != nil {
		return h, nil
	}
	var found []*dbpb.Host
	for _, h := range st.Hosts {
		if h.RaftAddress == ref || strings.HasPrefix(h.Id, ref) {
			found = append(found, h)
		}
	}
	switch len(found) {
	case 0:
		return nil, status.Errorf(codes.NotFound, "no host %q (give its ID, a unique ID prefix, or its raft address; see drummercmd host list)", ref)
	case 1:
		return found[0], nil
	}
	return nil, status.Errorf(codes.InvalidArgument, "host %q is ambiguous: %d hosts match", ref, len(found))
}

// SetHostState cordons, uncordons, drains or puts a host in maintenance.
func (s *Server) SetHostState(ctx context.Context, req *drummerpb.SetHostStateRequest) (*drummerpb.SetHostStateResponse, error) {
	st, err := s.requireLeader(ctx)
	if err != nil {
		return nil, err
	}
	h, err := resolveHost(st, req.HostId)
	if err != nil {
		return nil, err
	}
	if h.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED {
		return nil, status.Errorf(codes.FailedPrecondition, "host %s was replaced by a new identity on %s; remove it instead", h.Id, h.RaftAddress)
	}
	cmd := &dbpb.SetHostAdmin{HostId: h.Id, Admin: h.Admin}
	switch req.Action {
	case drummerpb.HostAdminAction_HOST_ADMIN_ACTION_CORDON:
		cmd.Admin = dbpb.HostAdmin_HOST_ADMIN_CORDONED
	case drummerpb.HostAdminAction_HOST_ADMIN_ACTION_UNCORDON:
		cmd.Admin = dbpb.HostAdmin_HOST_ADMIN_ACTIVE
	case drummerpb.HostAdminAction_HOST_ADMIN_ACTION_DRAIN:
		var derr error
		if err := s.loop.do(ctx, func(n *scheduler.Node) { derr = n.DrainCheck(st, h.Id, time.Now()) }); err != nil {
			return nil, status.FromContextError(err).Err()
		}
		if err := derr; err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "cannot drain %s: %v", h.Id, err)
		}
		cmd.Admin = dbpb.HostAdmin_HOST_ADMIN_DRAINING
	case drummerpb.HostAdminAction_HOST_ADMIN_ACTION_MAINTENANCE:
		// Checked in milliseconds: the product in nanoseconds can wrap
		// around into an acceptable duration.
		if req.DurationMs == 0 || req.DurationMs > uint64((7*24*time.Hour).Milliseconds()) {
			return nil, status.Error(codes.InvalidArgument, "maintenance needs a duration between 1ms and 7 days, e.g. --for 10m")
		}
		cmd.MaintenanceOnly = true
		cmd.MaintenanceUntilUnixMs = time.Now().Add(time.Duration(req.DurationMs) * time.Millisecond).UnixMilli()
	case drummerpb.HostAdminAction_HOST_ADMIN_ACTION_END_MAINTENANCE:
		cmd.MaintenanceOnly = true
		cmd.MaintenanceUntilUnixMs = 0
	default:
		return nil, status.Error(codes.InvalidArgument, "unknown host action")
	}
	if _, err := s.write(ctx, "host "+h.Id, &dbpb.Command{Op: &dbpb.Command_SetHostAdmin{SetHostAdmin: cmd}}); err != nil {
		return nil, err
	}
	st, _ = s.sm.View()
	var hs *drummerpb.HostStatus
	if err := s.loop.do(ctx, func(n *scheduler.Node) {
		out := n.AssessHosts(st, []string{h.Id}, time.Now())
		hs = s.hostStatus(st, h.Id, n.Observed().Hosts[h.Id], out.Hosts[h.Id])
	}); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return &drummerpb.SetHostStateResponse{Host: hs}, nil
}

// RemoveHost forgets a dead or drained host.
func (s *Server) RemoveHost(ctx context.Context, req *drummerpb.RemoveHostRequest) (*drummerpb.RemoveHostResponse, error) {
	st, err := s.requireLeader(ctx)
	if err != nil {
		return nil, err
	}
	h, err := resolveHost(st, req.HostId)
	if err != nil {
		return nil, err
	}
	suspect := time.Duration(st.Config.SuspectTimeoutMs) * time.Millisecond
	if t := s.loop.lastHeard(ctx, h.Id); !t.IsZero() && time.Since(t) < suspect && h.Admin != dbpb.HostAdmin_HOST_ADMIN_REPLACED {
		return nil, status.Errorf(codes.FailedPrecondition, "host %s is up (reported %s ago): it would register again; drain it and stop its nodehost first", h.Id, time.Since(t).Round(time.Millisecond))
	}
	if !req.Force && st.HostHasMembers(h.Id) {
		n := 0
		for _, sh := range st.Shards.All() {
			if db.MemberOnHost(sh, h.Id) != nil {
				n++
			}
		}
		return nil, status.Errorf(codes.FailedPrecondition, "host %s still holds %d replicas; drain it first (drummercmd host drain %s --wait), or pass --force to repair them elsewhere as if the host were dead", h.Id, n, h.Id)
	}
	if _, err := s.write(ctx, "remove host "+h.Id, &dbpb.Command{Op: &dbpb.Command_RemoveHost{RemoveHost: &dbpb.RemoveHost{HostId: h.Id, Force: req.Force}}}); err != nil {
		return nil, err
	}
	return &drummerpb.RemoveHostResponse{}, nil
}

// ---------------------------------------------------------------------------
// Repairs and configuration.

// ListRepairs lists repairs in flight and recently finished.
func (s *Server) ListRepairs(ctx context.Context, _ *drummerpb.ListRepairsRequest) (*drummerpb.ListRepairsResponse, error) {
	st, err := s.requireLeader(ctx)
	if err != nil {
		return nil, err
	}
	resp := &drummerpb.ListRepairsResponse{}
	for _, id := range st.SortedShardIDs() {
		if r := st.Shards.Get(id).Repair; r != nil {
			resp.InFlight = append(resp.InFlight, repairStatus(st, id, r))
		}
	}
	for i := len(st.Recent) - 1; i >= 0; i-- {
		f := st.Recent[i]
		rs := repairStatus(st, f.ShardId, f.Repair)
		rs.Outcome = strings.ToLower(strings.TrimPrefix(f.Outcome.String(), "REPAIR_OUTCOME_"))
		if f.Reason != "" {
			rs.Reason = f.Reason
		}
		rs.FinishedUnixMs = f.FinishedUnixMs
		rs.StepDeadlineUnixMs = 0
		resp.Recent = append(resp.Recent, rs)
	}
	return resp, nil
}

// GetConfig returns the runtime configuration in force (defaults
// resolved).
func (s *Server) GetConfig(ctx context.Context, _ *drummerpb.GetConfigRequest) (*drummerpb.RuntimeConfig, error) {
	st, err := s.requireLeader(ctx)
	if err != nil {
		return nil, err
	}
	return settings.RuntimeConfig(st.Config), nil
}

// SetConfig changes runtime configuration values.
func (s *Server) SetConfig(ctx context.Context, req *drummerpb.SetConfigRequest) (*drummerpb.RuntimeConfig, error) {
	st, err := s.requireLeader(ctx)
	if err != nil {
		return nil, err
	}
	c, err := settings.Apply(st.Config, req.Values, req.ShardId)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.ShardId != 0 {
		if _, ok := st.Shards.Lookup(req.ShardId); !ok {
			return nil, status.Errorf(codes.NotFound, "shard %d does not exist", req.ShardId)
		}
	}
	if _, err := s.write(ctx, "set config", &dbpb.Command{Op: &dbpb.Command_SetConfig{SetConfig: &dbpb.SetConfig{Config: c}}}); err != nil {
		return nil, err
	}
	return settings.RuntimeConfig(c), nil
}

// ---------------------------------------------------------------------------
// KV.

// KVGet reads the replicated KV map (linearizable).
func (s *Server) KVGet(ctx context.Context, req *drummerpb.KVGetRequest) (*drummerpb.KVGetResponse, error) {
	if _, err := s.requireLeader(ctx); err != nil {
		return nil, err
	}
	st, err := s.linearView(ctx)
	if err != nil {
		return nil, err
	}
	rec := st.KV[req.Key]
	if rec == nil {
		return &drummerpb.KVGetResponse{}, nil
	}
	return &drummerpb.KVGetResponse{Found: true, Kv: &drummerpb.KV{Key: rec.Key, Value: rec.Value, InstanceId: rec.InstanceId, Finalized: rec.Finalized}}, nil
}

// KVPut writes the replicated KV map with the seed's semantics.
func (s *Server) KVPut(ctx context.Context, req *drummerpb.KVPutRequest) (*drummerpb.KVPutResponse, error) {
	if _, err := s.requireLeader(ctx); err != nil {
		return nil, err
	}
	if req.Key == "" || len(req.Key) > db.MaxKVKeyLen || len(req.Value) > db.MaxKVValueLen {
		return nil, status.Errorf(codes.InvalidArgument, "key must be 1-%d bytes and value at most %d bytes", db.MaxKVKeyLen, db.MaxKVValueLen)
	}
	r, err := s.propose(ctx, &dbpb.Command{Op: &dbpb.Command_KvPut{KvPut: &dbpb.KVPut{
		Key: req.Key, Value: req.Value, InstanceId: req.InstanceId, OldInstanceId: req.OldInstanceId, Finalize: req.Finalize}}})
	if err != nil {
		return nil, proposeError(err)
	}
	switch r.Code {
	case dbpb.Code_CODE_OK:
		return &drummerpb.KVPutResponse{Result: drummerpb.KVResult_KV_RESULT_UPDATED}, nil
	case dbpb.Code_CODE_KV_FINALIZED:
		return &drummerpb.KVPutResponse{Result: drummerpb.KVResult_KV_RESULT_FINALIZED}, nil
	case dbpb.Code_CODE_KV_REJECTED:
		return &drummerpb.KVPutResponse{Result: drummerpb.KVResult_KV_RESULT_REJECTED}, nil
	}
	return nil, codeError(r.Code, "kv put")
}

// linearView returns the DB state after a ReadIndex round.
func (s *Server) linearView(ctx context.Context) (*db.State, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	v, err := s.nh.SyncRead(ctx, DBShardID, db.QueryView{})
	if err != nil {
		return nil, proposeError(err)
	}
	st, ok := v.(*db.State)
	if !ok {
		return nil, status.Error(codes.Internal, fmt.Sprintf("unexpected DB read result %T", v))
	}
	return st, nil
}

// GetServerStatus describes this server; every server answers.
func (s *Server) GetServerStatus(ctx context.Context, _ *drummerpb.GetServerStatusRequest) (*drummerpb.ServerStatus, error) {
	st, _ := s.sm.View()
	hash, idx := s.sm.HashAt()
	leader, _ := s.raftLeader()
	suspect := time.Duration(st.Config.SuspectTimeoutMs) * time.Millisecond
	reporting := 0
	_ = s.loop.do(ctx, func(n *scheduler.Node) { reporting = n.Reporting(time.Now(), suspect) })
	return &drummerpb.ServerStatus{
		ReplicaId:      s.cfg.ReplicaID,
		RaftAddress:    s.cfg.RaftAddress,
		GrpcAddress:    s.advertisedGRPC(),
		RaftLeaderId:   leader,
		Scheduler:      s.loop.isActive(),
		Epoch:          st.Epoch,
		DbAppliedIndex: idx,
		DbHash:         hash,
		HostsReporting: uint64(reporting),
		Removed:        s.isRemoved.Load(),
		Version:        s.cfg.Version,
	}, nil
}

// absorb brings the DB's latest changes into the node's indexes before a
// status call reads them (the next round plans them); it runs on the loop.
func (s *Server) absorb(n *scheduler.Node, st *db.State) {
	if _, active := n.Active(); !active {
		return
	}
	v, dirty, _ := s.sm.ViewIfChanged()
	n.Absorb(v, dirty, time.Now())
}

// healthSet expands ListShards' health filter (validated by healthFilter).
func healthSet(want []string) map[string]bool {
	set := map[string]bool{}
	for _, h := range want {
		if h == "unhealthy" {
			set["under_replicated"], set["unavailable"], set["pending"] = true, true, true
		} else {
			set[h] = true
		}
	}
	return set
}
