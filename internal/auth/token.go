package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Web tokens let a browser reach the HTTP listeners (dashboard, metrics)
// where a client certificate is impractical. A token is
//
//	dt1.<base64url(JSON claims)>.<base64url(ECDSA P-256 SHA-256 signature)>
//
// signed by the client CA's key (`drummer cert create-token`) and
// verified with the CA certificates every process already trusts. Tokens
// cannot be revoked one by one: keep their lifetime short (at most
// MaxTokenTTL); rotating the client CA revokes them all.

// MaxTokenTTL is the longest lifetime a token may have.
const MaxTokenTTL = 30 * 24 * time.Hour

const (
	tokenPrefix  = "dt1."
	tokenContext = "drummer-web-token-v1."
	maxTokenLen  = 2048
	maxNameLen   = 64
)

// TokenClaims are what a token asserts.
type TokenClaims struct {
	Role Role
	Name string
	// IssuedAt and Expires bound the token's validity.
	IssuedAt, Expires time.Time
}

type wireClaims struct {
	Role string `json:"role"`
	Name string `json:"name"`
	Iat  int64  `json:"iat"`
	Exp  int64  `json:"exp"`
}

// TokenRoleAllowed reports whether tokens may carry role r: only the
// roles of people (admin, operator, viewer).
func TokenRoleAllowed(r Role) bool { return r.ladder() > 0 }

func checkClaims(c TokenClaims) error {
	if !TokenRoleAllowed(c.Role) {
		return fmt.Errorf("a web token may carry role admin, operator or viewer, not %s", c.Role)
	}
	if err := ValidName(c.Name); err != nil {
		return err
	}
	ttl := c.Expires.Sub(c.IssuedAt)
	if ttl <= 0 || ttl > MaxTokenTTL {
		return fmt.Errorf("token lifetime %s: want more than 0 and at most %s", ttl, MaxTokenTTL)
	}
	return nil
}

// ValidName checks a certificate or token name: 1-64 letters, digits,
// '.', '_' or '-'.
func ValidName(s string) error {
	if s == "" || len(s) > maxNameLen {
		return fmt.Errorf("name %q: want 1 to %d characters", s, maxNameLen)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("name %q: only letters, digits, '.', '_' and '-' are allowed", s)
		}
	}
	return nil
}

// SignToken signs claims with the client CA's key.
func SignToken(key *ecdsa.PrivateKey, c TokenClaims) (string, error) {
	if err := checkClaims(c); err != nil {
		return "", err
	}
	body, err := json.Marshal(wireClaims{Role: c.Role.String(), Name: c.Name, Iat: c.IssuedAt.Unix(), Exp: c.Expires.Unix()})
	if err != nil {
		return "", err
	}
	payload := base64.RawURLEncoding.EncodeToString(body)
	sum := sha256.Sum256([]byte(tokenContext + payload))
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		return "", err
	}
	return tokenPrefix + payload + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// ErrBadToken is wrapped by every token verification failure.
var ErrBadToken = errors.New("invalid web token")

// VerifyToken checks a token against the source's client CAs (every CA
// when none is marked) and returns the identity it carries.
func (s *Source) VerifyToken(tok string, now time.Time) (Identity, error) {
	m := s.material()
	var keys []*ecdsa.PublicKey
	for _, want := range []CAKind{CAKindClient, CAKindNone} {
		for _, c := range m.cas {
			if k, ok := c.PublicKey.(*ecdsa.PublicKey); ok && CAKindOf(c) == want {
				keys = append(keys, k)
			}
		}
		if len(keys) > 0 {
			break
		}
	}
	return verifyToken(tok, keys, now)
}

func verifyToken(tok string, keys []*ecdsa.PublicKey, now time.Time) (Identity, error) {
	bad := func(format string, args ...any) (Identity, error) {
		return Identity{}, fmt.Errorf("%w: %s", ErrBadToken, fmt.Sprintf(format, args...))
	}
	if len(tok) > maxTokenLen {
		return bad("longer than %d bytes", maxTokenLen)
	}
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	if !ok {
		return bad("not a Drummer web token (make one with `drummer cert create-token`)")
	}
	payload, sigText, ok := strings.Cut(rest, ".")
	if !ok {
		return bad("malformed")
	}
	sig, err := base64.RawURLEncoding.DecodeString(sigText)
	if err != nil {
		return bad("malformed signature")
	}
	sum := sha256.Sum256([]byte(tokenContext + payload))
	valid := false
	for _, k := range keys {
		if ecdsa.VerifyASN1(k, sum[:], sig) {
			valid = true
			break
		}
	}
	if !valid {
		return bad("not signed by a trusted client CA")
	}
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return bad("malformed claims")
	}
	var w wireClaims
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return bad("malformed claims: %v", err)
	}
	role, err := ParseRole(w.Role)
	if err != nil {
		return bad("%v", err)
	}
	c := TokenClaims{Role: role, Name: w.Name, IssuedAt: time.Unix(w.Iat, 0), Expires: time.Unix(w.Exp, 0)}
	if err := checkClaims(c); err != nil {
		return bad("%v", err)
	}
	if now.After(c.Expires) {
		return bad("expired at %s", c.Expires.UTC().Format(time.RFC3339))
	}
	if c.IssuedAt.After(now.Add(time.Minute)) {
		return bad("issued in the future (%s)", c.IssuedAt.UTC().Format(time.RFC3339))
	}
	return Identity{Name: c.Name, Role: c.Role, Via: "token"}, nil
}
