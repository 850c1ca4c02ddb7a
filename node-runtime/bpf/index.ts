// The kernel fast path (README.md): load sock_lb.bpf.o through orrery-bpf-load, which pins its
// programs and maps in bpffs; attach the programs to a cgroup v2 directory; write the service
// map; detach and unpin. Everything after the load is the addon's raw bpf(2) calls, so a restarted
// runtime takes over what the pins hold without loading again.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmdirSync, statfsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { packagePath } from '../../platform/package.ts';
import {
  type BpfAttachType,
  bpfMapDelete,
  bpfMapInfo,
  bpfMapKeys,
  bpfMapLookup,
  bpfMapUpdate,
  bpfObjGet,
  bpfProgAttach,
  bpfProgDetach,
  bpfProgFdById,
  bpfProgInfo,
  bpfProgQuery,
  closeBpfFd,
} from '../native/bpf.ts';
import {
  COUNTERS,
  decodeCgroupId,
  decodePortKey,
  decodeServiceKey,
  decodeServiceValue,
  encodeCgroupId,
  encodeIndex,
  encodePortKey,
  encodeServiceKey,
  encodeServiceValue,
  type KernelEndpoint,
  PORT_KEY_SIZE,
  PORT_OWNER_SIZE,
  possibleCpus,
  SERVICE_KEY_SIZE,
  SERVICE_VALUE_SIZE,
  sumPerCpu,
} from './service-map.ts';

export { type KernelEndpoint, MAX_KERNEL_ENDPOINTS } from './service-map.ts';

const buildDir = packagePath('node-runtime', 'bpf', 'build');
export const BPF_OBJECT = join(buildDir, 'sock_lb.bpf.o');
export const BPF_LOADER = join(buildDir, 'orrery-bpf-load');
/** bpffs, where the runtime pins: `<BPFFS>/<cgroup parent>` (`orrery/<host>` by default). */
export const BPFFS = '/sys/fs/bpf';

const CGROUP2_SUPER_MAGIC = 0x63677270;

/** The programs of sock_lb.bpf.o, by their pin name, and the hook each goes on. */
const PROGRAMS: readonly { name: string; type: BpfAttachType }[] = [
  { name: 'orrery_connect4', type: 'connect4' },
  { name: 'orrery_getpeername4', type: 'getpeername4' },
  { name: 'orrery_connect6', type: 'connect6' },
  { name: 'orrery_getpeername6', type: 'getpeername6' },
  { name: 'orrery_bind4', type: 'bind4' },
  { name: 'orrery_bind6', type: 'bind6' },
];
const MAPS = ['orrery_svc', 'orrery_revnat', 'orrery_counters', 'orrery_ports'] as const;

/**
 * Why the fast path cannot run here for programs attached at `cgroupDir`, or undefined: not
 * built (no clang or libbpf at install), not root, or `cgroupDir` not in a cgroup v2 tree. A
 * kernel without BPF or CAP_BPF shows up as the load's error instead.
 */
export function fastPathUnavailable(cgroupDir: string): string | undefined {
  if (!existsSync(BPF_OBJECT) || !existsSync(BPF_LOADER)) {
    return `not built (${BPF_OBJECT} is missing: clang or libbpf-dev was missing at install)`;
  }
  if (process.geteuid?.() !== 0) return 'loading BPF programs needs root (CAP_BPF and CAP_NET_ADMIN)';
  try {
    if (statfsSync(cgroupDir).type !== CGROUP2_SUPER_MAGIC) return `${cgroupDir} is not in a cgroup v2 tree`;
  } catch (error) {
    return `${cgroupDir}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`;
  }
  return undefined;
}

/**
 * Loads the programs and maps and pins them in `pinDir` (mounting bpffs at /sys/fs/bpf when
 * needed), unless they are pinned there already: then they are taken over as they are, maps
 * included. Returns whether it loaded.
 */
