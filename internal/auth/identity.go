package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// URIScheme is the scheme of the URI SANs that carry Drummer facts in
// certificates.
const URIScheme = "drummer"

// RoleURI is the URI SAN naming a certificate's role.
func RoleURI(r Role) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: "role", Path: "/" + r.String()}
}

// RaftURI is the URI SAN binding a nodehost certificate to its Raft
// address.
func RaftURI(addr string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: "raft", Path: "/" + addr}
}

// CAKindURI is the URI SAN marking a CA certificate's kind.
func CAKindURI(k CAKind) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: "ca", Path: "/" + string(k)}
}

// Identity is who is calling: read from a verified client certificate or
// a web token.
type Identity struct {
	// Name is the certificate's common name or the token's name.
	Name string
	Role Role
	// RaftAddresses are the Raft addresses a nodehost certificate is
	// bound to (one, for certificates made by `drummer cert`).
	RaftAddresses []string
	// Hosts are the DNS names and IP addresses a server or nodehost
	// certificate is valid for.
	Hosts []string
	// Via is "certificate" or "token".
	Via string
	// Serial is the certificate serial number (hex) when Via is
	// "certificate".
	Serial string
}

func (id Identity) String() string {
	return fmt.Sprintf("%s %q (role %s)", id.Via, id.Name, id.Role)
}

// BoundTo reports whether a nodehost identity is bound to raft address
// addr.
func (id Identity) BoundTo(addr string) bool {
	for _, a := range id.RaftAddresses {
		if a == addr {
			return true
		}
	}
	return false
}

// ValidFor reports whether a server or nodehost identity's certificate
// names host (a DNS name or IP address).
func (id Identity) ValidFor(host string) bool {
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	for _, h := range id.Hosts {
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return false
}

// drummerURIs returns the paths (without the leading slash) of a
// certificate's drummer://<host>/... URIs.
func drummerURIs(c *x509.Certificate, host string) []string {
	var out []string
	for _, u := range c.URIs {
		if u.Scheme == URIScheme && u.Host == host {
			out = append(out, strings.TrimPrefix(u.Path, "/"))
		}
	}
	return out
}

// IdentityOf reads the identity of a leaf certificate (not verified here).
func IdentityOf(leaf *x509.Certificate) (Identity, error) {
	roles := drummerURIs(leaf, "role")
	if len(roles) == 0 {
		return Identity{}, fmt.Errorf("certificate %q carries no Drummer role (a URI SAN drummer://role/<role>); make it with `drummer cert create-client|create-server|create-nodehost`", leaf.Subject.CommonName)
	}
	if len(roles) > 1 {
		return Identity{}, fmt.Errorf("certificate %q carries %d roles; exactly one is allowed", leaf.Subject.CommonName, len(roles))
	}
	r, err := ParseRole(roles[0])
	if err != nil {
		return Identity{}, fmt.Errorf("certificate %q: %w", leaf.Subject.CommonName, err)
	}
	id := Identity{Name: leaf.Subject.CommonName, Role: r, Via: "certificate", Serial: leaf.SerialNumber.Text(16)}
	id.Hosts = append(id.Hosts, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		id.Hosts = append(id.Hosts, ip.String())
	}
	if r == RoleNodehost {
		id.RaftAddresses = drummerURIs(leaf, "raft")
		if len(id.RaftAddresses) == 0 {
			return Identity{}, fmt.Errorf("nodehost certificate %q is bound to no raft address (a URI SAN drummer://raft/<host:port>); make it with `drummer cert create-nodehost --raft-address`", leaf.Subject.CommonName)
		}
	}
	return id, nil
}

// CAKindOf returns the kind a CA certificate is marked with.
func CAKindOf(ca *x509.Certificate) CAKind {
	for _, k := range drummerURIs(ca, "ca") {
		switch CAKind(k) {
		case CAKindClient, CAKindServer, CAKindNodehost:
			return CAKind(k)
		}
	}
	return CAKindNone
}

// identityOfChain reads the identity of a verified chain and checks that
// the CA at its root may sign that role.
func identityOfChain(chain []*x509.Certificate) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, errors.New("empty certificate chain")
	}
	id, err := IdentityOf(chain[0])
	if err != nil {
		return Identity{}, err
	}
	root := chain[len(chain)-1]
	if k := CAKindOf(root); k != CAKindNone && k != id.Role.CAKind() {
		return Identity{}, fmt.Errorf("certificate %q has role %s but is signed by the %s CA %q; %s certificates must be signed by the %s CA",
			id.Name, id.Role, k, root.Subject.CommonName, id.Role, id.Role.CAKind())
	}
	return id, nil
}

// identityOfChains returns the identity of the first acceptable chain.
func identityOfChains(chains [][]*x509.Certificate) (Identity, error) {
	if len(chains) == 0 {
		return Identity{}, errors.New("no verified client certificate")
	}
	var first error
	for _, c := range chains {
		id, err := identityOfChain(c)
		if err == nil {
			return id, nil
		}
		if first == nil {
			first = err
		}
	}
	return Identity{}, first
}

type identityKey struct{}

// NewContext returns ctx carrying the caller's identity.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the caller's identity set by the interceptors or
// the HTTP middleware; ok is false in insecure mode.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}
