package api

import (
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/pkg/auth"
)

// Policy says who may call each RPC.
//
// Only the orchestrator writes: it tracks the activities of the tasks it
// runs, and a completed activity is the result a retried DelegateTask
// replays. An organization that could call TrackStart could create the
// activity of a request_id before the orchestrator does and complete it
// with a result of its choosing, which the orchestrator would then serve
// as its own. Admins may not write either: they read any organization's
// activities to operate the system, and nothing in operating it needs a
// forged or hand-made task result (a task nobody completes is abandoned by
// the service itself). Whoever holds an admin token could otherwise plant
// results in every organization.
//
// Organizations read their own activities, admins any organization's, and
// the orchestrator those of the organization it forwards.
func Policy() auth.Policy {
	track := auth.Rule{auth.Orchestrator}
	read := auth.Rule{auth.Organization, auth.Admin, auth.Orchestrator}
	return auth.Policy{
		activityv1.ActivityService_TrackStart_FullMethodName:     track,
		activityv1.ActivityService_TrackProgress_FullMethodName:  track,
		activityv1.ActivityService_TrackComplete_FullMethodName:  track,
		activityv1.ActivityService_GetActivity_FullMethodName:    read,
		activityv1.ActivityService_ListActivities_FullMethodName: read,
		// A watch reads what ListActivities reads, as it changes.
		activityv1.ActivityService_WatchActivities_FullMethodName: read,
	}
}
