/**
 * Firecracker's REST API over a Unix socket (HTTP/1.1), served by
 * `flintvm --api-sock PATH`. The request handling ({@link FirecrackerApi.handle})
 * is separate from the socket so it can be driven directly, and the VM
 * behind it is a small {@link VmController} interface.
 *
 * As Firecracker does: a successful `PUT`/`PATCH` answers 204 No Content, a
 * `GET` answers 200 with JSON, and every error answers 400 with
 * `{ "fault_message": "..." }`; pre-boot resources answer 400 once the VM
 * was started. Resource and field names follow Firecracker's published API
 * description; the messages are flintvm's own.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { existsSync, unlinkSync } from 'node:fs';
import type { MicroVMConfig } from '../vm/config.js';
import { ConfigError } from '../errors.js';
import { SNAPSHOT_VERSION as SNAPSHOT_FORMAT_VERSION } from '../vm/snapshot.js';
import { log } from '../log.js';
import {
  emptyVmConfig, firecrackerFieldName, parseBootSource, parseDrive, parseEntropy, parseLogger, parseMachineConfig, parseNetworkInterface, parseVsock,
  toMicroVMConfig, upsertDrive, upsertNetworkInterface, UNSUPPORTED_RESOURCES, type FcLogger, type FirecrackerVmConfig,
} from './config.js';

const debug = log('firecracker:api');

/** The instance states `GET /` reports. */
export type FcInstanceState = 'Not started' | 'Running' | 'Paused';

/** What the API server needs of a VM. */
export interface VmController {
  /** The current state. 'Not started' until {@link start} resolved. */
  readonly state: FcInstanceState;
  /**
   * Builds and boots the VM. A rejection's message becomes the 400 fault_message; if the state is then
   * still 'Not started' (nothing was built), InstanceStart may be sent again.
   */
  start(config: MicroVMConfig, firecracker: Readonly<FirecrackerVmConfig>): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Sends Ctrl+Alt+Del to the guest's keyboard. Absent where the VMM cannot (the action then answers 400). */
  sendCtrlAltDel?(): Promise<void>;
  /** Writes a full snapshot of the paused VM: the state to `statePath`, guest RAM to `memoryPath`. */
  snapshot?(statePath: string, memoryPath: string): Promise<void>;
  /**
   * Instead of starting from a config: restores a snapshot (before start), running when `resume`, else
   * paused. `taps` replaces NICs' tap devices by the index of the NIC in the snapshot's config.
   */
  load?(statePath: string, memoryPath: string, resume: boolean, taps: ReadonlyMap<number, string>): Promise<void>;
}

/** Options of a {@link FirecrackerApi}. */
export interface FirecrackerApiOptions {
  /** Instance id reported by `GET /` (Firecracker's `--id`). Default `anonymous-instance`. */
  id?: string;
  /** Reported as `vmm_version` and by `GET /version`. */
  vmmVersion: string;
  /** Applies a `PUT /logger` body; a throw answers 400 with its message. */
  onLogger?: (logger: FcLogger) => void;
  /** Called for every request with its outcome (for the logger). */
  onRequest?: (method: string, path: string, status: number, fault?: string) => void;
}

/** An HTTP answer: status and JSON body (none for 204). */
export interface ApiResponse {
  status: number;
  body?: unknown;
}

/** Largest request body accepted (Firecracker's default payload limit is 51200 bytes). */
export const MAX_BODY_BYTES = 51_200;
/** How long close() waits for answers in flight. */
const CLOSE_GRACE_MS = 1000;
const HTTP_OK = 200;
const HTTP_NO_CONTENT = 204;
const HTTP_BAD_REQUEST = 400;

/** A request that fails with 400 and this fault_message. */
class Fault extends Error {}

const fault = (message: string): ApiResponse => ({ status: HTTP_BAD_REQUEST, body: { fault_message: message } });

