/**
 * The OCI runtime spec as containerd hands it to a shim: `config.json` in
 * the bundle for a task, a JSON `Process` inside the Exec request's Any for
 * an exec. Only what the shim passes on to the agent is read: the process
 * (args, env, cwd, terminal, user), the root path, the hostname, the mounts,
 * the annotations and the Linux namespaces. Pure apart from reading the file.
 */
import fs from 'node:fs';
import path from 'node:path';

export interface OciUser {
  uid: number;
  gid: number;
  additionalGids: number[];
}

export interface OciProcess {
  args: string[];
  env: string[];
  cwd: string;
  terminal: boolean;
  user: OciUser;
  consoleSize?: { height: number; width: number };
}

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

/** A `linux.namespaces` entry: a namespace the container gets new (no path) or joins (path). */
export interface OciNamespace {
  type: string;
  path: string;
}

export interface OciSpec {
  process: OciProcess;
  /** The spec's mounts, as written (the runtime picks which go to the guest: guestMounts). */
  mounts: OciMount[];
  /** root.path as written (relative paths are relative to the bundle). */
  rootPath: string;
  readonlyRoot: boolean;
  hostname: string;
  annotations: Record<string, string>;
  /** `linux.namespaces` as written (empty when the spec has none). */
  namespaces: OciNamespace[];
}

export class SpecError extends Error {
  override readonly name = 'SpecError';
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const strings = (v: unknown, what: string): string[] => {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string'))
    throw new SpecError(`${what} must be a list of strings`);
  return v;
};
const uint = (v: unknown, what: string): number => {
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffff_ffff)
    throw new SpecError(`${what} must be an unsigned 32-bit integer`);
  return v;
};

/** A runtime-spec Process object (from config.json or an Exec request). */
export function parseProcess(raw: unknown, what = 'process'): OciProcess {
  if (!isRecord(raw)) throw new SpecError(`${what} is missing or not an object`);
  const args = strings(raw.args, `${what}.args`);
  if (args.length === 0) throw new SpecError(`${what}.args must not be empty`);
  const user = isRecord(raw.user) ? raw.user : {};
  const size = isRecord(raw.consoleSize) ? raw.consoleSize : undefined;
  return {
    args,
    env: strings(raw.env, `${what}.env`),
    cwd: typeof raw.cwd === 'string' && raw.cwd !== '' ? raw.cwd : '/',
    terminal: raw.terminal === true,
    user: {
      uid: uint(user.uid, `${what}.user.uid`),
      gid: uint(user.gid, `${what}.user.gid`),
      additionalGids: Array.isArray(user.additionalGids)
        ? user.additionalGids.map((g, i) => uint(g, `${what}.user.additionalGids[${i}]`))
        : [],
    },
    ...(size
      ? { consoleSize: { height: uint(size.height, 'height'), width: uint(size.width, 'width') } }
      : {}),
  };
}

/** `config.json` text → the fields the shim uses. */
export function parseSpec(text: string): OciSpec {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new SpecError(`config.json is not valid JSON: ${(err as Error).message}`);
  }
  if (!isRecord(raw)) throw new SpecError('config.json must hold an object');
  const root = isRecord(raw.root) ? raw.root : {};
  const annotations: Record<string, string> = {};
  if (isRecord(raw.annotations)) {
    for (const [k, v] of Object.entries(raw.annotations)) if (typeof v === 'string') annotations[k] = v;
  }
  const linux = isRecord(raw.linux) ? raw.linux : {};
  const namespaces = linux.namespaces === undefined || linux.namespaces === null ? [] : linux.namespaces;
  if (!Array.isArray(namespaces)) throw new SpecError('linux.namespaces must be a list');
  const mounts = raw.mounts === undefined || raw.mounts === null ? [] : raw.mounts;
  if (!Array.isArray(mounts)) throw new SpecError('mounts must be a list');
  return {
    process: parseProcess(raw.process),
    mounts: mounts.map((m, i) => {
      if (!isRecord(m) || typeof m.destination !== 'string' || m.destination === '')
        throw new SpecError(`mounts[${i}].destination is missing`);
      return {
        destination: m.destination,
        type: typeof m.type === 'string' ? m.type : '',
        source: typeof m.source === 'string' ? m.source : '',
        options: strings(m.options, `mounts[${i}].options`),
      };
    }),
    rootPath: typeof root.path === 'string' && root.path !== '' ? root.path : 'rootfs',
    readonlyRoot: root.readonly === true,
    hostname: typeof raw.hostname === 'string' ? raw.hostname : '',
    annotations,
    namespaces: namespaces.map((n, i) => {
      if (!isRecord(n) || typeof n.type !== 'string' || n.type === '')
        throw new SpecError(`linux.namespaces[${i}].type is missing`);
      return { type: n.type, path: typeof n.path === 'string' ? n.path : '' };
    }),
  };
}

/** Reads and parses `<bundle>/config.json`. */
export function readSpec(bundle: string): OciSpec {
  const file = path.join(bundle, 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new SpecError(`cannot read ${file}: ${(err as Error).message}`);
  }
  return parseSpec(text);
}

/** The spec's root as a host path (root.path is relative to the bundle unless absolute). */
export function rootOnHost(bundle: string, spec: OciSpec): string {
  return path.resolve(bundle, spec.rootPath);
}
