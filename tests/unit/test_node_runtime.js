'use strict';
/* Self-test of runtimes/node/faasvisor_runtime.js: spawns the real runtime with pipes and
 * speaks the protocol to it (frames are built here independently of the runtime's codec).
 *
 * Run: node --test tests/unit/test_node_runtime.js
 */

const { test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..');
const RUNTIME = path.join(REPO, 'runtimes', 'node', 'faasvisor_runtime.js');
const NODEECHO = path.join(REPO, 'examples', 'nodeecho');
const MAGIC = Buffer.from('FVP1');
const READY = 1;
const REQUEST = 2;
const RESPONSE = 3;
const SHUTDOWN = 5;
const MAX_PAYLOAD = 16 * 1024 * 1024;
const TIMEOUT_MS = 20000;

// A handler that misbehaves in the ways a user's code does.
const FAULTY_MODULE = `
'use strict';
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
exports.handle = function (req) {
  console.log('console.log goes to stderr, not into the protocol stream');
  console.info('so does console.info');
  console.table([{ a: 1 }]);
  process.stdout.write('and process.stdout.write\\n');
  switch (req.path) {
    case '/boom': throw new RangeError('nope');
    case '/throw-string': throw 'plain';
    case '/json': return { args: req.args, method: req.method, type: req.header('X-TYPE') };
    case '/array': return [1, 'two'];
    case '/text': return 'hello';
    case '/null': return null;
    case '/status': return { status: 418, headers: [['X-A', '1'], ['X-B', '2']], body: Buffer.from('teapot') };
    case '/status-object': return { status: 201, headers: { 'X-N': 7 }, body: { ok: true } };
    case '/data-with-status': return { status: 'fine', count: 2 };
    case '/badstatus': return { status: 99, body: '' };
    case '/badtype': return 12345;
    case '/badheader': return { status: 200, headers: { 'X-Bad': {} } };
    case '/bigint': return { n: 1n };
    case '/too-big': return Buffer.alloc(${MAX_PAYLOAD});
    case '/async': return sleep(30).then(() => 'later');
    case '/async-reject': return sleep(10).then(() => { throw new TypeError('async nope'); });
    case '/async-slow': return sleep(300).then(() => 'slow');
    case '/forgotten':
      Promise.reject(new Error('nobody awaits this'));
      return 'still fine';
    case '/uint8': return new Uint8Array([1, 2, 3]);
    case '/stdin': return String(process.stdin.read());
    default: return req.body;
  }
};
`;

const ASYNC_MODULE = `
exports.handle = async (req) => {
  await new Promise((resolve) => setTimeout(resolve, 20));
  if (req.path === '/reject') throw new Error('rejected');
  return { status: 200, headers: { 'X-Async': 'yes' }, body: req.body };
};
`;

const ESM_MODULE = `
export default async function (req) { return 'esm ' + req.method; }
`;

function frame(type, payload = Buffer.alloc(0)) {
  const header = Buffer.alloc(8);
  header.writeUInt8(type, 0);
  header.writeUInt32LE(payload.length, 4);
  return Buffer.concat([MAGIC, header, payload]);
}

function putStr(data) {
  const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data);
  const n = Buffer.alloc(4);
  n.writeUInt32LE(bytes.length);
  return Buffer.concat([n, bytes]);
}

