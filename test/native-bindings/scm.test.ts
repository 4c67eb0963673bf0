// native-bindings/scm.ts over real socketpairs: an fd sent with SCM_RIGHTS
// arrives as a new fd on the same open file (same dev/ino), close-on-exec
// (MSG_CMSG_CLOEXEC, seen in /proc/self/fdinfo); fds beyond maxFds are closed
// on receipt, so nothing leaks (/proc/self/fd counted); our control buffer
// holds SCM_MAX_FD fds so MSG_CTRUNC cannot happen; payload-only messages give
// fds = []. It also pins down what the kernel does when the hybrid-vsock
// `passfd\n` line and the `<port>` + fd message are read by one recvmsg:
// AF_UNIX stream bytes are glued across sends, the fd comes back with them,
// and nothing sent after an fd-carrying message is glued into the same read.

import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  closeFd,
  makePipe,
  readFd,
  recvWithFds,
  SysError,
  sendWithFds,
  socketPair,
  WOULD_BLOCK,
  writeFd,
} from '../../native-bindings/index.js';
import { fdCount, fdinfoFlags, fdJanitor, isFdOpen, O_CLOEXEC_FLAG, tempDir } from './helpers.js';

const { track, onCleanup } = fdJanitor();

function pair(): [number, number] {
  const p = socketPair(true);
  track(...p);
  return p;
}

function sameFile(a: number, b: number): boolean {
  const sa = fs.fstatSync(a);
  const sb = fs.fstatSync(b);
  return sa.ino === sb.ino && sa.dev === sb.dev;
}

