/**
 * Structural-schema defaulting, as the API server does it, for the one field the API server
 * does not default: Replica.spec.template, kept opaque in the Replica CRD (see `$copyOf` in
 * hack/gen-types.ts). The operator copies an Instance's template, which the API server has
 * already defaulted; a Replica written another way (by hand, by an older operator) gets the same
 * defaults here, from the same schema (crds/defaults.ts is generated from crds/src/).
 */

/** The part of a structural schema that defaulting needs. */
export interface DefaultsSchema {
  default?: unknown;
  properties?: Record<string, DefaultsSchema>;
  items?: DefaultsSchema;
  additionalProperties?: DefaultsSchema;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * A copy of `value` with every absent field that has a default set to it, at every depth, in the
 * API server's order: an object's missing properties first, then each property (defaults
 * included) recursively. Values of the wrong shape are left as they are, for validation to name.
 */
export function withDefaults<T>(schema: DefaultsSchema, value: unknown): T {
  if (Array.isArray(value)) {
    return (schema.items ? value.map((v) => withDefaults(schema.items as DefaultsSchema, v)) : value) as T;
  }
  if (!isPlainObject(value)) return value as T;
  const out: Record<string, unknown> = { ...value };
  for (const [name, child] of Object.entries(schema.properties ?? {})) {
    if (out[name] === undefined && child.default !== undefined) out[name] = structuredClone(child.default);
    if (out[name] !== undefined) out[name] = withDefaults(child, out[name]);
  }
  if (schema.additionalProperties) {
    for (const [name, v] of Object.entries(out)) {
      if (!schema.properties?.[name]) out[name] = withDefaults(schema.additionalProperties, v);
    }
  }
  return out as T;
}
