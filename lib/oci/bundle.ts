/**
 * An OCI bundle (runtime-spec 1.0.x-1.2.x): `config.json` read, checked field
 * by field and turned into what flintvm runs: the VM's size, the container
 * process for the guest agent, the rootfs and the mounts.
 *
 * The VM is the isolation boundary, so the `linux` section (namespaces,
 * cgroups, seccomp, devices, masked and read-only paths) is accepted and
 * ignored; hooks are refused, since they would run on the host. Everything
 * a bundle gets wrong is an {@link OciError} that names the field.
 */
import { readFileSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { RLIMIT_RESOURCES, type Rlimit } from '../agent/protocol.js';

/** A bad bundle or a bad command line: the message names the field (or flag) and what to do. */
export class OciError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OciError';
  }
}

/** The annotations that size the VM, and their defaults. */
export const ANNOTATION_MEMORY = 'io.flintvm.memory_mib';
export const ANNOTATION_VCPUS = 'io.flintvm.vcpus';
/** A tap device in the host's network namespace for the VM's virtio-net (made by flintvm when missing). */
export const ANNOTATION_NET_TAP = 'io.flintvm.net.tap';
/** The guest's eth0 address, IPv4 CIDR (`10.0.2.15/24`); the interface is only brought up without it. */
export const ANNOTATION_NET_ADDRESS = 'io.flintvm.net.address';
/** The guest's default route, IPv4. */
export const ANNOTATION_NET_GATEWAY = 'io.flintvm.net.gateway';
/** The guest NIC's MAC (`02:xx:...`); default: flintvm's. */
export const ANNOTATION_NET_MAC = 'io.flintvm.net.mac';
export const DEFAULT_MEMORY_MIB = 256;
export const DEFAULT_VCPUS = 1;
const MAX_VCPUS = 32;

/** The runtime-spec versions this runtime reads. */
const OCI_VERSION = /^1\.[0-2]\.\d+(?:-[0-9A-Za-z.-]+)?$/;

/** One entry of `mounts`, as the bundle gives it. */
export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

/** A checked bundle. */
export interface OciBundle {
  /** The bundle directory, absolute. */
  dir: string;
  ociVersion: string;
  process: {
    args: string[];
    env: string[];
    cwd: string;
    terminal: boolean;
    uid: number;
    gid: number;
    additionalGids: number[];
    rlimits: Rlimit[];
  };
  /** The rootfs on the host, absolute; it reaches the guest through virtio-fs. */
  root: { path: string; readonly: boolean };
  hostname: string | undefined;
  mounts: OciMount[];
  annotations: Record<string, string>;
  memoryMiB: number;
  vcpus: number;
  /** The VM's network, from the io.flintvm.net.* annotations; none without io.flintvm.net.tap. */
  net?: { tap: string; mac?: string; address?: string; gateway?: string };
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function field<T>(obj: Json, key: string, at: string, check: (v: unknown, name: string) => T, fallback?: T): T {
  const name = at ? `${at}.${key}` : key;
  if (obj[key] === undefined) {
    if (fallback !== undefined) return fallback;
    throw new OciError(`config.json: ${name} is missing`);
  }
  return check(obj[key], name);
}

const str = (v: unknown, name: string): string => {
  if (typeof v !== 'string') throw new OciError(`config.json: ${name} must be a string, got ${JSON.stringify(v)}`);
  return v;
};
const strings = (v: unknown, name: string): string[] => {
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new OciError(`config.json: ${name} must be an array of strings`);
  return v as string[];
};
const u32 = (v: unknown, name: string): number => {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffff_ffff) {
    throw new OciError(`config.json: ${name} must be an integer from 0 to 4294967295, got ${JSON.stringify(v)}`);
  }
  return v;
};
const bool = (v: unknown, name: string): boolean => {
  if (typeof v !== 'boolean') throw new OciError(`config.json: ${name} must be true or false, got ${JSON.stringify(v)}`);
  return v;
};
const absPath = (v: unknown, name: string): string => {
  const s = str(v, name);
  if (!s.startsWith('/')) throw new OciError(`config.json: ${name} must be an absolute path, got ${JSON.stringify(s)}`);
  return s;
};

