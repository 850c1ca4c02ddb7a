/**
 * A fast 53-bit string hash for the consistent-hash ring: two 32-bit multiplicative lanes
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
