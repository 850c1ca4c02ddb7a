/**
 * The one rule for a process name, shared by the Instance CRD (crds/src/template.yaml, whose CEL
 * rule spells the same pattern; test/unit/process-name.test.ts holds them equal) and the runtime
 * (node-runtime/supervisor/spec.ts): a DNS label. It names the process's log file and its
 * ORRERY_PORT_<NAME> variables, so neither '.' nor '_' is allowed.
 */
export const PROCESS_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
export const PROCESS_NAME_MAX_LENGTH = 63;

export function isProcessName(name: string): boolean {
  return name.length <= PROCESS_NAME_MAX_LENGTH && PROCESS_NAME.test(name);
}
