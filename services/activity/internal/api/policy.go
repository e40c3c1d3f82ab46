package api

import (
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/pkg/auth"
)

// Policy says who may call each RPC. The orchestrator tracks the
// activities of the tasks it runs; an organization may also track and read
// its own (its agents are activities too); admins read any organization's.
func Policy() auth.Policy {
	track := auth.Rule{auth.Orchestrator, auth.Organization}
	read := auth.Rule{auth.Organization, auth.Admin, auth.Orchestrator}
	return auth.Policy{
		activityv1.ActivityService_TrackStart_FullMethodName:     track,
		activityv1.ActivityService_TrackProgress_FullMethodName:  track,
		activityv1.ActivityService_TrackComplete_FullMethodName:  track,
		activityv1.ActivityService_GetActivity_FullMethodName:    read,
		activityv1.ActivityService_ListActivities_FullMethodName: read,
	}
}
