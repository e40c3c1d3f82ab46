// The JSON and error-detail helpers, on messages built here (no server).

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { create, fromJson, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import {
  AttemptOutcome,
  BadRequestSchema,
  Code,
  ConnectError,
  DelegateTaskResponseSchema,
  RetryInfoSchema,
  StatusSchema,
  TaskStatus,
  bigintReplacer,
  errorDetails,
  toPlainJson,
} from "@switchyard-dev/client";

const response = create(DelegateTaskResponseSchema, {
  status: TaskStatus.SUCCESS,
  output: "Hello!",
  metadata: {
    model: "claude-haiku",
    // Above Number.MAX_SAFE_INTEGER: a number would lose the last digits.
    inputTokens: 9007199254740993n,
    outputTokens: 12n,
    attempts: 2,
    attemptDetails: [
      { number: 1, accountName: "rate-limited", outcomeCode: AttemptOutcome.RATE_LIMITED, httpStatus: 429 },
      { number: 2, accountName: "primary", outcomeCode: AttemptOutcome.SUCCESS, httpStatus: 200 },
    ],
  },
});

describe("toPlainJson", () => {
  it("writes int64 as exact decimal strings and enums by name", () => {
    const json = JSON.parse(JSON.stringify(toPlainJson(DelegateTaskResponseSchema, response)));
    assert.equal(json.status, "TASK_STATUS_SUCCESS");
    assert.equal(json.metadata.inputTokens, "9007199254740993");
    assert.equal(json.metadata.outputTokens, "12");
    assert.equal(json.metadata.attempts, 2);
    assert.deepEqual(
      json.metadata.attemptDetails.map((a: { outcomeCode: string }) => a.outcomeCode),
      ["ATTEMPT_OUTCOME_RATE_LIMITED", "ATTEMPT_OUTCOME_SUCCESS"],
    );
    assert.equal("$typeName" in json, false);
  });

  it("round-trips through fromJson without losing precision", () => {
    const json = toPlainJson(DelegateTaskResponseSchema, response);
    const back = fromJson(DelegateTaskResponseSchema, JSON.parse(JSON.stringify(json)));
    assert.equal(back.metadata?.inputTokens, 9007199254740993n);
    assert.equal(back.metadata?.attemptDetails[0]?.outcomeCode, AttemptOutcome.RATE_LIMITED);
  });

  it("leaves defaults out unless asked", () => {
    const empty = create(DelegateTaskResponseSchema, { metadata: {} });
    assert.deepEqual(toPlainJson(DelegateTaskResponseSchema, empty), { metadata: {} });
    const full = toPlainJson(DelegateTaskResponseSchema, empty, { alwaysEmitImplicit: true }) as {
      status: string;
      metadata: { inputTokens: string };
    };
    assert.equal(full.status, "TASK_STATUS_UNSPECIFIED");
    assert.equal(full.metadata.inputTokens, "0");
  });

  it("writes google.rpc.Status details (Any) with the package's registry", () => {
    const st = create(StatusSchema, {
      code: Code.InvalidArgument,
      message: "bad",
      details: [anyPack(BadRequestSchema, create(BadRequestSchema, { fieldViolations: [{ field: "prompt", description: "is required" }] }))],
    });
    assert.deepEqual(toPlainJson(StatusSchema, st), {
      code: 3,
      message: "bad",
      details: [
        {
          "@type": "type.googleapis.com/google.rpc.BadRequest",
          fieldViolations: [{ field: "prompt", description: "is required" }],
        },
      ],
    });
  });
});

describe("bigintReplacer", () => {
  it("is what JSON.stringify needs for a message with int64 fields", () => {
    assert.throws(() => JSON.stringify(response), TypeError);
    const json = JSON.parse(JSON.stringify(response, bigintReplacer));
    assert.equal(json.metadata.inputTokens, "9007199254740993");
    // In-memory shape: enum numbers and $typeName stay.
    assert.equal(json.status, TaskStatus.SUCCESS);
    assert.equal(json.$typeName, "switchyard.orchestrator.v1.DelegateTaskResponse");
  });
});

describe("errorDetails", () => {
  it("decodes details carried on the wire", () => {
    // As the gRPC transport hands them over: type name and binary value.
    const err = new ConnectError("prompt: is required", Code.InvalidArgument);
    err.details = [
      {
        type: "google.rpc.BadRequest",
        value: toBinary(BadRequestSchema, create(BadRequestSchema, { fieldViolations: [{ field: "prompt", description: "is required" }] })),
      },
      { type: "google.rpc.RetryInfo", value: toBinary(RetryInfoSchema, create(RetryInfoSchema, { retryDelay: { seconds: 30n } })) },
    ];
    const d = errorDetails(err);
    assert.equal(d.badRequest?.fieldViolations[0]?.field, "prompt");
    assert.equal(d.badRequest?.fieldViolations[0]?.description, "is required");
    assert.equal(d.retryInfo?.retryDelay?.seconds, 30n);
    assert.equal(d.errorInfo, undefined);
  });

  it("is empty for anything else", () => {
    assert.deepEqual(errorDetails(new Error("x")), {});
    assert.deepEqual(errorDetails(new ConnectError("x", Code.Internal)), {});
    assert.deepEqual(errorDetails(undefined), {});
  });
});
