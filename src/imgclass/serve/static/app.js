"use strict";
// The page talks to the same API as everyone else: /v1/models, /v1/predict, /v1/feedback.
const $ = (id) => document.getElementById(id);
let model = null;
let strokes = [];   // Quick, Draw! raw form: [[xs], [ys], [ts]] per stroke
let current = null;
let started = 0;
let lastResult = null;
// One drawing, one answer: feedback carries the drawing's id, and a second answer for the
// same drawing (Send, then Right!) replaces the first on the server.
let drawingKey = null;
const newDrawingKey = () => (crypto.randomUUID ? crypto.randomUUID() : Math.random().toString(36).slice(2) + Date.now().toString(36));
let hedgeBelow = 0.5;  // the server's IMGCLASS_HEDGE_BELOW: under it a guess is "maybe X?"

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw Object.assign(new Error(body.detail || response.statusText), { status: response.status });
  return body;
}

function pct(p) { return (100 * p).toFixed(1) + "%"; }

// The page's sentence for its best guess: sure of it, or only "maybe".
function guessText(top) {
  return top.probability < hedgeBelow ? `maybe ${top.label}?` : `I see… ${top.label}`;
}

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

// --- guesses: computed as soon as the drawing changes, in the page when it can run the
// model (infer.js: window.imgclassGuess), else by the server. Every answer carries the
// drawing it belongs to (an id, new at each Clear, and a version, new at each change);
// an answer for another drawing is dropped, so a slow answer never shows over a cleared
// canvas, and Right!/Send send the strokes their guess was for.
let drawingId = 0;
let drawingVersion = 0;
let changedAt = 0;   // when the change being guessed happened (the pointer event's time)
let handledAt = 0;   // when the page handled it
let inFlight = false;
// A guess starts in the event handler itself when the model is idle (waiting for the next
// animation frame would add up to 16 ms); while one runs, moves only bump the version and
// the latest drawing is guessed when it is done. Starts are at least MIN_GAP_MS apart and
// twice the last guess's time (so a slow device spends at most half its time guessing).
const MIN_GAP_MS = 8;
let nextStartAt = 0;
let gapTimer = 0;

const roundStrokes = (list) => list.map((s) => [s[0].map(Math.round), s[1].map(Math.round), s[2]]);

function changed(time) {
  drawingVersion++;
  handledAt = performance.now();
  changedAt = time === undefined ? handledAt : time;
  requestGuess();
}

function newDrawing() {
  drawingId++;
  drawingVersion = 0;
  lastResult = null;
  $("guesses").innerHTML = "";
  $("guess-line").textContent = "Draw something…";
  $("guess-where").textContent = "";
  $("feedback").hidden = true;
}

function requestGuess() {
  if (inFlight || gapTimer) return;  // the running guess, or the timer, asks again
  const wait = nextStartAt - performance.now();
  if (wait <= 0) { guess(); return; }
  gapTimer = setTimeout(() => { gapTimer = 0; requestGuess(); }, wait);
}

async function guessNow() {
  const snap = { id: drawingId, version: drawingVersion, time: changedAt, handled: handledAt, strokes: roundStrokes(strokes), key: drawingKey };
  const r = await window.imgclassGuess(snap.strokes, { topK: 3 });
  return { input: { strokes: snap.strokes }, predicted: r.top, where: r.where, timing: r.timing, id: snap.id, version: snap.version, time: snap.time, handled: snap.handled, drawingKey: snap.key };
}

async function guess() {
  if (!strokes.length) return;
  if (inFlight) return;  // one at a time: the next starts when this one is answered
  inFlight = true;
  const asked = { id: drawingId, version: drawingVersion };
  const t0 = performance.now();
  try {
    const result = await guessNow();
    if (result.id === drawingId) showGuess(result);  // else: an answer for a cleared drawing
  } catch (err) {
    if (asked.id === drawingId) $("guess-line").textContent = err.message;
  } finally {
    inFlight = false;
    nextStartAt = t0 + Math.max(MIN_GAP_MS, 2 * (performance.now() - t0));
    if (asked.id === drawingId && asked.version !== drawingVersion) requestGuess();
  }
}