/** The REST API of one VM: holds the pre-boot configuration and drives a {@link VmController}. */
export class FirecrackerApi {
  /** The configuration gathered so far (what `GET /vm/config` returns). */
  readonly config: FirecrackerVmConfig = emptyVmConfig();
  private starting = false;
  private server: Server | null = null;
  private socketPath: string | null = null;

  constructor(private readonly vm: VmController, private readonly options: FirecrackerApiOptions) {}

  /** True once InstanceStart was accepted (even while the VM is still booting). */
  get started(): boolean {
    return this.starting || this.vm.state !== 'Not started';
  }

  /** Replaces the pre-boot configuration (from `--config-file`) before the socket serves requests. */
  load(cfg: FirecrackerVmConfig): void {
    Object.assign(this.config, cfg);
  }

  /** Starts the VM from the gathered configuration, as `PUT /actions {"action_type": "InstanceStart"}` does. */
  async instanceStart(): Promise<void> {
    if (this.started) throw new Fault('the microVM was already started; InstanceStart can be sent once');
    if (this.config['boot-source'] === undefined) throw new Fault('cannot start the microVM without a kernel: PUT /boot-source first');
    const mc = toMicroVMConfig(this.config);
    this.starting = true;
    try {
      await this.vm.start(mc, this.config);
    } catch (e) {
      // The controller leaves nothing half-built. If no VM was created (a config error), the user may fix the
      // resources and retry; a VM that failed to boot has exited, and so does the process.
      if (this.vm.state === 'Not started') this.starting = false;
      let message = (e as Error).message;
      if (e instanceof ConfigError && message.startsWith(`${e.field}: `)) {
        message = `${firecrackerFieldName(this.config, e.field)}: ${message.slice(e.field.length + 2)}`;
      }
      throw new Fault(`InstanceStart failed: ${message}`, { cause: e });
    }
  }

  /** Handles one request; `body` is the raw request body. Never throws. */
  async handle(method: string, url: string, body: string): Promise<ApiResponse> {
    const path = url.split('?')[0]!.replace(/\/+$/, '') || '/';
    let res: ApiResponse;
    try {
      res = await this.route(method.toUpperCase(), path, body);
    } catch (e) {
      if (e instanceof Fault || e instanceof ConfigError) res = fault(e.message);
      else res = fault(`internal error: ${(e as Error).message ?? String(e)}`);
    }
    const faultMessage = (res.body as { fault_message?: string } | undefined)?.fault_message;
    debug('%s %s -> %d%s', method, path, res.status, faultMessage ? ` (${faultMessage})` : '');
    this.options.onRequest?.(method, path, res.status, faultMessage);
    return res;
  }

