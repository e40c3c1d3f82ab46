package dashboard

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
)

func TestEveryCodeHasAnHTTPStatusAndName(t *testing.T) {
	for _, tc := range []struct {
		code   codes.Code
		status int
		name   string
	}{
		{codes.OK, http.StatusOK, "ok"},
		{codes.InvalidArgument, http.StatusBadRequest, "invalid_argument"},
		{codes.OutOfRange, http.StatusBadRequest, "out_of_range"},
		{codes.Unauthenticated, http.StatusUnauthorized, "unauthenticated"},
		{codes.PermissionDenied, http.StatusForbidden, "permission_denied"},
		{codes.NotFound, http.StatusNotFound, "not_found"},
		{codes.AlreadyExists, http.StatusConflict, "already_exists"},
		{codes.Aborted, http.StatusConflict, "aborted"},
		{codes.FailedPrecondition, http.StatusPreconditionFailed, "failed_precondition"},
		{codes.ResourceExhausted, http.StatusTooManyRequests, "resource_exhausted"},
		{codes.Canceled, 499, "canceled"},
		{codes.Unimplemented, http.StatusNotImplemented, "unimplemented"},
		{codes.Unavailable, http.StatusServiceUnavailable, "unavailable"},
		{codes.DeadlineExceeded, http.StatusGatewayTimeout, "deadline_exceeded"},
		{codes.Internal, http.StatusInternalServerError, "internal"},
		{codes.DataLoss, http.StatusInternalServerError, "data_loss"},
		{codes.Unknown, http.StatusInternalServerError, "unknown"},
	} {
		require.Equal(t, tc.status, httpStatus(tc.code), tc.code.String())
		require.Equal(t, tc.name, codeName(tc.code), tc.code.String())
	}
}
