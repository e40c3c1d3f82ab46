// Tasks: the activities running now and the last ones finished, from
// WatchActivities, each with its attempts (from the stored
// DelegateTaskResponse in output_data) and the account pool's explanation
// of each selection (metadata.selections, written by the Orchestrator).

import {
  h, setText, setAttr, int, timeMs, enumName, formatDuration, formatAgo, formatUSD,
  formatInteger, formatClock, humanize, truncate, plural,
} from './dom.js';

/** How many finished tasks the page lists. */
export const FINISHED_SHOWN = 20;
/** How many finished activities the page remembers (older ones are dropped). */
const FINISHED_KEPT = 200;

/** The first of the keys present in obj (the stored shapes use camelCase; accept snake_case too). */
function pick(obj, ...keys) {
  if (!obj) return undefined;
  for (const key of keys) if (obj[key] !== undefined && obj[key] !== null) return obj[key];
  return undefined;
}

function number(value) {
  const n = Number(value);
  return Number.isFinite(n) ? n : 0;
}

const OUTCOME_CODES = {
  ATTEMPT_OUTCOME_SUCCESS: 'success',
  ATTEMPT_OUTCOME_RATE_LIMITED: 'rate_limited',
  ATTEMPT_OUTCOME_SPEND_LIMITED: 'spend_limited',
  ATTEMPT_OUTCOME_AUTH_FAILED: 'auth_failed',
  ATTEMPT_OUTCOME_UPSTREAM_ERROR: 'upstream_error',
  ATTEMPT_OUTCOME_CLIENT_ERROR: 'client_error',
  ATTEMPT_OUTCOME_CANCELLED: 'cancelled',
  ATTEMPT_OUTCOME_NOT_SENT: 'not_sent',
};

function attemptOf(raw) {
  const code = pick(raw, 'outcomeCode', 'outcome_code');
  return {
    number: int(raw.number),
    accountId: pick(raw, 'accountId', 'account_id') ?? '',
    accountName: pick(raw, 'accountName', 'account_name') || pick(raw, 'accountId', 'account_id') || '?',
    outcome: (raw.outcome || OUTCOME_CODES[code] || 'unknown').toLowerCase(),
    httpStatus: int(pick(raw, 'httpStatus', 'http_status')),
    error: raw.error ?? '',
    durationMs: int(pick(raw, 'durationMs', 'duration_ms')),
    messageId: pick(raw, 'messageId', 'message_id') ?? '',
    warnings: raw.warnings ?? [],
  };
}

function selectionOf(raw) {
  return {
    strategy: enumName(raw.strategy, 'SELECTION_STRATEGY_', '').toLowerCase().replaceAll('_', ' '),
    account: raw.account ?? '',
    headroom: raw.headroom === undefined ? null : number(raw.headroom),
    skipped: Array.isArray(raw.skipped) ? raw.skipped.map(String) : [],
    omitted: int(raw.skipped_omitted ?? raw.skippedOmitted),
    // Accounts the pool did not explain (a large organization), by reason.
    notExplained: int(raw.not_explained ?? raw.notExplained),
  };
}

/** Everything the page shows of one activity, from its proto3-JSON form. */
export function taskState(activity, latestProgress) {
  const metadata = activity.metadata ?? {};
  const result = activity.outputData ?? {};
  const resultMetadata = result.metadata ?? {};
  const input = activity.inputData ?? {};
  const status = enumName(activity.status, 'ACTIVITY_STATUS_');
  const taskStatus = enumName(result.status ?? metadata.task_status, 'TASK_STATUS_', '');
  const attempts = (pick(resultMetadata, 'attemptDetails', 'attempt_details') ?? []).map(attemptOf);
  return {
    id: activity.id ?? '',
    status,
    running: status === 'RUNNING',
    taskStatus,
    outcome: outcomeLabel(status, taskStatus),
    category: activity.category || '—',
    agent: activity.agentName || activity.agentType || '',
    sessionId: activity.sessionId ?? '',
    userId: activity.userId ?? '',
    startTime: timeMs(activity.startTime),
    completeTime: timeMs(activity.completeTime),
    durationMs: int(activity.durationMs) || int(metadata.duration_ms) || int(pick(resultMetadata, 'durationMs', 'duration_ms')),
    account: metadata.account_name || pick(resultMetadata, 'accountName', 'account_name') || '',
    costUsd: number(metadata.cost_usd ?? pick(resultMetadata, 'costUsd', 'cost_usd')),
    hasCost: metadata.cost_usd !== undefined || pick(resultMetadata, 'costUsd', 'cost_usd') !== undefined || !!result.metadata,
    model: pick(resultMetadata, 'model') || input.model || '',
    inputTokens: int(pick(resultMetadata, 'inputTokens', 'input_tokens')),
    outputTokens: int(pick(resultMetadata, 'outputTokens', 'output_tokens')),
    cacheReadTokens: int(pick(resultMetadata, 'cacheReadTokens', 'cache_read_tokens')),
    cacheCreationTokens: int(pick(resultMetadata, 'cacheCreationTokens', 'cache_creation_tokens')),
    requestId: metadata.request_id || pick(resultMetadata, 'requestId', 'request_id') || '',
    stopReason: pick(resultMetadata, 'stopReason', 'stop_reason') || '',
    legacy: !!(metadata.legacy_mode || pick(resultMetadata, 'legacyMode', 'legacy_mode')),
    replayed: !!pick(resultMetadata, 'replayed'),
    waitedMs: int(metadata.waited_ms),
    bookkeeping: [
      ...(pick(resultMetadata, 'bookkeepingErrors', 'bookkeeping_errors') ?? []).map((e) => `error: ${e}`),
      ...(pick(resultMetadata, 'bookkeepingPending', 'bookkeeping_pending') ?? []).map((e) => `pending: ${e}`),
    ],
    attempts,
    selections: Array.isArray(metadata.selections) ? metadata.selections.map(selectionOf) : [],
    error: activity.errorMessage || result.error || '',
    prompt: typeof input.prompt === 'string' ? input.prompt : '',
    output: typeof result.output === 'string' ? result.output : '',
    progress: latestProgress?.message ?? '',
    progressSequence: int(latestProgress?.sequence),
  };
}

