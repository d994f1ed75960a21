// fusewatch live UI: plain JS, no build step. Data from /api/*, live updates from /api/events (SSE).
"use strict";
const $ = (s) => document.querySelector(s);
const api = async (path, opts) => {
  const r = await fetch(path, Object.assign({credentials: "same-origin"}, opts || {}));
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
};
const fmtTime = (t) => t == null ? "" : new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19);
const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const svgNS = "http://www.w3.org/2000/svg";

function sparkline(svg, values, w, h, opts) {
  opts = opts || {};
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  if (!values.length) { svg.innerHTML = ""; return; }
  const n = values.length, x = (i) => n === 1 ? w / 2 : (i / (n - 1)) * w, y = (v) => h - Math.max(0, Math.min(1, v)) * (h - 2) - 1;
  let html = "";
  for (const band of opts.bands || []) {
    html += `<rect x="${x(band[0])}" y="0" width="${Math.max(1, x(band[1]) - x(band[0]))}" height="${h}" fill="#d9534f33"/>`;
  }
  if (opts.threshold != null) html += `<line x1="0" x2="${w}" y1="${y(opts.threshold)}" y2="${y(opts.threshold)}" stroke="#d9534f" stroke-dasharray="4 3"/>`;
  html += `<polyline fill="none" stroke="#2c6ecb" stroke-width="${opts.stroke || 1.5}" points="${values.map((v, i) => x(i).toFixed(1) + "," + y(v).toFixed(1)).join(" ")}"/>`;
  svg.innerHTML = html;
}

function connectEvents(handlers) {
  const es = new EventSource("/api/events");
  es.onopen = () => { const l = $("#live"); if (l) l.className = "live on"; };
  es.onerror = () => { const l = $("#live"); if (l) l.className = "live off"; };
  for (const [kind, fn] of Object.entries(handlers)) es.addEventListener(kind, (e) => fn(JSON.parse(e.data)));
  window.fwEvents = es;
  return es;
}

// ---------------------------------------------------------------- index: tiles + alert list
const cams = {};
function renderTile(c) {
  let el = document.getElementById("cam-" + c.camera);
  const box = $("#cameras");
  if (!el) {
    if (box.querySelector("p.muted")) box.innerHTML = "";
    el = document.createElement("div");
    el.className = "tile"; el.id = "cam-" + c.camera; el.dataset.camera = c.camera;
    el.innerHTML = `<div class="name">${esc(c.camera)}</div><img alt="latest frame of ${esc(c.camera)}"><svg class="spark"></svg><div class="meta muted"></div>`;
    box.appendChild(el);
    const sel = $("#f-camera");
    if (sel && ![...sel.options].some((o) => o.value === c.camera)) sel.add(new Option(c.camera, c.camera));
  }
  el.classList.toggle("alerting", (c.open_alerts || 0) > 0);
  if (c.thumbnail) el.querySelector("img").src = `/api/cameras/${encodeURIComponent(c.camera)}/thumbnail.jpg?t=${c.thumbnail.time}`;
  sparkline(el.querySelector("svg"), c.scores.map((s) => s[2]), 240, 40);
  const h = c.health ? ` · health: ${esc(c.health.state || c.health.status || "reported")}` : "";
  el.querySelector(".meta").innerHTML = `score ${c.last_score == null ? "–" : c.last_score.toFixed(2)} · ${fmtTime(c.last_time)}${h}`;
}

function filterQuery() {
  const p = new URLSearchParams();
  const cam = $("#f-camera").value, st = $("#f-state").value, s = $("#f-since").value, u = $("#f-until").value;
  if (cam) p.set("camera", cam);
  if (st) p.set("state", st);
  if (s) p.set("since", Date.parse(s + "Z") / 1000);
  if (u) p.set("until", Date.parse(u + "Z") / 1000);
  return p.toString();
}

async function loadAlerts() {
  const data = await api("/api/alerts?" + filterQuery());
  const tb = $("#alerts tbody");
  tb.innerHTML = data.alerts.map((a) => `<tr class="alert-row ${a.state}" data-id="${esc(a.id)}" data-camera="${esc(a.camera)}">
    <td>${a.state}</td><td>${esc(a.camera)}</td><td>${fmtTime(a.start_time)}</td><td>${(a.end_time - a.start_time).toFixed(1)} s</td>
    <td>${a.peak.toFixed(2)}</td><td class="label-${a.label || "none"}">${a.label ? a.label.replace("_", " ") : ""}</td>
    <td><a href="/alerts/${encodeURIComponent(a.id)}">${esc(a.id)}</a></td></tr>`).join("");
  $("#no-alerts").hidden = data.alerts.length > 0;
  for (const tr of tb.querySelectorAll("tr")) tr.onclick = (e) => { if (e.target.tagName !== "A") location.href = "/alerts/" + encodeURIComponent(tr.dataset.id); };
}

let alertTimer = null;
const reloadAlertsSoon = () => { clearTimeout(alertTimer); alertTimer = setTimeout(loadAlerts, 150); };
let camTimer = null;
const reloadCamsSoon = () => {
  if (camTimer) return;
  camTimer = setTimeout(async () => { camTimer = null; (await api("/api/cameras")).cameras.forEach(renderTile); }, 300);
};

async function initIndex() {
  (await api("/api/cameras")).cameras.forEach(renderTile);
  await loadAlerts();
  for (const id of ["#f-camera", "#f-state", "#f-since", "#f-until"]) $(id).onchange = loadAlerts;
  $("#f-clear").onclick = () => { $("#filters").reset(); loadAlerts(); };
  connectEvents({alert: reloadAlertsSoon, label: reloadAlertsSoon, evidence: reloadAlertsSoon,
                 score: reloadCamsSoon, thumbnail: reloadCamsSoon, health: reloadCamsSoon});
}

