/**
 * Real Linux boots. These run inside the real-KVM test hosts (test/hosts/),
 * where /dev/kvm is kvm_amd (x86_64) or arm64 KVM with a GICv3 vgic on a
 * TCG-emulated CPU; the local nested KVM cannot boot Linux (ENVIRONMENT.md §1).
 * `npm test` runs them in both hosts. The kernels are the host arch's:
 * vmlinux and bzImage on x86_64, Image on arm64.
 */
import test from 'ava';
import { MicroVM, defaultGuestImages, guestCommandCmdline, type VmExit } from '../../lib/index.js';
import { quietCommand } from '../helpers/guest-cmdline.js';
import { requireKvm } from '../helpers/kvm.js';

const BOOT_TIMEOUT_MS = 2 * 60_000;

type KernelKind = 'vmlinux' | 'bzImage' | 'Image';
const ARM64 = process.arch === 'arm64';
const KERNELS: readonly KernelKind[] = ARM64 ? ['Image'] : ['vmlinux', 'bzImage'];
const DEFAULT_KERNEL: KernelKind = KERNELS[0]!;

/** `loud`: keep the kernel's boot log on the console (the other boots pass `quiet`; see quietCommand). */
async function runGuest(opts: { kernel: KernelKind; vcpus: number; command?: string[]; input?: string[]; pvh?: boolean; loud?: boolean }) {
  const imgs = await defaultGuestImages({ quiet: true });
  const extra = opts.loud
    ? (opts.command ? guestCommandCmdline(opts.command) : undefined)
    : (opts.command ? quietCommand(opts.command) : 'quiet');
  const vm = new MicroVM({
    kernel: opts.kernel === 'bzImage' ? imgs.bzImage : imgs.kernel, initrd: imgs.initrd, memoryMiB: 256, vcpus: opts.vcpus,
    extraCmdline: extra, bootProtocol: opts.pvh ? 'pvh' : 'linux64',
  });
  let out = '';
  const inputs = [...(opts.input ?? [])];
  vm.console.on('data', (c: Buffer) => {
    out += c.toString();
    // Interactive: answer each shell prompt once init says the shell is up. busybox
    // ash may follow its prompt with a cursor-position query (ESC [ 6 n).
    if (inputs.length && /starting a shell[\s\S]*# (\x1b\[6n)?$/.test(out)) vm.console.write(inputs.shift()!);
  });
  const t0 = performance.now();
  await vm.start();
  const timer = setTimeout(() => { void vm.stop(); }, BOOT_TIMEOUT_MS);
  const exit: VmExit = await vm.wait();
  clearTimeout(timer);
  return { exit, out, ms: performance.now() - t0 };
}

for (const kernel of KERNELS) {
  for (const vcpus of [1, 2]) {
    test.serial(`${kernel}, ${vcpus} vCPU: the default guest boots to userspace and runs a command`, async (t) => {
      if (!requireKvm(t)) return;
      // One loud boot per kernel: the whole boot log comes through the UART.
      const loud = vcpus === 1;
      const { exit, out, ms } = await runGuest({ kernel, vcpus, loud, command: ['sh', '-c', 'echo "cpus=$(grep -c ^processor /proc/cpuinfo)"; exit 7'] });
      t.log(`${kernel} ${vcpus} vCPU: start() -> exit ${ms.toFixed(0)} ms; guest init at +${((exit.timings.guestInit ?? NaN) - (exit.timings.startCalled ?? NaN)).toFixed(0)} ms`);
      t.regex(out, /flintvm guest: Linux 6\.1\.\S+/, out.slice(-2000));
      // (With `quiet`, arm64's earlycon still replays the first lines, so only the loud boot is checked.)
      if (loud) t.regex(out, /Linux version 6\.1\.\S+[\s\S]*Run \/init as init process/, out.slice(0, 2000));
      t.regex(out, new RegExp(`cpus=${vcpus}\\b`), out.slice(-2000));
      t.is(exit.reason, 'guest-exit', out.slice(-2000));
      t.is(exit.exitStatus, 7);
      t.truthy(exit.timings.guestInit, 'boot timer written by init');
    });
  }
}

if (!ARM64) {
  test.serial('vmlinux via the PVH entry point boots too', async (t) => {
    if (!requireKvm(t)) return;
    const { exit, out } = await runGuest({ kernel: 'vmlinux', vcpus: 1, pvh: true, command: ['uname', '-r'] });
    t.regex(out, /6\.1\.\S+-microvm/, out.slice(-2000));
    t.is(exit.exitStatus, 0, out.slice(-2000));
  });
}

if (ARM64) {
  test.serial('arm64: poweroff is a PSCI SYSTEM_OFF and ends the VM as a poweroff; the PL031 RTC tells the host time', async (t) => {
    if (!requireKvm(t)) return;
    const { exit, out } = await runGuest({ kernel: 'Image', vcpus: 2, command: ['sh', '-c', 'echo "rtc=$(cat /sys/class/rtc/rtc0/name) epoch=$(cat /sys/class/rtc/rtc0/since_epoch)"; poweroff -f'] });
    const hostNow = Date.now() / 1000;
    t.regex(out, /rtc=\S*pl031/, out.slice(-2000));
    const epoch = Number(/epoch=(\d+)/.exec(out)?.[1]);
    t.true(Math.abs(hostNow - epoch) < BOOT_TIMEOUT_MS / 1000, `guest RTC ${epoch} vs host ${hostNow.toFixed(0)}`);
    t.is(exit.reason, 'poweroff', out.slice(-2000));
    // The exit carries the vCPU's registers (through KVM_GET_ONE_REG): a kernel-space PC at EL1.
    t.true((exit.armRegs?.pc ?? 0n) >= 0xffff000000000000n, `pc ${exit.armRegs?.pc?.toString(16)}`);
    t.is(Number((exit.armRegs?.pstate ?? 0n) & 0xcn), 0x4, 'EL1');
  });

  test.serial('arm64: reboot is a PSCI SYSTEM_RESET and ends the VM as a reset', async (t) => {
    if (!requireKvm(t)) return;
    const { exit, out } = await runGuest({ kernel: 'Image', vcpus: 1, command: ['reboot', '-f'] });
    t.is(exit.reason, 'reset', out.slice(-2000));
  });
}

test.serial('interactive shell: console input reaches the guest and exit ends the VM (x86: reboot, arm64: PSCI poweroff)', async (t) => {
  if (!requireKvm(t)) return;
  const { exit, out } = await runGuest({ kernel: DEFAULT_KERNEL, vcpus: 1, input: ['echo sum-$((40+2))\n', 'exit\n'] });
  t.regex(out, /sum-42/, out.slice(-2000));
  t.is(exit.reason, ARM64 ? 'poweroff' : 'reset', out.slice(-2000));
});
