// Account cards: one per account of the organization, updated in place from
// WatchAccounts, with capacity gauges, breaker state and a cool-down
// countdown that ticks on the client.

import { h, svg, setText, setAttr, int, timeMs, enumName, formatCompact, formatInteger, formatCountdown } from './dom.js';

const GAUGES = [
  { key: 'requests', label: 'Requests', limit: 'requestsLimit', remaining: 'requestsRemaining' },
  { key: 'input_tokens', label: 'Input tokens', limit: 'inputTokensLimit', remaining: 'inputTokensRemaining' },
  { key: 'output_tokens', label: 'Output tokens', limit: 'outputTokensLimit', remaining: 'outputTokensRemaining' },
];

// Gauges are 270° arcs, open at the bottom.
const GAUGE_RADIUS = 26;
const GAUGE_SWEEP = 0.75;
const GAUGE_CIRCUMFERENCE = 2 * Math.PI * GAUGE_RADIUS;
const GAUGE_ARC = GAUGE_CIRCUMFERENCE * GAUGE_SWEEP;

/** The account's state as the card shows it, read from a proto3-JSON Account. */
export function accountState(account) {
  return {
    id: account.id ?? '',
    name: account.name || account.id || '(unnamed)',
    tier: account.tier || 'no tier',
    status: enumName(account.status, 'ACCOUNT_STATUS_'),
    breaker: enumName(account.breaker?.state, 'BREAKER_STATE_', 'CLOSED'),
    consecutiveFailures: int(account.breaker?.consecutiveFailures),
    openUntil: timeMs(account.breaker?.openUntil),
    cooldownUntil: timeMs(account.cooldownUntil),
    priority: int(account.priority),
    weight: account.weight === undefined ? 1 : int(account.weight),
    quotaGroup: account.quotaGroup ?? '',
    keyVersion: int(account.keyVersion),
    labels: account.labels ?? {},
    capacity: (account.capacity ?? []).map((c) => ({
      family: c.modelFamily || 'default',
      gauges: GAUGES.map((g) => ({ ...g, limitValue: int(c[g.limit]), remainingValue: int(c[g.remaining]) })),
    })),
  };
}

export class AccountsView {
  /**
   * @param {HTMLElement} grid where the cards go
   * @param {() => number} now the server's clock, estimated (epoch ms)
   */
  constructor(grid, now) {
    this.grid = grid;
    this.now = now;
    this.cards = new Map(); // account id → AccountCard
    this.accounts = [];
    this.omitted = 0; // accounts the server left out of its message (WatchAccounts' omitted_accounts)
    this.received = false;
  }

  /**
   * Shows this list of accounts (ordered as the server sent them: every
   * account, or the first of a very large organization, omitted counting
   * the others).
   */
  update(accounts, omitted = 0) {
    this.received = true;
    this.omitted = omitted;
    this.accounts = accounts.map(accountState);
    const seen = new Set();
    const ordered = [];
    for (const account of this.accounts) {
      seen.add(account.id);
      let card = this.cards.get(account.id);
      if (!card) {
        card = new AccountCard();
        this.cards.set(account.id, card);
      }
      card.update(account, this.now());
      ordered.push(card.el);
    }
    for (const [id, card] of this.cards) {
      if (!seen.has(id)) {
        card.el.remove();
        this.cards.delete(id);
      }
    }
    this.placeCards(ordered);
  }

  placeCards(ordered) {
    const empty = ordered.length === 0;
    setAttr(this.grid, 'data-empty', empty);
    if (empty) {
      const text = 'No accounts yet. Register one with AccountPoolService/RegisterAccount; it appears here at once.';
      if (this.grid.textContent !== text) this.grid.replaceChildren(h('p', { class: 'empty-state', text }));
      return;
    }
    this.grid.querySelector('.empty-state')?.remove();
    const current = [...this.grid.children];
    if (current.length !== ordered.length || current.some((el, i) => el !== ordered[i])) {
      this.grid.replaceChildren(...ordered);
    }
  }

  /** Advances the countdowns; called every second. */
  tick() {
    const now = this.now();
    for (const card of this.cards.values()) card.tick(now);
  }

