package planner

import (
	"fmt"

	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

// voterDropRefused says why the DB would refuse a decision that drops
// voter records (db.VoterDropAllowed), or "" when it would not. The planner
// checks it before proposing, so it never proposes what the DB refuses;
// the DB checks again whatever the planner believed it observed.
func (p *planner) voterDropRefused(v *shardView, d *dbpb.Decision) string {
	sh := v.sh
	var drop uint64
	after := sh
	switch k := d.Kind.(type) {
	case *dbpb.Decision_StartRepair:
		switch k.StartRepair.Kind {
		case dbpb.RepairKind_REPAIR_KIND_REMOVE:
			drop = k.StartRepair.OldReplicaId
		case dbpb.RepairKind_REPAIR_KIND_REPLACE, dbpb.RepairKind_REPAIR_KIND_MOVE:
			// The old replica is dropped at the end, after the new one
			// became a voter: started only if that end is allowed.
			drop = k.StartRepair.OldReplicaId
			after = &dbpb.Shard{Id: sh.Id, Replicas: sh.Replicas,
				Members: append(sh.Members[:len(sh.Members):len(sh.Members)], &dbpb.Replica{Role: dbpb.Role_ROLE_VOTER})}
		}
	case *dbpb.Decision_FinishRepair:
		r := sh.Repair
		if r == nil {
			return ""
		}
		if k.FinishRepair.Outcome == dbpb.RepairOutcome_REPAIR_OUTCOME_DONE {
			drop = r.OldReplicaId
		} else {
			drop = r.NewReplicaId
		}
	}
	if drop == 0 || db.VoterDropAllowed(after, drop) {
		return ""
	}
	return fmt.Sprintf("dropping voter %d would leave fewer recorded voters than a quorum of %d replicas", drop, sh.Replicas)
}
