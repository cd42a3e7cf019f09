// understudy dashboard: a client of the daemon's JSON API, like the CLI.
// Reads /api/v1/services, /incidents, /drills, /events; follows /api/v1/events/stream
// (Server-Sent Events: the browser resumes with Last-Event-ID by itself); sends actions as JSON
// POSTs with the bearer token the operator pasted (sessionStorage, this tab only).
// Everything is built with the DOM API and textContent: nothing from the daemon is parsed as HTML.
"use strict";

const API = "/api/v1";
const SPARK_POINTS = 60;
const EVENTS_SHOWN = 200;
const STATUS_EVERY_MS = 2000;

const state = {
  token: sessionStorage.getItem("understudy-token") || "",
  services: [],
  incidents: [],
  drills: [],
  // "service/target" -> [{at, ok, ms}], the recent check results seen by this page
  spark: new Map(),
  events: new Map(),
  lastSeq: 0,
};

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const ms = (v) => (v === null || v === undefined ? "–" : v >= 10000 ? (v / 1000).toFixed(1) + " s" : v.toFixed(1) + " ms");
const span = (v) => (v % 3600000 === 0 ? v / 3600000 + " h" : v % 60000 === 0 ? v / 60000 + " min" : v % 1000 === 0 ? v / 1000 + " s" : v + " ms");
const clock = (t) => (t ? t.slice(11, 23) : "–");
const path = (...parts) => parts.map(encodeURIComponent).join("/");

async function getJson(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.json();
}

// ---- actions ------------------------------------------------------------------------------

function confirmAction(text, askFor) {
  const dlg = $("#confirm");
  $("#confirm-text").textContent = text;
  $("#confirm-extra").hidden = !askFor;
  return new Promise((resolve) => {
    const done = (ok) => {
      $("#confirm-yes").onclick = $("#confirm-no").onclick = dlg.oncancel = null;
      dlg.close();
      resolve(ok ? { lasts: $("#confirm-for").value.trim() } : null);
    };
    $("#confirm-yes").onclick = () => done(true);
    $("#confirm-no").onclick = () => done(false);
    dlg.oncancel = () => done(false);
    dlg.showModal();
  });
}

function showAnswer(ok, text) {
  const a = $("#answer");
  a.hidden = false;
  a.dataset.ok = String(ok);
  a.textContent = text;
}

async function act(what, url, body, askFor) {
  const answer = await confirmAction(what + "?", askFor);
  if (!answer) return;
  if (askFor) body = Object.assign({}, body, { for: answer.lasts });
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  let r;
  try {
    r = await fetch(url, { method: "POST", headers, body: JSON.stringify(body || {}), cache: "no-store" });
  } catch (e) {
    showAnswer(false, what + ": no answer from the daemon (" + e.message + ")");
    return;
  }
  let data = null;
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (r.ok) {
    const summary = data && data.name ? " (active: " + (data.active || "none") + ", epoch " + data.epoch + ")" : "";
    showAnswer(true, what + ": done, HTTP " + r.status + summary);
  } else {
    const why = data && data.error ? data.error : r.statusText;
    const hint = r.status === 401 ? " — paste the API token above (data_dir/api-token) to act" : "";
    showAnswer(false, what + ": refused, HTTP " + r.status + ": " + why + hint);
  }
  refresh();
}

// ---- rendering ----------------------------------------------------------------------------

function recordChecks(services) {
  for (const s of services) {
    for (const t of s.targets) {
      const key = s.name + "/" + t.name;
      const list = state.spark.get(key) || [];
      const c = t.last_check;
      if (c && (!list.length || list[list.length - 1].at !== c.at)) {
        list.push({ at: c.at, ok: c.ok || c.checker_error, ms: c.latency_ms });
        if (list.length > SPARK_POINTS) list.shift();
      }
      state.spark.set(key, list);
    }
  }
}

