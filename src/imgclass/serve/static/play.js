"use strict";
// Play: a Pictionary game. Six words (GET /v1/game/words: mostly the classes the model
// gets wrong), twenty seconds each; the model guesses as the drawing grows and wins the
// round as soon as its top guess is the word with enough probability. Every round's
// drawing is stored as labelled feedback (POST /v1/game/rounds) with its timing.
// Self-contained: it shares nothing with app.js but the page.
(() => {
  const $ = (id) => document.getElementById(id);
  const ROUNDS = 6;
  const GUESS_EVERY_MS = 120;   // while drawing, at most one guess request this often
  const CLIENT_KEY = "imgclass-client-id";  // the same anonymous id as app.js's feedback

  // --- the model's guess: the one place to switch to the in-browser model -------------
  // strokes: [[xs], [ys], [ts]] per stroke in canvas pixels; answers [{label, probability}]
  // best first. The in-browser model (window.imgclassGuess(strokes, {topK}) -> {top, ...},
  // when the page has one: infer.js) is used first; the server's /v1/predict otherwise.
  async function guessDrawing(strokes) {
    if (typeof window.imgclassGuess === "function") {
      try {
        const answer = await window.imgclassGuess(strokes, { topK: 3 });
        return Array.isArray(answer) ? answer : answer.top;
      } catch (err) { /* the server below */ }
    }
    const body = JSON.stringify({ strokes });
    const response = await fetch("/v1/predict?top_k=3", {
      method: "POST", headers: { "Content-Type": "application/json" }, body });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.detail || response.statusText);
    return answer.predictions;
  }

  // --- state ---------------------------------------------------------------------------
  let game = null;   // {words, seconds, threshold, model, results: [...], index}
  let round = null;  // {word, strokes, started, deadline, over, won, guesses, drawingId, generation}
  let current = null;  // the stroke being drawn
  let tick = null;
  let pending = null;  // a scheduled guess
  let inflight = false;
  let again = false;   // the drawing changed while a guess was in flight

  const canvas = $("play-canvas");
  const ctx = canvas.getContext("2d");

  function newId() {
    return crypto.randomUUID ? crypto.randomUUID()
      : Math.random().toString(36).slice(2) + Date.now().toString(36);
  }

  function clientId() {
    let id = localStorage.getItem(CLIENT_KEY);
    if (!id) { id = newId(); localStorage.setItem(CLIENT_KEY, id); }
    return id;
  }

  function show(screen) {
    for (const id of ["play-intro", "play-round", "play-end"]) $(id).hidden = id !== screen;
  }

  // --- a game --------------------------------------------------------------------------
  async function startGame() {
    $("play-error").textContent = "";
    $("play-start").disabled = true;
    const query = new URLSearchParams({ n: ROUNDS });
    const seed = new URLSearchParams(location.search).get("seed");  // the same game again
    if (seed !== null && /^\d+$/.test(seed)) query.set("seed", seed);
    try {
      const response = await fetch(`/v1/game/words?${query}`);
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.detail || response.statusText);
      game = { words: body.words, seconds: body.round_seconds, threshold: body.win_probability,
        model: body.model, results: [], index: -1 };
      nextRound();
    } catch (err) {
      $("play-error").textContent = `The game cannot start: ${err.message}`;
      show("play-intro");
    } finally {
      $("play-start").disabled = false;
    }
  }

  function nextRound() {
    game.index += 1;
    if (game.index >= game.words.length) { endGame(); return; }
    const word = game.words[game.index];
    const now = performance.now();
    round = { word, strokes: [], started: null, deadline: now + game.seconds * 1000,
      over: false, won: false, guesses: [], drawingId: newId(), generation: 0 };
    current = null;
    redraw();
    $("play-count").textContent = `${game.index + 1} of ${game.words.length}.`;
    $("play-word").textContent = word;
    $("play-guess").textContent = "";
    $("play-announce").textContent = `Round ${game.index + 1} of ${game.words.length}: draw ${word}.` +
      ` You have ${Math.round(game.seconds)} seconds.`;
    $("play-next").hidden = true;
    $("play-skip").hidden = false;
    $("play-clear").disabled = false;
    show("play-round");
    $("play-skip").focus();
    clearInterval(tick);
    tick = setInterval(updateTimer, 200);
    updateTimer();
  }

  function secondsLeft() {
    return Math.max(0, Math.ceil((round.deadline - performance.now()) / 1000));
  }

  function updateTimer() {
    if (!round || round.over) return;
    const left = secondsLeft();
    const shown = $("play-timer");
    if (shown.textContent !== String(left)) {
      shown.textContent = String(left);
      if (left === 10 || left === 5) $("play-announce").textContent = `${left} seconds left`;
    }
    shown.parentElement.classList.toggle("hurry", left <= 5);
    if (left === 0) endRound(false, "Time's up!");
  }

  // over: the round is won or lost; says what happened, stores the drawing, offers Next
  function endRound(won, message) {
    if (!round || round.over) return;
    round.over = true;
    round.won = won;
    clearInterval(tick);
    clearTimeout(pending);
    current = null;
    const result = { word: round.word, strokes: round.strokes, won, guesses: round.guesses,
      drawingId: round.drawingId };
    result.saved = saveRound(result);
    game.results.push(result);
    $("play-guess").textContent = message;
    $("play-announce").textContent = message;
    $("play-skip").hidden = true;
    $("play-clear").disabled = true;
    $("play-next").textContent = game.index + 1 < game.words.length ? "Next" : "See your drawings";
    $("play-next").hidden = false;
    $("play-next").focus();
  }

  // Every drawn round is stored, recognised or not, labelled with the word asked; the
  // server decides itself whether the model recognised it (its answer's `recognized`).
  async function saveRound(result) {
    if (!result.strokes.length) return "nothing drawn";
    const body = { word: result.word, strokes: result.strokes, recognized: result.won,
      predicted: result.guesses.length ? result.guesses : null, model: game.model,
      drawing_id: result.drawingId, client_id: clientId() };
    try {
      const response = await fetch("/v1/game/rounds", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      if (!response.ok) {
        const answer = await response.json().catch(() => ({}));
        throw new Error(answer.detail || response.statusText);
      }
      return "saved";
    } catch (err) {
      return `not saved: ${err.message}`;
    }
  }

  function endGame() {
    round = null;
    clearInterval(tick);
    const list = $("play-results");
    list.innerHTML = "";
    const won = game.results.filter((r) => r.won).length;
    $("play-end-title").textContent = `The model recognised ${won} of your ${game.results.length} drawings`;
    for (const result of game.results) list.appendChild(resultCard(result));
    show("play-end");
    $("play-end-title").focus();
    Promise.all(game.results.map((r) => r.saved)).then((states) => {
      const failed = states.filter((s) => s.startsWith("not saved"));
      $("play-saved").textContent = failed.length ? `Some drawings were ${failed[0]}`
        : "Your drawings were saved to teach the model. Thank you!";
    });
  }

  function resultCard(result) {
    const li = document.createElement("li");
    li.className = result.won ? "won" : "lost";
    const thumb = document.createElement("canvas");
    thumb.width = thumb.height = 112;
    thumb.className = "thumb";
    thumb.setAttribute("role", "img");
    thumb.setAttribute("aria-label", `Your drawing of ${result.word}`);
    drawThumbnail(thumb, result.strokes);
    const word = document.createElement("strong");
    word.textContent = result.word;
    const verdict = document.createElement("span");
    verdict.className = "verdict";
    verdict.textContent = result.won ? "recognised" : "not recognised";
    const thought = document.createElement("p");
    thought.className = "thought";
    const others = result.guesses.filter((g) => g.label !== result.word).slice(0, 2);
    if (!result.strokes.length) thought.textContent = "Nothing drawn.";
    else if (result.won) thought.textContent = others.length ? `It also thought of ${others.map((g) => g.label).join(", ")}.` : "";
    else thought.textContent = result.guesses.length
      ? `It thought: ${result.guesses.map((g) => `${g.label} (${Math.round(100 * g.probability)}%)`).join(", ")}.`
      : "It had no guess.";
    li.append(thumb, word, verdict, thought);
    return li;
  }

  function drawThumbnail(target, strokes) {
    const c = target.getContext("2d");
    c.fillStyle = "white";
    c.fillRect(0, 0, target.width, target.height);
    const xs = strokes.flatMap((s) => s[0]);
    const ys = strokes.flatMap((s) => s[1]);
    if (!xs.length) return;
    const x0 = Math.min(...xs), y0 = Math.min(...ys);
    const side = Math.max(Math.max(...xs) - x0, Math.max(...ys) - y0, 1);
    const pad = 8, scale = (target.width - 2 * pad) / side;
    c.strokeStyle = "black"; c.lineWidth = 2; c.lineCap = "round"; c.lineJoin = "round";
    for (const s of strokes) {
      c.beginPath();
      c.moveTo(pad + (s[0][0] - x0) * scale, pad + (s[1][0] - y0) * scale);
      for (let i = 0; i < s[0].length; i++) c.lineTo(pad + (s[0][i] - x0) * scale, pad + (s[1][i] - y0) * scale);
      c.stroke();
    }
  }

  // --- guesses while drawing --------------------------------------------------------------
  function scheduleGuess(now) {
    if (pending !== null) return;
    pending = setTimeout(() => { pending = null; requestGuess(); }, now ? 0 : GUESS_EVERY_MS);
  }

  async function requestGuess() {
    if (!round || round.over || !round.strokes.length) return;
    if (inflight) { again = true; return; }
    inflight = true;
    again = false;
    const asked = round;
    const generation = asked.generation;
    const strokes = asked.strokes.map((s) => [s[0].slice(), s[1].slice(), s[2].slice()]);
    try {
      const guesses = await guessDrawing(strokes);
      // an answer for a round that ended or a drawing that was cleared is dropped
      if (asked === round && !asked.over && generation === asked.generation) hear(guesses, strokes);
    } catch (err) {
      if (asked === round && !asked.over) $("play-guess").textContent = err.message;
    } finally {
      inflight = false;
      if (again) scheduleGuess(false);
    }
  }

  // guesses: the model's answer for `strokes`, the drawing as it was when asked
  function hear(guesses, strokes) {
    round.guesses = guesses.map((g) => ({ label: g.label, probability: g.probability }));
    const top = guesses[0];
    if (top && top.label === round.word && top.probability >= game.threshold) {
      // the drawing stored is the one recognised (the server checks it again): points
      // drawn while the guess ran are not part of the win
      round.strokes = strokes;
      endRound(true, `Oh, I know: it's ${round.word}!`);
      return;
    }
    $("play-guess").textContent = "I see… " + guesses.slice(0, 3).map((g) => `${g.label}?`).join(" ");
  }

  // --- drawing ---------------------------------------------------------------------------
  function point(event) {
    const r = canvas.getBoundingClientRect();
    return [Math.round((event.clientX - r.left) * canvas.width / r.width),
      Math.round((event.clientY - r.top) * canvas.height / r.height)];
  }

  function elapsed() { return Math.round(performance.now() - round.started); }

  function redraw() {
    ctx.fillStyle = "white";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!round) return;
    ctx.strokeStyle = "black"; ctx.lineWidth = 8; ctx.lineCap = "round"; ctx.lineJoin = "round";
    for (const s of round.strokes) {
      ctx.beginPath();
      ctx.moveTo(s[0][0], s[1][0]);
      for (let i = 0; i < s[0].length; i++) ctx.lineTo(s[0][i], s[1][i]);
      ctx.stroke();
    }
  }

  canvas.addEventListener("pointerdown", (e) => {
    e.preventDefault();  // no text selection, and focus stays where it is (e.g. on Next)
    if (!round || round.over) return;
    canvas.setPointerCapture(e.pointerId);
    if (round.started === null) round.started = performance.now();
    const [x, y] = point(e);
    current = [[x], [y], [elapsed()]];
    round.strokes.push(current);
    redraw();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!current || !round || round.over) return;
    const [x, y] = point(e);
    const n = current[0].length - 1;
    if (x === current[0][n] && y === current[1][n]) return;
    current[0].push(x); current[1].push(y); current[2].push(elapsed());
    redraw();
    scheduleGuess(false);
  });
  const endStroke = () => { if (current) { current = null; clearTimeout(pending); pending = null; scheduleGuess(true); } };
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  canvas.addEventListener("touchmove", (e) => e.preventDefault(), { passive: false });

  // --- buttons -----------------------------------------------------------------------------
  $("play-start").addEventListener("click", startGame);
  $("play-again").addEventListener("click", startGame);
  $("play-next").addEventListener("click", nextRound);
  $("play-skip").addEventListener("click", () => endRound(false, "Skipped."));
  $("play-clear").addEventListener("click", () => {
    if (!round || round.over) return;
    round.strokes = [];
    round.generation += 1;
    round.guesses = [];
    current = null;
    $("play-guess").textContent = "";
    redraw();
  });
  // Leaving the Play tab abandons a game in progress (its timer would run out unseen).
  for (const tab of document.querySelectorAll("[role=tab]")) {
    if (tab.id === "tab-play") continue;
    tab.addEventListener("click", () => {
      if (round && !round.over) { round.over = true; clearInterval(tick); }
      if (round || (game && game.index < game.words.length)) { round = null; game = null; show("play-intro"); }
    });
  }
  window.imgclassPlay = { guessDrawing };  // for tests and the console
})();
