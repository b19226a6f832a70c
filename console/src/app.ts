// Halyard's web console: one small page app, no framework.
//
// It polls /api/status of every broker of the group it knows (the one it was
// loaded from, its `http_peers`, and `?peers=` in the page URL), shows their
// roles, and reads and changes data on whichever is master — so when the
// master dies it follows the takeover to the new one. Credentials (HTTP
// basic) are kept in sessionStorage and sent explicitly with
// `credentials: "omit"`, so the browser never pops up its own login box.
// API contract: the admin API (docs/OPERATIONS.md).

export {};

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

interface Takeover { at_ms: number; waited_ms: number; lock_to_serving_ms: number; recovery_ms: number }
interface Status {
  name: string; version: string; role: string; epoch: number; since_ms: number;
  lock_owner: Json; takeover: Takeover | null; reason: string | null;
  started_at_ms: number; uptime_ms: number; stomp: string | null; listeners: string[];
  store: string; data_dir?: string; database?: string; connections: number; destinations: number;
  resources: Json; memory_bytes?: number; scheduled: number; http_peers?: string[];
}
interface BrokerState { origin: string; status: Status | null; error: string | null; seen: number }
interface Dest {
  destination: string; kind?: string; name?: string; ready: number; inflight: number; delayed: number;
  depth?: number; consumers: number; producers?: number; enqueued: number; acked: number;
  dequeued?: number; expired?: number; dead_lettered?: number; memory_bytes: number;
}
interface Sample { t: number; enqueued: number; dequeued: number }

const POLL_MS = Number(new URLSearchParams(location.search).get("interval")) || 1000;
const REQUEST_TIMEOUT_MS = 3000;
const SPARK_POINTS = 40;
const AUTH_KEY = "halyard-console-auth";
const PAGE = 20;

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly body: Json) { super(message); }
}

// ---------------------------------------------------------------------------
// State (one owner: this module; views read it, poll() writes it)

const selfOrigin = location.origin;
const brokers = new Map<string, BrokerState>();
let masterOrigin: string | null = null;
let lastMasterName: string | null = null;
let needLogin = false;
const depthHistory = new Map<string, number[]>(); // destination -> depths
const lastSample = new Map<string, Sample>();
const rates = new Map<string, { inRate: number; outRate: number }>();
let dests: Dest[] = [];

function origin(url: string): string | null {
  try {
    const u = new URL(url.trim());
    return u.protocol === "http:" || u.protocol === "https:" ? u.origin : null;
  } catch {
    return null;
  }
}

function addBroker(url: string): void {
  const o = origin(url);
  if (o && !brokers.has(o)) brokers.set(o, { origin: o, status: null, error: null, seen: 0 });
}

addBroker(selfOrigin);
for (const p of (new URLSearchParams(location.search).get("peers") ?? "").split(",")) {
  if (p.trim()) addBroker(p);
}

// ---------------------------------------------------------------------------
// HTTP

function authHeader(): Record<string, string> {
  const token = sessionStorage.getItem(AUTH_KEY);
  return token ? { Authorization: `Basic ${token}` } : {};
}

async function request(base: string, path: string, init: { method?: string; body?: Json } = {}): Promise<Json> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
  const headers: Record<string, string> = { ...authHeader() };
  if (init.body !== undefined) headers["Content-Type"] = "application/json";
  try {
    const r = await fetch(base + path, {
      method: init.method ?? "GET",
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      credentials: "omit",
      cache: "no-store",
      signal: ctl.signal,
    });
    const text = await r.text();
    let body: Json = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!r.ok) {
      if (r.status === 401) needLogin = true;
      const msg = body && typeof body.error === "string" ? body.error : text.trim() || r.statusText;
      throw new HttpError(r.status, `${r.status}: ${msg}`, body);
    }
    return body;
  } catch (e) {
    if (e instanceof HttpError) throw e;
    throw new HttpError(0, ctl.signal.aborted ? "no answer (timeout)" : "unreachable", null);
  } finally {
    clearTimeout(timer);
  }
}

