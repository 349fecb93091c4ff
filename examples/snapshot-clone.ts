/**
 * Snapshot, restore and clones: boot a guest once, let it warm up, snapshot
 * it, then start N copies from the snapshot. Each copy continues where the
 * original was (no boot) and shares the memory file's unchanged pages.
 *   node dist/examples/snapshot-clone.js [N=4] [DIR=/tmp/flintvm-snapshot]
 */
import { MicroVM, defaultGuestImages, guestCommandCmdline } from '../lib/index.js';

const n = Number(process.argv[2] ?? 4);
const dir = process.argv[3] ?? '/tmp/flintvm-snapshot';
const guest = await defaultGuestImages();

// A guest whose "warm state" is a counter in RAM; each line typed on its console is echoed back.
const loop = 'i=0; while :; do i=$((i+1)); if read -t 1 v; then echo "$v (my count: $i)"; fi; done';
const vm = new MicroVM({ kernel: guest.kernel, initrd: guest.initrd, memoryMiB: 256, extraCmdline: `quiet ${guestCommandCmdline(['sh', '-c', loop])}` });
await vm.start();
await new Promise((r) => setTimeout(r, 3000)); // let it boot and count

const info = await vm.snapshot(dir); // pauses, writes dir/memory + dir/state.json, resumes
console.log(`snapshot: ${info.ms.toFixed(0)} ms, ${(info.memoryWritten / 2 ** 20).toFixed(1)} MiB written of ${info.memoryBytes / 2 ** 20} MiB`);
await vm.stop();

const t0 = performance.now();
const clones = await Promise.all(Array.from({ length: n }, () => MicroVM.restore(dir)));
console.log(`${n} clones running in ${(performance.now() - t0).toFixed(0)} ms`);
await Promise.all(clones.map((c, i) => new Promise<void>((resolve) => {
  c.console.on('data', (d: Buffer) => { if (d.toString().includes('my count')) { process.stdout.write(`clone ${i}: ${d.toString().trim()}\n`); resolve(); } });
  c.console.write(`hello clone ${i}\n`);
})));
await Promise.all(clones.map((c) => c.stop()));

// In-process shortcut, no files: vm.clone() (the original keeps running).
