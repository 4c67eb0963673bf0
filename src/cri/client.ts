/**
 * A kubelet-like client of the Kubernetes Container Runtime Interface
 * (runtime.v1 RuntimeService and ImageService) over gRPC, for tests and
 * benches that drive containerd's CRI plugin the way a node does.
 *
 * Why this shape: the messages are the protobuf-es schemas generated from
 * the vendored CRI proto (proto/k8s/cri-api/runtime/v1/api.proto, exactly
 * containerd v1.6.20's), so requests are typed and (de)serialised with
 * `toBinary`/`fromBinary`; @grpc/grpc-js carries the bytes (HTTP/2, a
 * `unix:` socket) through its untyped `makeUnaryRequest`, so no second
 * code generator or reflection library is involved. Every CRI method is
 * unary; `call()` makes any of them, the named methods are the ones a
 * kubelet uses for a pod's life.
 *
 * Every call has a deadline (the client's default, or the call's), and a
 * failed call rejects with a CriError carrying the gRPC status code, its
 * name and the server's message. ExecSync's deadline is stretched past the
 * request's own `timeout` so the runtime, not the transport, times it out.
 */

import type { DescMethodUnary } from '@bufbuild/protobuf';
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import {
  type AttachResponse,
  type ContainerStatusResponse,
  type CreateContainerResponse,
  type ExecResponse,
  type ExecSyncResponse,
  ImageService,
  type ImageStatusResponse,
  type ListContainersResponse,
  type ListImagesResponse,
  type ListPodSandboxResponse,
  type PodSandboxStatusResponse,
  type RemoveContainerResponse,
  type RemovePodSandboxResponse,
  type RunPodSandboxResponse,
  RuntimeService,
  type StartContainerResponse,
  type StatusResponse,
  type StopContainerResponse,
  type StopPodSandboxResponse,
  type VersionResponse,
} from '../protocol/gen/k8s/cri-api/runtime/v1/api_pb.js';

type Rt = typeof RuntimeService.method;
type Img = typeof ImageService.method;
/** The request a CRI method takes, as a (partial) protobuf-es init object. */
export type CriRequest<M extends DescMethodUnary> = MessageInitShape<M['input']>;

export interface CriClientOptions {
  /** Deadline of a call that does not give its own (default 60 s). */
  timeoutMs?: number;
  /** Largest response accepted (default 16 MiB; ExecSync output can be large). */
  maxReceiveBytes?: number;
}

export interface CriCallOptions {
  /** This call's deadline, from now. */
  timeoutMs?: number;
}

/** A failed CRI call: the gRPC status (code, name, message) and which method. */
export class CriError extends Error {
  /** The gRPC status code (grpc.status, e.g. 5 NOT_FOUND). */
  readonly code: number;
  /** Its name, e.g. `NOT_FOUND`, `DEADLINE_EXCEEDED`. */
  readonly codeName: string;
  /** The server's message (the status details). */
  readonly details: string;
  /** `/runtime.v1.RuntimeService/RunPodSandbox` and the like. */
  readonly method: string;

  constructor(method: string, code: number, details: string) {
    const codeName = grpc.status[code] ?? `CODE_${code}`;
    super(`${method}: ${codeName} (${code}): ${details}`);
    this.name = 'CriError';
    this.code = code;
    this.codeName = codeName;
    this.details = details;
    this.method = method;
  }
}

/** True when `err` is a CriError with gRPC status NOT_FOUND (what an already-removed object gives). */
export function isNotFound(err: unknown): boolean {
  return err instanceof CriError && err.code === grpc.status.NOT_FOUND;
}

export class CriClient {
  private readonly client: grpc.Client;
  private readonly timeoutMs: number;
  private closed = false;

