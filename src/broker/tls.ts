/**
 * The broker's TLS: the server certificate and key it serves (broker.tls.cert,
 * broker.tls.key), the CA whose client certificates it verifies
 * (broker.tls.clientCa), reloading them without dropping connections, and the
 * node a verified client certificate names.
 */
import { createSecureContext, type PeerCertificate, type SecureContextOptions } from 'node:tls'
import { nodeIdProblem } from '../protocol/node-id.js'
import { readPem } from '../core/tls.js'
import { ConfigError } from '../shared/errors.js'

export interface BrokerTlsOptions {
  /** PEM server certificate (chain) and key. */
  cert: string
  key: string
  /** PEM CA of client certificates: request and verify them. */
  clientCa?: string
}

/** The secure-context options from the PEM files (read now: a reload sees the new files). */
export function loadServerTls(tls: BrokerTlsOptions): SecureContextOptions {
  const ctx = {
    cert: readPem(tls.cert, 'broker.tls.cert'),
    key: readPem(tls.key, 'broker.tls.key'),
    ...(tls.clientCa ? { ca: readPem(tls.clientCa, 'broker.tls.clientCa') } : {}),
  }
  // Not PEM, or a key that is not the certificate's: said now, with the files named, not as a crash.
  try {
    createSecureContext(ctx)
  } catch (err) {
    const files = [tls.cert, tls.key, ...(tls.clientCa ? [tls.clientCa] : [])].join(', ')
    throw new ConfigError(`broker.tls files ${files} cannot be used: ${(err as Error).message}`, {
      suggestion:
        'broker.tls.cert must be the PEM certificate (chain), broker.tls.key its PEM private key, broker.tls.clientCa a PEM CA certificate',
      cause: err,
    })
  }
  return ctx
}

/**
 * The fastify `https` option. Client certificates are requested but not
 * enforced in the handshake: the authentication hook answers a missing or
 * unverified one with a 401 that says why (a failed handshake says nothing),
 * and /healthz stays reachable without one.
 */
export function httpsOptions(tls: BrokerTlsOptions): SecureContextOptions & {
  requestCert: boolean
  rejectUnauthorized: boolean
} {
  return { ...loadServerTls(tls), requestCert: Boolean(tls.clientCa), rejectUnauthorized: false }
}

/**
 * Every identity a client certificate carries: its subject CN, then its DNS
 * and URI subjectAltNames (a URI such as spiffe://plant/node/gw-1 or
 * urn:rmq:node:gw-1 first by its last segment).
 */
export function certificateIdentities(cert: PeerCertificate | undefined): string[] {
  if (!cert || Object.keys(cert).length === 0) return []
  const out: string[] = []
  const cn = cert.subject?.CN
  for (const v of Array.isArray(cn) ? cn : cn ? [cn] : []) out.push(v)
  for (const part of (cert.subjectaltname ?? '').split(/,\s*/)) {
    const m = /^(DNS|URI):(.+)$/.exec(part.trim())
    if (!m) continue
    // A URI names the node by its last segment (urn:rmq:node:gw-1 is gw-1), then by itself.
    if (m[1] === 'URI') {
      const last = m[2].split(/[/:]/).filter(Boolean).pop()
      if (last) out.push(last)
    }
    out.push(m[2])
  }
  return [...new Set(out)]
}

/** The node a certificate names: its first identity that is a valid node id. */
export function certificateNode(ids: readonly string[]): string | undefined {
  return ids.find((id) => nodeIdProblem(id) === undefined)
}
