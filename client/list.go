package client

import (
	"context"
	"iter"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// maxPages bounds a listing, so a server that keeps answering with a next
// page token cannot keep a caller looping for ever.
const maxPages = 100_000

// Shards iterates over every shard matching req, page after page (req's
// page token is the starting point; req itself is not modified). The
// iteration stops at the first error, which it yields.
func Shards(ctx context.Context, d drummerpb.DrummerClient, req *drummerpb.ListShardsRequest) iter.Seq2[*drummerpb.ShardStatus, error] {
	return func(yield func(*drummerpb.ShardStatus, error) bool) {
		r := &drummerpb.ListShardsRequest{ShardIds: req.GetShardIds(), PageSize: req.GetPageSize(), PageToken: req.GetPageToken(), Health: req.GetHealth()}
		for range maxPages {
			resp, err := d.ListShards(ctx, r)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, s := range resp.GetShards() {
				if !yield(s, nil) {
					return
				}
			}
			if resp.GetNextPageToken() == "" || len(r.ShardIds) > 0 {
				return
			}
			r.PageToken = resp.GetNextPageToken()
		}
	}
}

// ListAllShards returns every shard matching req (all pages).
func ListAllShards(ctx context.Context, d drummerpb.DrummerClient, req *drummerpb.ListShardsRequest) ([]*drummerpb.ShardStatus, error) {
	var out []*drummerpb.ShardStatus
	for s, err := range Shards(ctx, d, req) {
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Hosts iterates over every host matching req, page after page.
func Hosts(ctx context.Context, d drummerpb.DrummerClient, req *drummerpb.ListHostsRequest) iter.Seq2[*drummerpb.HostStatus, error] {
	return func(yield func(*drummerpb.HostStatus, error) bool) {
		r := &drummerpb.ListHostsRequest{PageSize: req.GetPageSize(), PageToken: req.GetPageToken(), State: req.GetState()}
		for range maxPages {
			resp, err := d.ListHosts(ctx, r)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, h := range resp.GetHosts() {
				if !yield(h, nil) {
					return
				}
			}
			if resp.GetNextPageToken() == "" {
				return
			}
			r.PageToken = resp.GetNextPageToken()
		}
	}
}

// ListAllHosts returns every host matching req (all pages).
func ListAllHosts(ctx context.Context, d drummerpb.DrummerClient, req *drummerpb.ListHostsRequest) ([]*drummerpb.HostStatus, error) {
	var out []*drummerpb.HostStatus
	for h, err := range Hosts(ctx, d, req) {
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}
