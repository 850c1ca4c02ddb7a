// How the terminal is divided: the frame is always one line shorter than the terminal, so Ink
// never takes the full-screen path (which clears the screen on every frame and flickers) and
// nothing is pushed into the scrollback.

/** Below this the table has no room; the UI says so instead of drawing. */
export const MIN_COLUMNS = 40;
export const MIN_ROWS = 8;

/** Lines above the table (info, key bar, title) and below it (the prompt line). */
const TOP_LINES = 3;
const BOTTOM_LINES = 1;

export interface ScreenLayout {
  /** Lines drawn: always below the terminal's height. */
  readonly height: number;
  readonly width: number;
  /** Table rows under the header line. */
  readonly bodyRows: number;
  /** Lines of a pane (describe, help), which takes the header line too. */
  readonly paneRows: number;
  /** Too small to draw the UI. */
  readonly tooSmall: boolean;
}

export function screenLayout(columns: number, rows: number): ScreenLayout {
  const width = Math.max(1, columns);
  const height = Math.max(1, rows - 1);
  const tooSmall = columns < MIN_COLUMNS || rows < MIN_ROWS;
  const paneRows = Math.max(0, height - TOP_LINES - BOTTOM_LINES);
  return { height, width, paneRows, bodyRows: Math.max(0, paneRows - 1), tooSmall };
}