  /** Figures for the summary tiles. */
  summary() {
    const now = this.now();
    return {
      total: this.accounts.length + this.omitted,
      active: this.accounts.filter((a) => a.status === 'ACTIVE').length,
      cooling: this.accounts.filter((a) => a.cooldownUntil && a.cooldownUntil > now).length,
      openBreakers: this.accounts.filter((a) => a.breaker !== 'CLOSED').length,
      received: this.received,
    };
  }
}

class AccountCard {
  constructor() {
    this.name = h('h3', { class: 'account-name' });
    this.tier = h('span', { class: 'chip chip-tier' });
    this.status = h('span', { class: 'badge' });
    this.meta = h('p', { class: 'account-meta' });
    this.labels = h('div', { class: 'account-labels' });
    this.breakerText = h('span', { class: 'breaker-text' });
    this.breaker = h('span', { class: 'breaker', 'data-breaker-state': 'CLOSED' }, h('span', { class: 'dot' }), this.breakerText);
    this.cooldownText = h('span', { class: 'cooldown-text' });
    this.cooldown = h('span', { class: 'cooldown', hidden: true }, coolIcon(), this.cooldownText);
    this.capacity = h('div', { class: 'capacity' });
    this.families = new Map(); // family → FamilyGauges
    this.el = h('article', { class: 'account-card' },
      h('header', { class: 'account-head' },
        h('div', { class: 'account-title' }, this.name, this.tier),
        this.status),
      this.meta,
      this.labels,
      h('div', { class: 'account-state' }, this.breaker, this.cooldown),
      this.capacity);
  }

  update(account, now) {
    this.account = account;
    const { el } = this;
    setAttr(el, 'data-account-id', account.id);
    setAttr(el, 'data-account-name', account.name);
    setAttr(el, 'data-status', account.status);
    setAttr(el, 'data-breaker-state', account.breaker);
    el.classList.toggle('is-out', account.status !== 'ACTIVE');
    el.classList.toggle('is-broken', account.breaker === 'OPEN');

    setText(this.name, account.name);
    setText(this.tier, account.tier);
    setText(this.status, account.status.toLowerCase());
    this.status.className = `badge badge-status status-${account.status.toLowerCase()}`;
    const meta = [`priority ${account.priority}`, `weight ${account.weight}`];
    if (account.quotaGroup) meta.push(`quota group ${account.quotaGroup}`);
    if (account.keyVersion) meta.push(`key v${account.keyVersion}`);
    setText(this.meta, meta.join(' · '));
    this.updateLabels(account.labels);
    this.updateCapacity(account.capacity);
    this.tick(now);
  }

  updateLabels(labels) {
    const text = Object.entries(labels).map(([k, v]) => `${k}=${v}`);
    const key = text.join('\n');
    if (this.labelsKey === key) return;
    this.labelsKey = key;
    this.labels.replaceChildren(...text.map((t) => h('span', { class: 'chip chip-label', text: t })));
    this.labels.hidden = text.length === 0;
  }

  updateCapacity(capacity) {
    if (capacity.length === 0) {
      if (!this.capacity.querySelector('.capacity-empty')) {
        this.families.clear();
        this.capacity.replaceChildren(h('p', { class: 'capacity-empty' }, 'No live capacity: the account is not in service or its tier has no limits.'));
      }
      return;
    }
    this.capacity.querySelector('.capacity-empty')?.remove();
    const seen = new Set();
    const ordered = capacity.map((c) => {
      seen.add(c.family);
      let family = this.families.get(c.family);
      if (!family) {
        family = new FamilyGauges(c.family);
        this.families.set(c.family, family);
      }
      family.update(c.gauges);
      return family.el;
    });
    for (const [name, family] of this.families) {
      if (!seen.has(name)) {
        family.el.remove();
        this.families.delete(name);
      }
    }
    const current = [...this.capacity.children];
    if (current.length !== ordered.length || current.some((el, i) => el !== ordered[i])) {
      this.capacity.replaceChildren(...ordered);
    }
  }

