import createDebug from 'debug';

/** A `debug` logger under the `flintvm:` prefix, one namespace per module (e.g. `log('vcpu')`). */
export function log(namespace: string): createDebug.Debugger {
  return createDebug(`flintvm:${namespace}`);
}
