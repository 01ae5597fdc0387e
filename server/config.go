package server

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/db"
)

// DBShardID is the dragonboat shard ID of the Drummer DB on the drummer
// servers' own NodeHosts (separate from every managed shard).
const DBShardID uint64 = 1

// DeploymentID isolates the drummer servers' Raft traffic from any other
// dragonboat deployment (it spells "drummer").
const DeploymentID uint64 = 0x6472756d6d6572

// Config configures one drummer server.
type Config struct {
	// ReplicaID is this server's replica ID in the DB shard (--id).
	ReplicaID uint64
	// RaftAddress is the host:port the DB shard's Raft traffic uses.
	RaftAddress string
	// GRPCAddress is the host:port the Drummer API listens on.
	GRPCAddress string
	// DataDir holds the server's NodeHost data.
	DataDir string
	// InitialMembers maps replica IDs to raft addresses of the initial
	// drummer servers; it must include this server. Ignored on restart.
	InitialMembers map[uint64]string
	// Join starts a server that was added with AddMember.
	Join bool
	// RTTMillisecond is the DB NodeHost's tick (default 50ms).
	RTTMillisecond uint64
	// TickInterval is how often the leader plans (default 200ms) and
	// SweepInterval how often it re-plans everything (default 2s).
	TickInterval  time.Duration
	SweepInterval time.Duration
	Logger        *slog.Logger
	Version       string

	// Mutual TLS on the gRPC API and the DB's Raft transport: the CA
	// bundle, and this server's certificate (role server, made by `drummer
	// cert create-server`) and key. Either all three or Insecure.
	CAFile, CertFile, KeyFile string
	// Insecure serves plaintext without authentication (--insecure).
	Insecure bool
	// CertCheckEvery is how often the certificate files are checked for
	// rotation (default 5s).
	CertCheckEvery time.Duration
	// CreateShardsPerSecond limits CreateShards per caller (default 10,
	// burst twice that).
	CreateShardsPerSecond float64
	// Metrics, when set, measure the API and the planning rounds
	// (internal/metrics.Drummer); Stats gives the counts.
	Metrics Metrics
}

func (c *Config) setDefaults() {
	if c.RTTMillisecond == 0 {
		c.RTTMillisecond = 50
	}
	if c.TickInterval <= 0 {
		c.TickInterval = 200 * time.Millisecond
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Version == "" {
		c.Version = "dev"
	}
}

// Validate checks the configuration and says how to fix what is wrong.
func (c *Config) Validate() error {
	var errs []error
	if c.ReplicaID == 0 {
		errs = append(errs, errors.New("--id is required and must be at least 1"))
	}
	if err := db.ValidateAddress(c.RaftAddress); err != nil {
		errs = append(errs, fmt.Errorf("--raft-address: %w", err))
	}
	if err := db.ValidateAddress(c.GRPCAddress); err != nil {
		errs = append(errs, fmt.Errorf("--grpc-address: %w", err))
	}
	if c.RaftAddress != "" && c.RaftAddress == c.GRPCAddress {
		errs = append(errs, errors.New("--raft-address and --grpc-address must differ"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	switch {
	case c.Join && len(c.InitialMembers) > 0:
		errs = append(errs, errors.New("--join and --initial-members are exclusive: a joining server learns the members from the cluster"))
	case !c.Join && len(c.InitialMembers) == 0:
		errs = append(errs, errors.New("give --initial-members \"1=host:port,2=host:port,3=host:port\" (raft addresses of all initial servers) or --join for a server added with `drummercmd member add`"))
	case !c.Join:
		if addr, ok := c.InitialMembers[c.ReplicaID]; !ok {
			errs = append(errs, fmt.Errorf("--initial-members does not include this server's --id %d", c.ReplicaID))
		} else if addr != c.RaftAddress {
			errs = append(errs, fmt.Errorf("--initial-members gives %s for --id %d but --raft-address is %s", addr, c.ReplicaID, c.RaftAddress))
		}
	}
	if c.RTTMillisecond > 1000 {
		errs = append(errs, errors.New("rtt must be at most 1000ms"))
	}
	if err := auth.CheckMode(auth.Files{CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile}, c.Insecure); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ParseMembers parses "1=host:port,2=host:port,..." (raft addresses).
func ParseMembers(s string) (map[uint64]string, error) {
	out := map[uint64]string{}
	s = strings.TrimSpace(s)
	if s == "" {
		return out, nil
	}
	addrs := map[string]uint64{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		id, addr, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("member %q: want ID=host:port, e.g. 1=127.0.0.1:7111", part)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(id), 10, 64)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("member %q: ID must be a positive integer", part)
		}
		addr = strings.TrimSpace(addr)
		if err := db.ValidateAddress(addr); err != nil {
			return nil, fmt.Errorf("member %q: %w", part, err)
		}
		if _, dup := out[n]; dup {
			return nil, fmt.Errorf("member ID %d given twice", n)
		}
		if other, dup := addrs[addr]; dup {
			return nil, fmt.Errorf("members %d and %d share address %s", other, n, addr)
		}
		out[n] = addr
		addrs[addr] = n
	}
	return out, nil
}

// FormatMembers is the inverse of ParseMembers.
func FormatMembers(m map[uint64]string) string {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%d=%s", id, m[id])
	}
	return strings.Join(parts, ",")
}
