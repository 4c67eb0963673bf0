/**
 * Feature bits of the vhost-user handshake: the virtio device feature bits
 * (GET_FEATURES / SET_FEATURES, a u64 mask, virtio 1.2 section 6 and the
 * ring bits of 2.7) and the vhost-user protocol feature bits
 * (GET_PROTOCOL_FEATURES / SET_PROTOCOL_FEATURES, vhost-user.rst
 * "Protocol features"), with helpers to build and test masks. Pure.
 */

/** Virtio and vhost-user feature bit numbers (GET_FEATURES / SET_FEATURES). */
export const Feature = {
  VIRTIO_RING_F_INDIRECT_DESC: 28,
  VIRTIO_RING_F_EVENT_IDX: 29,
  VHOST_USER_F_PROTOCOL_FEATURES: 30,
  VIRTIO_F_VERSION_1: 32,
} as const;

/** Protocol feature bit numbers (GET_PROTOCOL_FEATURES / SET_PROTOCOL_FEATURES). */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  SLAVE_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  SLAVE_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

/** The mask for a set of bit numbers: `bits(32, 30)` = 2^32 | 2^30. */
export function bits(...bitNumbers: number[]): bigint {
  let m = 0n;
  for (const b of bitNumbers) {
    if (!Number.isInteger(b) || b < 0 || b > 63) throw new RangeError(`bad feature bit ${b}`);
    m |= 1n << BigInt(b);
  }
  return m;
}

export function hasBit(mask: bigint, bit: number): boolean {
  return (mask & (1n << BigInt(bit))) !== 0n;
}
