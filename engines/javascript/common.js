'use strict';
/**
 * Code Actions JavaScript engine: what every part of the harness shares (harness.js loads it
 * first, before any user code exists). The built-ins the frame path and the capture use, taken
 * here before user code can replace them, and small helpers (sleep, writeAll, text cutting,
 * log formatting, pointAtDevNull). Every other module takes these by destructuring at its own
 * start, never by a lookup at run time.
 */

const fs = require('fs');
const util = require('util');

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

module.exports = {
  jsonStringify,
  jsonParse,
  bufferFrom,
  bufferAllocUnsafe,
  writeSync,
  readSync,
  openSync,
  closeSync,
  fstatSync,
  statSync,
  unlinkSync,
  O_RDONLY,
  O_WRONLY,
  O_APPEND,
  O_NONBLOCK,
  atomicsWait,
  originalReallyExit,
  originalKill,
  getActiveResourcesInfo,
  scheduleImmediate,
  randomFillSync,
  sleep,
  writeAll,
  wellFormed,
  cut,
  formatValue,
  pointAtDevNull,
};
