/** The line to print when `version` (e.g. "20.20.2") is below `engines` (">=24.12"), else undefined. */
export function nodeVersionProblem(
  what: string,
  version: string,
  engines: string,
  execPath: string,
): string | undefined;

/** Exits with one line saying what is needed and how to get it when this Node.js is too old. */
export function requireSupportedNode(what: string): void;
