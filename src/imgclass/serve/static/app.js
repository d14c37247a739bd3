"use strict";
// The page talks to the same API as everyone else: /v1/models, /v1/predict, /v1/feedback.
const $ = (id) => document.getElementById(id);
let model = null;
let strokes = [];   // Quick, Draw! raw form: [[xs], [ys], [ts]] per stroke
let current = null;
let started = 0;
let lastResult = null;

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

function pct(p) { return (100 * p).toFixed(1) + "%"; }

function renderGuesses(list, predictions) {
  list.innerHTML = "";
  for (const p of predictions) {
    const li = document.createElement("li");
    li.className = "guess";
    li.innerHTML = `<span class="label"></span> <span class="prob">${pct(p.probability)}</span>` +
      `<div class="bar"></div>`;
    li.querySelector(".label").textContent = p.label;
    // set through the CSSOM: the Content-Security-Policy refuses inline style attributes
    li.querySelector(".bar").style.width = `${Math.max(2, 100 * p.probability)}%`;
    list.appendChild(li);
  }
}

// --- tabs ---------------------------------------------------------------------------
for (const tab of document.querySelectorAll("[role=tab]")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll("[role=tab]")) {
      const on = t === tab;
      t.setAttribute("aria-selected", on);
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
  });
}

// --- drawing ------------------------------------------------------------------------
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

function point(event) {
  const r = canvas.getBoundingClientRect();
  return [(event.clientX - r.left) * canvas.width / r.width, (event.clientY - r.top) * canvas.height / r.height];
}

function redraw() {
  ctx.fillStyle = "white";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "black"; ctx.lineWidth = 8; ctx.lineCap = "round"; ctx.lineJoin = "round";
  for (const s of strokes) {
    ctx.beginPath();
    ctx.moveTo(s[0][0], s[1][0]);
    for (let i = 0; i < s[0].length; i++) ctx.lineTo(s[0][i], s[1][i]);
    ctx.stroke();
  }
}

canvas.addEventListener("pointerdown", (e) => {
  canvas.setPointerCapture(e.pointerId);
  if (!strokes.length) started = performance.now();
  const [x, y] = point(e);
  current = [[x], [y], [Math.round(performance.now() - started)]];
  strokes.push(current);
  redraw();
});
canvas.addEventListener("pointermove", (e) => {
  if (!current) return;
  const [x, y] = point(e);
  current[0].push(x); current[1].push(y); current[2].push(Math.round(performance.now() - started));
  redraw();
  schedule();
});
const endStroke = () => { if (current) { current = null; schedule(0); } };
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

let timer = null;
function schedule(delay = 150) {
  clearTimeout(timer);
  timer = setTimeout(guess, delay);
}

async function guess() {
  if (!strokes.length) { $("guesses").innerHTML = ""; $("guess-line").textContent = "Draw something…"; $("feedback").hidden = true; return; }
  const body = { strokes: strokes.map((s) => [s[0].map(Math.round), s[1].map(Math.round), s[2]]) };
  try {
    const r = await api("/v1/predict?top_k=3", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    lastResult = { input: body, predicted: r.predictions };
    $("guess-line").textContent = `I see… ${r.predictions[0].label}`;
    renderGuesses($("guesses"), r.predictions);
    $("feedback").hidden = false;
    $("feedback-status").textContent = "";
  } catch (err) {
    $("guess-line").textContent = err.message;
  }
}

$("undo").addEventListener("click", () => { strokes.pop(); redraw(); schedule(0); });
$("clear").addEventListener("click", () => { strokes = []; redraw(); schedule(0); });
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") $("clear").click();
  if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); $("undo").click(); }
});

// An anonymous id for this browser (no account, nothing personal): lets a reviewer see
// that several submissions came from the same person.
function clientId() {
  let id = localStorage.getItem("imgclass-client-id");
  if (!id) {
    id = (crypto.randomUUID ? crypto.randomUUID() : Math.random().toString(36).slice(2) + Date.now().toString(36));
    localStorage.setItem("imgclass-client-id", id);
  }
  return id;
}

