/** The access policy's decisions (pure): who is a peer the device admits, which guest ports are open. */
import { describe, expect, it } from 'vitest';
import { AccessPolicy } from '../../src/access/policy.js';
import { defaultConfig } from '../../src/config/schema.js';

const peer = (uid: number, gid: number, groups?: number[]) => ({ pid: 1, uid, gid, groups });

describe('AccessPolicy', () => {
  it('by default admits only its own uid and root', () => {
    const p = new AccessPolicy({ selfUid: 1000 });
    expect(p.allowsPeer(peer(1000, 1000))).toBe(true);
    expect(p.allowsPeer(peer(0, 0))).toBe(true);
    expect(p.allowsPeer(peer(1001, 1000))).toBe(false);
    expect(p.checksGroups).toBe(false);
    expect(p.describe()).toBe('uids 0,1000; gids none');
  });

  it('adds listed uids, and gids matched against the effective gid or a supplementary group', () => {
    const p = new AccessPolicy({ selfUid: 1000, uids: [2000], gids: [50] });
    expect(p.allowsPeer(peer(2000, 2000))).toBe(true);
    expect(p.allowsPeer(peer(3000, 50))).toBe(true);
    expect(p.allowsPeer(peer(3000, 3000, [7, 50]))).toBe(true);
    expect(p.allowsPeer(peer(3000, 3000, [7]))).toBe(false);
    expect(p.checksGroups).toBe(true);
    expect(p.allowsOwner(3000, 50)).toBe(true);
    expect(p.allowsOwner(3000, 3000)).toBe(false);
  });

  it('guest ports: "any" by default, else only the listed ones; [] refuses all', () => {
    expect(new AccessPolicy().allowsGuestPort(6000)).toBe(true);
    const listed = new AccessPolicy({ guestPorts: [6000] });
    expect(listed.allowsGuestPort(6000)).toBe(true);
    expect(listed.allowsGuestPort(6001)).toBe(false);
    expect(new AccessPolicy({ guestPorts: [] }).allowsGuestPort(6000)).toBe(false);
  });

  it('fromConfig reads the [hypervisor] keys', () => {
    const h = defaultConfig().hypervisor;
    h.allowed_uids = [2000];
    h.allowed_gids = [50];
    h.guest_connect_ports = [6000];
    const p = AccessPolicy.fromConfig(h);
    expect(p.allowsPeer(peer(2000, 1))).toBe(true);
    expect(p.allowsPeer(peer(1, 50))).toBe(true);
    expect(p.allowsGuestPort(6001)).toBe(false);
  });
});