  private async route(method: string, path: string, raw: string): Promise<ApiResponse> {
    const parts = path.split('/').filter((p) => p.length > 0);
    const resource = parts[0] ?? '';
    const sub = parts.length > 1 ? decodeURIComponent(parts.slice(1).join('/')) : undefined;
    const key = `${method} /${resource}${sub !== undefined && ['drives', 'network-interfaces'].includes(resource) ? '/{id}' : sub !== undefined ? `/${sub}` : ''}`;
    const body = (): unknown => parseBody(raw);
    const where = `${method} ${path}`;

    switch (key) {
      case 'GET /':
        return { status: HTTP_OK, body: { id: this.options.id ?? 'anonymous-instance', state: this.vm.state, vmm_version: this.options.vmmVersion, app_name: 'Firecracker' } };
      case 'GET /version':
        return { status: HTTP_OK, body: { firecracker_version: this.options.vmmVersion } };
      case 'GET /machine-config':
        return { status: HTTP_OK, body: this.config['machine-config'] };
      case 'GET /vm/config':
        return { status: HTTP_OK, body: this.fullConfig() };
      case 'PUT /boot-source':
        this.preBoot(where);
        this.config['boot-source'] = parseBootSource(body(), where);
        return { status: HTTP_NO_CONTENT };
      case 'PUT /machine-config':
      case 'PATCH /machine-config':
        this.preBoot(where);
        this.config['machine-config'] = parseMachineConfig(body(), where, method === 'PATCH' ? this.config['machine-config'] : undefined);
        return { status: HTTP_NO_CONTENT };
      case 'PUT /drives/{id}': {
        this.preBoot(where);
        upsertDrive(this.config, parseDrive(body(), where, sub), where);
        return { status: HTTP_NO_CONTENT };
      }
      case 'PUT /network-interfaces/{id}':
        this.preBoot(where);
        upsertNetworkInterface(this.config, parseNetworkInterface(body(), where, sub), where);
        return { status: HTTP_NO_CONTENT };
      case 'PATCH /drives/{id}':
      case 'PATCH /network-interfaces/{id}':
        throw new Fault(`${where}: updating a device of a running microVM is not supported by flintvm`);
      case 'PUT /vsock':
        this.preBoot(where);
        this.config.vsock = parseVsock(body(), where);
        return { status: HTTP_NO_CONTENT };
      case 'PUT /entropy':
        this.preBoot(where);
        this.config.entropy = parseEntropy(body(), where);
        return { status: HTTP_NO_CONTENT };
      case 'PUT /logger': {
        this.preBoot(where);
        const logger = parseLogger(body(), where);
        try {
          this.options.onLogger?.(logger);
        } catch (e) {
          throw new Fault(`${where}: ${(e as Error).message}`);
        }
        this.config.logger = logger;
        return { status: HTTP_NO_CONTENT };
      }
      case 'PUT /metrics':
        throw new Fault(`${where}: ${UNSUPPORTED_RESOURCES.metrics}`);
      case 'PUT /actions':
        return this.action(body(), where);
      case 'PATCH /vm':
        return this.patchVm(body(), where);
      case 'PUT /snapshot/create':
        return this.snapshotCreate(body(), where);
      case 'PUT /snapshot/load':
        return this.snapshotLoad(body(), where);
      default:
        break;
    }
    const refused = UNSUPPORTED_RESOURCES[resource === 'mmds' ? 'mmds-config' : resource];
    if (refused !== undefined) throw new Fault(`${where}: ${refused}`);
    throw new Fault(`invalid request method and/or path: ${method} ${path}`);
  }

  private preBoot(where: string): void {
    if (this.started) throw new Fault(`${where}: this resource can only be set before the microVM starts (it was started)`);
  }

  private async action(body: unknown, where: string): Promise<ApiResponse> {
    const o = requireObject(body, where);
    for (const k of Object.keys(o)) if (k !== 'action_type') throw new Fault(`${where}.${k}: unknown field (the body is { "action_type": ... })`);
    switch (o.action_type) {
      case 'InstanceStart':
        await this.instanceStart();
        return { status: HTTP_NO_CONTENT };
      case 'SendCtrlAltDel':
        if (this.vm.state === 'Not started') throw new Fault('SendCtrlAltDel: the microVM is not running');
        if (!this.vm.sendCtrlAltDel) throw new Fault('SendCtrlAltDel is not supported by flintvm: its i8042 has no keyboard attached to inject the keys through');
        await this.vm.sendCtrlAltDel();
        return { status: HTTP_NO_CONTENT };
      case 'FlushMetrics':
        throw new Fault('FlushMetrics: metrics are not configured (Firecracker metrics are not supported by flintvm)');
      default:
        throw new Fault(`${where}.action_type: must be InstanceStart, SendCtrlAltDel or FlushMetrics, got ${JSON.stringify(o.action_type)}`);
    }
  }

  private async patchVm(body: unknown, where: string): Promise<ApiResponse> {
    const o = requireObject(body, where);
    for (const k of Object.keys(o)) if (k !== 'state') throw new Fault(`${where}.${k}: unknown field (the body is { "state": "Paused" | "Resumed" })`);
    if (o.state !== 'Paused' && o.state !== 'Resumed') throw new Fault(`${where}.state: must be "Paused" or "Resumed", got ${JSON.stringify(o.state)}`);
    const state = this.vm.state;
    if (state === 'Not started') throw new Fault(`${where}: the microVM is not running`);
    try {
      if (o.state === 'Paused' && state === 'Running') await this.vm.pause();
      else if (o.state === 'Resumed' && state === 'Paused') await this.vm.resume();
    } catch (e) {
      throw new Fault(`${where}: ${(e as Error).message}`);
    }
    return { status: HTTP_NO_CONTENT };
  }

