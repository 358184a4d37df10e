// Control-UI-style read load for the end-to-end test: connects to the gateway's
// WebSocket on 127.0.0.1, then on a 50 ms tick calls both sessions.list and
// chat.history (one "round"), until the stop file appears (or 10 minutes pass); then
// waits up to 5 s for the calls in flight and prints a JSON summary.
//
// Pacing: every 50 ms tick starts a round unless a call of the previous round is
// still in flight (never more than one call per method in flight: a reply is awaited
// before that method is called again). On this 2-core machine a call takes 300-600 ms
// under a turn, so the gateway always has both calls in hand; measured 2026-11-29:
// ~130 rounds per 5-turn run, no errors; the first turn takes ~40 s under this load
// (~20 s with half of it), later ones ~13 s, on the plain directory and the mount alike.
// Usage: node ws_client.mjs <port> <token> <stop-file> <openclaw node_modules dir>
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const [port, token, stopFile, modules] = process.argv.slice(2);
const require = createRequire(path.join(modules, "openclaw", "package.json"));
const WebSocket = require("ws");

const METHODS = {
  "sessions.list": () => ({}),
  "chat.history": () => ({ sessionKey: "agent:main:main", limit: 50 }),
};
const stats = {
  connected: false, ticks: 0, rounds: 0, skippedBusy: 0, roundMs: {},
  sent: 0, ok: 0, errors: 0, inFlightAtStop: 0, lastError: null, methods: {},
};
for (const m of Object.keys(METHODS)) stats.methods[m] = { sent: 0, ok: 0, err: 0 };
const inFlight = new Set(); // methods with a request awaiting its reply
const roundMs = [];
let roundStart = 0, roundEnd = 0, lastRound = 0;
let ticker = null;
let stopping = false;
let seq = 0;
const pending = new Map();
const ws = new WebSocket(`ws://127.0.0.1:${port}`);

function send(method, params) {
  const id = String(++seq);
  pending.set(id, method);
  ws.send(JSON.stringify({ type: "req", id, method, params }));
  if (method !== "connect") { stats.sent++; stats.methods[method].sent++; inFlight.add(method); }
}

function finish(code) {
  if (ticker) clearInterval(ticker);
  stats.inFlightAtStop = inFlight.size;
  const r = [...roundMs].sort((a, b) => a - b);
  if (r.length) stats.roundMs = { median: r[r.length >> 1], max: r[r.length - 1] };
  console.log(JSON.stringify(stats));
  try { ws.close(); } catch {}
  process.exit(code);
}

ws.on("message", (raw) => {
  let msg;
  try { msg = JSON.parse(raw.toString()); } catch { return; }
  if (msg.type === "event" && msg.event === "connect.challenge") {
    send("connect", {
      minProtocol: 3, maxProtocol: 4,
      client: { id: "gateway-client", version: "1.0.0", platform: "linux", mode: "backend" },
      role: "operator", scopes: ["operator.read"], auth: { token },
    });
    return;
  }
  if (msg.type !== "res") return;
  const method = pending.get(msg.id);
  pending.delete(msg.id);
  if (method === "connect") {
    if (!msg.ok) { stats.lastError = msg.error; finish(2); }
    stats.connected = true;
    tick();
    ticker = setInterval(tick, 50);
    return;
  }
  if (!method) return;
  inFlight.delete(method);
  const m = stats.methods[method];
  if (msg.ok) { stats.ok++; m.ok++; } else { stats.errors++; m.err++; stats.lastError = msg.error; }
  if (inFlight.size === 0) {
    roundEnd = Date.now();
    lastRound = roundEnd - roundStart;
    roundMs.push(lastRound);
  }
  if (stopping && inFlight.size === 0) finish(0);
});
// Every 50 ms: a round of both methods unless one is still in flight.
function tick() {
  if (stopping) return;
  if (existsSync(stopFile)) {
    stopping = true;
    clearInterval(ticker);
    if (inFlight.size === 0) finish(0);
    else setTimeout(() => finish(0), 5000);
    return;
  }
  stats.ticks++;
  if (inFlight.size > 0) { stats.skippedBusy++; return; }
  stats.rounds++;
  roundStart = Date.now();
  for (const [method, params] of Object.entries(METHODS)) send(method, params());
}
ws.on("error", (e) => { stats.lastError = String(e); finish(3); });
ws.on("close", () => finish(stats.connected ? 0 : 4));
setTimeout(() => finish(5), 600_000);