  /**
   * `address`: containerd's gRPC socket, as a path or a `unix:` address.
   * Connects lazily (the first call, or `ready()`).
   */
  constructor(
    readonly address: string,
    opts: CriClientOptions = {},
  ) {
    const target = address.startsWith('unix:') ? address : `unix:${address}`;
    const maxReceive = opts.maxReceiveBytes ?? 16 * 1024 * 1024;
    this.client = new grpc.Client(target, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': maxReceive,
    });
    this.timeoutMs = opts.timeoutMs ?? 60_000;
  }

  /** Resolves once the channel is connected; rejects after `timeoutMs`. */
  ready(timeoutMs = this.timeoutMs): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Any unary CRI method, e.g. `call(RuntimeService.method.portForward, {...})`. */
  call<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    request: MessageInitShape<I>,
    opts: CriCallOptions = {},
  ): Promise<MessageShape<O>> {
    const path = `/${method.parent.typeName}/${method.name}`;
    if (this.closed) return Promise.reject(new Error(`${path}: the CRI client is closed`));
    const message = create(method.input, request);
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        path,
        (m: MessageShape<I>) => Buffer.from(toBinary(method.input, m)),
        (b: Buffer) => fromBinary(method.output, b),
        message,
        new grpc.Metadata(),
        { deadline: Date.now() + timeoutMs },
        (err, value) => {
          if (err) reject(new CriError(path, err.code, err.details));
          else if (value === undefined)
            reject(new CriError(path, grpc.status.INTERNAL, 'no response message'));
          else resolve(value);
        },
      );
    });
  }

  // RuntimeService

  version(req: CriRequest<Rt['version']> = {}, opts?: CriCallOptions): Promise<VersionResponse> {
    return this.call(RuntimeService.method.version, req, opts);
  }

  /** The runtime's conditions (RuntimeReady, NetworkReady). */
  status(req: CriRequest<Rt['status']> = {}, opts?: CriCallOptions): Promise<StatusResponse> {
    return this.call(RuntimeService.method.status, req, opts);
  }

  runPodSandbox(req: CriRequest<Rt['runPodSandbox']>, opts?: CriCallOptions): Promise<RunPodSandboxResponse> {
    return this.call(RuntimeService.method.runPodSandbox, req, opts);
  }

  stopPodSandbox(
    req: CriRequest<Rt['stopPodSandbox']>,
    opts?: CriCallOptions,
  ): Promise<StopPodSandboxResponse> {
    return this.call(RuntimeService.method.stopPodSandbox, req, opts);
  }

  removePodSandbox(
    req: CriRequest<Rt['removePodSandbox']>,
    opts?: CriCallOptions,
  ): Promise<RemovePodSandboxResponse> {
    return this.call(RuntimeService.method.removePodSandbox, req, opts);
  }

  podSandboxStatus(
    req: CriRequest<Rt['podSandboxStatus']>,
    opts?: CriCallOptions,
  ): Promise<PodSandboxStatusResponse> {
    return this.call(RuntimeService.method.podSandboxStatus, req, opts);
  }

  listPodSandbox(
    req: CriRequest<Rt['listPodSandbox']> = {},
    opts?: CriCallOptions,
  ): Promise<ListPodSandboxResponse> {
    return this.call(RuntimeService.method.listPodSandbox, req, opts);
  }

  createContainer(
    req: CriRequest<Rt['createContainer']>,
    opts?: CriCallOptions,
  ): Promise<CreateContainerResponse> {
    return this.call(RuntimeService.method.createContainer, req, opts);
  }

  startContainer(
    req: CriRequest<Rt['startContainer']>,
    opts?: CriCallOptions,
  ): Promise<StartContainerResponse> {
    return this.call(RuntimeService.method.startContainer, req, opts);
  }

  /** Stops a container (SIGTERM, SIGKILL after `timeout` seconds); the deadline allows for that. */
  stopContainer(req: CriRequest<Rt['stopContainer']>, opts?: CriCallOptions): Promise<StopContainerResponse> {
    return this.call(RuntimeService.method.stopContainer, req, this.stretch(req.timeout, opts));
  }

  removeContainer(
    req: CriRequest<Rt['removeContainer']>,
    opts?: CriCallOptions,
  ): Promise<RemoveContainerResponse> {
    return this.call(RuntimeService.method.removeContainer, req, opts);
  }

  listContainers(
    req: CriRequest<Rt['listContainers']> = {},
    opts?: CriCallOptions,
  ): Promise<ListContainersResponse> {
    return this.call(RuntimeService.method.listContainers, req, opts);
  }

  containerStatus(
    req: CriRequest<Rt['containerStatus']>,
    opts?: CriCallOptions,
  ): Promise<ContainerStatusResponse> {
    return this.call(RuntimeService.method.containerStatus, req, opts);
  }

  /** Runs a command in a container to completion; `timeout` (seconds) is the runtime's, 0 for none. */
  execSync(req: CriRequest<Rt['execSync']>, opts?: CriCallOptions): Promise<ExecSyncResponse> {
    return this.call(RuntimeService.method.execSync, req, this.stretch(req.timeout, opts));
  }

  /** Prepares a streaming exec: the URL to open with src/cri/remote-command.ts. */
  exec(req: CriRequest<Rt['exec']>, opts?: CriCallOptions): Promise<ExecResponse> {
    return this.call(RuntimeService.method.exec, req, opts);
  }

  /** Prepares an attach to a container's stdio: the URL to open with src/cri/remote-command.ts. */
  attach(req: CriRequest<Rt['attach']>, opts?: CriCallOptions): Promise<AttachResponse> {
    return this.call(RuntimeService.method.attach, req, opts);
  }

  // ImageService

  listImages(req: CriRequest<Img['listImages']> = {}, opts?: CriCallOptions): Promise<ListImagesResponse> {
    return this.call(ImageService.method.listImages, req, opts);
  }

  imageStatus(req: CriRequest<Img['imageStatus']>, opts?: CriCallOptions): Promise<ImageStatusResponse> {
    return this.call(ImageService.method.imageStatus, req, opts);
  }

  /** Closes the channel; later calls reject. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.close();
  }

  /** A deadline past a server-side timeout of `seconds` (when the caller gave none). */
  private stretch(seconds: bigint | undefined, opts: CriCallOptions | undefined): CriCallOptions | undefined {
    if (opts?.timeoutMs !== undefined || !seconds) return opts;
    return { timeoutMs: Math.max(this.timeoutMs, Number(seconds) * 1000 + 10_000) };
  }
}
