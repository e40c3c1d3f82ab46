// startDevStack runs `switchyard dev` (every service, the Anthropic
// simulator and the dashboard in one process, on ports the system picks)
// for tests: in this package's tests and in other packages' tests that
// import "@switchyard-dev/client/testing" (or dist/testing/devstack.js).
//
// The API below is relied on by other tests: keep it stable.

import { execFile, spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The JSON that `switchyard dev -ready-file` writes once every server listens. */
export interface ReadyFile {
  /** host:port of the OrchestratorService (gRPC). */
  orchestrator: string;
  /** host:port of the AccountPoolService (gRPC). */
  accountpool: string;
  /** host:port of the ActivityService (gRPC). */
  activity: string;
  /** Base URL of the Anthropic simulator, e.g. http://127.0.0.1:PORT. */
  simulator: string;
  /** URL of the dashboard, e.g. http://127.0.0.1:PORT/; absent when none is served. */
  dashboard?: string;
  /** Admin token of this run; absent when the operator configured tokens. */
  admin_token?: string;
  /** Token of organization "acme" for this run; absent when the operator configured tokens. */
  acme_token?: string;
  /** Bearer token of the simulator's /sim/ control endpoints (generated or configured). */
  sim_control_token?: string;
}

export interface DevStackOptions {
  /**
   * The switchyard binary. Default: env SWITCHYARD_BIN, else one
   * `go build ./cmd/switchyard` per process (cached by Go's build cache).
   */
  bin?: string;
  /** The repository root (where go.mod is). Default: found upwards from this file. */
  repoRoot?: string;
  /** How long to wait for the ready file once the process started. Default 60 000. */
  readyTimeoutMs?: number;
  /** How long `go build` may take. Default 600 000 (a first build downloads and compiles everything). */
  buildTimeoutMs?: number;
  /** How long stop() waits after SIGTERM before SIGKILL. Default 15 000. */
  stopTimeoutMs?: number;
  /** More flags for `switchyard dev`, after the address flags (a later flag wins). */
  args?: string[];
  /** Environment variables added to (or, when undefined, removed from) the process's environment. */
  env?: Record<string, string | undefined>;
}

export interface DevStack {
  /** host:port of the OrchestratorService. */
  readonly orchestrator: string;
  /** host:port of the AccountPoolService. */
  readonly accountpool: string;
  /** host:port of the ActivityService. */
  readonly activity: string;
  /** Base URL of the Anthropic simulator. */
  readonly simulator: string;
  /** URL of the dashboard (ends with /); undefined when none is served. */
  readonly dashboard: string | undefined;
  /** Base URLs for createClients(): http://host:port of each gRPC service. */
  readonly urls: { readonly orchestrator: string; readonly accountPool: string; readonly activity: string };
  /** The admin token of this run (acts for any organization it names). Not enumerable: never logged with the object. */
  readonly adminToken: string;
  /** The token of organization "acme" for this run. Not enumerable: never logged with the object. */
  readonly acmeToken: string;
  /**
   * The bearer token of the simulator's control endpoints (/sim/faults, /sim/stats):
   * send it as "Authorization: Bearer <token>". Not enumerable: never logged with the object.
   */
  readonly simControlToken: string;
  /** The process's stderr (its logs; no tokens): print this path when a test fails. */
  readonly logFile: string;
  readonly pid: number;
  /** SIGTERM, wait for the exit, SIGKILL after stopTimeoutMs. Idempotent. */
  stop(): Promise<void>;
  /** Whether the process is still running. */
  running(): boolean;
}

/** An error of startDevStack: the message names the log file and ends with its last lines. */
export class DevStackError extends Error {
  constructor(
    message: string,
    readonly logFile?: string,
  ) {
    super(message);
    this.name = "DevStackError";
  }
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

// A test runner that exits without calling stop() must not leave a dev
// stack behind.
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const child of running) child.kill("SIGKILL");
    for (const dir of buildDirs) rmSync(dir, { recursive: true, force: true });
  });
}

