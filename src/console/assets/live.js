// One WebSocket for every page: all events, resumed with `since` after a disconnect, so nothing
// committed meanwhile is missed. Reconnects with exponential backoff and says so on screen.

import { auth } from './api.js';

export class Live {
  /**
   * onEvent(frame): every event (durable ones carry a seq; task_progress does not).
   * onState(state, detail): 'connecting' | 'live' | 'reconnecting' | 'closed'.
   * onCaughtUp(): after a reconnect's replay, when the stream is live again.
   */
  constructor({ onEvent, onState, onCaughtUp }) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.onCaughtUp = onCaughtUp;
    this.seq = null;
    this.failures = 0;
    this.socket = null;
    this.timer = null;
    this.everLive = false;
  }

  start() {
    this.connect();
  }

  url() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const params = new URLSearchParams();
    if (this.seq !== null) params.set('since', String(this.seq));
    if (auth.key) params.set('token', auth.key);
    const query = params.toString();
    return `${scheme}://${location.host}/ws${query ? `?${query}` : ''}`;
  }

  connect() {
    clearTimeout(this.timer);
    this.onState(this.everLive ? 'reconnecting' : 'connecting', 'connecting…');
    let socket;
    try {
      socket = new WebSocket(this.url());
    } catch (e) {
      this.retry();
      return;
    }
    this.socket = socket;
    socket.onmessage = (message) => {
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame.op === 'subscribed') {
        if (this.seq === null) this.seq = frame.latest_seq;
        const resumed = this.everLive;
        this.everLive = true;
        this.failures = 0;
        this.onState('live', 'live');
        if (resumed) this.onCaughtUp();
        return;
      }
      if (frame.op) return;
      if (typeof frame.seq === 'number' && frame.seq > 0) {
        if (this.seq !== null && frame.seq <= this.seq) return;
        this.seq = frame.seq;
      }
      this.onEvent(frame);
    };
    socket.onclose = (close) => {
      if (this.socket !== socket) return;
      this.socket = null;
      // A lagged or shutting-down close says where to resume: `since=N`.
      const m = /since=(\d+)/.exec(close.reason || '');
      if (m && this.seq === null) this.seq = Number(m[1]);
      this.retry();
    };
    socket.onerror = () => {
      // The close that follows reconnects.
    };
  }

  retry() {
    this.failures += 1;
    const delay = Math.min(30000, 500 * 2 ** Math.min(this.failures - 1, 6)) * (0.8 + Math.random() * 0.4);
    this.onState('reconnecting', `connection lost — reconnecting in ${Math.ceil(delay / 1000)} s`);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Closes the stream and opens it again now (after signing in with another key). */
  restart() {
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close();
    this.failures = 0;
    this.connect();
  }
}
