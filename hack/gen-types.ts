// `npm run gen`: builds the installable CRDs (crds/*.yaml) and the TypeScript types
// (crds/types.ts) from the schema sources in crds/src/. Both outputs are committed;
// test/unit/generated-drift.test.ts fails when they are stale.
//
// crds/src/<kind>.yaml are CRDs whose schemas may say `$include: <fragment>.yaml` to reuse a
// fragment (the replica template is shared by Instance and Replica); sibling keys of `$include`
// override the fragment's own (a different description, say).
//
// `$copyOf: <fragment>.yaml` is for a field that holds a verbatim copy of an object validated
// elsewhere (Replica.spec.template, copied by the operator from its validated, defaulted
// Instance): the installable schema keeps it as one opaque, atomic value
// (x-kubernetes-preserve-unknown-fields, x-kubernetes-map-type: atomic), so the API server does
// not re-default, re-validate and re-track the whole copy field by field on every write of the
// object (its status writes included); the TypeScript type is the fragment's all the same.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile, type JSONSchema } from 'json-schema-to-typescript';
import { parse, stringify } from 'yaml';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = join(root, 'crds', 'src');

export const crdSources = ['instance', 'replica', 'service', 'host', 'endpointslice'] as const;

/** Names of the TypeScript types generated for the shared fragments. */
const fragmentTypeNames: Record<string, string> = {
  'template.yaml': 'ReplicaTemplate',
  'probe.yaml': 'Probe',
  'conditions.yaml': 'Conditions',
  'resources.yaml': 'ResourceList',
};

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function readYaml(file: string): JsonObject {
  return parse(readFileSync(join(srcDir, file), 'utf8')) as JsonObject;
}

/** Replaces every `$include` by the fragment it names (recursively), siblings winning. */
function inline(node: Json): Json {
  if (Array.isArray(node)) return node.map(inline);
  if (!isObject(node)) return node;
  const out: JsonObject = {};
  const include = node.$include;
  if (typeof include === 'string') Object.assign(out, inline(readYaml(include)) as JsonObject);
  if (typeof node.$copyOf === 'string') {
    out.type = 'object';
    out['x-kubernetes-preserve-unknown-fields'] = true;
    out['x-kubernetes-map-type'] = 'atomic';
  }
  for (const [key, value] of Object.entries(node)) {
    if (key !== '$include' && key !== '$copyOf') out[key] = inline(value);
  }
  return out;
}

const schemaKeys = new Set([
  'type',
  'description',
  'properties',
  'items',
  'required',
  'enum',
  'default',
  'format',
  'pattern',
  'minimum',
  'maximum',
  'minLength',
  'maxLength',
  'minItems',
  'maxItems',
  'minProperties',
  'maxProperties',
  'additionalProperties',
  'nullable',
  'anyOf',
  'oneOf',
  'allOf',
  'not',
  'title',
]);

/**
 * Rejects keys a structural schema does not have: a YAML slip such as an unquoted comma in a flow
 * mapping (`{description: a, b}`) otherwise becomes a silent stray key.
 */
function checkSchema(node: Json, path: string): void {
  if (!isObject(node)) throw new Error(`gen-types: ${path} must be a schema object`);
  for (const [key, value] of Object.entries(node)) {
    if (!schemaKeys.has(key) && !key.startsWith('x-kubernetes-')) {
      throw new Error(
        `gen-types: unknown schema key '${key}' at ${path} (an unquoted comma or colon in YAML?)`,
      );
    }
    if (key === 'properties' && isObject(value)) {
      for (const [name, child] of Object.entries(value)) checkSchema(child, `${path}.${name}`);
    }
    if (key === 'items' || (key === 'additionalProperties' && isObject(value)))
      checkSchema(value, `${path}.${key}`);
  }
}

export interface Generated {
  /** file name under crds/ -> YAML text */
  crds: Map<string, string>;
  types: string;
  /** crds/defaults.ts: the defaults of the fragments kept opaque by `$copyOf` */
  defaults: string;
}

/**
 * The schema reduced to what carries a default (properties, items, additionalProperties and
 * default), or undefined when nothing in it has one: crds/defaulting.ts applies it.
 */
