// The real-time socket (docs/realtime.md): one WebSocket carries every conversation's events in
// order. After a drop the client reconnects by itself (backing off), sends the last sequence
// number it processed per conversation, and the server sends what was missed, then `ready`.
// A socket that stops answering pings is treated as dropped.

const PING_EVERY = 25_000;
const PONG_WITHIN = 10_000;
const BACKOFF = [500, 1000, 2000, 4000, 8000, 15000, 30000];

export class Realtime {
  /**
   * @param {object} h handlers: positions() -> {conv: seq}, event(ev), receipt(r), ready(),
   *   status(state), ended()
   */
  constructor(h) {
    this.h = h;
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.live = false;
    this.pending = new Map();
    this.timers = [];
    this.onOnline = () => this.reconnectNow();
    addEventListener('online', this.onOnline);
  }

  start() {
    this.connect();
  }

  stop() {
    this.stopped = true;
    removeEventListener('online', this.onOnline);
    this.clearTimers();
    if (this.ws) this.ws.close(1000, 'signed out');
    this.ws = null;
  }

  clearTimers() {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    clearInterval(this.pinger);
  }

  connect() {
    if (this.stopped) return;
    this.live = false;
    this.h.status(this.attempt === 0 ? 'connecting' : 'reconnecting');
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/v1/ws`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ op: 'resume', positions: this.h.positions(), backfill: false }));
      this.lastFrame = Date.now();
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.ping(), PING_EVERY);
    };
    ws.onmessage = (m) => {
      this.lastFrame = Date.now();
      let frame;
      try {
        frame = JSON.parse(m.data);
      } catch {
        return;
      }
      switch (frame.op) {
        case 'event':
          this.h.event(frame.event);
          break;
        case 'receipt':
          this.h.receipt(frame.receipt);
          break;
        case 'ready':
          this.live = true;
          this.attempt = 0;
          this.h.status('live');
          this.h.ready();
          this.flushReceipts();
          break;
        default:
          break;
      }
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.live = false;
      clearInterval(this.pinger);
      if (this.stopped) return;
      if (e.code === 4001) {
        this.stopped = true;
        this.h.ended();
        return;
      }
      this.retry(e.code === 4008 ? 0 : undefined);
    };
    ws.onerror = () => {
      // onclose follows.
    };
  }

  retry(delay) {
    if (this.stopped) return;
    this.h.status(navigator.onLine === false ? 'offline' : 'reconnecting');
    const base = delay ?? BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)];
    this.attempt += 1;
    const jitter = base * 0.2 * Math.random();
    this.timers.push(setTimeout(() => this.connect(), base + jitter));
  }

  reconnectNow() {
    if (this.stopped || (this.ws && this.ws.readyState <= 1)) return;
    this.clearTimers();
    this.connect();
  }

  ping() {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return;
    ws.send(JSON.stringify({ op: 'ping' }));
    const sentAt = Date.now();
    this.timers.push(
      setTimeout(() => {
        // Nothing at all since the ping: the connection is dead even if the socket thinks not.
        if (this.ws === ws && this.lastFrame < sentAt) {
          this.ws = null;
          try {
            ws.close(4000, 'no answer');
          } catch {
            // Already closed.
          }
          this.retry();
        }
      }, PONG_WITHIN),
    );
  }

  /** Moves this user's delivered/read positions (sent once live; the latest wins). */
  receipt(conversationId, delivered, read) {
    const prev = this.pending.get(conversationId) || { delivered: 0, read: 0 };
    this.pending.set(conversationId, {
      delivered: Math.max(prev.delivered, delivered || 0, read || 0),
      read: Math.max(prev.read, read || 0),
    });
    clearTimeout(this.receiptTimer);
    this.receiptTimer = setTimeout(() => this.flushReceipts(), 150);
  }

  flushReceipts() {
    if (!this.live || !this.ws || this.ws.readyState !== 1) return;
    for (const [id, r] of this.pending) {
      this.ws.send(JSON.stringify({ op: 'receipt', conversation_id: id, delivered_seq: r.delivered, read_seq: r.read }));
    }
    this.pending.clear();
  }
}
