/** Polls `probe` every 50 ms until it returns something truthy (resolved with it); throws naming `what` after `ms`. */
export async function waitFor<T>(
  what: string,
  probe: () => T | null | undefined | false,
  ms = 15_000,
): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > until) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
