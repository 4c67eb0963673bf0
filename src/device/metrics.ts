/**
 * A `vmm`'s metrics as one JSON document, after Firecracker's metrics file
 * (`vmm --metrics <path>`): the device's counters (packets each way by op,
 * RW bytes, calls on local ends), the loopback guest's when there is one,
 * the vhost-user rings' (kicks read, calls signalled, runs, chains) and
 * queues' (packets, bytes, drops, copies), the credit policy, and the
 * process's CPU time. `bench` takes one before and one after a transfer and
 * divides the difference by the bytes moved.
 *
 * The file is rewritten whole (a temporary file renamed over it), so a
 * reader never sees half a document; `seq` counts the writes.
 */
import type { EndpointCounters } from './counters.js';
import type { CreditPolicy } from './csm/credit.js';
import type { DeviceStats, HybridVsockDevice } from './hybrid-device.js';
import type { VsockQueueStats } from './transport/vhost-user/vsock-queues.js';

export interface RingMetrics {
  name: string;
  kicks: number;
  calls: number;
  runs: number;
  chains: number;
}

export interface VmmMetrics {
  seq: number;
  time: string;
  pid: number;
  uptimeS: number;
  /** CPU time of the whole process (every thread), seconds. */
  cpu: { userS: number; systemS: number };
  credit: CreditPolicy;
  /**
   * `held`: bytes from the guest waiting for their host fds, all
   * connections; `bufferMemory`: memory their TxBuf rings take (at most
   * `credit.bufAlloc` per connection).
   */
  device: DeviceStats & { open: number; held: number; bufferMemory: number; counters: EndpointCounters };
  /** The loopback guest stack's own counters (loopback vmm only). */
  guest?: { open: number; counters: EndpointCounters };
  vhostUser?: { sessions: number; connected: boolean; queues: VsockQueueStats | null; rings: RingMetrics[] };
}

/** What the metrics are read from. */
export interface MetricsSources {
  device: HybridVsockDevice;
  guest?: { size: number; counters: EndpointCounters };
  vhostUser?: {
    sessions: number;
    connected: boolean;
    stats: VsockQueueStats | null;
    rings(): { name: string; stats: Omit<RingMetrics, 'name'> }[];
  };
}

/** One snapshot of every counter. */
export function collectMetrics(src: MetricsSources, seq: number): VmmMetrics {
  const cpu = process.cpuUsage();
  const { device, guest, vhostUser } = src;
  const out: VmmMetrics = {
    seq,
    time: new Date().toISOString(),
    pid: process.pid,
    uptimeS: process.uptime(),
    cpu: { userS: cpu.user / 1e6, systemS: cpu.system / 1e6 },
    credit: device.endpoint.credit,
    device: {
      ...device.stats,
      open: device.endpoint.size,
      held: 0,
      bufferMemory: 0,
      counters: structuredClone(device.endpoint.counters),
    },
  };
  for (const conn of device.endpoint.connections()) {
    out.device.held += conn.buffered;
    out.device.bufferMemory += conn.bufferMemory;
  }
  if (guest) out.guest = { open: guest.size, counters: structuredClone(guest.counters) };
  if (vhostUser) {
    out.vhostUser = {
      sessions: vhostUser.sessions,
      connected: vhostUser.connected,
      queues: vhostUser.stats ? { ...vhostUser.stats } : null,
      rings: vhostUser.rings().map(({ name, stats }) => ({
        name,
        kicks: stats.kicks,
        calls: stats.calls,
        runs: stats.runs,
        chains: stats.chains,
      })),
    };
  }
  return out;
}
