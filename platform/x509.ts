/**
 * A self-signed X.509 serving certificate (ECDSA P-256, SHA-256), made with node:crypto alone: the
 * runtime's HTTP API serves TLS with one made at each start, its key kept in memory only, and
 * publishes the certificate in its Host's status, where clients take it as the only certificate
 * they trust for that host (a pin; docs/DESIGN.md §5.8). Node can parse certificates
 * (X509Certificate) but not make them, so the DER is written here (RFC 5280, the fields a serving
 * certificate needs and nothing else).
 */
import { createPublicKey, generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto';
import net from 'node:net';

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.of(tag), length(content.length), content]);
}

const sequence = (...items: Buffer[]) => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]) => tlv(0x31, Buffer.concat(items));
/** [n] EXPLICIT */
const explicit = (n: number, content: Buffer) => tlv(0xa0 | n, content);
const octets = (content: Buffer) => tlv(0x04, content);
const bits = (content: Buffer, unused = 0) => tlv(0x03, Buffer.concat([Buffer.of(unused), content]));

/** A non-negative INTEGER from its big-endian bytes. */
function integer(bytes: Buffer): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0 && ((bytes[start + 1] as number) & 0x80) === 0)
    start++;
  const trimmed = bytes.subarray(start);
  return tlv(0x02, ((trimmed[0] as number) & 0x80) !== 0 ? Buffer.concat([Buffer.of(0), trimmed]) : trimmed);
}

function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number) as [number, number, ...number[]];
  const out = [40 * a + b];
  for (const arc of rest) {
    const groups = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) groups.unshift(0x80 | (v & 0x7f));
    out.push(...groups);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5), to the second. */
function time(date: Date): Buffer {
  const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  const year = date.getUTCFullYear();
  return year < 2050
    ? tlv(0x17, Buffer.from(digits.slice(2), 'ascii'))
    : tlv(0x18, Buffer.from(digits, 'ascii'));
}

const ECDSA_WITH_SHA256 = sequence(oid('1.2.840.10045.4.3.2'));

function name(commonName: string): Buffer {
  return sequence(set(sequence(oid('2.5.4.3'), tlv(0x0c, Buffer.from(commonName, 'utf8')))));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return sequence(oid(id), ...(critical ? [tlv(0x01, Buffer.of(0xff))] : []), octets(value));
}

/** subjectAltName: IP addresses as [7] iPAddress, the rest as [2] dNSName. */
function altNames(names: readonly string[]): Buffer {
  return sequence(
    ...names.map((n) => {
      const family = net.isIP(n);
      if (family === 4) return tlv(0x87, Buffer.from(n.split('.').map(Number)));
      if (family === 6) return tlv(0x87, ipv6Bytes(n));
      return tlv(0x82, Buffer.from(n, 'ascii'));
    }),
  );
}

function ipv6Bytes(address: string): Buffer {
  const [head = '', tail] = address.split('::') as [string, string | undefined];
  const part = (s: string | undefined) => (s ? s.split(':') : []);
  const groups = [...part(head)];
  const end = part(tail);
  if (tail !== undefined) while (groups.length + end.length < 8) groups.push('0');
  groups.push(...end);
  const out = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) out.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  return out;
}

function pem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

export interface ServingCertificate {
  /** PEM of the certificate: what clients pin. */
  cert: string;
  /** PEM (PKCS#8) of its private key. */
  key: string;
}

export interface ServingCertificateOptions {
  commonName: string;
  /** DNS names and IP addresses the certificate names (subjectAltName). */
  altNames: readonly string[];
  /** Valid from an hour before `now` (clocks apart) for `days`. */
  days?: number;
  now?: Date;
  /** Made here when not given. */
  privateKey?: KeyObject;
}

/** A self-signed serving certificate: ECDSA P-256, SHA-256, serverAuth, the names given. */
export function selfSignedCertificate(o: ServingCertificateOptions): ServingCertificate {
  const privateKey = o.privateKey ?? generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const now = o.now ?? new Date();
  const notBefore = new Date(now.getTime() - 3_600_000);
  const notAfter = new Date(now.getTime() + (o.days ?? 3650) * 86_400_000);
  const subject = name(o.commonName);
  const tbs = sequence(
    explicit(0, integer(Buffer.of(2))), // v3
    integer(randomBytes(16)),
    ECDSA_WITH_SHA256,
    subject, // issuer: itself
    sequence(time(notBefore), time(notAfter)),
    subject,
    spki,
    explicit(
      3,
      sequence(
        // keyUsage: digitalSignature (bit 0; 7 unused bits)
        extension('2.5.29.15', true, bits(Buffer.of(0x80), 7)),
        // extKeyUsage: serverAuth
        extension('2.5.29.37', false, sequence(oid('1.3.6.1.5.5.7.3.1'))),
        ...(o.altNames.length > 0 ? [extension('2.5.29.17', false, altNames(o.altNames))] : []),
      ),
    ),
  );
  const signature = sign('sha256', tbs, { key: privateKey, dsaEncoding: 'der' });
  const der = sequence(tbs, ECDSA_WITH_SHA256, bits(signature));
  return {
    cert: pem('CERTIFICATE', der),
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}
