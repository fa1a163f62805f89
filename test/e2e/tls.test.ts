/**
 * Transport security end to end: real broker processes serving HTTPS on
 * 127.0.0.1 with certificates this test makes (test/helpers/tls.ts), the real
 * `rmq` binary for sync, drain, consume and status, and the Producer API in
 * this process. A private CA, mTLS identities, a certificate for one node
 * publishing as another, plain http:// off loopback, SIGHUP reloads, and the
 * files that hold tokens and payloads.
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import https from 'node:https'
import path from 'node:path'
import type { TLSSocket } from 'node:tls'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createProducer } from '../../src/index.js'
import { startBrokerProcess } from '../helpers/broker.js'
import { BIN, cleanEnv, makeTempDir, parseJson, runCli, type CliResult } from '../helpers/cli.js'
import { makePki, type Pki } from '../helpers/tls.js'

let pki: Pki
beforeAll(() => {
  pki = makePki()
})
afterAll(() => pki.cleanup())

const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

async function tlsBroker(
  extra: Record<string, string> = {},
  auth: 'token' | 'mtls' | 'token+mtls' = 'token',
) {
  const b = await startBrokerProcess({
    auth,
    env: { RMQ_BROKER_TLS_CERT: pki.serverCert.cert, RMQ_BROKER_TLS_KEY: pki.serverCert.key, ...extra },
  })
  cleanups.push(() => b.cleanup())
  expect(b.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)
  return b
}

function edge(node: string, env: Record<string, string>) {
  const tmp = makeTempDir('rmq-tls-e2e-')
  cleanups.push(tmp.cleanup)
  const base = { RMQ_NODE_ID: node, RMQ_SYNC_TIMEOUT: '10s', RMQ_SYNC_BACKOFF_INITIAL: '1m', ...env }
  return {
    dir: tmp.dir,
    run: (args: string[], extra: Record<string, string> = {}, input?: string) =>
      runCli(args, { cwd: tmp.dir, env: { ...base, ...extra }, input, timeoutMs: 60_000 }),
  }
}

async function publishN(e: ReturnType<typeof edge>, n: number, topic = 'plant/tls/temp') {
  const lines = Array.from({ length: n }, (_, i) => JSON.stringify({ i })).join('\n') + '\n'
  const r = await e.run(['publish', topic, '--lines', '-f', '-'], {}, lines)
  expect(r.code, r.stderr).toBe(0)
}

async function pending(e: ReturnType<typeof edge>): Promise<number> {
  const r = await e.run(['status', '--json'])
  expect(r.code, r.stderr).toBe(0)
  return parseJson(r.stdout).pending.messages
}

async function consumeAll(
  url: string,
  env: Record<string, string>,
): Promise<Array<{ node: string; seq: number }>> {
  const r = await runCli(['consume', '#', '--json'], {
    env: { RMQ_BROKER_URL: url, ...env },
    timeoutMs: 60_000,
  })
  expect(r.code, r.stderr).toBe(0)
  return r.stdout
    .split('\n')
    .filter((l) => l.trim() && !l.includes('"held"'))
    .map((l) => JSON.parse(l))
}

function expectCertError(r: CliResult, host: string) {
  expect(r.code, r.stderr).toBe(78)
  expect(r.stderr).toContain(`cannot trust the broker at ${host}`)
  expect(r.stderr).toMatch(/unknown CA|self-signed/)
  expect(r.stderr).toContain('tls.ca')
  expect(r.stderr).not.toMatch(/\n\s+at /)
}

describe('HTTPS with a private CA', () => {
  it('sync, drain, consume and status --broker: without tls.ca a clear error and nothing sent; with it every message once', async () => {
    const b = await tlsBroker()
    const token = await b.createToken('gw-tls')
    const host = new URL(b.url).host
    const e = edge('gw-tls', { RMQ_BROKER_URL: b.url, RMQ_TOKEN: token })
    await publishN(e, 40)

    const noCa = await e.run(['sync'])
    expectCertError(noCa, host)
    expect(await pending(e)).toBe(40)
    const noCaDrain = await e.run(['drain', '--timeout', '20s'])
    expectCertError(noCaDrain, host)
    expect(await pending(e)).toBe(40)
    const noCaConsume = await runCli(['consume', '#'], { env: { RMQ_BROKER_URL: b.url, RMQ_TOKEN: token } })
    expectCertError(noCaConsume, host)
    const noCaStatus = await e.run(['status', '--broker'])
    expectCertError(noCaStatus, host)

    const ok = await e.run(['sync'], { RMQ_TLS_CA: pki.ca })
    expect(ok.code, ok.stderr).toBe(0)
    expect(await pending(e)).toBe(0)
    await publishN(e, 10)
    const drained = await e.run(['drain', '--timeout', '20s'], { RMQ_TLS_CA: pki.ca })
    expect(drained.code, drained.stderr).toBe(0)
    expect(await pending(e)).toBe(0)

    const got = await consumeAll(b.url, { RMQ_TOKEN: await b.adminToken(), RMQ_TLS_CA: pki.ca })
    expect(got.length).toBe(50)
    expect(new Set(got.map((m) => m.seq)).size).toBe(50)
    expect(got.every((m) => m.node === 'gw-tls')).toBe(true)

    // The fleet view needs a monitor or admin credential.
    const fleet = await e.run(['status', '--broker', '--json'], {
      RMQ_TLS_CA: pki.ca,
      RMQ_TOKEN: await b.adminToken(),
    })
    expect(fleet.code, fleet.stderr).toBe(0)
    expect(parseJson(fleet.stdout).nodes.map((n: { node: string }) => n.node)).toContain('gw-tls')
  }, 180_000)

  it('the Producer API (direct mode) over HTTPS: tls.ca makes it deliver, without it ConfigError naming tls.ca', async () => {
    const b = await tlsBroker()
    const token = await b.createToken('gw-api')
    const tmp = makeTempDir('rmq-tls-api-')
    cleanups.push(tmp.cleanup)
    const base = {
      cwd: tmp.dir,
      env: {},
      dotenv: false,
      brokerUrl: b.url,
      token,
      nodeId: 'gw-api',
      mode: 'direct' as const,
    }

    const bad = await createProducer({ ...base, sync: { timeout: '5s' } })
    const err = await bad.send('api/tls', 'x').then(
      () => undefined,
      (e: unknown) => e as { exitCode: number; message: string; suggestion?: string },
    )
    await bad.close()
    expect(err?.exitCode).toBe(78)
    expect(err?.message).toMatch(/cannot trust the broker at 127\.0\.0\.1:\d+/)
    expect(err?.suggestion).toContain('tls.ca')

    const p = await createProducer({ ...base, tls: { ca: pki.ca } })
    for (let i = 0; i < 5; i++) await p.send('api/tls', JSON.stringify({ i }))
    await p.close()
    const got = await consumeAll(b.url, { RMQ_TOKEN: await b.adminToken(), RMQ_TLS_CA: pki.ca })
    expect(got.filter((m) => m.node === 'gw-api').map((m) => m.seq)).toEqual([1, 2, 3, 4, 5])
  }, 120_000)
})

describe('mTLS: the client certificate names the node', () => {
  it('a certificate for gw-a publishes as gw-a; as gw-b it is 403 naming both; none is 401; certificates of another CA are refused', async () => {
    const b = await tlsBroker({ RMQ_BROKER_TLS_CLIENT_CA: pki.ca }, 'mtls')
    // A consumer credential named like a certificate gives that certificate its role (read every 5 s: made first).
    await b.createToken('reader', { role: 'consumer', topics: '#' })
    const certA = pki.client('gw-a')
    const tls = { RMQ_TLS_CA: pki.ca, RMQ_TLS_CERT: certA.cert, RMQ_TLS_KEY: certA.key }

    const a = edge('gw-a', { RMQ_BROKER_URL: b.url, ...tls })
    await publishN(a, 7)
    const ok = await a.run(['sync'])
    expect(ok.code, ok.stderr).toBe(0)
    expect(await pending(a)).toBe(0)

    const asB = edge('gw-b', { RMQ_BROKER_URL: b.url, ...tls })
    await publishN(asB, 3)
    const wrong = await asB.run(['sync'])
    expect(wrong.code).toBe(78)
    expect(wrong.stderr).toContain('403')
    expect(wrong.stderr).toContain('client certificate belongs to node gw-a, not gw-b')
    expect(await pending(asB)).toBe(3)

    const noCert = edge('gw-a', { RMQ_BROKER_URL: b.url, RMQ_TLS_CA: pki.ca })
    await publishN(noCert, 2)
    const none = await noCert.run(['sync'])
    expect(none.code).toBe(78)
    expect(none.stderr).toContain('401')
    expect(none.stderr).toMatch(/client certificate .* is required/)
    expect(none.stderr).toContain('tls.cert')
    expect(await pending(noCert)).toBe(2)

    const foreign = pki.client('gw-a', { ca: pki.otherCa() })
    const forged = edge('gw-a', {
      RMQ_BROKER_URL: b.url,
      RMQ_TLS_CA: pki.ca,
      RMQ_TLS_CERT: foreign.cert,
      RMQ_TLS_KEY: foreign.key,
    })
    await publishN(forged, 1)
    const refused = await forged.run(['sync'])
    expect(refused.code).toBe(78)
    expect(refused.stderr).toMatch(/client certificate is not accepted/)
    expect(await pending(forged)).toBe(1)

    // A node's certificate does not read messages; a certificate named like a consumer credential does.
    const asNode = await runCli(['consume', '#', '--json'], { env: { RMQ_BROKER_URL: b.url, ...tls } })
    expect(asNode.code).not.toBe(0)
    expect(asNode.stderr).toContain('lacks permission messages:read')
    const reader = pki.client('reader')
    const got = await consumeAll(b.url, {
      RMQ_TLS_CA: pki.ca,
      RMQ_TLS_CERT: reader.cert,
      RMQ_TLS_KEY: reader.key,
    })
    // Only gw-a's 7 messages were stored.
    expect(got.map((m) => `${m.node}:${m.seq}`)).toEqual(Array.from({ length: 7 }, (_, i) => `gw-a:${i + 1}`))
  }, 180_000)

  it('token+mtls: the token and the certificate must name the same node', async () => {
    const b = await tlsBroker({ RMQ_BROKER_TLS_CLIENT_CA: pki.ca }, 'token+mtls')
    const token = await b.createToken('gw-c')
    const certC = pki.client('gw-c')
    const certD = pki.client('gw-d')
    const e = edge('gw-c', { RMQ_BROKER_URL: b.url, RMQ_TOKEN: token, RMQ_TLS_CA: pki.ca })
    await publishN(e, 2)
    const mismatch = await e.run(['sync'], { RMQ_TLS_CERT: certD.cert, RMQ_TLS_KEY: certD.key })
    expect(mismatch.code).toBe(78)
    expect(mismatch.stderr).toContain('the token belongs to node gw-c, but the client certificate names gw-d')
    expect(await pending(e)).toBe(2)
    const ok = await e.run(['sync'], { RMQ_TLS_CERT: certC.cert, RMQ_TLS_KEY: certC.key })
    expect(ok.code, ok.stderr).toBe(0)
    expect(await pending(e)).toBe(0)
  }, 120_000)
})

describe('plain HTTP', () => {
  it('http:// to a non-loopback address is refused before connecting (exit 78 naming tls and allowInsecureHttp)', async () => {
    // A name under .invalid never resolves: were rmq to try, it would fail with a DNS error, not exit 78.
    const e = edge('gw-http', {
      RMQ_BROKER_URL: 'http://broker.invalid:7878',
      RMQ_TOKEN: 'secret',
      RMQ_SYNC_TIMEOUT: '60s',
    })
    await publishN(e, 2)
    for (const args of [['sync'], ['drain', '--timeout', '60s'], ['consume', '#'], ['status', '--broker']]) {
      const started = Date.now()
      const r = await e.run(args)
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(78)
      expect(r.stderr).toContain('refusing plain http:// to broker.invalid:7878')
      expect(r.stderr).toMatch(/\btls\b/)
      expect(r.stderr).toContain('allowInsecureHttp')
      expect(Date.now() - started).toBeLessThan(30_000)
    }
    expect(await pending(e)).toBe(2)
  }, 240_000)

  it('the broker refuses a non-loopback address without TLS unless --insecure', async () => {
    const r = await runCli(['broker', 'start', '--host', '0.0.0.0', '--port', '0'], {
      env: { RMQ_BROKER_DATA_DIR: '/tmp/rmq-never-created-tls-' + process.pid },
    })
    expect(r.code).toBe(78)
    expect(r.stderr).toContain('without TLS')
    expect(r.stderr).toContain('broker.tls.cert')
    expect(r.stderr).toContain('--insecure')
    expect(fs.existsSync('/tmp/rmq-never-created-tls-' + process.pid)).toBe(false)
  }, 60_000)
})

/** GET /healthz on `agent`; the server certificate's CN and the socket it came over. */
function getHealth(
  url: string,
  agent: https.Agent,
): Promise<{ cn: string; socket: TLSSocket; status: number }> {
  return new Promise((resolve, reject) => {
    const req = https.get(`${url}/healthz`, { agent, ca: fs.readFileSync(pki.ca) }, (res) => {
      const socket = res.socket as TLSSocket
      const cn = String(socket.getPeerCertificate().subject.CN)
      res.resume()
      res.on('end', () => resolve({ cn, socket, status: res.statusCode ?? 0 }))
    })
    req.on('error', reject)
  })
}

