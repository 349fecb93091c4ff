/** The vsock device's debug namespace. */
import { log } from '../../../lib/log.js';

export const debug = log('virtio:vsock');
