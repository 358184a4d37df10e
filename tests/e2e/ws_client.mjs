// Control-UI-style read load for the end-to-end test: connects to the gateway's
// WebSocket on 127.0.0.1, then calls sessions.list and chat.history alternately, one
// request in flight and 50 ms between a reply and the next request, until
// the stop file appears (or 10 minutes pass), and prints a JSON summary.
// Usage: node ws_client.mjs <port> <token> <stop-file> <openclaw node_modules dir>
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const [port, token, stopFile, modules] = process.argv.slice(2);
const require = createRequire(path.join(modules, "openclaw", "package.json"));
const WebSocket = require("ws");

const stats = { connected: false, sent: 0, ok: 0, errors: 0, lastError: null, methods: {} };
let seq = 0;
const pending = new Map();
const ws = new WebSocket(`ws://127.0.0.1:${port}`);

function send(method, params) {
  const id = String(++seq);
  pending.set(id, method);
  ws.send(JSON.stringify({ type: "req", id, method, params }));
  if (method !== "connect") stats.sent++;
}

function finish(code) {
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
    next();
    return;
  }
  const m = (stats.methods[method] ??= { ok: 0, err: 0 });
  if (msg.ok) { stats.ok++; m.ok++; } else { stats.errors++; m.err++; stats.lastError = msg.error; }
  // One request in flight, like a UI that polls: the next one 50 ms after this reply.
  // (Firing on a timer regardless of replies floods the gateway's event loop.)
  setTimeout(next, 50);
});
let turn = 0;
function next() {
  if (existsSync(stopFile)) { finish(0); return; }
  if (turn++ % 2 === 0) send("sessions.list", {});
  else send("chat.history", { sessionKey: "agent:main:main", limit: 50 });
}
ws.on("error", (e) => { stats.lastError = String(e); finish(3); });
ws.on("close", () => finish(stats.connected ? 0 : 4));
setTimeout(() => finish(5), 600_000);