function sparkline(points) {
  const NS = "http://www.w3.org/2000/svg";
  const w = 120, h = 24;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const title = document.createElementNS(NS, "title");
  const fails = points.filter((p) => !p.ok).length;
  const max = Math.max(1, ...points.map((p) => p.ms));
  title.textContent = `last ${points.length} checks: ${fails} failed, max ${max.toFixed(1)} ms`;
  svg.append(title);
  if (!points.length) return svg;
  const step = w / (SPARK_POINTS - 1);
  const x0 = w - step * (points.length - 1);
  const line = document.createElementNS(NS, "polyline");
  line.setAttribute("points", points.map((p, i) => `${(x0 + i * step).toFixed(1)},${(h - 2 - (p.ms / max) * (h - 4)).toFixed(1)}`).join(" "));
  svg.append(line);
  points.forEach((p, i) => {
    if (p.ok) return;
    const r = document.createElementNS(NS, "rect");
    r.setAttribute("class", "failed");
    r.setAttribute("x", (x0 + i * step - 1).toFixed(1));
    r.setAttribute("y", "0");
    r.setAttribute("width", "2");
    r.setAttribute("height", String(h));
    svg.append(r);
  });
  return svg;
}

function targetRow(s, t) {
  const health = t.healthy ? "up" : "down";
  const rotation = t.forced_down_until ? "forced down until " + clock(t.forced_down_until) : t.enabled ? "in rotation" : "drained";
  const c = t.last_check;
  const last = !c ? "no result yet" : c.checker_error ? "checker error (not counted): " + c.reason : (c.ok ? "pass " : "FAIL ") + c.reason;
  const base = `${API}/services/${path(s.name)}/targets/${path(t.name)}`;
  const actions = el("div", { class: "actions" },
    t.enabled
      ? el("button", { "data-action": "drain", onclick: () => act(`Drain ${t.name} of ${s.name}`, base + "/drain") }, "drain")
      : el("button", { "data-action": "enable", onclick: () => act(`Enable ${t.name} of ${s.name}`, base + "/enable") }, "enable"),
    el("button", { "data-action": "switchover", disabled: t.active && s.pinned === t.name,
      onclick: () => act(`Switch ${s.name} over to ${t.name} and pin it there`, `${API}/services/${path(s.name)}/switchover`, { target: t.name }) }, "switch here"),
    t.forced_down_until
      ? el("button", { "data-action": "unforce", onclick: () => act(`End the force-down of ${t.name}`, base + "/unforce") }, "unforce")
      : el("button", { "data-action": "force-down", class: "danger",
          onclick: () => act(`Drill: force ${t.name} of ${s.name} down (its checks count as failing; it lapses by itself)`, base + "/force-down", { by: "dashboard" }, true) }, "force down"),
  );
  return el("tr", { class: t.active ? "is-active" : "", "data-target": t.name },
    el("td", { "data-field": "name" }, t.name),
    el("td", {}, t.address),
    el("td", { class: health, "data-field": "health" }, health + (t.streak ? ` ×${t.streak}` : "")),
    el("td", { "data-field": "rotation", class: t.enabled && !t.forced_down_until ? "" : "warn" }, rotation),
    el("td", { "data-field": "latency" }, c ? c.latency_ms.toFixed(1) + " ms" : "–"),
    el("td", {}, sparkline(state.spark.get(s.name + "/" + t.name) || [])),
    el("td", { class: "reason" + (c && !c.ok && !c.checker_error ? " fail" : "") }, last),
    el("td", {}, actions),
  );
}

