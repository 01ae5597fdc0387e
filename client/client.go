package client

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// Defaults of Config.
const (
	DefaultAttemptTimeout  = 2 * time.Second
	DefaultTimeout         = 10 * time.Second
	DefaultMinBackoff      = 10 * time.Millisecond
	DefaultMaxBackoff      = time.Second
	DefaultLocationTTL     = 30 * time.Second
	DefaultMaxMessageBytes = 16 << 20
)

// Locator finds where shards run. The default asks the Drummer servers
// (Drummer.LocateShards); a custom Locator serves fixed deployments and
// tests. Unknown shards are returned with Found=false, not as an error.
type Locator interface {
	LocateShards(ctx context.Context, shardIDs []uint64) ([]*drummerpb.ShardLocation, error)
}

// LocatorFunc adapts a function to Locator.
type LocatorFunc func(ctx context.Context, shardIDs []uint64) ([]*drummerpb.ShardLocation, error)

// LocateShards calls f.
func (f LocatorFunc) LocateShards(ctx context.Context, shardIDs []uint64) ([]*drummerpb.ShardLocation, error) {
	return f(ctx, shardIDs)
}

type drummerLocator struct{ d drummerpb.DrummerClient }

func (l drummerLocator) LocateShards(ctx context.Context, ids []uint64) ([]*drummerpb.ShardLocation, error) {
	resp, err := l.d.LocateShards(ctx, &drummerpb.LocateShardsRequest{ShardIds: ids})
	if err != nil {
		return nil, err
	}
	return resp.GetShards(), nil
}

// Config configures a Client. Only Endpoints (or Locator) is required.
type Config struct {
	// Endpoints are Drummer server gRPC addresses ("host:port"; entries
	// may be comma-separated lists). Calls follow the scheduler leader.
	Endpoints []string
	// Locator replaces the Drummer servers as the source of shard
	// locations. When set, Endpoints is ignored.
	Locator Locator
	// Security: mutual TLS files (a client certificate with role app or
	// admin) or Insecure; one is required.
	Security
	// DialOptions are added to every connection, to Drummer and to the
	// nodehosts (interceptors; credentials given here replace
	// Security's).
	DialOptions []grpc.DialOption
	// AttemptTimeout bounds one call to one nodehost (default 2s), so a
	// dead or partitioned host costs at most this much before the next
	// member is tried.
	AttemptTimeout time.Duration
	// DefaultTimeout bounds an operation whose context has no deadline
	// (default 10s).
	DefaultTimeout time.Duration
	// MinBackoff and MaxBackoff bound the pause between rounds of retries
	// (exponential with jitter; defaults 10ms and 1s).
	MinBackoff, MaxBackoff time.Duration
	// LocationTTL is how long a shard's location is trusted without
	// errors before it is fetched again (default 30s). Routing errors
	// refresh it at once.
	LocationTTL time.Duration
	// MaxMessageBytes limits messages to and from nodehosts (default
	// 16 MiB; nodehosts accept 8 MiB commands by default).
	MaxMessageBytes int
	// Preload lists shards to locate in New, which then fails if they
	// cannot be located before its context ends.
	Preload []uint64
	// Logger receives debug logs of retries (default: discarded).
	Logger *slog.Logger
}

// Client sends commands and queries to Drummer-managed shards: it locates
// shards through Drummer (caching the answers), sends each call to a
// member's nodehost over a pooled gRPC connection, and retries what can
// be retried with per-attempt deadlines and exponential backoff, within
// the caller's context.
//
// A Client is safe for concurrent use by multiple goroutines. A Session is
// not meant to be shared: its proposals are serialized.
type Client struct {
	cfg  Config
	log  *slog.Logger
	conn *Conn // nil with a custom Locator
	locs *locations
	pool *pool
}

// Result is the outcome of a proposal: the state machine's sm.Result.
type Result struct {
	Value uint64
	Data  []byte
}

// New creates a Client. It connects lazily; ctx bounds only the locating
// of cfg.Preload shards.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = DefaultTimeout
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.LocationTTL <= 0 {
		cfg.LocationTTL = DefaultLocationTTL
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, log: cfg.Logger}
	src, err := cfg.Security.source()
	if err != nil {
		return nil, err
	}
	loc := cfg.Locator
	if loc == nil {
		conn, err := NewConn(cfg.Endpoints, Options{Security: cfg.Security, DialOptions: cfg.DialOptions, Logger: cfg.Logger, src: src})
		if err != nil {
			return nil, err
		}
		c.conn = conn
		loc = drummerLocator{conn.Drummer()}
	}
	c.locs = newLocations(loc, cfg)
	c.pool = newPool(cfg, src)
	if len(cfg.Preload) > 0 {
		if err := c.locs.preload(ctx, cfg.Preload); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Close closes every connection. Operations in progress fail; later ones
// return ErrClientClosed.
func (c *Client) Close() error {
	var errs []error
	c.locs.close()
	errs = append(errs, c.pool.close())
	if c.conn != nil {
		errs = append(errs, c.conn.Close())
	}
	return errors.Join(errs...)
}

// Locate returns the shard's location, from the cache when it is fresh.
// An unknown shard gives ErrShardNotFound.
func (c *Client) Locate(ctx context.Context, shardID uint64) (*drummerpb.ShardLocation, error) {
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	return c.locs.get(ctx, shardID)
}

// Propose proposes cmd to the shard without a session: it is applied at
// least once. It is sent to the leader's nodehost (other members forward
// it) and retried on other members and after timeouts, so a command whose
// attempt timed out may be applied twice: make such commands idempotent,
// or use a Session for exactly-once. An error wrapping ErrOutcomeUnknown
// means the command may have been applied.
func (c *Client) Propose(ctx context.Context, shardID uint64, cmd []byte) (Result, error) {
	var out Result
	err := c.invoke(ctx, "propose", shardID, true, func(ctx context.Context, api drummerpb.NodehostAPIClient) error {
		resp, err := api.Propose(ctx, &drummerpb.ProposeRequest{ShardId: shardID, Command: cmd})
		if err == nil {
			out = Result{Value: resp.GetValue(), Data: resp.GetData()}
		}
		return err
	})
	return out, err
}

// Read runs a linearizable query (ReadIndex) on one of the shard's
// members, preferring the leader's nodehost.
func (c *Client) Read(ctx context.Context, shardID uint64, query []byte) ([]byte, error) {
	return c.read(ctx, "read", shardID, query, false)
}

// StaleRead queries one member's local state without a ReadIndex round:
// cheaper, but the answer may miss recent writes.
func (c *Client) StaleRead(ctx context.Context, shardID uint64, query []byte) ([]byte, error) {
	return c.read(ctx, "stale read", shardID, query, true)
}

func (c *Client) read(ctx context.Context, op string, shardID uint64, query []byte, stale bool) ([]byte, error) {
	var out []byte
	err := c.invoke(ctx, op, shardID, false, func(ctx context.Context, api drummerpb.NodehostAPIClient) error {
		resp, err := api.Read(ctx, &drummerpb.ReadRequest{ShardId: shardID, Query: query, Stale: stale})
		if err == nil {
			out = resp.GetResult()
		}
		return err
	})
	return out, err
}

func (c *Client) withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.cfg.DefaultTimeout)
}
