"use strict";
// Guesses for drawings, computed in the page when it can, by the server when it cannot.
//
//   window.imgclassGuess(strokes, {topK = 3} = {})
//     -> Promise<{top: [{label, probability}, ...], where: "browser" | "server", model, timing}>
//   strokes: [[xs], [ys], [ts]] per stroke (Quick, Draw! raw form: canvas coordinates,
//   times in ms optional). x and y are rounded to whole numbers first, as the page sends
//   them to the server, so both paths see the same drawing. `model` is the version that
//   answered; timing (browser path) the ms spent preparing the input and running the
//   model. Rejects only when neither path can answer.
//
//   window.imgclassEngine: {ready, where, reason, model, info, whenReady, check, compiled,
//   timing} - which path answers now ("browser" once the model runs here, else "server"),
//   why not the browser (reason), the model's version and description; check() looks for
//   a new one; compiled: where the runtime was compiled (see loadModel); timing: ms of
//   each loading step.
//
// The browser path: the served model's ONNX file (GET /v1/models/{name}/model.onnx,
// cached with its sha256 as ETag) runs in onnxruntime-web (WebAssembly, single-threaded:
// the page is served without cross-origin isolation; on the page's own thread, see
// loadModel), and its input is prepared by
// prep.js, a port of the server's renderer and recipe ops, identical on real drawings
// (tests/serve/test_browser_model.py). Once loaded it needs no server: guesses keep
// coming if the server goes away. The server path is the fallback: models the page
// cannot run (photo and sequence models, big files, ops without a port), browsers
// without WebAssembly, or onnxruntime-web failing to load. Every 30 s (and when the tab
// comes back into view) the page checks /v1/models; a new model version is fetched.
(() => {
  const VENDOR = "/static/vendor/onnxruntime-web/";
  const RECHECK_MS = 30000;
  const engine = { ready: false, where: "server", reason: "loading", model: null, session: null, info: null };
  let readyResolve;
  engine.whenReady = new Promise((resolve) => { readyResolve = resolve; });
  window.imgclassEngine = engine;

  function roundStrokes(strokes) {
    return strokes.map((s) => (s.length > 2 ? [s[0].map(Math.round), s[1].map(Math.round), s[2]] : [s[0].map(Math.round), s[1].map(Math.round)]));
  }

  function top(probabilities, labels, k) {
    const order = Array.from(probabilities.keys()).sort((a, b) => probabilities[b] - probabilities[a]);
    return order.slice(0, k).map((i) => ({ label: labels[i], probability: probabilities[i] }));
  }

  async function loadModel(info) {
    const b = info.browser;
    const why = !b ? "this server does not offer its model to the page"
      : b.refusal || window.imgclassPrep.supports(b.recipe, info.input) ||
        (typeof WebAssembly !== "object" ? "this browser has no WebAssembly" : null) ||
        (typeof ort === "undefined" ? "onnxruntime-web did not load" : null);
    if (why) throw new Error(why);
    ort.env.wasm.wasmPaths = VENDOR;
    ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation; one is plenty here
    // On the page's own thread by default: a guess there takes ~2 ms less than through a
    // worker (no message round trip). The runtime's WebAssembly is compiled first in a
    // worker (compile-worker.js; on the page it froze it for ~1 s), which hands the compiled
    // module over; the page's own session then starts in ~0.1 s, at a quiet moment (no
    // pointer down). The server answers meanwhile. ?ort-proxy=1 runs the model in
    // onnxruntime-web's own worker instead (bench_page.py compares the two).
    const proxy = new URLSearchParams(location.search).get("ort-proxy") === "1";
    ort.env.wasm.proxy = proxy;
    const t0 = performance.now();
    const response = await fetch(b.model_url, { cache: "no-cache" });
    if (!response.ok) throw new Error(`the model file answered ${response.status}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    const tq = performance.now();
    const shared = proxy || runtimeStarted ? null : await compiledElsewhere(bytes, info);
    const tc = performance.now();
    if (!proxy && !runtimeStarted) await whenQuiet();
    const t1 = performance.now();
    const session = await withModule(shared, () => ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" }));
    const t2 = performance.now();
    // where the runtime's WebAssembly was compiled: "worker" (shared with the page), "page"
    // (the worker failed), "proxy" (it all runs in onnxruntime-web's worker), or "before"
    const compiled = proxy ? "proxy" : shared ? "worker" : runtimeStarted ? "before" : "page";
    const loaded = { info, session, sha: b.sha256, compiled };
    await run(loaded, WARM_UP, 1);  // warm up: the first run pays for setup
    runtimeStarted = true;
    loaded.timing = { model_file: tq - t0, worker_compile: tc - tq, quiet_wait: t1 - tc, runtime: t2 - t1, first_run: performance.now() - t2 };
    return loaded;
  }

  // A quiet moment: no pointer down on the page, and none for QUIET_MS (at most MAX_WAIT_MS
  // after asking: a pointer whose "up" never came must not keep the model away for good).
  const QUIET_MS = 100;
  const MAX_WAIT_MS = 5000;
  let runtimeStarted = false;  // the runtime runs on this page: later models load at once
  const pointersDown = new Set();
  let lastPointer = -Infinity;
  const seen = (e) => { lastPointer = performance.now(); if (e.type === "pointerdown") pointersDown.add(e.pointerId); else if (e.type !== "pointermove") pointersDown.delete(e.pointerId); };
  for (const type of ["pointerdown", "pointerup", "pointercancel"]) addEventListener(type, seen, { capture: true, passive: true });

  function whenQuiet() {
    const asked = performance.now();
    return new Promise((resolve) => {
      const poll = () => {
        const now = performance.now();
        if ((!pointersDown.size && now - lastPointer >= QUIET_MS) || now - asked >= MAX_WAIT_MS) resolve();
        else setTimeout(poll, Math.max(20, QUIET_MS - (now - lastPointer)));
      };
      poll();
    });
  }

  const WARM_UP = [[[10, 120], [10, 60]], [[30], [90]]];  // a stroke and a dot

  // The runtime's WebAssembly.Module, compiled (and run once) in compile-worker.js; null
  // when that fails (the page then compiles it itself, as before).
  function compiledElsewhere(bytes, info) {
    return new Promise((resolve) => {
      let worker;
      const done = (module) => { if (worker) worker.terminate(); resolve(module); };
      try {
        const x = window.imgclassPrep.modelInput(WARM_UP, info.browser.recipe, info.input);
        worker = new Worker("/static/compile-worker.js");
        worker.onmessage = ({ data }) => {
          if (data.error) console.warn("compiling the model's runtime in a worker failed:", data.error);
          done(data.module || null);
        };
        worker.onerror = (e) => { e.preventDefault(); console.warn("the compile worker failed:", e.message); done(null); };
        worker.postMessage({ bytes: bytes.slice(), input: x.data, dims: x.dims });
      } catch (err) {
        console.warn("no compile worker:", err);
        done(null);
      }
    });
  }

  // Runs start() (which starts onnxruntime-web's WebAssembly on first use) so that the
  // runtime instantiates `module` instead of fetching and compiling its .wasm again.
  async function withModule(module, start) {
    if (!module) return start();
    const streaming = WebAssembly.instantiateStreaming;
    WebAssembly.instantiateStreaming = async (source, imports) => {
      const response = await source;
      if (!String(response.url).endsWith(".wasm")) return streaming(response, imports);
      if (response.body) response.body.cancel().catch(() => {});
      return { module, instance: await WebAssembly.instantiate(module, imports) };
    };
    try {
      return await start();
    } finally {
      WebAssembly.instantiateStreaming = streaming;
    }
  }

  let queue = Promise.resolve();  // one session.run at a time
  function run(loaded, strokes, k) {
    const task = queue.then(async () => {
      const { info, session } = loaded;
      const t0 = performance.now();
      const x = window.imgclassPrep.modelInput(strokes, info.browser.recipe, info.input);
      const t1 = performance.now();
      const out = await session.run({ input: new ort.Tensor("float32", x.data, x.dims) });
      const p = (out.probabilities || out[session.outputNames[0]]).data;
      const timing = { preprocess: t1 - t0, model: performance.now() - t1 };
      return { top: top(p, info.classes, k), where: "browser", model: info.version, timing };
    });
    queue = task.catch(() => {});
    return task;
  }

  async function serverGuess(strokes, k) {
    const response = await fetch(`/v1/predict?top_k=${k}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ strokes }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || response.statusText);
    return { top: body.predictions, where: "server", model: body.model };
  }

  window.imgclassGuess = async (strokes, { topK = 3 } = {}) => {
    const rounded = roundStrokes(strokes);
    const loaded = engine.session && engine.loaded;
    if (loaded) {
      try {
        return await run(loaded, rounded, topK);
      } catch (err) {
        // a drawing the port refuses, or the runtime failing: the server still answers
        if (String(err && err.message).includes("no strokes")) throw err;
        console.warn("in-browser guess failed, asking the server:", err);
      }
    }
    return serverGuess(rounded, topK);
  };

  async function use(info) {
    try {
      const loaded = await loadModel(info);
      Object.assign(engine, { ready: true, where: "browser", reason: null, model: info.version, session: loaded.session, loaded, info, timing: loaded.timing, compiled: loaded.compiled });
    } catch (err) {
      Object.assign(engine, { ready: true, where: "server", reason: String(err.message || err), model: info.version, session: null, loaded: null, info });
    }
    readyResolve(engine);
    document.dispatchEvent(new CustomEvent("imgclass:engine", { detail: { where: engine.where, reason: engine.reason } }));
  }

  async function check() {
    try {
      const response = await fetch("/v1/models", { cache: "no-cache" });
      if (!response.ok) return;
      const info = (await response.json()).models[0];
      if (!info) return;
      const sha = info.browser && info.browser.sha256;
      if (!engine.info || engine.info.version !== info.version || (engine.loaded && engine.loaded.sha !== sha)) await use(info);
    } catch (err) { /* the server is away: keep what runs here */ }
  }

  engine.check = check;  // look for a new model version now (it also runs every 30 s)
  check().then(() => { if (!engine.info) { engine.ready = true; engine.reason = "no model information"; readyResolve(engine); } });
  setInterval(check, RECHECK_MS);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) check(); });
})();
