package api

import (
	"context"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
)

// SetDefaultKey implements AccountPoolServiceServer. The key is validated
// like RegisterAccount's, goes straight into a secret.String and is
// answered with the settings, which describe it without carrying it.
func (s *Server) SetDefaultKey(ctx context.Context, req *accountpoolv1.SetDefaultKeyRequest) (*accountpoolv1.SetDefaultKeyResponse, error) {
	if err := firstError(checkOrg(req.GetOrganizationId()), checkAPIKey(req.GetApiKey())); err != nil {
		return nil, s.fail(ctx, "SetDefaultKey", err)
	}
	k, err := s.pool.SetDefaultKey(ctx, req.GetOrganizationId(), secret.New(req.GetApiKey()))
	if err != nil {
		return nil, s.fail(ctx, "SetDefaultKey", err)
	}
	st, err := s.pool.Settings(ctx, req.GetOrganizationId())
	if err != nil {
		return nil, s.fail(ctx, "SetDefaultKey", err)
	}
	return &accountpoolv1.SetDefaultKeyResponse{Settings: settingsToProto(st, k)}, nil
}

// ClearDefaultKey implements AccountPoolServiceServer.
func (s *Server) ClearDefaultKey(ctx context.Context, req *accountpoolv1.ClearDefaultKeyRequest) (*accountpoolv1.ClearDefaultKeyResponse, error) {
	if err := checkOrg(req.GetOrganizationId()); err != nil {
		return nil, s.fail(ctx, "ClearDefaultKey", err)
	}
	k, err := s.pool.ClearDefaultKey(ctx, req.GetOrganizationId())
	if err != nil {
		return nil, s.fail(ctx, "ClearDefaultKey", err)
	}
	st, err := s.pool.Settings(ctx, req.GetOrganizationId())
	if err != nil {
		return nil, s.fail(ctx, "ClearDefaultKey", err)
	}
	return &accountpoolv1.ClearDefaultKeyResponse{Settings: settingsToProto(st, k)}, nil
}

// defaultKeyResponse is SelectAccount's answer for an organization with no
// account in service that accepted its default key: the key, no lease, no
// candidates. Besides the lease, the one place a key leaves the service.
func defaultKeyResponse(k *pool.DefaultKey) *accountpoolv1.SelectAccountResponse {
	return &accountpoolv1.SelectAccountResponse{
		DefaultKey: &accountpoolv1.DefaultKey{ApiKey: k.APIKey.Reveal(), KeyVersion: k.KeyVersion, Generation: k.Generation},
	}
}

// maxDefaultKeyGenerationLen bounds RecordRequest's default_key_generation;
// the pool's generations are 16 characters.
const maxDefaultKeyGenerationLen = 64

// legacyKeyFromProto maps RecordRequestRequest.legacy_key; UNSPECIFIED is
// the environment key, as before the field existed.
func legacyKeyFromProto(k accountpoolv1.LegacyKey) (pool.LegacyKey, error) {
	switch k {
	case accountpoolv1.LegacyKey_LEGACY_KEY_UNSPECIFIED, accountpoolv1.LegacyKey_LEGACY_KEY_ENVIRONMENT:
		return pool.LegacyKeyEnvironment, nil
	case accountpoolv1.LegacyKey_LEGACY_KEY_ORGANIZATION_DEFAULT:
		return pool.LegacyKeyOrganizationDefault, nil
	}
	return 0, invalid("legacy_key", "unknown value %d; use LEGACY_KEY_ORGANIZATION_DEFAULT or LEGACY_KEY_ENVIRONMENT", int32(k))
}