describe('certificate reload', () => {
  it('SIGHUP serves the new certificate to new connections and keeps an open keep-alive connection', async () => {
    const dir = makeTempDir('rmq-tls-reload-')
    cleanups.push(dir.cleanup)
    const cert = path.join(dir.dir, 'server.pem')
    const key = path.join(dir.dir, 'server.key')
    fs.copyFileSync(pki.serverCert.cert, cert)
    fs.copyFileSync(pki.serverCert.key, key)
    const b = await tlsBroker({ RMQ_BROKER_TLS_CERT: cert, RMQ_BROKER_TLS_KEY: key })
    const ca = fs.readFileSync(pki.ca)
    const kept = new https.Agent({ keepAlive: true, maxSockets: 1, ca })
    cleanups.push(() => kept.destroy())
    const first = await getHealth(b.url, kept)
    expect(first).toMatchObject({ status: 200, cn: 'rmq-test-broker' })

    const next = pki.server('rmq-test-broker-renewed')
    fs.copyFileSync(next.cert, cert)
    fs.copyFileSync(next.key, key)
    b.child.kill('SIGHUP')
    const until = Date.now() + 15_000
    while (!b.logs().includes('TLS certificate files reloaded') && Date.now() < until)
      await new Promise((r) => setTimeout(r, 50))
    expect(b.logs()).toContain('TLS certificate files reloaded')

    const fresh = new https.Agent({ keepAlive: false, ca })
    cleanups.push(() => fresh.destroy())
    expect(await getHealth(b.url, fresh)).toMatchObject({ status: 200, cn: 'rmq-test-broker-renewed' })
    // The open connection was not dropped: the same socket answers again, still with the old certificate.
    const again = await getHealth(b.url, kept)
    expect(again.status).toBe(200)
    expect(again.socket).toBe(first.socket)
    expect(again.cn).toBe('rmq-test-broker')
    expect(b.child.exitCode).toBeNull()
  }, 120_000)
})

