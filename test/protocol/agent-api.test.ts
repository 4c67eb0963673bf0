import { create, equals, fromBinary, toBinary } from '@bufbuild/protobuf';
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  AGENT_SERVICE_NAME,
  type AgentRequest,
  type AgentResponse,
  AgentService,
  agentMethods,
  agentMethodsByPath,
  CloseStdinRequestSchema,
  CreateContainerRequestSchema,
  EmptySchema,
  type ExecProcessRequest,
  ExecProcessRequestSchema,
  findAgentMethod,
  ProcessSchema,
  ReadStreamRequestSchema,
  ReadStreamResponseSchema,
  SignalProcessRequestSchema,
  SpecSchema,
  StatsContainerResponseSchema,
  TtyWinResizeRequestSchema,
  WaitProcessRequestSchema,
  type WaitProcessResponse,
  WaitProcessResponseSchema,
  WriteStreamRequestSchema,
  WriteStreamResponseSchema,
} from '../../src/protocol/agent-api.js';

const hex = (u: Uint8Array) => Buffer.from(u).toString('hex');

describe('agent.proto field numbers (pinned against Kata agent.proto)', () => {
  it('ExecProcessRequest: 1 container_id, 2 exec_id, 4 process, 5/6/7 stdin/stdout/stderr_port', () => {
    const msg = create(ExecProcessRequestSchema, {
      containerId: 'c',
      execId: 'e',
      process: { Terminal: true, Args: ['sh'] },
      stdinPort: 1,
      stdoutPort: 2,
      stderrPort: 2 ** 30,
    });
    expect(hex(toBinary(ExecProcessRequestSchema, msg))).toBe(
      '0a0163' + // 1: "c"
        '120165' + // 2: "e"
        '2206' + // 4: Process, 6 bytes
        '0801' + //   Process.Terminal=1: true
        '22027368' + //   Process.Args=4: "sh"
        '2801' + // 5: stdin_port varint (tag 0x28)
        '3002' + // 6: stdout_port varint (tag 0x30)
        '388080808004', // 7: stderr_port varint 2^30 (tag 0x38)
    );
  });

  it('ExecProcessRequest: string_user is field 3 with StringUser{uid=1,gid=2,additionalGids=3}', () => {
    const msg = create(ExecProcessRequestSchema, {
      stringUser: { uid: 'u', gid: 'g', additionalGids: ['x'] },
    });
    expect(hex(toBinary(ExecProcessRequestSchema, msg))).toBe('1a09' + '0a0175' + '120167' + '1a0178');
  });

  it('StatsContainerResponse: 1 cgroup_stats{1 cpu_stats{1 cpu_usage{1 total_usage}}, 3 pids_stats{1 current}}', () => {
    const msg = create(StatsContainerResponseSchema, {
      cgroupStats: { cpuStats: { cpuUsage: { totalUsage: 5n } }, pidsStats: { current: 2n } },
    });
    expect(hex(toBinary(StatsContainerResponseSchema, msg))).toBe(
      '0a0a' + // 1: CgroupStats, 10 bytes
        '0a04' + //   1: CpuStats
        '0a02' + //     1: CpuUsage
        '0805' + //       1: total_usage = 5
        '1a02' + //   3: PidsStats
        '0802', //     1: current = 2
    );
  });

  it('CreateContainerRequest: 6 OCI, 7 sandbox_pidns, 9/10/11 ports, 4 devices', () => {
    const msg = create(CreateContainerRequestSchema, {
      containerId: 'c',
      devices: [{ id: 'd' }],
      OCI: { Version: '1', Hostname: 'h' },
      sandboxPidns: true,
      stdinPort: 1,
      stdoutPort: 2,
      stderrPort: 3,
    });
    expect(hex(toBinary(CreateContainerRequestSchema, msg))).toBe(
      '0a0163' + // 1: container_id
        '2203' + // 4: Device
        '0a0164' + //   Device.id=1
        '3206' + // 6: Spec
        '0a0131' + //   Spec.Version=1
        '220168' + //   Spec.Hostname=4
        '3801' + // 7: sandbox_pidns
        '4801' + // 9: stdin_port (tag 0x48)
        '5002' + // 10: stdout_port (tag 0x50)
        '5803', // 11: stderr_port (tag 0x58)
    );
  });

  it('Spec and Process keep Kata oci.proto numbering', () => {
    const spec = create(SpecSchema, {
      Process: {
        ConsoleSize: { Height: 24, Width: 80 },
        User: { UID: 1, GID: 2, AdditionalGids: [3], Username: 'n' },
        Env: ['A=1'],
        Cwd: '/',
        NoNewPrivileges: true,
        OOMScoreAdj: -1n,
      },
      Root: { Path: '/r', Readonly: true },
      Annotations: { k: 'v' },
    });
    expect(hex(toBinary(SpecSchema, spec))).toBe(
      '1227' + // 2: Process, 39 bytes
        '1204' + //   2: ConsoleSize
        '0818' + //     Height=1: 24
        '1050' + //     Width=2: 80
        '1a0a' + //   3: User
        '0801' + //     UID=1
        '1002' + //     GID=2
        '1a0103' + //     AdditionalGids=3 (packed)
        '22016e' + //     Username=4
        '2a03413d31' + //   5: Env "A=1"
        '32012f' + //   6: Cwd "/"
        '4801' + //   9: NoNewPrivileges
        '58ffffffffffffffffff01' + //   11: OOMScoreAdj -1 (int64)
        '1a06' + // 3: Root
        '0a022f72' + //   Path=1
        '1001' + //   Readonly=2
        '3a06' + // 7: Annotations map entry
        '0a016b' + //   key=1
        '120176', //   value=2
    );
  });

  it('stdio and process-control messages', () => {
    const cases: [Uint8Array, string][] = [
      [
        toBinary(
          WaitProcessRequestSchema,
          create(WaitProcessRequestSchema, { containerId: 'c', execId: 'e' }),
        ),
        '0a0163120165',
      ],
      [
        toBinary(WaitProcessResponseSchema, create(WaitProcessResponseSchema, { status: -1 })),
        '08ffffffffffffffffff01',
      ],
      [
        toBinary(
          SignalProcessRequestSchema,
          create(SignalProcessRequestSchema, { containerId: 'c', signal: 9 }),
        ),
        '0a01631809',
      ],
      [
        toBinary(CloseStdinRequestSchema, create(CloseStdinRequestSchema, { containerId: 'c', execId: 'e' })),
        '0a0163120165',
      ],
      [
        toBinary(
          WriteStreamRequestSchema,
          create(WriteStreamRequestSchema, { execId: 'e', data: new Uint8Array([0xff]) }),
        ),
        '1201651a01ff',
      ],
      [toBinary(WriteStreamResponseSchema, create(WriteStreamResponseSchema, { len: 300 })), '08ac02'],
      [
        toBinary(ReadStreamRequestSchema, create(ReadStreamRequestSchema, { containerId: 'c', len: 4096 })),
        '0a0163188020',
      ],
      [
        toBinary(
          ReadStreamResponseSchema,
          create(ReadStreamResponseSchema, { data: new Uint8Array([1, 2]) }),
        ),
        '0a020102',
      ],
      [
        toBinary(TtyWinResizeRequestSchema, create(TtyWinResizeRequestSchema, { row: 24, column: 80 })),
        '18182050',
      ],
    ];
    for (const [bytes, want] of cases) expect(hex(bytes)).toBe(want);
  });

  it('round-trips and preserves fields this subset does not declare', () => {
    // CreateContainerRequest with Kata field 5 (storages) and 8 (shared_mounts), which we omit.
    const wire = Buffer.from('0a0163' + '2a03' + '0a0178' + '4203' + '0a016e' + '4801', 'hex');
    const msg = fromBinary(CreateContainerRequestSchema, wire);
    expect(msg.containerId).toBe('c');
    expect(msg.stdinPort).toBe(1);
    // Unknown fields are kept verbatim and written after the known ones.
    expect(hex(toBinary(CreateContainerRequestSchema, msg))).toBe(
      '0a0163' + '4801' + '2a030a0178' + '42030a016e',
    );
    const again = fromBinary(CreateContainerRequestSchema, toBinary(CreateContainerRequestSchema, msg));
    expect(equals(CreateContainerRequestSchema, again, msg)).toBe(true);
  });

  it('rejects malformed bytes', () => {
    // Truncated length-delimited field.
    expect(() => fromBinary(ExecProcessRequestSchema, Buffer.from('0a0563', 'hex'))).toThrow();
    // Truncated varint.
    expect(() => fromBinary(ExecProcessRequestSchema, Buffer.from('2880', 'hex'))).toThrow();
    // Invalid UTF-8 in a string field.
    expect(() => fromBinary(ExecProcessRequestSchema, Buffer.from('0a01ff', 'hex'))).toThrow();
    // Wire type 7 does not exist.
    expect(() => fromBinary(ProcessSchema, Buffer.from('0f', 'hex'))).toThrow();
  });
});

