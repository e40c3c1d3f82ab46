// The client against the real dev stack (`switchyard dev`, built from this
// repository): accounts, fail-over, streaming, errors with details,
// authentication, deadlines, WatchActivities and the example.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { after, before, describe, it as nodeIt, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import {
  AccountStatus,
  ActivityStatus,
  AttemptOutcome,
  Code,
  ConnectError,
  DelegateTaskResponseSchema,
  SelectionStrategy,
  TaskStatus,
  bigintReplacer,
  createClients,
  errorDetails,
  toPlainJson,
  withoutDefaultDeadline,
  type Clients,
  type DelegateTaskResponse,
  type StreamDelegateTaskResponse,
  type WatchActivitiesResponse,
} from "@switchyard-dev/client";
import { startDevStack, type DevStack } from "@switchyard-dev/client/testing";

let stack: DevStack;
let acme: Clients;
let admin: Clients;

// Every failure names the dev stack's log (its stderr; no tokens).
function it(name: string, fn: (t: TestContext) => Promise<void>): void {
  nodeIt(name, async (t) => {
    try {
      await fn(t);
    } catch (err) {
      if (err instanceof Error && stack) err.message += `\n(dev stack log: ${stack.logFile})`;
      throw err;
    }
  });
}

async function rejectsWith(p: Promise<unknown>, code: Code): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
    assert.equal(Code[err.code], Code[code], err.message);
    return err;
  }
  assert.fail(`expected ${Code[code]}, the call succeeded`);
}

/** Aborts after ms: a guard so that a missing message fails the test instead of hanging it. */
function guard(ms: number): AbortSignal {
  return AbortSignal.timeout(ms);
}

