import type { Platform } from './platform.js';
import { x86_64Platform } from './x86_64.js';
import { arm64Platform } from './arm64.js';

export type { Platform, VirtioSlot } from './platform.js';

/** The platform of the host this process runs on (KVM runs guests of the host's own architecture). */
export function hostPlatform(arch: string = process.arch): Platform {
  if (arch === 'x64') return x86_64Platform;
  if (arch === 'arm64') return arm64Platform;
  throw new Error(`flintvm runs on x86_64 and arm64 hosts, not ${arch}`);
}