function outcomeLabel(status, taskStatus) {
  if (status === 'RUNNING') return 'running';
  if (status === 'ABANDONED') return 'abandoned';
  if (taskStatus === 'SUCCESS') return 'success';
  if (taskStatus === 'RATE_LIMITED') return 'rate_limited';
  if (status === 'COMPLETED') return 'success';
  return 'failed';
}

export class TasksView {
  /**
   * @param {{running: HTMLElement, finished: HTMLElement, now: () => number,
   *          onFinished: (task) => void}} options
   */
  constructor({ running, finished, now, onFinished }) {
    this.runningList = running;
    this.finishedList = finished;
    this.now = now;
    this.onFinished = onFinished;
    this.tasks = new Map(); // activity id → TaskItem
    this.render();
  }

  /** Forgets every task (a watch that starts over). */
  clear() {
    this.tasks.clear();
    this.render();
  }

  /**
   * Applies one WatchActivities message's activity.
   * @param {boolean} live whether the stream had caught up (a change as it happens)
   */
  apply(activity, latestProgress, live) {
    if (!activity?.id) return;
    const task = taskState(activity, latestProgress);
    let item = this.tasks.get(task.id);
    const wasRunning = item ? item.task.running : null;
    if (!item) {
      item = new TaskItem();
      this.tasks.set(task.id, item);
    }
    item.update(task, this.now());
    if (!task.running && (wasRunning === true || (wasRunning === null && live))) {
      if (live) item.flash();
      this.onFinished?.(task);
    }
    this.prune();
    this.render();
  }

  prune() {
    const finished = [...this.tasks.values()].filter((i) => !i.task.running);
    if (finished.length <= FINISHED_KEPT) return;
    finished.sort(byCompletionDesc);
    for (const item of finished.slice(FINISHED_KEPT)) this.tasks.delete(item.task.id);
  }

  render() {
    const items = [...this.tasks.values()];
    const running = items.filter((i) => i.task.running).sort((a, b) => (b.task.startTime ?? 0) - (a.task.startTime ?? 0));
    const finished = items.filter((i) => !i.task.running).sort(byCompletionDesc).slice(0, FINISHED_SHOWN);
    placeItems(this.runningList, running.map((i) => i.el), 'Nothing is running right now.');
    placeItems(this.finishedList, finished.map((i) => i.el), 'No task has finished yet. Finished tasks appear here as they end.');
  }

  /** Advances elapsed times; called every second. */
  tick() {
    const now = this.now();
    for (const item of this.tasks.values()) if (item.el.isConnected) item.tick(now);
  }

  summary() {
    const items = [...this.tasks.values()].map((i) => i.task);
    const finished = items.filter((t) => !t.running);
    const hourAgo = this.now() - 3_600_000;
    const lastHour = finished.filter((t) => (t.completeTime ?? 0) >= hourAgo);
    return {
      running: items.length - finished.length,
      finishedLastHour: lastHour.length,
      failedLastHour: lastHour.filter((t) => t.outcome !== 'success').length,
      failoversLastHour: lastHour.filter((t) => t.attempts.length > 1).length,
    };
  }
}

function byCompletionDesc(a, b) {
  const ta = a.task.completeTime ?? a.task.startTime ?? 0;
  const tb = b.task.completeTime ?? b.task.startTime ?? 0;
  return tb - ta;
}

