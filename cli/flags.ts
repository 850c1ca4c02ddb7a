// Flag parsers for commander: each names the flag and what was expected (validated at the edge).
import { InvalidArgumentError } from 'commander';

export function integerFlag(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value) || n < min || n > max) {
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}, got '${value}'`);
    }
    return n;
  };
}

/** Durations like 500ms, 1s, 1.5s, 2m; a bare number is seconds. Returns milliseconds. */
export function durationFlag(value: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value.trim());
  if (!match) throw new InvalidArgumentError(`expected a duration such as 500ms, 1s or 2m, got '${value}'`);
  const n = Number(match[1]);
  const unit = match[2] ?? 's';
  return Math.round(unit === 'ms' ? n : unit === 's' ? n * 1000 : n * 60_000);
}

/** host:port with a numeric port (0 picks a free one). */
export function listenFlag(value: string): { host: string; port: number } {
  const match = /^(.*):(\d+)$/.exec(value);
  const port = Number(match?.[2]);
  if (!match?.[1] || port > 65535) {
    throw new InvalidArgumentError(
      `expected host:port such as 127.0.0.1:9090 (port 0 picks a free one), got '${value}'`,
    );
  }
  return { host: match[1].replace(/^\[(.*)\]$/, '$1'), port };
}
