"use strict";
// imgclassPrep: the server's drawing path in JavaScript, so the page can compute guesses
// itself. A port of src/imgclass/data/render.py (simplify_raw, render_strokes: cairo's
// stroker, scan converter and OVER as Google rendered the Quick, Draw! bitmaps), of the
// sketch ops of src/imgclass/data/preprocess (invert_auto, crop_to_ink, fit_box,
// center_of_mass, centroid, resize, fit_center, line_width, with OpenCV's resize, erode
// and Gaussian blur as imgclass calls them) and of Bundle.model_input / Bundle.to_input.
// Same semantics, same integer and rounding rules (round half to even where numpy's rint
// and OpenCV's cvRound are used, float32 where OpenCV computes in float32), so that a
// drawing gives the model the input the server would give it: tests/serve/
// test_browser_model.py checks that on real drawings.
//
// API (globalThis.imgclassPrep, also module.exports under Node):
//   supports(recipe) -> null | "why not"      (a recipe whose ops all have a port)
//   modelInput(strokes, recipe, spec) -> {data: Float32Array, dims: [...], image: {h, w, d}}
//       strokes: [[xs], [ys]] or [[xs], [ys], [ts]] per stroke (Quick, Draw! form),
//       recipe: preprocess.json's "recipe", spec: its "input" (kind "image").
//   recipeImage(strokes, recipe, size) -> {h, w, d: Uint8Array}  (uint8, recipe form)
//   simplifyRaw, isSimplified, renderStrokes: the pieces, for tests.
const imgclassPrep = (() => {
  const ONE = 256;
  const GRID_Y = 15;
  const TOLERANCE = 0.1;
  const ORIGINAL_SIDE = 256.0;
  const SIMPLIFIED_SLACK = 3;
  const INK_THRESHOLD = 16;

  // numpy's rint, Python's round and OpenCV's cvRound: halves go to the even neighbour.
  function rint(x) {
    const r = Math.round(x);
    return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }
  const f32 = Math.fround;
  const clamp = (v, lo, hi) => (v < lo ? lo : v > hi ? hi : v);

  // numpy's hypot is glibc's (2.35+, without FMA): Borges' corrected sqrt. Math.hypot
  // differs in the last bit now and then, which moves RDP's choice between near ties.
  function hypot(x, y) {
    x = Math.abs(x); y = Math.abs(y);
    const ax = x < y ? y : x, ay = x < y ? x : y;
    if (ay <= ax * 2 ** -54) return ax + ay;
    let h = Math.sqrt(ax * ax + ay * ay), t1, t2;
    if (h <= 2.0 * ay) {
      const delta = h - ay;
      t1 = ax * (2.0 * delta - ax);
      t2 = (delta - 2.0 * (ax - ay)) * delta;
    } else {
      const delta = h - ax;
      t1 = 2.0 * delta * (ax - 2.0 * ay);
      t2 = (4.0 * delta - ay) * ay + delta * delta;
    }
    return h - (t1 + t2) / (2.0 * h);
  }

  // --- strokes --------------------------------------------------------------------------
  function toPoints(strokes) {
    // [[xs], [ys](, [ts])] per stroke -> arrays of [x, y] (time dropped), checked.
    if (!Array.isArray(strokes) || !strokes.length) throw new Error("the drawing has no strokes");
    return strokes.map((s, k) => {
      if (!Array.isArray(s) || s.length < 2 || !s[0].length || s[0].length !== s[1].length) {
        throw new Error(`stroke ${k} must be [[x...], [y...]] of one non-zero length`);
      }
      const pts = [];
      for (let i = 0; i < s[0].length; i++) {
        const x = f32(+s[0][i]), y = f32(+s[1][i]);  // the server reads strokes as float32
        if (!Number.isFinite(x) || !Number.isFinite(y)) throw new Error(`stroke ${k}: x and y must be finite numbers`);
        pts.push([x, y]);
      }
      return pts;
    });
  }

  function isSimplified(strokes) {
    if (!Array.isArray(strokes) || !strokes.length) return false;
    let lowX = Infinity, lowY = Infinity, high = -Infinity, whole = true;
    for (const s of strokes) {
      if (!Array.isArray(s) || s.length !== 2 || !s[0].length) return false;
      for (let i = 0; i < s[0].length; i++) {
        const x = s[0][i], y = s[1][i];
        whole = whole && x === Math.round(x) && y === Math.round(y);
        lowX = Math.min(lowX, x); lowY = Math.min(lowY, y); high = Math.max(high, x, y);
      }
    }
    const aligned = Math.min(lowX, lowY) >= 0 && Math.max(lowX, lowY) <= SIMPLIFIED_SLACK;
    return whole && aligned && 255 - SIMPLIFIED_SLACK <= high && high <= 255;
  }

  // np.interp for increasing xp (ties: the last xp[j] <= x), as numpy computes it.
  function interp(x, xp, fp) {
    const n = xp.length;
    if (x > xp[n - 1]) return fp[n - 1];
    if (x < xp[0]) return fp[0];
    let lo = 0, hi = n;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (x >= xp[mid]) lo = mid + 1; else hi = mid; }
    const j = lo - 1;
    if (j === n - 1 || xp[j] === x) return fp[j];
    const slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    return slope * (x - xp[j]) + fp[j];
  }

  function resample(pts) {
    const n = pts.length, length = new Float64Array(n);
    for (let i = 1; i < n; i++) {
      length[i] = length[i - 1] + hypot(pts[i][0] - pts[i - 1][0], pts[i][1] - pts[i - 1][1]);
    }
    const total = length[n - 1];
    if (total === 0) return [pts[0], pts[n - 1]];
    const out = [];
    const count = Math.ceil(total);
    let j = 0;
    // np.interp at increasing marks: j is the last index with length[j] <= mark
    const at = (x) => {
      while (j + 1 < n && length[j + 1] <= x) j++;
      if (j === n - 1 || length[j] === x) return pts[j];
      const t = x - length[j], dl = length[j + 1] - length[j];
      return [((pts[j + 1][0] - pts[j][0]) / dl) * t + pts[j][0], ((pts[j + 1][1] - pts[j][1]) / dl) * t + pts[j][1]];
    };
    for (let i = 0; i < count; i++) out.push(at(i));
    out.push(at(total));
    return out;
  }

  // Ramer-Douglas-Peucker as render.rdp: the farthest point (the first on ties) from the
  // chord's line, or from its start when the chord has no length.
  function rdp(pts, epsilon) {
    const keep = new Uint8Array(pts.length);
    if (!pts.length) return [];
    keep[0] = keep[pts.length - 1] = 1;
    const stack = [[0, pts.length - 1]];
    while (stack.length) {
      const [lo, hi] = stack.pop();
      if (hi - lo < 2) continue;
      const ax = pts[lo][0], ay = pts[lo][1];
      const cx = pts[hi][0] - ax, cy = pts[hi][1] - ay;
      const norm = hypot(cx, cy);
      let far = -1, split = -1;
      for (let i = lo + 1; i < hi; i++) {
        const dx = pts[i][0] - ax, dy = pts[i][1] - ay;
        const d = norm === 0 ? hypot(dx, dy) : Math.abs(cx * dy - cy * dx) / norm;
        if (d > far) { far = d; split = i; }
      }
      if (far > epsilon) { keep[split] = 1; stack.push([lo, split], [split, hi]); }
    }
    return pts.filter((_, i) => keep[i]);
  }

  // Raw strokes (any range) -> Google's simplified form: whole numbers in 0..255.
  function simplifyRaw(strokes, epsilon = 2.0) {
    const pts = toPoints(strokes);
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    for (const s of pts) for (const [x, y] of s) {
      minX = Math.min(minX, x); minY = Math.min(minY, y); maxX = Math.max(maxX, x); maxY = Math.max(maxY, y);
    }
    const extent = Math.max(maxX - minX, maxY - minY);
    const factor = extent > 0 ? 255.0 / extent : 1.0;
    return pts.map((s) => remember(simplifiedCache, `${minX},${minY},${factor},${epsilon}:${s.join(";")}`, () => {
      const scaled = s.map(([x, y]) => [(x - minX) * factor, (y - minY) * factor]);
      const kept = rdp(resample(scaled), epsilon);
      return [kept.map((p) => rint(p[0])), kept.map((p) => rint(p[1]))];
    }));
  }

  // While a drawing grows, only its last stroke changes (unless the drawing's extent
  // does): the other strokes' simplified form and coverage are looked up by their exact
  // content and placement instead of computed again. Small caches, oldest out first.
  const simplifiedCache = new Map(), coverageCache = new Map();
  function remember(cache, key, compute) {
    let value = cache.get(key);
    if (value === undefined) {
      value = compute();
      if (cache.size >= 256) cache.delete(cache.keys().next().value);
      cache.set(key, value);
    }
    return value;
  }

  // --- cairo's rendering ----------------------------------------------------------------
  function penVertexCount(radius) {
    if (4 * radius <= TOLERANCE) return 1;
    if (radius <= TOLERANCE) return 4;
    const n = Math.ceil((2 * Math.PI) / Math.acos(1 - TOLERANCE / radius));
    return Math.max(n + (n % 2), 4);
  }

  function chain(vx, vy, left) {
    const n = vx.length;
    const minY = Math.min(...vy), maxY = Math.max(...vy);
    const pick = (idx) => idx.reduce((best, i) => ((left ? vx[i] < vx[best] : vx[i] > vx[best]) ? i : best), idx[0]);
    const top = [], bottom = [];
    for (let i = 0; i < n; i++) { if (vy[i] === minY) top.push(i); if (vy[i] === maxY) bottom.push(i); }
    const start = pick(top), stop = pick(bottom);
    const walks = [1, -1].map((step) => {
      const walk = [start];
      while (walk[walk.length - 1] !== stop) walk.push((((walk[walk.length - 1] + step) % n) + n) % n);
      return walk;
    });
    const mean = walks.map((w) => w.reduce((a, i) => a + vx[i], 0) / w.length);
    const walk = walks[left ? (mean[1] < mean[0] ? 1 : 0) : (mean[1] > mean[0] ? 1 : 0)];
    return [walk.map((i) => vy[i]), walk.map((i) => vx[i])];
  }

  const penCache = new Map();
  function pen(halfWidth, scale) {
    const key = halfWidth + "/" + scale;
    if (penCache.has(key)) return penCache.get(key);
    const n = penVertexCount(halfWidth * scale);
    const vx = [], vy = [];
    for (let k = 0; k < n; k++) {
      const theta = (2.0 * Math.PI * k) / n;
      vx.push(rint(halfWidth * Math.cos(theta) * scale * ONE));
      vy.push(rint(halfWidth * Math.sin(theta) * scale * ONE));
    }
    const p = { minY: Math.min(...vy), maxY: Math.max(...vy), left: chain(vx, vy, true), right: chain(vx, vy, false) };
    penCache.set(key, p);
    return p;
  }

  const rowHeight = (row) => (2 * row + 1) * (ONE / (2 * GRID_Y));
  const snap = (x, size) => Math.floor(Math.min(Math.max(x, 0.0), ONE * size) + 0.5);

  function sampleRows(top, bottom, size) {
    const nRows = GRID_Y * size;
    const first = clamp((GRID_Y * top + ONE / 2) >> 8, 0, nRows);
    const end = clamp((GRID_Y * bottom + ONE / 2) >> 8, 0, nRows);
    return [first, end];
  }

  function slab(px, py, qx, qy, dx, dy) {
    if (dy === 0) return [-Infinity, Infinity, 0];
    const slope = dx / dy;
    const atP = px - py * slope, atQ = qx - qy * slope;
    return [Math.min(atP, atQ), Math.max(atP, atQ), slope];
  }

  // Simplified strokes (0..255 space) -> uint8 (size, size), ink = 255 on 0.
  function renderStrokes(strokes, size = 28, lineDiameter = 16.0, padding = 16.0) {
    const pts = toPoints(strokes);
    const scale = size / (ORIGINAL_SIDE + 2.0 * padding + lineDiameter);
    const halfWidth = lineDiameter / 2.0;
    let maxX = -Infinity, maxY = -Infinity;
    for (const s of pts) for (const [x, y] of s) { maxX = Math.max(maxX, x); maxY = Math.max(maxY, y); }
    const offX = (ORIGINAL_SIDE - maxX) / 2.0, offY = (ORIGINAL_SIDE - maxY) / 2.0;
    const margin = (padding + halfWidth) * scale;
    const nRows = GRID_Y * size;
    const p = pen(halfWidth, scale);
    const radius = halfWidth * scale;
    const image = new Int32Array(size * size);
    for (const s of pts) {
      const key = `${size},${lineDiameter},${padding},${offX},${offY}:${s.join(";")}`;
      composite(image, remember(coverageCache, key, () => strokeCoverage(s, size, scale, margin, offX, offY, p, radius)));
    }
    const out = new Uint8Array(size * size);
    for (let i = 0; i < out.length; i++) out[i] = Math.min(image[i], 255);
    return { h: size, w: size, d: out };
  }

  // One stroke's 8-bit coverage (size * size), as cairo's stroker and scan converter.
  function strokeCoverage(s, size, scale, margin, offX, offY, p, radius) {
    const nRows = GRID_Y * size;
    {
      // fixed-point device coordinates, repeated points dropped (cairo ignores them)
      const fx = [], fy = [];
      for (const [x, y] of s) {
        const X = rint(((x + offX) * scale + margin) * ONE), Y = rint(((y + offY) * scale + margin) * ONE);
        if (fx.length && X === fx[fx.length - 1] && Y === fy[fy.length - 1]) continue;
        fx.push(X); fy.push(Y);
      }
      const spans = { row: [], start: [], end: [] };
      const add = (row, start, end) => {
        spans.row.push(row); spans.start.push(snap(start, size)); spans.end.push(snap(end, size));
      };
      const [ly, lx] = p.left, [ry, rx] = p.right;
      for (let i = 0; i < fx.length; i++) {
        const [first, end] = sampleRows(fy[i] + p.minY, fy[i] + p.maxY, size);
        for (let row = first; row < end; row++) {
          const dy = rowHeight(row) - fy[i];
          add(row, fx[i] + interp(dy, ly, lx), fx[i] + interp(dy, ry, rx));
        }
      }
      for (let i = 0; i + 1 < fx.length; i++) {
        const ax = fx[i], ay = fy[i], bx = fx[i + 1], by = fy[i + 1];
        const norm = hypot(bx - ax, by - ay);
        const dirX = (bx - ax) / norm, dirY = (by - ay) / norm;
        const nx = rint(-dirY * radius * ONE), ny = rint(dirX * radius * ONE);
        const y0 = ay + ny, y1 = ay - ny, y2 = y0 + (by - ay), y3 = y1 + (by - ay);
        const [first, end] = sampleRows(Math.min(y0, y1, y2, y3), Math.max(y0, y1, y2, y3), size);
        const sides = slab(ax + nx, ay + ny, ax - nx, ay - ny, bx - ax, by - ay);
        const ends = slab(ax, ay, bx, by, nx, ny);
        for (let row = first; row < end; row++) {
          const h = rowHeight(row);
          const lo = Math.max(sides[0] + h * sides[2], ends[0] + h * ends[2]);
          const hi = Math.min(sides[1] + h * sides[2], ends[1] + h * ends[2]);
          add(row, lo, hi);
        }
      }
      return coverage(spans, size, nRows);
    }
  }

  // One stroke's 8-bit coverage from its spans: each sample row's spans are merged into
  // their union (overlaps count once), then summed per pixel in 1/256 px.
  function coverage(spans, size, nRows) {
    const covered = new Int32Array(size * size);
    const n = spans.row.length;
    // counting sort by sample row, then each row's few spans by start
    const first = new Int32Array(nRows + 1);
    for (let k = 0; k < n; k++) first[spans.row[k] + 1]++;
    for (let r = 0; r < nRows; r++) first[r + 1] += first[r];
    const fill = first.slice(0, nRows);
    const order = new Int32Array(n);
    for (let k = 0; k < n; k++) order[fill[spans.row[k]]++] = k;
    const { start: S, end: E } = spans;
    for (let r = 0; r < nRows; r++) {
      const a = first[r], b = first[r + 1];
      if (a === b) continue;
      for (let i = a + 1; i < b; i++) {
        const k = order[i];
        let j = i - 1;
        while (j >= a && S[order[j]] > S[k]) { order[j + 1] = order[j]; j--; }
        order[j + 1] = k;
      }
      const base = Math.floor(r / GRID_Y) * size;
      let reach = 0;
      for (let i = a; i < b; i++) {
        const k = order[i];
        const before = i === a ? 0 : reach;
        const start = Math.max(S[k], before), end = Math.max(E[k], before);
        reach = i === a ? E[k] : Math.max(reach, E[k]);
        if (end <= start) continue;
        const q0 = Math.floor(start / ONE), q1 = Math.min(Math.floor(end / ONE), size - 1);
        for (let q = q0; q <= q1; q++) {
          const lo = Math.max(start, q * ONE), hi = Math.min(end, (q + 1) * ONE);
          if (hi > lo) covered[base + q] += hi - lo;
        }
      }
    }
    const alpha = new Int32Array(size * size);
    for (let i = 0; i < alpha.length; i++) alpha[i] = (34 * covered[i] + 256) >> 9;
    return alpha;
  }

  function composite(image, alpha) {
    for (let i = 0; i < image.length; i++) {
      const a = alpha[i];
      const t = image[i] * (255 - a) + 127;
      image[i] = a + ((t + (t >> 8)) >> 8);
    }
  }

  // --- images: {h, w, d: Uint8Array} gray, ink = 255 on 0 ----------------------------
  const blank = (h, w) => ({ h, w, d: new Uint8Array(h * w) });

  function borderValues(img) {
    const { h, w, d } = img;
    if (Math.min(h, w) < 2) return Array.from(d);
    const v = [];
    for (let x = 0; x < w; x++) v.push(d[x]);
    for (let x = 0; x < w; x++) v.push(d[(h - 1) * w + x]);
    for (let y = 1; y < h - 1; y++) v.push(d[y * w]);
    for (let y = 1; y < h - 1; y++) v.push(d[y * w + w - 1]);
    return v;
  }
  function nearestRank(values, percent) {
    const sorted = values.slice().sort((a, b) => a - b);
    return sorted[rint((percent / 100.0) * (sorted.length - 1))];
  }

  function invertAuto(img, flatten = true) {
    let out = img;
    if (nearestRank(borderValues(img), 50) > 127.5) out = { h: img.h, w: img.w, d: img.d.map((v) => 255 - v) };
    if (!flatten) return out;
    const bg = nearestRank(borderValues(out), 10);
    if (bg <= 0) return out;
    const factor = f32(255.0 / Math.max(f32(255.0 - bg), 1.0));
    const d = out.d.map((v) => clamp(rint(f32(f32(v - bg) * factor)), 0, 255));
    return { h: out.h, w: out.w, d };
  }

  function inkBox(img, threshold) {
    const { h, w, d } = img;
    let top = h, bottom = -1, left = w, right = -1;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      if (d[y * w + x] > threshold) {
        top = Math.min(top, y); bottom = Math.max(bottom, y); left = Math.min(left, x); right = Math.max(right, x);
      }
    }
    return bottom < 0 ? null : [top, bottom + 1, left, right + 1];
  }

  function crop(img, top, bottom, left, right) {
    const out = blank(bottom - top, right - left);
    for (let y = top; y < bottom; y++) out.d.set(img.d.subarray(y * img.w + left, y * img.w + right), (y - top) * out.w);
    return out;
  }

  function cropToInk(img, threshold = INK_THRESHOLD) {
    const box = inkBox(img, threshold);
    return box ? crop(img, ...box) : img;
  }

  function fitBox(img, box = 20) {
    const factor = box / Math.max(img.h, img.w);
    return resizeOne(img, Math.max(1, rint(img.h * factor)), Math.max(1, rint(img.w * factor)));
  }

  // OpenCV's cv2.resize as resize_one calls it: INTER_AREA when shrinking, else INTER_LINEAR.
  function resizeOne(img, height, width) {
    if (img.h === height && img.w === width) return img;
    const shrinking = height < img.h || width < img.w;
    return cvResize(img, height, width, shrinking ? "area" : "linear");
  }

  function cvResize(img, dh, dw, interpolation) {
    const invX = dw / img.w, invY = dh / img.h;
    const scaleX = 1 / invX, scaleY = 1 / invY;
    const ix = rint(scaleX), iy = rint(scaleY);
    const fast = Math.abs(scaleX - ix) < 2.220446049250313e-16 && Math.abs(scaleY - iy) < 2.220446049250313e-16;
    if (interpolation === "linear" && fast && ix === 2 && iy === 2) interpolation = "area";
    if (interpolation === "area" && scaleX >= 1 && scaleY >= 1) {
      return fast ? resizeAreaFast(img, dh, dw, ix, iy) : resizeArea(img, dh, dw, scaleX, scaleY);
    }
    return resizeLinearU8(img, dh, dw, scaleX, scaleY, invX, invY, interpolation === "area");
  }

  function resizeAreaFast(img, dh, dw, sx, sy) {
    const out = blank(dh, dw);
    const area = sx * sy, scale = f32(1 / area);
    for (let y = 0; y < dh; y++) for (let x = 0; x < dw; x++) {
      let sum = 0;
      for (let j = 0; j < sy; j++) for (let i = 0; i < sx; i++) sum += img.d[(y * sy + j) * img.w + x * sx + i];
      out.d[y * dw + x] = sx === 2 && sy === 2 ? (sum + 2) >> 2 : clamp(rint(f32(sum * scale)), 0, 255);
    }
    return out;
  }

  function areaTab(ssize, dsize, scale) {
    const tab = [];
    for (let dx = 0; dx < dsize; dx++) {
      const fsx1 = dx * scale, fsx2 = fsx1 + scale;
      const cellWidth = Math.min(scale, ssize - fsx1);
      let sx1 = Math.ceil(fsx1), sx2 = Math.floor(fsx2);
      sx2 = Math.min(sx2, ssize - 1);
      sx1 = Math.min(sx1, sx2);
      if (sx1 - fsx1 > 1e-3) tab.push([dx, sx1 - 1, f32((sx1 - fsx1) / cellWidth)]);
      for (let sx = sx1; sx < sx2; sx++) tab.push([dx, sx, f32(1.0 / cellWidth)]);
      if (fsx2 - sx2 > 1e-3) tab.push([dx, sx2, f32(Math.min(Math.min(fsx2 - sx2, 1), cellWidth) / cellWidth)]);
    }
    return tab;
  }

  // OpenCV's resizeArea_<uchar, float>: float32 sums, rounded half to even.
  function resizeArea(img, dh, dw, scaleX, scaleY) {
    const xtab = areaTab(img.w, dw, scaleX), ytab = areaTab(img.h, dh, scaleY);
    const out = blank(dh, dw);
    const buf = new Float32Array(dw), sum = new Float32Array(dw);
    let prev = ytab[0][0];
    const flush = (dy) => { for (let x = 0; x < dw; x++) out.d[dy * dw + x] = clamp(rint(sum[x]), 0, 255); };
    for (const [dy, sy, beta] of ytab) {
      buf.fill(0);
      for (const [dx, sx, alpha] of xtab) buf[dx] = f32(buf[dx] + f32(img.d[sy * img.w + sx] * alpha));
      if (dy !== prev) {
        flush(prev);
        for (let x = 0; x < dw; x++) sum[x] = f32(beta * buf[x]);
        prev = dy;
      } else {
        for (let x = 0; x < dw; x++) sum[x] = f32(sum[x] + f32(beta * buf[x]));
      }
    }
    flush(prev);
    return out;
  }

  // Linear coefficients as OpenCV's resize computes them (area mode: INTER_AREA enlarging).
  // Only the x coefficients are clamped at the borders; rows past the edge repeat it.
  function linearTab(ssize, dsize, scale, inv, areaMode, horizontal) {
    const ofs = [], coef = [];
    for (let d = 0; d < dsize; d++) {
      let s, f;
      if (!areaMode) { f = f32((d + 0.5) * scale - 0.5); s = Math.floor(f); f = f32(f - s); }
      else { s = Math.floor(d * scale); f = f32(d + 1 - (s + 1) * inv); f = f <= 0 ? 0 : f32(f - Math.floor(f)); }
      if (horizontal && s < 0) { f = 0; s = 0; }
      if (horizontal && s >= ssize - 1) { f = 0; s = ssize - 1; }
      ofs.push(s);
      coef.push([f32(1 - f), f]);
    }
    return [ofs, coef];
  }

  // OpenCV's fixed-point linear resize of uint8 images (11-bit coefficients).
  function resizeLinearU8(img, dh, dw, scaleX, scaleY, invX, invY, areaMode) {
    const [xofs, xc] = linearTab(img.w, dw, scaleX, invX, areaMode, true);
    const [yofs, yc] = linearTab(img.h, dh, scaleY, invY, areaMode, false);
    const q = (c) => clamp(rint(f32(c * 2048)), -32768, 32767);
    const hrow = (sy) => {
      const row = new Int32Array(dw), base = clamp(sy, 0, img.h - 1) * img.w;
      for (let x = 0; x < dw; x++) {
        const s = xofs[x], s1 = Math.min(s + 1, img.w - 1);
        row[x] = img.d[base + s] * q(xc[x][0]) + img.d[base + s1] * q(xc[x][1]);
      }
      return row;
    };
    const out = blank(dh, dw);
    for (let y = 0; y < dh; y++) {
      const r0 = hrow(yofs[y]), r1 = hrow(yofs[y] + 1);
      const b0 = q(yc[y][0]), b1 = q(yc[y][1]);
      for (let x = 0; x < dw; x++) {
        const v = (((b0 * (r0[x] >> 4)) >> 16) + ((b1 * (r1[x] >> 4)) >> 16) + 2) >> 2;
        out.d[y * dw + x] = clamp(v, 0, 255);
      }
    }
    return out;
  }

  // The same for float32 images (Float32Array data): OpenCV's float linear resize.
  function resizeLinearF32(img, dh, dw) {
    const invX = dw / img.w, invY = dh / img.h;
    const [xofs, xc] = linearTab(img.w, dw, 1 / invX, invX, false, true);
    const [yofs, yc] = linearTab(img.h, dh, 1 / invY, invY, false, false);
    const hrow = (sy) => {
      const row = new Float32Array(dw), base = clamp(sy, 0, img.h - 1) * img.w;
      for (let x = 0; x < dw; x++) {
        const s = xofs[x], s1 = Math.min(s + 1, img.w - 1);
        row[x] = f32(f32(img.d[base + s] * xc[x][0]) + f32(img.d[base + s1] * xc[x][1]));
      }
      return row;
    };
    const out = { h: dh, w: dw, d: new Float32Array(dh * dw) };
    for (let y = 0; y < dh; y++) {
      const r0 = hrow(yofs[y]), r1 = hrow(yofs[y] + 1);
      for (let x = 0; x < dw; x++) out.d[y * dw + x] = f32(f32(r0[x] * yc[y][0]) + f32(r1[x] * yc[y][1]));
    }
    return out;
  }

  // --- centre of mass -------------------------------------------------------------------
  function offset(center, size, inkStart, inkEnd) {
    const off = Math.floor(size / 2.0 - center + 0.5);
    const low = -inkStart, high = size - inkEnd;
    return low <= high ? Math.min(Math.max(off, low), high) : off;
  }

  function placement(img, sizeH, sizeW) {
    const { h, w, d } = img;
    let m00 = 0, m10 = 0, m01 = 0;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      const v = d[y * w + x];
      m00 += v; m10 += x * v; m01 += y * v;
    }
    if (m00 === 0) return null;
    const [top, bottom, left, right] = inkBox(img, 0);
    return [offset(m01 / m00, sizeH, top, bottom), offset(m10 / m00, sizeW, left, right)];
  }

  function paste(canvas, img, top, left) {
    const y0 = Math.max(0, top), x0 = Math.max(0, left);
    const y1 = Math.min(canvas.h, top + img.h), x1 = Math.min(canvas.w, left + img.w);
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) canvas.d[y * canvas.w + x] = img.d[(y - top) * img.w + (x - left)];
  }

  function centerOfMass(img, size = 28) {
    const out = blank(size, size);
    const place = placement(img, size, size);
    if (place) paste(out, img, ...place);
    return out;
  }

  function centroid(img) {
    const out = blank(img.h, img.w);
    const place = placement(img, img.h, img.w);
    if (place) paste(out, img, ...place);
    return out;
  }

  function resize(img, size = 28, keepAspect = false) {
    if (img.h === size && img.w === size) return img;
    if (!keepAspect) return resizeOne(img, size, size);
    const fitted = fitBox(img, size);
    const out = blank(size, size);
    paste(out, fitted, Math.floor((size - fitted.h) / 2), Math.floor((size - fitted.w) / 2));
    return out;
  }

  // --- line width (width.py) -----------------------------------------------------------
  const [FIRST, SECOND] = (() => {
    const first = new Uint8Array(256), second = new Uint8Array(256);
    for (let code = 0; code < 256; code++) {
      const [p2, p3, p4, p5, p6, p7, p8, p9] = [0, 1, 2, 3, 4, 5, 6, 7].map((k) => (code >> k) & 1);
      let crossings = 0;
      for (const [a, b, c] of [[p2, p3, p4], [p4, p5, p6], [p6, p7, p8], [p8, p9, p2]]) crossings += (1 - a) & (b | c);
      const n1 = (p9 | p2) + (p3 | p4) + (p5 | p6) + (p7 | p8);
      const n2 = (p2 | p3) + (p4 | p5) + (p6 | p7) + (p8 | p9);
      if (crossings !== 1 || !(2 <= Math.min(n1, n2) && Math.min(n1, n2) <= 3)) continue;
      first[code] = ((p6 | p7 | (1 - p9)) & p8) === 0 ? 1 : 0;
      second[code] = ((p2 | p3 | (1 - p5)) & p4) === 0 ? 1 : 0;
    }
    return [first, second];
  })();

  // Guo-Hall thinning of a 0/1 mask (h, w), in place on a copy padded by one blank pixel
  // (OpenCV's filter2D with a constant 0 border), both sub-iterations as width.py runs them.
  function skeletonize(mask, h, w, maxIter = 32) {
    const W = w + 2, m = new Uint8Array((h + 2) * W);
    for (let y = 0; y < h; y++) m.set(mask.subarray(y * w, y * w + w), (y + 1) * W + 1);
    const del = [];
    for (let iter = 0; iter < maxIter; iter++) {
      let changed = false;
      for (const table of [FIRST, SECOND]) {
        del.length = 0;
        for (let y = 1; y <= h; y++) for (let i = y * W + 1, e = y * W + w; i <= e; i++) {
          if (!m[i]) continue;
          const code = m[i - W] | (m[i - W + 1] << 1) | (m[i + 1] << 2) | (m[i + W + 1] << 3) |
            (m[i + W] << 4) | (m[i + W - 1] << 5) | (m[i - 1] << 6) | (m[i - W - 1] << 7);
          if (table[code]) del.push(i);
        }
        for (const i of del) m[i] = 0;
        if (del.length) changed = true;
      }
      if (!changed) break;
    }
    for (let y = 0; y < h; y++) mask.set(m.subarray((y + 1) * W + 1, (y + 1) * W + 1 + w), y * w);
    return mask;
  }

  function skeletonLength(s, h, w) {
    const at = (y, x) => s[y * w + x];
    let horizontal = 0, vertical = 0, diagonal = 0;
    for (let y = 0; y < h; y++) for (let x = 0; x + 1 < w; x++) horizontal += at(y, x) & at(y, x + 1);
    for (let y = 0; y + 1 < h; y++) for (let x = 0; x < w; x++) vertical += at(y, x) & at(y + 1, x);
    for (let y = 0; y + 1 < h; y++) for (let x = 0; x + 1 < w; x++) {
      const a = at(y, x), b = at(y + 1, x + 1), c = at(y, x + 1), d = at(y + 1, x);
      diagonal += (a & b & ~(c | d) & 1) + (c & d & ~(a | b) & 1);
    }
    return horizontal + vertical + Math.SQRT2 * diagonal;
  }

  function strokeWidth(img, threshold = 48) {
    let sum = 0;
    const mask = new Uint8Array(img.d.length);
    for (let i = 0; i < img.d.length; i++) { sum += img.d[i]; mask[i] = img.d[i] > threshold ? 1 : 0; }
    const area = sum / 255.0;
    const length = skeletonLength(skeletonize(mask, img.h, img.w), img.h, img.w) + 1.0;
    return area > 0 ? area / length : 0.0;
  }

  const BLUR_SIGMA = 0.4, SOURCE_VARIANCE = 0.35, SOFTNESS = 0.1, UPSAMPLE = 2;
  const SIGMA_TOTAL = Math.sqrt(BLUR_SIGMA ** 2 + SOURCE_VARIANCE);

  function erf(x) {
    // erf to double precision (series near 0, continued fraction beyond): width.py calls
    // math.erf once per drawing to pick a threshold level.
    const sign = x < 0 ? -1 : 1;
    x = Math.abs(x);
    if (x < 2.5) {
      let term = x, sum = x;
      for (let n = 1; n < 80; n++) { term *= -x * x / n; sum += term / (2 * n + 1); }
      return sign * (2 / Math.sqrt(Math.PI)) * sum;
    }
    let f = 0;
    for (let n = 60; n >= 1; n--) f = (n / 2) / (x + f);
    return sign * (1 - Math.exp(-x * x) / Math.sqrt(Math.PI) / (x + f));
  }

  function threshold(current, target) {
    const s = SIGMA_TOTAL * Math.SQRT2;
    return 0.5 * (erf((target + current) / (2 * s)) - erf((target - current) / (2 * s)));
  }

  function gaussianKernel(sigma) {
    const n = rint(sigma * 4 * 2 + 1) | 1;
    const k = [];
    let sum = 0;
    for (let i = 0; i < n; i++) { const x = i - (n - 1) / 2; k.push(Math.exp((-0.5 / (sigma * sigma)) * x * x)); sum += k[i]; }
    return k.map((v) => f32(v / sum));
  }
  const reflect101 = (i, n) => (n === 1 ? 0 : i < 0 ? -i : i >= n ? 2 * n - 2 - i : i);

  function gaussianBlurF32(img, sigma) {
    const k = gaussianKernel(sigma), r = (k.length - 1) / 2;
    const { h, w } = img;
    const tmp = new Float32Array(h * w), out = new Float32Array(h * w);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      let s = 0;
      for (let j = -r; j <= r; j++) s = f32(s + f32(k[j + r] * img.d[y * w + reflect101(x + j, w)]));
      tmp[y * w + x] = s;
    }
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      let s = 0;
      for (let j = -r; j <= r; j++) s = f32(s + f32(k[j + r] * tmp[reflect101(y + j, h) * w + x]));
      out[y * w + x] = s;
    }
    return { h, w, d: out };
  }

  function redraw(img, current, target) {
    const { h, w } = img;
    const k = Math.max(h, w) < 64 ? UPSAMPLE : 1;
    const big = resizeLinearF32({ h, w, d: Float32Array.from(img.d) }, h * k, w * k);
    const blurred = gaussianBlurF32(big, BLUR_SIGMA * k);
    const level = 255.0 * threshold(current, target);
    const ramp = { h: h * k, w: w * k, d: blurred.d.map((v) => clamp(f32(f32(f32(v - f32(level)) / f32(SOFTNESS * 255.0)) + 0.5), 0, 1)) };
    const out = blank(h, w);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      let sum = 0;
      for (let j = 0; j < k; j++) for (let i = 0; i < k; i++) sum = f32(sum + ramp.d[(y * k + j) * ramp.w + x * k + i]);
      out.d[y * w + x] = clamp(rint(f32(f32(sum * f32(1 / (k * k))) * 255.0)), 0, 255);
    }
    return out.d.some((v) => v) ? out : img;
  }

  function disk(radius) {
    const n = 2 * radius + 1, r = radius, c = radius, inv = r ? 1 / (r * r) : 0;
    const el = new Uint8Array(n * n);
    for (let i = 0; i < n; i++) {
      const dy = i - r;
      if (Math.abs(dy) > r) continue;
      const dx = rint(c * Math.sqrt((r * r - dy * dy) * inv));
      for (let j = Math.max(c - dx, 0); j < Math.min(c + dx + 1, n); j++) el[i * n + j] = 1;
    }
    return { n, el };
  }

  function erode(img, radius) {
    const { n, el } = disk(radius), r = radius;
    const out = blank(img.h, img.w);
    for (let y = 0; y < img.h; y++) for (let x = 0; x < img.w; x++) {
      let m = 255;
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
        if (!el[i * n + j]) continue;
        const yy = y + i - r, xx = x + j - r;
        if (yy < 0 || yy >= img.h || xx < 0 || xx >= img.w) continue;  // the border never wins
        m = Math.min(m, img.d[yy * img.w + xx]);
      }
      out.d[y * img.w + x] = m;
    }
    return out;
  }

  function thin(img, change) {
    const { h, w } = img;
    const k = Math.max(h, w) < 64 ? UPSAMPLE : 1;
    const radius = (change * k) / 2.0;
    const inner = Math.floor(radius);
    const big = resizeOne(img, h * k, w * k);
    const near = inner ? erode(big, inner) : big;
    const far = erode(big, inner + 1);
    const a = f32(1.0 - (radius - inner)), b = f32(radius - inner);
    const blended = { h: big.h, w: big.w, d: near.d.map((v, i) => clamp(rint(f32(f32(v * a) + f32(far.d[i] * b))), 0, 255)) };
    const out = cvResize(blended, h, w, "area");
    return out.d.some((v) => v) ? out : img;
  }

  function lineWidth(img, width = 1.4, maxChange = 2.0, thinMargin = 1.0) {
    const current = strokeWidth(img);
    if (current > 0 && current <= width - 0.2) return redraw(img, Math.max(current, width - maxChange), width);
    if (current > width + thinMargin) return thin(img, Math.min(current - width, maxChange));
    return img;
  }

  // --- recipes --------------------------------------------------------------------------
  const OPS = {
    to_gray: (img) => img,
    invert_auto: (img, p) => invertAuto(img, p.flatten ?? true),
    crop_to_ink: (img, p) => cropToInk(img, p.threshold ?? INK_THRESHOLD),
    fit_box: (img, p) => fitBox(img, p.box ?? 20),
    center_of_mass: (img, p) => centerOfMass(img, p.size ?? 28),
    centroid: (img) => centroid(img),
    resize: (img, p) => resize(img, p.size ?? 28, p.keep_aspect ?? false),
    line_width: (img, p) => lineWidth(img, p.width ?? 1.4, p.max_change ?? 2.0, p.thin_margin ?? 1.0),
    fit_center: (img, p) => centerOfMass(fitBox(cropToInk(img, p.threshold ?? INK_THRESHOLD), p.box ?? 20), p.size ?? 28),
  };

  function supports(recipe, spec) {
    if (!recipe || !Array.isArray(recipe.steps)) return "no recipe";
    if (recipe.channels !== 1) return "colour recipes run on the server";
    if (spec && spec.kind !== "image") return `${spec.kind} models run on the server`;
    const missing = recipe.steps.map((s) => s.op).filter((op) => !(op in OPS));
    return missing.length ? `ops without a browser port: ${missing.join(", ")}` : null;
  }

  function recipeImage(strokes, recipe, size) {
    const raw = !isSimplified(strokes);
    const simple = raw ? simplifyRaw(strokes) : strokes;
    let img = renderStrokes(simple, size);
    for (const step of recipe.steps) img = OPS[step.op](img, step);
    const [h, w] = recipe.size;
    return resizeOne(img, h, w);
  }

  function modelInput(strokes, recipe, spec) {
    const size = (spec.size || recipe.size)[0];
    const image = recipeImage(strokes, recipe, size);
    const scale = f32(spec.scale ?? 1 / 255);
    const data = new Float32Array(image.d.length);
    for (let i = 0; i < data.length; i++) data[i] = image.d[i] * scale;
    const dims = spec.layout === "flat" ? [1, image.h * image.w] : [1, 1, image.h, image.w];
    return { data, dims, image };
  }

  return { supports, modelInput, recipeImage, simplifyRaw, isSimplified, renderStrokes, rint,
    _internals: { resample, rdp, cvResize, erode, thin, redraw, strokeWidth, resizeLinearF32, gaussianBlurF32 } };
})();

if (typeof module !== "undefined" && module.exports) module.exports = imgclassPrep;
else globalThis.imgclassPrep = imgclassPrep;
