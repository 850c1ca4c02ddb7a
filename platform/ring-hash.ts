/**
 * The consistent-hash ring of the `ring-hash` policy (Envoy's ketama-style ring), shared by the
 * mesh proxy's balancer and the runtime's kernel fast path, so both send a key to the same
 * endpoint. Pure.
 */

/**
 * A fast 53-bit string hash for the ring: two 32-bit multiplicative lanes
 * (Math.imul, as MurmurHash3's mixing), folded into one safe integer so the ring compares plain
 * numbers. Not cryptographic: keys are client addresses, headers or cookies, and an attacker who
 * steers its own key to one endpoint gains nothing it could not get by sending to that endpoint.
 */
export function hash53(text: string, seed = 0): number {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

/** Points on the ring per unit of weight (Envoy's minimum ring is 1,024 entries). */
const POINTS_PER_ENDPOINT = 160;

/** Endpoints on a ring: each at `POINTS_PER_ENDPOINT × weight` points hashed from its id. */
export class HashRing<E extends { id: string; weight?: number }> {
  #ring: { hash: number; endpoint: E }[] = [];

  constructor(endpoints: readonly E[] = []) {
    this.update(endpoints);
  }

  update(endpoints: readonly E[]): void {
    const ring: { hash: number; endpoint: E }[] = [];
    for (const e of endpoints) {
      const points = Math.max(1, Math.round(POINTS_PER_ENDPOINT * (e.weight ?? 1)));
      for (let i = 0; i < points; i++) ring.push({ hash: hash53(`${e.id}_${i}`), endpoint: e });
    }
    ring.sort((a, b) => a.hash - b.hash);
    this.#ring = ring;
  }

  /**
   * The endpoint of the first point at or after the key's hash, wrapping around; one in `exclude`
   * is walked past (as Envoy's ring does for hosts it skips), so only its keys move.
   */
  pick(key: string, exclude?: ReadonlySet<string>): E | undefined {
    const ring = this.#ring;
    if (ring.length === 0) return undefined;
    const h = hash53(key);
    let lo = 0;
    let hi = ring.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((ring[mid] as { hash: number }).hash < h) lo = mid + 1;
      else hi = mid;
    }
    for (let step = 0; step < ring.length; step++) {
      const e = (ring[(lo + step) % ring.length] as { endpoint: E }).endpoint;
      if (!exclude?.has(e.id)) return e;
    }
    return undefined;
  }
}
