/**
 * How a transfer of the backend A/B is split across its connections: the
 * guest program (guest-program.ts) and its host side (guest-session.ts)
 * must agree on every connection's byte count to check each one exactly.
 */

/** `total` bytes over `connections` connections: equal shares, the remainder on the last. */
export function connectionShares(total: number, connections: number): number[] {
  if (!Number.isInteger(connections) || connections < 1)
    throw new Error(`connections must be a positive integer, got ${connections}`);
  const each = Math.floor(total / connections);
  return Array.from({ length: connections }, (_, i) =>
    i === connections - 1 ? total - each * (connections - 1) : each,
  );
}
