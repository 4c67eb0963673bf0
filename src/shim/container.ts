/**
 * A task as the shim tracks it for containerd: a container (its bundle,
 * spec, root filesystem) with its init process and its exec processes.
 *
 * Each process (`ShimProcess`) moves CREATED → RUNNING → STOPPED, containerd's
 * task states. CREATED: the init after Create (CreateContainer done in the
 * guest, stdio passed), an exec after Exec (only recorded). RUNNING: after
 * Start. STOPPED: once its exit is known, which for a process that ran is
 * only when every byte of its output is in containerd's FIFOs (the
 * broker's `wait()`); a process killed or deleted before it started stops
 * too. `exited` settles at STOPPED, so a Wait that arrives early (even
 * before Start, as containerd's client may send it) simply waits.
 */
import type { BrokeredProcess } from '../broker/broker.js';
import { Status } from '../protocol/containerd-api.js';
import { notFound } from './errors.js';
import type { OciProcess, OciSpec } from './oci-spec.js';

export interface Stdio {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export class ShimProcess {
  status: Status = Status.CREATED;
  exitStatus = 0;
  exitedAt: Date | null = null;
  brokered: BrokeredProcess | null = null;
  /** A window size that arrived before Start (ResizePty on a created process). */
  consoleSize: { rows: number; cols: number } | undefined;
  readonly exited: Promise<void>;
  private settle!: () => void;

  constructor(
    /** The exec id; "" for the init process. */
    readonly execId: string,
    readonly spec: OciProcess,
    readonly stdio: Stdio,
  ) {
    this.exited = new Promise((resolve) => {
      this.settle = resolve;
    });
    if (spec.consoleSize?.height && spec.consoleSize.width) {
      this.consoleSize = { rows: spec.consoleSize.height, cols: spec.consoleSize.width };
    }
  }

  get isInit(): boolean {
    return this.execId === '';
  }

  /** Records the exit (once; later calls are ignored) and releases waiters. Returns false if it was already stopped. */
  markExited(status: number, at = new Date()): boolean {
    if (this.status === Status.STOPPED) return false;
    this.status = Status.STOPPED;
    this.exitStatus = status;
    this.exitedAt = at;
    this.settle();
    return true;
  }
}

export class Container {
  readonly execs = new Map<string, ShimProcess>();

  constructor(
    readonly id: string,
    readonly bundle: string,
    readonly spec: OciSpec,
    readonly init: ShimProcess,
    /** The root filesystem on the host, and whether the shim mounted it there (and must unmount it). */
    readonly rootfs: { host: string; mounted: boolean },
  ) {}

  /** The init process ("") or an exec; NotFound otherwise. */
  process(execId: string): ShimProcess {
    if (execId === '') return this.init;
    const p = this.execs.get(execId);
    if (!p) throw notFound(`process ${execId} does not exist in task ${this.id}`);
    return p;
  }
}