function showGuess(result) {
  lastResult = result;
  const r = { predictions: result.predicted };
  $("guess-line").textContent = guessText(r.predictions[0]);
  renderGuesses($("guesses"), r.predictions);
  $("guess-where").textContent = result.where === "browser" ? "computed in your browser" : "computed on the server";
  $("feedback").hidden = false;
  $("feedback-status").textContent = "";
  document.dispatchEvent(new CustomEvent("imgclass:guess", { detail: {
    where: result.where, id: result.id, version: result.version, timing: result.timing,
    ms: performance.now() - result.time, fromHandler: performance.now() - result.handled } }));
}

// Right!/Send: the guess shown, if it is for the drawing as it is now; else a fresh one.
async function currentResult() {
  if (!strokes.length) return null;
  if (lastResult && lastResult.id === drawingId && lastResult.version === drawingVersion) return lastResult;
  const result = await guessNow();
  if (result.id !== drawingId || result.version !== drawingVersion) return null;
  showGuess(result);
  return result;
}

// Pointer moves: Chromium holds `pointermove` until the next animation frame (~5 ms on
// average before our handler runs); `pointerrawupdate` (secure contexts, which include
// 127.0.0.1 and localhost) comes as soon as the move does. Each event's coalesced moves
// are all kept, so the drawing has every point the pointer reported. ?pointer-raw=0
// listens to pointermove only (bench_page.py compares the two).
const RAW_MOVES = "onpointerrawupdate" in window && new URLSearchParams(location.search).get("pointer-raw") !== "0";

// Adds the event's points to the stroke being drawn and draws the new segment only
// (redrawing every stroke on every move costs more the longer the drawing gets).
function addPoints(e) {
  const list = (e.getCoalescedEvents && e.getCoalescedEvents()) || [];
  const n = current[0].length;
  for (const p of list.length ? list : [e]) {
    const [x, y] = point(p);
    const last = current[0].length - 1;
    if (x === current[0][last] && y === current[1][last]) continue;
    current[0].push(x); current[1].push(y); current[2].push(Math.round(p.timeStamp - started));
  }
  if (current[0].length === n) return false;
  ctx.beginPath();
  ctx.moveTo(current[0][n - 1], current[1][n - 1]);
  for (let i = n; i < current[0].length; i++) ctx.lineTo(current[0][i], current[1][i]);
  ctx.stroke();
  return true;
}

canvas.addEventListener("pointerdown", (e) => {
  canvas.setPointerCapture(e.pointerId);
  if (!strokes.length) { started = e.timeStamp; drawingKey = newDrawingKey(); }
  const [x, y] = point(e);
  current = [[x], [y], [Math.round(e.timeStamp - started)]];
  rawThisStroke = false;
  strokes.push(current);
  redraw();
  changed(e.timeStamp);
});
// pointermove stays the fallback, per stroke: a browser that gives no raw updates for some
// pointers (a pen, a finger) still draws with them.
let rawThisStroke = false;
if (RAW_MOVES) {
  canvas.addEventListener("pointerrawupdate", (e) => {
    rawThisStroke = true;
    if (current && addPoints(e)) changed(e.timeStamp);
  });
}
canvas.addEventListener("pointermove", (e) => {
  if (!rawThisStroke && current && addPoints(e)) changed(e.timeStamp);
});
const endStroke = () => { if (current) { current = null; requestGuess(); } };
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

$("undo").addEventListener("click", () => {
  strokes.pop();
  redraw();
  if (strokes.length) changed(); else newDrawing();
});
$("clear").addEventListener("click", () => { strokes = []; redraw(); newDrawing(); });
// Escape and Ctrl+Z belong to the Draw tab, and never to a field someone types in
// (there Ctrl+Z undoes their typing, Escape closes a list).
function drawShortcut(e) {
  if ($("view-draw").hidden || e.defaultPrevented) return false;
  const t = e.target;
  return !(t instanceof Element && t.closest("input, select, textarea, [contenteditable]"));
}
document.addEventListener("keydown", (e) => {
  if (!drawShortcut(e)) return;
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
      body: JSON.stringify({ input: result.input, label, model: model && model.name, predicted: result.predicted, client_id: clientId(),
        drawing_id: result.drawingKey, source: "page" }) });
    status.textContent = r.duplicate ? "Already noted — thank you!" : "Thank you! Noted as " + label + ".";
  } catch (err) { status.textContent = err.message; }
}
$("right").addEventListener("click", async () => {
  const result = await currentResult();
  if (result) sendFeedback(result, result.predicted[0].label, $("feedback-status"));
});
$("send-correction").addEventListener("click", async () => {
  const select = $("correct-label");
  if (!select.value) { sendChosen(null, select, $("feedback-status")); return; }
  sendChosen(await currentResult(), select, $("feedback-status"));
});

