/**
 * A vhost-user-vsock backend to compare (`bench --vm qemu --backend
 * name=command`) and the parser of that flag. On its own, without the A/B
 * runner: every CLI start parses its flags, and must not load QEMU's
 * launcher to do it.
 */

export interface BackendSpec {
  name: string;
  /** Run with /bin/sh; `{socket}` `{uds}` `{cid}` `{metrics}` are replaced by quoted values. */
  command: string;
}

/** `name=command` → a backend; the name is letters, digits, `.`, `_`, `-`. */
export function parseBackend(text: string, previous: BackendSpec[] = []): BackendSpec[] {
  const m = /^([A-Za-z0-9._-]+)=(.+)$/s.exec(text);
  if (!m) throw new Error(`--backend ${JSON.stringify(text)}: expected <name>=<command>`);
  if (!m[2]!.includes('{socket}') || !m[2]!.includes('{uds}'))
    throw new Error(
      `--backend ${m[1]}: the command must use {socket} (vhost-user socket) and {uds} (hybrid socket)`,
    );
  if (m[1] === 'passfd-broker' || previous.some((b) => b.name === m[1]))
    throw new Error(`--backend ${m[1]}: that name is taken`);
  return [...previous, { name: m[1]!, command: m[2]! }];
}
