// DOM construction and formatting helpers shared by the dashboard's views.
//
// The page runs under a strict Content-Security-Policy (no inline styles or
// scripts), and everything it shows comes from the API, account names and
// prompts included: elements are therefore always built with
// document.createElement and text nodes, never with innerHTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

/**
 * Builds an HTML element. props: `class` (string or array), `data-*` and
 * other attributes, `on<event>` listeners, and `text`. Children may be
 * strings, nodes, arrays of them, or null/false (skipped).
 */
export function h(tag, props = {}, ...children) {
  return build(document.createElement(tag), props, children);
}

/** Builds an SVG element; same props as h(). */
export function svg(tag, props = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

function build(el, props, children) {
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') {
      el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (key === 'text') {
      el.textContent = value;
    } else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  appendChildren(el, children);
  return el;
}

function appendChildren(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) appendChildren(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Sets an element's text only when it changed (keeps selections and avoids layout work). */
export function setText(el, text) {
  const value = String(text ?? '');
  if (el.textContent !== value) el.textContent = value;
}

/** Sets or removes an attribute; null/undefined/false removes it. */
export function setAttr(el, name, value) {
  if (value === null || value === undefined || value === false) {
    if (el.hasAttribute(name)) el.removeAttribute(name);
    return;
  }
  const text = value === true ? '' : String(value);
  if (el.getAttribute(name) !== text) el.setAttribute(name, text);
}

/** Replaces all of an element's children. */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  appendChildren(el, children);
}

// ---- proto3 JSON readers -------------------------------------------------
// protojson omits fields at their default value and writes int64 as strings.

/** An int64 (a decimal string in proto3 JSON) or number as a Number; 0 when absent. */
export function int(value) {
  if (value === undefined || value === null || value === '') return 0;
  const n = Number(value);
  return Number.isFinite(n) ? n : 0;
}

/** A Timestamp (RFC 3339 string) as epoch milliseconds, or null when absent. */
export function timeMs(value) {
  if (!value) return null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

/** An enum name without its prefix: ('ACCOUNT_STATUS_ACTIVE', 'ACCOUNT_STATUS_') → 'ACTIVE'. */
export function enumName(value, prefix, fallback = 'UNSPECIFIED') {
  if (!value) return fallback;
  return String(value).startsWith(prefix) ? String(value).slice(prefix.length) : String(value);
}

// ---- formatting ------------------------------------------------------------

const integerFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const compactFormat = new Intl.NumberFormat('en-US', { notation: 'compact', maximumSignificantDigits: 3 });

/** 1234567 → "1,234,567". */
export function formatInteger(n) {
  return integerFormat.format(n);
}

/** 1234567 → "1.23M" (three significant digits); numbers under 10,000 are written out. */
export function formatCompact(n) {
  return Math.abs(n) < 10_000 ? integerFormat.format(n) : compactFormat.format(n);
}

/** A dollar amount with the precision small amounts need: $0.00042, $0.0184, $12.40. */
export function formatUSD(amount) {
  const x = Number(amount) || 0;
  if (x === 0) return '$0.00';
  const abs = Math.abs(x);
  if (abs < 0.001) return `$${x.toPrecision(2)}`;
  if (abs < 1) return `$${x.toFixed(4)}`;
  return `$${x.toFixed(2)}`;
}

/** A countdown of ms as m:ss (or h:mm:ss), rounded up to the second. */
export function formatCountdown(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, '0');
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, '0')}:${seconds}` : `${minutes}:${seconds}`;
}

/** An elapsed time: "420 ms", "2.4 s", "1 m 05 s", "2 h 03 m". */
export function formatDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  const totalSeconds = Math.floor(ms / 1000);
  if (totalSeconds < 3600) {
    return `${Math.floor(totalSeconds / 60)} m ${String(totalSeconds % 60).padStart(2, '0')} s`;
  }
  return `${Math.floor(totalSeconds / 3600)} h ${String(Math.floor((totalSeconds % 3600) / 60)).padStart(2, '0')} m`;
}

/** How long ago: "just now", "12 s ago", "5 min ago", "3 h ago", or a date. */
export function formatAgo(ms) {
  if (ms < 5_000) return 'just now';
  if (ms < 60_000) return `${Math.floor(ms / 1000)} s ago`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ago`;
  if (ms < 86_400_000) return `${Math.floor(ms / 3_600_000)} h ago`;
  return `${Math.floor(ms / 86_400_000)} d ago`;
}

const clockFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const minuteFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

/** Local wall-clock time with seconds. */
export function formatClock(ms) {
  return clockFormat.format(new Date(ms));
}

/** Local wall-clock time to the minute. */
export function formatMinute(ms) {
  return minuteFormat.format(new Date(ms));
}

/** "rate_limited" → "rate limited". */
export function humanize(identifier) {
  return String(identifier ?? '').replaceAll('_', ' ').toLowerCase();
}

/** Cuts text to at most max characters, with an ellipsis. */
export function truncate(text, max) {
  const s = String(text ?? '');
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}

/** The plural of a count: plural(2, 'attempt') → "2 attempts". */
export function plural(n, word, many = `${word}s`) {
  return `${formatInteger(n)} ${n === 1 ? word : many}`;
}