/** Starts `switchyard dev` on free ports and resolves once it is ready. */
export async function startDevStack(opts: DevStackOptions = {}): Promise<DevStack> {
  installExitHook();
  const repoRoot = opts.repoRoot ?? findRepoRoot();
  const bin = opts.bin ?? process.env["SWITCHYARD_BIN"] ?? (await buildBinary(repoRoot, opts.buildTimeoutMs ?? 600_000));
  const readyTimeoutMs = opts.readyTimeoutMs ?? 60_000;
  const stopTimeoutMs = opts.stopTimeoutMs ?? 15_000;

  const dir = mkdtempSync(path.join(tmpdir(), "switchyard-dev-"));
  const readyFile = path.join(dir, "ready.json");
  const logFile = path.join(dir, "dev.log");
  const args = [
    "dev",
    "-orchestrator-addr", "127.0.0.1:0",
    "-accountpool-addr", "127.0.0.1:0",
    "-activity-addr", "127.0.0.1:0",
    "-sim-addr", "127.0.0.1:0",
    "-dashboard-addr", "127.0.0.1:0",
    "-ready-file", readyFile,
    ...(opts.args ?? []),
  ];
  const env: NodeJS.ProcessEnv = { ...process.env };
  // A real key would only be the legacy-mode fallback, sent to the
  // simulator; a test has no use for it.
  delete env["ANTHROPIC_API_KEY"];
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }

  const logFd = openSync(logFile, "a");
  let child: ChildProcess;
  try {
    // stdout is the walkthrough, which prints the tokens: not kept.
    child = spawn(bin, args, { cwd: repoRoot, env, stdio: ["ignore", "ignore", logFd] });
  } finally {
    closeSync(logFd);
  }
  running.add(child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.once("error", (error) => resolve({ code: null, signal: null, error }));
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null; error?: Error } | undefined;
  void exited.then((info) => {
    exitInfo = info;
    running.delete(child);
  });

  const stop = async (): Promise<void> => {
    if (exitInfo === undefined) {
      child.kill("SIGTERM");
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        exited.then(() => false),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(true), stopTimeoutMs);
        }),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        child.kill("SIGKILL");
        await exited;
      }
    }
    // The ready file holds the tokens; the log stays for a post-mortem.
    rmSync(readyFile, { force: true });
  };

  let ready: ReadyFile;
  try {
    ready = await waitForReady(readyFile, readyTimeoutMs, exited, bin);
  } catch (err) {
    await stop();
    const why = err instanceof Error ? err.message : String(err);
    throw new DevStackError(`switchyard dev did not start: ${why}\nlog: ${logFile}\n${logTail(logFile)}`, logFile);
  }

  const stack = {
    orchestrator: ready.orchestrator,
    accountpool: ready.accountpool,
    activity: ready.activity,
    simulator: ready.simulator,
    dashboard: ready.dashboard,
    urls: {
      orchestrator: `http://${ready.orchestrator}`,
      accountPool: `http://${ready.accountpool}`,
      activity: `http://${ready.activity}`,
    },
    logFile,
    pid: child.pid ?? -1,
    stop,
    running: () => exitInfo === undefined,
  };
  Object.defineProperty(stack, "adminToken", { value: ready.admin_token ?? "", enumerable: false });
  Object.defineProperty(stack, "acmeToken", { value: ready.acme_token ?? "", enumerable: false });
  Object.defineProperty(stack, "simControlToken", { value: ready.sim_control_token ?? "", enumerable: false });
  return stack as DevStack;
}

async function waitForReady(
  file: string,
  timeoutMs: number,
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>,
  bin: string,
): Promise<ReadyFile> {
  const deadline = Date.now() + timeoutMs;
  let early: string | undefined;
  void exited.then((info) => {
    early = info.error
      ? `cannot run ${bin}: ${info.error.message}`
      : `the process exited early (${info.signal ? `signal ${info.signal}` : `exit code ${info.code}`})`;
  });
  for (;;) {
    if (early !== undefined) throw new Error(early);
    if (existsSync(file)) {
      // Written atomically (rename), so a file that exists is whole.
      const ready = JSON.parse(await readFile(file, "utf8")) as ReadyFile;
      for (const k of ["orchestrator", "accountpool", "activity", "simulator"] as const) {
        if (typeof ready[k] !== "string" || ready[k] === "") throw new Error(`the ready file has no ${k}`);
      }
      return ready;
    }
    if (Date.now() >= deadline) throw new Error(`no ready file after ${timeoutMs} ms`);
    // Polling a file is the wait here (fs.watch is unreliable across
    // platforms); the exit of the process ends it at once.
    await Promise.race([new Promise((r) => setTimeout(r, 50)), exited]);
  }
}

const builds = new Map<string, Promise<string>>();
const buildDirs: string[] = [];

/** Builds ./cmd/switchyard once per process and repository; resolves to the binary. */
export function buildBinary(repoRoot: string = findRepoRoot(), timeoutMs = 600_000): Promise<string> {
  let p = builds.get(repoRoot);
  if (p === undefined) {
    p = new Promise<string>((resolve, reject) => {
      const dir = mkdtempSync(path.join(tmpdir(), "switchyard-bin-"));
      buildDirs.push(dir);
      const out = path.join(dir, "switchyard");
      execFile(
        "go",
        ["build", "-o", out, "./cmd/switchyard"],
        { cwd: repoRoot, timeout: timeoutMs, maxBuffer: 16 << 20 },
        (err, stdout, stderr) => {
          if (err) {
            reject(new DevStackError(`go build ./cmd/switchyard in ${repoRoot} failed: ${err.message}\n${stdout}${stderr}`));
          } else {
            resolve(out);
          }
        },
      );
    });
    builds.set(repoRoot, p);
    p.catch(() => builds.delete(repoRoot));
  }
  return p;
}

/** The Switchyard repository root: env SWITCHYARD_REPO_ROOT, else the first directory upwards from this file with Switchyard's go.mod. */
export function findRepoRoot(): string {
  const fromEnv = process.env["SWITCHYARD_REPO_ROOT"];
  if (fromEnv) return fromEnv;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const gomod = path.join(dir, "go.mod");
    if (existsSync(gomod) && /^module github\.com\/switchyard-dev\/switchyard\s*$/m.test(readFileSync(gomod, "utf8"))) {
      return dir;
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new DevStackError("cannot find the switchyard repository (go.mod) above " + fileURLToPath(import.meta.url) + "; set SWITCHYARD_REPO_ROOT");
    dir = parent;
  }
}

/** The last lines of the log, with anything shaped like a token masked. */
function logTail(file: string, lines = 30): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return "(no log)";
  }
  return text
    .split("\n")
    .slice(-lines - 1)
    .join("\n")
    .replace(/sy_[A-Za-z0-9_-]{16,}/g, "sy_[redacted]");
}
