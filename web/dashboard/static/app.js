// Switchyard dashboard: signs in with a bearer token, then keeps two
// streams open (WatchAccounts, WatchActivities) and refreshes usage from
// GetUsage, so everything on the page stays live without a reload.

import { Api, ApiError, Watch, isAuthError } from './api.js';
import { AccountsView } from './accounts.js';
import { TasksView } from './tasks.js';
import { UsageView, fetchUsage } from './usage.js';
import { setText, setAttr, timeMs, enumName, formatClock, formatCompact, formatUSD, formatInteger, formatCountdown } from './dom.js';

const SESSION_KEY = 'switchyard.dashboard.session';
const ACTIVITY_BACKLOG = 50;
const ACCOUNTS_MIN_INTERVAL = '0.5s';
const USAGE_REFRESH_MS = 60_000;
const USAGE_DEBOUNCE_MS = 1_500;
const USAGE_RETRY_MS = 10_000;
const CLOCK_SAMPLES = 20;

const $ = (id) => document.getElementById(id);

// ---- session ------------------------------------------------------------------

function loadSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? 'null');
    return session?.token ? session : null;
  } catch {
    return null;
  }
}

function saveSession(session) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

// ---- sign-in ------------------------------------------------------------------

let dashboard = null;

function showSignIn(message = '') {
  dashboard?.stop();
  dashboard = null;
  $('dashboard').hidden = true;
  $('signin').hidden = false;
  const error = $('signin-error');
  error.textContent = message;
  error.hidden = !message;
  $('signin-submit').disabled = false;
  const session = loadSession();
  if (session) $('signin-organization').value = session.organizationId ?? '';
  $('signin-token').focus();
}

async function onSignIn(event) {
  event.preventDefault();
  const token = $('signin-token').value.trim();
  const organizationId = $('signin-organization').value.trim();
  if (!token) {
    showSignIn('Enter a token.');
    return;
  }
  $('signin-submit').disabled = true;
  setText($('signin-submit'), 'Signing in…');
  try {
    await openDashboard({ token, organizationId }, { verify: true });
  } finally {
    $('signin-submit').disabled = false;
    setText($('signin-submit'), 'Sign in');
  }
}

/**
 * Checks the session with a cheap call and opens the dashboard. A token the
 * services refuse goes back to the sign-in form; a service that is merely
 * unreachable still opens the dashboard, whose streams keep retrying.
 */
async function openDashboard(session, { verify }) {
  const api = new Api(session);
  let settings = null;
  try {
    settings = (await api.call('accountpool', 'GetOrganizationSettings', {})).settings ?? {};
  } catch (err) {
    const refused = isAuthError(err) || (err instanceof ApiError && err.code === 'invalid_argument');
    if (refused || verify) {
      if (!verify) clearSession();
      showSignIn(signInMessage(err, session));
      return;
    }
  }
  saveSession(session);
  $('signin-token').value = '';
  $('signin').hidden = true;
  $('dashboard').hidden = false;
  dashboard = new Dashboard(api, session, settings);
  dashboard.start();
}

function signInMessage(err, session) {
  if (!(err instanceof ApiError)) return `Sign-in failed: ${err?.message ?? err}`;
  switch (err.code) {
    case 'unauthenticated': return `The token was not accepted: ${err.message}`;
    case 'permission_denied': return `This token may not read that organization: ${err.message}`;
    case 'invalid_argument':
      return session.organizationId ? `Refused: ${err.message}` : `${err.message} (an admin token needs an organization)`;
    default: return `Sign-in failed (${err.code}): ${err.message}`;
  }
}

function showNotice(id, text) {
  const notice = $(id);
  if (notice.textContent !== text) notice.textContent = text;
  notice.hidden = !text;
}

// ---- the dashboard --------------------------------------------------------------

class Dashboard {
  constructor(api, session, settings) {
    this.api = api;
    this.session = session;
    this.serverOffset = 0; // server clock − client clock, from WatchAccounts' observe_time
    this.now = () => Date.now() + this.serverOffset;
    this.timers = [];
    this.cursor = '';
    this.caughtUp = false;
    this.streams = { accounts: { state: 'connecting' }, activity: { state: 'connecting' } };

    this.accounts = new AccountsView($('accounts'), this.now);
    this.tasks = new TasksView({
      running: $('tasks-running'),
      finished: $('tasks-finished'),
      now: this.now,
      onFinished: () => this.scheduleUsageRefresh(),
    });
    this.usage = new UsageView({
      tokensChart: $('chart-tokens'),
      costChart: $('chart-cost'),
      totals: $('usage-totals'),
      byAccount: $('usage-by-account'),
      status: $('usage-status'),
    });
    this.showSettings(settings);
  }

