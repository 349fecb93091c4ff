import type { Platform } from './platform.js';
import { x86_64Platform } from './x86_64.js';
import { arm64Platform } from './arm64.js';
import { hostArch, type HostArch } from '../../sys.js';

export type { Platform, PlatformState, VirtioSlot } from './platform.js';

/** The platform of the host this process runs on (KVM runs guests of the host's own architecture). */
export function hostPlatform(arch: HostArch = hostArch()): Platform {
  return arch === 'arm64' ? arm64Platform : x86_64Platform;
}
