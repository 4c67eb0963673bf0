// FdChannel hands its owner the system error as thrown (a SysError with the
// errno name as `code`), not a copy of its message. Real socketpairs.

import { describe, expect, it } from 'vitest';
import { closeQuietly, SysError, socketPair } from '../../native-bindings/index.js';
import { FdChannel } from '../../src/net/fd-channel.js';
import { withTimeout } from '../native-bindings/helpers.js';

describe('FdChannel errors', () => {
  it('a send to a closed peer reports the SysError EPIPE itself and closes the channel', async () => {
    const [a, b] = socketPair(true);
    closeQuietly(b);
    const got = new Promise<Error>((resolve) => {
      const channel = new FdChannel(a, {
        onData: () => {},
        onEnd: () => {},
        onError: resolve,
      });
      channel.send(Buffer.from('passfd\n'));
    });
    const err = await withTimeout(got, 5000, 'onError');
    expect(err).toBeInstanceOf(SysError);
    expect((err as SysError).code).toBe('EPIPE');
    expect((err as SysError).syscall).toBe('sendmsg');
  });
});
