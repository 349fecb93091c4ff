import type { spawn as Spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { FlintvmError } from './errors.js';
import { IS_ARM64 } from './sys.js';

/** The default guest: a minimal kernel and a busybox initramfs built by guest/build.sh. */
export interface GuestImages {
  readonly dir: string;
  /** The kernel for this host's architecture: `vmlinux` on x86_64, `Image` on arm64. */
  readonly kernel: string;
  readonly vmlinux: string;
  readonly bzImage: string;
  readonly initrd: string;
  /**
   * `initrd` with a second archive appended: socat, iperf3 and setfattr/getfattr from Debian (the guest
   * architecture's packages) with their libraries (guest/tools.list); built for x86_64 and arm64. Larger
   * (a few MB vs ~1 MB); for benchmarks and tests that need those tools.
   * A `FLINTVM_GUEST_DIR` set built before it existed may lack this file.
   */
  readonly toolsInitrd: string;
  /**
   * `toolsInitrd` with a third archive appended: fio and its libraries (ceph, glusterfs, ICU: ~28 MB more, ~75 MB more
   * unpacked in the guest's RAM), for the block benchmark. A `FLINTVM_GUEST_DIR` set built before it existed
   * may lack this file.
   */
  readonly benchInitrd: string;
}

const BUILD_SCRIPT = fileURLToPath(new URL('../../guest/build.sh', import.meta.url));

function imagesIn(dir: string): GuestImages {
  return {
    dir,
    kernel: join(dir, IS_ARM64 ? 'Image' : 'vmlinux'),
    vmlinux: join(dir, 'vmlinux'),
    bzImage: join(dir, 'bzImage'),
    initrd: join(dir, 'initramfs.cpio.gz'),
    toolsInitrd: join(dir, 'initramfs-tools.cpio.gz'),
    benchInitrd: join(dir, 'initramfs-bench.cpio.gz'),
  };
}

/**
 * Returns the default guest images for this host's architecture, building them on first use (minutes; the
 * script prints its progress on stderr, which is passed through).
 * `FLINTVM_GUEST_DIR` points at a prebuilt set instead.
 */
export async function defaultGuestImages(opts: { quiet?: boolean } = {}): Promise<GuestImages> {
  const env = process.env.FLINTVM_GUEST_DIR;
  if (env) {
    const imgs = imagesIn(env);
    for (const f of [imgs.kernel, imgs.initrd]) {
      if (!existsSync(f)) throw new FlintvmError('FLINTVM_E_GUEST_IMAGES', `FLINTVM_GUEST_DIR=${env} has no ${f}; unset it or run guest/build.sh`);
    }
    return imgs;
  }
  const dir = await new Promise<string>((resolve, reject) => {
    const args = IS_ARM64 ? ['--arch', 'arm64'] : [];
    // Required here, not imported: child_process (with net and dgram) is 30 ms of an emulated host's cold start, for a build few runs do.
    const { spawn } = createRequire(import.meta.url)('node:child_process') as { spawn: typeof Spawn };
    const child = spawn('bash', [BUILD_SCRIPT, ...args], { stdio: ['ignore', 'pipe', opts.quiet ? 'ignore' : 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => {
      const last = out.trim().split('\n').pop() ?? '';
      if (code === 0 && last) resolve(last);
      else reject(new FlintvmError('FLINTVM_E_GUEST_IMAGES', `building the default guest failed (guest/build.sh exited ${code}); see its output above`));
    });
  });
  return imagesIn(dir);
}
