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

const Module = require('module');
const path = require('path');

// The harness's own modules, by absolute path (never resolved through module paths), all
// loaded here before any user code exists; each takes the built-ins it uses at its start.
// Then they leave require.cache and this module's children, so that user code can reach
// their objects (Capture.prototype...) no more than it could when they were one file (its
// require of the same path would load fresh copies, not these).
const OWN_MODULES = ['common.js', 'frames.js', 'capture.js', 'engine_api.js'].map((name) =>
  path.join(__dirname, name)
);
const [common, frames, captureModule, engineApi] = OWN_MODULES.map((file) => require(file));
for (const file of OWN_MODULES) delete require.cache[file];
module.children = module.children.filter((child) => !OWN_MODULES.includes(child.filename));

// What the frame path uses, taken (in common.js) before user code can replace it.
const {
  jsonParse,
  bufferFrom,
  bufferAllocUnsafe,
  writeSync,
  readSync,
  openSync,
  closeSync,
  fstatSync,
  O_RDONLY,
  O_WRONLY,
  originalReallyExit,
  originalKill,
  getActiveResourcesInfo,
  scheduleImmediate,
  sleep,
  wellFormed,
  cut,
  formatValue,
  pointAtDevNull,
} = common;
const { encodeFrame, writeFrame, send, isSealed, setSealed, openFrameChannel } = frames;
const { Capture, installStdio } = captureModule;
const { Params, Header, Log, Result, snapshotResult, makeEngine } = engineApi;

const LOG_CONTENT_MAX = 8000;
const STDOUT_MAX = 64 * 1024;
const ACTION_FILENAME = '/tmp/action.js';
// Stack frames from any of the harness's files are hidden from user tracebacks.
const HARNESS_DIR = `${__dirname}${path.sep}`;
const READY_FD = 5; // warm environments: supervisor.c waits for one byte here
// Resident mode: fd 5 stays the control pipe to supervisor.c (one byte: 'R' ready, 'B' the
// last frames begin, then just before the end frame 'E' this process serves the next run or
// 'X' it exits); the jobs come framed on fd 6, a pipe only the supervisor writes.
const JOB_FD = 6;
const DRAINER_BOOT_WAIT_MS = 10000; // far more than it takes even on a loaded machine

let endedMarker = ''; // start.sh: a file to create before the last frames (see there)

// ----------------------------------------------------------------------------- frames

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
    const internal = (line) => line.includes(HARNESS_DIR) || /[( ]node:/.test(line);
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
      setSealed(true);
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
  setSealed(true);
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
    setSealed(false);
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
      if (!isSealed()) {
        markEnded();
        const error = wellFormed(`engine error: ${failureMessage(err)}`);
        send({ t: 'end', status: 'failed', error });
        setSealed(true);
      }
    } catch {
      // nothing left to tell
    }
    originalReallyExit.call(process, 3);
  }
}
