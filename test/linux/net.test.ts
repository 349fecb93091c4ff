/**
 * virtio-net with the guest's own driver, through a host TAP device. Runs
 * inside the real-KVM test host (busybox `ip` and `ping` in the guest, socat
 * from the guest tools initramfs for the TCP ends there; the host's TCP ends
 * are node sockets in this test).
 *
 * flintvm creates the tap (`net: [{ tap }]`); the test then gives the host
 * side 10.0.2.1/24 and brings it up, the guest takes 10.0.2.15/24 on eth0.
 * Checked: the MAC from the config, ping both ways, and a TCP transfer each
 * way with matching MD5s (host -> guest first; the guest keeps the data in
 * tmpfs and sends it back).
 *
 * Transfer size: FLINTVM_NET_TEST_MIB, default 256 (the issue asks for at
 * least 256 MiB each way). The test host emulates its single CPU with TCG
 * and the guest runs nested in it, so the guest's own syscalls and copies are
 * a large part of the time: with busybox nc (1 KiB per read and write) guest
 * -> host ran at 1.9 MiB/s. With socat's 64 KiB buffer, measured alone in the
 * x86_64 test host: 256 MiB each way, 75 s for the test (host -> guest
 * 13.0 MiB/s, guest -> host 8.7 MiB/s).
 *
 * In the arm64 test host (TCG emulating an arm64 CPU with EL2, the guest
 * nested in it) the default is 64 MiB each way: it is several times slower
 * than the x86_64 one. The guest kernel there is `Image` (imgs.kernel).
 */
import test from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { promisify } from 'node:util';
import { MicroVM, defaultGuestImages, type VmExit } from '../../lib/index.js';
import { requireKvm, skipOrFail } from '../helpers/kvm.js';
import { quietCommand } from '../helpers/guest-cmdline.js';

const run = promisify(execFile);
const ARM64 = process.arch === 'arm64';
/**
 * The arm64 test host is several times slower (the nested guest took ~100 s to reach userspace there, next to
 * other test hosts on a loaded machine): its waits are this many times longer.
 */
const SLOW = ARM64 ? 4 : 1;
/** The VM is stopped after this long (ava's own timeout is 10 minutes). */
const TIMEOUT_MS = (ARM64 ? 9.5 : 8) * 60_000;
const MIB = 1024 * 1024;
const TAP = 'fltap0';
const HOST_IP = '10.0.2.1';
const GUEST_IP = '10.0.2.15';
const GUEST_MAC = '02:fc:00:00:00:0f';
/** guest -> host: the host listens here. */
const HOST_PORT = 5001;
/** host -> guest: the guest listens here. */
const GUEST_PORT = 5002;
/** Default transfer size per architecture (see the file comment). */
const DEFAULT_MIB = ARM64 ? 64 : 256;
const SIZE_MIB = Number(process.env.FLINTVM_NET_TEST_MIB ?? DEFAULT_MIB);
/**
 * socat's buffer in the guest: one read and one write per 64 KiB. busybox nc moves 1 KiB per syscall pair,
 * and under nested TCG the guest's syscalls, not the device, then set the pace: 16 MiB guest -> host took
 * 8.0 s with nc and 1.4 s with socat -b 65536 in the same boot (x86_64 test host).
 */
const SOCAT_BUF = 65536;

/** Seconds since guest boot, from /proc/uptime, as a shell expression. */
const UPTIME = '$(cut -d" " -f1 /proc/uptime)';

const GUEST_SCRIPT = [
  'echo "mac=$(cat /sys/class/net/eth0/address)"',
  `ip addr add ${GUEST_IP}/24 dev eth0 && ip link set eth0 up || exit 2`,
  'echo NET-UP',
  // The host configures its side after start(): wait for it.
  `i=0; until ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 90 ] || { echo PING-TIMEOUT; exit 3; }; done`,
  `ping -c 3 ${HOST_IP} | grep -E "packets (transmitted|received)"`,
  'echo GUEST-PING-DONE',
  `echo "rx-start ${UPTIME}"`,
  // Straight to tmpfs, hashed afterwards: the fewest copies for the guest's (emulated) CPU, and the timing covers the network only.
  `socat -u -b ${SOCAT_BUF} TCP-LISTEN:${GUEST_PORT},reuseaddr CREATE:/tmp/blob || exit 5`,
  `echo "rx-end ${UPTIME} bytes=$(wc -c </tmp/blob)"`,
  'echo "rx-md5=$(md5sum /tmp/blob | cut -d" " -f1)"',
  `echo "tx-start ${UPTIME}"`,
  // Both ways, the way back into /dev/null: socat then waits (-t) for the host's FIN, which the host sends
  // once it has read everything. With -u it would exit with data still in the guest's send buffer, and the
  // guest powers off when this script ends.
  `socat -b ${SOCAT_BUF} -t 120 OPEN:/tmp/blob,rdonly!!OPEN:/dev/null,wronly TCP:${HOST_IP}:${HOST_PORT} || exit 4`,
  `echo "tx-end ${UPTIME}"`,
].join('\n');

/** Resolves with the console text once `re` matches it; rejects after `ms`. */
function waitForConsole(get: () => string, re: RegExp, ms: number): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const tick = setInterval(() => {
      const m = re.exec(get());
      if (m) {
        clearInterval(tick);
        resolve(m);
      } else if (Date.now() - t0 > ms) {
        clearInterval(tick);
        reject(new Error(`no ${re} on the console within ${ms} ms`));
      }
    }, 50);
  });
}

