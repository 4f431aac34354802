// The label map being edited: one class id per image pixel (Uint8Array, row-major, size x size).
// Every tool writes class ids here directly; colours are only ever drawn *from* this array, never
// read back from a canvas, so anti-aliasing can never leak into a saved mask.

const MAX_UNDO = 200;

// Brush geometry: a pixel is painted when its centre (i + 0.5, j + 0.5) lies within `radius` of the
// stroke segment. The radius never drops below 0.75 so that even a 1-pixel brush always paints the
// pixel under the cursor (its centre is at most 0.71 away).
export function brushRadius(size) {
  return Math.max(size / 2, 0.75);
}

export class MaskModel {
  constructor(size, data) {
    this.size = size;
    this.data = data ? new Uint8Array(data) : new Uint8Array(size * size);
    this.undoStack = [];
    this.redoStack = [];
  }

  // Call before every edit: the undo stack holds whole snapshots (cheap at these sizes, always exact).
  checkpoint() {
    this.undoStack.push(this.data.slice());
    if (this.undoStack.length > MAX_UNDO) this.undoStack.shift();
    this.redoStack = [];
  }

  // Drop the last checkpoint when the edit it guarded changed nothing.
  discardCheckpointIfUnchanged() {
    const last = this.undoStack[this.undoStack.length - 1];
    if (last && equalArrays(last, this.data)) this.undoStack.pop();
  }

  canUndo() { return this.undoStack.length > 0; }
  canRedo() { return this.redoStack.length > 0; }

  undo() {
    if (!this.undoStack.length) return false;
    this.redoStack.push(this.data);
    this.data = this.undoStack.pop();
    return true;
  }

  redo() {
    if (!this.redoStack.length) return false;
    this.undoStack.push(this.data);
    this.data = this.redoStack.pop();
    return true;
  }

  at(x, y) {
    const i = Math.floor(x), j = Math.floor(y);
    if (i < 0 || j < 0 || i >= this.size || j >= this.size) return -1;
    return this.data[j * this.size + i];
  }

  // Pixels (flat indices) a brush segment covers; used for painting and for the cursor preview.
  segmentPixels(x0, y0, x1, y1, radius) {
    const n = this.size, out = [];
    const minI = Math.max(0, Math.floor(Math.min(x0, x1) - radius - 1));
    const maxI = Math.min(n - 1, Math.ceil(Math.max(x0, x1) + radius + 1));
    const minJ = Math.max(0, Math.floor(Math.min(y0, y1) - radius - 1));
    const maxJ = Math.min(n - 1, Math.ceil(Math.max(y0, y1) + radius + 1));
    const dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy, r2 = radius * radius;
    for (let j = minJ; j <= maxJ; j++) {
      const cy = j + 0.5;
      for (let i = minI; i <= maxI; i++) {
        const cx = i + 0.5;
        let t = len2 > 0 ? ((cx - x0) * dx + (cy - y0) * dy) / len2 : 0;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        const px = x0 + t * dx - cx, py = y0 + t * dy - cy;
        if (px * px + py * py <= r2) out.push(j * n + i);
      }
    }
    return out;
  }

  // Paint a brush segment; returns the bounding box changed, or null.
  paintSegment(x0, y0, x1, y1, radius, cls) {
    const px = this.segmentPixels(x0, y0, x1, y1, radius);
    return this._setPixels(px, cls);
  }

  // 4-connected flood fill of the region of equal class around (x, y). With `intensity` (one value
  // per pixel) and tolerance > 0, the region also stops where |intensity - intensity at (x, y)| > tolerance.
  floodFill(x, y, cls, intensity = null, tolerance = 0) {
    const n = this.size, i0 = Math.floor(x), j0 = Math.floor(y);
    if (i0 < 0 || j0 < 0 || i0 >= n || j0 >= n) return null;
    const d = this.data, target = d[j0 * n + i0];
    if (target === cls) return null;
    let ok = null;
    if (intensity && tolerance > 0) {
      const v0 = intensity[j0 * n + i0];
      ok = new Uint8Array(n * n);
      for (let p = 0; p < n * n; p++) ok[p] = Math.abs(intensity[p] - v0) <= tolerance ? 1 : 0;
    }
    const stack = [j0 * n + i0];
    d[j0 * n + i0] = cls;
    let minI = i0, maxI = i0, minJ = j0, maxJ = j0;
    while (stack.length) {
      const p = stack.pop(), i = p % n, j = (p - i) / n;
      if (i < minI) minI = i; if (i > maxI) maxI = i;
      if (j < minJ) minJ = j; if (j > maxJ) maxJ = j;
      for (const q of [i > 0 ? p - 1 : -1, i < n - 1 ? p + 1 : -1, j > 0 ? p - n : -1, j < n - 1 ? p + n : -1]) {
        if (q >= 0 && d[q] === target && (!ok || ok[q])) { d[q] = cls; stack.push(q); }
      }
    }
    return { minI, maxI, minJ, maxJ };
  }

