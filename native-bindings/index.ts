/** The project's only door to koffi: typed libc wrappers. */

export * from './ctty-exec.js';
export * from './errno-name.js';
export * from './eventfd.js';
export * from './exit-by-signal.js';
export * from './fd.js';
export * from './iov.js';
export { SysError } from './libc.js';
export * from './mmap.js';
export * from './mount.js';
export * from './poll.js';
export * from './poll-once.js';
export * from './pty.js';
export * from './scm.js';
export * from './socket.js';
export * from './spawn.js';
export * from './vsock.js';