// A correction list starts on "choose…" (never on a real class someone may send by
// mistake); Send with nothing chosen asks for a choice.
function fillChoices(select, labels) {
  select.innerHTML = "";
  select.add(new Option("choose…", ""));
  for (const label of [...labels].sort()) select.add(new Option(label, label));
}
function sendChosen(result, select, status) {
  if (!select.value) { status.textContent = "Choose what it is first."; select.focus(); return; }
  sendFeedback(result, select.value, status);
}

// The same "Right!" / "Not right?" controls under an uploaded picture's guesses.
function feedbackControls(result) {
  const box = document.createElement("div");
  box.className = "feedback";
  const id = "fix-" + Math.random().toString(36).slice(2);
  box.innerHTML = `<button class="right" type="button">Right!</button> <label for="${id}">Not right? It is a</label> ` +
    `<select id="${id}"></select> <button class="send" type="button">Send</button><p class="status" aria-live="polite"></p>`;
  const select = box.querySelector("select");
  fillChoices(select, (model && model.classes) || []);
  const status = box.querySelector(".status");
  box.querySelector(".right").addEventListener("click", () => sendFeedback(result, result.predicted[0].label, status));
  box.querySelector(".send").addEventListener("click", () => sendChosen(result, select, status));
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
// "drawing" (few colours, mostly one background) or "photo", from a 32x32 copy.
function pictureKind(img) {
  const c = document.createElement("canvas");
  c.width = c.height = 32;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0, 32, 32);
  const px = g.getImageData(0, 0, 32, 32).data;
  let plain = 0, colourful = 0;
  for (let i = 0; i < px.length; i += 4) {
    const hi = Math.max(px[i], px[i + 1], px[i + 2]), lo = Math.min(px[i], px[i + 1], px[i + 2]);
    if (hi - lo > 60) colourful++;
    if (hi - lo < 30 && (lo > 215 || hi < 40)) plain++;  // near white or near black
  }
  const n = px.length / 4;
  return plain / n > 0.5 && colourful / n < 0.1 ? "drawing" : "photo";
}

function loaded(img) {
  return img.decode().then(() => true, () => false);
}

// What this model reads, said when a picture is the other kind.
function mismatchNote(kind) {
  const reads = (model && model.reads) || "drawings";
  if (reads === "drawings" && kind === "photo") return "This model reads drawings (dark lines on a plain background), not photos: its guesses for a photo mean little.";
  if (reads === "photos" && kind === "drawing") return "This model reads photos, not drawings: its guesses for a drawing mean little.";
  return "";
}

async function classifyFile(file, li) {
  const img = document.createElement("img");
  img.alt = file.name;
  img.src = URL.createObjectURL(file);
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = file.name;
  const list = document.createElement("ol");
  li.append(img, name, list);
  const form = new FormData();
  form.append("file", file);
  const shown = await loaded(img);
  if (!shown) img.remove();  // never a broken-image icon
  try {
    const r = await api("/v1/predict?top_k=3", { method: "POST", body: form });
    renderGuesses(list, r.predictions);
    const note = shown ? mismatchNote(pictureKind(img)) : "";
    if (note) { const p = document.createElement("p"); p.className = "note"; p.textContent = note; list.before(p); }
    li.append(feedbackControls({ input: { image_base64: await dataUrl(file) }, predicted: r.predictions, drawingKey: newDrawingKey() }));
  } catch (err) {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = err.status === 415 ? `This file is not an image we can read (${file.name}).` : err.message;
    list.replaceWith(p);
  }
}

