/**
 * Pseudo-terminals: allocate a master/slave pair, set and read the window
 * size, read the slave's termios (for the end-of-file character).
 *
 * `openPty` follows the Unix98 recipe (`posix_openpt`, `grantpt`,
 * `unlockpt`) and then gets the slave with `ioctl(TIOCGPTPEER)` (Linux 4.13+),
 * which opens the peer of *this* master without a path lookup, so nothing can
 * swap `/dev/pts/N` between the calls; `ptsname_r` is used only for the name.
 * Both fds are close-on-exec and opened `O_NOCTTY`: allocating a pty never
 * makes it this process's controlling terminal. Making it the child's is the
 * launcher's job (a new session plus `TIOCSCTTY` in the child, see
 * ctty-exec.ts).
 */
import { O_CLOEXEC, O_RDWR } from './fd.js';
import { c, check, libc } from './libc.js';

const O_NOCTTY = 0o400;
const TIOCGWINSZ = 0x5413;
const TIOCSWINSZ = 0x5414;
const TIOCGPTPEER = 0x5441;

const p = {
  posix_openpt: libc.func('int posix_openpt(int flags)'),
  grantpt: libc.func('int grantpt(int fd)'),
  unlockpt: libc.func('int unlockpt(int fd)'),
  ptsname_r: libc.func('int ptsname_r(int fd, _Out_ char *buf, size_t len)'),
  /** ioctl with an integer (not pointer) argument, as TIOCGPTPEER takes. */
  ioctlInt: libc.func('ioctl', 'int', ['int', 'unsigned long', 'int']),
  tcgetattr: libc.func('int tcgetattr(int fd, _Out_ void *termios)'),
};

export interface Pty {
  /** The master side (read what the child prints, write what it reads). */
  master: number;
  /** The slave side, to become the child's stdin/stdout/stderr. Close it after spawning. */
  slave: number;
  /** The slave's path, e.g. `/dev/pts/3`. */
  name: string;
}

export interface WinSize {
  rows: number;
  cols: number;
}

/** A new pty pair, both ends close-on-exec and blocking; optionally sized. */
export function openPty(size?: WinSize): Pty {
  const master = check(p.posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC), 'posix_openpt');
  try {
    check(p.grantpt(master), 'grantpt');
    check(p.unlockpt(master), 'unlockpt');
    const buf = Buffer.alloc(128);
    const err = p.ptsname_r(master, buf, buf.length);
    if (err !== 0) check(-1, 'ptsname_r');
    const name = buf.subarray(0, buf.indexOf(0)).toString();
    const slave = check(p.ioctlInt(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC), 'ioctl(TIOCGPTPEER)');
    if (size) setWinSize(master, size.rows, size.cols);
    return { master, slave, name };
  } catch (err) {
    c.close(master);
    throw err;
  }
}

/** TIOCSWINSZ: the kernel sends SIGWINCH to the terminal's foreground process group. */
export function setWinSize(fd: number, rows: number, cols: number): void {
  for (const [what, v] of [
    ['rows', rows],
    ['cols', cols],
  ] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff)
      throw new RangeError(`window ${what} ${v} not in 0..65535`);
  }
  const ws = Buffer.alloc(8); // struct winsize { u16 ws_row, ws_col, ws_xpixel, ws_ypixel }
  ws.writeUInt16LE(rows, 0);
  ws.writeUInt16LE(cols, 2);
  check(c.ioctl(fd, TIOCSWINSZ, ws), 'ioctl(TIOCSWINSZ)', `fd ${fd}`);
}

export function getWinSize(fd: number): WinSize {
  const ws = Buffer.alloc(8);
  check(c.ioctl(fd, TIOCGWINSZ, ws), 'ioctl(TIOCGWINSZ)', `fd ${fd}`);
  return { rows: ws.readUInt16LE(0), cols: ws.readUInt16LE(2) };
}

const ICANON = 0o2;
const VEOF = 4;

/**
 * The terminal's end-of-file character (`c_cc[VEOF]`, ^D by default) when it
 * is in canonical mode, where writing it to the master makes the reader's
 * `read()` return 0; null in raw mode, where no byte means EOF.
 * struct termios (x86-64 and aarch64 glibc): c_iflag, c_oflag, c_cflag,
 * c_lflag (u32 each), c_line (u8), c_cc[32], then speeds.
 */
export function ptyEofChar(fd: number): number | null {
  const t = Buffer.alloc(64);
  check(p.tcgetattr(fd, t), 'tcgetattr', `fd ${fd}`);
  const lflag = t.readUInt32LE(12);
  if ((lflag & ICANON) === 0) return null;
  return t[17 + VEOF]!;
}
