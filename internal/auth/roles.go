// Package auth is the security leaf every side of Drummer imports: roles
// and identities read from certificates (and web tokens), TLS configurations
// for mutual TLS with certificates reloaded when their files change, the
// table of which role may call which gRPC method, the gRPC interceptors and
// the HTTP middleware that enforce it.
//
// Certificates carry their role in a URI SAN, drummer://role/<role>; a
// nodehost certificate also carries the Raft address it is bound to,
// drummer://raft/<host:port>. Three CAs (made by `drummer cert create-ca`)
// sign the three kinds of certificates: the client CA signs admin,
// operator, viewer and app certificates (and web tokens), the server CA
// signs drummer servers, the nodehost CA signs nodehosts. Each CA carries
// its kind as drummer://ca/<kind>, so that dragonboat's Raft transports,
// which can only check "signed by a CA in this file", are given only the
// CA of their own peers: a client or nodehost certificate never reaches
// the drummer DB's Raft port.
package auth

import (
	"fmt"
	"strings"
)

// Role is what a certificate (or web token) allows its holder to do.
type Role uint8

// Roles. Admin, operator and viewer form a ladder (each may do what the
// ones below it may); app, nodehost and server stand apart.
const (
	RoleNone Role = iota
	RoleViewer
	RoleOperator
	RoleAdmin
	RoleApp
	RoleNodehost
	RoleServer
)

var roleNames = [...]string{"none", "viewer", "operator", "admin", "app", "nodehost", "server"}

// AllRoles lists every real role, in a stable order.
var AllRoles = []Role{RoleAdmin, RoleOperator, RoleViewer, RoleApp, RoleNodehost, RoleServer}

func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("role(%d)", r)
}

// ParseRole parses a role name.
func ParseRole(s string) (Role, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	for _, r := range AllRoles {
		if r.String() == s {
			return r, nil
		}
	}
	return RoleNone, fmt.Errorf("unknown role %q; want one of admin, operator, viewer, app, nodehost, server", s)
}

// ladder returns the rank of admin/operator/viewer (0 for the others).
func (r Role) ladder() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// IsClient reports whether the role belongs to a person or an
// application (signed by the client CA) rather than a process of the
// deployment.
func (r Role) IsClient() bool {
	switch r {
	case RoleAdmin, RoleOperator, RoleViewer, RoleApp:
		return true
	}
	return false
}

// CAKind names which of the deployment's CAs signs a kind of certificate.
type CAKind string

// The three CA kinds; CAKindNone is a CA without a Drummer marker (a CA
// of your own PKI): it may sign any role, and Raft transports then trust
// it for every peer.
const (
	CAKindNone     CAKind = ""
	CAKindClient   CAKind = "client"
	CAKindServer   CAKind = "server"
	CAKindNodehost CAKind = "nodehost"
)

// CAKind returns the kind of CA that signs certificates of this role.
func (r Role) CAKind() CAKind {
	switch r {
	case RoleServer:
		return CAKindServer
	case RoleNodehost:
		return CAKindNodehost
	}
	return CAKindClient
}
