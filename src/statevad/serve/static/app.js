// statevad serve dashboard: camera tiles (live frame + score chart), the event list, acknowledgements.
// Plain JavaScript, no library and no build step: the page must work on a machine without internet.
"use strict";

const POINTS = 300;  // points of each camera's chart
const state = { cameras: {}, events: new Map(), live: null };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(path, opts = {}) {
  const r = await fetch(path, { credentials: "same-origin", ...opts });
  if (r.status === 401) { showLogin(); throw new Error("unauthorized"); }
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function showLogin() { document.getElementById("login").hidden = false; }

async function login(token) {
  const r = await fetch("/api/login", { method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }) });
  return r.ok;
}

function fmtTime(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "–"; }
function fmt(v, d = 2) { return v === null || v === undefined ? "–" : Number(v).toFixed(d); }

function makeTile(cam) {
  const img = el("img", { class: "live", alt: `live frame of ${cam.name}` });
  const canvas = el("canvas", { width: 600, height: 120 });
  const score = el("span", { class: "score", text: "–" });
  const tile = el("div", { class: "tile", "data-camera": cam.name, "data-frames": "0" },
    el("h2", {}, el("span", { text: cam.name }), score), img, canvas, el("div", { class: "status" }));
  document.getElementById("cameras").append(tile);
  const c = { tile, img, canvas, score, points: [], threshold: cam.threshold, loading: false };
  img.addEventListener("load", () => { c.loading = false; });
  img.addEventListener("error", () => { c.loading = false; });
  state.cameras[cam.name] = c;
  updateStatus(cam);
}

function updateStatus(cam) {
  const c = state.cameras[cam.name];
  if (!c) return;
  c.threshold = cam.threshold;
  c.tile.classList.toggle("down", !cam.up);
  c.tile.querySelector(".status").textContent =
    `${cam.state}${cam.error ? " (" + cam.error + ")" : ""} · ${fmt(cam.fps, 1)} fps · latency p50 ` +
    `${fmt(cam.latency_p50_s, 2)} s p95 ${fmt(cam.latency_p95_s, 2)} s · dropped ${cam.dropped} · ` +
    `events ${cam.events}`;
}

function draw(c) {
  const g = c.canvas.getContext("2d"), w = c.canvas.width, h = c.canvas.height;
  g.clearRect(0, 0, w, h);
  const vals = c.points.map(p => p[2]).filter(v => v !== null);
  if (!vals.length) return;
  const thr = c.threshold ?? 0;
  let lo = Math.min(thr, ...vals), hi = Math.max(thr, ...vals);
  if (hi - lo < 1e-6) { hi += 1; lo -= 1; }
  const y = v => h - 4 - (v - lo) / (hi - lo) * (h - 8);
  g.strokeStyle = "#ff6b6b"; g.setLineDash([6, 4]); g.beginPath();
  g.moveTo(0, y(thr)); g.lineTo(w, y(thr)); g.stroke(); g.setLineDash([]);
  g.strokeStyle = "#8cc8ff"; g.beginPath();
  const first = POINTS - c.points.length;  // newest point at the right edge
  c.points.forEach((p, i) => {
    if (p[2] === null) return;
    const x = (first + i) / (POINTS - 1) * w;
    if (i === 0 || c.points[i - 1][2] === null) g.moveTo(x, y(p[2])); else g.lineTo(x, y(p[2]));
  });
  g.stroke();
}

function onScores(msg) {
  const c = state.cameras[msg.camera];
  if (!c) return;
  c.points.push(...msg.points);
  if (c.points.length > POINTS) c.points.splice(0, c.points.length - POINTS);
  const last = msg.points[msg.points.length - 1];
  c.score.textContent = last[2] === null ? "no object" : last[2].toFixed(2);
  c.score.className = "score " + (last[2] !== null && last[2] > (c.threshold ?? Infinity) ? "bad" : "good");
  c.tile.dataset.frames = String(last[0]);
  draw(c);
}

