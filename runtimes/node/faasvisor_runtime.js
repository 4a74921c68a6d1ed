'use strict';
/* faasvisor Node.js runtime: serves a module's handle(req) over the instance protocol.
 *
 * Usage, run in the function's directory:
 *
 *     node /path/to/runtimes/node/faasvisor_runtime.js MODULE
 *
 * Speaks docs/protocol.md on fd 0 / fd 1 with node's built-in modules only. MODULE is
 * required from the current directory ("handler" loads ./handler.js; an ES module is
 * imported instead). It exports handle(req) (or is itself that function), which may be
 * async. handle gets a Request and returns, or resolves to:
 *   - a Buffer / Uint8Array (body as is), a string (text/plain), null or undefined (empty);
 *   - {status, headers, body}: an object whose own keys are only those, with a numeric
 *     status if any; headers is an object, a Map or an array of [name, value] pairs and
 *     body any of the kinds here;
 *   - any other object or array, sent as JSON (application/json).
 * A throw or a rejection becomes 500 {"error": "<name>: <message>"} (stack on stderr) and
 * the instance lives on. The twin of runtimes/python/faasvisor_runtime.py: same limits,
 * same exit codes (0 at end of stream, SHUTDOWN or SIGTERM; 1 if the module cannot be
 * loaded; 2 on a protocol or I/O error).
 */

const fs = require('node:fs');
const path = require('node:path');

const MAGIC = 0x31505646; // "FVP1" little-endian
const HEADER_SIZE = 12;
const READY = 1;
const REQUEST = 2;
const RESPONSE = 3;
const LOG = 4;
const SHUTDOWN = 5;
const KNOWN_TYPES = new Set([READY, REQUEST, RESPONSE, LOG, SHUTDOWN]);
const MAX_PAYLOAD = 16 * 1024 * 1024;
const MAX_HEADERS = 128;
const READY_MAX = 256;
const READY_TEXT = 'node';
const OUT_FD = 1;
const EXIT_LOAD = 1;
const EXIT_PROTOCOL = 2;
const EXIT_USAGE = 64;
const EAGAIN_SLEEP_MS = 1;

class ProtocolError extends Error {}

/* ---- the request handed to handle(req) ---- */

class Request {
  constructor(method, path_, query, headers, body) {
    this.method = method;
    this.path = path_;
    this.query = query;
    this.headers = headers; // array of [name, value] strings, in wire order
    this.body = body; // Buffer
    this._args = null;
  }

  /* First header named name, ignoring case; defaultValue if there is none. */
  header(name, defaultValue = undefined) {
    const wanted = String(name).toLowerCase();
    for (const [key, value] of this.headers) {
      if (key.toLowerCase() === wanted) return value;
    }
    return defaultValue;
  }

  /* Query parameters, form-decoded ("+" is a space); for a repeated key the first wins. */
  get args() {
    if (this._args === null) {
      const parsed = {};
      for (const [key, value] of new URLSearchParams(this.query)) {
        // defineProperty so a key like "__proto__" stays an ordinary own property.
        if (!Object.prototype.hasOwnProperty.call(parsed, key)) {
          Object.defineProperty(parsed, key, {
            value, enumerable: true, writable: true, configurable: true,
          });
        }
      }
      this._args = parsed;
    }
    return this._args;
  }
}

/* ---- codec ---- */

function encodeFrame(type, payload) {
  const frame = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  writeFrameHeader(frame, type, payload.length);
  payload.copy(frame, HEADER_SIZE);
  return frame;
}

function writeFrameHeader(buf, type, length) {
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt8(type, 4);
  buf.writeUInt8(0, 5); // flags
  buf.writeUInt16LE(0, 6); // reserved
  buf.writeUInt32LE(length, 8);
}

/* Validates a 12-byte frame header; returns {type, length}. */
function parseHeader(buf) {
  if (buf.readUInt32LE(0) !== MAGIC) throw new ProtocolError('bad magic');
  const type = buf.readUInt8(4);
  if (!KNOWN_TYPES.has(type)) throw new ProtocolError(`unknown frame type ${type}`);
  if (buf.readUInt8(5) !== 0 || buf.readUInt16LE(6) !== 0) {
    throw new ProtocolError('non-zero reserved bits');
  }
  const length = buf.readUInt32LE(8);
  if (length > MAX_PAYLOAD) throw new ProtocolError(`frame too large (${length} bytes)`);
  if (type === READY && length > READY_MAX) throw new ProtocolError('frame too large (READY)');
  if (type === SHUTDOWN && length !== 0) {
    throw new ProtocolError('malformed payload (SHUTDOWN with a payload)');
  }
  return { type, length };
}