describe("against switchyard dev", { timeout: 600_000 }, () => {
  before(async () => {
    stack = await startDevStack();
    assert.ok(stack.acmeToken && stack.adminToken, "dev generates tokens");
    acme = createClients({ ...stack.urls, token: stack.acmeToken, timeoutMs: 30_000 });
    admin = createClients({ ...stack.urls, token: stack.adminToken, timeoutMs: 30_000 });
  });
  after(async () => {
    await stack?.stop();
  });

  let failover: DelegateTaskResponse;

  it("the simulator's /sim/ control needs the token the ready file holds", async () => {
    assert.match(stack.simControlToken, /^sy_sim_/);
    const stats = (token?: string) =>
      fetch(`${stack.simulator}/sim/stats?api_key=sk-ant-sim-tier4-ctl`, {
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      });
    for (const token of [undefined, "sy_sim_not-the-token-at-all"]) {
      const res = await stats(token);
      assert.equal(res.status, 401);
      const body = (await res.json()) as { type: string; error: { type: string } };
      assert.equal(body.error.type, "authentication_error");
    }
    const fault = await fetch(`${stack.simulator}/sim/faults`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.simControlToken}`, "content-type": "application/json" },
      body: JSON.stringify({ api_key: "sk-ant-sim-tier4-ctl", status: 529, count: 1 }),
    });
    assert.equal(fault.status, 204);
    const res = await stats(stack.simControlToken);
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { requests: number }).requests, 0);
  });

  it("RegisterAccount: two accounts for acme, selection by PRIORITY", async () => {
    const limited = await acme.accountPool.registerAccount({
      organizationId: "acme", name: "rate-limited", apiKey: "sk-ant-sim-429-a", tier: "tier4", priority: 0,
    });
    const primary = await acme.accountPool.registerAccount({
      organizationId: "acme", name: "primary", apiKey: "sk-ant-sim-tier4-b", tier: "tier4", priority: 1,
    });
    assert.equal(limited.account?.organizationId, "acme");
    assert.equal(limited.account?.priority, 0);
    assert.equal(primary.account?.priority, 1);
    assert.equal(primary.account?.status, AccountStatus.ACTIVE);
    assert.notEqual(limited.account?.id, primary.account?.id);

    const settings = await acme.accountPool.updateOrganizationSettings({
      organizationId: "acme", selectionStrategy: SelectionStrategy.PRIORITY,
    });
    assert.equal(settings.settings?.selectionStrategy, SelectionStrategy.PRIORITY);

    const list = await acme.accountPool.listAccounts({ organizationId: "acme" });
    assert.deepEqual(list.accounts.map((a) => a.name).sort(), ["primary", "rate-limited"]);
    // A second registration under the same name is refused.
    await rejectsWith(
      acme.accountPool.registerAccount({ organizationId: "acme", name: "primary", apiKey: "sk-ant-sim-tier4-c", tier: "tier4" }),
      Code.AlreadyExists,
    );
  });

  it("DelegateTask fails over from the rate-limited account to the other", async () => {
    failover = await acme.orchestrator.delegateTask({ category: "quick", prompt: "Say hello" });
    assert.equal(TaskStatus[failover.status], "SUCCESS", failover.error);
    assert.ok(failover.output.length > 0, "an answer");
    const md = failover.metadata;
    assert.ok(md);
    assert.equal(md.attempts, 2);
    const [first, second] = md.attemptDetails;
    assert.equal(AttemptOutcome[first!.outcomeCode], "RATE_LIMITED");
    assert.equal(first!.accountName, "rate-limited");
    assert.equal(first!.httpStatus, 429);
    assert.equal(first!.outcome, "rate_limited");
    assert.equal(AttemptOutcome[second!.outcomeCode], "SUCCESS");
    assert.equal(second!.accountName, "primary");
    assert.equal(md.accountName, "primary");
    assert.equal(typeof md.inputTokens, "bigint");
    assert.ok(md.inputTokens > 0n && md.outputTokens > 0n);
    assert.ok(md.activityId !== "");
  });

  it("JSON.stringify of a response works with the helpers", async () => {
    assert.ok(failover, "needs the fail-over test's response");
    assert.throws(() => JSON.stringify(failover), TypeError, "bigint needs a helper");
    const json = JSON.parse(JSON.stringify(toPlainJson(DelegateTaskResponseSchema, failover)));
    assert.equal(json.status, "TASK_STATUS_SUCCESS");
    assert.equal(json.output, failover.output);
    assert.equal(json.metadata.inputTokens, failover.metadata!.inputTokens.toString());
    assert.deepEqual(
      json.metadata.attemptDetails.map((a: { outcomeCode: string }) => a.outcomeCode),
      ["ATTEMPT_OUTCOME_RATE_LIMITED", "ATTEMPT_OUTCOME_SUCCESS"],
    );
    const raw = JSON.parse(JSON.stringify(failover, bigintReplacer));
    assert.equal(raw.metadata.outputTokens, failover.metadata!.outputTokens.toString());
  });

  it("StreamDelegateTask streams accepted, attempts, text and the result", async () => {
    const events: StreamDelegateTaskResponse["event"][] = [];
    for await (const res of acme.orchestrator.streamDelegateTask({ category: "quick", prompt: "Say hello" }, { signal: guard(60_000) })) {
      events.push(res.event);
    }
    assert.ok(events.length >= 3, `events: ${events.map((e) => e.case).join(", ")}`);
    assert.equal(events[0]!.case, "accepted");
    const last = events.at(-1)!;
    assert.equal(last.case, "result");
    assert.equal(events.filter((e) => e.case === "accepted" || e.case === "result").length, 2, "accepted and result once each");
    const result = last.value as DelegateTaskResponse;
    assert.equal(TaskStatus[result.status], "SUCCESS", result.error);
    // The output is the text since the last restart.
    let text = "";
    let started = 0;
    for (const e of events) {
      if (e.case === "attemptStarted") started++;
      if (e.case === "restart") text = "";
      if (e.case === "text") {
        assert.ok(started > 0, "text comes after attempt_started");
        text += e.value.text;
      }
    }
    assert.ok(text.length > 0);
    assert.equal(text, result.output);
    assert.equal(started, result.metadata?.attempts);
    assert.equal((events[0]!.value as { activityId: string }).activityId, result.metadata?.activityId);
  });

  it("InvalidArgument carries a google.rpc.BadRequest field violation", async () => {
    const empty = await rejectsWith(acme.orchestrator.delegateTask({ category: "quick", prompt: "  " }), Code.InvalidArgument);
    const v = errorDetails(empty).badRequest?.fieldViolations;
    assert.equal(v?.length, 1);
    assert.equal(v?.[0]?.field, "prompt");
    assert.match(v?.[0]?.description ?? "", /required/);

    const unknown = await rejectsWith(
      acme.orchestrator.delegateTask({ category: "no-such-category", prompt: "Say hello" }),
      Code.InvalidArgument,
    );
    assert.equal(errorDetails(unknown).badRequest?.fieldViolations[0]?.field, "category");
  });

  it("Unauthenticated without a valid token, PermissionDenied for another organization", async () => {
    const bogus = createClients({ ...stack.urls, token: "sy_not-a-token-of-this-run" });
    await rejectsWith(bogus.orchestrator.delegateTask({ category: "quick", prompt: "Say hello" }), Code.Unauthenticated);
    await rejectsWith(bogus.accountPool.listAccounts({ organizationId: "acme" }), Code.Unauthenticated);
    const anonymous = createClients({ ...stack.urls });
    await rejectsWith(anonymous.activity.listActivities({ organizationId: "acme" }), Code.Unauthenticated);
    // The acme token acts for acme only.
    await rejectsWith(acme.accountPool.listAccounts({ organizationId: "globex" }), Code.PermissionDenied);
    await rejectsWith(
      acme.orchestrator.delegateTask({ organizationId: "globex", category: "quick", prompt: "Say hello" }),
      Code.PermissionDenied,
    );
  });

  describe("deadlines", () => {
    // sk-ant-sim-slow-* answers after 2 s: longer than the default deadline
    // of this client (500 ms).
    const org = "slowco";
    let slow: Clients;
    before(async () => {
      await admin.accountPool.registerAccount({ organizationId: org, name: "slow", apiKey: "sk-ant-sim-slow-a", tier: "tier4" });
      slow = createClients({ ...stack.urls, token: stack.adminToken, timeoutMs: 500 });
    });

    it("a unary call gets the default deadline", async () => {
      const started = Date.now();
      await rejectsWith(slow.orchestrator.delegateTask({ organizationId: org, category: "quick", prompt: "Say hello" }), Code.DeadlineExceeded);
      const took = Date.now() - started;
      assert.ok(took >= 450 && took < 1_900, `gave up after ${took} ms`);
    });

    it("a call's own timeoutMs wins, and withoutDefaultDeadline runs without one", async () => {
      const own = await slow.orchestrator.delegateTask({ organizationId: org, category: "quick", prompt: "Say hello" }, { timeoutMs: 30_000 });
      assert.equal(TaskStatus[own.status], "SUCCESS", own.error);
      const none = await slow.orchestrator.delegateTask(
        { organizationId: org, category: "quick", prompt: "Say hello" },
        withoutDefaultDeadline({ signal: guard(30_000) }),
      );
      assert.equal(TaskStatus[none.status], "SUCCESS", none.error);
    });

    it("a server stream does not get the default deadline", async () => {
      const started = Date.now();
      let result: DelegateTaskResponse | undefined;
      for await (const res of slow.orchestrator.streamDelegateTask({ organizationId: org, category: "quick", prompt: "Say hello" }, { signal: guard(30_000) })) {
        if (res.event.case === "result") result = res.event.value;
      }
      assert.ok(Date.now() - started > 500, "the stream outlived the unary default deadline");
      assert.equal(TaskStatus[result!.status], "SUCCESS", result!.error);
    });
  });

  it("WatchActivities: caught_up, then the task's activity RUNNING and COMPLETED", async () => {
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(new Error("WatchActivities: no COMPLETED for the task within 60 s")), 60_000);
    const seen: WatchActivitiesResponse[] = [];
    const stream = acme.activity.watchActivities({ backlog: 0 }, { signal: abort.signal })[Symbol.asyncIterator]();
    try {
      const first = await stream.next();
      assert.equal(first.done, false);
      assert.equal(first.value.caughtUp, true, "backlog 0: caught_up comes first");
      assert.equal(first.value.activity, undefined);
      assert.ok(first.value.cursor !== "");

      // Read while the task runs, so that the watch never waits on this
      // test to drain it.
      let wake = (): void => {};
      let readError: unknown;
      const reading = (async () => {
        try {
          for (;;) {
            const next = await stream.next();
            if (next.done) throw new Error("the stream ended by itself");
            seen.push(next.value);
            wake();
          }
        } catch (err) {
          readError ??= err;
          wake();
        }
      })();
      const res = await acme.orchestrator.delegateTask({ category: "quick", prompt: "Say hello" });
      const id = res.metadata?.activityId;
      assert.ok(id, "the task has an activity");
      const completed = () => seen.some((m) => m.activity?.id === id && m.activity.status === ActivityStatus.COMPLETED);
      while (!completed()) {
        if (readError !== undefined) throw readError;
        await new Promise<void>((resolve) => (wake = resolve));
      }
      abort.abort();
      await reading;
      const mine = seen.filter((m) => m.activity?.id === id);
      const statuses = mine.map((m) => ActivityStatus[m.activity!.status]);
      assert.equal(statuses[0], "RUNNING", `the first change of the activity is its start: ${statuses.join(", ")}`);
      assert.ok(statuses.indexOf("COMPLETED") > 0, `RUNNING, then COMPLETED: ${statuses.join(", ")}`);
      assert.ok(mine.every((m) => m.cursor !== "" && !m.caughtUp));
    } finally {
      clearTimeout(timeout);
      abort.abort();
    }
  });

  it("examples/delegate.ts runs against the stack", async () => {
    const here = path.dirname(fileURLToPath(import.meta.url));
    const example = path.join(here, "..", "examples", "delegate.js");
    const { stdout } = await promisify(execFile)(process.execPath, [example], {
      env: {
        PATH: process.env["PATH"],
        SWITCHYARD_ORCHESTRATOR: stack.urls.orchestrator,
        SWITCHYARD_ACCOUNTPOOL: stack.urls.accountPool,
        SWITCHYARD_ACTIVITY: stack.urls.activity,
        SWITCHYARD_ORG: "example",
        TOKEN: stack.adminToken,
      },
      timeout: 60_000,
    });
    assert.match(stdout, /^status: SUCCESS$/m);
    assert.match(stdout, /^answer: .+$/m);
    assert.match(stdout, /^attempt 1 on rate-limited: RATE_LIMITED \(HTTP 429\)$/m);
    assert.match(stdout, /^attempt 2 on primary: SUCCESS \(HTTP 200\)$/m);
    assert.match(stdout, /^tokens: \d+ in, \d+ out$/m);
    assert.match(stdout, /^json: \{.*"status":"TASK_STATUS_SUCCESS".*\}$/m);
    assert.match(stdout, /^error: InvalidArgument: /m);
    assert.match(stdout, /^ {2}field category: /m);
    assert.doesNotMatch(stdout, /sy_/, "the example prints no token");
  });
});

