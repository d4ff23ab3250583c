'use strict';
/**
 * Code Actions JavaScript engine: the engine API user code gets as `engine` (params, header,
 * log, result, request; engines/PROTOCOL.md). Result keeps its state in private fields, which
 * the harness reads with snapshotResult and user code cannot reach.
 */

const util = require('util');
const { jsonStringify, wellFormed, cut, formatValue } = require('./common.js');
const { send } = require('./frames.js');

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

module.exports = { Params, Header, Log, Result, snapshotResult, makeEngine };
