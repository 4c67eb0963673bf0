/**
 * Local port allocation, round-robin over a range, skipping ports in use, as
 * Dragonball, Firecracker and Cloud Hypervisor allocate host ports for
 * host-initiated connections ([2^30, 2^31)). Round-robin rather than
 * lowest-free so a port just released is not handed out again at once, while
 * the peer may still hold packets for the old connection.
 */
export class PortAllocator {
  private next: number;

  constructor(
    private readonly min: number,
    private readonly end: number,
    start = min,
  ) {
    this.next = start;
  }

  /** A free port, or null after a full sweep found none. */
  allocate(inUse: (port: number) => boolean): number | null {
    const span = this.end - this.min;
    for (let i = 0; i < span; i++) {
      const port = this.next;
      this.next = port + 1 >= this.end ? this.min : port + 1;
      if (!inUse(port)) return port;
      // A full table is refused before this loop runs, so in practice this ends in a few steps.
      if (i > 65536) return null;
    }
    return null;
  }
}
