package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/auth"
)

// LeaderTrailer is the trailer key in which a drummer server that is not the
// scheduler leader names the leader's gRPC endpoint.
const LeaderTrailer = "drummer-leader"

// ErrNoEndpoints is returned when no drummer endpoint is configured.
var ErrNoEndpoints = errors.New("no drummer endpoints given (use --endpoints or DRUMMER_ENDPOINTS, e.g. 127.0.0.1:7101)")

// Options configure a connection to the drummer servers.
type Options struct {
	// DialTimeout bounds establishing one connection (default 2s).
	DialTimeout time.Duration
	// RetryBackoff is the first pause between rounds over all endpoints
	// when none answers (default 100ms, doubling up to 1s).
	RetryBackoff time.Duration
	// Security: mutual TLS files or Insecure (one is required).
	Security
	// DialOptions are added to every dial (interceptors; credentials
	// given here replace Security's).
	DialOptions []grpc.DialOption
	Logger      *slog.Logger

	src *auth.Source // shared with a Client's nodehost connections
}

// Conn is a set of connections to drummer servers that sends each call to
// the scheduler leader, following "not the leader" answers and trying the
// other endpoints when one is unreachable. It implements
// grpc.ClientConnInterface, so generated clients work on top of it:
//
//	d := drummerpb.NewDrummerClient(conn)
//
// A Conn is safe for concurrent use.
type Conn struct {
	opts Options

	mu        sync.Mutex
	endpoints []string
	conns     map[string]*grpc.ClientConn
	leader    string
	closed    bool
}

var _ grpc.ClientConnInterface = (*Conn)(nil)

// NewConn prepares connections to the given endpoints; it does not dial
// until the first call.
func NewConn(endpoints []string, opts Options) (*Conn, error) {
	var eps []string
	for _, e := range endpoints {
		for _, p := range strings.Split(e, ",") {
			if p = strings.TrimSpace(p); p != "" {
				eps = append(eps, p)
			}
		}
	}
	if len(eps) == 0 {
		return nil, ErrNoEndpoints
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 2 * time.Second
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = 100 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.src == nil && !opts.Insecure {
		src, err := opts.Security.source()
		if err != nil {
			return nil, err
		}
		opts.src = src
	}
	return &Conn{opts: opts, endpoints: eps, conns: map[string]*grpc.ClientConn{}}, nil
}

// Drummer returns a Drummer service client that follows the leader.
func (c *Conn) Drummer() drummerpb.DrummerClient { return drummerpb.NewDrummerClient(c) }

// Endpoints returns the endpoints currently known.
func (c *Conn) Endpoints() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.endpoints...)
}

// Close closes every connection.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	c.conns = map[string]*grpc.ClientConn{}
	return errors.Join(errs...)
}

func (c *Conn) conn(ep string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("drummer client closed")
	}
	if cc, ok := c.conns[ep]; ok {
		return cc, nil
	}
	opts := append([]grpc.DialOption{credentials(c.opts.src, auth.RoleServer)}, c.opts.DialOptions...)
	cc, err := grpc.NewClient(ep, opts...)
	if err != nil {
		return nil, fmt.Errorf("drummer endpoint %s: %w", ep, err)
	}
	c.conns[ep] = cc
	return cc, nil
}

// order returns the endpoints to try: the known leader first.
func (c *Conn) order() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.endpoints)+1)
	if c.leader != "" {
		out = append(out, c.leader)
	}
	start := rand.IntN(len(c.endpoints))
	for i := range c.endpoints {
		ep := c.endpoints[(start+i)%len(c.endpoints)]
		if ep != c.leader {
			out = append(out, ep)
		}
	}
	return out
}

func (c *Conn) setLeader(ep string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leader = ep
	for _, e := range c.endpoints {
		if e == ep {
			return
		}
	}
	c.endpoints = append(c.endpoints, ep)
}

// retryable reports whether an error means "this server cannot answer,
// another may": the call was not carried out.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable:
		return true
	}
	return false
}

// Invoke sends a unary call to the leader. A server that is not the leader
// answers UNAVAILABLE without acting, naming the leader in a trailer; the
// call is then repeated there. Unreachable endpoints are skipped. Invoke
// gives up when ctx ends, returning the last error seen.
func (c *Conn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	backoff := c.opts.RetryBackoff
	var last error
	redirects := 0
	for {
		redirected := false
		failed := map[string]bool{}
		for _, ep := range c.order() {
			if err := ctx.Err(); err != nil {
				return c.giveUp(err, last)
			}
			cc, err := c.conn(ep)
			if err != nil {
				last = err
				failed[ep] = true
				continue
			}
			var trailer metadata.MD
			callCtx, cancel := context.WithTimeout(ctx, c.attemptTimeout(ctx))
			err = cc.Invoke(callCtx, method, args, reply, append(opts, grpc.Trailer(&trailer))...)
			attemptExpired := errors.Is(callCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
			cancel()
			if err == nil {
				c.setLeader(ep)
				return nil
			}
			if ctx.Err() != nil {
				return c.giveUp(ctx.Err(), fmt.Errorf("%s: %w", ep, err))
			}
			if !retryable(err) {
				if attemptExpired && cc.GetState() != connectivity.Ready {
					// Never connected, so the call was never sent: safe to
					// try another endpoint.
					failed[ep] = true
					last = fmt.Errorf("%s: no connection within %s", ep, c.attemptTimeout(ctx))
					continue
				}
				if attemptExpired {
					// Our per-attempt bound expired, not the caller's: the
					// server may still act on the call, so do not repeat
					// it elsewhere; report the timeout.
					return status.Errorf(codes.DeadlineExceeded, "%s did not answer within %s: %v", ep, c.attemptTimeout(ctx), err)
				}
				return err
			}
			failed[ep] = true
			last = fmt.Errorf("%s: %w", ep, err)
			if l := trailer.Get(LeaderTrailer); len(l) > 0 && l[0] != "" && l[0] != ep && !failed[l[0]] {
				c.setLeader(l[0])
				redirected = true
				redirects++
				break
			}
		}
		// Follow a redirect at once, but not round and round: a leader
		// that cannot be reached, or servers naming each other, must not
		// turn into a hot loop.
		if redirected && redirects <= 2*len(c.Endpoints()) {
			continue
		}
		redirects = 0
		select {
		case <-ctx.Done():
			return c.giveUp(ctx.Err(), last)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// attemptTimeout bounds one attempt so that a dead endpoint does not eat
// the whole command timeout.
func (c *Conn) attemptTimeout(ctx context.Context) time.Duration {
	t := 5 * c.opts.DialTimeout
	if dl, ok := ctx.Deadline(); ok {
		if rem := time.Until(dl); rem < t {
			t = rem
		}
	}
	return max(t, time.Millisecond)
}

func (c *Conn) giveUp(ctxErr, last error) error {
	code := codes.DeadlineExceeded
	if errors.Is(ctxErr, context.Canceled) {
		code = codes.Canceled
	}
	if last == nil {
		return status.Error(code, ctxErr.Error())
	}
	return status.Errorf(code, "no drummer leader answered: %v", last)
}

// NewStream is not supported: the Drummer API has no streaming calls.
func (c *Conn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unimplemented, "streaming calls are not supported by client.Conn")
}