// Each batch of files goes on top of the earlier ones, in the order it was chosen.
function classifyFiles(files) {
  const results = $("results"), before = results.firstChild;
  for (const file of files) {
    const li = document.createElement("li");
    results.insertBefore(li, before);
    classifyFile(file, li);
  }
}
$("files").addEventListener("change", (e) => classifyFiles(e.target.files));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); classifyFiles(e.dataTransfer.files); });

// --- model --------------------------------------------------------------------------
// Metric keys in plain words, each with a one-line explanation.
const METRICS = {
  accuracy: ["Accuracy", "how often the first guess is right"],
  top3_accuracy: ["Top-3 accuracy", "how often the right answer is among the first three guesses"],
  map3: ["Mean average precision at 3", "like top-3 accuracy, but a right answer counts less the lower it is ranked (1, ½, ⅓)"],
  macro_f1: ["Macro F1", "precision and recall combined, averaged over the classes so that each class counts the same"],
  ece: ["Calibration error (ECE)", "how far the stated confidence is from actual accuracy (0 is perfect)"],
  ece_uncalibrated: ["Calibration error before calibration", "the same, for the probabilities before the temperature was applied"],
  temperature: ["Temperature", "the model's scores are divided by it so that its confidence matches its accuracy"],
  n: ["Test examples", "how many held-out examples these numbers come from"],
};

// A version people can read: the family and when (and on what) it was trained, or the
// registry's version number; the file's hash stays in the tooltip.
function versionText(m) {
  const when = m.trained ? `trained ${m.trained}` + (m.trained_on ? ` on ${m.trained_on}` : "") : "";
  const version = m.registry ? `version ${m.registry.version}` : "";
  return [m.model, version, when].filter(Boolean).join(", ");
}

function showModel(m) {
  const test = (m.metrics && m.metrics.test) || {};
  $("model-line").textContent = `${versionText(m)} — knows ${m.classes.length} things` +
    (test.accuracy !== undefined ? `, right ${pct(test.accuracy)} of the time on its test set` : "");
  $("model-line").title = `${m.name}, model file ${m.version}`;
  $("knows-summary").textContent = `It knows ${m.classes.length} things`;
  $("knows-list").textContent = [...m.classes].sort().join(", ");
  $("reads-note").hidden = m.reads !== "photos";
  $("review-labels").innerHTML = "";
  for (const c of m.classes) { const o = document.createElement("option"); o.value = c; $("review-labels").appendChild(o); }
  fillChoices($("correct-label"), m.classes);
  const rows = Object.entries(test).filter(([, v]) => typeof v === "number").map(([k, v]) => {
    const [name, help] = METRICS[k] || [k, ""];
    return `<tr><th scope="row">${name}<div class="help">${help}</div></th><td>${k === "n" ? v : v.toFixed(3)}</td></tr>`;
  }).join("");
  const q = m.quantization;
  const int8 = q ? `<p>Runs as int8: ${q.latency_ms.int8.toFixed(2)} ms per image instead of ` +
    `${q.latency_ms.float.toFixed(2)} (${q.split} accuracy ${pct(q.int8.accuracy)}, float ` +
    `${pct(q.float.accuracy)}; the two agree on ${pct(q.agreement)})</p>` : "";
  const t = m.calibration && m.calibration.temperature;
  const calib = typeof t === "number" && t !== 1 ? `<p>Probabilities calibrated: logits divided by ` +
    `${t.toFixed(3)}` + (test.ece_uncalibrated !== undefined ?
      ` (test calibration error ${test.ece_uncalibrated.toFixed(3)} before, ${test.ece.toFixed(3)} after)` : "") + `</p>` : "";
  $("model-info").innerHTML = `<h2>${versionText(m)}</h2><p>Classes: ${m.classes.join(", ")}</p>` +
    `<p>Reads ${m.reads}: input ${m.input_kind}, recipe ${m.recipe}. Model file ${m.version}.</p>${int8}${calib}` +
    `<div class="scroll"><table class="metrics"><caption>Test metrics</caption>${rows}</table></div>`;
}