  // Fill a closed polygon (image coordinates): pixels whose centre is inside (even-odd rule).
  fillPolygon(points, cls) {
    if (points.length < 3) return null;
    const n = this.size, px = [];
    let minY = Infinity, maxY = -Infinity;
    for (const p of points) { minY = Math.min(minY, p.y); maxY = Math.max(maxY, p.y); }
    const j0 = Math.max(0, Math.floor(minY - 0.5)), j1 = Math.min(n - 1, Math.ceil(maxY));
    for (let j = j0; j <= j1; j++) {
      const cy = j + 0.5, xs = [];
      for (let k = 0; k < points.length; k++) {
        const a = points[k], b = points[(k + 1) % points.length];
        if ((a.y <= cy) !== (b.y <= cy)) xs.push(a.x + (cy - a.y) * (b.x - a.x) / (b.y - a.y));
      }
      xs.sort((u, v) => u - v);
      for (let k = 0; k + 1 < xs.length; k += 2) {
        // pixel centres i + 0.5 in [xs[k], xs[k+1])
        const iStart = Math.max(0, Math.ceil(xs[k] - 0.5)), iEnd = Math.min(n - 1, Math.ceil(xs[k + 1] - 0.5) - 1);
        for (let i = iStart; i <= iEnd; i++) px.push(j * n + i);
      }
    }
    return this._setPixels(px, cls);
  }

  _setPixels(px, cls) {
    const n = this.size, d = this.data;
    let minI = n, maxI = -1, minJ = n, maxJ = -1;
    for (const p of px) {
      if (d[p] === cls) continue;
      d[p] = cls;
      const i = p % n, j = (p - i) / n;
      if (i < minI) minI = i; if (i > maxI) maxI = i;
      if (j < minJ) minJ = j; if (j > maxJ) maxJ = j;
    }
    return maxI < 0 ? null : { minI, maxI, minJ, maxJ };
  }

  counts(numClasses) {
    const c = new Array(numClasses).fill(0);
    for (const v of this.data) c[v] = (c[v] || 0) + 1;
    return c;
  }
}

export function equalArrays(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---- PNG encoding of a label map (8-bit grayscale, values are class ids) ------------------------

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

async function zlibCompress(raw) {
  if (typeof CompressionStream === "function") {
    const stream = new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  return zlibStored(raw);
}

// zlib stream of uncompressed deflate blocks (fallback when CompressionStream is unavailable).
function zlibStored(raw) {
  const blocks = Math.max(1, Math.ceil(raw.length / 65535));
  const out = new Uint8Array(2 + raw.length + blocks * 5 + 4);
  out[0] = 0x78; out[1] = 0x01;
  let o = 2;
  for (let b = 0; b < blocks; b++) {
    const start = b * 65535, len = Math.min(65535, raw.length - start);
    out[o++] = b === blocks - 1 ? 1 : 0;
    out[o++] = len & 0xff; out[o++] = len >>> 8;
    out[o++] = ~len & 0xff; out[o++] = (~len >>> 8) & 0xff;
    out.set(raw.subarray(start, start + len), o); o += len;
  }
  let a = 1, s = 0;
  for (let i = 0; i < raw.length; i++) { a = (a + raw[i]) % 65521; s = (s + a) % 65521; }
  new DataView(out.buffer).setUint32(o, ((s << 16) | a) >>> 0);
  return out;
}

export async function encodeMaskPNG(data, width, height) {
  const raw = new Uint8Array((width + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (width + 1)] = 0; // filter: none
    raw.set(data.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  }
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, width); v.setUint32(4, height);
  ihdr[8] = 8; ihdr[9] = 0; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0; // 8-bit grayscale
  const parts = [new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", ihdr),
                 chunk("IDAT", await zlibCompress(raw)), chunk("IEND", new Uint8Array(0))];
  return new Blob(parts, { type: "image/png" });
}
