// stgcmt dashboard: a small script of its own (no framework, no CDN). The token lives in this
// tab's sessionStorage and goes out as an Authorization header; every element is built with
// DOM calls and text nodes, so nothing from the archive is ever parsed as HTML.
"use strict";

const ROLE = document.body.dataset.role;
const AUTH_KEY = "stgcmt-authorization";
const POLL = Math.max(1, Number(new URLSearchParams(location.search).get("poll")) || 5) * 1000;
const SCP_STATES = ["received", "verifying", "report_pending", "delivered", "given_up"];
const SCU_STATES = ["storing", "pending", "committed", "failed", "aborted"];
const STATES = ROLE === "scp" ? SCP_STATES : SCU_STATES;
let timer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function when(epoch) {
  if (!epoch) return "–";
  const d = new Date(epoch * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function status(s) {
  return s ? `${s.hex} ${s.words}` : "";
}

class Unauthorized extends Error {}

async function api(path, method) {
  const response = await fetch(path, {
    method: method || "GET",
    headers: { Authorization: sessionStorage.getItem(AUTH_KEY) || "" },
  });
  const body = await response.json().catch(() => ({ error: "bad-response", detail: "" }));
  if (response.status === 401) throw new Unauthorized(body.detail);
  if (!response.ok) throw new Error(`${response.status} ${body.error}: ${body.detail}`);
  return body;
}

// -- sign in ----------------------------------------------------------------------------------

function showLogin(message) {
  clearTimeout(timer);
  document.getElementById("main").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
}

function setupLogin() {
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = document.getElementById("login-token").value.trim();
    const user = document.getElementById("login-user").value;
    const password = document.getElementById("login-password").value;
    const value = token ? `Bearer ${token}` : `Basic ${btoa(`${user}:${password}`)}`;
    sessionStorage.setItem(AUTH_KEY, value);
    document.getElementById("login").hidden = true;
    document.getElementById("main").hidden = false;
    route();
  });
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(AUTH_KEY);
    showLogin("Signed out.");
  });
}

// -- views ------------------------------------------------------------------------------------