function renderServices() {
  const root = $("#services");
  if (!state.services.length) {
    root.replaceChildren(el("p", { class: "muted" }, "no services configured"));
    return;
  }
  root.replaceChildren(...state.services.map((s) => {
    const active = !s.decided ? "deciding…" : s.active || "none (failing closed)";
    const flags = [];
    if (s.all_down) flags.push(el("span", { class: "badge down", "data-field": "all-down" }, "ALL DOWN"));
    if (s.pinned) flags.push(el("span", { class: "badge warn", "data-field": "pinned" }, "pinned to " + s.pinned));
    if (s.open_incident !== null && s.open_incident !== undefined)
      flags.push(el("span", { class: "badge down", "data-field": "open-incident" }, "incident #" + s.open_incident + " open"));
    const dns = (s.dns || []).map((r) => el("div", { class: "muted" },
      `DNS ${r.name} → ${r.addresses.length ? r.addresses.join(", ") : "NODATA"} (TTL ${r.ttl}${r.suspect ? ", suspect" : ""}, serial ${r.serial})`));
    return el("article", { class: "card", "data-service": s.name },
      el("div", { class: "card-head" },
        el("h3", {}, s.name),
        el("span", {}, "active: ", el("span", { class: "active-name", "data-field": "active" }, active),
          s.active_address ? el("span", { class: "muted" }, " " + s.active_address) : null),
        el("span", { class: "muted", "data-field": "epoch" }, "epoch " + s.epoch),
        ...flags,
        s.pinned ? el("button", { "data-action": "clear", onclick: () => act(`Clear the pin of ${s.name}`, `${API}/services/${path(s.name)}/clear`) }, "clear pin") : null,
      ),
      el("div", { class: "muted" },
        `${s.check.kind} check every ${span(s.check.interval_ms)}, timeout ${span(s.check.timeout_ms)}, fall ${s.check.fall}, rise ${s.check.rise}; ` +
        `failback ${s.failback}${s.failback === "auto" ? " after " + span(s.failback_hold_ms) : ""}, all down: ${s.all_down_policy}`),
      ...dns,
      el("div", { class: "scroll" }, el("table", { class: "targets" },
        el("thead", {}, el("tr", {}, ...["target", "address", "health", "rotation", "latency", "recent checks", "last check", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...s.targets.map((t) => targetRow(s, t))),
      )),
    );
  }));
}

function renderIncidents() {
  const root = $("#incidents");
  const list = state.incidents.slice().sort((a, b) => (b.open - a.open) || (b.id - a.id)).slice(0, 20);
  if (!list.length) {
    root.replaceChildren(el("p", { class: "muted" }, "no incidents"));
    return;
  }
  root.replaceChildren(...list.map((i) => {
    const head = el("div", { class: "card-head" },
      el("h3", {}, "#" + i.id + " " + i.service),
      el("span", { class: "badge " + (i.open ? "down" : "up"), "data-field": "state" }, i.open ? "open" : "closed"),
      el("span", { "data-field": "what" }, (i.failed || "?") + " failed → " + (i.to || "none")),
      el("span", { class: "muted" }, "opened " + i.opened),
      i.open ? el("button", { "data-action": "close", onclick: () => act(`Close incident #${i.id}`, `${API}/incidents/${i.id}/close`) }, "close") : null,
    );
    const figures = el("div", { class: "figures" },
      el("span", {}, "detection ", el("b", {}, ms(i.detection_ms))),
      el("span", {}, "switch ", el("b", {}, ms(i.switch_ms))),
      el("span", {}, "RTO ", el("b", {}, ms(i.rto_ms))),
      i.actuator_failures ? el("span", { class: "fail" }, i.actuator_failures + " actuator failures") : null,
      i.recovered ? el("span", {}, "recovered " + clock(i.recovered)) : null,
      i.closed ? el("span", { class: "muted" }, "closed " + clock(i.closed) + (i.closed_by ? " by " + i.closed_by : "")) : null,
    );
    const timeline = el("ol", { class: "timeline" }, ...i.timeline.map((e) => el("li", {}, el("span", { class: "muted" }, clock(e.time) + " "), e.what)));
    const body = i.open ? timeline : el("details", {}, el("summary", {}, "timeline (" + i.timeline.length + ")"), timeline);
    return el("article", { class: "card", "data-incident": i.id, "data-open": String(i.open), "data-service": i.service }, head, figures, body);
  }));
}

function renderDrills() {
  const root = $("#drills");
  const list = state.drills.slice().sort((a, b) => b.id - a.id).slice(0, 10);
  if (!list.length) {
    root.replaceChildren(el("p", { class: "muted" }, "no drills yet (understudy drill SERVICE)"));
    return;
  }
  root.replaceChildren(el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, ...["#", "service", "fault", "started", "result", "detection", "switch", "RTO"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...list.map((d) => el("tr", { "data-drill": d.id },
      el("td", {}, d.id), el("td", {}, d.service), el("td", {}, d.fault), el("td", {}, d.started),
      el("td", { class: d.ok ? "up" : "fail" }, d.ok ? "ok" : d.error || "missed " + d.missed.join(", ")),
      el("td", {}, ms(d.detection_ms)), el("td", {}, ms(d.switch_ms)), el("td", {}, ms(d.rto_ms))))),
  )));
}

