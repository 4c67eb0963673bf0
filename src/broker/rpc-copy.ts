/**
 * The RPC-copy IO path, the baseline passfd replaces: the broker itself moves
 * every byte between the FIFOs and the agent, one ttrpc request per chunk, as
 * Kata's runtimes do (`WriteStdin` per chunk read from the stdin FIFO,
 * `CloseStdin` at its EOF; `ReadStdout`/`ReadStderr` with `len` = chunk size
 * until an empty response, writing each chunk into the FIFO). Chunk size is
 * `rpc_chunk_size` (32 KiB: Kata's Go runtime; runtime-rs uses 8 KiB).
 *
 * Same guarantees as passfd: stdin ends losslessly (the keeper is dropped,
 * the FIFO drains to EOF, then CloseStdin); the exit is reported after every
 * output byte was written into its FIFO (`outputDone`).
 */
import fs from 'node:fs';
import net from 'node:net';
import type { DescMessage, MessageInitShape, MessageShape } from '@bufbuild/protobuf';
import { agentMethods } from '../protocol/agent-api.js';
import type { TtrpcMethod } from '../ttrpc/common.js';
import type { Logger } from '../util/log.js';
import type { FifoPaths } from './fifo-set.js';

const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;

/** One typed call to the agent (the broker's ttrpc client). */
export type AgentCall = <I extends DescMessage, O extends DescMessage>(
  method: TtrpcMethod<I, O>,
  req: MessageInitShape<I>,
) => Promise<MessageShape<O>>;

/** What the copier needs of the process it serves, and nothing more. */
export interface RpcCopyTarget {
  call: AgentCall;
  containerId: string;
  execId: string;
  /** The FIFOs to copy; an absent one is not copied (no stderr with a terminal). */
  fifos: FifoPaths;
  /** Drops the broker's stdin keeper, so the stdin FIFO reaches EOF once drained. */
  releaseStdin(): void;
  chunkSize: number;
  log: Logger;
}

export class RpcCopy {
  private readonly sockets: net.Socket[] = [];
  private readonly outputs: Promise<void>[] = [];
  private stdinDone: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(private readonly target: RpcCopyTarget) {
    const ids = { containerId: target.containerId, execId: target.execId };
    const fifos = target.fifos;
    if (fifos.stdin) this.stdinDone = this.copyStdin(fifos.stdin, ids);
    if (fifos.stdout) this.outputs.push(this.copyOutput(fifos.stdout, 'ReadStdout', ids));
    if (fifos.stderr) this.outputs.push(this.copyOutput(fifos.stderr, 'ReadStderr', ids));
  }

  private open(path: string, flags: number): net.Socket {
    const sock = new net.Socket({
      fd: fs.openSync(path, flags | O_NONBLOCK),
      readable: flags === O_RDONLY,
      writable: flags === O_WRONLY,
    });
    // Errors end the copy loops (a destroyed socket); they are not the broker's to crash on.
    sock.on('error', () => {});
    this.sockets.push(sock);
    return sock;
  }

  /** stdin FIFO → WriteStdin per chunk; EOF → CloseStdin. */
  private async copyStdin(path: string, ids: { containerId: string; execId: string }): Promise<void> {
    const reader = this.open(path, O_RDONLY);
    try {
      for await (const chunk of reader as AsyncIterable<Buffer>) {
        for (let off = 0; off < chunk.length; off += this.target.chunkSize) {
          const data = chunk.subarray(off, off + this.target.chunkSize);
          await this.target.call(agentMethods.WriteStdin, { ...ids, data });
        }
      }
      if (!this.stopped) await this.target.call(agentMethods.CloseStdin, ids);
    } catch (err) {
      if (!this.stopped) this.target.log.warn(`rpc-copy stdin: ${(err as Error).message}`);
    }
  }

  /** ReadStdout/ReadStderr until empty data → the FIFO, with the FIFO's backpressure. */
  private async copyOutput(
    path: string,
    method: 'ReadStdout' | 'ReadStderr',
    ids: { containerId: string; execId: string },
  ): Promise<void> {
    const writer = this.open(path, O_WRONLY);
    try {
      for (;;) {
        const res = await this.target.call(agentMethods[method], { ...ids, len: this.target.chunkSize });
        if (res.data.length === 0) break;
        if (!writer.write(res.data))
          await new Promise((r) => {
            writer.once('drain', r);
            writer.once('close', r);
          });
        // EPIPE: containerd's reader is gone and so is the keeper (outputGone); stop copying.
        if (writer.destroyed) return;
      }
      await new Promise<void>((resolve) => writer.end(resolve));
    } catch (err) {
      if (!this.stopped) this.target.log.warn(`rpc-copy ${method}: ${(err as Error).message}`);
      // What was copied still reaches the reader, then EOF: it must not wait for the broker to stop.
      writer.end();
    }
  }

  /** Drops the stdin keeper; the copier sends CloseStdin once the FIFO is drained. */
  async closeStdin(): Promise<void> {
    this.target.releaseStdin();
    await this.stdinDone;
  }

  /** Resolves once every output byte has been written into its FIFO. */
  async outputDone(): Promise<void> {
    await Promise.all(this.outputs);
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.sockets) s.destroy();
  }
}
