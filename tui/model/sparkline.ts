// Sparklines of a replica's CPU and memory: one block character per sample, scaled to the
// largest sample shown, a space where a sample is missing (the runtime did not answer, or the
// replica was not running), so a gap never reads as zero.

const BLOCKS = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'] as const;
/** What a missing sample is drawn as. */
export const GAP = ' ';

/** The last `width` samples, oldest first; undefined is a gap. Shorter series are padded with gaps on the left. */
export function sparkline(samples: readonly (number | undefined)[], width: number): string {
  if (width <= 0) return '';
  const shown = samples.slice(-width);
  let max = 0;
  for (const v of shown) if (v !== undefined && v > max) max = v;
  let out = GAP.repeat(width - shown.length);
  for (const v of shown) {
    if (v === undefined || !Number.isFinite(v)) out += GAP;
    else if (max <= 0) out += BLOCKS[0];
    else out += BLOCKS[Math.min(BLOCKS.length - 1, Math.floor((Math.max(0, v) / max) * BLOCKS.length))];
  }
  return out;
}

/**
 * A fixed-length series of samples: `SERIES_LENGTH` of them, one per poll, the oldest dropped.
 * A poll that had no value for it adds a gap.
 */
export const SERIES_LENGTH = 60;

export function appendSample(
  series: readonly (number | undefined)[],
  value: number | undefined,
  length = SERIES_LENGTH,
): (number | undefined)[] {
  const next = series.length >= length ? series.slice(series.length - length + 1) : [...series];
  next.push(value);
  return next;
}
