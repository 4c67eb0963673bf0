/**
 * The CRI requests a kubelet makes for a pod and its containers, for the
 * tests' kubelet-like client and the bench: a host-network pod (no CNI
 * plugin needed; empty hostname, as kubelet leaves it for such pods), whose
 * containers get their own PID namespaces unless the pod shares one
 * (`shareProcessNamespace`), the pod's IPC namespace, and the pod's
 * namespace options repeated in each container's config, as kubelet does.
 * Pure.
 */
import { create } from '@bufbuild/protobuf';
import {
  type ContainerConfig,
  ContainerConfigSchema,
  NamespaceMode,
  type PodSandboxConfig,
  PodSandboxConfigSchema,
} from '../protocol/gen/k8s/cri-api/runtime/v1/api_pb.js';

export interface PodOptions {
  name: string;
  uid: string;
  namespace: string;
  /** PodSandboxConfig.log_directory: where containerd writes the containers' logs. */
  logDirectory: string;
  shareProcessNamespace?: boolean;
  labels?: Record<string, string>;
}

export function hostNetworkPod(o: PodOptions): PodSandboxConfig {
  return create(PodSandboxConfigSchema, {
    metadata: { name: o.name, uid: o.uid, namespace: o.namespace, attempt: 0 },
    hostname: '',
    logDirectory: o.logDirectory,
    labels: o.labels ?? {},
    linux: {
      securityContext: {
        namespaceOptions: {
          network: NamespaceMode.NODE,
          pid: o.shareProcessNamespace ? NamespaceMode.POD : NamespaceMode.CONTAINER,
          ipc: NamespaceMode.POD,
        },
      },
    },
  });
}

export interface ContainerOptions {
  /** ContainerMetadata.name; also the log file's name (`<name>.log`, relative to the pod's log directory). */
  name: string;
  image: string;
  /** The entrypoint (default the image's). */
  command?: string[];
  args?: string[];
  env?: Record<string, string>;
  stdin?: boolean;
  /** Close stdin after the first attach ends (kubelet's `stdinOnce`). */
  stdinOnce?: boolean;
  tty?: boolean;
  labels?: Record<string, string>;
}

export function containerConfig(pod: PodSandboxConfig, o: ContainerOptions): ContainerConfig {
  return create(ContainerConfigSchema, {
    metadata: { name: o.name, attempt: 0 },
    image: { image: o.image },
    command: o.command ?? [],
    args: o.args ?? [],
    envs: Object.entries(o.env ?? {}).map(([key, value]) => ({ key, value })),
    stdin: o.stdin ?? false,
    stdinOnce: o.stdinOnce ?? false,
    tty: o.tty ?? false,
    logPath: `${o.name}.log`,
    labels: o.labels ?? {},
    linux: { securityContext: { namespaceOptions: pod.linux?.securityContext?.namespaceOptions ?? {} } },
  });
}
