'use strict';
/**
 * Code Actions JavaScript engine harness (Node.js 18).
 *
 * Runs inside the engine container (see engines/PROTOCOL.md). Reads one job (JSON) on stdin,
 * loads the user's source as a CommonJS module, calls its `Run(engine)` once (awaiting it when
 * it returns a promise) and writes length-prefixed JSON frames on the container's stdout.
 *
 * Frame channel. start.sh hands us the container's stdout on fd 3 and points fd 1 at a FIFO;
 * before any user code runs we move the frame channel to a private close-on-exec descriptor,
 * open our own read end of the FIFO, unlink it, and start a small worker thread that drains it
 * into a shared 64 KiB buffer. So everything user code *prints* - console.*, process.stdout /
 * process.stderr (replaced by streams that write to fd 1), fs.writeSync(1, ...), /dev/stdout,
 * /proc/self/fd/1, child processes inheriting stdout - lands in the capture and comes back
 * only inside the one `stdout` frame, the same guarantee as the Python harness. fd 2 stays the
 * container's stderr (never parsed as frames) so that node's own fatal messages (heap out of
 * memory) reach the worker's crash report; in-process stderr output is captured like stdout.
 *
 * What this does not (and cannot) prevent: code running in this process can find the private
 * frame descriptor (or load native code, or patch the harness's objects) and write forged
 * frames on purpose. That is acceptable: the worker treats every frame as untrusted and
 * enforces its own caps, and a forged frame can only do what the engine API already lets the
 * code do - set its own result and logs. The guarantee is "cannot forge a frame by printing".
 *
 * It knows nothing of the platform and needs no network, environment or mounted file; /tmp
 * (the sandbox's tmpfs) only holds the FIFO for the moments before start-up ends.
 *
 * A job with `"compat": "legacy"` gets the old engine's leniency (engines/PROTOCOL.md, "Legacy
 * mode"): a source without Run runs as a script, as the old service ran JavaScript codes; each
 * leniency that applies is told to the code's owner in a `debug` log.
 */

const fs = require('fs');
const Module = require('module');
const path = require('path');
const util = require('util');
const { Writable } = require('stream');
const { Worker } = require('worker_threads');

const LOG_CONTENT_MAX = 8000;
const STDOUT_MAX = 64 * 1024;
const CONTENT_TYPES = ['text', 'json', 'html'];
// Legacy mode: MIME names of the three kinds (a `+json` suffix is json too).
const MIME_KINDS = new Map([
  ['application/json', 'json'],
  ['text/json', 'json'],
  ['text/html', 'html'],
  ['application/xhtml+xml', 'html'],
  ['text/plain', 'text'],
]);

/** The kind legacy mode answers for a content type that is not one of ours, or null. */
function legacyKind(kind) {
  const media = (kind || '').split(';')[0].trim();
  if (MIME_KINDS.has(media)) return MIME_KINDS.get(media);
  return media.endsWith('+json') ? 'json' : null;
}
const ACTION_FILENAME = '/tmp/action.js';
const HARNESS_FILENAME = __filename;
const FRAME_FD = 3; // from start.sh: the container's stdout
const FIFO_HOLD_FD = 4; // from start.sh: the FIFO opened read-write
const READY_FD = 5; // warm environments: supervisor.c waits for one byte here
// Resident mode: fd 5 stays the control pipe to supervisor.c (one byte: 'R' ready, 'B' the
// last frames begin, then just before the end frame 'E' this process serves the next run or
// 'X' it exits); the jobs come framed on fd 6, a pipe only the supervisor writes.
const JOB_FD = 6;
const DRAINER_BOOT_WAIT_MS = 10000; // far more than it takes even on a loaded machine

// What the frame path uses, taken before user code can replace it.
const jsonStringify = JSON.stringify;
const jsonParse = JSON.parse;
const bufferFrom = Buffer.from;
const bufferAllocUnsafe = Buffer.allocUnsafe;
const { writeSync, readSync, openSync, closeSync, fstatSync, statSync, unlinkSync } = fs;
const { O_RDONLY, O_WRONLY, O_APPEND, O_NONBLOCK } = fs.constants;
const atomicsWait = Atomics.wait;
const originalReallyExit = process.reallyExit;
const originalKill = process.kill;
const getActiveResourcesInfo = process.getActiveResourcesInfo;
const scheduleImmediate = setImmediate;
const { randomFillSync } = require('crypto');

let frameFd = 1;
let endedMarker = ''; // start.sh: a file to create before the last frames (see there)
let sealed = false; // the end frame is out: nothing more is written

// ----------------------------------------------------------------------------- helpers

const sleepCell = new Int32Array(new SharedArrayBuffer(4));
function sleep(ms) {
  atomicsWait(sleepCell, 0, 0, ms);
}

