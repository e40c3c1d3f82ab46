package api

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/pkg/validate"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

// structToMap converts the request's field, returning nil for an absent
// or empty struct: the domain does not distinguish them. A struct that
// validate.Struct rejects (a NaN or infinite number, nesting deeper than
// validate.MaxStructDepth) is a *tracker.ValidationError naming the value's
// path, and is never converted: conversion would turn non-finite numbers
// into strings and recurse as deep as the input.
func structToMap(field string, s *structpb.Struct) (map[string]any, error) {
	if len(s.GetFields()) == 0 {
		return nil, nil
	}
	if err := validate.Struct(field, s); err != nil {
		return nil, err
	}
	return s.AsMap(), nil
}

func mapToStruct(m map[string]any) (*structpb.Struct, error) {
	if len(m) == 0 {
		return nil, nil
	}
	return structpb.NewStruct(m)
}

func timestampOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// timeFromProto converts an optional time: a filter bound, a deadline.
func timeFromProto(field string, ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, &tracker.ValidationError{Field: field, Problem: "is not a valid timestamp: " + err.Error()}
	}
	return ts.AsTime(), nil
}

// statusFromProto maps UNSPECIFIED to the empty Status ("any" in a filter,
// rejected by Complete) and refuses numbers the enum does not define.
func statusFromProto(s activityv1.ActivityStatus) (store.Status, error) {
	switch s {
	case activityv1.ActivityStatus_ACTIVITY_STATUS_UNSPECIFIED:
		return "", nil
	case activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING:
		return store.StatusRunning, nil
	case activityv1.ActivityStatus_ACTIVITY_STATUS_COMPLETED:
		return store.StatusCompleted, nil
	case activityv1.ActivityStatus_ACTIVITY_STATUS_FAILED:
		return store.StatusFailed, nil
	case activityv1.ActivityStatus_ACTIVITY_STATUS_ABANDONED:
		return store.StatusAbandoned, nil
	default:
		return "", &tracker.ValidationError{Field: "status", Problem: fmt.Sprintf("%d is not an ActivityStatus value", s)}
	}
}

func statusToProto(s store.Status) activityv1.ActivityStatus {
	switch s {
	case store.StatusRunning:
		return activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING
	case store.StatusCompleted:
		return activityv1.ActivityStatus_ACTIVITY_STATUS_COMPLETED
	case store.StatusFailed:
		return activityv1.ActivityStatus_ACTIVITY_STATUS_FAILED
	case store.StatusAbandoned:
		return activityv1.ActivityStatus_ACTIVITY_STATUS_ABANDONED
	default:
		return activityv1.ActivityStatus_ACTIVITY_STATUS_UNSPECIFIED
	}
}

// activityToProto is the whole activity: activityView with the full view.
func activityToProto(a store.Activity) (*activityv1.Activity, error) {
	return activityView(a, activityv1.ActivityView_ACTIVITY_VIEW_FULL)
}

// viewFromProto is a request's response_view. A value this server does
// not know (a newer client's) is read as the full view: a bigger answer
// than asked for is safe, refusing the write is not.
func viewFromProto(v activityv1.ActivityView) activityv1.ActivityView {
	if v == activityv1.ActivityView_ACTIVITY_VIEW_BASIC {
		return v
	}
	return activityv1.ActivityView_ACTIVITY_VIEW_FULL
}

// activityView converts a to its message; the basic view leaves out the
// input, output and metadata, which are most of its size and conversion
// cost.
func activityView(a store.Activity, view activityv1.ActivityView) (*activityv1.Activity, error) {
	pa := &activityv1.Activity{
		Id:             a.ID,
		OrganizationId: a.OrganizationID,
		SessionId:      a.SessionID,
		UserId:         a.UserID,
		AgentType:      a.AgentType,
		AgentName:      a.AgentName,
		Category:       a.Category,
		Status:         statusToProto(a.Status),
		ErrorMessage:   a.ErrorMessage,
		StartTime:      timestampOrNil(a.StartTime),
		CompleteTime:   timestampOrNil(a.CompleteTime),
		DurationMs:     a.Duration().Milliseconds(),
		Deadline:       timestampOrNil(a.Deadline),
	}
	if view == activityv1.ActivityView_ACTIVITY_VIEW_BASIC {
		return pa, nil
	}
	input, err := mapToStruct(a.Input)
	if err != nil {
		return nil, fmt.Errorf("converting input of activity %s: %w", a.ID, err)
	}
	output, err := mapToStruct(a.Output)
	if err != nil {
		return nil, fmt.Errorf("converting output of activity %s: %w", a.ID, err)
	}
	metadata, err := mapToStruct(a.Metadata)
	if err != nil {
		return nil, fmt.Errorf("converting metadata of activity %s: %w", a.ID, err)
	}
	pa.InputData, pa.OutputData, pa.Metadata = input, output, metadata
	return pa, nil
}

func eventToProto(e store.ProgressEvent) (*activityv1.ProgressEvent, error) {
	data, err := mapToStruct(e.Data)
	if err != nil {
		return nil, fmt.Errorf("converting data of progress event %d of activity %s: %w", e.Sequence, e.ActivityID, err)
	}
	return &activityv1.ProgressEvent{
		ActivityId: e.ActivityID,
		Sequence:   e.Sequence,
		Message:    e.Message,
		Data:       data,
		CreateTime: timestampOrNil(e.CreateTime),
	}, nil
}