/** Reads and checks `<dir>/config.json`. */
export function loadBundle(bundleDir: string): OciBundle {
  const dir = resolve(bundleDir);
  const file = join(dir, 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new OciError(`--bundle ${bundleDir}: cannot read config.json (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): give the bundle directory that holds config.json`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new OciError(`${file}: invalid JSON: ${(e as Error).message}`);
  }
  return parseBundle(json, dir);
}

/** Checks a parsed config.json; `dir` (absolute) resolves a relative `root.path`. */
export function parseBundle(json: unknown, dir: string): OciBundle {
  if (!isObject(json)) throw new OciError('config.json: the top level must be a JSON object');
  const ociVersion = field(json, 'ociVersion', '', str);
  if (!OCI_VERSION.test(ociVersion)) throw new OciError(`config.json: ociVersion ${JSON.stringify(ociVersion)} is not one this runtime reads (1.0.x to 1.2.x)`);
  if (json.hooks !== undefined && isObject(json.hooks) && Object.values(json.hooks).some((h) => Array.isArray(h) && h.length > 0)) {
    throw new OciError('config.json: hooks are not supported (they would run on the host, outside the VM): remove them');
  }

  const p = field(json, 'process', '', (v, n) => { if (!isObject(v)) throw new OciError(`config.json: ${n} must be an object`); return v; });
  const args = field(p, 'args', 'process', strings);
  if (args.length === 0) throw new OciError('config.json: process.args must name a program (it is empty)');
  const env = field(p, 'env', 'process', strings, []);
  env.forEach((e, i) => { if (!e.includes('=')) throw new OciError(`config.json: process.env[${i}] must be KEY=VALUE, got ${JSON.stringify(e)}`); });
  const user = field(p, 'user', 'process', (v, n) => { if (!isObject(v)) throw new OciError(`config.json: ${n} must be an object`); return v; }, {});
  const additionalGids = field(user, 'additionalGids', 'process.user', (v, n) => {
    if (!Array.isArray(v)) throw new OciError(`config.json: ${n} must be an array`);
    return v.map((g, i) => u32(g, `${n}[${i}]`));
  }, []);
  const rlimits = field(p, 'rlimits', 'process', (v, n) => {
    if (!Array.isArray(v)) throw new OciError(`config.json: ${n} must be an array`);
    return v.map((r, i): Rlimit => {
      const at = `${n}[${i}]`;
      if (!isObject(r)) throw new OciError(`config.json: ${at} must be an object`);
      const type = field(r, 'type', at, str);
      if (RLIMIT_RESOURCES[type] === undefined) throw new OciError(`config.json: ${at}.type ${JSON.stringify(type)} is not a Linux rlimit (RLIMIT_NOFILE, RLIMIT_NPROC, ...)`);
      const lim = (x: unknown, name: string) => {
        if (typeof x !== 'number' || !Number.isInteger(x) || x < 0) throw new OciError(`config.json: ${name} must be a non-negative integer`);
        return x;
      };
      return { resource: type, soft: field(r, 'soft', at, lim), hard: field(r, 'hard', at, lim) };
    });
  }, []);

  const root = field(json, 'root', '', (v, n) => { if (!isObject(v)) throw new OciError(`config.json: ${n} must be an object`); return v; });
  const rootPath = field(root, 'path', 'root', str);
  const rootAbs = isAbsolute(rootPath) ? rootPath : join(dir, rootPath);
  if (!statSync(rootAbs, { throwIfNoEntry: false })?.isDirectory()) {
    throw new OciError(`config.json: root.path ${JSON.stringify(rootPath)} is not a directory (looked at ${rootAbs}): unpack the image's rootfs there`);
  }

  const mounts = field(json, 'mounts', '', (v, n) => {
    if (!Array.isArray(v)) throw new OciError(`config.json: ${n} must be an array`);
    return v.map((m, i): OciMount => {
      const at = `${n}[${i}]`;
      if (!isObject(m)) throw new OciError(`config.json: ${at} must be an object`);
      return {
        destination: field(m, 'destination', at, absPath),
        type: field(m, 'type', at, str, ''),
        source: field(m, 'source', at, str, ''),
        options: field(m, 'options', at, strings, []),
      };
    });
  }, []);

  const annotations = field(json, 'annotations', '', (v, n) => {
    if (!isObject(v) || Object.values(v).some((x) => typeof x !== 'string')) throw new OciError(`config.json: ${n} must map strings to strings`);
    return v as Record<string, string>;
  }, {});
  const intAnnotation = (key: string, def: number, min: number, max: number): number => {
    const raw = annotations[key];
    if (raw === undefined) return def;
    const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
    if (!(n >= min && n <= max)) throw new OciError(`config.json: annotations["${key}"] must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
    return n;
  };

  const net = parseNetAnnotations(annotations);

  return {
    dir,
    ociVersion,
    ...(net ? { net } : {}),
    process: {
      args,
      env,
      cwd: field(p, 'cwd', 'process', absPath, '/'),
      terminal: field(p, 'terminal', 'process', bool, false),
      uid: field(user, 'uid', 'process.user', u32, 0),
      gid: field(user, 'gid', 'process.user', u32, 0),
      additionalGids,
      rlimits,
    },
    root: { path: rootAbs, readonly: field(root, 'readonly', 'root', bool, false) },
    hostname: json.hostname === undefined ? undefined : str(json.hostname, 'hostname'),
    mounts,
    annotations,
    memoryMiB: intAnnotation(ANNOTATION_MEMORY, DEFAULT_MEMORY_MIB, 64, 1 << 20),
    vcpus: intAnnotation(ANNOTATION_VCPUS, DEFAULT_VCPUS, 1, MAX_VCPUS),
  };
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** The io.flintvm.net.* annotations: a tap name, and the guest's address, gateway and MAC. */
function parseNetAnnotations(a: Record<string, string>): OciBundle['net'] {
  const tap = a[ANNOTATION_NET_TAP];
  const bad = (key: string, what: string) => new OciError(`config.json: annotations["${key}"] must be ${what}, got ${JSON.stringify(a[key])}`);
  if (tap === undefined) {
    for (const k of [ANNOTATION_NET_ADDRESS, ANNOTATION_NET_GATEWAY, ANNOTATION_NET_MAC]) {
      if (a[k] !== undefined) throw new OciError(`config.json: annotations["${k}"] needs annotations["${ANNOTATION_NET_TAP}"] (the VM has no NIC without a tap)`);
    }
    return undefined;
  }
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(tap)) throw bad(ANNOTATION_NET_TAP, 'a network interface name (1-15 of A-Z a-z 0-9 _ . -)');
  const net: NonNullable<OciBundle['net']> = { tap };
  const address = a[ANNOTATION_NET_ADDRESS];
  if (address !== undefined) {
    const [ip, len, ...rest] = address.split('/');
    if (rest.length || !IPV4.test(ip ?? '') || !/^\d{1,2}$/.test(len ?? '') || Number(len) > 32) throw bad(ANNOTATION_NET_ADDRESS, 'an IPv4 address with its prefix length, such as 10.0.2.15/24');
    net.address = address;
  }
  const gateway = a[ANNOTATION_NET_GATEWAY];
  if (gateway !== undefined) {
    if (!IPV4.test(gateway)) throw bad(ANNOTATION_NET_GATEWAY, 'an IPv4 address, such as 10.0.2.1');
    if (address === undefined) throw new OciError(`config.json: annotations["${ANNOTATION_NET_GATEWAY}"] needs annotations["${ANNOTATION_NET_ADDRESS}"]`);
    net.gateway = gateway;
  }
  const mac = a[ANNOTATION_NET_MAC];
  if (mac !== undefined) {
    if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac)) throw bad(ANNOTATION_NET_MAC, 'a MAC address, such as 02:00:00:00:00:01');
    net.mac = mac;
  }
  return net;
}

/** Quotes a string for busybox sh. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Mount options that are the runtime's own, not the kernel's (see planMounts). */
const RUNTIME_ONLY_OPTION = /^(r?bind|r?(shared|slave|private|unbindable)|tmpcopyup|notmpcopyup|copy-symlink|r?idmap|[zZU])$/;

/** Where the guest agent mounts the container's rootfs, and the virtio-fs tags the runtime uses. */
export const GUEST_ROOTFS = '/rootfs';
export const ROOTFS_TAG = 'rootfs';
const FILES_TAG = 'ocifiles';
const GUEST_FILES = '/.ocifiles';

/** Host directories the VM shares for a bundle, and the guest script that mounts them and the OCI mounts. */
export interface GuestMountPlan {
  /** Bind-mounted host directories, each its own virtio-fs share. */
  dirShares: { tag: string; path: string; readOnly: boolean }[];
  /** Bind-mounted host files: copied into the staging directory (`files`, shared read-only as a whole). */
  fileCopies: { name: string; source: string; destination: string }[];
  /** The staging tag, when there are file copies. */
  filesTag: string;
  /** `sh -c` script for the agent's initramfs: mounts the rootfs and every mount, in order. */
  script: string;
  /** Mounts left out, with why (cgroup filesystems: the VM has its own). */
  ignored: string[];
}

/** The guest's eth0 set-up for the io.flintvm.net.* annotations (the container shares the agent's network). */
function netLines(net: OciBundle['net']): string[] {
  if (!net) return [];
  return [
    'ip link set eth0 up',
    ...(net.address ? [`ip addr add ${shQuote(net.address)} dev eth0`] : []),
    ...(net.gateway ? [`ip route add default via ${shQuote(net.gateway)}`] : []),
  ];
}

/** Plans the guest side of `b.root` and `b.mounts`. `isDir(path)` tells a bind source directory from a file. */
export function planMounts(b: OciBundle, isDir: (path: string) => boolean): GuestMountPlan {
  const lines = ['set -e', 'ip link set lo up || true', ...netLines(b.net), `mkdir -p ${GUEST_ROOTFS}`, `mount -t virtiofs ${b.root.readonly ? '-o ro ' : ''}${ROOTFS_TAG} ${GUEST_ROOTFS}`];
  const dirShares: GuestMountPlan['dirShares'] = [];
  const fileCopies: GuestMountPlan['fileCopies'] = [];
  const ignored: string[] = [];
  const target = (m: OciMount) => shQuote(GUEST_ROOTFS + m.destination);
  const mkdir = (m: OciMount) => `mkdir -p ${target(m)} 2>/dev/null || true`;
  // Options that only mount(8)'s -o takes as flags or data. Left out: bind/rbind and propagation (handled
  // apart), and what runtimes (crun, runc) take for themselves and podman passes: tmpcopyup (done below),
  // copy-symlink, idmap, and the SELinux and chown relabels z, Z and U (no SELinux here; the VM owns its files).
  const opts = (m: OciMount, extra: string[] = []) => {
    const o = [...extra, ...m.options.filter((x) => !RUNTIME_ONLY_OPTION.test(x)).map((x) => (x === 'rro' ? 'ro' : x === 'rrw' ? 'rw' : x))];
    return o.length ? `-o ${shQuote(o.join(','))} ` : '';
  };
  let filesMounted = false;
  b.mounts.forEach((m, i) => {
    const bind = m.type === 'bind' || m.options.includes('bind') || m.options.includes('rbind');
    if (bind) {
      const ro = m.options.includes('ro');
      if (isDir(m.source)) {
        const tag = `m${i}`;
        dirShares.push({ tag, path: m.source, readOnly: ro });
        lines.push(mkdir(m), `mount -t virtiofs ${ro ? '-o ro ' : ''}${tag} ${target(m)}`);
      } else {
        const name = `f${i}`;
        fileCopies.push({ name, source: m.source, destination: m.destination });
        if (!filesMounted) {
          lines.push(`mkdir -p ${GUEST_FILES}`, `mount -t virtiofs -o ro ${FILES_TAG} ${GUEST_FILES}`);
          filesMounted = true;
        }
        const dest = GUEST_ROOTFS + m.destination;
        const parent = dest.slice(0, dest.lastIndexOf('/')) || '/';
        lines.push(`mkdir -p ${shQuote(parent)} 2>/dev/null || true`, `[ -e ${shQuote(dest)} ] || touch ${shQuote(dest)} 2>/dev/null || true`,
          `mount --bind ${shQuote(`${GUEST_FILES}/${name}`)} ${shQuote(dest)}`);
      }
      return;
    }
    switch (m.type) {
      case 'proc': case 'sysfs': case 'mqueue':
        lines.push(mkdir(m), `mount -t ${m.type} ${opts(m)}${m.type} ${target(m)}`);
        return;
      case 'devpts':
        lines.push(mkdir(m), `mount -t devpts ${opts(m, ['newinstance'])}devpts ${target(m)}`);
        return;
      case 'tmpfs':
        // /dev as a tmpfs would have no device nodes in a VM (no runtime creates them here): the guest's devtmpfs.
        if (m.destination === '/dev') lines.push(mkdir(m), `mount -t devtmpfs devtmpfs ${target(m)}`);
        else if (m.options.includes('tmpcopyup')) {
          // crun's tmpcopyup: the tmpfs starts with what the image has there (podman asks it for /run and /tmp
          // on a read-only root). Mounted aside, filled, then moved over.
          lines.push(mkdir(m), `S=$(mktemp -d) && mount -t tmpfs ${opts(m)}tmpfs "$S" && cp -a ${target(m)}/. "$S"/ && mount --move "$S" ${target(m)} && rmdir "$S"`);
        } else lines.push(mkdir(m), `mount -t tmpfs ${opts(m)}tmpfs ${target(m)}`);
        return;
      case 'cgroup': case 'cgroup2':
        ignored.push(`${m.destination} (${m.type}: the VM is the resource boundary)`);
        return;
      default:
        throw new OciError(`config.json: mounts[${i}].type ${JSON.stringify(m.type)} is not supported (bind, proc, sysfs, tmpfs, devpts, mqueue, cgroup are)`);
    }
  });
  return { dirShares, fileCopies, filesTag: FILES_TAG, script: lines.join('\n'), ignored };
}