/** A call to the master's API (or this broker's, when no master is known). */
function api(path: string, init?: { method?: string; body?: Json }): Promise<Json> {
  return request(masterOrigin ?? selfOrigin, path, init);
}

// ---------------------------------------------------------------------------
// DOM helpers

type Child = Node | string | number | null | undefined | false;
function h<K extends keyof HTMLElementTagNameMap>(
  tag: K, attrs: Record<string, string | boolean | ((e: Event) => void)> = {}, ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v);
    else if (v === true) el.setAttribute(k, "");
    else if (v !== false) el.setAttribute(k, v);
  }
  el.append(...present(children));
  return el;
}

/** The children worth appending (no null, undefined or false). */
function present(children: Child[]): (Node | string)[] {
  const out: (Node | string)[] = [];
  for (const c of children) if (c !== null && c !== undefined && c !== false) out.push(typeof c === "number" ? String(c) : c);
  return out;
}

const $ = (id: string): HTMLElement => document.getElementById(id) as HTMLElement;

function fmtTime(ms: number | null | undefined): string {
  if (!ms) return "—";
  return new Date(ms).toLocaleTimeString();
}
function fmtDateTime(ms: number | null | undefined): string {
  if (!ms) return "—";
  return new Date(ms).toLocaleString();
}
function fmtDuration(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 120) return `${(ms / 1000).toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}
function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

function announce(text: string, error = false): void {
  const live = $("live");
  live.textContent = text;
  live.classList.toggle("error", error);
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The confirmation dialog; resolves to null when cancelled, else the input's value ("" without one). */
function confirmDialog(title: string, text: string, okLabel: string, input?: { label: string; value: string }): Promise<string | null> {
  const dlg = $("confirm") as HTMLDialogElement;
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  const field = $("confirm-field");
  const box = $("confirm-input") as HTMLInputElement;
  field.hidden = !input;
  box.required = !!input;
  if (input) {
    $("confirm-label").textContent = input.label;
    box.value = input.value;
  }
  dlg.returnValue = "";
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok" ? (input ? box.value.trim() : "") : null), { once: true });
    dlg.showModal();
    (input ? box : ($("confirm-cancel") as HTMLButtonElement)).focus();
  });
}

// ---------------------------------------------------------------------------
// Polling the group

async function pollBrokers(): Promise<void> {
  await Promise.all([...brokers.values()].map(async (b) => {
    try {
      const s: Status = await request(b.origin, "/api/status");
      b.status = s;
      b.error = null;
      b.seen = Date.now();
      for (const p of s.http_peers ?? []) addBroker(p);
    } catch (e) {
      b.error = errorText(e);
      if (!(e instanceof HttpError && e.status === 401)) b.status = b.status ? { ...b.status, role: "down" } : null;
    }
  }));
  const masters = [...brokers.values()].filter((b) => !b.error && b.status?.role === "master");
  // Two masters can only be a moment's overlap: trust the higher epoch.
  masters.sort((a, b) => (b.status?.epoch ?? 0) - (a.status?.epoch ?? 0));
  const m = masters[0] ?? null;
  if (m) {
    const name = m.status?.name ?? m.origin;
    if (masterOrigin !== null && masterOrigin !== m.origin) {
      const banner = $("banner");
      banner.textContent = `takeover: ${name} is master since ${fmtTime(m.status?.since_ms)} (was ${lastMasterName ?? masterOrigin})`;
      banner.hidden = false;
      lastSample.clear();
      rates.clear();
    }
    masterOrigin = m.origin;
    lastMasterName = name;
  }
  renderPair();
}

function renderPair(): void {
  const pair = $("pair");
  const cards = [...brokers.values()].map((b) => {
    const s = b.status;
    const role = s?.role ?? (b.error ? "down" : "unknown");
    const isMaster = b.origin === masterOrigin && role === "master";
    const t = s?.takeover;
    return h("section", { class: `broker ${role}`, "aria-label": `broker ${s?.name ?? b.origin}`, "data-origin": b.origin },
      h("h2", {}, s?.name ?? b.origin, isMaster ? " ★" : ""),
      h("div", {}, h("span", { class: "role", "data-role": role }, role), " · epoch ", s?.epoch ?? "—",
        " · ", role === "master" ? "ready" : "not ready"),
      h("div", { class: "muted" }, b.origin, s ? ` · ${role} since ${fmtTime(s.since_ms)}` : ""),
      t ? h("div", {}, `last takeover ${fmtTime(t.at_ms)}: waited ${fmtDuration(t.waited_ms)}, lock→serving ${t.lock_to_serving_ms} ms (recovery ${t.recovery_ms} ms)`) : null,
      s?.lock_owner ? h("div", { class: "muted" }, `lock held by ${JSON.stringify(s.lock_owner)}`) : null,
      b.error ? h("div", { class: "error" }, b.error) : null,
    );
  });
  pair.replaceChildren(...cards);
}

async function pollDestinations(): Promise<void> {
  const list: Dest[] = await api("/api/destinations");
  const now = Date.now();
  for (const d of list) {
    const dequeued = d.dequeued ?? d.acked;
    const prev = lastSample.get(d.destination);
    if (prev && now > prev.t) {
      const dt = (now - prev.t) / 1000;
      rates.set(d.destination, {
        inRate: Math.max(0, (d.enqueued - prev.enqueued) / dt),
        outRate: Math.max(0, (dequeued - prev.dequeued) / dt),
      });
    }
    lastSample.set(d.destination, { t: now, enqueued: d.enqueued, dequeued });
    const hist = depthHistory.get(d.destination) ?? [];
    hist.push(depth(d));
    if (hist.length > SPARK_POINTS) hist.shift();
    depthHistory.set(d.destination, hist);
  }
  dests = list;
}

function depth(d: Dest): number {
  return d.depth ?? d.ready + d.inflight + d.delayed;
}

function kindName(d: Dest): [string, string] {
  if (d.kind && d.name !== undefined) return [d.kind, d.name];
  const m = /^\/(queue|topic)\/(.*)$/.exec(d.destination);
  return m ? [m[1], m[2]] : ["queue", d.destination];
}

function sparkline(values: number[]): SVGSVGElement {
  const ns = "http://www.w3.org/2000/svg";
  const w = 100, hgt = 20;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", String(hgt));
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("role", "img");
  const last = values[values.length - 1] ?? 0;
  svg.setAttribute("aria-label", `depth trend, now ${last}`);
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? w / (SPARK_POINTS - 1) : 0;
  const x0 = w - step * (values.length - 1);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(hgt - 1 - (v / max) * (hgt - 2)).toFixed(1)}`).join(" "));
  svg.append(line);
  return svg;
}

