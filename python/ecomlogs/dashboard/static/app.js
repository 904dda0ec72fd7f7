// The dashboard page: polls /api/snapshot and draws it (plain DOM and SVG; nothing loaded from elsewhere).
"use strict";

const HISTORY = 180;                       // chart samples kept (one per poll)
const history = { producer: [], processor: [], loader: [] };
let intervalMs = 1000;

const $ = (sel) => document.querySelector(sel);
// No value: null (the server sends NaN and infinities from a metrics endpoint as null), or not a number.
const none = (n) => n === null || n === undefined || !Number.isFinite(Number(n));
const int = (n) => none(n) ? "–" : Math.round(n).toLocaleString("en-US");
const rate = (n) => none(n) ? "–" : (n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(1));
const pct = (r) => none(r) ? "–" : (Number(r) * 100).toFixed(1) + "%";

// An exact decimal string ("12345.60") with thousands separators, digits untouched.
function decimal(text) {
  if (text === null || text === undefined) return "–";
  const [whole, frac] = String(text).split(".");
  const sign = whole.startsWith("-") ? "-" : "";
  const digits = whole.replace("-", "").replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return sign + digits + (frac !== undefined ? "." + frac : "");
}

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// A value shown on the page: its text, and the raw value in data-value (for tests and tooling).
function put(key, text, raw) {
  for (const node of document.querySelectorAll(`[data-k="${key}"]`)) {
    node.textContent = text;
    node.setAttribute("data-value", raw === null || raw === undefined ? "" : String(raw));
  }
}

function pill(id, state, label) {
  const p = $(id);
  p.className = "pill " + (state === true ? "ok" : state === false ? "bad" : "off");
  p.textContent = label;
}

function banners(s, serverError) {
  const box = $("#banners");
  box.replaceChildren();
  const every = `retrying every ${s ? s.interval_s : intervalMs / 1000} s`;
  const add = (id, text) => box.appendChild(el("div", { class: "banner", id }, text));
  if (serverError) add("banner-server", `The dashboard server is not answering (${serverError}); ${every}.`);
  if (!s) return;
  if (s.database.ok === false) add("banner-database", `Database unavailable (${s.dsn}): ${s.database.error} — ${every}.`);
  if (s.kafka.ok === false) add("banner-kafka", `Broker unavailable (${s.bootstrap_servers}): ${s.kafka.error} — ${every}.`);
  if (s.metrics.ok === false) add("banner-metrics", `Metrics endpoints unavailable: ${s.metrics.error} — ${every}.`);
}

function funnel(f) {
  const box = $("#funnel");
  box.replaceChildren();
  const steps = [["page_views", "Page views", null], ["add_to_carts", "Add to cart", f.view_to_cart_rate],
                 ["purchases", "Purchases", f.cart_to_purchase_rate]];
  const top = Math.max(1, f.page_views || 0);
  for (const [key, label, r] of steps) {
    const n = f[key] || 0;
    const row = el("div", { class: "row", "data-step": key, "data-value": String(n) });
    row.appendChild(el("span", {}, label));
    const bar = el("div", { class: "bar" });
    bar.appendChild(el("div", { style: `width:${(100 * n / top).toFixed(1)}%` }));
    row.appendChild(bar);
    row.appendChild(el("span", { class: "num" }, int(n)));
    row.appendChild(el("span", { class: "rate", title: "conversion from the step before" }, r === null ? "" : pct(r)));
    box.appendChild(row);
  }
}

function revenue(rows) {
  const body = $("#revenue tbody");
  body.replaceChildren();
  if (!rows.length) body.appendChild(el("tr", {}, "")).appendChild(el("td", { colspan: "4", class: "muted" }, "no purchases today yet"));
  for (const r of rows) {
    const tr = el("tr", { "data-currency": r.currency });
    tr.appendChild(el("td", {}, r.currency));
    tr.appendChild(el("td", { class: "n", "data-col": "purchases", "data-value": String(r.purchases) }, int(r.purchases)));
    tr.appendChild(el("td", { class: "n", "data-col": "revenue", "data-value": r.revenue }, decimal(r.revenue)));
    tr.appendChild(el("td", { class: "n", "data-col": "average_order", "data-value": r.average_order }, decimal(r.average_order)));
    body.appendChild(tr);
  }
}

