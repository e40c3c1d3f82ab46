// Package auth authenticates and authorizes the callers of every Switchyard
// service.
//
// A caller presents a bearer token; the service knows tokens only by their
// SHA-256 hash (a leaked configuration reveals no token) and maps each to a
// Principal: an organization, the orchestrator service, or an admin.
//
// The organization a call acts on comes from the principal, never from the
// request alone:
//
//   - an organization principal acts on its own organization; a request
//     naming another is PermissionDenied, and an empty organization_id is
//     filled in from the token;
//   - the orchestrator principal acts on the organization its own caller
//     was authenticated for, which it forwards in the
//     x-switchyard-organization-id header (ForwardOrganization); only the
//     orchestrator's token makes that header count;
//   - an admin may act on any organization the request names.
//
// A Policy lists, per RPC, which kinds of principal may call it; an RPC the
// policy does not list is denied (fail closed). Health and reflection need
// no token.
package auth

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/pkg/validate"
)

// Kind is what a principal is.
type Kind int

// The kinds of principal.
const (
	Organization Kind = iota + 1
	Orchestrator
	Admin
)

func (k Kind) String() string {
	switch k {
	case Organization:
		return "organization"
	case Orchestrator:
		return "orchestrator"
	case Admin:
		return "admin"
	}
	return "unknown"
}

// Principal is an authenticated caller.
type Principal struct {
	Kind Kind
	// OrganizationID is set for Organization principals.
	OrganizationID string
}

func (p Principal) String() string {
	if p.Kind == Organization {
		return "org:" + p.OrganizationID
	}
	return p.Kind.String()
}

// OrganizationHeader carries the organization the orchestrator acts for.
const OrganizationHeader = "x-switchyard-organization-id"

// Tokens maps token hashes to principals. It is immutable.
type Tokens struct {
	byHash map[[sha256.Size]byte]Principal
}

// HashToken returns the hex SHA-256 of a token, the form tokens are
// configured in.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// GenerateToken returns a fresh random token.
func GenerateToken() (secret.String, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return secret.String{}, fmt.Errorf("generating a token: %w", err)
	}
	return secret.New("sy_" + base64.RawURLEncoding.EncodeToString(b[:])), nil
}

// ParseTokens reads a token table: one entry per line (or separated by
// ';'), each "<hex sha256 of the token> <principal>", where the principal
// is "admin", "orchestrator" or "org:<organization id>". Blank lines and
// lines starting with '#' are ignored.
func ParseTokens(spec string) (*Tokens, error) {
	t := &Tokens{byHash: map[[sha256.Size]byte]Principal{}}
	sc := bufio.NewScanner(strings.NewReader(strings.ReplaceAll(spec, ";", "\n")))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("token entry %d: want '<sha256 hex> <principal>'", n)
		}
		raw, err := hex.DecodeString(fields[0])
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("token entry %d: the hash must be 64 hex characters (the SHA-256 of the token, not the token)", n)
		}
		p, err := parsePrincipal(fields[1])
		if err != nil {
			return nil, fmt.Errorf("token entry %d: %w", n, err)
		}
		var h [sha256.Size]byte
		copy(h[:], raw)
		if _, dup := t.byHash[h]; dup {
			return nil, fmt.Errorf("token entry %d: the same token hash appears twice", n)
		}
		t.byHash[h] = p
	}
	if len(t.byHash) == 0 {
		return nil, fmt.Errorf("the token table has no entries")
	}
	return t, nil
}

func parsePrincipal(s string) (Principal, error) {
	switch {
	case s == "admin":
		return Principal{Kind: Admin}, nil
	case s == "orchestrator":
		return Principal{Kind: Orchestrator}, nil
	case strings.HasPrefix(s, "org:") && len(s) > len("org:"):
		org := strings.TrimPrefix(s, "org:")
		// The same rule every service applies to organization_id: an id the
		// services would reject would make every call of this token fail.
		if err := validate.OrganizationID("organization id", org); err != nil {
			return Principal{}, fmt.Errorf("principal %s: %w", validate.Quote(s), err)
		}
		return Principal{Kind: Organization, OrganizationID: org}, nil
	}
	return Principal{}, fmt.Errorf("principal %s must be admin, orchestrator or org:<organization id>", validate.Quote(s))
}