/* A cursor over a payload that refuses to run past its end. */
class PayloadReader {
  constructor(buf) {
    this.buf = buf;
    this.pos = 0;
  }

  u32() {
    if (this.buf.length - this.pos < 4) throw new ProtocolError('malformed payload');
    const value = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return value;
  }

  raw() {
    const n = this.u32();
    if (n > this.buf.length - this.pos) throw new ProtocolError('malformed payload');
    const value = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return value;
  }

  // Invalid UTF-8 becomes U+FFFD: node has no lossless decoding like Python's surrogateescape.
  text() {
    return this.raw().toString('utf8');
  }

  finish() {
    if (this.pos !== this.buf.length) throw new ProtocolError('malformed payload (trailing bytes)');
  }
}

function decodeRequest(payload) {
  const r = new PayloadReader(payload);
  const method = r.text();
  const path_ = r.text();
  const query = r.text();
  const count = r.u32();
  if (count > MAX_HEADERS) throw new ProtocolError('too many headers');
  const headers = [];
  for (let i = 0; i < count; i++) headers.push([r.text(), r.text()]);
  const body = r.raw();
  r.finish();
  return new Request(method, path_, query, headers, body);
}

/* One buffer for header + payload, sized up front: no concatenation of parts. */
function encodeResponse(status, headers, body) {
  if (!Number.isInteger(status) || status < 100 || status > 599) {
    throw new RangeError(`status ${status} outside 100..599`);
  }
  if (headers.length > MAX_HEADERS) {
    throw new RangeError(`${headers.length} headers (at most ${MAX_HEADERS})`);
  }
  const encoded = headers.map(([name, value]) => [Buffer.from(name, 'utf8'), Buffer.from(value, 'utf8')]);
  let payloadSize = 8 + 4 + body.length;
  for (const [name, value] of encoded) payloadSize += 8 + name.length + value.length;
  if (payloadSize > MAX_PAYLOAD) {
    throw new RangeError(`response payload of ${payloadSize} bytes exceeds ${MAX_PAYLOAD}`);
  }
  const frame = Buffer.allocUnsafe(HEADER_SIZE + payloadSize);
  writeFrameHeader(frame, RESPONSE, payloadSize);
  let pos = frame.writeUInt16LE(status, HEADER_SIZE);
  pos = frame.writeUInt16LE(0, pos);
  pos = frame.writeUInt32LE(encoded.length, pos);
  for (const [name, value] of encoded) {
    pos = putBytes(frame, pos, name);
    pos = putBytes(frame, pos, value);
  }
  pos = putBytes(frame, pos, body);
  console.assert(pos === frame.length, 'response size mismatch');
  return frame;
}

function putBytes(buf, pos, bytes) {
  pos = buf.writeUInt32LE(bytes.length, pos);
  return pos + bytes.copy(buf, pos);
}

/* ---- turning a handler's result into a response ---- */

const RESPONSE_KEYS = new Set(['status', 'headers', 'body']);

function isBytes(value) {
  return value instanceof Uint8Array; // Buffer included
}

/* {status, headers, body} as opposed to a data object to send as JSON. */
function isResponseShaped(value) {
  if (value === null || typeof value !== 'object' || Array.isArray(value) || isBytes(value)) {
    return false;
  }
  const keys = Object.keys(value);
  if (keys.length === 0 || !keys.every((k) => RESPONSE_KEYS.has(k))) return false;
  return value.status === undefined || typeof value.status === 'number';
}

function hasHeader(headers, name) {
  const wanted = name.toLowerCase();
  return headers.some(([key]) => key.toLowerCase() === wanted);
}

function defaultHeader(headers, name, value) {
  if (!hasHeader(headers, name)) headers.push([name, value]);
}