// ---------------------------------------------------------------- alert page
let current = null, drawing = null, pending = null;
function renderZones(polys) {
  const svg = $("#zones");
  let html = (polys || []).map((p) => `<polygon class="zone" points="${p.map((q) => q.join(",")).join(" ")}"/>`).join("");
  const draft = drawing || pending;
  if (draft && draft.length) html += `<polygon class="draft" points="${draft.map((q) => q.join(",")).join(" ")}"/>`;
  svg.innerHTML = html;
  $("#save-zone").disabled = !pending;
}

// PUT the camera's polygons; the overlay shows what the server answers (the zones now in force)
async function saveZones(polygons) {
  const r = await fetch(`/api/zones/${encodeURIComponent(current.camera)}`, {method: "PUT", credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify({polygons})});
  const d = await r.json().catch(() => ({}));
  if (!r.ok) { $("#zone-status").textContent = "not saved: " + (d.error || r.status); return; }
  pending = null; current.zones = d.zones;
  $("#zone-status").textContent = `saved to ${d.file}` + (d.hint ? ` (${d.hint})` : "");
  $("#zone-toml").value = d.zones.length ? `[zones]\n"${current.camera}" = ${JSON.stringify(d.zones)}` : "";
  renderZones(current.zones);
}

function renderAlert(a) {
  current = a;
  $("#alert-id").textContent = a.id;
  const rows = [["camera", a.camera], ["state", a.state], ["start", fmtTime(a.start_time)], ["end", fmtTime(a.end_time)],
    ["clips", `${a.start_clip}–${a.end_clip}`], ["peak score", a.peak.toFixed(3)], ["events", a.events],
    ["model", a.record && a.record.model ? `${a.record.model.name} ${a.record.model.version} (${a.record.model.backend})` : ""]];
  $("#summary").innerHTML = rows.map(([k, v]) => `<dt>${k}</dt><dd>${esc(v)}</dd>`).join("");
  $("#label-state").textContent = a.label ? a.label.replace("_", " ") : "none";
  $("#label-state").className = "label-" + (a.label || "none");
  const v = $("#clip");
  if (a.files.mp4) { if (!v.getAttribute("src")) v.src = a.files.mp4; v.hidden = false; $("#no-clip").hidden = true; }
  else { v.hidden = true; $("#no-clip").hidden = false; }
  const img = $("#snapshot");
  if (a.files.jpg) { img.src = a.files.jpg; $("#no-snapshot").hidden = true; }
  else { img.src = `/api/cameras/${encodeURIComponent(a.camera)}/thumbnail.jpg`; img.onerror = () => { $("#no-snapshot").hidden = false; }; }
  renderZones(a.zones);
  const tl = a.timeline || [];
  const bands = [];
  let s = -1;
  tl.forEach((p, i) => { const inside = p[0] >= a.start_clip && p[0] <= a.end_clip; if (inside && s < 0) s = i; if (!inside && s >= 0) { bands.push([s, i - 1]); s = -1; } });
  if (s >= 0) bands.push([s, tl.length - 1]);
  sparkline($("#timeline"), tl.map((p) => p[2]), 600, 120, {bands, stroke: 2});
}

async function label(kind) {
  const id = current.id;
  if (kind) await api(`/api/alerts/${encodeURIComponent(id)}/label`, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({label: kind})});
  else await api(`/api/alerts/${encodeURIComponent(id)}/label`, {method: "DELETE"});
  renderAlert(await api("/api/alerts/" + encodeURIComponent(id)));
}

async function initAlert() {
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const load = async () => renderAlert(await api("/api/alerts/" + encodeURIComponent(id)));
  await load();
  $("#ack").onclick = () => label("ack");
  $("#fp").onclick = () => label("false_positive");
  $("#unlabel").onclick = () => label(null);
  $("#draw").onclick = () => { drawing = []; pending = null; renderZones(current.zones); };
  $("#zones").onclick = (e) => {
    if (!drawing) return;
    const r = e.currentTarget.getBoundingClientRect();
    drawing.push([+((e.clientX - r.left) / r.width).toFixed(3), +((e.clientY - r.top) / r.height).toFixed(3)]);
    renderZones(current.zones);
  };
  $("#finish").onclick = () => {
    if (drawing && drawing.length >= 3) {
      pending = drawing;
      $("#zone-toml").value = `[zones]\n"${current.camera}" = ${JSON.stringify([...(current.zones || []), pending])}`;
    }
    drawing = null; renderZones(current.zones);
  };
  $("#save-zone").onclick = () => pending && saveZones([...(current.zones || []), pending]).catch((e) => { $("#zone-status").textContent = String(e); });
  $("#clear-zones").onclick = () => { drawing = pending = null; saveZones([]).catch((e) => { $("#zone-status").textContent = String(e); }); };
  let t = null;
  const soon = () => { clearTimeout(t); t = setTimeout(load, 200); };
  connectEvents({alert: (a) => { if (a.id === id) soon(); }, label: (l) => { if (l.id === id) soon(); },
                 evidence: (e) => { if (e.alert_id === id) soon(); },
                 score: (s) => { if (current && s.camera === current.camera) soon(); }});
}

window.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  (page === "alert" ? initAlert() : initIndex()).catch((e) => { document.body.dataset.error = String(e); console.error(e); });
});
