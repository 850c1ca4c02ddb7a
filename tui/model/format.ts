// How cells read: kubectl's durations, truncation with an ellipsis, padding to a column's width.

/**
 * kubectl's age format (k8s.io/apimachinery/pkg/util/duration.HumanDuration): `45s`, `3m20s`,
 * `25m`, `5h12m`, `30h`, `4d2h`, `200d`, `2y10d`, `9y`. Negative (clock skew) reads as `0s`.
 */
export function humanDuration(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60 * 2) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) {
    const s = seconds % 60;
    return s === 0 ? `${minutes}m` : `${minutes}m${s}s`;
  }
  if (minutes < 60 * 3) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) {
    const m = minutes % 60;
    return m === 0 ? `${hours}h` : `${hours}h${m}m`;
  }
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) {
    const h = hours % 24;
    return h === 0 ? `${Math.floor(hours / 24)}d` : `${Math.floor(hours / 24)}d${h}h`;
  }
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24)}d`;
  if (hours < 24 * 365 * 8) {
    const days = Math.floor(hours / 24) % 365;
    return days === 0 ? `${Math.floor(hours / 24 / 365)}y` : `${Math.floor(hours / 24 / 365)}y${days}d`;
  }
  return `${Math.floor(hours / 24 / 365)}y`;
}

/** Milliseconds since an RFC 3339 timestamp, or undefined when there is none. */
export function since(timestamp: string | undefined, now: number): number | undefined {
  if (!timestamp) return undefined;
  const t = Date.parse(timestamp);
  return Number.isNaN(t) ? undefined : now - t;
}

/** The age cell: kubectl's format, `<unknown>` without a timestamp, as kubectl prints it. */
export function age(timestamp: string | undefined, now: number): string {
  const ms = since(timestamp, now);
  return ms === undefined ? '<unknown>' : humanDuration(ms);
}

/**
 * How many code points `text` has: its width in cells as truncate() counts them. Without a
 * surrogate pair (every name, number and age) that is its length, found without copying it.
 */
export function codePoints(text: string): number {
  let n = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0xd800 || c > 0xdbff) continue;
    const next = text.charCodeAt(i + 1);
    // A pair is one code point; a lone surrogate counts as one, as spreading the string does.
    if (next >= 0xdc00 && next <= 0xdfff) {
      n--;
      i++;
    }
  }
  return n;
}

const CONTROL = /\p{Cc}+/gu;
const HAS_CONTROL = /\p{Cc}/u;

/**
 * Cut `text` to `width` terminal columns, the last one an ellipsis when something was cut.
 * Cells hold names, numbers and messages; control characters (a newline in an Event message)
 * become spaces so one row stays one line.
 */
export function truncate(text: string, width: number): string {
  if (width <= 0) return '';
  const flat = HAS_CONTROL.test(text) ? text.replace(CONTROL, ' ') : text;
  // Most cells fit: no copy of them, as every visible cell is fit at every frame.
  if (flat.length <= width) return flat;
  const chars = [...flat];
  if (chars.length <= width) return flat;
  return `${chars.slice(0, width - 1).join('')}…`;
}

/** `text` cut and padded to exactly `width` columns. */
export function fitWidth(text: string, width: number, align: 'left' | 'right' = 'left'): string {
  const cut = truncate(text, width);
  const pad = ' '.repeat(Math.max(0, width - codePoints(cut)));
  return align === 'right' ? pad + cut : cut + pad;
}
