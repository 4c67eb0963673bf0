/**
 * The Task service's Stats answer: the agent's StatsContainer reply (Kata's
 * `CgroupStats`, CPU in nanoseconds) as containerd's cgroup v2 `Metrics`
 * (CPU in microseconds), packed as containerd's typeurl packs it (type URL
 * `io.containerd.cgroups.v2.Metrics`), which `ctr task metrics` prints and
 * the CRI plugin turns into container stats. Pure: no I/O.
 *
 * What the figures mean (summed over the container's processes, no cgroup
 * behind them) is said in src/agent/container-stats.ts.
 */
import { create } from '@bufbuild/protobuf';
import type { Any } from '@bufbuild/protobuf/wkt';
import { packTypeurl } from '../protocol/containerd-api.js';
import type { StatsContainerResponse } from '../protocol/gen/agent_pb.js';
import { MetricsSchema } from '../protocol/gen/containerd/cgroups/v2/metrics_pb.js';

export const CGROUP_V2_METRICS_TYPE_URL = MetricsSchema.typeName;

export function metricsFromAgent(r: StatsContainerResponse): Any {
  const s = r.cgroupStats;
  const cpu = s?.cpuStats?.cpuUsage;
  const mem = s?.memoryStats;
  const usec = (ns: bigint | undefined) => (ns ?? 0n) / 1000n;
  const metrics = create(MetricsSchema, {
    pids: { current: s?.pidsStats?.current ?? 0n, limit: s?.pidsStats?.limit ?? 0n },
    cpu: {
      usageUsec: usec(cpu?.totalUsage),
      userUsec: usec(cpu?.usageInUsermode),
      systemUsec: usec(cpu?.usageInKernelmode),
    },
    memory: {
      usage: mem?.usage?.usage ?? 0n,
      usageLimit: mem?.usage?.limit ?? 0n,
      anon: mem?.stats.anon ?? 0n,
      file: mem?.stats.file ?? mem?.cache ?? 0n,
    },
  });
  return packTypeurl(MetricsSchema, metrics);
}
