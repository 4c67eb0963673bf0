#!/usr/bin/env node
/**
 * passfd-broker: one binary, one subcommand per role (commander).
 *
 *   vmm     the hybrid-vsock device with its guest (loopback or vhost-user)
 *   guest   a guest process's vsock socket, like socat VSOCK-LISTEN/VSOCK-CONNECT
 *   pass    pass one fd (a FIFO) to the device, print the host port
 *   agent   the guest agent (ttrpc AgentService, passfd listener)
 *   run     the end-to-end demo: a command's stdio through passfd
 *   bench   passfd vs RPC-copy, side by side
 */
import { Command, Option } from 'commander';
import { LOG_LEVELS, type LogLevel, setLogLevel } from '../util/log.js';
import { packageVersion } from '../util/version.js';
import { registerAgent } from './agent.js';
import { registerBench } from './bench.js';
import { registerGuest } from './guest.js';
import { fromEnv, parseLogLevel } from './options.js';
import { registerPass } from './pass.js';
import { registerRun } from './run.js';
import { registerVmm } from './vmm.js';

const program = new Command();
program
  .name('passfd-broker')
  .description('vsock fd passthrough for VM-isolated containers (Kata/Dragonball hybrid-vsock protocol)')
  .version(packageVersion(), '-V, --version', 'print the version')
  .addOption(new Option('--log-level <level>', 'log level (env PASSFD_LOG)').choices(LOG_LEVELS))
  .hook('preAction', (cmd) => {
    // The flag wins; a bad PASSFD_LOG is an error that names it, not a silent default.
    const level = (cmd.opts().logLevel as LogLevel | undefined) ?? fromEnv('PASSFD_LOG', parseLogLevel);
    if (level) setLogLevel(level);
  })
  .showHelpAfterError();

registerVmm(program);
registerGuest(program);
registerPass(program);
registerAgent(program);
registerRun(program);
registerBench(program);

program.parseAsync(process.argv).catch((err: Error) => {
  process.stderr.write(`passfd-broker: ${err.message}\n`);
  process.exit(1);
});