/** The real binary under umask 022 (the usual default), whatever the test runner's umask. */
function runUmask022(args: string[], cwd: string, env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', 'umask 022 && exec "$0" "$@"', process.execPath, BIN, ...args], {
      cwd,
      env: cleanEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }))
  })
}

const mode = (p: string) => (fs.statSync(p).mode & 0o777).toString(8)

describe('secrets on disk', () => {
  it('under umask 022: config set writes 0600 and prints no token, the outbox and broker.db are 0600 in 0700 directories', async () => {
    const tmp = makeTempDir('rmq-tls-files-')
    cleanups.push(tmp.cleanup)
    const secret = 'tok-SECRET-1234567890abcdef'
    const set = await runUmask022(['config', 'set', 'token', secret], tmp.dir)
    expect(set.code, set.stderr).toBe(0)
    expect(set.stdout + set.stderr).not.toContain(secret)
    expect(set.stdout).toContain('****cdef')
    expect(mode(path.join(tmp.dir, '.rmqrc.json'))).toBe('600')
    const setJson = await runUmask022(['config', 'set', 'token', secret, '--json'], tmp.dir)
    expect(setJson.stdout).not.toContain(secret)
    const get = await runUmask022(['config', 'get', 'token'], tmp.dir)
    expect(get.code, get.stderr).toBe(0)
    expect(get.stdout).not.toContain(secret)

    const pub = await runUmask022(['publish', 'a/b', 'payload'], tmp.dir, { RMQ_NODE_ID: 'gw-files' })
    expect(pub.code, pub.stderr).toBe(0)
    expect(mode(path.join(tmp.dir, '.rmq'))).toBe('700')
    const db = path.join(tmp.dir, '.rmq', 'outbox.db')
    for (const f of [db, `${db}-wal`, `${db}-shm`]) if (fs.existsSync(f)) expect(mode(f), f).toBe('600')
    expect(fs.existsSync(db)).toBe(true)

    const dataDir = path.join(tmp.dir, 'broker-data')
    const tok = await runUmask022(['broker', 'token', 'create', 'gw-files', '--data-dir', dataDir], tmp.dir)
    expect(tok.code, tok.stderr).toBe(0)
    expect(mode(dataDir)).toBe('700')
    const bdb = path.join(dataDir, 'broker.db')
    for (const f of [bdb, `${bdb}-wal`, `${bdb}-shm`]) if (fs.existsSync(f)) expect(mode(f), f).toBe('600')

    // status is quiet about private files, and warns about one others can read.
    const quiet = await runUmask022(['status'], tmp.dir, { RMQ_NODE_ID: 'gw-files' })
    expect(quiet.code, quiet.stderr).toBe(0)
    expect(quiet.stderr).not.toContain('readable by other users')
    fs.chmodSync(path.join(tmp.dir, '.rmqrc.json'), 0o644)
    fs.chmodSync(db, 0o644)
    const loud = await runUmask022(['status'], tmp.dir, { RMQ_NODE_ID: 'gw-files' })
    expect(loud.code, loud.stderr).toBe(0)
    expect(loud.stderr).toContain(
      `warning: ${fs.realpathSync(path.join(tmp.dir, '.rmqrc.json'))} is readable by other users (-rw-r--r--)`,
    )
    expect(loud.stderr).toContain(`${db} is readable by other users (-rw-r--r--) and holds outbox payloads`)
    expect(loud.stderr).toContain('chmod 600')
  }, 120_000)

  it('the token from tokenFile, or from $CREDENTIALS_DIRECTORY/rmq-token (systemd LoadCredential=)', async () => {
    const b = await tlsBroker()
    const token = await b.createToken('gw-cred')
    const e = edge('gw-cred', { RMQ_BROKER_URL: b.url, RMQ_TLS_CA: pki.ca })
    fs.writeFileSync(path.join(e.dir, 'token.txt'), token + '\n', { mode: 0o600 })
    await publishN(e, 2)
    const missing = await e.run(['sync'], { RMQ_TOKEN_FILE: 'no-such-token' })
    expect(missing.code).toBe(78)
    expect(missing.stderr).toContain(
      `cannot read the token file ${path.join(fs.realpathSync(e.dir), 'no-such-token')}`,
    )
    const viaFile = await e.run(['sync'], { RMQ_TOKEN_FILE: 'token.txt' })
    expect(viaFile.code, viaFile.stderr).toBe(0)
    expect(await pending(e)).toBe(0)

    const creds = path.join(e.dir, 'creds')
    fs.mkdirSync(creds)
    fs.writeFileSync(path.join(creds, 'rmq-token'), token, { mode: 0o600 })
    await publishN(e, 3)
    const viaCred = await e.run(['sync'], { CREDENTIALS_DIRECTORY: creds })
    expect(viaCred.code, viaCred.stderr).toBe(0)
    expect(await pending(e)).toBe(0)

    const unit = await e.run(['schedule', '--systemd'])
    expect(unit.code, unit.stderr).toBe(0)
    expect(unit.stdout).toContain('LoadCredential=rmq-token:/etc/rmq/rmq.token')
  }, 120_000)
})
