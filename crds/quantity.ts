// Kubernetes resource quantities ("500m", "2", "128Mi", "1e3") as the runtime and scheduler need
// them: CPU in millicores, memory in bytes. The grammar mirrors k8s.io/apimachinery's
// resource.ParseQuantity; the API server has already validated the strings (CEL isQuantity),
// so a failure here is a programming error and names the value.

const binarySuffixes: Record<string, number> = {
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};
const decimalSuffixes: Record<string, number> = {
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  '': 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
};

const quantityPattern =
  /^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE]([+-]?\d+))?$/;

/** The value of a quantity as a plain number (may be fractional: "500m" -> 0.5). */
export function parseQuantity(quantity: string | number): number {
  if (typeof quantity === 'number') return quantity;
  const match = quantityPattern.exec(quantity.trim());
  if (!match)
    throw new TypeError(`expected a Kubernetes quantity such as 500m, 2 or 128Mi, got '${quantity}'`);
  const [, digits, suffix = '', exponent] = match;
  const base = Number(digits);
  if (exponent !== undefined) return base * 10 ** Number(exponent);
  return base * (binarySuffixes[suffix] ?? decimalSuffixes[suffix] ?? 1);
}

/** CPU quantity in millicores, rounded up as the kubelet does ("0.1" -> 100, "1" -> 1000). */
export function cpuMillis(quantity: string | number): number {
  return Math.ceil(parseQuantity(quantity) * 1000 - 1e-9);
}

/** Memory quantity in bytes, rounded up to a whole byte. */
export function memoryBytes(quantity: string | number): number {
  return Math.ceil(parseQuantity(quantity) - 1e-9);
}

/** Formats bytes as the largest exact binary quantity ("134217728" -> "128Mi"). */
export function formatBytes(bytes: number): string {
  for (const suffix of ['Ei', 'Pi', 'Ti', 'Gi', 'Mi', 'Ki']) {
    const unit = binarySuffixes[suffix] as number;
    if (bytes >= unit && bytes % unit === 0) return `${bytes / unit}${suffix}`;
  }
  return String(bytes);
}

/** Formats millicores as Kubernetes prints them ("2000" -> "2", "500" -> "500m"). */
export function formatCpuMillis(millis: number): string {
  return millis % 1000 === 0 ? String(millis / 1000) : `${millis}m`;
}
