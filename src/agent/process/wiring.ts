/**
 * How a container process's stdio is wired (container-process.ts explains
 * the picture): pipes on fds 0-2 with a splice forwarder per passfd stream,
 * or a pty whose master a copy forwarder serves; a stream given as null is
 * served over RPC instead, through a Node stream on the agent's end of a
 * pipe. A wiring that fails half-way closes what it made (`abandon`).
 */
import net from 'node:net';
import {
  closeQuietly,
  dupFd,
  openPty,
  ptyEofChar,
  socketProtocolName,
} from '../../../native-bindings/index.js';
import type { SpawnOptions } from './container-process.js';
import { InputForwarder } from './input-forwarder.js';
import { OutputForwarder } from './output-forwarder.js';
import { COPY_RELAY_BUFFER, outputPumpKind } from './output-relay.js';
import { stdioPipe } from './stdio-pipe.js';

export interface Wiring {
  childStdio: [number, number, number];
  /** The child's ends (and the pty slave), closed in the agent right after spawn. */
  childEnds: number[];
  /** Everything else created so far, closed if spawning fails. */
  ours: number[];
  inputs: InputForwarder[];
  outputs: OutputForwarder[];
  stdinPipe: net.Socket | null;
  stdoutPipe: net.Socket | null;
  stderrPipe: net.Socket | null;
  master: number | null;
  ptyName: string | null;
}

export function emptyWiring(): Wiring {
  return {
    childStdio: [-1, -1, -1],
    childEnds: [],
    ours: [],
    inputs: [],
    outputs: [],
    stdinPipe: null,
    stdoutPipe: null,
    stderrPipe: null,
    master: null,
    ptyName: null,
  };
}

/** Closes whatever a failed spawn left: forwarders were never started, so their fds are in `ours`. */
export function abandon(w: Wiring): void {
  for (const fd of w.childEnds) closeQuietly(fd);
  for (const fd of w.ours) closeQuietly(fd);
  w.childEnds = [];
  w.ours = [];
  for (const s of [w.stdinPipe, w.stdoutPipe, w.stderrPipe]) s?.destroy();
}

function rpcReader(fd: number): net.Socket {
  return new net.Socket({ fd, readable: true, writable: false });
}

function rpcWriter(fd: number): net.Socket {
  const sock = new net.Socket({ fd, readable: false, writable: true });
  // EPIPE once the process has gone with input still coming: each WriteStdin
  // learns it from its write callback; unhandled, the event would end the agent.
  sock.on('error', () => {});
  return sock;
}

export function wirePipes(opts: SpawnOptions): Wiring {
  const w = emptyWiring();
  try {
    const [inR, inW] = stdioPipe();
    w.childEnds.push(inR);
    w.childStdio[0] = inR;
    if (opts.stdinFd != null) {
      w.ours.push(inW);
      w.inputs.push(new InputForwarder(opts.stdinFd, inW, 'splice'));
    } else {
      w.stdinPipe = rpcWriter(inW);
    }
    for (const [i, fd] of [
      [1, opts.stdoutFd],
      [2, opts.stderrFd],
    ] as const) {
      const [r, wr] = stdioPipe();
      w.childEnds.push(wr);
      w.childStdio[i] = wr;
      if (fd != null) {
        w.ours.push(r);
        const kind = outputPumpKind(opts.outputRelay ?? 'auto', socketProtocolName(`/proc/self/fd/${fd}`));
        w.outputs.push(new OutputForwarder(i === 1 ? 'stdout' : 'stderr', r, fd, kind, COPY_RELAY_BUFFER));
      } else if (i === 1) {
        w.stdoutPipe = rpcReader(r);
      } else {
        w.stderrPipe = rpcReader(r);
      }
    }
    return w;
  } catch (err) {
    abandon(w);
    throw err;
  }
}

export function wireTerminal(opts: SpawnOptions): Wiring {
  const w = emptyWiring();
  try {
    const pty = openPty(opts.rows !== undefined ? { rows: opts.rows, cols: opts.cols! } : undefined);
    w.master = pty.master;
    w.ours.push(pty.master);
    w.ptyName = pty.name;
    w.childEnds.push(pty.slave);
    w.childStdio = [pty.slave, pty.slave, pty.slave];
    const master = pty.master;

    // Output: a dup of the master (one fd per watcher: libuv cannot watch one fd twice).
    const outSrc = dupFd(master);
    w.ours.push(outSrc);
    let outSink = opts.stdoutFd ?? null;
    if (outSink === null) {
      const [r, wr] = stdioPipe();
      w.ours.push(wr);
      w.stdoutPipe = rpcReader(r);
      outSink = wr;
    }
    w.outputs.push(new OutputForwarder('stdout', outSrc, outSink, 'copy'));

    const inSink = dupFd(master);
    w.ours.push(inSink);
    let inSrc = opts.stdinFd ?? null;
    if (inSrc === null) {
      const [r, wr] = stdioPipe();
      w.ours.push(r);
      w.stdinPipe = rpcWriter(wr);
      inSrc = r;
    }
    w.inputs.push(
      new InputForwarder(inSrc, inSink, 'copy', {
        trailer: (last) => {
          const eof = ptyEofChar(inSink);
          if (eof === null) return null;
          // In canonical mode VEOF at the start of a line is end-of-file; after a
          // partial line it only pushes that line to the reader, so send a second.
          const atLineStart = last === null || last === 0x0a || last === 0x0d;
          return Buffer.from(atLineStart ? [eof] : [eof, eof]);
        },
      }),
    );
    return w;
  } catch (err) {
    abandon(w);
    throw err;
  }
}