  start() {
    this.accountsWatch = new Watch({
      api: this.api, service: 'accountpool', method: 'WatchAccounts',
      request: () => ({ minInterval: ACCOUNTS_MIN_INTERVAL }),
      onMessage: (message) => this.onAccounts(message),
      onState: (state, detail) => this.onStreamState('accounts', state, detail),
      onError: (err) => this.onStreamError(err, 'accounts-notice'),
    }).start();
    this.activityWatch = new Watch({
      api: this.api, service: 'activity', method: 'WatchActivities',
      request: () => this.activityRequest(),
      onMessage: (message) => this.onActivity(message),
      onState: (state, detail) => this.onStreamState('activity', state, detail),
      onError: (err) => this.onActivityError(err),
    }).start();
    this.refreshUsage();
    this.timers.push(setInterval(() => this.refreshUsage(), USAGE_REFRESH_MS));
    this.timers.push(setInterval(() => this.tick(), 1000));
    this.tick();
  }

  stop() {
    this.accountsWatch?.stop();
    this.activityWatch?.stop();
    this.usageAbort?.abort();
    for (const timer of this.timers) clearInterval(timer);
    clearTimeout(this.usageDebounce);
    this.timers = [];
  }

  // -- accounts

  onAccounts(message) {
    showNotice('accounts-notice', '');
    const observed = timeMs(message.observeTime);
    if (observed !== null) this.estimateServerClock(observed);
    this.accounts.update(message.accounts ?? [], message.omittedAccounts ?? 0);
    setText($('accounts-updated'), `live · updated ${formatClock(observed ?? Date.now())}`);
    this.updateSummary();
  }

  /**
   * Countdowns run on the server's clock: cool-downs and breaker times are
   * its timestamps. Each observe_time, read just before the message was
   * sent, gives the offset minus the message's delay, so the largest offset
   * of the recent messages is the best estimate.
   */
  estimateServerClock(observed) {
    this.offsetSamples = [...(this.offsetSamples ?? []), observed - Date.now()].slice(-CLOCK_SAMPLES);
    this.serverOffset = Math.max(...this.offsetSamples);
  }

  // -- activities

  /** The first watch asks for a backlog; a reconnect resumes after the last cursor. */
  activityRequest() {
    this.caughtUp = false;
    return this.cursor
      ? { cursor: this.cursor, view: 'ACTIVITY_VIEW_FULL' }
      : { backlog: ACTIVITY_BACKLOG, view: 'ACTIVITY_VIEW_FULL' };
  }

  onActivity(message) {
    showNotice('tasks-notice', '');
    if (message.caughtUp) {
      this.caughtUp = true;
      // Whatever finished while we were away is in the usage now.
      this.scheduleUsageRefresh();
    } else if (message.activity) {
      this.tasks.apply(message.activity, message.latestProgress, this.caughtUp);
    }
    if (message.cursor) this.cursor = message.cursor;
    this.updateSummary();
  }

  onActivityError(err) {
    // A cursor the service no longer knows (it restarted on an empty
    // store, say): start over from a backlog.
    if (err instanceof ApiError && err.code === 'invalid_argument' && this.cursor) {
      this.cursor = '';
      this.tasks.clear();
      return;
    }
    this.onStreamError(err, 'tasks-notice');
  }

  /**
   * A rejected token signs out. A token that may not make one call
   * (permission_denied) keeps the rest of the page and says what is missing.
   */
  onStreamError(err, noticeId) {
    if (err instanceof ApiError && err.code === 'unauthenticated') {
      clearSession();
      showSignIn(`Signed out: ${err.message}`);
    } else if (err instanceof ApiError && err.code === 'permission_denied' && noticeId) {
      showNotice(noticeId, `This token may not watch this: ${err.message}`);
    }
  }

  // -- connection indicator

  onStreamState(name, state, detail) {
    this.streams[name] = { state, ...detail };
    this.renderConnection();
  }

  renderConnection() {
    const streams = Object.entries(this.streams);
    const states = streams.map(([, s]) => s.state);
    let state;
    let text;
    if (states.every((s) => s === 'live')) {
      state = 'live';
      text = 'Live';
    } else if (states.includes('failed')) {
      state = 'failed';
      text = 'Disconnected';
    } else if (states.includes('reconnecting')) {
      state = 'reconnecting';
      const retryAt = Math.max(0, ...streams.map(([, s]) => s.retryAt ?? 0));
      const wait = retryAt - Date.now();
      text = wait > 500 ? `Reconnecting in ${formatCountdown(wait)}` : 'Reconnecting…';
    } else {
      state = 'connecting';
      text = 'Connecting…';
    }
    const pill = $('connection');
    setAttr(pill, 'data-connection-state', state);
    for (const [name, s] of streams) setAttr(pill, `data-${name}-stream`, s.state);
    setText($('connection-text'), text);
    setAttr(pill, 'title', streams.map(([name, s]) =>
      `${name} stream: ${s.state}${s.error ? ` (${s.error.code}: ${s.error.message})` : ''}`).join('\n'));
  }

