package api

import (
	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/pkg/auth"
)

// Policy says who may call each RPC. SelectAccount and RecordRequest hand
// out decrypted keys and settle capacity, so only the orchestrator may call
// them; an organization administers and watches its own accounts, an
// admin any organization's.
func Policy() auth.Policy {
	admin := auth.Rule{auth.Organization, auth.Admin}
	orchestrator := auth.Rule{auth.Orchestrator}
	// The orchestrator reads an organization's settings for its task
	// limits; the settings name no key (DefaultKeyInfo only describes one).
	settingsReader := auth.Rule{auth.Organization, auth.Admin, auth.Orchestrator}
	return auth.Policy{
		accountpoolv1.AccountPoolService_RegisterAccount_FullMethodName:            admin,
		accountpoolv1.AccountPoolService_GetAccount_FullMethodName:                 admin,
		accountpoolv1.AccountPoolService_ListAccounts_FullMethodName:               admin,
		accountpoolv1.AccountPoolService_WatchAccounts_FullMethodName:              admin,
		accountpoolv1.AccountPoolService_UpdateAccount_FullMethodName:              admin,
		accountpoolv1.AccountPoolService_DeleteAccount_FullMethodName:              admin,
		accountpoolv1.AccountPoolService_RotateAccountKey_FullMethodName:           admin,
		accountpoolv1.AccountPoolService_GetOrganizationSettings_FullMethodName:    settingsReader,
		accountpoolv1.AccountPoolService_UpdateOrganizationSettings_FullMethodName: admin,
		accountpoolv1.AccountPoolService_SetDefaultKey_FullMethodName:              admin,
		accountpoolv1.AccountPoolService_ClearDefaultKey_FullMethodName:            admin,
		accountpoolv1.AccountPoolService_GetUsage_FullMethodName:                   admin,
		accountpoolv1.AccountPoolService_SelectAccount_FullMethodName:              orchestrator,
		accountpoolv1.AccountPoolService_RecordRequest_FullMethodName:              orchestrator,
	}
}
