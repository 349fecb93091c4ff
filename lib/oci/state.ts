/**
 * The runtime's state directory: `<root>/<id>/` per container, with
 * `state.json` (the OCI state plus what the runtime needs), `ctl.sock` (the
 * container's holder process listens there), `vsock.sock` (the VM's hybrid
 * vsock) and `files/` (copies of bind-mounted host files). It lives on disk,
 * so any later `flintvm-oci` process (or a restarted one) finds it.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { OciError } from './bundle.js';

export const DEFAULT_ROOT = '/run/flintvm-oci';

export type OciStatus = 'creating' | 'created' | 'running' | 'stopped';

/** `state.json`: the OCI state fields, then the runtime's own. */
export interface ContainerState {
  ociVersion: string;
  id: string;
  status: OciStatus;
  /** The holder process (what --pid-file names): it stands for the container on the host. 0 once stopped. */
  pid: number;
  bundle: string;
  annotations: Record<string, string>;
  created: string;
  /** Set once stopped: how the container's process ended. */
  exit?: { code: number | null; signal: number | null };
}

const ID = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$/;

/** Checks a container id (it names a directory). */
export function checkId(id: string | undefined): string {
  if (!id) throw new OciError('missing the container ID (the last argument)');
  if (!ID.test(id)) throw new OciError(`container ID ${JSON.stringify(id)} is not valid: use letters, digits, '_', '.', '+', '-' (at most 128)`);
  return id;
}

export const containerDir = (root: string, id: string) => join(root, id);
export const controlSocket = (root: string, id: string) => join(root, id, 'ctl.sock');
export const vsockSocket = (root: string, id: string) => join(root, id, 'vsock.sock');

/** Reads a container's state; an unknown id is an OciError naming it. The status is corrected when the holder is gone. */
export function readState(root: string, id: string): ContainerState {
  let s: ContainerState;
  try {
    s = JSON.parse(readFileSync(join(containerDir(root, id), 'state.json'), 'utf8')) as ContainerState;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new OciError(`container ${id} does not exist (under --root ${root})`);
    throw new OciError(`container ${id}: unreadable state.json: ${(e as Error).message}`);
  }
  if (s.status !== 'stopped' && s.pid > 0 && !alive(s.pid)) return { ...s, status: 'stopped', pid: 0 };
  return s;
}

/** Writes state.json atomically (rename over the old one). */
export function writeState(root: string, s: ContainerState): void {
  const dir = containerDir(root, s.id);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.state.${process.pid}.json`);
  writeFileSync(tmp, `${JSON.stringify(s, null, 2)}\n`);
  renameSync(tmp, join(dir, 'state.json'));
}

/** The OCI state as `flintvm-oci state` prints it. */
export function ociState(s: ContainerState): Record<string, unknown> {
  return { ociVersion: s.ociVersion, id: s.id, status: s.status === 'creating' ? 'creating' : s.status, pid: s.pid, bundle: s.bundle, annotations: s.annotations };
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