  /** `PUT /snapshot/create`: a full snapshot of the paused microVM (Firecracker's state file + memory file). */
  private async snapshotCreate(body: unknown, where: string): Promise<ApiResponse> {
    const o = requireObject(body, where);
    const known = new Set(['snapshot_type', 'snapshot_path', 'mem_file_path', 'version']);
    for (const k of Object.keys(o)) if (!known.has(k)) throw new Fault(`${where}.${k}: unknown field (fields: ${[...known].join(', ')})`);
    if (o.snapshot_type !== undefined && o.snapshot_type !== 'Full') {
      throw new Fault(`${where}.snapshot_type: ${JSON.stringify(o.snapshot_type)} is not supported; flintvm writes "Full" snapshots (sparse: holes for untouched and zero pages)`);
    }
    if (o.version !== undefined) throw new Fault(`${where}.version: flintvm writes its own snapshot format (version ${SNAPSHOT_FORMAT_VERSION}); leave version out`);
    const statePath = requirePath(o, 'snapshot_path', where);
    const memoryPath = requirePath(o, 'mem_file_path', where);
    if (!this.vm.snapshot) throw new Fault(`${where}: this VMM cannot take snapshots`);
    if (this.vm.state !== 'Paused') throw new Fault(`${where}: the microVM must be paused first (PATCH /vm {"state": "Paused"}); it is ${this.vm.state}`);
    try {
      await this.vm.snapshot(statePath, memoryPath);
    } catch (e) {
      throw new Fault(`${where}: ${(e as Error).message}`);
    }
    return { status: HTTP_NO_CONTENT };
  }

  /** `PUT /snapshot/load`: restores a snapshot instead of booting (only before the microVM starts). */
  private async snapshotLoad(body: unknown, where: string): Promise<ApiResponse> {
    const o = requireObject(body, where);
    const known = new Set(['snapshot_path', 'mem_file_path', 'mem_backend', 'enable_diff_snapshots', 'track_dirty_pages', 'resume_vm', 'network_overrides']);
    for (const k of Object.keys(o)) if (!known.has(k)) throw new Fault(`${where}.${k}: unknown field (fields: ${[...known].join(', ')})`);
    this.preBoot(where);
    const statePath = requirePath(o, 'snapshot_path', where);
    let memoryPath: string;
    if (o.mem_backend !== undefined) {
      if (o.mem_file_path !== undefined) throw new Fault(`${where}: give mem_backend or mem_file_path, not both`);
      const b = requireObject(o.mem_backend, `${where}.mem_backend`);
      if (b.backend_type !== 'File') throw new Fault(`${where}.mem_backend.backend_type: ${JSON.stringify(b.backend_type)} is not supported; flintvm maps the memory file itself ("File")`);
      memoryPath = requirePath(b, 'backend_path', `${where}.mem_backend`);
    } else memoryPath = requirePath(o, 'mem_file_path', where);
    for (const k of ['enable_diff_snapshots', 'track_dirty_pages'] as const) {
      if (o[k] === true) throw new Fault(`${where}.${k}: dirty-page tracking (diff snapshots) is not supported by flintvm; leave it false`);
    }
    if (o.resume_vm !== undefined && typeof o.resume_vm !== 'boolean') throw new Fault(`${where}.resume_vm: must be true or false`);
    const taps = new Map<number, string>();
    if (o.network_overrides !== undefined) {
      if (!Array.isArray(o.network_overrides)) throw new Fault(`${where}.network_overrides: must be an array of { iface_id, host_dev_name }`);
      o.network_overrides.forEach((n, i) => {
        const at = `${where}.network_overrides[${i}]`;
        const r = requireObject(n, at);
        const id = requirePath(r, 'iface_id', at);
        // flintvm's snapshots keep NICs by position; Firecracker clients name them by iface_id, which flintvm numbers eth0, eth1...
        const m = /^(?:eth|net)?(\d+)$/.exec(id);
        if (!m) throw new Fault(`${at}.iface_id: ${JSON.stringify(id)}: flintvm restores NICs by position; name them eth0, eth1, ... (or 0, 1, ...)`);
        taps.set(Number(m[1]), requirePath(r, 'host_dev_name', at));
      });
    }
    if (!this.vm.load) throw new Fault(`${where}: this VMM cannot load snapshots`);
    this.starting = true;
    try {
      await this.vm.load(statePath, memoryPath, o.resume_vm === true, taps);
    } catch (e) {
      if (this.vm.state === 'Not started') this.starting = false;
      throw new Fault(`${where}: ${(e as Error).message}`);
    }
    return { status: HTTP_NO_CONTENT };
  }