function defaultsOf(node: JsonObject): JsonObject | undefined {
  const out: JsonObject = {};
  if (node.default !== undefined) out.default = node.default;
  if (isObject(node.properties)) {
    const properties: JsonObject = {};
    for (const [name, child] of Object.entries(node.properties)) {
      const d = isObject(child) ? defaultsOf(child) : undefined;
      if (d) properties[name] = d;
    }
    if (Object.keys(properties).length > 0) out.properties = properties;
  }
  for (const key of ['items', 'additionalProperties'] as const) {
    const child = node[key];
    const d = isObject(child) ? defaultsOf(child) : undefined;
    if (d) out[key] = d;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** crds/defaults.ts: for each fragment some CRD holds as a `$copyOf`, its defaults. */
function defaultsModule(copied: Set<string>): string {
  const lines = [
    '// Generated by `npm run gen` (hack/gen-types.ts) from crds/src/. Do not edit.',
    '// The defaults of the schemas the CRDs keep opaque (`$copyOf`), for crds/defaulting.ts.',
    "import type { DefaultsSchema } from './defaulting.ts';",
  ];
  for (const file of [...copied].sort()) {
    const name = fragmentTypeNames[file] as string;
    const constName = `${name[0]?.toLowerCase()}${name.slice(1)}Defaults`;
    const schema = defaultsOf(inline(readYaml(file)) as JsonObject) ?? {};
    lines.push('', `/** Defaults of ${name} (crds/src/${file}). */`);
    lines.push(`export const ${constName}: DefaultsSchema = ${JSON.stringify(schema, null, 2)};`);
  }
  return `${lines.join('\n')}\n`;
}

function copiedFragments(node: Json, into: Set<string>): Set<string> {
  if (Array.isArray(node)) for (const v of node) copiedFragments(v, into);
  else if (isObject(node)) {
    if (typeof node.$copyOf === 'string') into.add(node.$copyOf);
    for (const v of Object.values(node)) copiedFragments(v, into);
  }
  return into;
}

const crdHeader = '# Generated by `npm run gen` from crds/src/; edit those files, not this one.\n';

function crdFileName(crd: JsonObject): string {
  const metadata = crd.metadata as JsonObject;
  return `${metadata.name as string}.yaml`;
}

// ---- OpenAPI v3 (Kubernetes structural schema) -> JSON Schema for json-schema-to-typescript ----

/**
 * Converts one structural-schema node. Fields with a `default` become required: the API server
 * fills them in, so every object read back from it has them.
 */
function toJsonSchema(node: JsonObject, path: string[]): JsonObject {
  const fragment = node.$include ?? node.$copyOf;
  if (typeof fragment === 'string') {
    const name = fragmentTypeNames[fragment];
    if (!name) throw new Error(`gen-types: no type name for fragment ${fragment} at ${path.join('.')}`);
    return { $ref: `#/definitions/${name}` };
  }
  const out: JsonObject = {};
  if (node['x-kubernetes-int-or-string'] === true) {
    out.anyOf = [{ type: 'integer' }, { type: 'string' }];
  }
  for (const [key, value] of Object.entries(node)) {
    if (key.startsWith('x-kubernetes-') || key === 'default' || key === 'format') continue;
    if (key === 'properties' && isObject(value)) {
      const properties: JsonObject = {};
      const required = new Set<string>(Array.isArray(node.required) ? (node.required as string[]) : []);
      for (const [name, child] of Object.entries(value)) {
        const childNode = child as JsonObject;
        if (name === 'metadata' && path.length === 0) {
          properties[name] = { tsType: 'ObjectMeta' };
          required.add(name);
          continue;
        }
        properties[name] = toJsonSchema(childNode, [...path, name]);
        if (childNode.default !== undefined) required.add(name);
      }
      out.properties = properties;
      if (required.size > 0) out.required = [...required].sort();
      continue;
    }
    if (key === 'items' && isObject(value)) {
      out.items = toJsonSchema(value, [...path, '[]']);
      continue;
    }
    if (key === 'additionalProperties' && isObject(value)) {
      out.additionalProperties = toJsonSchema(value, [...path, '*']);
      continue;
    }
    if (key === 'required') continue;
    out[key] = value;
  }
  if (out.type === 'object' && out.additionalProperties === undefined) out.additionalProperties = false;
  return out;
}

function kindOf(crd: JsonObject): string {
  return ((crd.spec as JsonObject).names as JsonObject).kind as string;
}

function schemaOf(crd: JsonObject): JsonObject {
  const versions = (crd.spec as JsonObject).versions as JsonObject[];
  const version = versions[0] as JsonObject;
  return (version.schema as JsonObject).openAPIV3Schema as JsonObject;
}

export async function generate(): Promise<Generated> {
  const crds = new Map<string, string>();
  const definitions: JsonObject = {};
  const copied = new Set<string>();
  for (const source of crdSources) {
    const crd = readYaml(`${source}.yaml`);
    copiedFragments(crd, copied);
    const installable = inline(crd) as JsonObject;
    checkSchema(schemaOf(installable), `crds/src/${source}.yaml`);
    crds.set(crdFileName(crd), crdHeader + stringify(installable, { lineWidth: 0 }));
    const kind = kindOf(crd);
    const schema = toJsonSchema(schemaOf(crd), []);
    schema.required = ['apiVersion', 'kind', 'metadata', 'spec'];
    if (kind === 'Host') schema.required = ['apiVersion', 'kind', 'metadata'];
    if (kind === 'EndpointSlice')
      schema.required = ['apiVersion', 'kind', 'metadata', 'service', 'endpoints'];
    definitions[kind] = { ...schema, title: kind };
  }
  for (const [file, name] of Object.entries(fragmentTypeNames)) {
    definitions[name] = { ...toJsonSchema(readYaml(file), [name]), title: name };
  }
  // Named types for the nested objects a reader of the code talks about.
  nameNested(definitions, 'ReplicaTemplate', ['properties', 'processes', 'items'], 'ProcessSpec');
  nameNested(definitions, 'Conditions', ['items'], 'Condition');
  for (const kind of ['Instance', 'Replica', 'Service', 'Host']) {
    nameNested(definitions, kind, ['properties', 'spec'], `${kind}Spec`);
    nameNested(definitions, kind, ['properties', 'status'], `${kind}Status`);
  }
  nameNested(
    definitions,
    'Replica',
    ['properties', 'status', 'properties', 'processes', 'items'],
    'ProcessStatus',
  );
  nameNested(definitions, 'EndpointSlice', ['properties', 'endpoints', 'items'], 'ServiceEndpoint');

  const rootSchema = { title: 'OrreryTypes', type: 'object', additionalProperties: false, definitions };
  const body = await compile(rootSchema as unknown as JSONSchema, 'OrreryTypes', {
    bannerComment: [
      '// Generated by `npm run gen` (hack/gen-types.ts) from the CRD schemas in crds/src/. Do not edit.',
      '// Fields with a schema default are required here: the API server fills them in.',
      "import type { ObjectMeta } from '../kube/types.ts';",
    ].join('\n'),
    unreachableDefinitions: true,
    additionalProperties: false,
    strictIndexSignatures: false,
    format: true,
    style: { singleQuote: true, printWidth: 110 },
  });
  // The root container type is an artefact of compiling all definitions at once.
  const types = body.replace(/export interface OrreryTypes \{\}\n\n?/, '');
  return { crds, types, defaults: defaultsModule(copied) };
}

function nameNested(definitions: JsonObject, from: string, path: string[], title: string): void {
  let node: Json | undefined = definitions[from];
  for (const key of path) node = isObject(node) ? node[key] : undefined;
  if (!isObject(node)) throw new Error(`gen-types: no schema at ${from}.${path.join('.')} to name ${title}`);
  node.title = title;
}

export function outputPaths(generated: Generated): Map<string, string> {
  const files = new Map<string, string>();
  for (const [name, text] of generated.crds) files.set(join(root, 'crds', name), text);
  files.set(join(root, 'crds', 'types.ts'), generated.types);
  files.set(join(root, 'crds', 'defaults.ts'), generated.defaults);
  return files;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const generated = await generate();
  for (const [file, text] of outputPaths(generated)) {
    writeFileSync(file, text);
    console.log(`wrote ${file.slice(root.length + 1)}`);
  }
}
