package delegate

import (
	"strings"
	"testing"

	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
)

// Every outcome the executor reports has its own enum value, named after
// it, so the text and the enum of an attempt always agree.
func TestEveryAttemptOutcomeHasItsEnumValue(t *testing.T) {
	seen := map[orchestratorv1.AttemptOutcome]string{}
	n := 0
	for o := executor.Outcome(1); o.String() != "unknown"; o++ {
		n++
		code := AttemptOutcomeCode(o.String())
		if code == orchestratorv1.AttemptOutcome_ATTEMPT_OUTCOME_UNSPECIFIED {
			t.Errorf("outcome %q has no AttemptOutcome value", o)
			continue
		}
		if got := strings.ToLower(strings.TrimPrefix(code.String(), "ATTEMPT_OUTCOME_")); got != o.String() {
			t.Errorf("outcome %q maps to %s", o, code)
		}
		if other, dup := seen[code]; dup {
			t.Errorf("%q and %q both map to %s", other, o, code)
		}
		seen[code] = o.String()
	}
	if n != len(orchestratorv1.AttemptOutcome_name)-1 {
		t.Errorf("%d executor outcomes, %d AttemptOutcome values besides UNSPECIFIED: one side has one the other lacks", n, len(orchestratorv1.AttemptOutcome_name)-1)
	}
	if AttemptOutcomeCode("unknown") != orchestratorv1.AttemptOutcome_ATTEMPT_OUTCOME_UNSPECIFIED {
		t.Error("a name the contract does not know must be UNSPECIFIED")
	}
}