  private fullConfig(): Record<string, unknown> {
    const c = this.config;
    return {
      'boot-source': c['boot-source'] ?? null, drives: c.drives, 'machine-config': c['machine-config'], balloon: null,
      'network-interfaces': c['network-interfaces'], vsock: c.vsock ?? null, logger: c.logger ?? null, metrics: null,
      'mmds-config': null, entropy: c.entropy ?? null,
    };
  }

  /**
   * Serves the API on a Unix socket at `path`. Fails if something exists there (remove a stale socket first,
   * as with Firecracker). The socket file is removed by {@link close}.
   */
  async listen(path: string): Promise<void> {
    if (existsSync(path)) throw new ConfigError('--api-sock', `${path} already exists; remove it (or choose another path)`, path);
    // node:http is loaded when an API server starts, not by every `flintvm` command (2-3 ms of a cold start).
    const { createServer } = createRequire(import.meta.url)('node:http') as typeof import('node:http');
    const server = createServer((req, res) => this.serve(req, res));
    server.keepAliveTimeout = 0;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(new ConfigError('--api-sock', `cannot listen on ${path}: ${e.code ?? e.message}`, path, e)));
      server.listen(path, () => resolve());
    });
    this.server = server;
    this.socketPath = path;
  }

  /** Stops serving and removes the socket file. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server) {
      // Let an answer in flight (say, to the InstanceStart whose VM then failed) reach the client first.
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      await closed;
      clearTimeout(timer);
    }
    if (this.socketPath) {
      try { unlinkSync(this.socketPath); } catch { /* already gone */ }
      this.socketPath = null;
    }
  }

  private serve(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) tooBig = true;
      else chunks.push(c);
    });
    req.on('end', () => {
      const answer = tooBig
        ? Promise.resolve(fault(`request body larger than ${MAX_BODY_BYTES} bytes`))
        : this.handle(req.method ?? 'GET', req.url ?? '/', Buffer.concat(chunks).toString('utf8'));
      void answer.then((r) => {
        if (r.body === undefined) {
          res.writeHead(r.status).end();
        } else {
          const text = JSON.stringify(r.body);
          res.writeHead(r.status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) }).end(text);
        }
      });
    });
  }
}

function parseBody(raw: string): unknown {
  if (raw.trim().length === 0) throw new Fault('the request needs a JSON body');
  try {
    return JSON.parse(raw) as unknown;
  } catch (e) {
    throw new Fault(`the body is not valid JSON: ${(e as Error).message}`);
  }
}

/** A non-empty string field (a path or a name). */
function requirePath(o: Record<string, unknown>, key: string, where: string): string {
  const v = o[key];
  if (typeof v !== 'string' || v.length === 0) throw new Fault(`${where}.${key}: required, a non-empty string`);
  return v;
}

function requireObject(v: unknown, where: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Fault(`${where}: the body must be a JSON object`);
  return v as Record<string, unknown>;
}
