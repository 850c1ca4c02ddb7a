// Frames made of whole lines, joined as lines instead of composed cell by cell.
//
// Ink turns the laid-out tree into text in its Output class (ink/build/output.js): at every frame
// it makes a grid of width × height cell objects, splits every written text into one object per
// character with its styles (@alcalzone/ansi-tokenize), copies them into the grid and joins the
// grid back into strings. That is what lets boxes overlap, clip and sit side by side; it is also
// ~7 MiB of garbage and most of the CPU of a 200×50 frame, whatever changed (measured with an
// allocation profile of the Replicas view's frames at 200×50: ~85 % of the bytes allocated).
// This UI never needs it: every line of its screen is one <Text> at column 0 (views/app.ts), cut
// to the width, so the frame is those lines, one below the other.
//
// So Output's get() first looks at what was written: when every write is a single line at column
// 0, no two on the same line, no clip, and no line holds what Ink would drop (a lone invisible
// character such as a zero-width joiner), the frame is the lines themselves, each after its
// Text's transforms (the colours), as Ink would apply them. Anything else (a border, a box beside
// another, a clip, a wrapped text) goes the original way, cell by cell. The two give the same
// screen, cell for cell and style for style (test/unit/tui-line-output.test.ts compares them over
// the UI's frames); only the escape codes may be spelt differently (chalk's as written, not
// re-encoded).
//
// Ink does not export Output; it is reached by its file, next to Ink's entry point. When it is not
// there or not shaped as expected (another Ink version), nothing is changed and `installed` says
// so; the UI then works as before, only slower.

interface WriteOperation {
  readonly type: 'write';
  readonly x: number;
  readonly y: number;
  readonly text: string;
  readonly transformers: readonly ((line: string, index: number) => string)[];
}

interface OutputLike {
  readonly operations: readonly ({ readonly type: string } | WriteOperation)[];
  readonly height: number;
  readonly width: number;
}

interface OutputClass {
  prototype: { get(this: OutputLike): { output: string; height: number } };
}

// Ink drops a standalone run of these (output.js); a line holding one goes the original way.
const INVISIBLE = /\p{Default_Ignorable_Code_Point}/u;
const ESC = String.fromCharCode(27);
const RESET = `${ESC}[0m`;

/**
 * The frame as lines when every write is one whole line at column 0 (see above); undefined when
 * any is not, for Ink's own composition.
 */
export function lineFrame(operations: OutputLike['operations'], height: number): string | undefined {
  const lines: string[] = new Array(height).fill('');
  const written = new Uint8Array(height);
  for (const op of operations) {
    if (op.type !== 'write') return undefined;
    const { x, y, text, transformers } = op as WriteOperation;
    if (x !== 0 || !Number.isInteger(y) || text.includes('\n')) return undefined;
    // Ink leaves out what falls outside the frame.
    if (y < 0 || y >= height) continue;
    if (written[y]) return undefined;
    written[y] = 1;
    let line = text;
    for (const transform of transformers) line = transform(line, 0);
    if (INVISIBLE.test(line)) return undefined;
    // Ink's cells end in blanks it trims; the trailing blanks of a styled line are inside its
    // closing code, and stay, as Ink keeps them.
    line = line.trimEnd();
    // Ink closes every style at the end of each line. The Texts' own codes are closed already
    // (chalk's); a code that came with the text itself may not be, and must not run on into the
    // lines below.
    lines[y] = line.includes(ESC) ? line + RESET : line;
  }
  return lines.join('\n');
}

let enabled = true;
let state: 'installed' | string = 'not tried';
/** Frames joined as lines, and frames left to Ink, since the start. */
export const lineOutputCounts = { lines: 0, ink: 0 };

/** Whether the line path is in Ink's Output, or why not. */
export function lineOutputState(): string {
  return state;
}

/** Turns the line path off and on (the tests compare the two). */
export function setLineOutput(on: boolean): void {
  enabled = on;
}

async function install(): Promise<void> {
  let Output: OutputClass | undefined;
  try {
    const entry = import.meta.resolve('ink');
    Output = ((await import(new URL('./output.js', entry).href)) as { default?: OutputClass }).default;
  } catch (err) {
    state = `Ink's output.js not found: ${(err as Error).message}`;
    return;
  }
  const original = Output?.prototype?.get;
  if (typeof original !== 'function') {
    state = "Ink's Output has no get()";
    return;
  }
  (Output as OutputClass).prototype.get = function get(this: OutputLike) {
    if (enabled && Array.isArray(this.operations) && Number.isInteger(this.height)) {
      const output = lineFrame(this.operations, this.height);
      if (output !== undefined) {
        lineOutputCounts.lines++;
        return { output, height: this.height };
      }
    }
    lineOutputCounts.ink++;
    return original.call(this);
  };
  state = 'installed';
}

await install();