export function loadSocketLb(pinDir: string): boolean {
  if ([...PROGRAMS.map((p) => p.name), ...MAPS].every((name) => existsSync(join(pinDir, name)))) return false;
  if (existsSync(pinDir)) {
    // A partial pin (a loader killed halfway): cleared first, or the load cannot pin there.
    try {
      unpinSocketLb(pinDir);
    } catch (error) {
      throw new Error(`${pinDir} holds a partial pin that cannot be cleared: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
  try {
    execFileSync(BPF_LOADER, [BPF_OBJECT, pinDir], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  } catch (error) {
    const stderr = String((error as { stderr?: unknown }).stderr ?? '').trim();
    throw new Error(`loading the kernel fast path failed: ${stderr.split('\n').at(-1) || String(error)}`, {
      cause: error,
    });
  }
  return true;
}

/** Removes the pins (the programs and maps are freed once nothing else holds them). */
export function unpinSocketLb(pinDir: string): void {
  if (!existsSync(pinDir)) return;
  for (const name of readdirSync(pinDir)) unlinkSync(join(pinDir, name));
  rmdirSync(pinDir);
}

/** The pinned programs and maps, open: attach them, write services, read counters. */
export class SocketLb {
  readonly pinDir: string;
  readonly #progs: { fd: number; id: number; name: string; type: BpfAttachType }[] = [];
  readonly #maps = new Map<(typeof MAPS)[number], number>();
  readonly #cpus: number;
  #closed = false;

  constructor(pinDir: string) {
    this.pinDir = pinDir;
    try {
      for (const { name, type } of PROGRAMS) {
        const fd = bpfObjGet(join(pinDir, name));
        this.#progs.push({ fd, id: bpfProgInfo(fd).id, name, type });
      }
      for (const name of MAPS) this.#maps.set(name, bpfObjGet(join(pinDir, name)));
      const svc = bpfMapInfo(this.#map('orrery_svc'));
      if (svc.keySize !== SERVICE_KEY_SIZE || svc.valueSize !== SERVICE_VALUE_SIZE) {
        throw new Error(
          `${join(pinDir, 'orrery_svc')} has ${svc.keySize}-byte keys and ${svc.valueSize}-byte values, expected ${SERVICE_KEY_SIZE} and ${SERVICE_VALUE_SIZE} (pinned by another version: unpin it)`,
        );
      }
    } catch (error) {
      this.close();
      throw error;
    }
    this.#cpus = possibleCpus(readFileSync('/sys/devices/system/cpu/possible', 'utf8'));
  }

  #map(name: (typeof MAPS)[number]): number {
    if (this.#closed) throw new Error(`the kernel fast path at ${this.pinDir} is closed`);
    return this.#maps.get(name) as number;
  }

  /** Program ids, for `bpfProgExists` once unpinned. */
  get programIds(): number[] {
    return this.#progs.map((p) => p.id);
  }

  /**
   * Attaches each program to `cgroupDir` unless it is attached there already (a restart takes
   * over), then detaches other programs of the same name there: an earlier load's, whose pins
   * were replaced (another version of the programs, a partial pin). The new one is attached
   * first, so no connect goes unbalanced meanwhile; a connect the old one rewrote is left alone by
   * the new one, which finds no entry for the endpoint's address.
   */
  attach(cgroupDir: string): void {
    for (const prog of this.#progs) {
      const attached = bpfProgQuery(cgroupDir, prog.type);
      if (!attached.includes(prog.id)) bpfProgAttach(cgroupDir, prog.fd, prog.type);
      for (const id of attached) {
        if (id === prog.id) continue;
        const fd = bpfProgFdById(id);
        if (fd === undefined) continue;
        try {
          if (bpfProgInfo(fd).name === prog.name.slice(0, 15)) bpfProgDetach(cgroupDir, fd, prog.type);
        } finally {
          closeBpfFd(fd);
        }
      }
    }
  }

  /** Whether every program is attached to `cgroupDir` itself. */
  attachedTo(cgroupDir: string): boolean {
    return this.#progs.every((prog) => bpfProgQuery(cgroupDir, prog.type).includes(prog.id));
  }

  /** Detaches each program from `cgroupDir`; ones not attached there are skipped. */
  detach(cgroupDir: string): void {
    for (const prog of this.#progs) bpfProgDetach(cgroupDir, prog.fd, prog.type);
  }

  /**
   * Sets the endpoints of `vip:port`, replacing the whole entry in one update: a connect sees the
   * old list or the new one. An empty list (or only weight 0) refuses connects (ECONNREFUSED).
   */
  setService(vip: string, port: number, endpoints: readonly KernelEndpoint[]): void {
    bpfMapUpdate(this.#map('orrery_svc'), encodeServiceKey(vip, port), encodeServiceValue(endpoints));
  }

  /** Removes `vip:port`: connects to it go where they are addressed again (the proxy). */
  deleteService(vip: string, port: number): boolean {
    return bpfMapDelete(this.#map('orrery_svc'), encodeServiceKey(vip, port));
  }

  /** The endpoints of `vip:port` as the kernel has them, or undefined. */
  service(vip: string, port: number): KernelEndpoint[] | undefined {
    const value = Buffer.alloc(SERVICE_VALUE_SIZE);
    if (!bpfMapLookup(this.#map('orrery_svc'), encodeServiceKey(vip, port), value)) return undefined;
    return decodeServiceValue(value);
  }

  /** Every VIP:port with an entry (what a previous runtime left, when taking over). */
  servicePorts(): { vip: string; port: number }[] {
    const fd = this.#map('orrery_svc');
    return bpfMapKeys(fd, SERVICE_KEY_SIZE, bpfMapInfo(fd).maxEntries).map(decodeServiceKey);
  }

  /**
   * Gives `port` to the processes of the cgroup whose id is `cgroupId` (a replica's cgroup v2
   * directory's inode number): another replica's bind(2) of it is refused (EPERM).
   */
  setPortOwner(port: number, cgroupId: bigint): void {
    bpfMapUpdate(this.#map('orrery_ports'), encodePortKey(port), encodeCgroupId(cgroupId));
  }

  /** Frees `port` for any bind again. */
  deletePortOwner(port: number): boolean {
    return bpfMapDelete(this.#map('orrery_ports'), encodePortKey(port));
  }

  /** The cgroup id that owns `port`, or undefined. */
  portOwner(port: number): bigint | undefined {
    const value = Buffer.alloc(PORT_OWNER_SIZE);
    return bpfMapLookup(this.#map('orrery_ports'), encodePortKey(port), value)
      ? decodeCgroupId(value)
      : undefined;
  }

  /** Every port with an owner, and the owner's cgroup id. */
  portOwners(): Map<number, bigint> {
    const fd = this.#map('orrery_ports');
    const owners = new Map<number, bigint>();
    for (const key of bpfMapKeys(fd, PORT_KEY_SIZE, bpfMapInfo(fd).maxEntries)) {
      const port = decodePortKey(key);
      const owner = this.portOwner(port);
      if (owner !== undefined) owners.set(port, owner);
    }
    return owners;
  }

  /** Connects rewritten and refused (no endpoint), and binds refused, since the load, over all CPUs. */
  counters(): { rewritten: number; refused: number; bindRefused: number } {
    const read = (index: number): number => {
      const value = Buffer.alloc(8 * this.#cpus);
      bpfMapLookup(this.#map('orrery_counters'), encodeIndex(index), value);
      return sumPerCpu(value);
    };
    return {
      rewritten: read(COUNTERS.rewritten),
      refused: read(COUNTERS.refused),
      bindRefused: read(COUNTERS.bindRefused),
    };
  }

  /** Per-program run count and time (counted while bpf stats are enabled). */
  programStats(): { type: BpfAttachType; runCnt: number; runTimeNs: number }[] {
    return this.#progs.map((p) => {
      const { runCnt, runTimeNs } = bpfProgInfo(p.fd);
      return { type: p.type, runCnt, runTimeNs };
    });
  }

  /** Closes the fds; the pins and attachments stay. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const p of this.#progs) closeBpfFd(p.fd);
    for (const fd of this.#maps.values()) closeBpfFd(fd);
  }
}