// result: {input, predicted} as sent to and answered by /v1/predict; status: where to say how it went.
async function sendFeedback(result, label, status) {
  if (!result) return;
  try {
    const r = await api("/v1/feedback", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ input: result.input, label, model: model && model.name, predicted: result.predicted, client_id: clientId() }) });
    status.textContent = r.duplicate ? "Already noted — thank you!" : "Thank you! Noted as " + label + ".";
  } catch (err) { status.textContent = err.message; }
}
$("right").addEventListener("click", () => lastResult && sendFeedback(lastResult, lastResult.predicted[0].label, $("feedback-status")));
$("send-correction").addEventListener("click", () => sendFeedback(lastResult, $("correct-label").value, $("feedback-status")));

// The same "Right!" / "Not right?" controls under an uploaded picture's guesses.
function feedbackControls(result) {
  const box = document.createElement("div");
  box.className = "feedback";
  const id = "fix-" + Math.random().toString(36).slice(2);
  box.innerHTML = `<button class="right" type="button">Right!</button> <label for="${id}">Not right? It is a</label> ` +
    `<select id="${id}"></select> <button class="send" type="button">Send</button><p class="status" aria-live="polite"></p>`;
  const select = box.querySelector("select");
  for (const label of (model && model.classes) || []) select.add(new Option(label, label));
  const status = box.querySelector(".status");
  box.querySelector(".right").addEventListener("click", () => sendFeedback(result, result.predicted[0].label, status));
  box.querySelector(".send").addEventListener("click", () => sendFeedback(result, select.value, status));
  return box;
}

function dataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// --- upload -------------------------------------------------------------------------
async function classifyFile(file) {
  const li = document.createElement("li");
  const img = document.createElement("img");
  img.alt = file.name;
  img.src = URL.createObjectURL(file);
  const name = document.createElement("div");
  name.textContent = file.name;
  const list = document.createElement("ol");
  li.append(img, name, list);
  $("results").prepend(li);
  const form = new FormData();
  form.append("file", file);
  try {
    const r = await api("/v1/predict?top_k=3", { method: "POST", body: form });
    renderGuesses(list, r.predictions);
    li.append(feedbackControls({ input: { image_base64: await dataUrl(file) }, predicted: r.predictions }));
  } catch (err) {
    list.outerHTML = `<p class="error"></p>`;
    li.querySelector(".error").textContent = err.message;
  }
}
$("files").addEventListener("change", (e) => { for (const f of e.target.files) classifyFile(f); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); for (const f of e.dataTransfer.files) classifyFile(f); });

// --- model --------------------------------------------------------------------------
function showModel(m) {
  const test = (m.metrics && m.metrics.test) || {};
  $("model-line").textContent = `${m.model} (${m.name}, version ${m.version}) — ${m.classes.length} classes` +
    (test.accuracy !== undefined ? `, test accuracy ${pct(test.accuracy)}` : "");
  $("review-labels").innerHTML = "";
  for (const c of m.classes) { const o = document.createElement("option"); o.value = c; $("review-labels").appendChild(o); }
  const select = $("correct-label");
  select.innerHTML = "";
  for (const c of [...m.classes].sort()) { const o = document.createElement("option"); o.value = o.textContent = c; select.appendChild(o); }
  const rows = Object.entries(test).filter(([, v]) => typeof v === "number")
    .map(([k, v]) => `<tr><th>${k}</th><td>${k === "n" ? v : v.toFixed(4)}</td></tr>`).join("");
  const q = m.quantization;
  const int8 = q ? `<p>Runs as int8: ${q.latency_ms.int8.toFixed(2)} ms per image instead of ` +
    `${q.latency_ms.float.toFixed(2)} (${q.split} accuracy ${pct(q.int8.accuracy)}, float ` +
    `${pct(q.float.accuracy)}; the two agree on ${pct(q.agreement)})</p>` : "";
  const t = m.calibration && m.calibration.temperature;
  const calib = typeof t === "number" && t !== 1 ? `<p>Probabilities calibrated: logits divided by ` +
    `${t.toFixed(3)}` + (test.ece_uncalibrated !== undefined ?
      ` (test ECE ${test.ece_uncalibrated.toFixed(4)} before, ${test.ece.toFixed(4)} after)` : "") + `</p>` : "";
  $("model-info").innerHTML = `<h2>${m.model}</h2><p>Classes: ${m.classes.join(", ")}</p>` +
    `<p>Input: ${m.input_kind}, recipe ${m.recipe}</p>${int8}${calib}<table><caption>Test metrics</caption>${rows}</table>`;
}

