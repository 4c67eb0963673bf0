// Runs INSIDE the QEMU guest (host node over the 9p root): exercises AF_VSOCK
// through the vhost-user-vsock backend with the project's koffi bindings.
//  (a) connect to the host (CID 2) port $SMOKE_HOST_PORT (5000) and send a line;
//  (b) listen on $SMOKE_GUEST_PORT (1027), accept one connection, print what
//      arrives line by line until "hi" (or EOF).
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nb = await import(path.join(root, 'dist/native-bindings/index.js'));
const t0 = Date.now();
const say = (m) => process.stdout.write(`GUEST ${m}\n`);
const hostPort = Number(process.env.SMOKE_HOST_PORT ?? 5000);
const guestPort = Number(process.env.SMOKE_GUEST_PORT ?? 1027);
let cid = 'unknown';
try {
  cid = nb.vsockLocalCid();
} catch (err) {
  cid = err.message;
}
say(`node ${process.version} up, uptime ${process.uptime().toFixed(2)}s, local CID ${cid}`);

// (b) listen first, so the host can pass an fd as soon as it sees the marker.
const lfd = nb.vsockListen(guestPort);
say(`LISTENING ${guestPort} local=${JSON.stringify(nb.vsockLocalAddr(lfd))}`);

// (a)
try {
  const fd = await nb.vsockConnect(nb.VMADDR_CID_HOST, hostPort, 15_000);
  const local = nb.vsockLocalAddr(fd);
  const line = Buffer.from(`hello from guest cid ${local.cid} port ${local.port}\n`);
  const n = nb.writeFd(fd, line);
  say(`CONNECTED host:${hostPort} wrote ${n} bytes in ${Date.now() - t0} ms`);
  // Wait for the host's reply line, then close.
  const reply = await readLine(fd);
  say(`REPLY ${JSON.stringify(reply)}`);
  nb.closeFd(fd);
} catch (err) {
  say(`CONNECT-FAILED ${err.message}`);
}

/** The next connection on the listening vsock `lfd`, once one is pending. */
function acceptOne(lfd) {
  return new Promise((resolve) => {
    const w = new nb.FdWatcher(lfd, () => {
      const a = nb.vsockAccept(lfd);
      if (!a) return;
      w.close();
      resolve(a);
    });
    w.want(true, false);
  });
}

const acc = await acceptOne(lfd);
say(`ACCEPTED peer cid ${acc.peerCid} port ${acc.peerPort}`);
const got = await readLine(acc.fd, true);
say(`RECEIVED ${JSON.stringify(got)}`);
nb.closeFd(acc.fd);

// (c) optional bulk transfers, SHA-256 checked on the host: guest→host on
// host port $SMOKE_HOST_PORT+1, then host→guest through a second passed fifo
// accepted on the same listener.
const bulk = Number(process.env.SMOKE_BULK_MIB ?? 0) * 1024 * 1024;
if (bulk > 0) {
  const { createHash } = await import('node:crypto');
  const block = pattern();
  const fd = await nb.vsockConnect(nb.VMADDR_CID_HOST, hostPort + 1, 15_000);
  const h = createHash('sha256');
  const tb = Date.now();
  await new Promise((resolve, reject) => {
    let sent = 0;
    let off = 0;
    const w = new nb.FdWatcher(fd, () => {
      try {
        while (sent < bulk) {
          const len = Math.min(block.length - off, bulk - sent);
          const n = nb.writeFd(fd, block, off, len);
          if (n === nb.WOULD_BLOCK) return;
          h.update(block.subarray(off, off + n));
          sent += n;
          off = (off + n) % block.length;
        }
        w.close();
        nb.shutdownFd(fd, nb.SHUT_WR);
        resolve();
      } catch (err) {
        w.close();
        reject(err);
      }
    });
    w.want(false, true);
  });
  const ms = Date.now() - tb;
  const reply = await readLine(fd);
  say(
    `BULK-G2H ${bulk} bytes ${ms} ms ${(bulk / 1048576 / (ms / 1000)).toFixed(1)} MiB/s guest-sha ${h.digest('hex')} host-says ${reply.trim()}`,
  );
  nb.closeFd(fd);

  const a2 = await acceptOne(lfd);
  say(`ACCEPTED2 peer cid ${a2.peerCid} port ${a2.peerPort}`);
  const h2 = createHash('sha256');
  const t2 = Date.now();
  const big = Buffer.alloc(1 << 20);
  await new Promise((resolve) => {
    let got = 0;
    const w = new nb.FdWatcher(a2.fd, () => {
      for (;;) {
        const n = nb.readFd(a2.fd, big, 0, Math.min(big.length, bulk - got));
        if (n === nb.WOULD_BLOCK) return;
        if (n === 0) break;
        h2.update(big.subarray(0, n));
        got += n;
        if (got >= bulk) break;
      }
      w.close();
      resolve();
    });
    w.want(true, false);
  });
  const ms2 = Date.now() - t2;
  say(
    `BULK-H2G ${bulk} bytes ${ms2} ms ${(bulk / 1048576 / (ms2 / 1000)).toFixed(1)} MiB/s guest-sha ${h2.digest('hex')}`,
  );
  nb.closeFd(a2.fd);
}
nb.closeFd(lfd);
say(`DONE in ${Date.now() - t0} ms`);

/** 1 MiB of a fixed pseudo-random pattern (xorshift32, seed 1), the host builds the same. */
function pattern() {
  const b = Buffer.alloc(1 << 20);
  let x = 1;
  for (let i = 0; i < b.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, i);
  }
  return b;
}

function readLine(fd, untilHi = false) {
  return new Promise((resolve) => {
    let acc = '';
    const buf = Buffer.alloc(4096);
    const w = new nb.FdWatcher(fd, () => {
      for (;;) {
        let n;
        try {
          n = nb.readFd(fd, buf);
        } catch (err) {
          w.close();
          resolve(`${acc}<error ${err.message}>`);
          return;
        }
        if (n === nb.WOULD_BLOCK) return;
        if (n === 0) {
          w.close();
          resolve(`${acc}<EOF>`);
          return;
        }
        const s = buf.toString('utf8', 0, n);
        acc += s;
        process.stdout.write(`GUEST chunk ${JSON.stringify(s)}\n`);
        if (acc.includes('\n') && (!untilHi || acc.includes('hi'))) {
          w.close();
          resolve(acc);
          return;
        }
      }
    });
    w.want(true, false);
  });
}
