// The dashboard's HTTP API client: unary calls, newline-delimited JSON
// streams, and a watch that reconnects with backoff.
//
// Contract (see web/dashboard/api.go): POST /api/<service>/<Method> with
// the request message in proto3 JSON and `Authorization: Bearer <token>`.
// A unary call answers with the response message; a stream answers
// application/x-ndjson, one message per line, and a last line
// {"error":{"code","message"}} when it fails after it started. Errors
// before that are a non-2xx status with {"code","message"}.

/** An error answered by the API (code is the gRPC code name in snake_case). */
export class ApiError extends Error {
  constructor(code, message, httpStatus = 0) {
    super(message || code);
    this.name = 'ApiError';
    this.code = code || 'unknown';
    this.httpStatus = httpStatus;
  }
}

/** True for errors that a retry with the same token cannot fix. */
export function isAuthError(err) {
  return err instanceof ApiError && (err.code === 'unauthenticated' || err.code === 'permission_denied');
}

export class Api {
  /** @param {{token: string, organizationId?: string}} session */
  constructor(session) {
    this.token = session.token;
    this.organizationId = session.organizationId || '';
  }

  /** The request body with the organization filled in when the session names one. */
  body(request) {
    return this.organizationId ? { organizationId: this.organizationId, ...request } : { ...request };
  }

  async post(service, method, request, signal) {
    let response;
    try {
      response = await fetch(`/api/${service}/${method}`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${this.token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(this.body(request)),
        cache: 'no-store',
        signal,
      });
    } catch (err) {
      if (err?.name === 'AbortError') throw err;
      throw new ApiError('unavailable', `the dashboard cannot be reached (${err?.message ?? err})`);
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  /** Calls a unary method and returns its response message. */
  async call(service, method, request = {}, { signal } = {}) {
    const response = await this.post(service, method, request, signal);
    return response.json();
  }

  /**
   * Calls a server-streaming method and yields its messages as they
   * arrive. Throws an ApiError when the stream reports one; returns when
   * the server ends the stream.
   */
  async *stream(service, method, request = {}, { signal } = {}) {
    const response = await this.post(service, method, request, signal);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = '';
    try {
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (err?.name === 'AbortError') throw err;
          throw new ApiError('unavailable', `the stream broke off (${err?.message ?? err})`);
        }
        if (chunk.done) break;
        buffered += decoder.decode(chunk.value, { stream: true });
        let newline;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, newline).trim();
          buffered = buffered.slice(newline + 1);
          if (line) yield parseStreamLine(line);
        }
      }
      const rest = (buffered + decoder.decode()).trim();
      if (rest) yield parseStreamLine(rest);
    } finally {
      reader.cancel().catch(() => {});
    }
  }
}

function parseStreamLine(line) {
  let message;
  try {
    message = JSON.parse(line);
  } catch {
    throw new ApiError('internal', 'the stream sent a line that is not JSON');
  }
  // Neither watch's response message has an `error` field: a line with
  // one is the stream's failure.
  if (message && typeof message.error === 'object' && message.error !== null) {
    throw new ApiError(message.error.code, message.error.message);
  }
  return message;
}

async function errorOf(response) {
  let code = '';
  let message = '';
  try {
    const body = await response.json();
    code = body.code;
    message = body.message;
  } catch {
    // Not our JSON (a proxy's page, say): the HTTP status is all we have.
  }
  if (!code) code = codeForStatus(response.status);
  return new ApiError(code, message || `HTTP ${response.status} ${response.statusText}`, response.status);
}

function codeForStatus(status) {
  switch (status) {
    case 400: return 'invalid_argument';
    case 401: return 'unauthenticated';
    case 403: return 'permission_denied';
    case 404: return 'not_found';
    case 429: return 'resource_exhausted';
    case 503: return 'unavailable';
    case 504: return 'deadline_exceeded';
    default: return 'unknown';
  }
}

/** Delay before reconnect attempt n (1, 2, ...): 0.5 s doubling to 30 s, with jitter. */
export function backoffDelay(failures) {
  const base = Math.min(30_000, 500 * 2 ** Math.max(0, failures - 1));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/**
 * Watch keeps one server stream open: it reconnects with backoff whenever
 * the stream fails or ends, asking request() for the body each time (so a
 * caller can resume from a cursor), and stops for good on an auth error.
 *
 * States reported to onState: 'connecting', 'live', 'reconnecting'
 * (with retryAt), 'failed' (auth error; the watch has stopped).
 */
export class Watch {
  constructor({ api, service, method, request, onMessage, onState = () => {}, onError = () => {} }) {
    Object.assign(this, { api, service, method, request, onMessage, onState, onError });
    this.stopper = new AbortController();
    this.state = 'idle';
  }

  start() {
    this.run();
    return this;
  }

  stop() {
    this.stopper.abort();
  }

  setState(state, detail = {}) {
    this.state = state;
    this.onState(state, detail);
  }

  async run() {
    const stopped = this.stopper.signal;
    let failures = 0;
    while (!stopped.aborted) {
      this.setState(failures === 0 ? 'connecting' : 'reconnecting', { attempt: failures });
      try {
        let first = true;
        for await (const message of this.api.stream(this.service, this.method, this.request(), { signal: stopped })) {
          if (first) {
            first = false;
            failures = 0;
            this.setState('live');
          }
          this.onMessage(message);
        }
        throw new ApiError('unavailable', 'the server ended the stream');
      } catch (err) {
        if (stopped.aborted) return;
        if (isAuthError(err)) {
          this.setState('failed', { error: err });
          this.onError(err);
          return;
        }
        this.onError(err);
        failures += 1;
        const delay = backoffDelay(failures);
        this.setState('reconnecting', { error: err, retryAt: Date.now() + delay, attempt: failures });
        await sleep(delay, stopped);
      }
    }
  }
}