function connectLive() {
  const es = new EventSource("/api/live");
  state.live = es;
  es.addEventListener("scores", e => onScores(JSON.parse(e.data)));
  es.addEventListener("status", e => JSON.parse(e.data).cameras.forEach(updateStatus));
  es.onopen = () => { document.getElementById("conn").textContent = "live"; };
  es.onerror = () => { document.getElementById("conn").textContent = "reconnecting…"; };
}

function refreshFrames() {
  for (const [name, c] of Object.entries(state.cameras)) {
    if (c.loading) continue;
    c.loading = true;
    c.img.src = `/api/cameras/${encodeURIComponent(name)}/frame.jpg?n=${Date.now()}`;
  }
}

function eventRow(ev) {
  const thumb = el("img", { class: "thumb", alt: `event ${ev.id}`, src: `/api/events/${ev.id}/thumb.jpg` });
  thumb.addEventListener("click", () => openEvent(ev.id));
  const ack = el("button", { class: "ack", type: "button", text: ev.acked ? `✓ ${ev.acked_by}` : "acknowledge" });
  ack.disabled = ev.acked;
  ack.addEventListener("click", () => acknowledge(ev.id));
  return el("tr", { class: "event" + (ev.acked ? " acked" : ""), "data-id": String(ev.id) },
    el("td", {}, thumb), el("td", { text: ev.camera }), el("td", { text: fmtTime(ev.start_time) }),
    el("td", { text: `${ev.start_frame}–${ev.end_frame}` }), el("td", { text: fmt(ev.peak_score) }),
    el("td", {}, ack));
}

async function refreshEvents() {
  const unacked = document.getElementById("unacked").checked;
  const list = await api("/api/events?limit=50" + (unacked ? "&acked=false" : ""));
  const body = document.querySelector("#events tbody");
  const key = JSON.stringify(list.map(e => [e.id, e.acked]));
  if (body.dataset.key === key) return;  // unchanged: keep the thumbnails as they are
  body.dataset.key = key;
  body.replaceChildren(...list.map(eventRow));
  list.forEach(e => state.events.set(e.id, e));
}

async function openEvent(id) {
  const ev = await api(`/api/events/${id}`);
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-title").textContent =
    `event ${ev.id} · ${ev.camera} · frames ${ev.start_frame}–${ev.end_frame} · peak ${fmt(ev.peak_score)} ` +
    `at frame ${ev.peak_frame}`;
  const clip = document.getElementById("clip");
  clip.src = ev.clip ? `/api/events/${id}/clip.mp4` : "";
  clip.play().catch(() => {});
  document.getElementById("crops").replaceChildren(...ev.objects.map((o, k) =>
    el("img", { src: `/api/events/${id}/crops/${k}.jpg`, title: `score ${fmt(o.score)}`, alt: `object ${k}` })));
}

async function acknowledge(id) {
  const by = document.getElementById("who").value.trim() || "operator";
  await api(`/api/events/${id}/ack`, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ by }) });
  await refreshEvents();
}

async function start() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {  // a link with #token=...: exchanged for an HttpOnly cookie, then removed from the address bar
    await login(decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  const auth = await (await fetch("/api/auth", { credentials: "same-origin" })).json();
  if (auth.token_required && !auth.authorized) { showLogin(); return; }
  const cams = await api("/api/cameras");
  cams.forEach(makeTile);
  connectLive();
  refreshFrames();
  await refreshEvents();
  setInterval(refreshFrames, 500);
  setInterval(() => refreshEvents().catch(() => {}), 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("close-detail").addEventListener("click", () => {
    document.getElementById("detail").hidden = true;
    document.getElementById("clip").pause();
  });
  document.getElementById("unacked").addEventListener("change", () => refreshEvents());
  document.getElementById("login").addEventListener("submit", async e => {
    e.preventDefault();
    if (await login(document.getElementById("token").value)) location.reload();
    else document.getElementById("login-error").textContent = "wrong token";
  });
  start().catch(err => { document.getElementById("conn").textContent = String(err); });
});
