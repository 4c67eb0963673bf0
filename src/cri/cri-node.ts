/**
 * A Kubernetes node in miniature for the tests and the bench: a private
 * containerd with its CRI plugin on (src/containerd/private-daemon.ts,
 * option `cri`), this package's shim linked into its `<opt>/bin` (so the
 * runtime type io.containerd.passfd.v2 resolves to it), the offline busybox
 * image and a "pause" image (the same filesystem, sleeping forever) built
 * and imported into containerd's `k8s.io` namespace, and a CRI client
 * connected: what a kubelet would find on a node set up as the README's
 * Kubernetes section says.
 */
import path from 'node:path';
import { buildBusyboxImage } from '../containerd/busybox-image.js';
import { CRI_NAMESPACE, type CriHandler, PrivateContainerd } from '../containerd/private-daemon.js';
import { CriClient } from './client.js';

/** The container image (busybox). */
export const CRI_IMAGE = 'localhost/passfd-busybox:1';
/** The pod sandbox image: busybox sleeping forever. */
export const PAUSE_IMAGE = 'localhost/passfd-pause:1';
/** The package's shim wrapper (bin/), from src/cri and dist/cli alike. */
export const SHIM_WRAPPER = path.resolve(import.meta.dirname, '../../bin/containerd-shim-passfd-v2');

export interface CriNodeOptions {
  /** Runtime handler name → runtime type, or type and options (e.g. ConfigPath). The first is the default. */
  handlers: Record<string, string | CriHandler>;
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** Deadline of each CRI call (default 60 s). */
  callTimeoutMs?: number;
}

export interface CriNode {
  d: PrivateContainerd;
  cri: CriClient;
  /** Closes the client and stops the daemon (which kills whatever it still runs). */
  stop(): Promise<void>;
}

export async function startCriNode(o: CriNodeOptions): Promise<CriNode> {
  const d = await PrivateContainerd.start({
    ...(o.logLevel ? { logLevel: o.logLevel } : {}),
    cri: { handlers: o.handlers, sandboxImage: PAUSE_IMAGE, defaultHandler: Object.keys(o.handlers)[0] },
  });
  let cri: CriClient | undefined;
  try {
    d.installShim(SHIM_WRAPPER, 'containerd-shim-passfd-v2');
    for (const [name, config] of [
      [CRI_IMAGE, undefined],
      [PAUSE_IMAGE, { Entrypoint: ['/bin/sleep', 'infinity'] }],
    ] as const) {
      const archive = path.join(d.dir, 'image.tar');
      buildBusyboxImage({ output: archive, name, ...(config ? { config } : {}) });
      await d.importImage(archive, CRI_NAMESPACE);
    }
    cri = new CriClient(d.address, { timeoutMs: o.callTimeoutMs ?? 60_000 });
    await cri.ready(10_000);
  } catch (err) {
    cri?.close();
    await d.stop();
    throw err;
  }
  const client = cri;
  return {
    d,
    cri: client,
    stop: async () => {
      client.close();
      await d.stop();
    },
  };
}