// --- explore ------------------------------------------------------------------------
async function nextExample() {
  try {
    const r = await api(`/v1/models/${encodeURIComponent(model.name)}/examples/random`);
    $("example-img").src = r.image;
    $("example-img").alt = `A held-out example of ${r.label}`;
    $("example-caption").textContent = `This is: ${r.label}`;
    renderGuesses($("example-guesses"), r.predictions);
  } catch (err) { $("example-caption").textContent = err.message; }
}
$("next").addEventListener("click", nextExample);
$("tab-explore").addEventListener("click", () => { if (!$("example-img").src) nextExample(); });

// --- model report: metrics, per-class scores, a clickable confusion matrix -------------
async function loadReport() {
  if ($("report").dataset.loaded) return;
  try {
    const r = await api(`/v1/models/${encodeURIComponent(model.name)}/report`);
    $("report").dataset.loaded = "1";
    const labels = model.classes;
    const head = labels.map((l) => `<th scope="col">${l}</th>`).join("");
    const rows = r.confusion.map((row, i) => {
      const total = row.reduce((a, b) => a + b, 0) || 1;
      const cells = row.map((n, j) => {
        const shade = Math.round(255 - 200 * n / total);
        return `<td data-true="${i}" data-pred="${j}" data-shade="${shade}" title="${labels[i]} seen as ${labels[j]}: ${n}" ` +
          `tabindex="0">${n || ""}</td>`;
      }).join("");
      return `<tr><th scope="row">${labels[i]}</th>${cells}</tr>`;
    }).join("");
    const perClass = Object.entries(r.per_class).map(([c, v]) =>
      `<tr><td>${c}</td><td>${v.precision.toFixed(2)}</td><td>${v.recall.toFixed(2)}</td><td>${v.f1.toFixed(2)}</td><td>${v.support}</td></tr>`).join("");
    $("report").innerHTML = `<h3>Confusion matrix (${r.split}, ${r.n} examples): rows are the truth; click a cell</h3>` +
      `<table class="cm"><thead><tr><th></th>${head}</tr></thead><tbody>${rows}</tbody></table>` +
      `<h3>Per class</h3><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>n</th></tr>${perClass}</table>`;
    for (const td of $("report").querySelectorAll("td[data-true]")) {
      const shade = td.dataset.shade;  // no inline style attributes under the CSP
      td.style.background = `rgb(${shade},${shade},255)`;
      const open = () => showCell(labels[td.dataset.true], labels[td.dataset.pred]);
      td.addEventListener("click", open);
      td.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    }
  } catch (err) { $("report").textContent = err.message; }
}

async function showCell(truth, predicted) {
  const q = new URLSearchParams({ true: truth, predicted });
  const r = await api(`/v1/models/${encodeURIComponent(model.name)}/confusion?${q}`);
  const figs = r.examples.map((e) => `<figure><img src="${e.image}" width="84" height="84" alt="${truth}"><figcaption>${e.predictions[0].label} ${pct(e.predictions[0].probability)}</figcaption></figure>`).join("");
  $("cell").innerHTML = `<h3>${truth} seen as ${predicted}: ${r.examples.length} shown</h3><div class="cell-examples">${figs || "none"}</div>`;
}
$("tab-model").addEventListener("click", loadReport);

// --- review (admins): a grid of submissions, accept / reject / delete in bulk ----------
const REVIEW_PAGE = 24;
const TOKEN_KEY = "imgclass-admin-token";
let reviewOffset = 0;
let reviewUrls = [];

function adminApi(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) };
  return fetch(path, { ...options, headers }).then(async (response) => {
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => ({}));
      sessionStorage.removeItem(TOKEN_KEY);
      showReviewLogin();
      throw new Error(body.detail || "not allowed");
    }
    return response;
  });
}

