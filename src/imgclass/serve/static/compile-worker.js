"use strict";
// Compiles onnxruntime-web's WebAssembly off the page's thread (infer.js starts it).
//
// V8 compiles WebAssembly lazily: each function on its first call, on the calling thread.
// The first InferenceSession.create calls thousands of them, which on the page's thread
// froze it for 0.8-1.4 s in headless Chromium. Here the same session is created and run
// once (the served model, on the page's warm-up drawing), so every function the page will need is
// compiled; the compiled WebAssembly.Module is then posted to the page, which shares its
// code (a Module posted between threads keeps its compiled functions) and so creates its
// own session in ~0.1 s. Message in: {bytes, input, dims} (the model and an input prepared by prep.js); out:
// {module} or {error}.
let compiled = null;
const instantiateStreaming = WebAssembly.instantiateStreaming;
WebAssembly.instantiateStreaming = async (source, imports) => {
  const result = await instantiateStreaming(source, imports);
  compiled = result.module;
  return result;
};
const instantiate = WebAssembly.instantiate;
WebAssembly.instantiate = async (source, imports) => {
  const result = await instantiate(source, imports);
  if (result.module) compiled = result.module;  // the ArrayBuffer fallback
  return result;
};
importScripts("/static/vendor/onnxruntime-web/ort.wasm.min.js");

onmessage = async ({ data }) => {
  try {
    ort.env.wasm.wasmPaths = "/static/vendor/onnxruntime-web/";
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.proxy = false;
    const session = await ort.InferenceSession.create(data.bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
    await session.run({ input: new ort.Tensor("float32", data.input, data.dims) });
    if (!compiled) throw new Error("the runtime's module was not seen");
    postMessage({ module: compiled });
  } catch (err) {
    postMessage({ error: String((err && err.message) || err) });
  }
};
