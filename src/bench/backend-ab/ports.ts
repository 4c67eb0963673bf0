/**
 * The vsock ports of the backend A/B's guest program (guest-program.ts) and
 * its host side (guest-session.ts). A module of its own: the guest program
 * runs when it is loaded, and must only ever run inside the guest.
 */
/** Guest port of the command connection. */
export const CONTROL_PORT = 5000;
/** Guest port that reads host → guest transfers to EOF. */
export const SINK_PORT = 5001;
/** Guest port that echoes (round trips). */
export const ECHO_PORT = 5002;
/** Host port the guest sends its guest → host transfers to (`<uds>_5100`). */
export const G2H_PORT = 5100;
