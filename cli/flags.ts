// Flag parsers for commander, one per kind of value, shared by every command: each error names
// the flag and what it expects, and where the product has a parser of that value (the runtime's
// options, Kubernetes quantities) the flag uses it rather than a second grammar.
import { isIP } from 'node:net';
import { InvalidArgumentError } from 'commander';
import { parseQuantity } from '../crds/quantity.ts';
import { DNS_SUBDOMAIN, type PortRange, parseListen, parsePortRange } from '../node-runtime/agent/options.ts';

type FlagParser<T> = (value: string) => T;

function refuse(flag: string, expected: string, value: string): never {
  throw new InvalidArgumentError(`${flag} expects ${expected}, got '${value}'`);
}

/** The product parser's TypeError (it names the flag, given as the option) as commander's error. */
function rethrown<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** A whole number from `min` to `max` (no upper bound without `max`). */
export function wholeNumberFlag(flag: string, min: number, max?: number): FlagParser<number> {
  const expected = `a whole number ${max === undefined ? `>= ${min}` : `from ${min} to ${max}`}`;
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || (max !== undefined && n > max)) refuse(flag, expected, value);
    return n;
  };
}

/** Durations like 500ms, 1s, 1.5s, 2m; a bare number is seconds. Returns milliseconds. */
export function durationFlag(flag: string): FlagParser<number> {
  return (value) => {
    const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value.trim());
    if (!match) refuse(flag, 'a duration such as 500ms, 1s or 2m', value);
    const n = Number(match[1]);
    const unit = match[2] ?? 's';
    return Math.round(unit === 'ms' ? n : unit === 's' ? n * 1000 : n * 60_000);
  };
}

/** `host:port`, `[v6]:port` or `:port` (port 0 picks a free one), as the runtime's options parse it; kept as written. */
export function listenFlag(flag: string): FlagParser<string> {
  return (value) => {
    rethrown(() => parseListen(value, flag));
    return value;
  };
}

/** `MIN-MAX`, as the runtime's options parse it. */
export function portRangeFlag(flag: string): FlagParser<PortRange> {
  return (value) => rethrown(() => parsePortRange(value, flag));
}

/** A non-negative Kubernetes quantity (crds/quantity.ts); kept as written. */
export function quantityFlag(flag: string): FlagParser<string> {
  return (value) => {
    let n: number;
    try {
      n = parseQuantity(value);
    } catch {
      refuse(flag, 'a quantity such as 2, 1500m or 8Gi', value);
    }
    if (n < 0) refuse(flag, 'a quantity such as 2, 1500m or 8Gi', value);
    return value;
  };
}

export function addressFlag(flag: string): FlagParser<string> {
  return (value) => {
    if (isIP(value) === 0) refuse(flag, 'an IPv4 or IPv6 address', value);
    return value;
  };
}

/** An object name, such as a Host's. */
export function dnsSubdomainFlag(flag: string): FlagParser<string> {
  return (value) => {
    if (!DNS_SUBDOMAIN.test(value)) {
      refuse(flag, "a DNS-1123 subdomain (lower-case letters, digits, '-' and '.')", value);
    }
    return value;
  };
}

/** `key=value`, repeatable: each adds to the map. */
export function labelFlag(
  flag: string,
): (value: string, previous?: Record<string, string>) => Record<string, string> {
  return (value, previous = {}) => {
    const eq = value.indexOf('=');
    if (eq <= 0) refuse(flag, 'key=value', value);
    return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
  };
}