function u32(v) {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

function request({ method = 'POST', path: p = '/', query = '', headers = [], body = Buffer.alloc(0) } = {}) {
  const parts = [putStr(method), putStr(p), putStr(query), u32(headers.length)];
  for (const [name, value] of headers) parts.push(putStr(name), putStr(value));
  parts.push(putStr(body));
  return frame(REQUEST, Buffer.concat(parts));
}

function rawHeader(type, flags, reserved, length) {
  const b = Buffer.alloc(12);
  MAGIC.copy(b, 0);
  b.writeUInt8(type, 4);
  b.writeUInt8(flags, 5);
  b.writeUInt16LE(reserved, 6);
  b.writeUInt32LE(length, 8);
  return b;
}

function decodeResponse(payload) {
  const status = payload.readUInt16LE(0);
  const reserved = payload.readUInt16LE(2);
  const count = payload.readUInt32LE(4);
  let pos = 8;
  const take = () => {
    const n = payload.readUInt32LE(pos);
    const value = payload.subarray(pos + 4, pos + 4 + n);
    pos += 4 + n;
    return value;
  };
  const headers = [];
  for (let i = 0; i < count; i++) headers.push([take().toString(), take().toString()]);
  const body = take();
  assert.equal(reserved, 0);
  assert.equal(pos, payload.length, 'response payload not consumed exactly');
  return { status, headers, body };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/* The runtime as a child process with its stdin/stdout/stderr as pipes. */
class Instance {
  constructor(module, cwd) {
    this.proc = spawn(process.execPath, [RUNTIME, module], { cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stdin.on('error', () => {}); // EPIPE once it gave up; close() reports how it exited
    this.out = Buffer.alloc(0);
    this.outEnded = false;
    this.wake = null;
    this.err = '';
    this.proc.stdout.on('data', (chunk) => { this.out = Buffer.concat([this.out, chunk]); this.notify(); });
    this.proc.stdout.on('end', () => { this.outEnded = true; this.notify(); });
    this.proc.stderr.on('data', (chunk) => { this.err += chunk.toString(); });
    this.closed = new Promise((resolve) => {
      this.proc.on('close', (code, signal) => resolve({ code, signal }));
    });
  }

  notify() {
    if (this.wake) this.wake();
  }

  /* n bytes, or fewer only at end of stream. */
  async readExact(n) {
    while (this.out.length < n && !this.outEnded) {
      await new Promise((resolve) => { this.wake = resolve; });
      this.wake = null;
    }
    const data = this.out.subarray(0, n);
    this.out = this.out.subarray(data.length);
    return data;
  }

  async readFrame() {
    const header = await this.readExact(12);
    if (header.length < 12) return null;
    assert.deepEqual(header.subarray(0, 4), MAGIC);
    assert.equal(header.readUInt8(5), 0);
    assert.equal(header.readUInt16LE(6), 0);
    const type = header.readUInt8(4);
    return { type, payload: await this.readExact(header.readUInt32LE(8)) };
  }

  async readResponse() {
    const f = await this.readFrame();
    assert.ok(f, `no response; stderr: ${this.err}`);
    assert.equal(f.type, RESPONSE);
    return decodeResponse(f.payload);
  }

  send(data) {
    return new Promise((resolve) => this.proc.stdin.write(data, () => resolve()));
  }

  async invoke(fields) {
    await this.send(request(fields));
    return this.readResponse();
  }

  /* Closes its input; returns {code, signal, err, rest} (rest: unread stdout bytes). */
  async close() {
    this.proc.stdin.end();
    const { code, signal } = await this.closed;
    return { code, signal, err: this.err, rest: this.out };
  }
}

let tmpDir;
const instances = [];

before(() => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fv-node-runtime-'));
  fs.writeFileSync(path.join(tmpDir, 'faulty.js'), FAULTY_MODULE);
  fs.writeFileSync(path.join(tmpDir, 'asynchandler.js'), ASYNC_MODULE);
  fs.writeFileSync(path.join(tmpDir, 'esm.mjs'), ESM_MODULE);
});

after(() => fs.rmSync(tmpDir, { recursive: true, force: true }));

afterEach(async () => {
  for (const inst of instances.splice(0)) {
    if (inst.proc.exitCode === null && inst.proc.signalCode === null) inst.proc.kill('SIGKILL');
    await inst.closed;
  }
});

function start(module = 'handler', cwd = NODEECHO) {
  const inst = new Instance(module, cwd);
  instances.push(inst);
  return inst;
}

async function startReady(module = 'handler', cwd = NODEECHO) {
  const inst = start(module, cwd);
  const f = await inst.readFrame();
  assert.ok(f, `no READY; stderr: ${inst.err}`);
  assert.deepEqual(f, { type: READY, payload: Buffer.from('node') });
  return inst;
}

const opts = { timeout: TIMEOUT_MS };

test('sends READY naming node first, exits 0 at end of input', opts, async (t) => {
  const t0 = process.hrtime.bigint();
  const inst = await startReady();
  t.diagnostic(`spawn to READY: ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1)} ms`);
  const { code, rest } = await inst.close();
  assert.equal(code, 0);
  assert.equal(rest.length, 0);
});

test('nodeecho round trip keeps the body and the Content-Type', opts, async () => {
  const inst = await startReady();
  const body = Buffer.alloc(2560);
  for (let i = 0; i < body.length; i++) body[i] = i & 0xff;
  const got = await inst.invoke({ path: '/x', headers: [['content-type', 'application/octet-stream']], body });
  assert.equal(got.status, 200);
  assert.deepEqual(got.body, body);
  assert.deepEqual(got.headers, [['Content-Type', 'application/octet-stream']]);
  // A second invocation on the same instance, without a Content-Type.
  assert.deepEqual(await inst.invoke({ body: Buffer.from('again') }),
    { status: 200, headers: [], body: Buffer.from('again') });
  assert.equal((await inst.close()).code, 0);
});

test('a 1 MiB body split across many writes, header split too', opts, async () => {
  const inst = await startReady();
  const body = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < body.length; i++) body[i] = (i * 7 + (i >> 10)) & 0xff;
  const data = request({ headers: [['Content-Type', 'application/x-test']], body });
  const cuts = [5, 11, 13, 40, 1000];
  for (let at = 4096; at < data.length; at += 65521) cuts.push(at);
  cuts.push(data.length);
  let from = 0;
  for (const to of cuts) {
    await inst.send(data.subarray(from, to));
    from = to;
    await sleep(1); // lets the runtime see each piece on its own
  }
  const got = await inst.readResponse();
  assert.equal(got.status, 200);
  assert.ok(got.body.equals(body), 'body differs');
  assert.deepEqual(got.headers, [['Content-Type', 'application/x-test']]);
  assert.equal((await inst.close()).code, 0);
});

test('two requests written back to back in one write, then SHUTDOWN', opts, async () => {
  const inst = await startReady();
  await inst.send(Buffer.concat([
    request({ body: Buffer.from('first') }),
    request({ body: Buffer.from('second') }),
    frame(SHUTDOWN),
  ]));
  assert.equal((await inst.readResponse()).body.toString(), 'first');
  assert.equal((await inst.readResponse()).body.toString(), 'second');
  const { code, rest } = await inst.close();
  assert.equal(code, 0);
  assert.equal(rest.length, 0);
});

test('async handler: back-to-back requests are served one at a time, in order', opts, async () => {
  const inst = await startReady('asynchandler', tmpDir);
  await inst.send(Buffer.concat([request({ body: Buffer.from('a') }), request({ body: Buffer.from('b') })]));
  for (const want of ['a', 'b']) {
    const got = await inst.readResponse();
    assert.equal(got.status, 200);
    assert.deepEqual(got.headers, [['X-Async', 'yes']]);
    assert.equal(got.body.toString(), want);
  }
  const rejected = await inst.invoke({ path: '/reject' });
  assert.equal(rejected.status, 500);
  assert.deepEqual(JSON.parse(rejected.body), { error: 'Error: rejected' });
  assert.equal((await inst.invoke({ body: Buffer.from('alive') })).body.toString(), 'alive');
  const { code, err } = await inst.close();
  assert.equal(code, 0);
  assert.match(err, /rejected/);
});

test('handler exception gives 500 and the instance lives on', opts, async () => {
  const inst = await startReady('faulty', tmpDir);
  const got = await inst.invoke({ path: '/boom' });
  assert.equal(got.status, 500);
  assert.deepEqual(got.headers, [['Content-Type', 'application/json']]);
  assert.deepEqual(JSON.parse(got.body), { error: 'RangeError: nope' });
  assert.deepEqual(JSON.parse((await inst.invoke({ path: '/throw-string' })).body), { error: 'Error: plain' });
  assert.equal((await inst.invoke({ path: '/', body: Buffer.from('still here') })).body.toString(), 'still here');
  const { code, err, rest } = await inst.close();
  assert.equal(code, 0);
  assert.equal(rest.length, 0);
  assert.match(err, /RangeError: nope\n\s+at /); // the stack
  assert.match(err, /console\.log goes to stderr/);
  assert.match(err, /so does console\.info/);
  assert.match(err, /and process\.stdout\.write/);
});

test('async results, rejections and forgotten promises', opts, async () => {
  const inst = await startReady('faulty', tmpDir);
  assert.deepEqual(await inst.invoke({ path: '/async' }),
    { status: 200, headers: [['Content-Type', 'text/plain; charset=utf-8']], body: Buffer.from('later') });
  const rejected = await inst.invoke({ path: '/async-reject' });
  assert.equal(rejected.status, 500);
  assert.deepEqual(JSON.parse(rejected.body), { error: 'TypeError: async nope' });
  assert.equal((await inst.invoke({ path: '/forgotten' })).body.toString(), 'still fine');
  assert.equal((await inst.invoke({ body: Buffer.from('x') })).body.toString(), 'x');
  const { code, err } = await inst.close();
  assert.equal(code, 0);
  assert.match(err, /unhandled rejection: Error: nobody awaits this/);
});

test('result kinds map to responses', opts, async () => {
  const inst = await startReady('faulty', tmpDir);
  const json = await inst.invoke({
    method: 'GET', path: '/json', query: 'a=1&b=x%20y+z&a=2&__proto__=p', headers: [['x-type', 'T']],
  });
  assert.equal(json.status, 200);
  assert.deepEqual(json.headers, [['Content-Type', 'application/json']]);
  assert.deepEqual(JSON.parse(json.body),
    { args: { a: '1', b: 'x y z', ['__proto__']: 'p' }, method: 'GET', type: 'T' });
  assert.deepEqual(JSON.parse((await inst.invoke({ path: '/array' })).body), [1, 'two']);
  const text = await inst.invoke({ path: '/text' });
  assert.deepEqual(text, { status: 200, headers: [['Content-Type', 'text/plain; charset=utf-8']], body: Buffer.from('hello') });
  assert.deepEqual(await inst.invoke({ path: '/null' }), { status: 200, headers: [], body: Buffer.alloc(0) });
  assert.deepEqual(await inst.invoke({ path: '/status' }),
    { status: 418, headers: [['X-A', '1'], ['X-B', '2']], body: Buffer.from('teapot') });
  assert.deepEqual(await inst.invoke({ path: '/status-object' }),
    { status: 201, headers: [['X-N', '7'], ['Content-Type', 'application/json']], body: Buffer.from('{"ok":true}') });
  assert.deepEqual(JSON.parse((await inst.invoke({ path: '/data-with-status' })).body), { status: 'fine', count: 2 });
  assert.deepEqual((await inst.invoke({ path: '/uint8' })).body, Buffer.from([1, 2, 3]));
  assert.equal((await inst.invoke({ path: '/stdin' })).body.toString(), 'null'); // fd 0 is out of reach
  for (const p of ['/badstatus', '/badtype', '/badheader', '/bigint', '/too-big']) {
    assert.equal((await inst.invoke({ path: p })).status, 500, p);
  }
  assert.equal((await inst.close()).code, 0);
});

test('an ES module with a default export', opts, async () => {
  const inst = await startReady('esm.mjs', tmpDir);
  assert.equal((await inst.invoke({ method: 'PUT' })).body.toString(), 'esm PUT');
  assert.equal((await inst.close()).code, 0);
});

test('garbage input makes it exit 2', opts, async () => {
  const inst = await startReady();
  await inst.send(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  const { code, err, rest } = await inst.close();
  assert.equal(code, 2);
  assert.match(err, /protocol error/);
  assert.equal(rest.length, 0);
});

test('truncated or malformed frames make it exit 2', opts, async () => {
  const good = request({ body: Buffer.from('hello') });
  const cases = {
    'cut header': frame(REQUEST).subarray(0, 7),
    'cut payload': good.subarray(0, good.length - 2),
    'trailing bytes': frame(REQUEST, Buffer.concat([request().subarray(12), Buffer.from('x')])),
    'missing bytes': frame(REQUEST, request().subarray(12, -1)),
    'string overruns': frame(REQUEST, u32(100)),
    'flags': rawHeader(REQUEST, 1, 0, 0),
    'reserved': rawHeader(REQUEST, 0, 1, 0),
    'unknown type': frame(9),
    'too large': rawHeader(REQUEST, 0, 0, MAX_PAYLOAD + 1),
    'wrong direction': frame(RESPONSE),
    'shutdown with payload': frame(SHUTDOWN, Buffer.from('x')),
    'too many headers': request({ headers: Array(129).fill(['a', 'b']) }),
  };
  await Promise.all(Object.entries(cases).map(async ([name, data]) => {
    const inst = await startReady();
    await inst.send(data);
    const { code, rest } = await inst.close();
    assert.equal(code, 2, name);
    assert.equal(rest.length, 0, name);
  }));
});

test('an oversized frame is refused from its header alone', opts, async () => {
  const inst = await startReady();
  await inst.send(rawHeader(REQUEST, 0, 0, MAX_PAYLOAD + 1)); // input stays open
  const { code } = await inst.closed;
  assert.equal(code, 2);
  assert.match(inst.err, /frame too large/);
});

test('exactly 128 headers are accepted', opts, async () => {
  const inst = await startReady('faulty', tmpDir);
  const headers = Array.from({ length: 128 }, (_, i) => [`h${i}`, `v${i}`]);
  assert.equal((await inst.invoke({ headers, body: Buffer.from('ok') })).body.toString(), 'ok');
  assert.equal((await inst.close()).code, 0);
});

test('SHUTDOWN makes it exit 0', opts, async () => {
  const inst = await startReady();
  await inst.send(frame(SHUTDOWN)); // input stays open
  const { code, signal } = await inst.closed;
  assert.equal(signal, null);
  assert.equal(code, 0);
});

test('SIGTERM makes it exit 0, idle or mid-invocation', opts, async () => {
  const idle = await startReady();
  idle.proc.kill('SIGTERM');
  assert.deepEqual(await idle.closed, { code: 0, signal: null });
  const busy = await startReady('faulty', tmpDir);
  await busy.send(request({ path: '/async-slow' }));
  await sleep(50);
  busy.proc.kill('SIGTERM');
  assert.deepEqual(await busy.closed, { code: 0, signal: null });
});

test('end of input during an async invocation still answers it, then exits 0', opts, async () => {
  const inst = await startReady('faulty', tmpDir);
  await inst.send(request({ path: '/async-slow' }));
  inst.proc.stdin.end();
  assert.equal((await inst.readResponse()).body.toString(), 'slow');
  assert.equal((await inst.close()).code, 0);
});

test('a missing module exits 1 without READY', opts, async () => {
  const inst = start('no_such_module', tmpDir);
  const { code, err, rest } = await inst.close();
  assert.equal(code, 1);
  assert.equal(rest.length, 0);
  assert.match(err, /no_such_module/);
});
