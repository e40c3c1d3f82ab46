// Delegate a task to Switchyard from TypeScript: register two accounts,
// let the orchestrator fail over from the rate-limited one, and read an
// error's details.
//
// Against `switchyard dev` (make run), with the admin token it prints:
//   SWITCHYARD_ORCHESTRATOR=127.0.0.1:50051 SWITCHYARD_ACCOUNTPOOL=127.0.0.1:50052 \
//   SWITCHYARD_ACTIVITY=127.0.0.1:50053 TOKEN=sy_... node build/examples/delegate.js
//
// The api_keys are the simulator's: sk-ant-sim-429-* is always rate
// limited (429, retry-after 30 s), sk-ant-sim-tier4-* answers normally.

import {
  AttemptOutcome,
  Code,
  ConnectError,
  DelegateTaskResponseSchema,
  SelectionStrategy,
  TaskStatus,
  createClients,
  errorDetails,
  toPlainJson,
} from "@switchyard-dev/client";

const org = process.env["SWITCHYARD_ORG"] ?? "acme";
const { orchestrator, accountPool } = createClients({
  orchestrator: process.env["SWITCHYARD_ORCHESTRATOR"] ?? "http://127.0.0.1:50051",
  accountPool: process.env["SWITCHYARD_ACCOUNTPOOL"] ?? "http://127.0.0.1:50052",
  activity: process.env["SWITCHYARD_ACTIVITY"] ?? "http://127.0.0.1:50053",
  token: process.env["TOKEN"],
  timeoutMs: 60_000,
});

// Two accounts; with the PRIORITY strategy the lower priority number is
// tried first.
for (const [name, apiKey, priority] of [
  ["rate-limited", "sk-ant-sim-429-a", 0],
  ["primary", "sk-ant-sim-tier4-b", 1],
] as const) {
  try {
    const { account } = await accountPool.registerAccount({ organizationId: org, name, apiKey, tier: "tier4", priority });
    console.log(`registered ${account?.name} (${account?.id})`);
  } catch (err) {
    // Run twice against the same stack: the account is already there.
    if (!(err instanceof ConnectError && err.code === Code.AlreadyExists)) throw err;
    console.log(`account ${name} already registered`);
  }
}
await accountPool.updateOrganizationSettings({ organizationId: org, selectionStrategy: SelectionStrategy.PRIORITY });

const res = await orchestrator.delegateTask({ organizationId: org, category: "quick", prompt: "Say hello" });
console.log(`status: ${TaskStatus[res.status]}`);
console.log(`answer: ${res.output}`);
for (const a of res.metadata?.attemptDetails ?? []) {
  // outcomeCode is the AttemptOutcome enum; AttemptOutcome[n] is its name.
  console.log(`attempt ${a.number} on ${a.accountName}: ${AttemptOutcome[a.outcomeCode]} (HTTP ${a.httpStatus})`);
}
// int64 fields are bigint; toPlainJson gives the proto3 JSON form.
console.log(`tokens: ${res.metadata?.inputTokens} in, ${res.metadata?.outputTokens} out`);
console.log(`json: ${JSON.stringify(toPlainJson(DelegateTaskResponseSchema, res))}`);

// A request the orchestrator refuses: InvalidArgument, and a
// google.rpc.BadRequest detail names the field.
try {
  await orchestrator.delegateTask({ organizationId: org, category: "no-such-category", prompt: "Say hello" });
} catch (err) {
  if (!(err instanceof ConnectError)) throw err;
  console.log(`error: ${Code[err.code]}: ${err.rawMessage}`);
  for (const v of errorDetails(err).badRequest?.fieldViolations ?? []) {
    console.log(`  field ${v.field}: ${v.description}`);
  }
}