  // -- usage

  scheduleUsageRefresh(delay = USAGE_DEBOUNCE_MS) {
    clearTimeout(this.usageDebounce);
    this.usageDebounce = setTimeout(() => this.refreshUsage(), delay);
  }

  async refreshUsage() {
    if (this.usageLoading) {
      this.usagePending = true;
      return;
    }
    this.usageLoading = true;
    this.usageAbort = new AbortController();
    try {
      const [usage, settings] = await Promise.all([
        fetchUsage(this.api, this.now(), { signal: this.usageAbort.signal }),
        this.api.call('accountpool', 'GetOrganizationSettings', {}, { signal: this.usageAbort.signal }).catch(() => null),
      ]);
      this.usage.render(usage);
      if (settings) this.showSettings(settings.settings ?? {});
      setText($('usage-updated'), `updated ${formatClock(Date.now())}`);
    } catch (err) {
      if (err?.name === 'AbortError') return;
      if (err instanceof ApiError && err.code === 'unauthenticated') {
        this.onStreamError(err);
        return;
      }
      const denied = err instanceof ApiError && err.code === 'permission_denied';
      this.usage.setStatus(`Usage could not be loaded (${err.code ?? 'error'}): ${err.message}${denied ? '' : '. Retrying.'}`, true);
      if (!denied) this.scheduleUsageRefresh(USAGE_RETRY_MS);
    } finally {
      this.usageLoading = false;
      this.updateSummary();
      if (this.usagePending) {
        this.usagePending = false;
        this.scheduleUsageRefresh();
      }
    }
  }

  showSettings(settings) {
    settings ??= {};
    const organization = settings.organizationId || this.session.organizationId || 'your organization';
    setText($('org-name'), organization);
    const strategy = enumName(settings.selectionStrategy, 'SELECTION_STRATEGY_', '');
    const chip = $('org-strategy');
    chip.hidden = !strategy;
    setText(chip, strategy ? `${strategy.toLowerCase().replaceAll('_', ' ')} selection` : '');
  }

  // -- every second

  tick() {
    this.accounts.tick();
    this.tasks.tick();
    this.renderConnection();
    this.updateSummary();
  }

  updateSummary() {
    const accounts = this.accounts.summary();
    const tasks = this.tasks.summary();
    const usage = this.usage.summary();
    if (accounts.received) {
      setText($('kpi-accounts'), `${accounts.active}`);
      setText($('kpi-accounts-note'), `of ${accounts.total} registered${accounts.openBreakers ? ` · ${accounts.openBreakers} breaker${accounts.openBreakers === 1 ? '' : 's'} not closed` : ''}`);
      setText($('kpi-cooling'), `${accounts.cooling}`);
      setText($('kpi-cooling-note'), accounts.cooling ? 'waiting out a 429' : 'no account is rate limited');
      setAttr(document.querySelector('[data-kpi="cooling"]'), 'data-alert', accounts.cooling > 0);
    }
    setText($('kpi-running'), `${tasks.running}`);
    setText($('kpi-running-note'), this.caughtUp ? 'live from the activity stream' : 'catching up…');
    setText($('kpi-finished'), `${tasks.finishedLastHour}`);
    setText($('kpi-finished-note'), `${tasks.failedLastHour} not successful · ${tasks.failoversLastHour} failed over`);
    setText($('running-count'), tasks.running ? `${tasks.running}` : '');
    setText($('finished-count'), $('tasks-finished').dataset.count && $('tasks-finished').dataset.count !== '0' ? $('tasks-finished').dataset.count : '');
    if (usage.loaded) {
      setText($('kpi-tokens'), formatCompact(usage.tokens));
      setText($('kpi-tokens-note'), `${formatInteger(usage.requests)} model call${usage.requests === 1 ? '' : 's'} recorded`);
      setText($('kpi-cost'), formatUSD(usage.costUsd));
      setText($('kpi-cost-note'), 'from the usage ledger');
    }
  }
}

// ---- start -----------------------------------------------------------------------

function main() {
  $('signin-form').addEventListener('submit', onSignIn);
  $('signout').addEventListener('click', () => {
    clearSession();
    showSignIn();
  });
  const session = loadSession();
  if (session) openDashboard(session, { verify: false });
  else showSignIn();
}

main();
