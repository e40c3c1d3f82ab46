// Browser test of the dashboard: a real dev stack (`switchyard dev`: every
// service, the Anthropic simulator and the dashboard), driven through
// headless Chromium and the TypeScript client.
//
// It signs in with the acme token, registers two accounts through the API
// and watches their cards appear without a reload, then runs a task that
// fails over from a rate-limited account to the other and checks that the
// page shows the failover and the cool-down live. It ends with a full-page
// screenshot in artifacts/dashboard.png.
//
// Needs: Chromium at /usr/bin/chromium (or CHROMIUM_PATH), Go, and the
// TypeScript client built (cd clients/typescript && npm ci && npm run build).
// Run: cd e2e/browser && npm ci && npm test

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { startDevStack } from '../../clients/typescript/dist/testing/devstack.js';
import { createClients, SelectionStrategy, TaskStatus } from '../../clients/typescript/dist/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const artifacts = path.join(here, 'artifacts');

const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// Generous for a 2-core CI machine; each wait ends as soon as the page shows it.
const UI_TIMEOUT_MS = 20_000;

// The first run builds ./cmd/switchyard (startDevStack allows that ten minutes on a cold cache).
test('the dashboard shows accounts, a failover and a cool-down live', { timeout: 900_000 }, async (t) => {
  const stack = await startDevStack();
  t.after(() => stack.stop());
  const pageErrors = [];
  let page;
  try {
    assert.ok(stack.dashboard, 'switchyard dev serves no dashboard (no -dashboard-addr?)');
    const browser = await chromium.launch({
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      args: CHROMIUM_ARGS,
    });
    t.after(() => browser.close());
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
    page = await context.newPage();
    page.setDefaultTimeout(UI_TIMEOUT_MS);
    // Anything the page logs as an error (a CSP violation, an exception, a
    // failed request) fails the test.
    page.on('pageerror', (err) => pageErrors.push(`exception: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') pageErrors.push(`console: ${msg.text()}`);
    });

    await run({ stack, page });
    assert.deepEqual(pageErrors, [], 'the page logged errors');
  } catch (err) {
    console.error(`dev stack log: ${stack.logFile}`);
    if (pageErrors.length > 0) console.error(`page errors:\n  ${pageErrors.join('\n  ')}`);
    if (page) await saveScreenshot(page, 'failure.png').catch(() => {});
    throw err;
  }
});

async function run({ stack, page }) {
  const clients = createClients({ ...stack.urls, token: stack.acmeToken });

  // 1. Sign in with the organization token.
  await page.goto(stack.dashboard);
  await page.locator('#signin-token').fill(stack.acmeToken);
  await page.locator('#signin-submit').click();
  await page.locator('#dashboard').waitFor({ state: 'visible' });
  await page.locator('#connection[data-connection-state="live"]').waitFor();
  assert.equal(await page.locator('#org-name').textContent(), 'acme');
  // Set once: a reload would lose it.
  await page.evaluate(() => { window.switchyardTestMarker = 'no reload'; });

  // 2. Register the accounts through the API: A answers every call with
  //    429 (retry-after 30 s), B is a healthy tier-4 key. With priority
  //    selection A goes first and B only as failover.
  await clients.accountPool.registerAccount({ name: 'A', apiKey: 'sk-ant-sim-429-a', tier: 'tier4', priority: 0 });
  await clients.accountPool.registerAccount({ name: 'B', apiKey: 'sk-ant-sim-tier4-b', tier: 'tier4', priority: 1 });
  await clients.accountPool.updateOrganizationSettings({ selectionStrategy: SelectionStrategy.PRIORITY });

  const cardA = page.locator('[data-account-name="A"]');
  const cardB = page.locator('[data-account-name="B"]');
  await cardA.waitFor();
  await cardB.waitFor();
  assert.equal(await cardA.getAttribute('data-status'), 'ACTIVE');
  assert.equal(await cardA.getAttribute('data-breaker-state'), 'CLOSED');
  assert.ok(await cardB.locator('[data-gauge="requests"]').count() > 0, "B's card has no capacity gauges");
  assert.equal(await cardA.locator('[data-cooldown]').count(), 0, 'A cools down before it was used');

  // 3. A task: rate limited on A, then a success on B.
  const response = await clients.orchestrator.delegateTask({ category: 'quick', prompt: 'Say hello' });
  assert.equal(response.status, TaskStatus.SUCCESS, `the task did not succeed: ${response.error}`);
  const attempts = response.metadata?.attemptDetails ?? [];
  assert.deepEqual(attempts.map((a) => [a.outcome, a.accountName]), [['rate_limited', 'A'], ['success', 'B']]);
  const activityId = response.metadata?.activityId;
  assert.ok(activityId, 'the task has no activity');

  // The finished task appears with both attempts, without a reload.
  const task = page.locator(`[data-list="finished"] [data-activity-id="${activityId}"]`);
  await task.waitFor();
  await page.locator(`[data-list="finished"] [data-activity-id="${activityId}"][data-outcome="success"]`).waitFor();
  const steps = task.locator('.attempt-chain [data-attempt-outcome]');
  assert.equal(await steps.count(), 2);
  assert.equal(await steps.nth(0).getAttribute('data-attempt-outcome'), 'rate_limited');
  assert.equal(await steps.nth(0).getAttribute('data-attempt-account'), 'A');
  assert.equal(await steps.nth(1).getAttribute('data-attempt-outcome'), 'success');
  assert.equal(await steps.nth(1).getAttribute('data-attempt-account'), 'B');
  const chain = (await task.locator('.attempt-chain').innerText()).replace(/\s+/g, ' ');
  assert.match(chain, /2 attempts: rate limited on A → success on B/);

  // Its detail: both attempts, and why each selection chose what it did.
  await task.locator('summary').click();
  const rows = task.locator('table.attempts tbody tr');
  await rows.nth(1).waitFor();
  assert.equal(await rows.count(), 2);
  assert.match(await rows.nth(0).innerText(), /\bA\b[\s\S]*rate limited[\s\S]*429/i);
  assert.match(await rows.nth(1).innerText(), /\bB\b[\s\S]*success[\s\S]*200/i);
  const selections = task.locator('.selections > li');
  assert.equal(await selections.count(), 2, 'one selection per attempt');
  assert.match(await selections.nth(0).innerText(), /chose A/);
  assert.match(await selections.nth(1).innerText(), /chose B/);

  // A's card counts its cool-down down, on the client.
  const cooldown = cardA.locator('[data-cooldown]');
  await cooldown.waitFor();
  assert.match(await cooldown.innerText(), /cooling down \d+:\d{2}/);
  const before = Number(await cooldown.getAttribute('data-cooldown'));
  assert.ok(before > 0 && before <= 31, `A's cool-down is ${before} s; the simulator's retry-after is 30 s`);
  await page.waitForFunction(
    (start) => Number(document.querySelector('[data-account-name="A"] [data-cooldown]')?.getAttribute('data-cooldown')) < start,
    before,
  );
  assert.equal(await cardB.locator('[data-cooldown]').count(), 0, 'B should not cool down');

  // 4. A second task goes straight to B while A cools down: its selection
  //    says why A was skipped.
  const second = await clients.orchestrator.delegateTask({ category: 'quick', prompt: 'Say hello again' });
  assert.equal(second.status, TaskStatus.SUCCESS, `the second task did not succeed: ${second.error}`);
  const secondTask = page.locator(`[data-list="finished"] [data-activity-id="${second.metadata?.activityId}"]`);
  await secondTask.waitFor();
  assert.equal(await secondTask.getAttribute('data-attempts'), '1');
  await secondTask.locator('summary').click();
  assert.match(await secondTask.locator('.selections').innerText(), /skipped A: cooling down/);
  await secondTask.locator('summary').click(); // closed again, for the screenshot

  // 5. Usage: the successful calls reach the per-minute charts (refreshed
  //    when a task finishes).
  await page.locator('#chart-tokens .chart-bar').first().waitFor();
  await page.locator('#chart-cost .chart-bar').first().waitFor();

  assert.equal(await page.evaluate(() => window.switchyardTestMarker), 'no reload', 'the page reloaded');
  assert.equal(await page.locator('#connection').getAttribute('data-connection-state'), 'live');

  await saveScreenshot(page, 'dashboard.png');
}

async function saveScreenshot(page, name) {
  mkdirSync(artifacts, { recursive: true });
  await page.evaluate(() => window.scrollTo(0, 0));
  // Let gauge and chart transitions settle.
  await page.waitForTimeout(600);
  const file = path.join(artifacts, name);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${path.relative(process.cwd(), file)}`);
}