function addEvent(rec, fresh) {
  if (state.events.has(rec.seq)) return;
  state.events.set(rec.seq, rec);
  state.lastSeq = Math.max(state.lastSeq, rec.seq);
  const li = el("li", { value: rec.seq, "data-seq": rec.seq, "data-kind": rec.event.kind, class: fresh ? "new" : "" },
    el("span", { class: "muted" }, clock(rec.time) + " "), rec.summary);
  const list = $("#events");
  // newest first; the stream delivers in order, so a new one goes on top
  list.prepend(li);
  while (list.children.length > EVENTS_SHOWN) {
    const old = list.lastElementChild;
    state.events.delete(Number(old.dataset.seq));
    old.remove();
  }
  $("#events-count").textContent = "(last #" + state.lastSeq + ")";
}

// ---- loading ------------------------------------------------------------------------------

let refreshing = null;
let again = false;
async function refresh() {
  if (refreshing) { again = true; return refreshing; }
  refreshing = (async () => {
    try {
      const [services, incidents, drills] = await Promise.all([getJson(API + "/services"), getJson(API + "/incidents"), getJson(API + "/drills")]);
      state.services = services; state.incidents = incidents; state.drills = drills;
      recordChecks(services);
      renderServices(); renderIncidents(); renderDrills();
    } catch (e) {
      showAnswer(false, "cannot read the API: " + e.message);
    }
  })();
  await refreshing;
  refreshing = null;
  if (again) { again = false; return refresh(); }
}

// Check results are not events (there are far too many): latency sparklines come from
// re-reading the services while the page is visible. Everything else follows the stream.
async function pollStatus() {
  if (document.visibilityState === "visible" && !refreshing) {
    try {
      const services = await getJson(API + "/services");
      state.services = services;
      recordChecks(services);
      renderServices();
    } catch (_) { /* the stream badge shows the connection */ }
  }
  setTimeout(pollStatus, STATUS_EVERY_MS);
}

let debounce = null;
function follow(since) {
  const live = $("#live");
  const src = new EventSource(API + "/events/stream?since=" + since);
  let opened = false;
  src.onopen = () => {
    live.dataset.state = "live"; live.textContent = "live";
    // After a reconnect (daemon restarted, network blip) the stream resumes by itself from
    // Last-Event-ID; re-read the state too, which moved meanwhile.
    if (opened) refresh();
    opened = true;
  };
  src.onerror = () => { live.dataset.state = "reconnecting"; live.textContent = "reconnecting…"; };
  // Every recorded event comes as a plain message (its kind is in the data).
  src.onmessage = onEvent;
}

function onEvent(m) {
  let rec;
  try { rec = JSON.parse(m.data); } catch (_) { return; }
  addEvent(rec, true);
  clearTimeout(debounce);
  debounce = setTimeout(refresh, 100);
}

function setToken(t) {
  state.token = t;
  if (t) sessionStorage.setItem("understudy-token", t); else sessionStorage.removeItem("understudy-token");
  $("#token").value = "";
  $("#token").placeholder = t ? "token set (this tab only)" : "paste to enable actions";
  $("#token-state").textContent = t ? "actions enabled" : "read-only";
}

async function start() {
  setToken(state.token);
  $("#token-form").addEventListener("submit", (e) => { e.preventDefault(); setToken($("#token").value.trim()); });
  $("#token-forget").addEventListener("click", () => setToken(""));
  await refresh();
  let since = 0;
  try {
    const log = await getJson(API + "/event-log");
    const from = Math.max(0, log.durable_seq - 50);
    const page = await getJson(API + "/events?since=" + from + "&limit=50");
    for (const rec of page.events) addEvent(rec, false);
    since = page.next;
  } catch (e) {
    showAnswer(false, "cannot read the event log: " + e.message);
  }
  follow(since);
  setTimeout(pollStatus, STATUS_EVERY_MS);
}

start();
