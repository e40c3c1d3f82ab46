// Usage over the last hour: the ledger's rows from GetUsage, bucketed per
// minute on the client, drawn as two SVG bar charts (tokens and cost per
// minute), with the hour's totals by account.

import { h, svg, int, timeMs, formatCompact, formatInteger, formatUSD, formatMinute } from './dom.js';

const MINUTE = 60_000;
export const WINDOW_MINUTES = 60;
const PAGE_SIZE = 1000;
const MAX_PAGES = 10;

/**
 * Reads the last hour of the ledger: totals, totals by account, and every
 * row (up to MAX_PAGES pages).
 */
export async function fetchUsage(api, now, { signal } = {}) {
  const end = Math.ceil(now / MINUTE) * MINUTE;
  const start = end - WINDOW_MINUTES * MINUTE;
  const request = {
    startTime: new Date(start).toISOString(),
    endTime: new Date(end).toISOString(),
    includeRecords: true,
    pageSize: PAGE_SIZE,
  };
  const records = [];
  let first = null;
  let pageToken = '';
  let truncated = false;
  for (let page = 0; page < MAX_PAGES; page++) {
    const response = await api.call('accountpool', 'GetUsage', pageToken ? { ...request, pageToken } : request, { signal });
    first ??= response;
    records.push(...(response.records ?? []));
    pageToken = response.nextPageToken ?? '';
    if (!pageToken) break;
    if (page === MAX_PAGES - 1) truncated = true;
  }
  return { start, end, records, total: first?.total ?? {}, byAccount: first?.byAccount ?? [], truncated };
}

/** Sums rows per minute: WINDOW_MINUTES buckets from start. */
export function bucketByMinute(records, start) {
  const buckets = Array.from({ length: WINDOW_MINUTES }, (_, i) => ({
    start: start + i * MINUTE, inputTokens: 0, outputTokens: 0, costUsd: 0, requests: 0,
  }));
  for (const record of records) {
    const at = timeMs(record.createTime);
    if (at === null) continue;
    const index = Math.floor((at - start) / MINUTE);
    if (index < 0 || index >= WINDOW_MINUTES) continue;
    const bucket = buckets[index];
    bucket.inputTokens += int(record.inputTokens);
    bucket.outputTokens += int(record.outputTokens);
    bucket.costUsd += Number(record.costUsd) || 0;
    bucket.requests += 1;
  }
  return buckets;
}

/** A round number at or above value, for an axis: 1, 2, 2.5, 5 × 10^k. */
function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

const CHART = { width: 560, height: 168, minLeft: 32, right: 8, top: 10, bottom: 22 };

/**
 * Draws a per-minute bar chart into an <svg>.
 * series: [{key, className, label}] stacked bottom-up; format formats axis values.
 */
export function drawBarChart(target, buckets, { series, format, describe, emptyText }) {
  const { width, height, right, top, bottom } = CHART;
  const totals = buckets.map((b) => series.reduce((sum, s) => sum + b[s.key], 0));
  const max = niceCeiling(Math.max(0, ...totals));
  const isEmpty = totals.every((t) => t === 0);
  const axis = (isEmpty ? [0] : [0, 0.5, 1]).map((f) => ({ value: max * f, label: format(max * f) }));
  // Room for the longest axis label (about 6 units a character at this size).
  const left = Math.max(CHART.minLeft, 10 + 6 * Math.max(...axis.map((a) => a.label.length)));
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const y = (v) => top + plotHeight - (v / max) * plotHeight;
  const slot = plotWidth / buckets.length;
  const barWidth = Math.max(1, slot - 2);

  const grid = axis.map(({ value, label }) => svg('g', { class: 'chart-grid' },
    svg('line', { x1: left, x2: width - right, y1: y(value), y2: y(value) }),
    svg('text', { class: 'chart-axis', x: left - 6, y: y(value) + 3, 'text-anchor': 'end' }, label)));

  const ticks = [0, 15, 30, 45, buckets.length - 1].map((i) => svg('text', {
    class: 'chart-axis', x: left + i * slot + slot / 2, y: height - 6,
    'text-anchor': i === 0 ? 'start' : i === buckets.length - 1 ? 'end' : 'middle',
  }, i === buckets.length - 1 ? 'now' : formatMinute(buckets[i].start)));

  const bars = buckets.map((bucket, i) => {
    const x = left + i * slot + (slot - barWidth) / 2;
    let base = 0;
    const stack = series.map((s) => {
      const value = bucket[s.key];
      if (!(value > 0)) return null;
      const rect = svg('rect', {
        class: `chart-bar ${s.className}`, x: x.toFixed(2), width: barWidth.toFixed(2),
        y: y(base + value).toFixed(2), height: Math.max(1, y(base) - y(base + value)).toFixed(2), rx: 1.5,
      });
      base += value;
      return rect;
    });
    return svg('g', { class: 'chart-slot', 'data-minute': new Date(bucket.start).toISOString() },
      svg('title', {}, `${formatMinute(bucket.start)} · ${describe(bucket)}`),
      svg('rect', { class: 'chart-hit', x: left + i * slot, y: top, width: slot, height: plotHeight }),
      stack);
  });

  const empty = isEmpty && svg('text', {
    class: 'chart-empty', x: left + plotWidth / 2, y: top + plotHeight / 2, 'text-anchor': 'middle',
  }, emptyText);

  target.setAttribute('viewBox', `0 0 ${width} ${height}`);
  target.replaceChildren(...grid, ...ticks, ...bars, ...(empty ? [empty] : []));
}

