// gatewatch console: plain JavaScript, no build step, nothing loaded from another host.
// Data comes from the sidecar's own APIs (/api/v2 = Alertmanager, /api/v1/console/*); every
// value is put into the page with textContent, never as HTML.
"use strict";

const state = { csrf: null, authRequired: false, writesAllowed: false, page: "alerts", timer: null };
const PAGES = ["alerts", "silences", "deployments", "notifications"];

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function say(text) { $("status").textContent = text; }

async function api(method, url, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(url, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) { showLogin(); throw new Error("not logged in"); }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  if (!response.ok) {
    const message = data && data.error ? data.error : (typeof data === "string" ? data : response.statusText);
    throw new Error(message);
  }
  return data;
}

// -- formatting ---------------------------------------------------------------------------
function since(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 90) return `${Math.round(seconds)}s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)}m ago`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)}h ago`;
  return `${(seconds / 86400).toFixed(1)}d ago`;
}

function valueText(value, unit) {
  if (value === null || value === undefined) return "";
  if (typeof value !== "number") return String(value);
  if (unit === "ratio") return `${(value * 100).toFixed(1)} %`;
  if (unit === "USD") return `$${value.toFixed(2)}`;
  const shown = Math.abs(value) >= 100 ? value.toFixed(0) : Number(value.toPrecision(3)).toString();
  return unit ? `${shown} ${unit}` : shown;
}

function pct(value) { return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)} %`; }

function labelList(labels, skip) {
  return el("div", { class: "labels" }, Object.entries(labels || {})
    .filter(([key]) => !(skip || []).includes(key))
    .map(([key, value]) => el("span", { class: "label", text: `${key}=${value}` })));
}

function table(caption, columns, rows) {
  return el("div", { class: "table-wrap", role: "region", "aria-label": caption, tabindex: "0" },
    el("table", {},
      el("caption", { text: caption }),
      el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", text: c })))),
      el("tbody", {}, rows.length ? rows : [el("tr", {}, el("td", { colspan: columns.length, text: "None." }))])));
}

function sparkline(points, label) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const max = Math.max(1, ...points);
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${points.length - 1} 24`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${label}: ${points.reduce((a, b) => a + b, 0)} requests in the last hour, ` +
    `at most ${Math.max(0, ...points)} per minute`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.map((v, i) => `${i},${(23 - (v / max) * 22).toFixed(1)}`).join(" "));
  svg.append(line);
  return svg;
}

// -- login --------------------------------------------------------------------------------
function showLogin() {
  $("login").hidden = false;
  for (const page of PAGES) $(`page-${page}`).hidden = true;
  $("logout").hidden = true;
  $("token").focus();
}

async function loadSession() {
  const session = await api("GET", "/console/session");
  state.csrf = session.csrf;
  state.authRequired = session.auth_required;
  state.writesAllowed = session.writes_allowed;
  $("logout").hidden = !(session.auth_required && session.authenticated);
  return session.authenticated;
}

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    const answer = await api("POST", "/console/login", { token: $("token").value });
    state.csrf = answer.csrf;
    $("token").value = "";
    $("login").hidden = true;
    $("logout").hidden = false;
    route();
  } catch (error) {
    $("login-error").textContent = `Login failed: ${error.message}`;
  }
}

async function logout() {
  await api("POST", "/console/logout");
  state.csrf = null;
  showLogin();
}

// -- alerts -------------------------------------------------------------------------------
function silenceFrom(alert) {
  const keep = ["alertname", "model_group", "deployment", "aws_account", "aws_region", "model_id", "instance",
    "job", "severity"];
  const lines = Object.entries(alert.labels).filter(([k]) => keep.includes(k))
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  $("silence-matchers").value = (lines.length ? lines : Object.entries(alert.labels)
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)).join("\n");
  $("silence-comment").value = "";
  location.hash = "#silences";
  setTimeout(() => $("silence-comment").focus(), 0);
}

