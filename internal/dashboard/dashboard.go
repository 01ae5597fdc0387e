// Package dashboard is the web dashboard every drummer server serves at /
// of its --http-address: an overview, the hosts, the shards (unhealthy
// first, filtered and paged through ListShards so a page costs the same
// at 100,000 shards), one shard with its members and the planner's
// explanation, and the repair history. Pages are rendered on the server
// with html/template from embedded files; a few lines of JS refresh them
// in place. Everything is read through the Drummer service (in process,
// server.LocalConn), with the caller's identity, so the gRPC method table
// applies; a follower's reads are forwarded to the leader.
package dashboard

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
)

//go:embed assets
var assets embed.FS

// Options configure the dashboard.
type Options struct {
	// Refresh is how often pages refresh themselves (default 2s).
	Refresh time.Duration
	// PageSize is the default shards per page (default 100).
	PageSize int
	Logger   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Served, when set, says which server answers (shown in the header);
	// default: asked with GetServerStatus.
	Served func() string
}

// Dashboard is the dashboard's HTTP handler.
type Dashboard struct {
	d     drummerpb.DrummerClient
	opts  Options
	pages map[string]*template.Template
	mux   *http.ServeMux
}

// New returns the dashboard reading through conn (server.LocalConn, or
// any connection to the Drummer service).
func New(conn grpc.ClientConnInterface, opts Options) (*Dashboard, error) {
	if opts.Refresh <= 0 {
		opts.Refresh = 2 * time.Second
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 100
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	db := &Dashboard{d: drummerpb.NewDrummerClient(conn), opts: opts, pages: map[string]*template.Template{}, mux: http.NewServeMux()}
	funcs := template.FuncMap{
		"short": func(id string) string {
			if len(id) > 8 {
				return id[:8]
			}
			return id
		},
		"labels": func(m map[string]string) string {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(m)) {
				parts = append(parts, k+"="+m[k])
			}
			return strings.Join(parts, ",")
		},
		"labels32": func(m map[string]uint32) string {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(m)) {
				parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
			}
			return strings.Join(parts, ",")
		},
		"first": func(xs []string) string {
			if len(xs) == 0 {
				return ""
			}
			return xs[0]
		},
		"ago": func(ms int64) string {
			if ms == 0 {
				return "never"
			}
			d := opts.Now().Sub(time.UnixMilli(ms)).Round(100 * time.Millisecond)
			if d < 0 {
				d = 0
			}
			return d.String() + " ago"
		},
	}
	for _, p := range []string{"overview", "hosts", "shards", "shard", "repairs"} {
		t, err := template.New(p).Funcs(funcs).ParseFS(assets, "assets/layout.html", "assets/tables.html", "assets/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard template %s: %w", p, err)
		}
		db.pages[p] = t
	}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	files := http.FileServerFS(static)
	db.mux.Handle("GET /static/app.js", http.StripPrefix("/static/", files))
	db.mux.Handle("GET /static/style.css", http.StripPrefix("/static/", files))
	db.mux.HandleFunc("GET /{$}", db.overview)
	db.mux.HandleFunc("GET /hosts", db.hosts)
	db.mux.HandleFunc("GET /shards", db.shards)
	db.mux.HandleFunc("GET /shards/{id}", db.shard)
	db.mux.HandleFunc("GET /repairs", db.repairs)
	return db, nil
}

// ServeHTTP implements http.Handler.
func (db *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) { db.mux.ServeHTTP(w, r) }

// page is what the layout renders.
type page struct {
	Title, Nav     string
	Served         string
	Error          string
	Now            string
	RefreshMs      int64
	RefreshSeconds float64
	Data           any
}