async function adminJson(path, options) {
  const response = await adminApi(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

function showReviewLogin() {
  $("review-login").hidden = false;
  $("review-body").hidden = true;
  $("admin-token").focus();
}

function selectedIds() {
  return [...document.querySelectorAll("#review-grid .pick:checked")].map((box) => Number(box.value));
}

function reviewCard(item) {
  const li = document.createElement("li");
  li.className = "card status-" + item.status;
  const guess = item.predicted && item.predicted.length ? item.predicted[0] : null;
  li.innerHTML = `<label class="pick-area"><input type="checkbox" class="pick"><img width="96" height="96"></label>` +
    `<div class="given">Given: <b></b></div><div class="guessed"></div>` +
    `<div class="meta"><span class="badge"></span> <time></time></div>`;
  const box = li.querySelector(".pick");
  box.value = item.id;
  box.setAttribute("aria-label", `Select submission ${item.id}, given ${item.label}`);
  li.querySelector(".given b").textContent = item.label;
  li.querySelector(".guessed").textContent = guess ? `Model said: ${guess.label} (${pct(guess.probability)})` : "Model said: —";
  li.querySelector(".badge").textContent = item.status;
  li.querySelector("time").textContent = (item.created || "").slice(0, 16).replace("T", " ");
  li.querySelector("time").dateTime = item.created || "";
  const img = li.querySelector("img");
  img.alt = `Submission ${item.id} (${item.input_kind})`;
  adminApi(`/v1/feedback/${item.id}/image.png`).then((r) => (r.ok ? r.blob() : null)).then((blob) => {
    if (!blob) return;
    const url = URL.createObjectURL(blob);
    reviewUrls.push(url);
    img.src = url;
  }).catch(() => {});
  return li;
}

async function loadReview() {
  if (!sessionStorage.getItem(TOKEN_KEY)) { showReviewLogin(); return; }
  const q = new URLSearchParams({ limit: REVIEW_PAGE, offset: reviewOffset });
  if ($("review-filter-status").value) q.set("status", $("review-filter-status").value);
  if ($("review-filter-label").value.trim()) q.set("label", $("review-filter-label").value.trim());
  try {
    const r = await adminJson(`/v1/feedback?${q}`);
    $("review-login").hidden = true;
    $("review-body").hidden = false;
    for (const url of reviewUrls) URL.revokeObjectURL(url);
    reviewUrls = [];
    const grid = $("review-grid");
    grid.innerHTML = "";
    for (const item of r.items) grid.appendChild(reviewCard(item));
    $("review-all").checked = false;
    const last = Math.min(r.offset + r.items.length, r.total);
    $("review-page").textContent = r.total ? `${r.offset + 1}–${last} of ${r.total}` : "nothing here";
    $("review-prev").disabled = r.offset === 0;
    $("review-next").disabled = last >= r.total;
    $("review-message").textContent = "";
  } catch (err) { $("review-message").textContent = err.message; }
}

async function bulk(action) {
  const ids = selectedIds();
  if (!ids.length) { $("review-message").textContent = "Select some submissions first."; return; }
  try {
    let done;
    if (action === "delete") {
      if (!confirm(`Delete ${ids.length} submission(s)? This cannot be undone.`)) return;
      done = `${(await adminJson("/v1/feedback/delete", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ids }) })).deleted} deleted`;
    } else {
      const r = await adminJson("/v1/feedback/review", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ids, status: action }) });
      done = `${r.changed} ${action}`;
    }
    await loadReview();
    $("review-message").textContent = done + ".";
  } catch (err) { $("review-message").textContent = err.message; }
}

$("review-login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("admin-token").value.trim());
  $("admin-token").value = "";
  reviewOffset = 0;
  loadReview();
});
$("review-logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showReviewLogin(); });
$("review-refresh").addEventListener("click", () => { reviewOffset = 0; loadReview(); });
$("review-filter-status").addEventListener("change", () => { reviewOffset = 0; loadReview(); });
$("review-filter-label").addEventListener("change", () => { reviewOffset = 0; loadReview(); });
$("review-all").addEventListener("change", (e) => {
  for (const box of document.querySelectorAll("#review-grid .pick")) box.checked = e.target.checked;
});
$("review-accept").addEventListener("click", () => bulk("accepted"));
$("review-reject").addEventListener("click", () => bulk("rejected"));
$("review-delete").addEventListener("click", () => bulk("delete"));
$("review-prev").addEventListener("click", () => { reviewOffset = Math.max(0, reviewOffset - REVIEW_PAGE); loadReview(); });
$("review-next").addEventListener("click", () => { reviewOffset += REVIEW_PAGE; loadReview(); });
$("tab-review").addEventListener("click", loadReview);

(async () => {
  try {
    const r = await api("/v1/models");
    model = r.models[0];
    showModel(model);
    redraw();
  } catch (err) { $("model-line").textContent = "No model: " + err.message; }
})();