function writeAll(fd, buffer) {
  let offset = 0;
  while (offset < buffer.length) {
    try {
      offset += writeSync(fd, buffer, offset, buffer.length - offset);
    } catch (err) {
      // Someone made the descriptor non-blocking (e.g. wrapped fd 1 in a net.Socket).
      if (err && err.code === 'EAGAIN') {
        sleep(1);
        continue;
      }
      throw err;
    }
  }
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** Frames carry well-formed UTF-8: a lone surrogate becomes U+FFFD. */
function wellFormed(text) {
  return LONE_SURROGATE.test(text) ? text.replace(LONE_SURROGATE, '\ufffd') : text;
}

/** The first `max` characters (code points, as Python counts them) of `text`. */
function cut(text, max) {
  if (text.length <= max) return text;
  let index = 0;
  let count = 0;
  while (index < text.length && count < max) {
    const code = text.charCodeAt(index);
    const pair =
      code >= 0xd800 &&
      code <= 0xdbff &&
      index + 1 < text.length &&
      (text.charCodeAt(index + 1) & 0xfc00) === 0xdc00;
    index += pair ? 2 : 1;
    count += 1;
  }
  return text.slice(0, index);
}

/** How a value reads in a log: strings as they are, objects and arrays as JSON. */
function formatValue(value) {
  if (typeof value === 'string') return value;
  if (value === null || value === undefined) return String(value);
  if (typeof value !== 'object') {
    try {
      return String(value);
    } catch {
      return util.inspect(value);
    }
  }
  if (value instanceof Error) {
    try {
      return String(value);
    } catch {
      return util.inspect(value);
    }
  }
  if (value instanceof Date) {
    return Number.isNaN(value.getTime()) ? 'Invalid Date' : value.toISOString();
  }
  if (value instanceof Map || value instanceof Set) {
    return util.inspect(value, { depth: 4, breakLength: Infinity });
  }
  try {
    const text = jsonStringify(value);
    if (typeof text === 'string') return text;
  } catch {
    // circular, BigInt inside, a throwing toJSON...
  }
  try {
    return util.inspect(value, { depth: 4, breakLength: Infinity });
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/**
 * dup2('/dev/null', fd) without dup2: close it and let open() take the lowest free number.
 * (libuv aborts if it ever has to close a descriptor <= 2 it opened, so none is left free.)
 * Not atomic: a descriptor another thread opens in between takes the number instead, and if
 * that is one of libuv's own (see DRAINER_SOURCE) node aborts when it closes it. So this only
 * runs while no thread of ours can be opening descriptors (see Capture.waitForDrainer).
 */
function pointAtDevNull(fd) {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
  try {
    const opened = openSync('/dev/null', fd === 0 ? O_RDONLY : O_WRONLY);
    if (opened !== fd) closeSync(opened);
  } catch {
    // leave it closed
  }
}

// ----------------------------------------------------------------------------- frames

function encodeFrame(frame) {
  const body = bufferFrom(jsonStringify(frame), 'utf8');
  const out = bufferAllocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, 4);
  return out;
}

function writeFrame(bytes) {
  if (!sealed) writeAll(frameFd, bytes);
}

function send(frame) {
  writeFrame(encodeFrame(frame));
}

/** Tell start.sh that the last frames are ours to write: it must not add its own. */
function markEnded() {
  if (control >= 0) {
    tell('B'); // resident: the supervisor must not write a crash report of its own now
    return;
  }
  if (!endedMarker) return;
  try {
    closeSync(openSync(endedMarker, 'wx', 0o600));
  } catch {
    // it exists already, or /tmp is gone: either way start.sh stays silent or cannot help
  }
}

/**
 * Take the container's stdout (fd 3 from start.sh, else fd 1) and, when it is a pipe, reopen
 * it as a new close-on-exec descriptor so that child processes of the user code do not inherit
 * it. Docker hands the container pipes owned by its user, so the reopen works as nobody.
 */
function openFrameChannel() {
  let fd = 1;
  try {
    fstatSync(FRAME_FD);
    fd = FRAME_FD;
  } catch {
    // started without start.sh
  }
  try {
    if (fstatSync(fd).isFIFO()) {
      const reopened = openSync(`/proc/self/fd/${fd}`, O_WRONLY | O_APPEND);
      if (fd === FRAME_FD) closeSync(FRAME_FD);
      fd = reopened;
    }
  } catch {
    // keep the inherited descriptor
  }
  frameFd = fd;
}

// ----------------------------------------------------------------------------- capture

// Layout of the shared buffer between the main thread and the drainer thread.
const H_OWNER = 0; // who reads the FIFO: 0 nobody yet, 1 the drainer, 2 the main thread
const H_DONE = 1;
const H_SIZE = 2;
const H_TRUNCATED = 3;
const H_TOTAL = 4; // bytes printed in all, kept or not (saturates at 2^31 - 1)
const H_READY = 5; // 1 once the drainer thread opens no more descriptors (see below)
// Resident mode (Capture.beginRun/endRun): the generation each fence token was armed for
// (start, end), and the last end fence the drainer found.
const H_FENCE = 6;
const H_SEEN = 8;
const TOKENS = 64; // byte offset of the two fence tokens (start, end)
const TOKEN_BYTES = 48;
const HEADER_BYTES = TOKENS + 2 * TOKEN_BYTES;
const FENCE_WAIT_MS = 5000;
const TOTAL_MAX = 2 ** 31 - 1;
const OWNER_DRAINER = 1;
const OWNER_MAIN = 2;

// The drainer: reads the FIFO with libuv (non-blocking, so it never holds up process exit),
// keeps the first `cap` bytes in the shared buffer and discards the rest. A worker thread
// keeps draining while the main thread is blocked (a big synchronous write to fd 1, spawnSync
// with inherited stdout), so no write can deadlock on a full pipe. It boots while the main
// thread waits for the job. Should it never come up, the main thread claims the FIFO and
// drains it itself.
//
// Not a descriptor <= 2 may be free while the drainer thread sets itself up: what libuv opens
// for its loop (epoll fd, eventfd, signal pipe, cgroup files read to size the heap and, on the
// first net.Socket, the spare /dev/null it keeps against EMFILE) it later closes with
// uv__close(), which asserts fd > 2 and aborts the whole process ("uv__close: Assertion
// `fd > STDERR_FILENO' failed", at exit or at once). So the drainer says when it has opened
// everything it ever will (H_READY, once its Socket exists), and the main thread waits for
// that before user code runs (which may close fds 0-2) and before it re-points fd 1 at
// /dev/null in Capture.finish (a close, then an open: not atomic).
const DRAINER_SOURCE = `
'use strict';
(() => {
const { workerData } = require('worker_threads');
const header = new Int32Array(workerData.sab, 0, ${HEADER_BYTES / 4});
const done = () => {
  if (Atomics.exchange(header, ${H_DONE}, 1) === 0) Atomics.notify(header, ${H_DONE});
};
try {
  if (Atomics.compareExchange(header, ${H_OWNER}, 0, ${OWNER_DRAINER}) !== 0) return;
  const cap = workerData.cap;
  const data = new Uint8Array(workerData.sab, ${HEADER_BYTES}, cap);
  const tokens = new Uint8Array(workerData.sab, ${TOKENS}, ${2 * TOKEN_BYTES});
  let size = 0;
  const keep = (chunk) => {
    if (!chunk.length) return;
    const total = Atomics.load(header, ${H_TOTAL}) + chunk.length;
    Atomics.store(header, ${H_TOTAL}, Math.min(total, ${TOTAL_MAX}));
    const room = cap - size;
    if (room > 0) {
      const n = Math.min(room, chunk.length);
      data.set(chunk.subarray(0, n), size);
      size += n;
      Atomics.store(header, ${H_SIZE}, size);
    }
    if (chunk.length > room) Atomics.store(header, ${H_TRUNCATED}, 1);
  };
  // Resident mode: one process serves many runs, so a run's output is what comes between
  // its start and its end fence (random tokens the main thread writes to fd 1 in order
  // with everything else); what comes outside a run is dropped. One-shot: always running.
  let running = !workerData.resident;
  const seen = [0, 0];
  let tail = null; // the end of the last chunk, when it may be the start of a token
  const overlap = (buf, token) => {
    for (let k = Math.min(token.length - 1, buf.length); k > 0; k--) {
      if (buf.subarray(buf.length - k).equals(token.subarray(0, k))) return k;
    }
    return 0;
  };
  const take = (chunk) => {
    let buf = tail ? Buffer.concat([tail, chunk]) : chunk;
    tail = null;
    for (;;) {
      const slot = running ? 1 : 0;
      const armed = Atomics.load(header, ${H_FENCE} + slot);
      if (armed === seen[slot]) {
        if (running) keep(buf);
        return;
      }
      const token = Buffer.from(tokens.subarray(slot * ${TOKEN_BYTES}, (slot + 1) * ${TOKEN_BYTES}));
      const at = buf.indexOf(token);
      if (at < 0) {
        const k = overlap(buf, token);
        if (running) keep(buf.subarray(0, buf.length - k));
        if (k) tail = Buffer.from(buf.subarray(buf.length - k));
        return;
      }
      seen[slot] = armed;
      if (running) {
        keep(buf.subarray(0, at));
        running = false;
        Atomics.store(header, ${H_SEEN}, armed);
        Atomics.notify(header, ${H_SEEN});
      } else {
        running = true;
        size = 0;
        Atomics.store(header, ${H_SIZE}, 0);
        Atomics.store(header, ${H_TOTAL}, 0);
        Atomics.store(header, ${H_TRUNCATED}, 0);
      }
      buf = buf.subarray(at + token.length);
    }
  };
  const { Socket } = require('net');
  const input = new Socket({ fd: workerData.fd, readable: true, writable: false });
  input.on('data', take);
  input.on('end', done);
  input.on('close', done);
  input.on('error', done);
} catch (err) {
  done();
} finally {
  Atomics.store(header, ${H_READY}, 1);
  Atomics.notify(header, ${H_READY});
}
})();
`;

class Capture {
  constructor(cap, resident = false) {
    this.cap = cap;
    this.resident = resident;
    this.generation = 0; // resident mode: the run in progress (beginRun)
    this.mode = 'memory';
    this.chunks = [];
    this.size = 0;
    this.total = 0;
    this.truncated = false;
    this.broken = false;
    this.closed = false;
  }

  /** FIFO mode: fd 1 is the FIFO at `fifoPath` (start.sh); drain it from a worker thread. */
  startFifo(fifoPath) {
    let fifo;
    try {
      fifo = statSync(fifoPath);
      const out = fstatSync(1);
      if (!fifo.isFIFO() || !out.isFIFO() || out.ino !== fifo.ino || out.dev !== fifo.dev) {
        return false;
      }
    } catch {
      return false;
    }
    const readFd = openSync(fifoPath, O_RDONLY | O_NONBLOCK);
    try {
      const hold = fstatSync(FIFO_HOLD_FD);
      if (hold.ino === fifo.ino && hold.dev === fifo.dev) closeSync(FIFO_HOLD_FD);
    } catch {
      // not there
    }
    unlinkSync(fifoPath);
    this.fifo = fifo;
    this.readFd = readFd;
    this.sab = new SharedArrayBuffer(HEADER_BYTES + this.cap);
    this.header = new Int32Array(this.sab, 0, HEADER_BYTES / 4);
    this.worker = new Worker(DRAINER_SOURCE, {
      eval: true,
      workerData: { fd: readFd, sab: this.sab, cap: this.cap, resident: this.resident },
      env: {},
      argv: [],
      execArgv: [],
      stdout: true, // never piped into our (captured) process.stdout
      stderr: true,
      resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4 },
    });
    this.worker.on('error', () => {});
    this.worker.unref();
    this.mode = 'fifo';
    return true;
  }

  /** Whether the drainer thread is set up: it opens no more descriptors from then on. */
  drainerReady() {
    return Atomics.load(this.header, H_READY) === 1;
  }

  /**
   * Block (at most `waitMs`) until the drainer thread is set up, so that no descriptor it
   * opens can take the number of a std descriptor that user code closes or that finish()
   * re-points. Returns whether it is.
   */
  waitForDrainer(waitMs) {
    if (this.mode !== 'fifo') return true;
    const deadline = Date.now() + waitMs;
    while (!this.drainerReady()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      atomicsWait(this.header, H_READY, 0, Math.min(left, 100));
    }
    return true;
  }

  /**
   * Resident mode: whether a run's output can be cut out of the FIFO (the drainer runs, fd 1
   * is still the FIFO and the last fence was found); else the process serves no more runs.
   */
  intact() {
    if (this.mode !== 'fifo' || this.broken || !this.drainerReady()) return false;
    if (Atomics.load(this.header, H_OWNER) !== OWNER_DRAINER) return false;
    try {
      const out = fstatSync(1);
      return out.ino === this.fifo.ino && out.dev === this.fifo.dev;
    } catch {
      return false;
    }
  }

  /** Resident mode: write fence `slot` (0 start, 1 end) of this run into the stream. */
  fence(slot) {
    const token = bufferAllocUnsafe(TOKEN_BYTES);
    randomFillSync(token);
    token[0] = 0; // never the start of anything printable
    new Uint8Array(this.sab, TOKENS + slot * TOKEN_BYTES, TOKEN_BYTES).set(token);
    Atomics.store(this.header, H_FENCE + slot, this.generation);
    writeAll(1, token);
  }

  /** Resident mode: a run begins; what was printed since the last run's end is dropped. */
  beginRun() {
    this.generation += 1;
    this.closed = false;
    if (!this.intact()) return;
    try {
      this.fence(0);
      this.started = this.generation;
    } catch {
      this.broken = true;
    }
  }

  /**
   * Resident mode: the run's output, as `finish` returns it, and whether the capture still
   * works for the next run (else `finish` did the one-shot's job and the process must go).
   */
  endRun() {
    if (!this.intact()) return this.salvage();
    try {
      this.fence(1);
    } catch {
      this.broken = true;
      return this.salvage();
    }
    const deadline = Date.now() + FENCE_WAIT_MS;
    while (Atomics.load(this.header, H_SEEN) !== this.generation) {
      const left = deadline - Date.now();
      if (left <= 0) {
        this.broken = true;
        return this.salvage();
      }
      atomicsWait(this.header, H_SEEN, Atomics.load(this.header, H_SEEN), Math.min(left, 100));
    }
    const size = Atomics.load(this.header, H_SIZE);
    const truncated = Atomics.load(this.header, H_TRUNCATED) === 1;
    const data = bufferFrom(new Uint8Array(this.sab, HEADER_BYTES, size));
    const text = new util.TextDecoder('utf-8').decode(data, { stream: truncated });
    return { text, total: Atomics.load(this.header, H_TOTAL), intact: true };
  }

  /** Resident mode, the capture broke: what `finish` finds, if this run's start got out. */
  salvage() {
    const started = this.mode !== 'fifo' || this.started === this.generation;
    const printed = this.finish();
    return started ? { ...printed, intact: false } : { text: '', total: 0, intact: false };
  }

  /** Memory mode: in-process output only; fd 1 goes to /dev/null, never to the frames. */
  startMemory() {
    if (frameFd !== 1) pointAtDevNull(1); // else nowhere else to put the frames: last resort
  }

  /** Read the (non-blocking) FIFO until EOF, waiting at most `waitMs` for other writers. */
  drainHere(waitMs) {
    const chunk = bufferAllocUnsafe(65536);
    const deadline = Date.now() + waitMs;
    for (;;) {
      let n;
      try {
        n = readSync(this.readFd, chunk, 0, chunk.length, null);
      } catch (err) {
        if (err && err.code === 'EAGAIN' && Date.now() < deadline) {
          sleep(2);
          continue;
        }
        return;
      }
      if (n === 0) return;
      this.keep(chunk.subarray(0, n));
    }
  }

  keep(bytes) {
    this.total = Math.min(this.total + bytes.length, TOTAL_MAX);
    const room = this.cap - this.size;
    if (room > 0) {
      const kept = bytes.length > room ? bytes.subarray(0, room) : bytes;
      this.chunks.push(bufferFrom(kept));
      this.size += kept.length;
    }
    if (bytes.length > room) this.truncated = true;
  }

  write(bytes) {
    if (this.broken || this.closed) return;
    if (this.mode === 'fifo') {
      try {
        writeAll(1, bytes);
      } catch {
        this.broken = true;
      }
      return;
    }
    this.keep(bytes);
  }

  /**
   * Stop capturing; returns what was captured, decoded, and how many bytes were printed in
   * all (the worker enforces its own output limit on that).
   */
  finish() {
    this.closed = true;
    let data;
    let truncated;
    if (this.mode === 'fifo') {
      // Our write end goes; children of the user code may still hold theirs: wait for EOF
      // only briefly, as the Python harness does. Only once the drainer thread is set up (it
      // always is, unless it failed to come up in time): a descriptor it opens could take
      // number 1 between the close and the open. Otherwise fd 1 stays ours and the wait
      // runs out.
      if (this.drainerReady()) pointAtDevNull(1);
      if (Atomics.compareExchange(this.header, H_OWNER, 0, OWNER_MAIN) === 0) {
        this.drainHere(500);
        data = Buffer.concat(this.chunks);
        truncated = this.truncated;
      } else {
        atomicsWait(this.header, H_DONE, 0, 500);
        this.total = Atomics.load(this.header, H_TOTAL);
        const size = Atomics.load(this.header, H_SIZE);
        truncated = Atomics.load(this.header, H_TRUNCATED) === 1;
        data = bufferFrom(new Uint8Array(this.sab, HEADER_BYTES, size));
      }
    } else {
      data = Buffer.concat(this.chunks);
      truncated = this.truncated;
    }
    // Cut by the cap: drop a multi-byte character cut in half instead of "replacing" it.
    const text = new util.TextDecoder('utf-8').decode(data, { stream: truncated });
    return { text, total: this.total };
  }
}

/** A process.stdout/process.stderr stand-in: synchronous, in order, into the capture. */
function captureStream(capture, fd) {
  const stream = new Writable({
    decodeStrings: false,
    write(chunk, encoding, callback) {
      try {
        capture.write(typeof chunk === 'string' ? bufferFrom(chunk, encoding) : chunk);
      } catch {
        // never let printing break the action
      }
      callback();
    },
    final(callback) {
      callback();
    },
  });
  stream.fd = fd;
  stream.isTTY = false;
  stream._isStdio = true;
  stream.destroySoon = stream.destroy;
  stream._destroy = (err, callback) => callback(err); // stdio is never closed
  return stream;
}

function installStdio(capture) {
  const stdout = captureStream(capture, 1);
  const stderr = captureStream(capture, 2);
  // Replaced before anything touches them, so node never opens its own stream on fd 1 and
  // the global console binds to these.
  for (const [name, stream] of [
    ['stdout', stdout],
    ['stderr', stderr],
  ]) {
    Object.defineProperty(process, name, {
      configurable: true,
      enumerable: false,
      get: () => stream,
    });
  }
  // Warnings go to the captured stderr; the "experimental" ones (fetch, webcrypto in
  // Node 18) are noise for action authors.
  process.removeAllListeners('warning');
  process.on('warning', (warning) => {
    if (!warning || warning.name === 'ExperimentalWarning') return;
    const code = warning.code ? `[${warning.code}] ` : '';
    stderr.write(`(node:${process.pid}) ${code}${warning.name}: ${warning.message}\n`);
  });
  return { stdout, stderr };
}

// ----------------------------------------------------------------------------- engine API

/** Query parameters: `get(key)` gives the value or `null`. */
class Params {
  #data;

  constructor(data) {
    this.#data = data;
  }

  get(key, fallback = null) {
    return Object.prototype.hasOwnProperty.call(this.#data, key) ? this.#data[key] : fallback;
  }

  has(key) {
    return Object.prototype.hasOwnProperty.call(this.#data, key);
  }

  items() {
    return Object.entries(this.#data);
  }

  entries() {
    return this.items();
  }

  keys() {
    return Object.keys(this.#data);
  }

  values() {
    return Object.values(this.#data);
  }

  toObject() {
    return { ...this.#data };
  }

  toJSON() {
    return this.toObject();
  }

  get size() {
    return this.keys().length;
  }

  [Symbol.iterator]() {
    return this.items()[Symbol.iterator]();
  }

  [util.inspect.custom]() {
    return `Params ${util.inspect(this.#data)}`;
  }
}

/**
 * Request headers: `get(name)` gives the first value or `""`; names match without regard to
 * case, as in HTTP. `items()` gives [name, [values]] pairs, as received.
 */
class Header {
  #data;
  #folded;

  constructor(data) {
    this.#data = data;
    const folded = new Map();
    for (const [name, values] of Object.entries(data)) {
      const key = name.toLowerCase();
      if (!folded.has(key)) folded.set(key, values);
    }
    this.#folded = folded;
  }

  #values(name) {
    if (Object.prototype.hasOwnProperty.call(this.#data, name)) return this.#data[name];
    return typeof name === 'string' ? this.#folded.get(name.toLowerCase()) : undefined;
  }

  get(name, fallback = '') {
    const values = this.#values(name);
    return values && values.length ? values[0] : fallback;
  }

  getAll(name) {
    return [...(this.#values(name) || [])];
  }

  has(name) {
    const values = this.#values(name);
    return Boolean(values && values.length);
  }

  items() {
    return Object.entries(this.#data).map(([name, values]) => [name, [...values]]);
  }

  entries() {
    return this.items();
  }

  keys() {
    return Object.keys(this.#data);
  }

  values() {
    return this.items().map(([, values]) => values);
  }

  toObject() {
    return Object.fromEntries(this.items());
  }

  toJSON() {
    return this.toObject();
  }

  get size() {
    return this.keys().length;
  }

  [Symbol.iterator]() {
    return this.items()[Symbol.iterator]();
  }

  [util.inspect.custom]() {
    return `Header ${util.inspect(this.#data)}`;
  }
}

/** `engine.log`: each call is one log of that level, in call order. */
class Log {
  #max;
  #send;

  /** `sendFrame`: the run's own frame writer (resident mode: silent once its run ended). */
  constructor(maxChars, sendFrame = send) {
    this.#max = maxChars;
    this.#send = sendFrame;
  }

  #emit(level, args) {
    const text = args.length === 1 ? formatValue(args[0]) : args.map(formatValue).join(' ');
    this.#send({ t: 'log', level, content: wellFormed(cut(text, this.#max)) });
  }

  debug(...args) {
    this.#emit('debug', args);
  }

  info(...args) {
    this.#emit('info', args);
  }

  error(...args) {
    this.#emit('error', args);
  }
}

function resultOptions(options, positionalContentType) {
  if (typeof options === 'number' || typeof options === 'string') {
    // set(value, 201, "json") also works
    return { statusCode: options, contentType: positionalContentType ?? 'text' };
  }
  if (options === undefined || options === null) return { statusCode: 200, contentType: 'text' };
  if (typeof options !== 'object') {
    throw new TypeError(
      'result.set(value, { statusCode, contentType }): options must be an object'
    );
  }
  const pick = (camel, snake, fallback) => {
    if (options[camel] !== undefined) return options[camel];
    return options[snake] !== undefined ? options[snake] : fallback;
  };
  return {
    statusCode: pick('statusCode', 'status_code', 200),
    contentType: pick('contentType', 'content_type', 'text'),
  };
}

/**
 * `engine.result.set(value, { statusCode = 200, contentType = "text" })`; the last call wins.
 * In legacy mode an unknown content type answers text and a status outside 200-599 answers 200
 * instead of throwing; a status given as a digit string works in every mode. Each of these is
 * told once per run in a `debug` log (`note`).
 */
class Result {
  #value = '';
  #statusCode = 200;
  #contentType = 'text';
  #legacy;
  #note;

  constructor(legacy = false, note = () => {}) {
    this.#legacy = legacy;
    this.#note = note;
  }

  get value() {
    return this.#value;
  }

  get statusCode() {
    return this.#statusCode;
  }

  get contentType() {
    return this.#contentType;
  }

  get status_code() {
    return this.#statusCode;
  }

  get content_type() {
    return this.#contentType;
  }

  set(value = '', options = undefined, positionalContentType = undefined) {
    const { statusCode, contentType } = resultOptions(options, positionalContentType);
    let kind = typeof contentType === 'string' ? contentType.trim().toLowerCase() : null;
    if (!CONTENT_TYPES.includes(kind)) {
      if (!this.#legacy) {
        throw new TypeError(
          `contentType must be one of ${CONTENT_TYPES.join(', ')}; got ${util.inspect(contentType)}`
        );
      }
      const mapped = legacyKind(kind);
      this.#note(
        mapped
          ? `result.set: contentType ${util.inspect(contentType)} taken as '${mapped}' ` +
              "(legacy mode; the engine's names are text, json and html)"
          : `result.set: contentType ${util.inspect(contentType)} is not text, json or html: ` +
              'answered as text/plain (legacy mode)'
      );
      kind = mapped || 'text';
    }
    let code = statusCode;
    if (typeof code === 'string' && /^\s*\d+\s*$/.test(code)) {
      code = Number(code);
      if (code >= 200 && code <= 599) {
        this.#note(`result.set: statusCode ${util.inspect(statusCode)} (a string) taken as ${code}`);
      }
    }
    if (!Number.isInteger(code) || code < 200 || code > 599) {
      if (!this.#legacy) {
        throw new RangeError(
          `statusCode must be an HTTP status (200-599); got ${util.inspect(statusCode)}`
        );
      }
      this.#note(
        `result.set: statusCode ${util.inspect(statusCode)} is not an HTTP status (200-599): ` +
          'answered 200 (legacy mode)'
      );
      code = 200;
    }
    let text;
    if (typeof value === 'string') {
      text = value;
    } else {
      try {
        text = jsonStringify(value);
      } catch {
        text = undefined;
      }
      if (typeof text !== 'string') text = String(value);
    }
    this.#value = text;
    this.#statusCode = code;
    this.#contentType = kind;
    return this;
  }

  /** What the result frame carries: read from the private state, which code cannot reach. */
  static snapshot(result) {
    return {
      value: result.#value,
      statusCode: result.#statusCode,
      contentType: result.#contentType,
    };
  }

  [util.inspect.custom]() {
    const value = util.inspect(this.#value);
    return `Result(${value}, statusCode=${this.#statusCode}, contentType=${this.#contentType})`;
  }
}

const snapshotResult = Result.snapshot;

function makeEngine(params, body, header, log, result) {
  const request = Object.freeze({ params, body, header, log });
  return Object.freeze({ params, body, header, log, result, request });
}

// ----------------------------------------------------------------------------- job

function readJob() {
  const chunks = [];
  const chunk = bufferAllocUnsafe(65536);
  for (;;) {
    let n;
    try {
      n = readSync(0, chunk, 0, chunk.length, null);
    } catch (err) {
      if (err && err.code === 'EAGAIN') {
        sleep(2);
        continue;
      }
      if (err && err.code === 'EOF') break;
      throw err;
    }
    if (n === 0) break;
    chunks.push(bufferFrom(chunk.subarray(0, n)));
  }
  return Buffer.concat(chunks);
}

/**
 * The job. In a warm environment (argv `warm`, started by supervisor.c) the pipe holds the
 * code's `bind` frame (4-byte length, JSON with the source) and then the run's job without
 * its source; the job gets the bound source, so it looks as in a one-shot container (and a
 * job that is not JSON fails with the same words).
 */
function parseJob(raw, warm) {
  if (!warm) return jsonParse(raw.toString('utf8'));
  const bindSize = raw.length >= 4 ? raw.readUInt32BE(0) : 0;
  const bind = jsonParse(raw.subarray(4, 4 + bindSize).toString('utf8'));
  const job = jsonParse(raw.subarray(4 + bindSize).toString('utf8'));
  if (job && typeof job === 'object' && !('source' in job)) { // main rejects a non-object
    job.source = bind.source; // the worker never sends one (split_job): a job's own is checked
  }
  return job;
}

/**
 * Warm environment: everything a run needs is up (the drainer included), so tell the
 * supervisor on fd 5 (a pipe it gave only to this process) and close it before any job or
 * user code exists. The supervisor reports the environment ready only after this.
 */
function announceReady(capture) {
  capture.waitForDrainer(DRAINER_BOOT_WAIT_MS);
  try {
    writeSync(READY_FD, 'R');
  } finally {
    closeSync(READY_FD);
  }
}

function toParams(raw) {
  const out = Object.create(null);
  if (raw && typeof raw === 'object' && !Array.isArray(raw)) {
    for (const [key, value] of Object.entries(raw)) {
      let first = value;
      if (Array.isArray(first)) first = first.length ? first[0] : '';
      out[String(key)] = typeof first === 'string' ? first : String(first);
    }
  }
  return out;
}

function toHeaders(raw) {
  const out = Object.create(null);
  if (raw && typeof raw === 'object' && !Array.isArray(raw)) {
    for (const [name, value] of Object.entries(raw)) {
      const values = Array.isArray(value) ? value : [value];
      out[String(name)] = values.map((v) => (typeof v === 'string' ? v : String(v)));
    }
  }
  return out;
}

function limit(limits, key, fallback) {
  const value = limits && typeof limits === 'object' ? limits[key] : undefined;
  return Number.isInteger(value) && value > 0 ? value : fallback;
}

// ----------------------------------------------------------------------------- running

class ExitCalled extends Error {
  /** `exitCode`: the status process.exit() was given (undefined for other ways out). */
  constructor(message, exitCode = undefined) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** What user code threw or rejected with, never null: `finish(null)` means success, so a
 * `throw null` (or `undefined`) becomes a failure that says what was thrown. */
function thrown(err) {
  return err === null || err === undefined ? new ExitCalled(`${err} was thrown`) : err;
}

function failureMessage(err) {
  if (err instanceof ExitCalled) return err.message;
  if (err !== null && typeof err === 'object') {
    let message = '';
    try {
      message = typeof err.message === 'string' ? err.message : '';
    } catch {
      message = '';
    }
    if (message) return message;
    if (err instanceof Error || 'stack' in err) {
      // No message: name the error, as Python names the exception type.
      try {
        const name = typeof err.name === 'string' ? err.name : '';
        if (name && name !== 'Error') return name;
        const type = err.constructor && err.constructor.name;
        if (typeof type === 'string' && type) return type;
      } catch {
        // fall through
      }
      return 'Error';
    }
  }
  try {
    return formatValue(err);
  } catch {
    return 'Error';
  }
}

const TRACE_MAX = 16 * 1024;

/** The user-facing stack trace, without the harness's or node's internal frames. */
function userTrace(err) {
  if (err instanceof ExitCalled) return '';
  try {
    const stack = err !== null && typeof err === 'object' ? err.stack : undefined;
    if (typeof stack !== 'string' || !stack) return `Uncaught ${formatValue(err)}\n`;
    const internal = (line) => line.includes(HARNESS_FILENAME) || /[( ]node:/.test(line);
    const lines = stack.split('\n').filter((line) => !/^\s+at /.test(line) || !internal(line));
    const text = `${lines.join('\n').trimEnd()}\n`;
    // An oversized error message is the code's failure, not printed output: cut it so that
    // the run fails with its error instead of the output limit.
    if (text.length <= TRACE_MAX) return text;
    return `${text.slice(0, TRACE_MAX)}\n… the stack was cut: ${text.length - TRACE_MAX} ` +
      'more characters (an oversized error message)\n';
  } catch {
    return '';
  }
}

function loadHint(err) {
  const message = failureMessage(err);
  const esm =
    /Cannot use import statement outside a module|Unexpected token 'export'|await is only valid/;
  if (err instanceof SyntaxError && esm.test(message)) {
    return (
      `${message} (an action is a CommonJS module: use require() and module.exports, ` +
      'and await only inside async functions)'
    );
  }
  return null;
}

/**
 * Load the source as a CommonJS module of its own; returns the `Run` function, or null in
 * legacy mode when the source has none (it ran as a script).
 */
function loadAction(source, legacy) {
  // A top-level `function Run` is local to the module wrapper: a trailer hands it to us.
  const takeKey = `__codeactions_take_${Math.random().toString(36).slice(2)}`;
  let topLevel;
  Object.defineProperty(globalThis, takeKey, {
    configurable: true,
    value: (value) => {
      topLevel = value;
    },
  });
  const trailer =
    `\n;try { ${takeKey}(typeof Run === "undefined" ? undefined : Run); } catch (_) {}\n`;
  const action = new Module(ACTION_FILENAME, null);
  action.filename = ACTION_FILENAME;
  action.paths = Module._nodeModulePaths(path.dirname(ACTION_FILENAME));
  try {
    action._compile(source + trailer, ACTION_FILENAME);
  } catch (err) {
    if (err instanceof SyntaxError) {
      // Report the error against the user's own text, not the text with our trailer.
      const wrapperParameters = ['exports', 'require', 'module', '__filename', '__dirname'];
      require('vm').compileFunction(source, wrapperParameters, { filename: ACTION_FILENAME });
    }
    throw err;
  } finally {
    delete globalThis[takeKey];
  }
  action.loaded = true;

  const exported = action.exports;
  const candidates = [];
  if (exported !== null && (typeof exported === 'object' || typeof exported === 'function')) {
    candidates.push(exported.Run);
  }
  candidates.push(topLevel);
  if (typeof exported === 'function') candidates.push(exported);
  if (exported !== null && typeof exported === 'object' && exported.default !== undefined) {
    const fallback = exported.default;
    candidates.push(typeof fallback === 'function' ? fallback : fallback && fallback.Run);
  }
  const found = candidates.find((candidate) => candidate !== undefined && candidate !== null);
  if (found === undefined && legacy) return null;
  if (found === undefined) {
    throw new ReferenceError(
      'Run(engine) is not defined: declare async function Run(engine) { ... } ' +
        'or module.exports = { Run }'
    );
  }
  if (typeof found !== 'function') {
    throw new TypeError(
      'Run must be a function taking the engine: async function Run(engine) { ... }'
    );
  }
  return found;
}

/** Exit now: skip the user's 'exit' listeners and never wait for work the user code left. */
function hardExit(code) {
  // User code may have closed fds 0-2; libuv aborts if it ever closes a descriptor <= 2 it
  // opened itself, which exit could make it do.
  for (const fd of [0, 1, 2]) {
    try {
      fstatSync(fd);
    } catch {
      pointAtDevNull(fd);
    }
  }
  let pending = false;
  try {
    // Node's exit waits for the thread pool's requests (fs, dns.lookup, crypto, zlib) to
    // finish, possibly for ever (a read on a pipe). Most are done in a moment; a watchdog
    // process stops us 0.5 s from now if exit is still stuck (exit status 137, after a
    // complete set of frames).
    pending = getActiveResourcesInfo
      .call(process)
      .some((name) => /^(FSReq|GetAddrInfo|GetNameInfo)|Job$|Zlib/.test(name));
  } catch {
    pending = true;
  }
  if (pending && process.pid !== 1) {
    let watchdog = null;
    try {
      watchdog = require('child_process').spawn(
        '/bin/sh',
        ['-c', `sleep 0.5; kill -9 ${process.pid}`],
        { detached: true, stdio: 'ignore', env: {} }
      );
    } catch {
      watchdog = null;
    }
    if (watchdog && watchdog.pid) {
      watchdog.on('error', () => {});
      watchdog.unref();
    } else {
      try {
        originalKill.call(process, process.pid, 'SIGKILL'); // no process to spare: stop now
      } catch {
        // fall through to a normal exit
      }
    }
  }
  originalReallyExit.call(process, code);
}

// The runner of the run in progress, for the process-wide hooks; null between the runs of a
// resident process.
let active = null;

/**
 * process.exit() (and its raw forms), errors nobody handled, an event loop that emptied:
 * they belong to the run in progress. Installed once, as a resident process serves many
 * runs. Outside a run (resident: after a run's end, before the next job) they end the
 * process, and the supervisor starts a fresh one for the next run.
 */
function installProcessHooks() {
  const settle = (error, exitCode, crashed = false) => {
    if (active !== null) {
      active.finish(error, null, crashed);
      return;
    }
    hardExit(Number.isInteger(exitCode) ? exitCode : 1);
  };
  // process.exit() and its raw form end the run as a failure, after the frames.
  const exitHook = (code) => {
    const status = code === undefined ? process.exitCode : code;
    const detail = status === undefined ? '' : ` with code ${status}`;
    const exitCode = status === undefined || status === null ? 0 : Number(status);
    settle(new ExitCalled(`process.exit() called${detail}`, exitCode), exitCode);
  };
  process.exit = exitHook;
  process.reallyExit = exitHook;
  process.abort = () => settle(new ExitCalled('process.abort() called'), 1);
  // Errors the user code did not handle fail the run, as they would crash a node process
  // (and a resident one goes: what state they left is anyone's guess, as on Lambda).
  process.on('uncaughtException', (err) => settle(thrown(err), 1, true));
  process.on('unhandledRejection', (reason) => settle(thrown(reason), 1, true));
  process.on('beforeExit', () => {
    if (active !== null) active.beforeExit();
  });
  process.on('exit', (code) =>
    settle(new ExitCalled(`the process exited with code ${code}`), code));
}

/**
 * One run: `load(legacy)` gives the code's Run function (null: legacy mode, no Run, the top
 * level ran as a script) or throws. `state`: the run's own `sealed`/`finished`. Resident
 * mode: at the end the process tells the supervisor and waits for the next job, unless the
 * run left it unfit (see `finish`).
 */
function createRunner({ capture, logMax, result, engine, legacy, note, state, load, resident }) {
  // Where the code is: 'load' (its top level), 'run' (Run was called), 'script' (legacy: no
  // Run, the top level ran and its callbacks may still be running).
  let phase = 'load';

  function finish(error, override = null, crashed = false) {
    if (state.finished) return;
    state.finished = true;
    const exited = error instanceof ExitCalled;
    if (exited && error.exitCode === 0 && legacy) {
      note(
        `${error.message}: the run ends as if the code had returned, and the caller gets what ` +
          'it set (legacy mode)'
      );
      error = null;
    }
    // Legacy mode: a code that fails once Run was called still answers what it had set (an
    // empty 200 when nothing), as the old engine did; the run stays failed.
    const answered = error !== null && legacy && phase === 'run';
    let message = null;
    let resultFrame = null;
    let snapshot = null;
    if (error !== null) {
      message = override !== null ? override : failureMessage(error);
      const trace = userTrace(error);
      if (trace) capture.write(bufferFrom(trace, 'utf8'));
    }
    if (error === null || answered) {
      try {
        snapshot = snapshotResult(result);
        resultFrame = encodeFrame({
          t: 'result',
          value: wellFormed(snapshot.value),
          status_code: snapshot.statusCode,
          content_type: snapshot.contentType,
        });
      } catch (err) {
        resultFrame = null;
        if (message === null) message = `invalid result: ${failureMessage(err)}`;
      }
    }
    let reusable = false;
    try {
      markEnded();
      if (message !== null) {
        const content = wellFormed(cut(`Action execution failed: ${message}`, logMax));
        send({ t: 'log', level: 'error', content });
        if (resultFrame !== null) {
          note(
            'the code failed after Run began: the caller still gets the result it had set ' +
              `(status ${snapshot.statusCode}, ${snapshot.contentType}); the run is recorded ` +
              'as failed (legacy mode)'
          );
        }
      }
      if (resultFrame !== null) writeFrame(resultFrame);
      const printed = resident ? capture.endRun() : capture.finish();
      if (printed.text || printed.total) {
        send({ t: 'stdout', data: wellFormed(printed.text), total: printed.total });
      }
      const end = { t: 'end', status: message === null ? 'completed' : 'failed' };
      if (message !== null) end.error = wellFormed(cut(message, STDOUT_MAX));
      // Resident: the process serves the next run only if this one left it whole: Run was
      // called and returned or threw (a load failure, a script, an exit, a crash, a broken
      // capture or closed std descriptors send it away; the next run gets a fresh one). Said
      // before the end frame: the worker's `finish` follows that frame, and must not find
      // the supervisor still waiting for the word.
      reusable = resident && printed.intact && phase === 'run' && !exited && !crashed &&
        stdIntact();
      if (resident) tell(reusable ? 'E' : 'X');
      send(end);
      sealed = true;
      state.sealed = true;
    } catch {
      tell('X');
      hardExit(3);
    }
    if (!reusable) hardExit(message === null ? 0 : 1);
    active = null;
    scheduleImmediate(serveNext);
  }

  function start() {
    let outcome;
    let pending = false;
    try {
      const run = load(legacy);
      if (run === null) {
        // Legacy mode: the old service ran JavaScript codes as scripts (`node -e`); this one
        // is done when its event loop is (beforeExit).
        phase = 'script';
        note(
          'no Run(engine) in the source: it ran as a script, what it printed is kept as the ' +
            "run's output and the caller gets an empty 200 (legacy mode)"
        );
        return;
      }
      phase = 'run';
      outcome = run(engine);
      const kind = typeof outcome;
      pending =
        outcome !== null &&
        (kind === 'object' || kind === 'function') &&
        typeof outcome.then === 'function';
    } catch (err) {
      finish(thrown(err), loadHint(err));
      return;
    }
    if (pending) {
      // Resolve a returned promise (or any thenable); a plain return value is ignored.
      Promise.resolve(outcome).then(
        () => finish(null),
        (err) => finish(thrown(err))
      );
    } else {
      finish(null);
    }
  }

  /** The event loop emptied: a script is done; Run's promise can never settle any more. */
  function beforeExit() {
    if (phase === 'script') {
      finish(null);
      return;
    }
    finish(new ExitCalled('Run(engine) never finished: the promise it returned never settled'));
  }

  return { start, finish, beforeExit };
}

/** A run of `job`: its own engine object (params, headers, logs, result) and frames. */
function startRun(job, capture, { resident, load }) {
  const state = { sealed: false, finished: false };
  // Resident: what an ended run's engine object still writes (a timer it left) is dropped.
  const runSend = resident ? (frame) => {
    if (!state.sealed) send(frame);
  } : send;
  const maxChars = limit(job.limits, 'log_content_max', LOG_CONTENT_MAX);
  const log = new Log(maxChars, runSend);
  const legacy = job.compat === 'legacy';
  // A leniency the engine applied: one `debug` log per distinct message and run.
  const noted = new Set();
  const note = (message) => {
    if (noted.has(message)) return;
    noted.add(message);
    runSend({ t: 'log', level: 'debug', content: wellFormed(cut(message, maxChars)) });
  };
  const result = new Result(legacy, note);
  const params = new Params(toParams(job.params));
  const header = new Header(toHeaders(job.headers));
  const body = typeof job.body === 'string' ? job.body.trim() : '';
  const engine = makeEngine(params, body, header, log, result);
  const runner = createRunner(
    { capture, logMax: maxChars, result, engine, legacy, note, state, load, resident }
  );
  active = runner;
  runner.start();
}

function invalidJob(err) {
  markEnded();
  tell('X');
  send({ t: 'end', status: 'failed', error: wellFormed(`invalid job: ${failureMessage(err)}`) });
  sealed = true;
  originalReallyExit.call(process, 2);
}

/** What the user code sees as its process: argv, cwd. */
function enterAction() {
  process.argv = [process.argv[0], ACTION_FILENAME];
  try {
    process.chdir(path.dirname(ACTION_FILENAME));
  } catch {
    // stay where the image put us
  }
}

// ----------------------------------------------------------------------------- resident

// engines/PROTOCOL.md, "Resident mode": one process, many runs of one code. supervisor.c
// gives it the control pipe on fd 5 and the jobs on fd 6: the `bind` frame (with the
// source) before its first job, then one job frame per run, each written only once the
// previous run is over for the worker (so the job is the go-ahead). fd 0 is /dev/null.
let control = -1;
let jobFd = -1;
let residentCapture = null;
let residentSource = null;
let residentRun = null;
let residentLoaded = false;
let stdIdentity = [];

/** One byte to the supervisor (resident mode); nothing otherwise. */
function tell(byte) {
  if (control < 0) return;
  try {
    writeSync(control, byte);
  } catch {
    // the supervisor is gone: it ends us anyway
  }
}

/** The inherited descriptor `fd` again, as a close-on-exec one (children never get it). */
function reopen(fd, flags) {
  try {
    const again = openSync(`/proc/self/fd/${fd}`, flags);
    closeSync(fd);
    return again;
  } catch {
    return fd;
  }
}

function readExact(fd, size) {
  const out = bufferAllocUnsafe(size);
  let got = 0;
  while (got < size) {
    let n;
    try {
      n = readSync(fd, out, got, size - got, null);
    } catch (err) {
      if (err && (err.code === 'EAGAIN' || err.code === 'EINTR')) {
        sleep(1);
        continue;
      }
      throw err;
    }
    if (n === 0) return null;
    got += n;
  }
  return out;
}

/** One frame (4-byte big-endian length, then the bytes); null at EOF. */
function readFrame(fd) {
  const head = readExact(fd, 4);
  if (head === null) return null;
  const size = head.readUInt32BE(0);
  return size === 0 ? bufferAllocUnsafe(0) : readExact(fd, size);
}

function identity(fd) {
  try {
    const info = fstatSync(fd);
    return `${info.dev}:${info.ino}:${info.rdev}`;
  } catch {
    return '';
  }
}

/** fd 0 and 2 are what the process started with (fd 1: Capture.intact). */
function stdIntact() {
  return [0, 2].every((fd, index) => stdIdentity[index] !== '' &&
    identity(fd) === stdIdentity[index]);
}

/** The code's Run, loaded by the first run the process serves and kept for the next. */
function loadOnce(legacy) {
  if (!residentLoaded) {
    residentRun = loadAction(residentSource, legacy);
    residentLoaded = true;
  }
  return residentRun;
}

/** Block until the next job arrives (the supervisor's go-ahead), then run it. */
function serveNext() {
  let job;
  try {
    if (residentSource === null) {
      const bind = readFrame(jobFd);
      if (bind === null) hardExit(0);
      const parsed = jsonParse(bind.toString('utf8'));
      residentSource = parsed && typeof parsed.source === 'string' ? parsed.source : '';
    }
    const raw = readFrame(jobFd);
    if (raw === null) hardExit(0); // the supervisor is gone
    sealed = false;
    residentCapture.beginRun();
    job = jsonParse(raw.toString('utf8'));
    const isObject = job !== null && typeof job === 'object' && !Array.isArray(job);
    // The worker never sends a source (the bind frame has it); a job's own is checked.
    if (isObject && !('source' in job)) job.source = residentSource;
    if (!isObject || typeof job.source !== 'string') {
      throw new Error("job must be an object with a string 'source'");
    }
  } catch (err) {
    invalidJob(err);
    return;
  }
  process.exitCode = undefined;
  startRun(job, residentCapture, { resident: true, load: loadOnce });
}

function serveResident(capture) {
  control = reopen(READY_FD, O_WRONLY);
  jobFd = reopen(JOB_FD, O_RDONLY);
  residentCapture = capture;
  capture.waitForDrainer(DRAINER_BOOT_WAIT_MS);
  installStdio(capture);
  enterAction();
  installProcessHooks();
  stdIdentity = [identity(0), identity(2)];
  tell('R');
  serveNext();
}

// ----------------------------------------------------------------------------- main

function main() {
  const fifoPath = process.argv[2] || '';
  endedMarker = process.argv[3] || '';
  const warm = process.argv[4] === 'warm';
  const resident = process.argv[4] === 'resident';
  openFrameChannel();
  const capture = new Capture(STDOUT_MAX, resident);
  let fifo = false;
  if (fifoPath) {
    try {
      fifo = capture.startFifo(fifoPath);
    } catch {
      fifo = false;
    }
  }
  if (!fifo) capture.startMemory();
  if (resident) {
    serveResident(capture);
    return;
  }
  if (warm) announceReady(capture);

  let job;
  try {
    job = parseJob(readJob(), warm);
    const isObject = job !== null && typeof job === 'object' && !Array.isArray(job);
    if (!isObject || typeof job.source !== 'string') {
      throw new Error("job must be an object with a string 'source'");
    }
  } catch (err) {
    invalidJob(err);
    return;
  }

  // The drainer thread boots while we read the job; it must be set up before user code runs,
  // which may close fds 0-2 (see DRAINER_SOURCE). It usually is, or is a few ms away.
  capture.waitForDrainer(DRAINER_BOOT_WAIT_MS);
  installStdio(capture);
  enterAction();
  installProcessHooks();
  startRun(job, capture, { resident: false, load: (legacy) => loadAction(job.source, legacy) });
}

if (require.main === module) {
  try {
    main();
  } catch (err) {
    try {
      if (!sealed) {
        markEnded();
        const error = wellFormed(`engine error: ${failureMessage(err)}`);
        send({ t: 'end', status: 'failed', error });
        sealed = true;
      }
    } catch {
      // nothing left to tell
    }
    originalReallyExit.call(process, 3);
  }
}