function chart(title, minutes, value, unit) {
  const width = 360, height = 120, left = 30, bottom = 16;
  const values = minutes.map(value);
  const top = Math.max(1, ...values);
  const step = (width - left) / Math.max(1, values.length);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  add("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom, class: "axis" });
  add("text", { x: 0, y: 10 }, `${Math.round(top * 100) / 100}${unit}`);
  add("text", { x: 0, y: height - bottom }, "0");
  values.forEach((v, i) => {
    const h = (v / top) * (height - bottom - 4);
    const bar = add("rect", {
      x: left + i * step, y: height - bottom - h, width: Math.max(1, step - 1), height: h,
      class: "bar",
    });
    const tip = document.createElementNS(ns, "title");
    tip.textContent = `${when(minutes[i].at)}: ${Math.round(v * 1000) / 1000}${unit}`;
    bar.append(tip);
  });
  if (minutes.length) {
    add("text", { x: left, y: height - 2 }, when(minutes[0].at).slice(11, 16));
    add("text", { x: width - 30, y: height - 2 }, when(minutes[minutes.length - 1].at).slice(11, 16));
  }
  return el("div", { class: "chart" }, el("h3", {}, title), svg);
}

async function overview(main) {
  const [stat, peers, timeline] = await Promise.all([
    api("/api/v1/status"), api("/api/v1/peers"), api("/api/v1/timeline?minutes=60"),
  ]);
  const counts = stat.transactions_by_state;
  const cards = STATES.map((s) =>
    el("a", { href: `#/transactions?state=${s}`, class: "card", id: `count-${s}` },
      el("div", { class: `n state-${s}` }, counts[s] ?? 0), el("div", { class: "label" }, s.replace("_", " "))));
  if (ROLE === "scp") {
    cards.push(el("div", { class: "card", id: "count-instances" },
      el("div", { class: "n" }, stat.instances), el("div", { class: "label" },
        `instances (${stat.instances_durable} durable)`)));
    // copies a failed sync may have lost: never committed until the modality sends them again
    const unsafe = stat.instances_unsafe;
    cards.push(el("a", { href: "#/instances?unsafe=true", id: "count-unsafe",
      class: unsafe ? "card alert" : "card", title: unsafe ? "have the modality send these instances again" : null },
      el("div", { class: unsafe ? "n bad" : "n" }, unsafe), el("div", { class: "label" }, "unsafe copies (send again)")));
  }
  const minutes = timeline.minutes;
  const charts = ROLE === "scp" ? [
    chart("C-STOREs per minute", minutes, (m) => m.stores, ""),
    chart("Commitments (N-ACTION) per minute", minutes, (m) => m.commitments, ""),
    chart("N-ACTION → report latency (mean, s)", minutes,
      (m) => (m.reports ? m.latency_sum / m.reports : 0), " s"),
  ] : [
    chart("Associations accepted per minute", minutes, (m) => m.associations, ""),
    chart("Associations rejected per minute", minutes, (m) => m.rejected, ""),
  ];
  main.replaceChildren(
    el("h2", {}, "Transactions by state"), el("div", { class: "cards" }, cards),
    el("h2", {}, "Last hour"), el("div", { class: "charts" }, charts),
    el("h2", {}, ROLE === "scp" ? "Peers" : "Archives"), peerTable(peers.items));
}

function peerTable(items) {
  if (ROLE === "scp") {
    return el("table", { id: "peers" },
      el("tr", {}, ["AE", "configured", "last association", "transactions", "reports pending",
        "given up", "last delivered", "last delivery error", "next attempt"].map((h) => el("th", {}, h))),
      items.map((p) => el("tr", { class: p.reports_pending ? "warn" : "" },
        el("td", {}, el("a", { href: `#/transactions?calling_aet=${encodeURIComponent(p.aet)}` }, p.aet)),
        el("td", {}, p.configured || "unknown AE"),
        el("td", {}, p.last_association ?
          `${when(p.last_association.at)} ${p.last_association.outcome} from ${p.last_association.host}` : "–"),
        el("td", {}, p.transactions), el("td", {}, p.reports_pending), el("td", {}, p.reports_given_up),
        el("td", {}, when(p.last_delivered_at)), el("td", { class: "error" }, p.last_delivery_error || ""),
        el("td", {}, when(p.next_attempt_at)))));
  }
  return el("table", { id: "peers" },
    el("tr", {}, ["archive", "transactions", "pending", "last sent", "last report", "last error"]
      .map((h) => el("th", {}, h))),
    items.map((p) => el("tr", {},
      el("td", {}, `${p.archive_aet}@${p.archive_host}:${p.archive_port}`), el("td", {}, p.transactions),
      el("td", {}, p.pending), el("td", {}, when(p.last_sent_at)), el("td", {}, when(p.last_report_at)),
      el("td", { class: "error" }, p.last_error || ""))));
}

const FILTERS = ROLE === "scp"
  ? ["calling_aet", "transaction_uid", "patient_id", "study_uid", "since", "until"]
  : ["archive_aet", "transaction_uid", "since", "until"];

async function transactions(main, params) {
  const page = await api(`/api/v1/transactions?${params}`);
  const form = el("form", { class: "filters", id: "filters" },
    el("label", {}, "state", el("select", { name: "state" }, el("option", { value: "" }, "any"),
      STATES.map((s) => el("option", { value: s, selected: params.get("state") === s }, s)))),
    FILTERS.map((f) => el("label", {}, f.replace("_", " "),
      el("input", { name: f, value: params.get(f) || "", size: f.endsWith("uid") ? 30 : 14 }))),
    el("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) next.set(k, v);
    location.hash = `#/transactions?${next}`;
  });
  const rows = page.items.map((t) => ROLE === "scp"
    ? el("tr", {},
      el("td", {}, el("a", { href: `#/tx/${t.id}` }, `#${t.id}`)),
      el("td", { class: `state-${t.state}` }, t.state_words), el("td", {}, t.calling_aet),
      el("td", {}, t.n_refs), el("td", {}, t.n_committed ?? "–"), el("td", {}, t.n_failed ?? "–"),
      el("td", {}, t.attempts), el("td", {}, when(t.received_at)), el("td", { class: "uid" }, t.transaction_uid),
      el("td", { class: "error" }, t.state === "delivered" ? "" : t.last_error || ""))
    : el("tr", {},
      el("td", {}, el("a", { href: `#/tx/${t.id}` }, `#${t.id}`)),
      el("td", { class: `state-${t.state}` }, t.state), el("td", {}, t.archive),
      el("td", {}, t.n_files), el("td", {}, t.n_committed ?? "–"), el("td", {}, t.n_failed ?? "–"),
      el("td", {}, when(t.created_at)), el("td", { class: "uid" }, t.transaction_uid),
      el("td", { class: "error" }, t.last_error || "")));
  const heads = ROLE === "scp"
    ? ["#", "state", "from", "refs", "committed", "failed", "attempts", "received", "Transaction UID", "last error"]
    : ["#", "state", "archive", "files", "committed", "failed", "created", "Transaction UID", "last error"];
  main.replaceChildren(el("h2", {}, `Transactions (${page.total})`), form,
    el("table", { id: "transactions" }, el("tr", {}, heads.map((h) => el("th", {}, h))), rows),
    pager(page, params, "#/transactions"));
}

function pager(page, params, base) {
  const go = (offset) => {
    const next = new URLSearchParams(params);
    next.set("offset", Math.max(0, offset));
    return `${base}?${next}`;
  };
  const last = page.offset + page.items.length;
  return el("div", { class: "pager" },
    page.offset > 0 ? el("a", { href: go(page.offset - page.limit) }, "← newer") : null,
    `${page.total ? page.offset + 1 : 0}–${last} of ${page.total}`,
    last < page.total ? el("a", { href: go(page.offset + page.limit) }, "older →") : null);
}

function fields(pairs) {
  return el("dl", { class: "fields" }, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "–")]));
}

