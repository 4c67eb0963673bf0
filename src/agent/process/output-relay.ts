/**
 * How a passfd output (the process's stdout or stderr pipe → its stream
 * socket) leaves the agent: splice(2), or read(2)/write(2) through one
 * buffer.
 *
 * splice is the default and moves no byte through userspace. It has one
 * blind spot: AF_VSOCK on guest kernels before 6.5. There, splicing a pipe
 * into a socket hands the socket one pipe page at a time (vsock has no
 * `sendpage`, so each page becomes its own `sendmsg`), and virtio-vsock
 * builds one packet per `sendmsg`: whatever the pipe size or the splice
 * length, stdout leaves the guest in ≤ 4 KiB packets (traced in the VM
 * suite: 4 MiB in 48 splices became 1025 RW packets, all ≤ 4 KiB, on
 * 6.1). Each packet costs the guest a descriptor, the device a write and
 * the guest's credit accounting, so on those kernels `auto` relays vsock
 * outputs with a copy: one read of up to COPY_RELAY_BUFFER from the pipe,
 * one write into the socket, which the kernel cuts into 64 KiB packets.
 * From 6.5 on splice_to_socket passes up to 16 pages per `sendmsg` and
 * splice is kept (checked on a 6.12 guest: the same 4 MiB left in 64
 * packets of 64 KiB, and splice was as fast as the copy). The copy's buffer is reused and never inspected: bytes
 * are counted, not parsed. docs/performance/vm-data-path.md has the figures.
 */
import os from 'node:os';
import type { PumpKind } from './pump.js';

export const OUTPUT_RELAYS = ['auto', 'splice', 'copy'] as const;
/** `auto`: splice, except into AF_VSOCK on a kernel that splices it page by page. */
export type OutputRelay = (typeof OUTPUT_RELAYS)[number];

/** One read's worth for the copy relay: four 64 KiB packets, a quarter of the 1 MiB stdio pipe. */
export const COPY_RELAY_BUFFER = 256 * 1024;

/** First kernel whose splice into a socket sends several pages per sendmsg (MSG_SPLICE_PAGES). */
const BATCHED_SPLICE_KERNEL: readonly [number, number] = [6, 5];

/** Whether this kernel's splice into a socket batches pages (`release`: uname -r). */
export function spliceBatchesPages(release = os.release()): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return true; // unknown: keep splice, the zero-copy path
  const [major, minor] = [Number(m[1]), Number(m[2])];
  const [bMajor, bMinor] = BATCHED_SPLICE_KERNEL;
  return major > bMajor || (major === bMajor && minor >= bMinor);
}

/**
 * The pump for an output whose stream socket has protocol `sinkProtocol`
 * (`system.sockprotoname`, e.g. "AF_VSOCK"; pure, so the CLI can load this
 * file without the native bindings).
 */
export function outputPumpKind(
  relay: OutputRelay,
  sinkProtocol: string | null,
  release = os.release(),
): PumpKind {
  if (relay !== 'auto') return relay;
  return sinkProtocol === 'AF_VSOCK' && !spliceBatchesPages(release) ? 'copy' : 'splice';
}
