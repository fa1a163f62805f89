/**
 * Transport security of the edge's one HTTP client (http-client.ts): the
 * private CA and client certificate it presents (`tls.ca`, `tls.cert`,
 * `tls.key`), the refusal of plain http:// off loopback (`allowInsecureHttp`),
 * and certificate failures in words an operator can act on.
 */
import fs from 'node:fs'
import path from 'node:path'
import { createSecureContext } from 'node:tls'
import { ConfigError } from '../shared/errors.js'

export interface TlsClientOptions {
  /** PEM file(s) of the CA that signs the broker certificate (absolute or relative to cwd). */
  ca?: string
  /** PEM client certificate and its key (mTLS). */
  cert?: string
  key?: string
  /** Allow http:// to a host that is not loopback. */
  allowInsecureHttp?: boolean
}

/** The loaded PEM material, ready for https.Agent. */
export interface TlsMaterial {
  ca?: Buffer
  cert?: Buffer
  key?: Buffer
}

/** localhost, 127.0.0.0/8, ::1 (with or without brackets). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase()
  return (
    h === 'localhost' ||
    h.endsWith('.localhost') ||
    h === '::1' ||
    /^127\.\d+\.\d+\.\d+$/.test(h) ||
    /^::ffff:127\.\d+\.\d+\.\d+$/.test(h)
  )
}

/** The TLS keys of the effective configuration, paths resolved against cwd. */
export function tlsFromConfig(
  config: { tls?: { ca: string; cert: string; key: string }; allowInsecureHttp?: boolean },
  cwd = process.cwd(),
): TlsClientOptions {
  const abs = (p: string | undefined) => (p ? path.resolve(cwd, p) : undefined)
  return {
    ca: abs(config.tls?.ca),
    cert: abs(config.tls?.cert),
    key: abs(config.tls?.key),
    allowInsecureHttp: config.allowInsecureHttp === true,
  }
}

/**
 * Refuse plain HTTP to anything but loopback before a socket is opened: the
 * bearer token and every payload would cross the network in clear.
 */
export function checkTransport(url: URL, options: TlsClientOptions = {}): void {
  if (url.protocol === 'https:' || options.allowInsecureHttp) return
  if (url.protocol !== 'http:')
    throw new ConfigError(
      `brokerUrl ${url.origin} has the scheme ${url.protocol}, expected https: or http:`,
      {
        suggestion: 'set brokerUrl (RMQ_BROKER_URL) to https://HOST:PORT',
      },
    )
  if (isLoopback(url.hostname)) return
  throw new ConfigError(
    `refusing plain http:// to ${url.host}: it is not a loopback address, so the token and payloads would cross the network in clear (no tls)`,
    {
      suggestion:
        'serve the broker over TLS (broker.tls.cert/key) and use an https:// brokerUrl (with tls.ca for a private CA), ' +
        'or set allowInsecureHttp=true (RMQ_ALLOW_INSECURE_HTTP=1) on a network you trust',
      details: { host: url.host, key: 'allowInsecureHttp' },
    },
  )
}

/** A PEM file named by config key `key`, or ConfigError (78) naming the key and what is wrong (edge and broker). */
export function readPem(file: string, key: string): Buffer {
  try {
    const pem = fs.readFileSync(file)
    // Node ignores text that is not PEM in a CA list: say so instead of failing later as "unknown CA".
    const want = /\.key$/.test(key) ? 'PRIVATE KEY-----' : '-----BEGIN CERTIFICATE-----'
    if (!pem.includes(want))
      throw new ConfigError(
        `${key} file ${file} is not a PEM ${want.startsWith('P') ? 'private key' : 'certificate'}`,
        {
          suggestion: `set ${key} to a PEM file (it starts with -----BEGIN ${want.startsWith('P') ? '… PRIVATE KEY' : 'CERTIFICATE'}-----)`,
          details: { key, file },
        },
      )
    return pem
  } catch (err) {
    if (err instanceof ConfigError) throw err
    const code = (err as NodeJS.ErrnoException).code
    throw new ConfigError(`cannot read ${key} file ${file} (${code ?? (err as Error).message})`, {
      suggestion: `set ${key} to a readable PEM file`,
      details: { key, file, code },
    })
  }
}