function reasons(d) {
  const box = $("#reasons");
  box.replaceChildren();
  const entries = Object.entries(d.by_reason || {});
  if (!entries.length) box.appendChild(el("div", { class: "muted" }, "none"));
  const top = Math.max(1, ...entries.map(([, n]) => n));
  for (const [reason, n] of entries) {
    const row = el("div", { class: "row reason", "data-reason": reason, "data-value": String(n) });
    row.appendChild(el("span", {}, reason));
    const bar = el("div", { class: "bar" });
    bar.appendChild(el("div", { style: `width:${(100 * n / top).toFixed(1)}%` }));
    row.appendChild(bar);
    row.appendChild(el("span", { class: "num" }, int(n)));
    box.appendChild(row);
  }
  const body = $("#recent tbody");
  body.replaceChildren();
  for (const r of d.recent || []) {
    const tr = el("tr");
    tr.appendChild(el("td", {}, r.time ? new Date(r.time).toISOString().slice(11, 19) : "–"));
    for (const v of [r.stage, r.reason, r.source]) tr.appendChild(el("td", {}, v));
    tr.appendChild(el("td", { title: r.detail }, r.detail));
    body.appendChild(tr);
  }
}

function chart() {
  const svg = $("#chart");
  const W = 900, H = 180;
  const all = [...history.producer, ...history.processor, ...history.loader].filter((v) => !none(v));
  const max = Math.max(1, ...all);
  const parts = [];
  for (let i = 1; i < 4; i++) parts.push(`<line class="grid-line" x1="0" x2="${W}" y1="${(H * i) / 4}" y2="${(H * i) / 4}"/>`);
  for (const name of ["producer", "processor", "loader"]) {
    // The newest sample at the right edge; the chart fills its width after a minute.
    const span = Math.max(60, history[name].length) - 1;
    const shift = span + 1 - history[name].length;
    const pts = history[name].map((v, i) => none(v) ? null : `${(W * (i + shift)) / span},${H - 4 - ((H - 8) * v) / max}`)
      .filter((p) => p !== null).join(" ");
    if (pts) parts.push(`<polyline class="${name}-line" points="${pts}"/>`);
  }
  svg.innerHTML = parts.join("");
  $("#chart-max").textContent = `top of the chart: ${rate(max)}/s`;
  $("#chart-title").textContent = `Throughput, events/s (last ${Math.round((HISTORY * intervalMs) / 1000)} s at most)`;
}

function render(s) {
  intervalMs = Math.max(100, (s.interval_s || 1) * 1000);
  const db = s.database, st = s.stages, dl = s.dead_letters;
  pill("#st-database", db.ok, db.ok === false ? "database down" : "database");
  pill("#st-kafka", s.kafka.ok, s.kafka.ok === false ? "broker down" : "broker");
  pill("#st-metrics", s.metrics.urls.length ? s.metrics.ok : null, s.metrics.urls.length ? "metrics" : "no metrics");
  $("#updated").textContent = "updated " + new Date(s.time * 1000).toLocaleTimeString("en-GB");
  banners(s, null);
  if (db.ok) {
    put("rows", int(db.rows), db.rows);
    put("last_loaded", db.last_loaded ? db.last_loaded.replace("T", " ").slice(0, 19) + " UTC" : "never", db.last_loaded);
    put("today", db.today, db.today);
    funnel(db.funnel);
    revenue(db.revenue);
  }
  put("producer_rate", rate(st.producer.rate), st.producer.rate);
  put("produced", int(st.producer.total), st.producer.total);
  put("processor_rate", rate(st.processor.rate), st.processor.rate);
  put("processor_lag", int(st.processor.lag), st.processor.lag);
  put("processor_source", "from " + st.processor.source, st.processor.source);
  put("loader_rate", rate(st.loader.rate), st.loader.rate);
  put("loader_rate2", rate(st.loader.rate), st.loader.rate);
  put("loader_lag", int(st.loader.lag), st.loader.lag);
  put("loader_source", "from " + st.loader.source, st.loader.source);
  put("dlq_topic", s.dlq_topic, s.dlq_topic);
  if (s.kafka.ok) {
    put("dead_letters", int(dl.total), dl.total);
    put("dlq_rate", rate(dl.rate), dl.rate);
    reasons(dl);
  }
  for (const name of ["producer", "processor", "loader"]) {
    history[name].push(st[name].rate);
    if (history[name].length > HISTORY) history[name].shift();
  }
  chart();
  $("#sources").textContent = `PostgreSQL ${s.dsn} · Kafka ${s.bootstrap_servers}` +
    (s.metrics.urls.length ? ` · metrics ${s.metrics.urls.join(", ")}` : " · no metrics endpoints (rates and lag from offsets and the table)");
}

async function tick() {
  try {
    const r = await fetch("/api/snapshot", { cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    render(await r.json());
  } catch (e) {
    pill("#st-database", null, "database"); pill("#st-kafka", null, "broker");
    banners(null, String(e.message || e));
  } finally {
    setTimeout(tick, intervalMs);
  }
}

tick();