async function renderAlerts() {
  const data = await api("GET", "/api/v1/console/alerts");
  const alerts = data.alerts;
  const counts = { firing: 0, pending: 0, silenced: 0 };
  for (const a of alerts) {
    if (a.muted) counts.silenced += 1; else counts[a.state] = (counts[a.state] || 0) + 1;
  }
  $("alerts-summary").textContent =
    `${counts.firing} firing, ${counts.pending} pending, ${counts.silenced} silenced or inhibited`;
  const groups = new Map();
  for (const a of alerts) {
    const name = a.labels.alertname || "(no alertname)";
    if (!groups.has(name)) groups.set(name, []);
    groups.get(name).push(a);
  }
  const list = $("alerts-list");
  list.replaceChildren();
  if (!alerts.length) list.append(el("p", { text: "No pending or firing alerts." }));
  let index = 0;
  for (const [name, items] of groups) {
    const headingId = `group-${index++}`;
    list.append(el("section", { class: "group", "aria-labelledby": headingId },
      el("h2", { id: headingId, text: `${name} (${items.length})` }),
      items.map((a) => {
        const shown = a.muted ? "silenced" : a.state;
        const summary = a.annotations.summary || a.annotations.description || "";
        return el("article", { class: "alert", "aria-label": `${name} ${shown}`, "data-fingerprint": a.fingerprint },
          el("div", {}, el("span", { class: `state state-${shown}`, text: shown }), " ",
            el("strong", { text: summary || name })),
          labelList(a.labels, ["alertname"]),
          el("div", { class: "meta" },
            a.value !== null && a.value !== undefined ? `value ${valueText(a.value, a.unit)} · ` : "",
            `active since ${a.activeSince ? new Date(a.activeSince).toLocaleString() : "?"} ` +
            `(${since(a.activeSince)})`,
            a.silencedBy.length ? ` · silenced by ${a.silencedBy.join(", ")}` : "",
            a.inhibitedBy.length ? " · inhibited" : "",
            a.receivers.length ? ` · to ${a.receivers.join(", ")}` : ""),
          el("div", { class: "actions" },
            a.runbookURL ? el("a", { href: a.runbookURL, rel: "noopener noreferrer", target: "_blank",
              text: "Runbook" }) : null,
            a.generatorURL ? el("a", { href: a.generatorURL, rel: "noopener noreferrer", target: "_blank",
              text: "Source" }) : null,
            a.muted || !state.writesAllowed ? null : el("button", { type: "button",
              "aria-label": `Silence ${name} ${Object.values(a.labels).join(" ")}`,
              onclick: () => silenceFrom(a) }, "Silence")));
      })));
  }
}

// -- silences -----------------------------------------------------------------------------
async function renderSilences() {
  const silences = await api("GET", "/api/v2/silences");
  const rows = silences.map((s) => el("tr", { "data-silence": s.id },
    el("td", {}, el("span", { class: `state state-${s.status.state}`, text: s.status.state })),
    el("td", {}, el("div", { class: "labels" }, s.matchers.map((m) => el("span", { class: "label",
      text: `${m.name}${m.isEqual === false ? "!" : "="}${m.isRegex ? "~" : ""}"${m.value}"` })))),
    el("td", { text: new Date(s.startsAt).toLocaleString() }),
    el("td", { text: new Date(s.endsAt).toLocaleString() }),
    el("td", { text: s.createdBy }),
    el("td", { text: s.comment }),
    el("td", {}, s.status.state === "expired" || !state.writesAllowed ? "" : el("button", { type: "button",
      "aria-label": `Expire silence ${s.comment || s.id}`, onclick: () => expireSilence(s.id) }, "Expire"))));
  $("silences-list").replaceChildren(table("Silences",
    ["State", "Matchers", "Starts", "Ends", "Created by", "Comment", "Action"], rows));
}

async function createSilence(event) {
  event.preventDefault();
  $("silence-error").textContent = "";
  const matchers = $("silence-matchers").value.split("\n").map((l) => l.trim()).filter(Boolean);
  try {
    const answer = await api("POST", "/api/v2/silences", { matchers, duration: $("silence-duration").value.trim(),
      createdBy: $("silence-author").value.trim() || "console", comment: $("silence-comment").value.trim() });
    say(`Silence ${answer.silenceID} created.`);
    $("silence-matchers").value = "";
    $("silence-comment").value = "";
    await renderSilences();
  } catch (error) {
    $("silence-error").textContent = `Not created: ${error.message}`;
  }
}

async function expireSilence(id) {
  try {
    await api("DELETE", `/api/v2/silence/${encodeURIComponent(id)}`);
    say(`Silence ${id} expired.`);
    await renderSilences();
  } catch (error) {
    say(`Could not expire the silence: ${error.message}`);
  }
}