describe('sendWithFds / recvWithFds', () => {
  it('passes one fd that refers to the same file, close-on-exec', () => {
    const dir = tempDir();
    onCleanup(dir.remove);
    const [a, b] = pair();
    const file = fs.openSync(path.join(dir.path, 'passed'), 'w+');
    track(file);
    expect(sendWithFds(a, Buffer.from('1027'), [file])).toBe(4);
    const buf = Buffer.alloc(64);
    const got = recvWithFds(b, buf, 1);
    expect(got).not.toBeNull();
    expect(got!.bytes).toBe(4);
    expect(buf.subarray(0, 4).toString()).toBe('1027');
    expect(got!.fds).toHaveLength(1);
    expect(got!.surplus).toBe(0);
    expect(got!.truncated).toBe(false);
    const fd = got!.fds[0]!;
    track(fd);
    expect(fd).not.toBe(file);
    expect(sameFile(fd, file)).toBe(true);
    expect(fdinfoFlags(fd) & O_CLOEXEC_FLAG).toBe(O_CLOEXEC_FLAG);
    // Same open file description: a write through one is seen at the other's offset.
    fs.writeSync(fd, 'via passed fd');
    expect(fs.readFileSync(path.join(dir.path, 'passed'), 'utf8')).toBe('via passed fd');
  });

  it('passes a pipe end: bytes written to the received fd come out of the original pipe', () => {
    const [a, b] = pair();
    const [pr, pw] = makePipe(true);
    track(pr);
    sendWithFds(a, Buffer.from('x'), [pw]);
    closeFd(pw); // the only write end left is the received one
    const got = recvWithFds(b, Buffer.alloc(8), 1)!;
    const fd = got.fds[0]!;
    expect(sameFile(fd, pr)).toBe(true);
    writeFd(fd, Buffer.from('through'));
    closeFd(fd);
    const out = Buffer.alloc(16);
    expect(readFd(pr, out)).toBe(7);
    expect(out.subarray(0, 7).toString()).toBe('through');
    expect(readFd(pr, out)).toBe(0); // EOF: the received fd was the last writer
  });

  it('closes fds beyond maxFds on receipt and counts them as surplus (no leak)', () => {
    const [a, b] = pair();
    const [pr, pw] = makePipe(true);
    track(pr, pw);
    const before = fdCount();
    sendWithFds(a, Buffer.from('9'), [pw, pw, pr]);
    const got = recvWithFds(b, Buffer.alloc(8), 1)!;
    expect(got.bytes).toBe(1);
    expect(got.fds).toHaveLength(1);
    expect(got.surplus).toBe(2);
    expect(got.truncated).toBe(false);
    expect(fdCount()).toBe(before + 1);
    expect(sameFile(got.fds[0]!, pw)).toBe(true);
    closeFd(got.fds[0]!);
    expect(fdCount()).toBe(before);
  });

  it('with maxFds = 0 closes every received fd', () => {
    const [a, b] = pair();
    const [pr, pw] = makePipe(true);
    track(pr, pw);
    const before = fdCount();
    sendWithFds(a, Buffer.from('z'), [pr, pw]);
    const got = recvWithFds(b, Buffer.alloc(8), 0)!;
    expect(got.fds).toEqual([]);
    expect(got.surplus).toBe(2);
    expect(fdCount()).toBe(before);
  });

  it('receives SCM_MAX_FD (253) fds in one message without MSG_CTRUNC', () => {
    const [a, b] = pair();
    const [pr, pw] = makePipe(true);
    track(pr, pw);
    const before = fdCount();
    sendWithFds(
      a,
      Buffer.from('many'),
      Array.from({ length: 253 }, () => pw),
    );
    const got = recvWithFds(b, Buffer.alloc(8), 253)!;
    expect(got.truncated).toBe(false);
    expect(got.fds).toHaveLength(253);
    expect(got.surplus).toBe(0);
    expect(new Set(got.fds).size).toBe(253);
    for (const fd of got.fds) closeFd(fd);
    expect(fdCount()).toBe(before);
  });

  it('the kernel refuses more than SCM_MAX_FD fds at send time (EINVAL), so truncation cannot happen', () => {
    const [a] = pair();
    const [pr, pw] = makePipe(true);
    track(pr, pw);
    let err: unknown;
    try {
      sendWithFds(
        a,
        Buffer.from('x'),
        Array.from({ length: 254 }, () => pw),
      );
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SysError);
    expect((err as SysError).code).toBe('EINVAL');
  });

  it('payload-only messages give fds = [] (no truncation, no surplus)', () => {
    const [a, b] = pair();
    expect(sendWithFds(a, Buffer.from('plain'), [])).toBe(5);
    const buf = Buffer.alloc(16);
    const got = recvWithFds(b, buf, 1)!;
    expect(got).toEqual({ bytes: 5, fds: [], surplus: 0, truncated: false });
    expect(buf.subarray(0, 5).toString()).toBe('plain');
  });

  it('returns null when nothing is pending, and bytes 0 / no fds at EOF', () => {
    const [a, b] = socketPair(true);
    track(b);
    expect(recvWithFds(b, Buffer.alloc(8))).toBeNull();
    closeFd(a);
    expect(recvWithFds(b, Buffer.alloc(8))).toEqual({ bytes: 0, fds: [], surplus: 0, truncated: false });
  });

  it('recv honours off/len', () => {
    const [a, b] = pair();
    sendWithFds(a, Buffer.from('abcdef'), []);
    const buf = Buffer.alloc(8, 0x2e);
    const got = recvWithFds(b, buf, 1, 2, 3)!;
    expect(got.bytes).toBe(3);
    expect(buf.toString()).toBe('..abc...');
    expect(recvWithFds(b, buf, 1, 0)!.bytes).toBe(3);
    expect(buf.subarray(0, 3).toString()).toBe('def');
  });

  it('refuses an empty payload (EINVAL): fds need a byte to ride on', () => {
    const [a] = pair();
    const [pr, pw] = makePipe(true);
    track(pr, pw);
    let err: unknown;
    try {
      sendWithFds(a, Buffer.alloc(0), [pw]);
    } catch (e) {
      err = e;
    }
    expect((err as SysError).code).toBe('EINVAL');
  });

  it('sending to a closed peer throws EPIPE and the process survives (MSG_NOSIGNAL)', () => {
    const [a, b] = socketPair(true);
    track(a);
    closeFd(b);
    let err: unknown;
    try {
      sendWithFds(a, Buffer.from('x'), []);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SysError);
    expect((err as SysError).code).toBe('EPIPE');
  });

  it('returns WOULD_BLOCK when the socket buffer is full', () => {
    const [a] = pair();
    const chunk = Buffer.alloc(65536);
    let n = 0;
    for (let i = 0; i < 10_000; i++) {
      n = sendWithFds(a, chunk, []);
      if (n === WOULD_BLOCK) break;
    }
    expect(n).toBe(WOULD_BLOCK);
  });

  it('throws EBADF on a closed socket', () => {
    const [a, b] = socketPair(true);
    closeFd(a);
    closeFd(b);
    let err: unknown;
    try {
      recvWithFds(b, Buffer.alloc(1));
    } catch (e) {
      err = e;
    }
    expect((err as SysError).code).toBe('EBADF');
  });
});