function placeItems(list, elements, emptyText) {
  setAttr(list, 'data-count', elements.length);
  if (elements.length === 0) {
    if (list.textContent !== emptyText) list.replaceChildren(h('p', { class: 'empty-state', text: emptyText }));
    return;
  }
  const current = [...list.children];
  if (current.length !== elements.length || current.some((el, i) => el !== elements[i])) {
    list.replaceChildren(...elements);
  }
}

/** One task: a <details> whose summary is the one-line view and whose body explains the run. */
class TaskItem {
  constructor() {
    this.statusBadge = h('span', { class: 'badge badge-outcome' });
    this.category = h('span', { class: 'chip chip-category' });
    this.account = h('span', { class: 'task-account' });
    this.chain = h('div', { class: 'attempt-chain' });
    this.duration = h('span', { class: 'task-duration' });
    this.cost = h('span', { class: 'task-cost' });
    this.costFigure = h('span', { class: 'figure' }, h('span', { class: 'figure-label', text: 'cost' }), this.cost);
    this.when = h('span', { class: 'task-when' });
    this.body = h('div', { class: 'task-body' });
    this.el = h('details', { class: 'task' },
      h('summary', { class: 'task-summary' },
        this.statusBadge,
        h('div', { class: 'task-main' },
          h('div', { class: 'task-title' }, this.category, this.account),
          this.chain),
        h('div', { class: 'task-figures' },
          h('span', { class: 'figure' }, h('span', { class: 'figure-label', text: 'duration' }), this.duration),
          this.costFigure,
          this.when),
        h('span', { class: 'chevron', 'aria-hidden': 'true' })),
      this.body);
    this.el.addEventListener('toggle', () => { if (this.el.open) this.renderBody(); });
  }

  update(task, now) {
    this.task = task;
    const { el } = this;
    setAttr(el, 'data-activity-id', task.id);
    setAttr(el, 'data-status', task.status);
    setAttr(el, 'data-outcome', task.outcome);
    setAttr(el, 'data-attempts', task.attempts.length);
    setAttr(el, 'data-category', task.category);
    el.classList.toggle('is-running', task.running);

    this.statusBadge.className = `badge badge-outcome outcome-${task.outcome}`;
    setText(this.statusBadge, humanize(task.outcome));
    setText(this.category, task.category);
    setText(this.account, task.account ? `on ${task.account}` : '');
    this.costFigure.hidden = task.running;
    setText(this.cost, task.running ? '' : formatUSD(task.costUsd));
    this.renderChain();
    this.tick(now);
    if (this.el.open || !this.bodyRendered) this.renderBody();
  }

  flash() {
    this.el.classList.remove('is-fresh');
    void this.el.offsetWidth; // restart the animation
    this.el.classList.add('is-fresh');
  }

  /** "2 attempts: rate limited on A → success on B" */
  renderChain() {
    const { task } = this;
    const parts = [];
    if (task.attempts.length > 0) {
      parts.push(h('span', { class: 'chain-count', text: `${plural(task.attempts.length, 'attempt')}:` }));
      task.attempts.forEach((attempt, i) => {
        if (i > 0) parts.push(h('span', { class: 'chain-arrow', 'aria-hidden': 'true', text: '→' }));
        parts.push(h('span', {
          class: `attempt-step outcome-${attempt.outcome}`,
          'data-attempt-outcome': attempt.outcome,
          'data-attempt-account': attempt.accountName,
          'data-attempt-number': attempt.number,
          title: attempt.error || `${humanize(attempt.outcome)} on ${attempt.accountName}`,
        }, h('span', { class: 'step-outcome', text: humanize(attempt.outcome) }), ` on ${attempt.accountName}`));
      });
    } else if (task.running) {
      parts.push(h('span', { class: 'chain-progress', text: task.progress || 'selecting an account…' }));
    } else if (task.error) {
      parts.push(h('span', { class: 'chain-error', text: truncate(task.error, 140) }));
    }
    this.chain.replaceChildren(...parts);
  }

  tick(now) {
    const { task } = this;
    if (task.running) {
      const elapsed = Math.max(0, now - (task.startTime ?? now));
      setText(this.duration, task.startTime ? formatDuration(elapsed) : '—');
      setText(this.when, task.startTime ? `started ${formatAgo(elapsed)}` : '');
    } else {
      setText(this.duration, formatDuration(task.durationMs));
      const end = task.completeTime ?? task.startTime;
      setText(this.when, end ? formatAgo(Math.max(0, now - end)) : '');
      setAttr(this.when, 'title', end ? new Date(end).toLocaleString() : null);
    }
  }

