// The logger a process of Orrery's logs with: pino's JSON lines on stdout, named after the
// component, at the level ORRERY_LOG_LEVEL says (info by default).
import { type Logger, pino } from 'pino';

export interface NewLoggerOptions {
  /**
   * Write each line with a synchronous write(2) to stdout, so a line is out when it is logged
   * (node-runtime/agent/start.ts says why the runtime wants that). Default: pino's own
   * destination, which writes asynchronously.
   */
  sync?: boolean;
}

export function newLogger(name: string, options: NewLoggerOptions = {}): Logger {
  const settings = { name, level: process.env.ORRERY_LOG_LEVEL ?? 'info' };
  return options.sync ? pino(settings, pino.destination({ dest: 1, sync: true })) : pino(settings);
}
