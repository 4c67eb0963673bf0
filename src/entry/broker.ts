/**
 * `passfd-broker` (and `passfd-broker/broker`): the broker library, what a
 * runtime embeds. Start a container or exec process whose stdio are
 * containerd's FIFOs through passfd (or the RPC-copy baseline), wait for its
 * exit once every output byte is in the FIFOs, signal it, resize its
 * terminal, close its stdin losslessly. Also here: the hybrid-vsock client
 * calls (`passFd`, `hybridConnect`), an embedded vmm + agent for a loopback
 * stack (`startEmbeddedStack`), the configuration (`loadConfig`, TOML as
 * `config.toml.example` documents it), the logger the library writes to, and
 * systemd readiness notification.
 *
 * The other entry points: `passfd-broker/device` (the hybrid-vsock device),
 * `passfd-broker/agent` (the guest agent), `passfd-broker/protocol` (pure
 * codecs), `passfd-broker/ttrpc` (ttrpc client and server).
 */
export { Broker, BrokeredProcess, type BrokerOptions, type ProcessSpec } from '../broker/broker.js';
export { type EmbeddedStack, type StackOptions, startEmbeddedStack } from '../broker/embedded-stack.js';
export { FIFO_SIZE, type FifoPaths, type StdioName } from '../broker/fifo-set.js';
export {
  HvsockError,
  type HybridStream,
  hybridConnect,
  type PassedFd,
  type PassFdOptions,
  passFd,
  passFdTracked,
} from '../broker/hvsock-client.js';
export { ConfigError, loadConfig, parseConfig } from '../config/load.js';
export {
  type AgentConfig,
  type Config,
  DEFAULT_CONFIG,
  defaultConfig,
  type HypervisorConfig,
  type RuntimeConfig,
} from '../config/schema.js';
export { createLogger, type Logger, type LogLevel, setLogLevel } from '../util/log.js';
export { notifyReady, notifyStopping, sdNotify } from '../util/sd-notify.js';