// ---------------------------------------------------------------------------
// Views. Each mounts its static part once and refreshes its data part on
// every poll, so typing, focus and open details survive the refresh.

interface View { refresh(): Promise<void> }
let view: View | null = null;
let routeKey = "";

function mount(title: string, ...parts: Child[]): HTMLElement {
  const main = $("main");
  main.replaceChildren(h("h1", {}, title), ...present(parts));
  return main;
}

function overviewView(): View {
  const body = h("div", { class: "grid" });
  mount("Overview", body);
  return {
    async refresh() {
      const m = masterOrigin ? brokers.get(masterOrigin)?.status : null;
      if (!m) {
        body.replaceChildren(h("p", {}, "No master is answering. The brokers above show what each one says."));
        return;
      }
      const r = m.resources ?? {};
      const dl = (rows: [string, Child][]) => h("dl", {}, ...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
      body.replaceChildren(...present([
        h("section", { class: "card", "aria-label": "master" }, h("h2", {}, "Master"), dl([
          ["Broker", m.name], ["Version", m.version], ["Role", m.role], ["Epoch", m.epoch],
          ["Master since", fmtDateTime(m.since_ms)], ["Uptime", fmtDuration(m.uptime_ms)],
          ["Listeners", m.listeners.join(", ") || "—"],
          ["Store", `${m.store}${m.data_dir ? ` (${m.data_dir})` : ""}${m.database ? ` (${m.database})` : ""}`],
        ])),
        h("section", { class: "card", "aria-label": "usage" }, h("h2", {}, "Usage and limits"), dl([
          ["Connections", `${m.connections} of ${r.max_connections ?? "?"}`],
          ["Destinations", m.destinations],
          ["Message memory", `${fmtBytes(m.memory_bytes)} of ${fmtBytes(r.memory_bytes)}`],
          ["File descriptors", `limit ${r.fd_limit ?? "?"}`],
          ["Scheduled", m.scheduled],
        ])),
        m.takeover ? h("section", { class: "card", "aria-label": "last takeover" }, h("h2", {}, "Last takeover"), dl([
          ["At", fmtDateTime(m.takeover.at_ms)], ["Waited for the lock", fmtDuration(m.takeover.waited_ms)],
          ["Lock → serving", `${m.takeover.lock_to_serving_ms} ms`], ["Recovery", `${m.takeover.recovery_ms} ms`],
        ])) : null,
      ]));
    },
  };
}

function destinationsView(): View {
  const filter = h("input", { type: "search", id: "filter", "aria-controls": "dest-table" });
  const tbody = h("tbody", {});
  const count = h("span", { class: "muted" });
  filter.addEventListener("input", () => draw());
  mount("Destinations",
    h("div", { class: "toolbar" }, h("label", { for: "filter" }, "Filter"), filter, count),
    h("table", { id: "dest-table" },
      h("caption", { class: "muted" }, "Rates are computed from successive polls."),
      h("thead", {}, h("tr", {},
        h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Kind"),
        h("th", { scope: "col", class: "num" }, "Depth"), h("th", { scope: "col" }, "Trend"),
        h("th", { scope: "col", class: "num" }, "Consumers"), h("th", { scope: "col", class: "num" }, "Enqueued"),
        h("th", { scope: "col", class: "num" }, "Dequeued"), h("th", { scope: "col", class: "num" }, "In/s"),
        h("th", { scope: "col", class: "num" }, "Out/s"))),
      tbody));
  function draw(): void {
    const q = filter.value.trim().toLowerCase();
    const shown = dests.filter((d) => !q || d.destination.toLowerCase().includes(q))
      .sort((a, b) => a.destination.localeCompare(b.destination));
    count.textContent = `${shown.length} of ${dests.length}`;
    tbody.replaceChildren(...shown.map((d) => {
      const [kind, name] = kindName(d);
      const rate = rates.get(d.destination);
      return h("tr", { "data-destination": d.destination },
        h("td", {}, h("a", { href: `#/destination/${kind}/${encodeURIComponent(name)}` }, name)),
        h("td", {}, kind),
        h("td", { class: "num", "data-field": "depth" }, depth(d)),
        h("td", {}, sparkline(depthHistory.get(d.destination) ?? [])),
        h("td", { class: "num" }, d.consumers),
        h("td", { class: "num" }, d.enqueued),
        h("td", { class: "num" }, d.dequeued ?? d.acked),
        h("td", { class: "num" }, rate ? rate.inRate.toFixed(1) : "—"),
        h("td", { class: "num" }, rate ? rate.outRate.toFixed(1) : "—"));
    }));
  }
  return { async refresh() { draw(); } };
}

function messageView(m: Json): HTMLElement {
  const headers = Object.entries(m.headers ?? {}).map(([k, v]) => `${k}: ${v}`).join("\n");
  return h("details", { class: "msg", "data-id": String(m.id) },
    h("summary", {}, h("code", {}, String(m.id)), ` · ${m.body_bytes ?? "?"} bytes · deliveries ${m.deliveries ?? 0}`,
      m.in_flight ? " · in flight" : "", m.timestamp_ms ? ` · ${fmtDateTime(m.timestamp_ms)}` : ""),
    h("h3", {}, "Headers"), h("pre", {}, headers || "(none)"),
    h("h3", {}, `Body${m.body_encoding === "base64" ? " (base64)" : ""}${m.truncated ? " (truncated)" : ""}`),
    h("pre", { class: "body" }, String(m.body ?? "")));
}

function destinationView(kind: string, name: string): View {
  const path = `/api/destinations/${kind}/${encodeURIComponent(name)}`;
  const stats = h("p", { class: "muted", id: "dest-stats" }, "…");
  const list = h("div", { id: "messages", "aria-live": "polite" });
  const pager = h("span", { class: "muted" });
  let offset = 0;
  const isQueue = kind === "queue";
  const prev = h("button", { type: "button", onclick: () => { offset = Math.max(0, offset - PAGE); void browse(); } }, "Previous page");
  const next = h("button", { type: "button", onclick: () => { offset += PAGE; void browse(); } }, "Next page");
  async function act(title: string, text: string, ok: string, run: (input: string) => Promise<string>, input?: { label: string; value: string }) {
    const v = await confirmDialog(title, text, ok, input);
    if (v === null) { announce(`${title}: cancelled`); return; }
    try {
      announce(`${title}: ${await run(v)}`);
    } catch (e) {
      announce(`${title} failed: ${errorText(e)}`, true);
    }
    await browse();
  }
  const actions = h("div", { class: "toolbar" },
    isQueue ? h("button", { type: "button", onclick: () => void browse() }, "Refresh messages") : null,
    isQueue ? h("button", { type: "button", class: "danger", id: "purge", onclick: () => void act("Purge", `Delete every ready message of ${kind} ${name}? Messages in flight stay.`, "Purge",
      async () => `${(await api(`${path}/purge`, { method: "POST" })).purged} messages purged`) }, "Purge…") : null,
    isQueue ? h("button", { type: "button", id: "move", onclick: () => void act("Move", `Move every ready message of ${name} to another destination.`, "Move",
      async (to) => `${(await api(`${path}/move`, { method: "POST", body: { to } })).moved} messages moved to ${to}`,
      { label: "Move to (e.g. /queue/other)", value: "/queue/" }) }, "Move to…") : null,
    isQueue ? h("button", { type: "button", id: "retry", onclick: () => void act("Retry", `Send every dead letter of ${name} back to the destination it came from?`, "Retry",
      async () => { const r = await api(`${path}/retry`, { method: "POST", body: {} }); return `${r.retried} retried, ${r.skipped ?? 0} skipped`; }) }, "Retry dead letters…") : null,
    h("button", { type: "button", class: "danger", id: "delete", onclick: () => void act("Delete", `Delete ${kind} ${name} and all its messages? Its consumers are disconnected.`, "Delete",
      async () => { const r = await api(path, { method: "DELETE" }); location.hash = "#/destinations"; return `deleted (${r.messages ?? 0} messages)`; }) }, "Delete…"));
  mount(`${kind === "queue" ? "Queue" : "Topic"} ${name}`, h("p", {}, h("a", { href: "#/destinations" }, "← All destinations")), stats, actions,
    isQueue ? h("h2", {}, "Messages (browsing consumes nothing)") : null,
    isQueue ? h("div", { class: "toolbar" }, prev, next, pager) : null, list);
  async function browse(): Promise<void> {
    if (!isQueue) { list.replaceChildren(h("p", { class: "muted" }, "Topics keep no messages to browse.")); return; }
    try {
      const r = await api(`${path}/messages?offset=${offset}&limit=${PAGE}`);
      const msgs: Json[] = r?.messages ?? [];
      pager.textContent = msgs.length ? `messages ${offset + 1}–${offset + msgs.length}` : "";
      (prev as HTMLButtonElement).disabled = offset === 0;
      (next as HTMLButtonElement).disabled = msgs.length < PAGE;
      list.replaceChildren(...(msgs.length ? msgs.map(messageView) : [h("p", { id: "no-messages" }, offset ? "No more messages." : "No messages.")]));
    } catch (e) {
      list.replaceChildren(h("p", { class: "error" }, `Cannot browse: ${errorText(e)}`));
    }
  }
  void browse();
  return {
    async refresh() {
      const d = dests.find((x) => x.destination === `/${kind}/${name}`);
      stats.textContent = d
        ? `depth ${depth(d)} (ready ${d.ready}, in flight ${d.inflight}, delayed ${d.delayed}) · consumers ${d.consumers} · enqueued ${d.enqueued} · dequeued ${d.dequeued ?? d.acked}`
        : "not on the master (yet)";
      stats.dataset.depth = d ? String(depth(d)) : "";
    },
  };
}

function tableView(title: string, path: string, cols: [string, (r: Json) => Child][], remove: { label: string; what: (r: Json) => string; path: (r: Json) => string } | null): View {
  const tbody = h("tbody", {});
  mount(title, h("table", {}, h("thead", {}, h("tr", {}, ...cols.map(([c]) => h("th", { scope: "col" }, c)), remove ? h("th", { scope: "col" }, "Action") : null)), tbody));
  return {
    async refresh() {
      let rows: Json[];
      try {
        rows = (await api(path)) ?? [];
      } catch (e) {
        tbody.replaceChildren(h("tr", {}, h("td", { colspan: String(cols.length + 1), class: "error" }, errorText(e))));
        return;
      }
      if (!rows.length) {
        tbody.replaceChildren(h("tr", {}, h("td", { colspan: String(cols.length + 1), class: "muted" }, "None.")));
        return;
      }
      tbody.replaceChildren(...rows.map((r) => h("tr", {}, ...cols.map(([, f]) => h("td", {}, f(r))),
        remove ? h("td", {}, h("button", { type: "button", class: "danger", onclick: async () => {
          const what = remove.what(r);
          if ((await confirmDialog(remove.label, `${remove.label} ${what}?`, remove.label)) === null) { announce(`${remove.label}: cancelled`); return; }
          try {
            await api(remove.path(r), { method: "DELETE" });
            announce(`${remove.label}: ${what} done`);
          } catch (e) {
            announce(`${remove.label} ${what} failed: ${errorText(e)}`, true);
          }
          await this.refresh();
        } }, `${remove.label}…`)) : null)));
    },
  };
}

function connectionsView(): View {
  return tableView("Connections", "/api/connections", [
    ["Id", (c) => String(c.id)], ["Peer", (c) => c.peer], ["Protocol", (c) => `${c.protocol} ${c.version ?? ""}`],
    ["User", (c) => c.user ?? "—"], ["Client id", (c) => c.client_id ?? "—"],
    ["Connected", (c) => fmtTime(c.connected_at_ms)],
    ["Subscriptions", (c) => (c.subscriptions ?? []).map((s: Json) => s.destination).join(", ") || "—"],
    ["In flight", (c) => c.inflight ?? 0], ["Unacked", (c) => c.unacked ?? 0],
  ], { label: "Close", what: (c) => `connection ${c.id} (${c.peer})`, path: (c) => `/api/connections/${encodeURIComponent(String(c.id))}` });
}

function subscriptionsView(): View {
  return tableView("Durable subscriptions", "/api/subscriptions", [
    ["Client id", (s) => s.client_id], ["Name", (s) => s.name], ["Topic", (s) => s.topic],
    ["Selector", (s) => s.selector ?? "—"], ["Active", (s) => (s.active ? "yes" : "no")], ["Pending", (s) => s.pending ?? 0],
  ], { label: "Remove", what: (s) => `subscription ${s.client_id}/${s.name}`, path: (s) => `/api/subscriptions/${encodeURIComponent(s.client_id)}/${encodeURIComponent(s.name)}` });
}

function loginView(): void {
  const user = h("input", { type: "text", id: "login-user", autocomplete: "username", required: true });
  const pass = h("input", { type: "password", id: "login-password", autocomplete: "current-password", required: true });
  const err = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "login", id: "login" },
    h("p", {}, h("label", { for: "login-user" }, "User"), user),
    h("p", {}, h("label", { for: "login-password" }, "Password"), pass),
    h("button", { type: "submit" }, "Log in"), err);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const bytes = new TextEncoder().encode(`${user.value}:${pass.value}`);
    sessionStorage.setItem(AUTH_KEY, btoa(String.fromCharCode(...bytes)));
    sessionStorage.setItem(`${AUTH_KEY}-user`, user.value);
    needLogin = false;
    routeKey = "";
    void tick();
  });
  mount("Log in", h("p", {}, "This broker asks for a user (HTTP basic auth, the admin roles of docs/SECURITY.md)."),
    sessionStorage.getItem(AUTH_KEY) ? h("p", { class: "error" }, "Unknown user or wrong password.") : null, form);
  user.focus();
}