  /** Updates the countdowns from the stored account and the clock. */
  tick(now) {
    const account = this.account;
    if (!account) return;
    // Breaker.
    setAttr(this.breaker, 'data-breaker-state', account.breaker);
    let breaker = `breaker ${account.breaker.toLowerCase().replace('_', '-')}`;
    if (account.breaker === 'OPEN' && account.openUntil) {
      breaker += account.openUntil > now ? ` · probe in ${formatCountdown(account.openUntil - now)}` : ' · probe due';
    }
    if (account.consecutiveFailures > 0) {
      breaker += ` · ${account.consecutiveFailures} failure${account.consecutiveFailures === 1 ? '' : 's'}`;
    }
    setText(this.breakerText, breaker);

    // Cool-down: shown while it lasts, by the client's count.
    const cooling = account.cooldownUntil !== null && account.cooldownUntil > now;
    this.el.classList.toggle('is-cooling', cooling);
    this.cooldown.hidden = !cooling;
    setAttr(this.cooldown, 'data-cooldown', cooling ? Math.ceil((account.cooldownUntil - now) / 1000) : null);
    setAttr(this.cooldown, 'data-cooldown-until', cooling ? new Date(account.cooldownUntil).toISOString() : null);
    if (cooling) setText(this.cooldownText, `cooling down ${formatCountdown(account.cooldownUntil - now)}`);
  }
}

class FamilyGauges {
  constructor(family) {
    this.gauges = GAUGES.map((g) => new Gauge(g.key, g.label));
    this.el = h('section', { class: 'family', 'data-model-family': family },
      h('h4', { class: 'family-name', text: family }),
      h('div', { class: 'gauges' }, this.gauges.map((g) => g.el)));
  }

  update(values) {
    values.forEach((v, i) => this.gauges[i].update(v.remainingValue, v.limitValue));
  }
}

/** A 270° arc showing remaining/limit, with the number in the middle. */
class Gauge {
  constructor(key, label) {
    const center = 32;
    const rotate = `rotate(135 ${center} ${center})`;
    this.arc = svg('circle', {
      class: 'gauge-value', cx: center, cy: center, r: GAUGE_RADIUS, transform: rotate,
      'stroke-dasharray': `0 ${GAUGE_CIRCUMFERENCE}`,
    });
    this.number = svg('text', { class: 'gauge-number', x: center, y: center });
    this.percent = svg('text', { class: 'gauge-percent', x: center, y: center + 21 });
    this.tooltip = svg('title');
    this.detail = h('span', { class: 'gauge-detail' });
    this.el = h('figure', { class: 'gauge', 'data-gauge': key },
      svg('svg', { viewBox: '0 0 64 64', class: 'gauge-ring', role: 'img', 'aria-label': label },
        this.tooltip,
        svg('circle', {
          class: 'gauge-track', cx: center, cy: center, r: GAUGE_RADIUS, transform: rotate,
          'stroke-dasharray': `${GAUGE_ARC} ${GAUGE_CIRCUMFERENCE}`,
        }),
        this.arc, this.number, this.percent),
      h('figcaption', {}, h('span', { class: 'gauge-label', text: label }), this.detail));
  }

  update(remaining, limit) {
    const fraction = limit > 0 ? Math.min(1, Math.max(0, remaining / limit)) : 0;
    setAttr(this.el, 'data-remaining', remaining);
    setAttr(this.el, 'data-limit', limit);
    setAttr(this.el, 'data-level', fraction >= 0.5 ? 'ok' : fraction >= 0.15 ? 'warn' : 'low');
    setAttr(this.arc, 'stroke-dasharray', `${(GAUGE_ARC * fraction).toFixed(2)} ${GAUGE_CIRCUMFERENCE.toFixed(2)}`);
    setText(this.number, formatCompact(remaining));
    setText(this.percent, limit > 0 ? `${Math.round(fraction * 100)}%` : 'n/a');
    setText(this.detail, `of ${formatCompact(limit)}`);
    setText(this.tooltip, `${formatInteger(remaining)} of ${formatInteger(limit)} left`);
  }
}

function coolIcon() {
  return svg('svg', { class: 'icon', viewBox: '0 0 16 16', 'aria-hidden': 'true' },
    svg('circle', { cx: 8, cy: 8.5, r: 5.5, fill: 'none', stroke: 'currentColor', 'stroke-width': 1.6 }),
    svg('path', { d: 'M8 5.5v3.2l2 1.3M6.5 1.5h3', fill: 'none', stroke: 'currentColor', 'stroke-width': 1.6, 'stroke-linecap': 'round' }));
}
