// The docs stand on their own: no tracked file points outside the repository for its design,
// every "docs/DESIGN.md §N" names a section that exists, and relative markdown links (with their
// #anchors) lead somewhere.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import test from 'ava';
import { packageRoot } from '../../platform/package.ts';

const DESIGN = 'docs/DESIGN.md';

/** Tracked files that exist in the working tree, as paths relative to the repository root. */
function trackedFiles(): string[] {
  const out = execFileSync('git', ['ls-files', '-z'], { cwd: packageRoot, encoding: 'utf8' });
  return out
    .split('\0')
    .filter((path) => path !== '' && existsSync(join(packageRoot, path)))
    .filter((path) => statSync(join(packageRoot, path)).isFile());
}

function read(path: string): string {
  return readFileSync(join(packageRoot, path), 'utf8');
}

/** Markdown without fenced code blocks, which hold examples rather than links or headings. */
function withoutFences(markdown: string): string {
  return markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '');
}

/** Anchors of a markdown file's headings, as GitHub makes them (lower case, punctuation dropped, spaces to '-'). */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const [, text = ''] of withoutFences(markdown).matchAll(/^#{1,6}[ \t]+(.+?)[ \t#]*$/gm)) {
    const plain = text.replace(/\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/[`*_]/g, (c) => (c === '_' ? c : ''));
    const slug = plain
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    result.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return result;
}

/** Section numbers of docs/DESIGN.md: "## 4. Operator" gives 4, "### 4.2 Instance controller" 4.2. */
function designSections(): Set<string> {
  const sections = new Set<string>();
  for (const [, number = ''] of withoutFences(read(DESIGN)).matchAll(/^#{2,3} (\d+(?:\.\d+)*)\.? /gm)) {
    sections.add(number);
  }
  return sections;
}

test('no tracked file cites the private design brief or style notes', (t) => {
  // Built from parts, so this file does not match itself.
  const outside = ['..', 'shared', ''].join('/');
  const style = ['STYLE', 'md'].join('.');
  const briefCitation = new RegExp(['\\bDESIGN', '§\\d'].join(' '));
  const offenders: string[] = [];
  for (const path of trackedFiles()) {
    if (path === 'package-lock.json') continue;
    const text = read(path);
    if (text.includes(outside)) offenders.push(`${path}: mentions ${outside}`);
    if (text.includes(style)) offenders.push(`${path}: mentions ${style}`);
    if (briefCitation.test(text)) offenders.push(`${path}: cites "DESIGN §N"; write "${DESIGN} §N"`);
  }
  t.deepEqual(offenders, []);
});

test(`every "${DESIGN} §N" names a section of ${DESIGN}`, (t) => {
  t.true(existsSync(join(packageRoot, DESIGN)), `${DESIGN} is missing`);
  const sections = designSections();
  t.true(sections.size >= 10, `${DESIGN} has numbered sections ("## 1. ...")`);
  const missing: string[] = [];
  for (const path of trackedFiles()) {
    if (path === 'package-lock.json') continue;
    const text = read(path);
    for (const [, number = ''] of text.matchAll(/DESIGN\.md §(\d+(?:\.\d+)*)/g)) {
      if (!sections.has(number)) missing.push(`${path}: §${number}`);
    }
  }
  // Inside the design itself a bare "§N" is a cross-reference.
  for (const [, number = ''] of read(DESIGN).matchAll(/§(\d+(?:\.\d+)*)/g)) {
    if (!sections.has(number)) missing.push(`${DESIGN}: §${number}`);
  }
  t.deepEqual(missing, [], `sections that exist: ${[...sections].join(', ')}`);
});

test('relative links in markdown files lead to files and headings that exist', (t) => {
  const broken: string[] = [];
  const markdown = trackedFiles().filter((path) => path.endsWith('.md'));
  if (existsSync(join(packageRoot, DESIGN)) && !markdown.includes(DESIGN)) markdown.push(DESIGN);
  for (const path of markdown) {
    const text = withoutFences(read(path));
    for (const [, target = ''] of text.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:
      const hash = target.indexOf('#');
      const file = hash < 0 ? target : target.slice(0, hash);
      const anchor = hash < 0 ? '' : decodeURIComponent(target.slice(hash + 1));
      const resolved = file === '' ? join(packageRoot, path) : join(packageRoot, dirname(path), file);
      const shown = relative(packageRoot, resolved) || '.';
      if (!existsSync(resolved)) {
        broken.push(`${path}: ${target} (no ${shown})`);
        continue;
      }
      if (anchor !== '' && resolved.endsWith('.md') && !anchors(readFileSync(resolved, 'utf8')).has(anchor)) {
        broken.push(`${path}: ${target} (no heading #${anchor} in ${shown})`);
      }
    }
  }
  t.deepEqual(broken, []);
});
