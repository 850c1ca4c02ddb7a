// The table: the header line, then the page of rows around the selection. Rows come laid out;
// this only draws them: the selection inverse, a row's tone as its colour, everything dimmed
// while the rows may be stale.
import { Box, Text } from 'ink';
import { createElement as h, memo, type ReactNode } from 'react';
import { fitWidth } from '../model/format.ts';
import {
  type Column,
  type ColumnLayout,
  headerCells,
  type Row,
  renderLine,
  type SortOrder,
  type Tone,
} from '../model/table.ts';

const TONE_COLOR: Record<Exclude<Tone, undefined>, string> = { error: 'red', warn: 'yellow', muted: 'gray' };

export interface TableProps {
  readonly columns: readonly Column[];
  readonly layout: ColumnLayout;
  readonly rows: readonly Row[];
  readonly sort: SortOrder;
  readonly selected: number;
  readonly offset: number;
  /** Table rows under the header. */
  readonly height: number;
  readonly width: number;
  readonly stale: boolean;
  /** Shown in the first row when there are none. */
  readonly empty: string;
}

/** A row's line as last drawn, for the layout and width it was drawn with. */
const drawnLines = new WeakMap<Row, { layout: ColumnLayout; width: number; line: string }>();

/**
 * The line of a row: made again only when the row, the layout or the width changed. A key moves
 * the selection over the same rows: their lines are the strings of the frame before.
 */
function rowLine(row: Row, columns: readonly Column[], layout: ColumnLayout, width: number): string {
  const drawn = drawnLines.get(row);
  if (drawn && drawn.layout === layout && drawn.width === width) return drawn.line;
  const line = fitWidth(` ${renderLine(row.cells, columns, layout)}`, width);
  drawnLines.set(row, { layout, width, line });
  return line;
}

/** One table row; React leaves it alone while its line and looks are the same (a key moving the selection redraws two). */
const TableRow = memo(function TableRow(props: {
  line: string;
  selected: boolean;
  color: string | undefined;
  stale: boolean;
}) {
  return h(
    Text,
    { wrap: 'truncate-end', inverse: props.selected, color: props.color, dimColor: props.stale },
    props.line,
  );
});

export function Table(props: TableProps) {
  const { columns, layout, rows, height, width } = props;
  const lines: ReactNode[] = [
    h(
      Text,
      { key: 'header', bold: true, wrap: 'truncate-end' },
      fitWidth(` ${renderLine(headerCells(columns, props.sort), columns, layout)}`, width),
    ),
  ];
  const page = rows.slice(props.offset, props.offset + height);
  page.forEach((row, n) => {
    lines.push(
      h(TableRow, {
        key: `row-${n}`,
        line: rowLine(row, columns, layout, width),
        selected: props.offset + n === props.selected,
        color: row.tone ? TONE_COLOR[row.tone] : undefined,
        stale: props.stale,
      }),
    );
  });
  if (rows.length === 0 && height > 0) {
    lines.push(
      h(Text, { key: 'empty', dimColor: true, wrap: 'truncate-end' }, fitWidth(` ${props.empty}`, width)),
    );
  }
  return h(Box, { flexDirection: 'column', height: height + 1 }, ...lines);
}

/** A pane of text lines (describe, help), scrolled to `offset`. */
export function Pane(props: {
  lines: readonly string[];
  offset: number;
  height: number;
  width: number;
  stale: boolean;
}) {
  const last = Math.max(0, props.lines.length - props.height);
  const offset = Math.min(props.offset, last);
  return h(
    Box,
    { flexDirection: 'column', height: props.height },
    ...props.lines
      .slice(offset, offset + props.height)
      .map((line, n) =>
        h(
          Text,
          { key: `l-${n}`, wrap: 'truncate-end', dimColor: props.stale },
          fitWidth(` ${line}`, props.width),
        ),
      ),
  );
}
