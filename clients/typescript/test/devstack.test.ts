// startDevStack's failure paths, with stand-in binaries (fast, no Go).

import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";

import { DevStackError, startDevStack } from "@switchyard-dev/client/testing";

function script(body: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), "devstack-test-"));
  const file = path.join(dir, "switchyard");
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

describe("startDevStack", () => {
  it("fails at once, with the log, when the process exits early", async () => {
    const bin = script(`echo "flag provided but not defined: -ready-file sy_${"x".repeat(43)}" >&2\nexit 2`);
    const started = Date.now();
    await assert.rejects(startDevStack({ bin, readyTimeoutMs: 30_000 }), (err: unknown) => {
      assert.ok(err instanceof DevStackError);
      assert.match(err.message, /exited early \(exit code 2\)/);
      assert.match(err.message, /flag provided but not defined/);
      assert.ok(err.logFile && err.message.includes(err.logFile));
      assert.doesNotMatch(err.message, /sy_x{20}/, "token-shaped strings are masked");
      return true;
    });
    assert.ok(Date.now() - started < 10_000, "did not wait for the ready timeout");
  });

  it("fails after readyTimeoutMs without a ready file, and stops the process", async () => {
    const pidFile = path.join(mkdtempSync(path.join(tmpdir(), "devstack-test-")), "pid");
    const bin = script(`echo $$ > ${pidFile}\nexec sleep 60`);
    await assert.rejects(startDevStack({ bin, readyTimeoutMs: 300, stopTimeoutMs: 2_000 }), /no ready file after 300 ms/);
    const { readFileSync } = await import("node:fs");
    const pid = Number(readFileSync(pidFile, "utf8").trim());
    assert.throws(() => process.kill(pid, 0), { code: "ESRCH" }, "the process was stopped");
  });

  it("reports a binary that cannot run", async () => {
    await assert.rejects(startDevStack({ bin: "/nonexistent/switchyard", readyTimeoutMs: 5_000 }), /cannot run \/nonexistent\/switchyard/);
  });

  it("passes the address flags and a ready-file path, and reads the file", async () => {
    // A stand-in that writes the ready file where it is told to.
    const bin = script(`
while [ $# -gt 0 ]; do
  case "$1" in -ready-file) f="$2"; shift;; esac
  shift
done
printf '{"orchestrator":"127.0.0.1:1","accountpool":"127.0.0.1:2","activity":"127.0.0.1:3","simulator":"http://127.0.0.1:4","dashboard":"http://127.0.0.1:5/","admin_token":"sy_admin","acme_token":"sy_acme","sim_control_token":"sy_sim_ctl"}' > "$f.tmp"
mv "$f.tmp" "$f"
exec sleep 60`);
    const stack = await startDevStack({ bin });
    try {
      assert.equal(stack.orchestrator, "127.0.0.1:1");
      assert.equal(stack.urls.accountPool, "http://127.0.0.1:2");
      assert.equal(stack.dashboard, "http://127.0.0.1:5/");
      assert.equal(stack.adminToken, "sy_admin");
      assert.equal(stack.acmeToken, "sy_acme");
      assert.equal(stack.simControlToken, "sy_sim_ctl");
      assert.ok(stack.running());
      // The tokens are not enumerable: logging the object shows none.
      assert.doesNotMatch(JSON.stringify(stack), /sy_/);
    } finally {
      await stack.stop();
    }
    assert.equal(stack.running(), false);
    await stack.stop(); // idempotent
  });
});