/* Body bytes for a handler value; adds a Content-Type when the kind implies one. */
function bodyOf(value, headers) {
  if (value === undefined || value === null) return Buffer.alloc(0);
  if (Buffer.isBuffer(value)) return value;
  if (isBytes(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  if (typeof value === 'string') {
    defaultHeader(headers, 'Content-Type', 'text/plain; charset=utf-8');
    return Buffer.from(value, 'utf8');
  }
  if (typeof value === 'object') {
    const json = JSON.stringify(value);
    if (json === undefined) throw new TypeError('handler returned a body JSON cannot encode');
    defaultHeader(headers, 'Content-Type', 'application/json');
    return Buffer.from(json, 'utf8');
  }
  throw new TypeError(`handler returned a body of type ${typeof value}`);
}

function headerText(value, what) {
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return String(value);
  throw new TypeError(`header ${what} must be a string`);
}

function headersOf(value) {
  if (value === undefined || value === null) return [];
  let pairs;
  if (Array.isArray(value) || value instanceof Map) pairs = Array.from(value);
  else if (typeof value === 'object') pairs = Object.entries(value);
  else throw new TypeError('headers must be an object, a Map or an array of [name, value]');
  return pairs.map((pair) => {
    if (!Array.isArray(pair) || pair.length !== 2) throw new TypeError('a header must be [name, value]');
    return [headerText(pair[0], 'names'), headerText(pair[1], 'values')];
  });
}

/* Maps a handler's (settled) result to RESPONSE frame bytes; throws on a bad result. */
function responseFrameOf(result) {
  if (isResponseShaped(result)) {
    const headers = headersOf(result.headers);
    const status = result.status === undefined ? 200 : result.status;
    return encodeResponse(status, headers, bodyOf(result.body, headers));
  }
  const headers = [];
  return encodeResponse(200, headers, bodyOf(result, headers));
}

function describeError(err) {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return `Error: ${String(err)}`; // a thrown non-Error value: throw "x", reject(42)
}

function errorFrameOf(err) {
  const stack = err instanceof Error && err.stack ? err.stack : describeError(err);
  process.stderr.write(`faasvisor runtime: handler failed: ${stack}\n`);
  const body = Buffer.from(JSON.stringify({ error: describeError(err) }), 'utf8');
  return encodeResponse(500, [['Content-Type', 'application/json']], body);
}

/* ---- transport ---- */

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/* Writes all of buf to fd: frames go straight to the fd, never through process.stdout.
 * Retries partial writes, and EAGAIN in case the fd was handed over non-blocking. */
function writeAll(fd, buf) {
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (err) {
      if (err.code !== 'EAGAIN') throw err;
      Atomics.wait(sleepCell, 0, 0, EAGAIN_SLEEP_MS); // a short blocking sleep, no busy loop
    }
  }
}

/* Reassembles frames from the input stream, whatever the chunking: a frame split over many
 * chunks, or many frames in one chunk. */
class FrameReader {
  constructor() {
    this.chunks = [];
    this.buffered = 0;
    this.header = null; // {type, length} once a frame's header is in
  }

  push(chunk) {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /* The next {type, payload}, or null until more bytes arrive. The header is validated as
   * soon as it is complete, so an oversized frame is refused before its payload arrives. */
  next() {
    if (this.header === null) {
      if (this.buffered < HEADER_SIZE) return null;
      this.header = parseHeader(this.take(HEADER_SIZE));
    }
    if (this.buffered < this.header.length) return null;
    const frame = { type: this.header.type, payload: this.take(this.header.length) };
    this.header = null;
    return frame;
  }

  /* Called at end of stream: bytes of an unfinished frame are a protocol error. */
  checkComplete() {
    if (this.header !== null) throw new ProtocolError('end of stream inside a frame payload');
    if (this.buffered > 0) throw new ProtocolError('end of stream inside a frame header');
  }

  take(n) {
    this.buffered -= n;
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first.length >= n) { // the common case: a view, no copy
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const chunk = this.chunks[0];
      const k = Math.min(chunk.length, n - off);
      chunk.copy(out, off, 0, k);
      off += k;
      if (k === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(k);
    }
    return out;
  }
}

function fail(code, message) {
  process.stderr.write(`faasvisor runtime: ${message}\n`);
  process.exit(code);
}

/* Serves frames one invocation at a time: while a handler's promise is pending, input is
 * only buffered (the node never sends the next REQUEST before the RESPONSE anyway). */
class Server {
  constructor(input, handler) {
    this.input = input;
    this.handler = handler;
    this.frames = new FrameReader();
    this.busy = false;
    this.ended = false;
  }

  start() {
    this.input.on('data', (chunk) => {
      this.frames.push(chunk);
      this.pump();
    });
    this.input.on('end', () => {
      this.ended = true;
      this.pump();
    });
    this.input.on('error', (err) => fail(EXIT_PROTOCOL, `I/O error: ${err.message}`));
  }

  pump() {
    try {
      while (!this.busy) {
        const frame = this.frames.next();
        if (frame === null) {
          if (this.ended) {
            this.frames.checkComplete();
            process.exit(0);
          }
          return;
        }
        this.dispatch(frame);
      }
    } catch (err) {
      if (err instanceof ProtocolError) fail(EXIT_PROTOCOL, `protocol error: ${err.message}`);
      fail(EXIT_PROTOCOL, `I/O error: ${err.message}`);
    }
  }

  dispatch({ type, payload }) {
    if (type === SHUTDOWN) process.exit(0);
    if (type !== REQUEST) throw new ProtocolError(`unexpected frame type ${type} from the node`);
    const request = decodeRequest(payload); // ProtocolError propagates: the node sent junk
    let result;
    try {
      result = this.handler(request);
    } catch (err) {
      writeAll(OUT_FD, errorFrameOf(err));
      return;
    }
    if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
      this.busy = true;
      Promise.resolve(result).then(
        (value) => this.finish(() => responseFrameOf(value)),
        (err) => this.finish(() => errorFrameOf(err)),
      );
      return;
    }
    writeAll(OUT_FD, safeFrame(() => responseFrameOf(result))); // sync fast path: no tick
  }

  finish(makeFrame) {
    try {
      writeAll(OUT_FD, safeFrame(makeFrame));
    } catch (err) {
      fail(EXIT_PROTOCOL, `I/O error: ${err.message}`);
    }
    this.busy = false;
    this.pump();
  }
}

/* The frame makeFrame builds, or a 500 if the handler's result cannot be encoded. */
function safeFrame(makeFrame) {
  try {
    return makeFrame();
  } catch (err) {
    return errorFrameOf(err);
  }
}

/* Moves the protocol out of the handler's reach: process.stdout and console.log/info/...
 * write to stderr, process.stdin reads nothing. Returns the real stdin stream. Must run
 * before anything touches console or process.stdout, which bind lazily. */
function takeStdio() {
  const input = process.stdin;
  Object.defineProperty(process, 'stdout', {
    configurable: true, enumerable: true, get: () => process.stderr,
  });
  let emptyStdin = null;
  Object.defineProperty(process, 'stdin', {
    configurable: true,
    enumerable: true,
    get: () => {
      if (emptyStdin === null) {
        const { Readable } = require('node:stream');
        emptyStdin = Readable.from([]);
      }
      return emptyStdin;
    },
  });
  const { Console } = require('node:console');
  const toStderr = new Console({ stdout: process.stderr, stderr: process.stderr });
  for (const key of Object.keys(Console.prototype).concat(Object.keys(toStderr))) {
    if (typeof toStderr[key] === 'function') console[key] = toStderr[key].bind(toStderr);
  }
  return input;
}

async function loadHandler(name) {
  const file = path.resolve(process.cwd(), name);
  let mod;
  try {
    mod = require(file);
  } catch (err) {
    if (err.code !== 'ERR_REQUIRE_ESM') throw err;
    const { pathToFileURL } = require('node:url');
    mod = await import(pathToFileURL(require.resolve(file)).href);
  }
  // module.exports = handle, exports.handle, or for an ES module a named or default export.
  for (const owner of [mod, mod && mod.default]) {
    if (typeof owner === 'function') return owner;
    if (owner && typeof owner.handle === 'function') return owner.handle.bind(owner);
  }
  throw new TypeError('the module exports no handle function');
}

async function main(argv) {
  if (argv.length !== 1) fail(EXIT_USAGE, 'usage: faasvisor_runtime.js MODULE');
  // pid 1 in a pid namespace ignores SIGTERM/SIGINT without a handler; exit at once, even
  // mid-invocation, as the C SDK and the Python runtime do.
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
  // A promise the handler forgot about must not take the instance down (node's default).
  process.on('unhandledRejection', (reason) => {
    const text = reason instanceof Error && reason.stack ? reason.stack : String(reason);
    process.stderr.write(`faasvisor runtime: unhandled rejection: ${text}\n`);
  });
  const input = takeStdio();
  let handler;
  try {
    handler = await loadHandler(argv[0]);
  } catch (err) {
    process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
    fail(EXIT_LOAD, `cannot load handle() from module ${JSON.stringify(argv[0])}`);
  }
  try {
    writeAll(OUT_FD, encodeFrame(READY, Buffer.from(READY_TEXT, 'utf8')));
  } catch (err) {
    fail(EXIT_PROTOCOL, `I/O error: ${err.message}`);
  }
  new Server(input, handler).start();
}

main(process.argv.slice(2));