// render writes a page; err (a gRPC status) becomes the error box and
// the HTTP status.
func (db *Dashboard) render(w http.ResponseWriter, r *http.Request, name, title string, data any, err error) {
	p := page{Title: title, Nav: name, Data: data, Now: db.opts.Now().Format("15:04:05"),
		RefreshMs: db.opts.Refresh.Milliseconds(), RefreshSeconds: db.opts.Refresh.Seconds()}
	if name == "shard" {
		p.Nav = "shards"
	}
	p.Served = db.served(r.Context())
	code := http.StatusOK
	if err != nil {
		st := status.Convert(err)
		p.Error = st.Message()
		code = httpCode(st.Code())
	}
	var buf bytes.Buffer
	if terr := db.pages[name].ExecuteTemplate(&buf, "layout", p); terr != nil {
		db.opts.Logger.Error("dashboard template", "page", name, "err", terr)
		http.Error(w, "rendering the page failed: "+terr.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// served says which server answers and whether it is the leader.
func (db *Dashboard) served(ctx context.Context) string {
	if db.opts.Served != nil {
		return db.opts.Served()
	}
	st, err := db.d.GetServerStatus(ctx, &drummerpb.GetServerStatusRequest{})
	if err != nil {
		return ""
	}
	if st.Scheduler {
		return fmt.Sprintf("served by drummer %d (leader, epoch %d)", st.ReplicaId, st.Epoch)
	}
	return fmt.Sprintf("served by drummer %d (follower; reads from leader %d)", st.ReplicaId, st.RaftLeaderId)
}

func httpCode(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.NotFound:
		return http.StatusNotFound
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// healths in display order.
var healths = []string{"healthy", "under_replicated", "unavailable", "pending"}

// shardList is a page of shards for the shards table.
type shardList struct {
	*drummerpb.ListShardsResponse
	More bool
}

type overviewData struct {
	Info      *drummerpb.ClusterInfo
	Healths   []string
	Hosts     *drummerpb.ListHostsResponse
	Unhealthy shardList
}

func (db *Dashboard) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	data := overviewData{Healths: healths, Info: &drummerpb.ClusterInfo{}, Hosts: &drummerpb.ListHostsResponse{},
		Unhealthy: shardList{ListShardsResponse: &drummerpb.ListShardsResponse{}}}
	var err error
	if data.Info, err = db.d.GetClusterInfo(ctx, &drummerpb.GetClusterInfoRequest{}); err != nil {
		data.Info = &drummerpb.ClusterInfo{}
		db.render(w, r, "overview", "Overview", data, err)
		return
	}
	if data.Hosts, err = db.d.ListHosts(ctx, &drummerpb.ListHostsRequest{PageSize: 500}); err != nil {
		data.Hosts = &drummerpb.ListHostsResponse{}
	}
	if err == nil {
		var un *drummerpb.ListShardsResponse
		if un, err = db.d.ListShards(ctx, &drummerpb.ListShardsRequest{Health: []string{"unhealthy"}, PageSize: 20}); err == nil {
			data.Unhealthy = shardList{un, un.NextPageToken != ""}
		}
	}
	db.render(w, r, "overview", "Overview", data, err)
}

func (db *Dashboard) hosts(w http.ResponseWriter, r *http.Request) {
	resp, err := db.d.ListHosts(r.Context(), &drummerpb.ListHostsRequest{PageSize: 500, PageToken: r.URL.Query().Get("page_token")})
	if err != nil {
		resp = &drummerpb.ListHostsResponse{}
	}
	db.render(w, r, "hosts", "Hosts", resp, err)
}

type shardsData struct {
	Health, PageToken string
	PageSize          int
	Filters           []string
	ShowUnhealthy     bool
	Unhealthy         shardList
	Page              shardList
	FirstURL, NextURL string
}

func (db *Dashboard) shards(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	data := shardsData{Health: q.Get("health"), PageToken: q.Get("page_token"), PageSize: db.opts.PageSize,
		Filters: append([]string{"unhealthy"}, healths...),
		Page:    shardList{ListShardsResponse: &drummerpb.ListShardsResponse{}}, Unhealthy: shardList{ListShardsResponse: &drummerpb.ListShardsResponse{}}}
	if s := q.Get("page_size"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 2000 {
			db.render(w, r, "shards", "Shards", data, status.Errorf(codes.InvalidArgument, "page_size %q: want 1 to 2000", s))
			return
		}
		data.PageSize = n
	}
	var health []string
	if data.Health != "" {
		health = []string{data.Health}
	}
	ctx := r.Context()
	// Unhealthy first: on the unfiltered first page, the first unhealthy
	// shards come above the list of all.
	if data.Health == "" && data.PageToken == "" {
		data.ShowUnhealthy = true
		un, err := db.d.ListShards(ctx, &drummerpb.ListShardsRequest{Health: []string{"unhealthy"}, PageSize: 20})
		if err != nil {
			db.render(w, r, "shards", "Shards", data, err)
			return
		}
		data.Unhealthy = shardList{un, un.NextPageToken != ""}
	}
	resp, err := db.d.ListShards(ctx, &drummerpb.ListShardsRequest{Health: health, PageSize: uint32(data.PageSize), PageToken: data.PageToken})
	if err != nil {
		db.render(w, r, "shards", "Shards", data, err)
		return
	}
	data.Page = shardList{resp, resp.NextPageToken != ""}
	link := func(token string) string {
		v := url.Values{}
		if data.Health != "" {
			v.Set("health", data.Health)
		}
		if data.PageSize != db.opts.PageSize {
			v.Set("page_size", strconv.Itoa(data.PageSize))
		}
		if token != "" {
			v.Set("page_token", token)
		}
		if len(v) == 0 {
			return "/shards"
		}
		return "/shards?" + v.Encode()
	}
	data.FirstURL, data.NextURL = link(""), link(resp.NextPageToken)
	db.render(w, r, "shards", "Shards", data, nil)
}

func (db *Dashboard) shard(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		db.render(w, r, "shard", "Shard", &drummerpb.ShardStatus{}, status.Errorf(codes.InvalidArgument, "shard %q: want a shard ID, a number from 1", r.PathValue("id")))
		return
	}
	s, err := db.d.GetShard(r.Context(), &drummerpb.GetShardRequest{ShardId: id})
	if err != nil {
		s = &drummerpb.ShardStatus{ShardId: id}
	}
	db.render(w, r, "shard", fmt.Sprintf("Shard %d", id), s, err)
}

func (db *Dashboard) repairs(w http.ResponseWriter, r *http.Request) {
	resp, err := db.d.ListRepairs(r.Context(), &drummerpb.ListRepairsRequest{})
	if err != nil {
		resp = &drummerpb.ListRepairsResponse{}
	}
	db.render(w, r, "repairs", "Repairs", resp, err)
}

// Handler returns a constructor for web.DrummerOptions.Dashboard;
// served, when given, fills Options.Served.
func Handler(opts Options) func(grpc.ClientConnInterface, func() string) (http.Handler, error) {
	return func(conn grpc.ClientConnInterface, served func() string) (http.Handler, error) {
		if opts.Served == nil {
			opts.Served = served
		}
		return New(conn, opts)
	}
}
