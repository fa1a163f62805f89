/**
 * The edge's transport rules in-process (core/tls.ts) and the broker's reading
 * of a client certificate's identity (broker/tls.ts). End to end: test/e2e/tls.test.ts.
 */
import fs from 'node:fs'
import path from 'node:path'
import type { PeerCertificate } from 'node:tls'
import { afterAll, describe, expect, it } from 'vitest'
import { certificateIdentities, certificateNode, loadServerTls } from '../../src/broker/tls.js'
import { HttpClient } from '../../src/core/http-client.js'
import { checkTransport, isLoopback, loadTlsMaterial, tlsError } from '../../src/core/tls.js'
import { makePki } from '../helpers/tls.js'

const pki = makePki()
afterAll(() => pki.cleanup())

describe('plain HTTP off loopback', () => {
  it('loopback names and addresses are loopback; others are not', () => {
    for (const h of ['127.0.0.1', '127.8.9.10', 'localhost', 'LOCALHOST', '[::1]', '::1', 'gw.localhost'])
      expect(isLoopback(h), h).toBe(true)
    for (const h of [
      'broker.invalid',
      '0.0.0.0',
      'broker.example',
      '128.0.0.1',
      '::',
      'localhost.example.com',
    ])
      expect(isLoopback(h), h).toBe(false)
  })

  it('http:// to a non-loopback host throws ConfigError (78) naming tls and allowInsecureHttp; https and loopback pass', () => {
    let err: any
    try {
      new HttpClient('http://broker.invalid:7878')
    } catch (e) {
      err = e
    }
    expect(err?.exitCode).toBe(78)
    expect(err?.message).toContain('refusing plain http:// to broker.invalid:7878')
    expect(err?.message).toMatch(/\btls\b/)
    expect(err?.suggestion).toContain('allowInsecureHttp')
    expect(() =>
      checkTransport(new URL('http://broker.invalid:7878'), { allowInsecureHttp: true }),
    ).not.toThrow()
    expect(() => checkTransport(new URL('https://broker.invalid:7878'))).not.toThrow()
    expect(() => checkTransport(new URL('http://127.0.0.1:7878'))).not.toThrow()
    expect(() => checkTransport(new URL('ftp://broker:21'))).toThrow(/scheme ftp:/)
  })

  it('an unreadable tls.ca, or tls.cert without tls.key, is ConfigError naming the key', () => {
    expect(() => loadTlsMaterial({ ca: '/nonexistent/ca.pem' })).toThrow(
      /cannot read tls\.ca file \/nonexistent\/ca\.pem \(ENOENT\)/,
    )
    expect(() => loadTlsMaterial({ cert: '/x.pem' })).toThrow(/tls\.cert and tls\.key go together/)
  })

  it("a file that is not PEM, or a key that is not the certificate's, is ConfigError naming the files (edge and broker)", () => {
    const junk = path.join(pki.dir, 'junk.pem')
    fs.writeFileSync(junk, 'not a certificate\n')
    const gw = pki.client('gw-9')
    expect(() => loadTlsMaterial({ ca: junk })).toThrow(`tls.ca file ${junk} is not a PEM certificate`)
    expect(() => loadTlsMaterial({ ca: pki.ca, cert: gw.cert, key: pki.serverCert.key })).toThrow(
      /cannot use .*tls\.key .*key values mismatch/,
    )
    expect(loadTlsMaterial({ ca: pki.ca, cert: gw.cert, key: gw.key }).cert).toBeInstanceOf(Buffer)
    let err: any
    try {
      loadServerTls({ cert: pki.serverCert.cert, key: gw.key })
    } catch (e) {
      err = e
    }
    expect(err?.exitCode).toBe(78)
    expect(err?.message).toContain(pki.serverCert.cert)
    expect(err?.message).toMatch(/key values mismatch/)
    expect(() => loadServerTls({ ...pki.serverCert, clientCa: junk })).toThrow(
      /broker\.tls\.clientCa file .* is not a PEM certificate/,
    )
  })
})

describe('certificate errors in words', () => {
  const url = new URL('https://broker.example:7878/v1/batches')
  it.each([
    ['DEPTH_ZERO_SELF_SIGNED_CERT', /self-signed/, 'tls.ca'],
    ['SELF_SIGNED_CERT_IN_CHAIN', /unknown CA/, 'tls.ca'],
    ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', /unknown CA/, 'tls.ca'],
    ['ERR_TLS_CERT_ALTNAME_INVALID', /hostname mismatch/, 'subjectAltName'],
    ['CERT_HAS_EXPIRED', /expired/, 'renew'],
  ])('%s names the host, the reason and the fix', (code, reason, fix) => {
    const e = tlsError(Object.assign(new Error('x'), { code }), url)!
    expect(e.exitCode).toBe(78)
    expect(e.message).toContain('broker.example:7878')
    expect(e.message).toMatch(reason)
    expect(e.suggestion).toContain(fix)
  })
  it('other network errors are not certificate errors', () => {
    expect(tlsError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }), url)).toBeUndefined()
  })
})

describe('the node a client certificate names', () => {
  const cert = (cn: string | undefined, san?: string) =>
    ({ subject: cn === undefined ? {} : { CN: cn }, subjectaltname: san }) as unknown as PeerCertificate
  it('CN first, then DNS and URI SANs (a URI also by its last segment)', () => {
    expect(certificateIdentities(cert('gw-1', 'URI:urn:rmq:node:gw-1'))).toEqual([
      'gw-1',
      'urn:rmq:node:gw-1',
    ])
    expect(certificateIdentities(cert(undefined, 'DNS:gw-2.plant, URI:spiffe://plant/node/gw-3'))).toEqual([
      'gw-2.plant',
      'gw-3',
      'spiffe://plant/node/gw-3',
    ])
    expect(certificateNode(certificateIdentities(cert(undefined, 'URI:spiffe://plant/node/gw-3')))).toBe(
      'gw-3',
    )
    expect(certificateNode(certificateIdentities(cert('has space')))).toBeUndefined()
    expect(certificateIdentities(undefined)).toEqual([])
  })
})