describe('AgentService method table', () => {
  it('covers every rpc of the generated service and nothing else', () => {
    expect(Object.keys(agentMethods).sort()).toEqual(AgentService.methods.map((m) => m.name).sort());
    expect(AgentService.typeName).toBe(AGENT_SERVICE_NAME);
    for (const [name, m] of Object.entries(agentMethods)) {
      expect(m.name).toBe(name);
      expect(m.service).toBe('grpc.AgentService');
      expect(m.path).toBe(`/grpc.AgentService/${name}`);
      expect(agentMethodsByPath.get(m.path)).toBe(m);
    }
  });

  it('maps each rpc to Kata request and response types', () => {
    const types = Object.fromEntries(
      Object.entries(agentMethods).map(([k, m]) => [k, [m.input.typeName, m.output.typeName]]),
    );
    expect(types).toEqual({
      CreateContainer: ['grpc.CreateContainerRequest', 'google.protobuf.Empty'],
      StartContainer: ['grpc.StartContainerRequest', 'google.protobuf.Empty'],
      RemoveContainer: ['grpc.RemoveContainerRequest', 'google.protobuf.Empty'],
      ExecProcess: ['grpc.ExecProcessRequest', 'google.protobuf.Empty'],
      SignalProcess: ['grpc.SignalProcessRequest', 'google.protobuf.Empty'],
      WaitProcess: ['grpc.WaitProcessRequest', 'grpc.WaitProcessResponse'],
      StatsContainer: ['grpc.StatsContainerRequest', 'grpc.StatsContainerResponse'],
      WriteStdin: ['grpc.WriteStreamRequest', 'grpc.WriteStreamResponse'],
      ReadStdout: ['grpc.ReadStreamRequest', 'grpc.ReadStreamResponse'],
      ReadStderr: ['grpc.ReadStreamRequest', 'grpc.ReadStreamResponse'],
      CloseStdin: ['grpc.CloseStdinRequest', 'google.protobuf.Empty'],
      TtyWinResize: ['grpc.TtyWinResizeRequest', 'google.protobuf.Empty'],
    });
    expect(agentMethods.ExecProcess.output).toBe(EmptySchema);
  });

  it('looks up methods as named in a ttrpc Request', () => {
    expect(findAgentMethod('grpc.AgentService', 'ExecProcess')).toBe(agentMethods.ExecProcess);
    expect(findAgentMethod('grpc.AgentService', 'execProcess')).toBeUndefined();
    expect(findAgentMethod('grpc.AgentService', 'CreateSandbox')).toBeUndefined();
    expect(findAgentMethod('grpc.Other', 'ExecProcess')).toBeUndefined();
    expect(findAgentMethod('', '')).toBeUndefined();
  });

  it('dispatches generically: decode with input, encode with output', () => {
    const m = findAgentMethod('grpc.AgentService', 'WaitProcess')!;
    const reqBytes = toBinary(
      WaitProcessRequestSchema,
      create(WaitProcessRequestSchema, { containerId: 'c' }),
    );
    const req = fromBinary(m.input, reqBytes);
    expect(req.$typeName).toBe('grpc.WaitProcessRequest');
    const res = create(m.output, { status: 3 });
    const back = fromBinary(WaitProcessResponseSchema, toBinary(m.output, res));
    expect(equals(WaitProcessResponseSchema, back, create(WaitProcessResponseSchema, { status: 3 }))).toBe(
      true,
    );
  });

  it('has precise static types', () => {
    expectTypeOf<AgentRequest<'ExecProcess'>>().toEqualTypeOf<ExecProcessRequest>();
    expectTypeOf<AgentResponse<'WaitProcess'>>().toEqualTypeOf<WaitProcessResponse>();
  });
});
