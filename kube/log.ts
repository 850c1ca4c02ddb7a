import { type Logger, pino } from 'pino';

export type { Logger };

/** Default for library code when the caller passes no logger: the component that owns the process decides where logs go. */
export const silentLogger: Logger = pino({ level: 'silent' });
