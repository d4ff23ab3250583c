'use strict';
/**
 * Code Actions JavaScript engine: the capture of what user code prints. The drainer worker
 * thread that empties the stdout FIFO into a shared buffer (DRAINER_SOURCE), the Capture that
 * owns it (one-shot, or fenced per run in resident mode), and the process.stdout/stderr
 * stand-ins (installStdio). See the header of harness.js for why.
 */

const util = require('util');
const { Writable } = require('stream');
const { Worker } = require('worker_threads');
const {
  bufferFrom,
  bufferAllocUnsafe,
  readSync,
  openSync,
  closeSync,
  fstatSync,
  statSync,
  unlinkSync,
  O_RDONLY,
  O_NONBLOCK,
  atomicsWait,
  randomFillSync,
  sleep,
  writeAll,
  pointAtDevNull,
} = require('./common.js');
const { frameChannelFd } = require('./frames.js');

const FIFO_HOLD_FD = 4; // from start.sh: the FIFO opened read-write

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
    // else nowhere else to put the frames: last resort
    if (frameChannelFd() !== 1) pointAtDevNull(1);
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

module.exports = { Capture, installStdio };
