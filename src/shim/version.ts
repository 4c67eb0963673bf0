/** The package version the shim reports (`-v`, Connect). */
import { createRequire } from 'node:module';

const pkg = createRequire(import.meta.url)(
  import.meta.filename.endsWith('.ts') ? '../../package.json' : '../../../package.json',
) as { version: string };

export const SHIM_VERSION: string = `passfd-broker ${pkg.version}`;