type principalKey struct{}
type actingOrgKey struct{}

// FromContext returns the principal authenticated for the call.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// ActingOrganization returns the organization the call acts on, as the
// Policy resolved it from the principal.
func ActingOrganization(ctx context.Context) (string, bool) {
	org, ok := ctx.Value(actingOrgKey{}).(string)
	return org, ok && org != ""
}

// WithActingOrganization records the organization a call acts on; the
// Policy does this for every authorized call.
func WithActingOrganization(ctx context.Context, org string) context.Context {
	return context.WithValue(ctx, actingOrgKey{}, org)
}

// authenticate is the go-grpc-middleware AuthFunc.
func (t *Tokens) authenticate(ctx context.Context) (context.Context, error) {
	token, err := grpcauth.AuthFromMD(ctx, "bearer")
	if err != nil {
		return nil, errMissingToken
	}
	p, ok := t.byHash[sha256.Sum256([]byte(token))]
	if !ok {
		return nil, errUnknownToken
	}
	return context.WithValue(ctx, principalKey{}, p), nil
}

var (
	errMissingToken = status.Error(codes.Unauthenticated, "missing bearer token: send 'authorization: Bearer <token>'")
	errUnknownToken = status.Error(codes.Unauthenticated, "unknown bearer token")
)

// Admission returns the check grpcserver.Config.Admit runs when a call's
// headers arrive: a call without a known bearer token is refused with
// Unauthenticated before its body is read, so an unauthenticated caller
// cannot make a server buffer request bodies. Authorization (which
// methods, which organization) stays with the interceptors, which see the
// request. Nil tokens (serving without authentication) give a nil check.
func Admission(t *Tokens) func(method string, md metadata.MD) error {
	if t == nil {
		return nil
	}
	return func(method string, md metadata.MD) error {
		if exempt(method) {
			return nil
		}
		v := md.Get("authorization")
		if len(v) == 0 {
			return errMissingToken
		}
		scheme, token, ok := strings.Cut(v[0], " ")
		if !ok || !strings.EqualFold(scheme, "bearer") {
			return errMissingToken
		}
		if _, ok := t.byHash[sha256.Sum256([]byte(token))]; !ok {
			return errUnknownToken
		}
		return nil
	}
}

// Rule says which kinds of principal may call one RPC.
type Rule []Kind

func (r Rule) allows(k Kind) bool {
	for _, a := range r {
		if a == k {
			return true
		}
	}
	return false
}

// Policy maps full method names ("/pkg.Service/Method") to their rule.
type Policy map[string]Rule

// Interceptors returns the unary and stream server interceptors that
// authenticate with tokens and authorize with the policy. Health and
// reflection are exempt.
func Interceptors(t *Tokens, p Policy) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if exempt(info.FullMethod) {
			return handler(ctx, req)
		}
		ctx, err := t.authenticate(ctx)
		if err != nil {
			return nil, err
		}
		ctx, err = p.authorize(ctx, info.FullMethod, req)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if exempt(info.FullMethod) {
			return handler(srv, ss)
		}
		ctx, err := t.authenticate(ss.Context())
		if err != nil {
			return err
		}
		if _, err := p.rule(ctx, info.FullMethod); err != nil {
			return err
		}
		return handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx, policy: p, method: info.FullMethod})
	}
	return unary, stream
}