/** Read the PEM files named by the options (once per client). */
export function loadTlsMaterial(options: TlsClientOptions = {}): TlsMaterial {
  if (Boolean(options.cert) !== Boolean(options.key))
    throw new ConfigError('tls.cert and tls.key go together: one of them is set without the other', {
      suggestion: 'set both tls.cert and tls.key (RMQ_TLS_CERT, RMQ_TLS_KEY), or neither',
    })
  const material: TlsMaterial = {
    ...(options.ca ? { ca: readPem(options.ca, 'tls.ca') } : {}),
    ...(options.cert ? { cert: readPem(options.cert, 'tls.cert') } : {}),
    ...(options.key ? { key: readPem(options.key, 'tls.key') } : {}),
  }
  if (!material.ca && !material.cert) return material
  // Not PEM, or a key that is not the certificate's: a setting to fix, said before any request.
  try {
    createSecureContext(material)
  } catch (err) {
    const keys = [
      options.ca && `tls.ca ${options.ca}`,
      options.cert && `tls.cert ${options.cert}`,
      options.key && `tls.key ${options.key}`,
    ]
      .filter(Boolean)
      .join(', ')
    throw new ConfigError(`cannot use ${keys}: ${(err as Error).message}`, {
      suggestion:
        'tls.ca must be a PEM CA certificate, tls.cert a PEM certificate and tls.key its PEM private key',
      cause: err,
    })
  }
  return material
}

// OpenSSL's verification codes as node reports them, in words, with the key that fixes each.
const CERT_REASONS: Record<string, string> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: 'its certificate is self-signed',
  SELF_SIGNED_CERT_IN_CHAIN:
    'its certificate chain ends in a self-signed CA that is not trusted (unknown CA)',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'its certificate is signed by an unknown CA',
  UNABLE_TO_GET_ISSUER_CERT: 'its certificate is signed by an unknown CA',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'its certificate is signed by an unknown CA',
  ERR_TLS_CERT_ALTNAME_INVALID: 'its certificate does not name this host (hostname mismatch)',
  CERT_HAS_EXPIRED: 'its certificate has expired',
  CERT_NOT_YET_VALID: 'its certificate is not valid yet (check the clock)',
  CERT_REVOKED: 'its certificate is revoked',
  CERT_SIGNATURE_FAILURE: 'its certificate signature is invalid',
  INVALID_CA: 'a CA in its chain is invalid',
  ERR_SSL_WRONG_VERSION_NUMBER: 'it does not speak TLS there (an http:// port?)',
}

/**
 * A certificate (or TLS handshake) failure as a ConfigError that names the
 * host, the reason and the key to set; undefined for other errors.
 */
export function tlsError(err: Error & { code?: string }, url: URL): ConfigError | undefined {
  const code = err.code ?? ''
  const host = url.host
  const reason = CERT_REASONS[code]
  if (reason) {
    const fix =
      code === 'ERR_TLS_CERT_ALTNAME_INVALID'
        ? `use a brokerUrl host that the certificate names, or reissue the broker certificate with this host in its subjectAltName`
        : code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID'
          ? 'renew the broker certificate (broker.tls.cert; the broker reloads it on SIGHUP), or correct this clock'
          : code === 'ERR_SSL_WRONG_VERSION_NUMBER'
            ? 'use http:// for this port, or serve TLS there (broker.tls.cert/key)'
            : 'set tls.ca (RMQ_TLS_CA) to the PEM file of the CA that signed the broker certificate'
    return new ConfigError(`TLS: cannot trust the broker at ${host}: ${reason} (${code})`, {
      suggestion: fix,
      details: { host, code, key: 'tls.ca' },
      cause: err,
    })
  }
  // The broker refused our client certificate (or the lack of one) during the handshake.
  if (/alert (certificate required|bad certificate|unknown ca|certificate unknown)/i.test(err.message))
    return new ConfigError(`TLS: the broker at ${host} refused the client certificate (${err.message})`, {
      suggestion:
        'set tls.cert and tls.key (RMQ_TLS_CERT, RMQ_TLS_KEY) to a certificate signed by broker.tls.clientCa',
      details: { host, code, key: 'tls.cert' },
      cause: err,
    })
  return undefined
}