// -- deployments --------------------------------------------------------------------------
async function renderDeployments() {
  const data = await api("GET", "/api/v1/console/deployments");
  const list = $("deployments-list");
  list.replaceChildren();
  if (!data.groups.length) list.append(el("p", { text: "No deployments known yet." }));
  for (const group of data.groups) {
    const rows = group.deployments.map((d) => el("tr", { "data-deployment": d.id },
      el("td", {}, el("code", { text: d.id }), el("div", { class: "meta", text: d.model || "" })),
      el("td", { text: d.aws_account }),
      el("td", { text: d.aws_region }),
      el("td", {}, el("span", { class: `state state-${d.state.replace(" ", "-")}`, text: d.state }),
        d.cooldown_seconds_left ? ` (${Math.round(d.cooldown_seconds_left)}s left)` : ""),
      el("td", { class: "num", text: (d.requests_per_second || 0).toFixed(2) }),
      el("td", { class: "num", text: pct(d.error_ratio) }),
      el("td", { class: "num", text: d.p95_latency_seconds === null || d.p95_latency_seconds === undefined ? "–"
        : `≤ ${d.p95_latency_seconds} s` }),
      el("td", { class: "num", text: pct(d.rate_limited_ratio) }),
      el("td", { class: "num", text: pct(d.quota_headroom) }),
      el("td", { class: "num", text: `$${(d.spend_today || 0).toFixed(4)}` }),
      el("td", {}, sparkline(d.sparkline, `Requests per minute for ${d.id}`))));
    list.append(table(`Model group ${group.model_group}`, ["Deployment", "Account", "Region", "State",
      "Req/s", "Errors", "p95", "429s", "Quota left", "Spend today", "Last hour"], rows));
  }
}

// -- notifications ------------------------------------------------------------------------
async function renderNotifications() {
  const data = await api("GET", "/api/v1/console/notifications");
  const list = $("notifications-list");
  if (!data.enabled) {
    list.replaceChildren(el("p", { text: "No receivers configured (notify): alerts go to the log." }));
    return;
  }
  list.replaceChildren(
    el("p", { class: "summary", text: `${data.depth} pending, ${data.dead_count} dead letters` }),
    table("Pending", ["Title", "Receiver", "Target", "Attempts", "Next attempt", "Last error"],
      data.pending.map((r) => el("tr", {}, el("td", { text: r.title }), el("td", { text: r.receiver }),
        el("td", { text: r.target }), el("td", { class: "num", text: r.attempts }),
        el("td", { text: r.next_attempt ? new Date(r.next_attempt).toLocaleString() : "" }),
        el("td", { text: r.last_error || "" })))),
    table("Sent (latest)", ["Notification", "Receiver", "Target", "Sent"],
      data.sent.map((r) => el("tr", {}, el("td", {}, el("code", { text: r.id })), el("td", { text: r.receiver }),
        el("td", { text: r.target }), el("td", { text: new Date(r.sent_at).toLocaleString() })))),
    table("Dead letters", ["Title", "Receiver", "Target", "Attempts", "Reason", "Died", "Action"],
      data.dead.map((r) => el("tr", {}, el("td", { text: r.title }), el("td", { text: r.receiver }),
        el("td", { text: r.target }), el("td", { class: "num", text: r.attempts }), el("td", { text: r.reason }),
        el("td", { text: new Date(r.died_at).toLocaleString() }),
        el("td", {}, state.writesAllowed ? el("button", { type: "button", "aria-label": `Retry ${r.title}`,
          onclick: () => retry(r.id) }, "Retry") : "")))));
}

async function retry(id) {
  try {
    const answer = await api("POST", `/api/v1/notifications/dead/${encodeURIComponent(id)}/retry`);
    say(`Requeued ${answer.requeued} notification(s).`);
    await renderNotifications();
  } catch (error) {
    say(`Retry failed: ${error.message}`);
  }
}

// -- navigation ---------------------------------------------------------------------------
const RENDER = { alerts: renderAlerts, silences: renderSilences, deployments: renderDeployments,
  notifications: renderNotifications };

async function refresh() {
  try {
    await RENDER[state.page]();
  } catch (error) {
    if (error.message !== "not logged in") say(`Could not load ${state.page}: ${error.message}`);
  }
}

function route() {
  const wanted = (location.hash || "#alerts").slice(1);
  state.page = PAGES.includes(wanted) ? wanted : "alerts";
  for (const page of PAGES) $(`page-${page}`).hidden = page !== state.page;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === state.page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${state.page[0].toUpperCase()}${state.page.slice(1)} · gatewatch`;
  refresh();
  clearInterval(state.timer);
  state.timer = setInterval(() => { if (state.page !== "silences") refresh(); }, 10000);
}

async function start() {
  $("login-form").addEventListener("submit", login);
  $("silence-form").addEventListener("submit", createSilence);
  $("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  if (new URLSearchParams(location.search).get("login") === "failed") {
    $("login-error").textContent = "Login failed: wrong token";
  }
  try {
    if (!(await loadSession())) { showLogin(); return; }
  } catch (error) {
    say(`Could not reach gatewatch: ${error.message}`);
    return;
  }
  if (!state.writesAllowed) $("silence-form").hidden = true;
  route();
}

document.addEventListener("DOMContentLoaded", start);