function actionButton(label, id, path, confirmText) {
  return el("button", {
    type: "button", class: "action", id: `action-${path}`,
    onclick: async () => {
      if (confirmText && !window.confirm(confirmText)) return;
      const message = document.getElementById("message");
      try {
        const answer = await api(`/api/v1/transactions/${id}/${path}`, "POST");
        message.className = "ok";
        message.textContent = `${label}: ${answer.detail}`;
      } catch (error) {
        message.className = "error";
        message.textContent = `${label}: ${error.message}`;
      }
      setTimeout(route, 700);
    },
  }, label);
}

async function transaction(main, id) {
  const t = await api(`/api/v1/transactions/${id}`);
  const message = el("p", { id: "message" }, document.getElementById("message")?.textContent || "");
  if (ROLE === "scp") {
    const pending = t.state === "report_pending";
    main.replaceChildren(
      el("h2", {}, `Transaction #${t.id} `, el("span", { class: `state-${t.state}`, id: "tx-state" }, t.state_words)),
      fields([["Transaction UID", t.transaction_uid], ["from", `${t.calling_aet} (${t.peer_host || "?"})`],
        ["received", when(t.received_at)], ["references", t.n_refs], ["committed", t.n_committed],
        ["failed", t.n_failed], ["attempts", t.delivery.attempts], ["last error", t.delivery.last_error],
        ["next attempt", when(t.delivery.next_attempt_at)], ["delivered", when(t.delivery.delivered_at)],
        ["delivered via", t.delivery.delivered_via]]),
      el("div", {},
        pending ? actionButton("Retry now", t.id, "retry") : null,
        pending ? actionButton("Re-verify", t.id, "reverify") : null,
        pending ? actionButton("Give up", t.id, "give-up",
          "Give this report up? The requester will never receive it.") : null),
      message,
      el("h2", {}, `Delivery attempts (${t.delivery.history.length} of ${t.delivery.attempts})`),
      el("table", { id: "attempts" }, el("tr", {}, ["when", "node", "association", "outcome", "error", "next attempt"].map((h) => el("th", {}, h))),
        t.delivery.history.map((a) => el("tr", {}, el("td", {}, when(a.at)), el("td", {}, a.node || ""), el("td", {}, a.via || ""),
          el("td", {}, a.outcome), el("td", { class: a.error ? "error" : "" }, a.error || ""), el("td", {}, when(a.next_attempt_at))))),
      el("h2", {}, `References (${t.references.length} of ${t.n_refs})`),
      el("table", { id: "references" },
        el("tr", {}, ["#", "SOP Instance UID", "SOP Class UID", "outcome", "Failure Reason", "Study UID", "Patient ID", "durable"]
          .map((h) => el("th", {}, h))),
        t.references.map((r) => el("tr", {},
          el("td", {}, r.seq), el("td", { class: "uid" }, r.sop_instance_uid), el("td", { class: "uid" }, r.sop_class_uid),
          el("td", { class: r.outcome }, r.outcome), el("td", { class: "failed" }, status(r.failure_reason)),
          el("td", { class: "uid" }, r.study_instance_uid || ""), el("td", {}, r.patient_id || ""),
          el("td", {}, r.in_index ? (r.durable ? "yes" : "no") : "not held")))));
    return;
  }
  main.replaceChildren(
    el("h2", {}, `Transaction #${t.id} `, el("span", { class: `state-${t.state}`, id: "tx-state" }, t.state)),
    fields([["Transaction UID", t.transaction_uid], ["archive", t.archive], ["created", when(t.created_at)],
      ["requested", when(t.requested_at)], ["reported", when(t.reported_at)], ["report via", t.report_via],
      ["on commit", t.on_commit], ["last error", t.last_error]]),
    el("div", {},
      t.state === "pending" ? actionButton("Request commitment again", t.id, "request-commitment") : null,
      t.state === "failed" ? actionButton("Re-send failed files", t.id, "resend-failed") : null),
    message,
    el("h2", {}, `Files (${t.files.length})`),
    el("table", { id: "references" },
      el("tr", {}, ["#", "path", "SOP Instance UID", "state", "C-STORE", "Failure Reason", "action"].map((h) => el("th", {}, h))),
      t.files.map((f) => el("tr", {}, el("td", {}, f.seq), el("td", { class: "uid" }, f.path),
        el("td", { class: "uid" }, f.sop_instance_uid), el("td", { class: f.state }, f.state),
        el("td", {}, status(f.store_status) || f.store_error || ""), el("td", { class: "failed" }, status(f.failure_reason)),
        el("td", {}, [f.action, f.action_note].filter(Boolean).join(": "))))));
}

