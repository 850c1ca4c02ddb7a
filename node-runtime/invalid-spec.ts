/**
 * A replica spec, or the Replica object it is built from, that cannot be run as it is. The message
 * names the field and what was expected. The host agent reports it as phase Failed, reason
 * InvalidSpec; any other error while starting a replica is a fault of ours or of the host, not of
 * the spec, and is reported as such. A TypeError, as callers of the engine already expect for a
 * bad argument.
 */
export class InvalidSpecError extends TypeError {
  override name = 'InvalidSpecError';
}
