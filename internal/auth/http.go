package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"
)

// DefaultTokenCookie is the cookie that carries a web token after a
// browser opened a ?token= URL.
const DefaultTokenCookie = "drummer_token"

// HTTPOptions configure HTTPMiddleware.
type HTTPOptions struct {
	// Source verifies client certificates' roles and web tokens. Nil
	// requires Insecure.
	Source *Source
	// Insecure serves everything to everyone (a listener started with
	// --insecure). Exclusive with Source.
	Insecure bool
	// Routes give the rule for each path prefix (longest prefix wins). A
	// path no route covers is refused: deny by default.
	Routes []HTTPRoute
	// CookieName is the token cookie (default DefaultTokenCookie).
	CookieName string
	Logger     *slog.Logger
	// Now is the clock for token expiry (default time.Now).
	Now func() time.Time
}

// HTTPMiddleware authorizes HTTP requests by role, from a verified client
// certificate (listener configured with Source.ServerTLS and
// tls.VerifyClientCertIfGiven or stricter) or a web token: an
// "Authorization: Bearer <token>" header, the token cookie, or a one-time
// "?token=" parameter, which sets the cookie and redirects to the same
// URL without it (so the token leaves the address bar and history).
// Unauthenticated requests get 401, insufficient roles 403 naming the
// roles needed; handlers find the caller with FromContext.
func HTTPMiddleware(o HTTPOptions) (func(http.Handler) http.Handler, error) {
	switch {
	case o.Source == nil && !o.Insecure:
		return nil, errors.New("auth.HTTPMiddleware: a Source (mutual TLS) or Insecure is required")
	case o.Source != nil && o.Insecure:
		return nil, errors.New("auth.HTTPMiddleware: Source and Insecure are exclusive")
	}
	if o.CookieName == "" {
		o.CookieName = DefaultTokenCookie
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	for _, r := range o.Routes {
		if !strings.HasPrefix(r.Prefix, "/") {
			return nil, fmt.Errorf("auth.HTTPMiddleware: route %q must start with /", r.Prefix)
		}
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if o.Insecure {
				next.ServeHTTP(w, r)
				return
			}
			o.serve(next, w, r)
		})
	}, nil
}

func (o *HTTPOptions) route(p string) (HTTPRoute, bool) {
	clean := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	best, found := HTTPRoute{}, false
	for _, r := range o.Routes {
		pre := r.Prefix
		match := clean == pre || strings.HasPrefix(clean, pre) && (strings.HasSuffix(pre, "/") || clean[len(pre)] == '/')
		if match && (!found || len(pre) > len(best.Prefix)) {
			best, found = r, true
		}
	}
	return best, found
}

func (o *HTTPOptions) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	route, ok := o.route(r.URL.Path)
	if !ok {
		http.Error(w, fmt.Sprintf("403 forbidden: no role may access %s", r.URL.Path), http.StatusForbidden)
		return
	}
	if route.Public {
		next.ServeHTTP(w, r)
		return
	}
	var (
		id  Identity
		err error
	)
	switch {
	case r.TLS != nil && len(r.TLS.VerifiedChains) > 0:
		id, err = identityOfChains(r.TLS.VerifiedChains)
	case r.URL.Query().Has("token"):
		if id, err = o.Source.VerifyToken(r.URL.Query().Get("token"), o.Now()); err == nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			o.setCookie(w, r.URL.Query().Get("token"))
			u := *r.URL
			q := u.Query()
			q.Del("token")
			u.RawQuery = q.Encode()
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
			return
		}
	case bearer(r) != "":
		id, err = o.Source.VerifyToken(bearer(r), o.Now())
	default:
		c, cerr := r.Cookie(o.CookieName)
		if cerr != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="drummer"`)
			http.Error(w, "401 unauthenticated: present a client certificate signed by the deployment's CA, or a web token (drummer cert create-token) as \"Authorization: Bearer <token>\" or ?token=<token>", http.StatusUnauthorized)
			return
		}
		id, err = o.Source.VerifyToken(c.Value, o.Now())
	}
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="drummer", error="invalid_token"`)
		http.Error(w, "401 unauthenticated: "+err.Error(), http.StatusUnauthorized)
		return
	}
	if err := check(route.Rule, r.URL.Path, id, nil); err != nil {
		http.Error(w, fmt.Sprintf("403 forbidden: %s needs role %s; %s has role %s", r.URL.Path, route.Rule, id.descr(), id.Role), http.StatusForbidden)
		return
	}
	next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), id)))
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

func (o *HTTPOptions) setCookie(w http.ResponseWriter, tok string) {
	http.SetCookie(w, &http.Cookie{
		Name:     o.CookieName,
		Value:    tok,
		Path:     "/",
		HttpOnly: true,
		Secure:   true,
		SameSite: http.SameSiteStrictMode,
	})
}
