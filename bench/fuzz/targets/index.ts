/** Every fuzz target, in the order `npm run fuzz` runs them. */
import type { FuzzTarget } from '../target.js';
import { bootParamsTarget } from './boot-params.js';
import { fdtTarget } from './fdt.js';
import { pl031Target, uart8250Target } from './legacy.js';
import { mmioTarget } from './mmio.js';
import { queueTarget } from './queue.js';
import { blkTarget } from './blk.js';
import { p9Target } from './p9.js';
import { fuseTarget } from './fuse.js';
import { netTarget } from './net.js';
import { vsockTarget } from './vsock.js';

export const TARGETS: readonly FuzzTarget[] = [
  queueTarget, blkTarget, netTarget, vsockTarget, p9Target, fuseTarget, mmioTarget, uart8250Target, pl031Target, fdtTarget, bootParamsTarget,
];