// wrappedStream authorizes every request message as the unary interceptor
// authorizes its one request: the organization is resolved from the
// principal (and filled in) before the handler sees the message, and the
// handler's context carries the acting organization from then on.
type wrappedStream struct {
	grpc.ServerStream
	ctx    context.Context
	policy Policy
	method string
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

func (w *wrappedStream) RecvMsg(m any) error {
	if err := w.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	ctx, err := w.policy.authorize(w.ctx, w.method, m)
	if err != nil {
		return err
	}
	w.ctx = ctx
	return nil
}

func exempt(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.") || strings.HasPrefix(method, "/grpc.reflection.")
}

func (p Policy) rule(ctx context.Context, method string) (Principal, error) {
	pr, _ := FromContext(ctx)
	rule, ok := p[method]
	if !ok || !rule.allows(pr.Kind) {
		return pr, status.Errorf(codes.PermissionDenied, "a %s token may not call %s", pr.Kind, method)
	}
	return pr, nil
}

// authorize checks the rule and resolves the organization the call acts
// on, filling in the request's organization_id when it is empty.
func (p Policy) authorize(ctx context.Context, method string, req any) (context.Context, error) {
	pr, err := p.rule(ctx, method)
	if err != nil {
		return nil, err
	}
	msg, ok := req.(proto.Message)
	if !ok {
		return nil, status.Error(codes.Internal, "request is not a protobuf message")
	}
	field := msg.ProtoReflect().Descriptor().Fields().ByName("organization_id")
	if field == nil || field.Kind() != protoreflect.StringKind {
		return ctx, nil
	}
	requested := msg.ProtoReflect().Get(field).String()

	var acting string
	switch pr.Kind {
	case Organization:
		acting = pr.OrganizationID
	case Orchestrator:
		acting = forwardedOrganization(ctx)
		if acting == "" {
			return nil, status.Errorf(codes.PermissionDenied, "the orchestrator must forward the caller's organization in %s", OrganizationHeader)
		}
	case Admin:
		return WithActingOrganization(ctx, requested), nil
	}
	switch requested {
	case "":
		msg.ProtoReflect().Set(field, protoreflect.ValueOfString(acting))
	case acting:
	default:
		return nil, status.Errorf(codes.PermissionDenied, "this token acts for organization %q and cannot act for %s", acting, validate.Quote(requested))
	}
	return WithActingOrganization(ctx, acting), nil
}

func forwardedOrganization(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(OrganizationHeader); len(v) == 1 {
		return v[0]
	}
	return ""
}

// ClientCredentials returns per-RPC credentials that send token as a
// bearer token. requireTLS should be true unless the connection is on
// loopback or already protected.
func ClientCredentials(token secret.String, requireTLS bool) credentials.PerRPCCredentials {
	return bearer{token: token, requireTLS: requireTLS}
}

type bearer struct {
	token      secret.String
	requireTLS bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token.Reveal()}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.requireTLS }

// ForwardOrganization is the orchestrator's client interceptor: it sends
// the organization its own caller was authorized for (from the server
// context) to the service it calls.
func ForwardOrganization() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if org, ok := ActingOrganization(ctx); ok {
			ctx = metadata.AppendToOutgoingContext(ctx, OrganizationHeader, org)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// ServerInterceptors returns a service's authentication and authorization
// interceptors. Without tokens it refuses, unless insecureNoAuth is set, in
// which case it returns none and logs a warning: serving without
// authentication must be a decision, never a default.
func ServerInterceptors(tokens *Tokens, insecureNoAuth bool, policy Policy, logger *slog.Logger) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor, error) {
	switch {
	case tokens != nil:
		u, s := Interceptors(tokens, policy)
		return []grpc.UnaryServerInterceptor{u}, []grpc.StreamServerInterceptor{s}, nil
	case insecureNoAuth:
		logger.Warn("serving WITHOUT authentication: any caller can act for any organization; use only for local experiments")
		return nil, nil, nil
	default:
		return nil, nil, errors.New("no bearer tokens configured: set SWITCHYARD_TOKENS or SWITCHYARD_TOKENS_FILE (or, for local experiments only, SWITCHYARD_INSECURE_NO_AUTH=true)")
	}
}