describe('what one recvmsg returns for `passfd\\n` followed by `<port>` + fd (AF_UNIX stream)', () => {
  it('glues the bytes of both sends and returns the fd with them', () => {
    const [a, b] = pair();
    const [pr, pw] = makePipe(true);
    track(pr, pw);
    expect(writeFd(a, Buffer.from('passfd\n'))).toBe(7);
    expect(sendWithFds(a, Buffer.from('1027 keep'), [pw])).toBe(9);
    const buf = Buffer.alloc(64);
    const got = recvWithFds(b, buf, 1)!;
    // The kernel reads across the fd-less skb into the fd-carrying one.
    expect(buf.subarray(0, got.bytes).toString()).toBe('passfd\n1027 keep');
    expect(got.fds).toHaveLength(1);
    expect(sameFile(got.fds[0]!, pw)).toBe(true);
    closeFd(got.fds[0]!);
  });

  it('stops the read right after an fd-carrying message: later bytes come in the next read', () => {
    const [a, b] = pair();
    const [pr, pw] = makePipe(true);
    track(pr, pw);
    writeFd(a, Buffer.from('passfd\n'));
    sendWithFds(a, Buffer.from('1027'), [pw]);
    writeFd(a, Buffer.from('tail'));
    sendWithFds(a, Buffer.from('2048'), [pr]);
    const buf = Buffer.alloc(64);
    const first = recvWithFds(b, buf, 1)!;
    expect(buf.subarray(0, first.bytes).toString()).toBe('passfd\n1027');
    expect(first.fds).toHaveLength(1);
    expect(sameFile(first.fds[0]!, pw)).toBe(true);
    closeFd(first.fds[0]!);
    // 'tail' (no fd) is glued to the next fd-carrying message, never to the previous one.
    const second = recvWithFds(b, buf, 1)!;
    expect(buf.subarray(0, second.bytes).toString()).toBe('tail2048');
    expect(second.fds).toHaveLength(1);
    expect(sameFile(second.fds[0]!, pr)).toBe(true);
    closeFd(second.fds[0]!);
    expect(recvWithFds(b, buf, 1)).toBeNull();
  });

  it('two fd-carrying messages are never merged: each read returns one message and its fd', () => {
    const [a, b] = pair();
    const [pr, pw] = makePipe(true);
    track(pr, pw);
    sendWithFds(a, Buffer.from('one'), [pr]);
    sendWithFds(a, Buffer.from('two'), [pw]);
    const buf = Buffer.alloc(64);
    const first = recvWithFds(b, buf, 2)!;
    expect(buf.subarray(0, first.bytes).toString()).toBe('one');
    expect(first.fds).toHaveLength(1);
    expect(sameFile(first.fds[0]!, pr)).toBe(true);
    const second = recvWithFds(b, buf, 2)!;
    expect(buf.subarray(0, second.bytes).toString()).toBe('two');
    expect(second.fds).toHaveLength(1);
    expect(sameFile(second.fds[0]!, pw)).toBe(true);
    for (const fd of [...first.fds, ...second.fds]) closeFd(fd);
  });

  it('a read shorter than the message leaves its rest for the next read; the fd comes with the first part', () => {
    const [a, b] = pair();
    const [pr, pw] = makePipe(true);
    track(pr, pw);
    sendWithFds(a, Buffer.from('123456'), [pw]);
    const buf = Buffer.alloc(4);
    const first = recvWithFds(b, buf, 1)!;
    expect(first.bytes).toBe(4);
    expect(first.fds).toHaveLength(1);
    const second = recvWithFds(b, buf, 1)!;
    expect(buf.subarray(0, second.bytes).toString()).toBe('56');
    expect(second.fds).toEqual([]);
    closeFd(first.fds[0]!);
    expect(isFdOpen(first.fds[0]!)).toBe(false);
  });
});
