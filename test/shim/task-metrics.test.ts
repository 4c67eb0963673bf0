/**
 * The Stats answer (src/shim/task-metrics.ts): Kata's CgroupStats from the
 * agent become containerd's cgroup v2 Metrics, packed under the type URL
 * containerd's typeurl uses; decoded back here with the same schema.
 */
import { create, fromBinary } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { StatsContainerResponseSchema } from '../../src/protocol/gen/agent_pb.js';
import { MetricsSchema } from '../../src/protocol/gen/containerd/cgroups/v2/metrics_pb.js';
import { CGROUP_V2_METRICS_TYPE_URL, metricsFromAgent } from '../../src/shim/task-metrics.js';

describe('metricsFromAgent', () => {
  it('maps CPU nanoseconds to microseconds, memory and tasks as they are', () => {
    const any = metricsFromAgent(
      create(StatsContainerResponseSchema, {
        cgroupStats: {
          cpuStats: {
            cpuUsage: {
              totalUsage: 1_500_000_000n,
              usageInUsermode: 1_200_000_000n,
              usageInKernelmode: 300_000_000n,
            },
          },
          memoryStats: {
            cache: 4096n,
            usage: { usage: 12_288n, limit: 1n << 30n },
            stats: { anon: 8192n, file: 4096n },
          },
          pidsStats: { current: 3n },
        },
      }),
    );
    expect(any.typeUrl).toBe('io.containerd.cgroups.v2.Metrics');
    expect(CGROUP_V2_METRICS_TYPE_URL).toBe(any.typeUrl);
    const m = fromBinary(MetricsSchema, any.value);
    expect(m.cpu).toMatchObject({ usageUsec: 1_500_000n, userUsec: 1_200_000n, systemUsec: 300_000n });
    expect(m.memory).toMatchObject({ usage: 12_288n, usageLimit: 1n << 30n, anon: 8192n, file: 4096n });
    expect(m.pids).toMatchObject({ current: 3n, limit: 0n });
  });

  it('an empty reply is all zeros, not an error', () => {
    const m = fromBinary(MetricsSchema, metricsFromAgent(create(StatsContainerResponseSchema, {})).value);
    expect(m.cpu?.usageUsec).toBe(0n);
    expect(m.memory?.usage).toBe(0n);
    expect(m.pids?.current).toBe(0n);
  });
});