  renderBody() {
    this.bodyRendered = true;
    const { task } = this;
    const sections = [];
    if (task.attempts.length > 0) sections.push(attemptsTable(task.attempts));
    if (task.selections.length > 0) sections.push(selectionsList(task.selections));
    if (task.running && task.progress) {
      sections.push(h('section', { class: 'detail' }, h('h5', { text: 'Latest progress' }), h('p', { text: task.progress })));
    }
    if (task.error) {
      sections.push(h('section', { class: 'detail detail-error' }, h('h5', { text: 'Error' }), h('p', { class: 'mono', text: truncate(task.error, 2000) })));
    }
    sections.push(factsList(task));
    if (task.prompt || task.output) {
      sections.push(h('section', { class: 'detail detail-io' },
        task.prompt && h('div', {}, h('h5', { text: 'Prompt' }), h('pre', { text: truncate(task.prompt, 1200) })),
        task.output && h('div', {}, h('h5', { text: 'Output' }), h('pre', { text: truncate(task.output, 1200) }))));
    }
    this.body.replaceChildren(...sections);
  }
}

function attemptsTable(attempts) {
  return h('section', { class: 'detail' },
    h('h5', { text: 'Attempts' }),
    h('table', { class: 'attempts' },
      h('thead', {}, h('tr', {},
        h('th', { class: 'num', text: '#' }), h('th', { text: 'Account' }), h('th', { text: 'Outcome' }),
        h('th', { class: 'num', text: 'HTTP' }), h('th', { class: 'num', text: 'Duration' }), h('th', { text: 'Detail' }))),
      h('tbody', {}, attempts.map((a) => h('tr', { 'data-attempt-row': a.number },
        h('td', { class: 'num', text: a.number }),
        h('td', { text: a.accountName }),
        h('td', {}, h('span', { class: `badge badge-outcome outcome-${a.outcome}`, text: humanize(a.outcome) })),
        h('td', { class: 'num', text: a.httpStatus || '—' }),
        h('td', { class: 'num', text: formatDuration(a.durationMs) }),
        h('td', { class: 'attempt-error' }, a.error ? truncate(a.error, 300) : a.messageId ? h('span', { class: 'mono muted', text: a.messageId }) : '—',
          a.warnings.length > 0 && h('div', { class: 'warning', text: `warnings: ${a.warnings.join('; ')}` })))))));
}

function selectionsList(selections) {
  return h('section', { class: 'detail' },
    h('h5', { text: 'Account selection' }),
    h('ol', { class: 'selections' }, selections.map((s, i) => h('li', { class: 'selection' },
      h('div', { class: 'selection-head' },
        h('span', { class: 'selection-number', text: `#${i + 1}` }),
        s.strategy && h('span', { class: 'chip', text: s.strategy }),
        h('span', {}, 'chose ', h('strong', { text: s.account || '—' })),
        s.headroom !== null && h('span', { class: 'muted', text: `${Math.round(s.headroom * 100)}% headroom left` })),
      (s.skipped.length > 0 || s.omitted > 0 || s.notExplained > 0) && h('ul', { class: 'skipped' },
        s.skipped.map((text) => h('li', { text: `skipped ${text}` })),
        s.omitted > 0 && h('li', { class: 'muted', text: `and ${s.omitted} more` }),
        s.notExplained > 0 && h('li', { class: 'muted', text: `${s.notExplained} other accounts not compared in detail` }))))));
}

function factsList(task) {
  const facts = [
    ['Model', task.model],
    ['Tokens', task.running ? '' : `${formatInteger(task.inputTokens)} in · ${formatInteger(task.outputTokens)} out`],
    ['Cache', task.cacheReadTokens || task.cacheCreationTokens ? `${formatInteger(task.cacheReadTokens)} read · ${formatInteger(task.cacheCreationTokens)} written` : ''],
    ['Cost', task.running ? '' : formatUSD(task.costUsd)],
    ['Waited for capacity', task.waitedMs >= 10 ? formatDuration(task.waitedMs) : ''],
    ['Stop reason', task.stopReason],
    ['Started', task.startTime ? formatClock(task.startTime) : ''],
    ['Finished', task.completeTime ? formatClock(task.completeTime) : ''],
    ['Session', task.sessionId],
    ['User', task.userId],
    ['Request id', task.requestId],
    ['Activity id', task.id],
    ['Mode', [task.legacy && 'legacy (fallback key)', task.replayed && 'replayed'].filter(Boolean).join(', ')],
    ['Bookkeeping', task.bookkeeping.join('; ')],
  ].filter(([, value]) => value);
  return h('section', { class: 'detail' },
    h('h5', { text: 'Details' }),
    h('dl', { class: 'facts' }, facts.map(([label, value]) => [h('dt', { text: label }), h('dd', { text: value })])));
}
