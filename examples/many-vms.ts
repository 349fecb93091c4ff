/**
 * Many microVMs in one Node process: start N guests at once, each runs a
 * command, collect their outputs and exit statuses.
 *   node dist/examples/many-vms.js 4
 */
import { MicroVM, defaultGuestImages, guestCommandCmdline } from '../lib/index.js';

const n = Number(process.argv[2] ?? 4);
const guest = await defaultGuestImages();
const vms = Array.from({ length: n }, (_, i) => new MicroVM({
  kernel: guest.kernel, initrd: guest.initrd, memoryMiB: 128,
  extraCmdline: `quiet ${guestCommandCmdline(['sh', '-c', `echo "hello from VM ${i}"; exit ${i}`])}`,
}));
const outputs = vms.map((vm) => {
  let s = '';
  vm.console.on('data', (c: Buffer) => { s += c.toString(); });
  return () => s;
});
const t0 = performance.now();
await Promise.all(vms.map((vm) => vm.start()));
const exits = await Promise.all(vms.map((vm) => vm.wait()));
exits.forEach((e, i) => console.log(`VM ${i}: exit ${e.exitStatus ?? e.reason}: ${outputs[i]!().trim().split('\n').pop()}`));
console.log(`${n} VMs in ${(performance.now() - t0).toFixed(0)} ms`);