export class UsageView {
  constructor({ tokensChart, costChart, totals, byAccount, status }) {
    Object.assign(this, { tokensChart, costChart, totals, byAccountEl: byAccount, statusEl: status });
    this.usage = null;
  }

  render(usage) {
    this.usage = usage;
    const buckets = bucketByMinute(usage.records, usage.start);
    drawBarChart(this.tokensChart, buckets, {
      series: [
        { key: 'inputTokens', className: 'bar-input', label: 'input' },
        { key: 'outputTokens', className: 'bar-output', label: 'output' },
      ],
      format: (v) => formatCompact(Math.round(v)),
      describe: (b) => `${formatInteger(b.inputTokens)} input + ${formatInteger(b.outputTokens)} output tokens, ${b.requests} calls`,
      emptyText: 'No tokens used in the last hour',
    });
    drawBarChart(this.costChart, buckets, {
      series: [{ key: 'costUsd', className: 'bar-cost', label: 'cost' }],
      format: formatAxisUSD,
      describe: (b) => `${formatUSD(b.costUsd)} over ${b.requests} calls`,
      emptyText: 'No spend in the last hour',
    });
    this.renderTotals(usage.total);
    this.renderByAccount(usage.byAccount);
    this.setStatus(usage.truncated ? `Showing the newest ${formatInteger(usage.records.length)} calls of the hour.` : '');
  }

  renderTotals(total) {
    const tokens = int(total.inputTokens) + int(total.outputTokens);
    this.totals.replaceChildren(
      stat('calls', formatInteger(int(total.requests)), int(total.failedRequests) ? `${formatInteger(int(total.failedRequests))} failed` : ''),
      stat('tokens', formatCompact(tokens), `${formatCompact(int(total.inputTokens))} in · ${formatCompact(int(total.outputTokens))} out`),
      stat('cost', formatUSD(Number(total.costUsd) || 0), ''));
  }

  renderByAccount(rows) {
    if (rows.length === 0) {
      this.byAccountEl.replaceChildren();
      return;
    }
    const sorted = [...rows].sort((a, b) => (Number(b.costUsd) || 0) - (Number(a.costUsd) || 0));
    this.byAccountEl.replaceChildren(h('table', { class: 'by-account' },
      h('thead', {}, h('tr', {}, h('th', { text: 'Account' }), ['Calls', 'Failed', 'Tokens', 'Cost'].map((t) => h('th', { class: 'num', text: t })))),
      h('tbody', {}, sorted.map((row) => h('tr', { 'data-usage-account': row.accountName || row.accountId },
        h('td', { text: row.accountName || row.accountId || 'default' }),
        h('td', { class: 'num', text: formatInteger(int(row.requests)) }),
        h('td', { class: 'num', text: formatInteger(int(row.failedRequests)) }),
        h('td', { class: 'num', text: formatCompact(int(row.inputTokens) + int(row.outputTokens)) }),
        h('td', { class: 'num', text: formatUSD(Number(row.costUsd) || 0) }))))));
  }

  setStatus(text, isError = false) {
    this.statusEl.textContent = text;
    this.statusEl.classList.toggle('is-error', isError);
    this.statusEl.hidden = !text;
  }

  summary() {
    const total = this.usage?.total ?? {};
    return {
      loaded: this.usage !== null,
      tokens: int(total.inputTokens) + int(total.outputTokens),
      costUsd: Number(total.costUsd) || 0,
      requests: int(total.requests),
    };
  }
}

/** An axis value in dollars, with no more digits than it needs: $0, $0.05, $0.0025, $12. */
function formatAxisUSD(value) {
  return value === 0 ? '$0' : `$${parseFloat(value.toPrecision(3))}`;
}

function stat(label, value, note) {
  return h('div', { class: 'usage-stat' },
    h('span', { class: 'usage-stat-label', text: label }),
    h('span', { class: 'usage-stat-value', text: value }),
    note && h('span', { class: 'usage-stat-note', text: note }));
}