// --- explore ------------------------------------------------------------------------
// A view that asks again before an answer came shows only the answer to its latest
// request: on a slow network answers can come back in any order, and an older one
// arriving last must not replace what was asked for since. latest(view) starts a
// request of that view and returns a check, true while it is still the latest.
const requestsOf = {};
function latest(view) {
  const mine = (requestsOf[view] = (requestsOf[view] || 0) + 1);
  return () => requestsOf[view] === mine;
}

async function nextExample() {
  const isLatest = latest("example");
  try {
    const r = await api(`/v1/models/${encodeURIComponent(model.name)}/examples/random`);
    if (!isLatest()) return;
    $("example-img").src = r.image;
    $("example-img").alt = `A held-out example of ${r.label}`;
    $("example-caption").textContent = `This is: ${r.label}`;
    renderGuesses($("example-guesses"), r.predictions);
  } catch (err) { if (isLatest()) $("example-caption").textContent = err.message; }
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
      `<div class="scroll" tabindex="0" role="region" aria-label="Confusion matrix"><table class="cm"><thead><tr><td></td>${head}</tr></thead><tbody>${rows}</tbody></table></div>` +
      `<h3>Per class</h3><div class="scroll"><table><tr><th scope="col">class</th><th scope="col">precision</th><th scope="col">recall</th><th scope="col">F1</th><th scope="col">n</th></tr>${perClass}</table></div>`;
    for (const td of $("report").querySelectorAll("td[data-true]")) {
      const shade = Number(td.dataset.shade);  // no inline style attributes under the CSP
      td.style.background = `rgb(${shade},${shade},255)`;
      td.style.color = textColour(shade, shade, 255);
      const open = () => showCell(labels[td.dataset.true], labels[td.dataset.pred]);
      td.addEventListener("click", open);
      td.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    }
  } catch (err) { $("report").textContent = err.message; }
}

// Black or white, whichever reads better on the colour (r, g, b): WCAG contrast >= 4.5.
function textColour(r, g, b) {
  const lin = (c) => { c /= 255; return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  const L = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  return (L + 0.05) / 0.05 >= 1.05 / (L + 0.05) ? "#000" : "#fff";
}

async function showCell(truth, predicted) {
  const isLatest = latest("cell");
  const q = new URLSearchParams({ true: truth, predicted });
  let r;
  try {
    r = await api(`/v1/models/${encodeURIComponent(model.name)}/confusion?${q}`);
  } catch (err) {
    if (isLatest()) $("cell").textContent = err.message;
    return;
  }
  if (!isLatest()) return;  // another cell was clicked since
  const figs = r.examples.map((e) => `<figure><img src="${e.image}" width="84" height="84" alt="${truth}"><figcaption>${e.predictions[0].label} ${pct(e.predictions[0].probability)}</figcaption></figure>`).join("");
  $("cell").innerHTML = `<h3 tabindex="-1">${truth} seen as ${predicted}: ${r.examples.length} shown</h3><div class="cell-examples">${figs || "none"}</div>`;
  // beside the matrix on a wide screen; below it otherwise: bring them into view
  $("cell").scrollIntoView({ block: "nearest", behavior: "smooth" });
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
  // where it came from: a game round is the word asked, recognised by the model or not
  li.querySelector(".meta").prepend(item.source === "game"
    ? `game (${item.recognized ? "recognised" : "not recognised"}) · ` : `${item.source || "api"} · `);
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
  if ($("review-filter-source").value) q.set("source", $("review-filter-source").value);
  const isLatest = latest("review");
  try {
    const r = await adminJson(`/v1/feedback?${q}`);
    if (!isLatest()) return;  // the filters or the page changed since
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
  } catch (err) { if (isLatest()) $("review-message").textContent = err.message; }
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
$("review-filter-source").addEventListener("change", () => { reviewOffset = 0; loadReview(); });
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
    if (typeof r.hedge_below === "number") hedgeBelow = r.hedge_below;
    $("tab-review").hidden = !r.admin;  // no admin token on the server: nothing to review
    showModel(model);
    redraw();
  } catch (err) { $("model-line").textContent = "No model: " + err.message; }
})();
