/** The guest agent's process launcher: see container-process.ts. */
export {
  ContainerProcess,
  DEFAULT_DRAIN_TIMEOUT_MS,
  type SignalOptions,
  type SpawnOptions,
  spawnContainerProcess,
} from './container-process.js';
export { CopyPump, type CopyPumpOptions } from './copy-pump.js';
export type { CttyMethod } from './ctty-step.js';
export type { ExitStatus } from './exit-status.js';
export type { Pump, PumpEnd, PumpKind, PumpOptions } from './pump.js';
export { SplicePump, type SplicePumpOptions } from './splice-pump.js';