async function instances(main, params) {
  const keys = ["patient_id", "study_uid", "series_uid", "sop_instance_uid"];
  const form = el("form", { class: "filters", id: "search" },
    keys.map((k) => el("label", {}, k.replaceAll("_", " "),
      el("input", { name: k, value: params.get(k) || "", size: k === "patient_id" ? 14 : 30 }))),
    el("label", {}, "unsafe", el("select", { name: "unsafe" },
      [["", "any"], ["true", "yes: send again"], ["false", "no"]].map(([v, label]) =>
        el("option", { value: v, selected: (params.get("unsafe") || "") === v }, label)))),
    el("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) next.set(k, v);
    location.hash = `#/instances?${next}`;
  });
  const page = await api(`/api/v1/instances?${params}`);
  main.replaceChildren(el("h2", {}, `Instances (${page.total})`), form,
    el("table", { id: "instances" },
      el("tr", {}, ["SOP Instance UID", "Patient ID", "Study UID", "Series UID", "bytes", "from", "received", "durable",
        "unsafe"].map((h) => el("th", {}, h))),
      page.items.map((i) => el("tr", {}, el("td", { class: "uid" }, i.sop_instance_uid), el("td", {}, i.patient_id || ""),
        el("td", { class: "uid" }, el("a", { href: `#/transactions?study_uid=${encodeURIComponent(i.study_instance_uid || "")}` },
          i.study_instance_uid || "")),
        el("td", { class: "uid" }, i.series_instance_uid || ""), el("td", {}, i.size), el("td", {}, i.source_aet || ""),
        el("td", {}, when(i.received_at)), el("td", { class: i.durable ? "ok" : "warn" }, i.durable ? "yes" : "no"),
        el("td", { class: i.unsafe ? "bad" : "" }, i.unsafe ? "yes: send again" : "no")))),
    pager(page, params, "#/instances"));
}

async function peers(main) {
  const page = await api("/api/v1/peers");
  main.replaceChildren(el("h2", {}, ROLE === "scp" ? "Peers" : "Archives"), peerTable(page.items));
}

// -- routing ----------------------------------------------------------------------------------

const VIEWS = [["overview", "Overview"], ["transactions", "Transactions"], ...(ROLE === "scp"
  ? [["instances", "Instances"]] : []), ["peers", ROLE === "scp" ? "Peers" : "Archives"]];

async function route() {
  clearTimeout(timer);
  const [path, query] = (location.hash.slice(2) || "overview").split("?");
  const params = new URLSearchParams(query || "");
  const [view, id] = path.split("/");
  const nav = document.getElementById("nav");
  nav.replaceChildren(...VIEWS.map(([v, label]) =>
    el("a", { href: `#/${v}`, class: v === view || (view === "tx" && v === "transactions") ? "active" : "" }, label)));
  const main = document.getElementById("main");
  try {
    if (view === "tx") await transaction(main, Number(id));
    else if (view === "transactions") await transactions(main, params);
    else if (view === "instances") await instances(main, params);
    else if (view === "peers") await peers(main);
    else await overview(main);
    document.getElementById("logout").hidden = false;
    if (view === "overview" || view === "tx" || view === "peers" || !view) timer = setTimeout(route, POLL);
  } catch (error) {
    if (error instanceof Unauthorized) {
      showLogin(sessionStorage.getItem(AUTH_KEY) ? "Those credentials were refused." : "");
      return;
    }
    main.replaceChildren(el("p", { class: "error", id: "error" }, error.message));
    timer = setTimeout(route, POLL);
  }
}

async function start() {
  setupLogin();
  const health = await fetch("/healthz").then((r) => r.json()).catch(() => ({}));
  document.getElementById("aet").textContent = health.aet || "";
  window.addEventListener("hashchange", route);
  if (!sessionStorage.getItem(AUTH_KEY)) showLogin("");
  else route();
}

start();