function renderWho(): void {
  const who = $("who");
  const name = sessionStorage.getItem(`${AUTH_KEY}-user`);
  who.replaceChildren(...(name ? [h("span", {}, `logged in as ${name}`), h("button", { type: "button", onclick: () => {
    sessionStorage.removeItem(AUTH_KEY);
    sessionStorage.removeItem(`${AUTH_KEY}-user`);
    location.reload();
  } }, "Log out")] : []));
}

// ---------------------------------------------------------------------------
// Routing and the poll loop

function route(): View {
  const hash = location.hash.replace(/^#/, "") || "/";
  const parts = hash.split("/").filter(Boolean);
  let key = parts[0] ?? "overview";
  if (key === "destination" && parts.length < 3) key = "destinations";
  for (const a of document.querySelectorAll<HTMLAnchorElement>("nav a")) {
    const r = a.dataset.route;
    if (r === key || (r === "destinations" && key === "destination")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  switch (key) {
    case "destinations": return destinationsView();
    case "destination": return destinationView(parts[1], decodeURIComponent(parts.slice(2).join("/")));
    case "connections": return connectionsView();
    case "subscriptions": return subscriptionsView();
    default: return overviewView();
  }
}

let ticking = false;
/** A tick was asked for (a route change, a login) while one ran. */
let again = false;
async function tick(): Promise<void> {
  if (ticking) { again = true; return; }
  ticking = true;
  again = false;
  // Recomputed by this round's requests: a 401 from any sets it.
  needLogin = false;
  try {
    await pollBrokers();
    try {
      if (masterOrigin) await pollDestinations();
    } catch (e) {
      if (!(e instanceof HttpError && e.status === 401)) announce(`destinations: ${errorText(e)}`, true);
    }
    if (needLogin) {
      if (routeKey !== "login") { routeKey = "login"; view = null; loginView(); }
      return;
    }
    renderWho();
    const key = location.hash || "#/";
    if (key !== routeKey || !view) {
      routeKey = key;
      view = route();
      $("main").focus({ preventScroll: true });
    }
    await view.refresh();
  } finally {
    ticking = false;
    if (again) void tick();
  }
}

window.addEventListener("hashchange", () => { routeKey = ""; void tick(); });
document.addEventListener("DOMContentLoaded", () => {
  void tick();
  setInterval(() => void tick(), POLL_MS);
});
