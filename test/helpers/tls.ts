/**
 * Certificates made by the test, with openssl: a private CA, a server
 * certificate for 127.0.0.1 and localhost, and client certificates whose
 * identity (CN and a URI subjectAltName) is a node id.
 *
 *   const pki = makePki()                  // CA + server cert in a temp dir
 *   const gw1 = pki.client('gw-1')         // { cert, key } paths
 *   pki.server('other-name')               // another server cert, e.g. for a SIGHUP reload
 *   pki.cleanup()
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { makeTempDir } from './cli.js'

export interface CertFiles {
  cert: string
  key: string
}

export interface Pki {
  dir: string
  /** The CA certificate (PEM): tls.ca of the edge, broker.tls.clientCa of the broker. */
  ca: string
  caKey: string
  /** Server certificate for 127.0.0.1 and localhost, signed by the CA. */
  serverCert: CertFiles
  /** A new server certificate with this CN (SANs 127.0.0.1 and localhost), signed by the CA. */
  server(cn: string, opts?: { days?: number }): CertFiles
  /** A client certificate naming `node` (CN=node, URI:urn:rmq:node:<node>), signed by `ca` (default the CA). */
  client(node: string, opts?: { ca?: { cert: string; key: string } }): CertFiles
  /** Another, unrelated CA (a certificate the broker must not trust). */
  otherCa(): { cert: string; key: string }
  cleanup(): void
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] })
}

function makeCa(dir: string, name: string): { cert: string; key: string } {
  const key = path.join(dir, `${name}.key`)
  const cert = path.join(dir, `${name}.pem`)
  openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  )
  return { cert, key }
}

let serial = 0

function signed(
  dir: string,
  ca: { cert: string; key: string },
  name: string,
  cn: string,
  ext: string,
  days = 2,
): CertFiles {
  const key = path.join(dir, `${name}.key`)
  const csr = path.join(dir, `${name}.csr`)
  const cert = path.join(dir, `${name}.pem`)
  const extFile = path.join(dir, `${name}.ext`)
  fs.writeFileSync(extFile, ext)
  openssl(
    [
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      csr,
      '-subj',
      `/CN=${cn}`,
    ],
    dir,
  )
  openssl(
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      '-set_serial',
      String(1000 + ++serial),
      '-out',
      cert,
      '-days',
      String(days),
      '-extfile',
      extFile,
    ],
    dir,
  )
  return { cert, key }
}

export function makePki(): Pki {
  const tmp = makeTempDir('rmq-pki-')
  const dir = tmp.dir
  const ca = makeCa(dir, 'test-ca')
  const server = (cn: string, opts: { days?: number } = {}) =>
    signed(
      dir,
      ca,
      `server-${cn}-${serial + 1}`,
      cn,
      'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' +
        'subjectAltName=IP:127.0.0.1,DNS:localhost\n',
      opts.days,
    )
  return {
    dir,
    ca: ca.cert,
    caKey: ca.key,
    serverCert: server('rmq-test-broker'),
    server,
    client: (node, opts = {}) =>
      signed(
        dir,
        opts.ca ?? ca,
        `client-${node}-${serial + 1}`,
        node,
        'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n' +
          `subjectAltName=URI:urn:rmq:node:${node}\n`,
      ),
    otherCa: () => makeCa(dir, `other-ca-${++serial}`),
    cleanup: tmp.cleanup,
  }
}
