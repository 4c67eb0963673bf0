/** The package version the shim reports (`-v`, Connect). */
import { packageVersion } from '../util/version.js';

export const SHIM_VERSION: string = `passfd-broker ${packageVersion()}`;