/** Connects to the guest, retrying while it does not listen yet; writes `data`, half-closes, resolves when the guest closes. */
async function sendToGuest(data: Buffer, deadline: number): Promise<number> {
  for (;;) {
    try {
      return await new Promise<number>((resolve, reject) => {
        let t0 = 0;
        // Half-open: keep the socket open for reading after our end (the guest closes it once it has everything).
        const s: Socket = createConnection({ host: GUEST_IP, port: GUEST_PORT, allowHalfOpen: true });
        s.once('connect', () => {
          t0 = performance.now();
          s.end(data);
        });
        s.on('error', reject);
        s.on('data', () => {});
        s.once('close', (hadError) => (hadError ? undefined : resolve(performance.now() - t0)));
      });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if ((code !== 'ECONNREFUSED' && code !== 'EHOSTUNREACH') || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

test.serial(`virtio-net: MAC, ping both ways, ${SIZE_MIB} MiB of TCP each way through a tap with matching MD5s`, async (t) => {
  if (!requireKvm(t)) return;
  if (!existsSync('/dev/net/tun')) return skipOrFail(t, 'no /dev/net/tun in this host (tun.ko not loaded)');
  const imgs = await defaultGuestImages({ quiet: true });
  if (!existsSync(imgs.toolsInitrd)) return skipOrFail(t, `needs the guest tools image (socat): ${imgs.toolsInitrd}; build it with guest/build.sh`);
  const data = randomBytes(SIZE_MIB * MIB);
  const md5 = createHash('md5').update(data).digest('hex');

  // guest -> host: count and hash what arrives.
  const received = createHash('md5');
  let receivedBytes = 0;
  let rxMs = 0;
  /** The guest's connections: destroyed at the end, so one the guest left open cannot keep this process alive. */
  const conns = new Set<Socket>();
  const server = createServer((s) => {
    conns.add(s);
    const t0 = performance.now();
    s.on('data', (c: Buffer) => {
      received.update(c);
      receivedBytes += c.length;
    });
    s.on('end', () => {
      rxMs = performance.now() - t0;
      s.end();
    });
  });
  await new Promise<void>((r) => server.listen(HOST_PORT, '0.0.0.0', r));

  const vm = new MicroVM({
    kernel: imgs.kernel, initrd: imgs.toolsInitrd, memoryMiB: Math.max(256, 2 * SIZE_MIB + 192),
    net: [{ tap: TAP, mac: GUEST_MAC }],
    extraCmdline: quietCommand(['sh', '-c', GUEST_SCRIPT]),
  });
  let out = '';
  vm.console.on('data', (c: Buffer) => { out += c.toString(); });
  const timer = setTimeout(() => { void vm.stop(); }, TIMEOUT_MS);
  try {
    await vm.start();
    // The tap exists once start() resolved; it is down and has no address.
    execFileSync('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', TAP]);
    execFileSync('ip', ['link', 'set', TAP, 'up']);

    await waitForConsole(() => out, /NET-UP/, SLOW * 90_000);
    const hostPing = await run('ping', ['-c', '3', '-W', '5', GUEST_IP]).then((r) => r.stdout, (e: { stdout?: string; message: string }) => e.stdout ?? e.message);
    await waitForConsole(() => out, /GUEST-PING-DONE|PING-TIMEOUT/, SLOW * 120_000);
    const txMs = await sendToGuest(data, Date.now() + SLOW * 60_000);
    const exit: VmExit = await vm.wait();

    const tail = out.slice(-3000);
    t.is(exit.reason, 'guest-exit', tail);
    t.is(exit.exitStatus, 0, tail);
    t.regex(out, new RegExp(`mac=${GUEST_MAC}`), tail);
    t.regex(hostPing, /3 packets transmitted, 3 (packets )?received/, `host ping: ${hostPing}`);
    t.regex(out, /3 packets transmitted, 3 packets received/, tail);
    t.regex(out, new RegExp(`rx-md5=${md5}`), `host -> guest: MD5 ${md5} expected\n${tail}`);
    t.regex(out, new RegExp(`bytes=${data.length}\\b`), tail);
    t.is(receivedBytes, data.length, 'guest -> host byte count');
    t.is(received.digest('hex'), md5, 'guest -> host MD5');

    const secs = (re: RegExp) => Number(re.exec(out)?.[1]);
    const guestRx = secs(/rx-end ([\d.]+)/) - secs(/rx-start ([\d.]+)/);
    const guestTx = secs(/tx-end ([\d.]+)/) - secs(/tx-start ([\d.]+)/);
    const rate = (ms: number) => (SIZE_MIB / (ms / 1000)).toFixed(1);
    t.log(`NET-THROUGHPUT ${SIZE_MIB} MiB: host->guest ${rate(txMs)} MiB/s (${(txMs / 1000).toFixed(1)} s; guest saw ${guestRx.toFixed(1)} s from listen), guest->host ${rate(rxMs)} MiB/s (${(rxMs / 1000).toFixed(1)} s; guest saw ${guestTx.toFixed(1)} s)`);
  } finally {
    clearTimeout(timer);
    if (vm.state !== 'exited') await vm.stop();
    for (const c of conns) c.destroy();
    server.close();
  }
  t.false(existsSync(`/sys/class/net/${TAP}`), 'the tap flintvm created is gone with the VM');
});

test.serial('virtio-net: a bad tap name or MAC is refused before the VM starts', async (t) => {
  if (!requireKvm(t)) return;
  const imgs = await defaultGuestImages({ quiet: true });
  await t.throwsAsync(async () => new MicroVM({ kernel: imgs.kernel, net: [{ tap: 'a-name-that-is-too-long' }] }).start(), { message: /net\[0\]\.tap/ });
  await t.throwsAsync(async () => new MicroVM({ kernel: imgs.kernel, net: [{ tap: 'fltap1', mac: 'ff:ff:ff:ff:ff:ff' }] }).start(), { message: /net\[0\]\.mac/ });
});
